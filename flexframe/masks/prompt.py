"""Prompt masks: frame masks over a whole prompt of text and videos, with a batch dimension.

A video LLM's sequence is ``text | video | text | video | ...``, padded on the left or on the
right. A prompt mask is built from one integer per token, ``frame_ids`` ``[B, L]``:

- :data:`TEXT` (-1) for text (and anything that is no video frame: images, markers, newlines),
- :data:`PAD` (-2) for padding: anywhere outside a video (``generate`` appends new tokens after a
  right padding); for the sliding window, at the left end of a row or after its last video
  token. Padding inside a video (between its first and last frame token) is refused;
- ``k >= 0`` for a token of frame ``k`` of its video. The frames of a video are numbered
  ``0, 1, 2, ...`` in sequence order, each a contiguous run of tokens; a run numbered 0 starts
  a new video. Text may sit between two frames of one video (Qwen3-VL's timestamps).

Every family shares these rules: text is token-causal (it sees every real token before it and
itself, videos included); a video token sees every real token before its video and, inside its
video, what the family allows; no query sees padding, and a padded query sees what a text token
in its place would (the real tokens before it: transformers' own rule, so a right-padded row's
last position gives ``generate`` the stock logits). The families, for a token of frame ``k``:

- ``prompt-causal-frame``: every token up to the end of its own frame (its whole frame and
  everything before it);
- ``prompt-sliding-window``: the span of the sequence from the start of frame ``k - window_size``
  to the end of frame ``k`` (text between those frames included), and everything up to the end of
  the video's last sink frame ``min(sink_frames, k + 1) - 1`` (with ``sink_frames=0``: up to the
  video's first frame); what lies between is not seen;
- ``prompt-timestamp-causal``: the frames of its own video whose timestamp is no later than its
  own frame's (``within_frame="causal"``: equal timestamps in token order), in any frame order
  (fast/slow layouts). Text between two frames of a video (a timestamp such as Qwen3-VL's
  ``<t=2.0 seconds>``, or SmolVLM's ``Frame from 00:02``) is read as a token of the frame after
  it: it sees and is seen as that frame's tokens are, so it hands no later frame to an earlier
  one (token-causal text there would have seen every frame before it in the sequence).

The queries are positions ``q_start .. q_start + q_len - 1`` of the ``kv_len`` keys: by default
the last ``q_len`` (decoding with a KV cache); a static cache, whose empty slots follow the new
tokens, gives ``q_start``. The mask_mod reads per-token tensors (``kv_key[b, kv_idx]``,
``q_*[b, q_idx]``): in range at text positions and under a cache offset, one code object for
every prompt of a family (one compiled kernel). The BlockMask is built in closed form (an
``IntervalRelation`` per row), equal to torch's ``create_block_mask`` tensor for tensor. Every
key and bound is constant or the position itself on each run of equal ids (a frame, a stretch
of text, padding), so the relations are stated run by run: the closed form's work is
O(runs + blocks) a row, and only the mask_mod's tensors are written token by token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from flexframe._checks import (
    check_choice,
    check_int,
    check_int_sequence,
    normalize_block_size,
    resolve_device,
)
from flexframe._vocab import BUILDERS, DEFAULT_BLOCK_SIZE, WITHIN_FRAME, Builder, WithinFrame
from flexframe.masks.block_kernel import (
    MAX_PIECES,
    HostArrays,
    block_kernel_available,
    block_mask_from_device_tables,
)
from flexframe.masks.closed_form import (
    Interval,
    IntervalRelation,
    at_most_block_tables,
    block_mask_from_grids,
    stack_block_tables,
)
from flexframe.masks.prompt_keys import (
    _BIG,
    _causal_frame_keys,
    _RunKey,
    _timestamp_keys,
    _window_keys,
)
from flexframe.masks.prompt_layout import PAD as PAD
from flexframe.masks.prompt_layout import TEXT as TEXT
from flexframe.masks.prompt_layout import _check_frame_ids, _read_row, _Row
from flexframe.masks.registry import register_mask
from flexframe.masks.spec import MAX_DENSE_BYTES, BlockSize, MaskMod, MaskSpec

PROMPT_MASKS = ("prompt-causal-frame", "prompt-sliding-window", "prompt-timestamp-causal")
"""The registered prompt masks (they take ``frame_ids``, not frame counts)."""


# -- the mask_mods: one code object per family ----------------------------------------------------
def _at_most_mod(kv_key: torch.Tensor, q_hi: torch.Tensor) -> MaskMod:
    def prompt_at_most(b, h, q_idx, kv_idx):
        return kv_key[b, kv_idx] <= q_hi[b, q_idx]

    return prompt_at_most


def _two_intervals_mod(kv_key: torch.Tensor, q_by_bound: torch.Tensor) -> MaskMod:
    def prompt_two_intervals(b, h, q_idx, kv_idx):
        key = kv_key[b, kv_idx]
        window = (q_by_bound[b, 0, q_idx] <= key) & (key <= q_by_bound[b, 1, q_idx])
        before = (q_by_bound[b, 2, q_idx] <= key) & (key <= q_by_bound[b, 3, q_idx])
        return window | before

    return prompt_two_intervals


def _mod(family: str, kv_key: torch.Tensor, q_by_bound: torch.Tensor) -> MaskMod:
    """The family's mask_mod over ``kv_key`` ``[B, n]`` and the bounds ``q_by_bound``
    ``[B, k, q]`` (each bound contiguous, as they were sent)."""
    if family == "at-most":
        return _at_most_mod(kv_key, q_by_bound[:, 0])
    return _two_intervals_mod(kv_key, q_by_bound)


# The mask_mod's tensors are padded to a multiple of this: their shapes change in steps (fewer
# recompiles) and share no symbolic size with the sequence (torch 2.13's CPU flex fails then).
_BUCKET = 128


def _mod_layout(
    kv_key: np.ndarray, by_bound: np.ndarray, bucket: int
) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """The shapes of the mask_mod's int32 tensors, ``[B, n]`` and ``[B, k, q]`` (bound by bound:
    each bound contiguous, as ``by_bound`` holds them), the lengths padded to ``bucket``."""
    (b, n), (k, q) = kv_key.shape, by_bound.shape[1:]
    n_pad, q_pad = -(-n // bucket) * bucket, -(-q // bucket) * bucket
    return [((b, n_pad), torch.int32), ((b, k, q_pad), torch.int32)]


def _fill_mod(
    kv_part: np.ndarray, q_part: np.ndarray, kv_key: np.ndarray, by_bound: np.ndarray
) -> None:
    """Write the keys and bounds into their host slots; the padding sees nothing."""
    n, (k, q) = kv_key.shape[1], by_bound.shape[1:]
    kv_part[:, :n] = kv_key
    kv_part[:, n:] = _BIG
    q_part[:, :, :q] = by_bound
    q_part[:, 0::2, q:] = _BIG if k > 1 else -1  # lower bounds, or the one hi
    q_part[:, 1::2, q:] = -_BIG


def _tensors(
    kv_key: np.ndarray, by_bound: np.ndarray, device: torch.device, bucket: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``kv_key`` ``[B, n]`` and the bounds ``by_bound`` ``[B, k, q]`` as int32 tensors on
    ``device``, of the same shapes, sent in one copy; with ``bucket`` > 1 the length
    dimension is padded to a multiple of it with keys and bounds that see nothing."""
    stage = HostArrays(_mod_layout(kv_key, by_bound, bucket), device)
    kv_part, q_part = stage.arrays
    _fill_mod(kv_part, q_part, kv_key, by_bound)
    kv, q_by_bound = stage.send()
    return kv, q_by_bound


# -- the spec -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PromptMaskSpec(MaskSpec):
    """A :class:`MaskSpec` over whole prompts: ``[B, q_len, kv_len]``, built from frame ids.

    The queries are positions ``q_start .. q_start + q_len - 1`` of the ``kv_len`` keys (all of
    them by default; the last ``q_len`` without ``q_start``).
    :meth:`to_dense` gives ``[B, q_len, kv_len]``, :meth:`block_mask` a BlockMask of batch ``B``.
    Prompt masks do not combine with ``&`` / ``|``: choose the family that says what you want.

    Attributes:
        frame_ids: ``[B, kv_len]`` int64 (CPU), as given.
        batch_size: ``B``.
        family: ``"at-most"`` (``kv_key <= q_hi``) or ``"two-intervals"``: which mask_mod.

    Example:
        >>> from flexframe import get_mask
        >>> ids = torch.tensor([[TEXT, 0, 0, 1, 1, TEXT]])   # text | frame 0 | frame 1 | text
        >>> dense = get_mask("prompt-causal-frame", frame_ids=ids).to_dense()[0].int()
        >>> dense[1].tolist(), dense[5].tolist()  # frame 0 sees all of it; the text all
        ([1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1])
    """

    frame_ids: torch.Tensor = field(default_factory=lambda: torch.zeros(1, 1), repr=False)
    batch_size: int = 1
    family: str = "at-most"
    _kv_key: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # [B, KV]
    _bounds: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # [B, k, Q]
    _runs: tuple[tuple[_Row, _RunKey, tuple[_RunKey, ...]], ...] = ()  # each row's keys by run
    _built: dict[Any, Any] = field(default_factory=dict, repr=False)  # dense and block masks

    # -- the forms ---------------------------------------------------------------------------
    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(kv_key [B, kv_len], q_bounds [B, q_len, k])`` int32, what the mask_mod reads:
        visible iff ``kv_key <= q[..., 0]`` (at-most) or ``kv_key`` is in ``[q0, q1]`` or in
        ``[q2, q3]`` (two-intervals)."""
        kv_key, q_by_bound = _tensors(self._kv_key, self._bounds, resolve_device(device))
        return kv_key, q_by_bound.transpose(1, 2).contiguous()

    def to_dense(
        self, device: torch.device | str | None = None, *, max_bytes: int | None = None
    ) -> torch.Tensor:
        """The mask as a ``[B, q_len, kv_len]`` bool tensor, True where a query may attend.

        Refused above :data:`~flexframe.masks.spec.MAX_DENSE_BYTES` unless ``max_bytes``
        allows it; :meth:`block_mask` needs no dense memory.
        """
        cells = self.batch_size * self.q_len * self.kv_len
        limit = MAX_DENSE_BYTES if max_bytes is None else check_int("max_bytes", max_bytes)
        if cells > limit:
            raise ValueError(
                f"the dense mask of {self.name!r} ([{self.batch_size}, {self.q_len}, "
                f"{self.kv_len}]) would hold {cells:,} bytes ({cells / 2**30:.1f} GiB), above the "
                f"{limit / 2**30:.1f} GiB limit; use block_mask() (O(blocks)) with flex, or pass "
                f"max_bytes={cells} to build it anyway"
            )
        device = torch.device("cpu") if device is None else resolve_device(device)
        kv_key, q = self.tensors(device)
        key = kv_key[:, None, :]
        if self.family == "at-most":
            return key <= q[..., 0, None]
        window = (q[..., 0, None] <= key) & (key <= q[..., 1, None])
        return window | ((q[..., 2, None] <= key) & (key <= q[..., 3, None]))

    def dense(self, device: torch.device | str | None = None) -> torch.Tensor:
        """:meth:`to_dense`, kept by this spec (do not write into it)."""
        device = torch.device("cpu") if device is None else resolve_device(device)
        key = ("dense", str(device))
        if key not in self._built:
            self._built[key] = self.to_dense(device)
        return self._built[key]

    @cached_property
    def relations(self) -> tuple[IntervalRelation, ...]:
        """One closed-form relation per row (over the queries, ``q_len`` of them)."""
        first_query = self.params["q_start"]
        out = []
        for row, kv_run, bound_runs in self._runs:
            kv = kv_run.piecewise(row, 0, row.length)
            k = [bound.piecewise(row, first_query, self.q_len) for bound in bound_runs]
            if self.family == "at-most":
                out.append(IntervalRelation(kv_key=kv, q_hi=k[0]))
            else:
                union = (Interval(hi=k[3], lo=k[2]),)
                out.append(IntervalRelation(kv_key=kv, q_hi=k[1], q_lo=k[0], union=union))
        return tuple(out)

    def block_grids(
        self, block_size: BlockSize = DEFAULT_BLOCK_SIZE, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(partial, full)`` ``[B, Q_BLOCKS, KV_BLOCKS]`` bool grids, in closed form."""
        bs = normalize_block_size(block_size)
        device = resolve_device(device)
        grids = [relation.block_grids(*bs, device=device) for relation in self.relations]
        return torch.stack([g[0] for g in grids]), torch.stack([g[1] for g in grids])

    def block_mask(
        self,
        device: torch.device | str | None = None,
        block_size: BlockSize = DEFAULT_BLOCK_SIZE,
        builder: Builder = "auto",
    ) -> BlockMask:
        """The mask as a BlockMask of batch ``B`` and one head (it broadcasts over heads).

        ``builder="auto"`` or ``"closed-form"``: from the per-row relations (O(blocks), no
        mask evaluation); ``"create_block_mask"``: torch's builder, which evaluates the mask_mod
        everywhere (the reference the closed form equals). Kept by this spec, not in the shared
        cache: a prompt's mask is built once per forward, and hashing its ids would cost more.
        """
        device = resolve_device(device)
        bs = normalize_block_size(block_size)
        check_choice("builder", builder, BUILDERS)
        use_closed = builder != "create_block_mask"
        key = (str(device), bs, use_closed)
        cached = self._built.get(key)
        if cached is not None:
            return cached
        seq_lengths = (self.q_len, self.kv_len)
        num_blocks = (-(-self.q_len // bs[0]), -(-self.kv_len // bs[1]))
        tables = None
        if use_closed and block_kernel_available(device, num_blocks):  # CUDA: one launch
            tables = self._block_tables(bs)
            if tables[0].shape[2] > MAX_PIECES:  # many pieces a block: the torch route is faster
                tables = None
        if tables is not None:
            block_mask = self._block_mask_by_kernel(*tables, bs, device)
        elif use_closed:
            partial, full = self.block_grids(bs, device)
            block_mask = block_mask_from_grids(
                partial, full, seq_lengths, bs, self.mask_mod_for(device)
            )
        else:
            block_mask = create_block_mask(
                self.mask_mod_for(device), self.batch_size, 1, self.q_len, self.kv_len,
                device=device, BLOCK_SIZE=bs,
            )  # fmt: skip
        self._built[key] = block_mask
        return block_mask

    def _block_tables(self, bs: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The rows' block tables, stacked (what the block kernel reads). An at-most family's
        come from its keys and bounds as the mask_mod holds them, token by token (a few NumPy
        reductions); a union's from the relations, run by run."""
        if self.family == "at-most":
            return at_most_block_tables(self._kv_key, self._bounds[:, 0], *bs)
        return stack_block_tables([r.block_table(*bs) for r in self.relations])

    def _block_mask_by_kernel(
        self, rows: np.ndarray, cols: np.ndarray, bs: tuple[int, int], device: torch.device
    ) -> BlockMask:
        """The block kernel's BlockMask. The tables and, on a first build for ``device``, the
        mask_mod's tensors go in one copy (a copy to CUDA costs 50-100 us of host time)."""
        mod = self._mods.get(device)
        layout = [(rows.shape, torch.int64), (cols.shape, torch.int64)]
        if mod is None:
            layout += _mod_layout(self._kv_key, self._bounds, _BUCKET)
        stage = HostArrays(layout, device)
        stage.arrays[0][...] = rows
        stage.arrays[1][...] = cols
        if mod is None:
            _fill_mod(stage.arrays[2], stage.arrays[3], self._kv_key, self._bounds)
        rows_t, cols_t, *mod_tensors = stage.send()
        if mod is None:
            mod = self._mods.setdefault(device, _mod(self.family, *mod_tensors))
        return block_mask_from_device_tables(rows_t, cols_t, (self.q_len, self.kv_len), bs, mod)

    def _combine(self, other: MaskSpec, op: str) -> MaskSpec:
        raise TypeError(
            f"prompt masks do not combine with {op!r}: {self.name!r} already holds the text, "
            "padding and frame rules of a prompt; choose the prompt mask family you need"
        )

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in self.params.items() if k != "frame_ids")
        return f"PromptMaskSpec({self.name}: B={self.batch_size}, kv_len={self.kv_len}{params})"


def _check_queries(q_len: int | None, q_start: int | None, kv_len: int) -> tuple[int, int]:
    """``(q_len, q_start)``: by default every position, or the last ``q_len``."""
    q = kv_len if q_len is None else check_int("q_len", q_len, minimum=1)
    if q > kv_len:
        raise ValueError(
            f"q_len must be <= the sequence length {kv_len} (the queries are q_len of its "
            f"positions), got q_len={q}"
        )
    if q_start is None:
        return q, kv_len - q
    start = check_int("q_start", q_start, minimum=0)
    if start + q > kv_len:
        raise ValueError(
            f"q_start + q_len must be <= the sequence length {kv_len} (the queries are positions "
            f"q_start .. q_start + q_len - 1), got q_start={start}, q_len={q}"
        )
    return q, start


def _per_run_times(timestamps: object, rows: list[_Row]) -> list[np.ndarray]:
    """The timestamp of each frame run of each row, from one timestamp per frame number."""
    if isinstance(timestamps, (torch.Tensor, np.ndarray)) and timestamps.ndim <= 1:
        timestamps = timestamps.tolist()
    if not isinstance(timestamps, Sequence) or isinstance(timestamps, str):
        raise TypeError(
            "timestamps must hold one integer per frame number (a list or 1-D tensor), got "
            f"{type(timestamps).__name__}"
        )
    table = np.asarray(check_int_sequence("timestamps", timestamps), dtype=np.int64)
    for b, row in enumerate(rows):
        if row.frame.size and int(row.frame.max()) >= table.size:
            raise ValueError(
                f"timestamps give {table.size} frame(s) but row {b} has frame "
                f"{int(row.frame.max())}; give one timestamp per frame number"
            )
    return [table[row.frame] for row in rows]


def _build(
    name: str,
    frame_ids: torch.Tensor,
    q_len: int | None,
    q_start: int | None,
    params: dict[str, Any],
    family: str,
    timestamps: object = None,
) -> PromptMaskSpec:
    ids = _check_frame_ids(frame_ids)
    b, n = ids.shape
    q, first_query = _check_queries(q_len, q_start, n)
    host = ids.numpy()
    rows = [_read_row(host[i], i, name) for i in range(b)]
    times = _per_run_times(timestamps, rows) if name == "prompt-timestamp-causal" else None
    kv_key = np.empty((b, n), dtype=np.int32)
    by_bound: np.ndarray | None = None  # [B, k, q]: each bound contiguous
    runs = []
    for i, row in enumerate(rows):
        if name == "prompt-causal-frame":
            kv, qb = _causal_frame_keys(row)
        elif name == "prompt-sliding-window":
            kv, qb = _window_keys(row, params["window_size"], params.get("sink_frames", 0))
        else:
            assert times is not None
            kv, qb = _timestamp_keys(row, times[i], params["within_frame"])
        if by_bound is None:
            by_bound = np.empty((b, len(qb), q), dtype=np.int32)
        kv_key[i] = kv.per_token(row)
        for j, bound in enumerate(qb):
            by_bound[i, j] = bound.per_token(row)[first_query : first_query + q]
        runs.append((row, kv, qb))
    assert by_bound is not None

    def factory(device: torch.device) -> MaskMod:
        return _mod(family, *_tensors(kv_key, by_bound, device, _BUCKET))

    return PromptMaskSpec(
        name=name,
        params={"frame_ids": ids, **params, "q_len": q, "q_start": first_query},
        q_len=q,
        kv_len=n,
        mod_factory=factory,
        description=_DESCRIPTIONS[name],
        frame_ids=ids,
        batch_size=b,
        family=family,
        _kv_key=kv_key,
        _bounds=by_bound,
        _runs=tuple(runs),
    )


_DESCRIPTIONS = {
    "prompt-causal-frame": "prompt: text token-causal, each video frame sees up to its end",
    "prompt-sliding-window": "prompt: text token-causal, video frames in a sliding window",
    "prompt-timestamp-causal": "prompt: text token-causal, video frames by timestamp",
}


@register_mask("prompt-causal-frame")
def prompt_causal_frame_mask(
    frame_ids: torch.Tensor, q_len: int | None = None, q_start: int | None = None
) -> PromptMaskSpec:
    """Over a prompt: text token-causal; a video token sees everything up to the end of its frame.

    ``frame_ids`` ``[B, L]`` marks each token: ``TEXT`` (-1), ``PAD`` (-2), or its frame number
    inside its video (0, 1, 2, ...). ``q_len`` makes the queries ``q_len`` positions starting at
    ``q_start`` (default: the last ``q_len``; decoding with a KV cache). See the module docstring
    for the rules every prompt mask shares.

    Example:
        >>> ids = torch.tensor([[PAD, TEXT, 0, 0, 1, TEXT]])   # left padding, two frames of 2/1
        >>> prompt_causal_frame_mask(ids, q_len=2).to_dense()[0].int().tolist()
        [[0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]]
        >>> prompt_causal_frame_mask(ids, q_len=1, q_start=2).to_dense()[0].int().tolist()
        [[0, 1, 1, 1, 0, 0]]
    """
    return _build("prompt-causal-frame", frame_ids, q_len, q_start, {}, "at-most")


@register_mask("prompt-sliding-window")
def prompt_sliding_window_mask(
    frame_ids: torch.Tensor,
    window_size: int,
    sink_frames: int = 0,
    q_len: int | None = None,
    q_start: int | None = None,
) -> PromptMaskSpec:
    """Over a prompt: text token-causal; frame f sees frames f - window_size .. f and the sinks.

    A token of frame ``f`` sees the sequence from the start of frame ``f - window_size`` to the
    end of frame ``f`` (text between included), and everything up to the end of its video's
    sink frame ``min(sink_frames, f + 1) - 1``, or up to its video's first frame when
    ``sink_frames=0``. Text sees every real token before it. Padding sits at the left end of a
    row or after its last video token (where ``generate`` leaves a right padding).

    Example:
        >>> ids = torch.tensor([[TEXT, 0, 1, 2, TEXT]])
        >>> prompt_sliding_window_mask(ids, window_size=0).to_dense()[0].int().tolist()
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [1, 0, 0, 1, 0], [1, 1, 1, 1, 1]]
    """
    w = check_int("window_size", window_size, minimum=0)
    s = check_int("sink_frames", sink_frames, minimum=0)
    params: dict[str, Any] = {"window_size": w}
    if s:
        params["sink_frames"] = s
    return _build("prompt-sliding-window", frame_ids, q_len, q_start, params, "two-intervals")


@register_mask("prompt-timestamp-causal")
def prompt_timestamp_causal_mask(
    frame_ids: torch.Tensor,
    timestamps: Sequence[int] | torch.Tensor,
    within_frame: WithinFrame = "full",
    q_len: int | None = None,
    q_start: int | None = None,
) -> PromptMaskSpec:
    """Over a prompt: text token-causal; a video token sees its video's frames shown no later.

    ``timestamps[k]`` is the time of frame ``k`` of every video (``FrameLayout.frame_indices``
    of a fast/slow layout); ``within_frame="causal"`` orders tokens of equal timestamp by position
    (the reconstruction's ``llm_mask``). Text between two frames of a video (a timestamp) counts
    as a token of the frame after it.

    Example:
        >>> ids = torch.tensor([[TEXT, 0, 1, 2, TEXT]])   # frames shown at t = 2, 0, 1
        >>> spec = prompt_timestamp_causal_mask(ids, timestamps=[2, 0, 1])
        >>> spec.to_dense()[0].int().tolist()
        [[1, 0, 0, 0, 0], [1, 1, 1, 1, 0], [1, 0, 1, 0, 0], [1, 0, 1, 1, 0], [1, 1, 1, 1, 1]]
        >>> ids = torch.tensor([[0, TEXT, 1]])   # "<t=...>" before frame 1 belongs to frame 1
        >>> prompt_timestamp_causal_mask(ids, timestamps=[1, 0]).to_dense()[0].int().tolist()
        [[1, 1, 1], [0, 1, 1], [0, 1, 1]]
    """
    params = {"within_frame": check_choice("within_frame", within_frame, WITHIN_FRAME)}
    return _build(
        "prompt-timestamp-causal", frame_ids, q_len, q_start, params, "at-most", timestamps
    )
