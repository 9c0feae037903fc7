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
    block_kernel_available,
    block_mask_from_tables,
    host_buffer,
    to_device,
)
from flexframe.masks.closed_form import (
    Interval,
    IntervalRelation,
    block_mask_from_grids,
    stack_block_tables,
)
from flexframe.masks.piecewise import PiecewiseKey
from flexframe.masks.prompt_layout import PAD as PAD
from flexframe.masks.prompt_layout import TEXT as TEXT
from flexframe.masks.prompt_layout import _check_frame_ids, _read_row, _Row
from flexframe.masks.registry import register_mask
from flexframe.masks.spec import MAX_DENSE_BYTES, BlockSize, MaskMod, MaskSpec

_BIG = 2**30  # beyond every position; the keys are int32 on the device
PROMPT_MASKS = ("prompt-causal-frame", "prompt-sliding-window", "prompt-timestamp-causal")
"""The registered prompt masks (they take ``frame_ids``, not frame counts)."""


# -- keys and bounds, run by run ------------------------------------------------------------------
_POSITIONS = np.arange(0, dtype=np.int64)


def _positions(n: int) -> np.ndarray:
    """``np.arange(n)`` as a read-only view of one kept array (an arange of a prompt's length
    costs more than a copy of it)."""
    global _POSITIONS
    if _POSITIONS.size < n:
        positions = np.arange(max(n, 2 * _POSITIONS.size), dtype=np.int64)
        positions.flags.writeable = False
        _POSITIONS = positions
    return _POSITIONS[:n]


@dataclass(frozen=True)
class _RunKey:
    """A key or bound over a row, ``offset[u] + slope[u] * t`` at each position ``t`` of run
    ``u`` (the row's runs of equal ids): every prompt key is constant or the position itself on
    each run, so the closed form reads it run by run and only the mask_mod's tensors need it
    token by token."""

    offset: np.ndarray  # [U] int64
    slope: np.ndarray | int  # [U] int64 of 0s and 1s, or one for every run

    def per_token(self, row: _Row) -> np.ndarray:
        """``[L]`` int64: the value at every position of the row."""
        values = row.per_token(self.offset)
        if isinstance(self.slope, np.ndarray):
            rising = np.flatnonzero(self.slope)
            if rising.size > 64:  # many rising runs: one pass over the tokens
                values += _positions(row.length) * row.per_token(self.slope)
            else:  # a few (text between videos): their positions only
                ends = row.run_start + row.run_length
                for a, z in zip(row.run_start[rising].tolist(), ends[rising].tolist(), strict=True):
                    values[a:z] += _positions(z)[a:]
        elif self.slope:
            values += _positions(row.length)
        return values

    def piecewise(self, row: _Row, start: int, length: int) -> PiecewiseKey:
        """The key on positions ``start .. start + length - 1`` of the row, as positions
        ``0 .. length - 1``: one segment per run."""
        offset, slope, run_start = self.offset, self.slope, row.run_start
        if start or length != row.length:
            keep = (run_start + row.run_length > start) & (run_start < start + length)
            run_start = np.maximum(run_start[keep] - start, 0)
            slope = slope[keep] if isinstance(slope, np.ndarray) else slope
            offset = offset[keep] + slope * start
        return PiecewiseKey.from_numpy(run_start, offset, slope, length)


def _position_key(row: _Row, *, left_pad_below: bool) -> _RunKey:
    """The position of each real token; padding beyond every bound: above all of them, or, for
    two-sided relations (whose bounds start at the first real token), below them at the left
    end of the row. A block column's keys then stay a run of integers with, at most, a gap no
    interval's bounds fall in (the closed form's exactness, see ``closed_form``): padding after
    the last video token only precedes text, whose intervals start at the row's first token."""
    offset = (row.run_id == PAD) * _BIG
    if left_pad_below:
        offset -= (row.run_start < row.first) * (2 * _BIG)
    return _RunKey(offset, 1)


_Keys = tuple[_RunKey, tuple[_RunKey, ...]]


def _up_to_frame_end(row: _Row) -> _RunKey:
    # A video token's bound is its frame's last position, a text (or padding) token's its own.
    return _RunKey(row.by_run(row.ends, 0), (row.frame_run < 0).astype(np.int64))


def _causal_frame_keys(row: _Row) -> _Keys:
    return _position_key(row, left_pad_below=False), (_up_to_frame_end(row),)


def _window_keys(row: _Row, window: int, sinks: int) -> _Keys:
    # Per frame run, then to the runs of the row. Text: [row.first, itself] and an empty second
    # interval.
    runs = np.arange(row.starts.size)
    first_run = row.video_first_run
    lo1 = row.starts[runs - np.minimum(row.frame, window)]  # frames are consecutive runs
    if sinks:
        hi2 = row.ends[first_run + np.minimum(sinks - 1, row.frame)]
    else:
        hi2 = row.starts[first_run] - 1
    bounds = (
        _RunKey(row.by_run(lo1, row.first), 0),
        _up_to_frame_end(row),  # a frame's end is past its tokens
        _RunKey(row.by_run(np.full(runs.size, row.first, dtype=np.int64), _BIG), 0),
        _RunKey(row.by_run(hi2, -_BIG), 0),
    )
    return _position_key(row, left_pad_below=True), bounds


def _timestamp_keys(row: _Row, times: np.ndarray, within_frame: str) -> _Keys:
    """One-sided keys: ``key(kv) <= key(q)``. Outside videos the key is the position; inside
    video ``v`` (positions ``S_v .. E_v``) it is ``S_v`` plus the token's rank in time order
    (by frame timestamp, then by position for ``within_frame="causal"``), so every key of a video
    stays inside its span and the order with the tokens around it is kept. Text between two
    frames of a video takes the timestamp of the frame after it."""
    offset = np.zeros(row.run_id.size, dtype=np.int64)  # outside videos: the position
    full = within_frame == "full"
    slope = np.ones(row.run_id.size, dtype=np.int64) if full else 1
    frame_runs = np.flatnonzero(row.frame_run >= 0)  # the run index of each frame run
    first_runs = np.flatnonzero(row.frame == 0)  # each video's first and last frame run
    last_runs = np.append(first_runs[1:], row.frame.size)[: first_runs.size] - 1
    for a, z in zip(first_runs.tolist(), last_runs.tolist(), strict=True):
        start = int(row.starts[a])
        # A frame's group: its tokens and the text inside the video just before it (which
        # takes the frame's timestamp); the groups tile the video, and so do its runs.
        ends = row.ends[a : z + 1]
        group_start = np.append(start, ends[:-1] + 1)
        group_times = times[a : z + 1]
        ua, uz = int(frame_runs[a]), int(frame_runs[z])
        group = np.searchsorted(frame_runs[a : z + 1], np.arange(ua, uz + 1))  # of each run
        if full:  # one key per distinct timestamp, in time order
            rank = np.unique(group_times, return_inverse=True)[1].reshape(-1)
            offset[ua : uz + 1] = start + rank[group]
            slope[ua : uz + 1] = 0  # type: ignore[index]
        else:  # by timestamp, then by position: the groups in that order, keys consecutive
            length = ends - group_start + 1
            order = np.argsort(group_times, kind="stable")
            moved = np.empty_like(group_start)
            moved[order] = start + np.cumsum(length[order]) - length[order]
            offset[ua : uz + 1] = (moved - group_start)[group]
    kv_offset = offset + (row.run_id == PAD) * _BIG if row.padded else offset
    return _RunKey(kv_offset, slope), (_RunKey(offset, slope),)


# -- the mask_mods: one code object per family ----------------------------------------------------
def _at_most_mod(kv_key: torch.Tensor, q_hi: torch.Tensor) -> MaskMod:
    def prompt_at_most(b, h, q_idx, kv_idx):
        return kv_key[b, kv_idx] <= q_hi[b, q_idx]

    return prompt_at_most


def _two_intervals_mod(kv_key: torch.Tensor, q_bounds: torch.Tensor) -> MaskMod:
    def prompt_two_intervals(b, h, q_idx, kv_idx):
        key = kv_key[b, kv_idx]
        window = (q_bounds[b, q_idx, 0] <= key) & (key <= q_bounds[b, q_idx, 1])
        before = (q_bounds[b, q_idx, 2] <= key) & (key <= q_bounds[b, q_idx, 3])
        return window | before

    return prompt_two_intervals


def _mod(family: str, kv_key: torch.Tensor, q_bounds: torch.Tensor) -> MaskMod:
    if family == "at-most":
        return _at_most_mod(kv_key, q_bounds[..., 0])
    return _two_intervals_mod(kv_key, q_bounds)


# The mask_mod's tensors are padded to a multiple of this: their shapes change in steps (fewer
# recompiles) and share no symbolic size with the sequence (torch 2.13's CPU flex fails then).
_BUCKET = 128


def _tensors(
    kv_key: np.ndarray, by_bound: np.ndarray, device: torch.device, bucket: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``kv_key`` ``[B, n]`` and the bounds ``by_bound`` ``[B, k, q]`` as int32 tensors on
    ``device``, ``[B, n]`` and ``[B, q, k]``, sent in one copy (the bounds go bound by bound and
    are interleaved on the device: NumPy's strided writes cost more than a device copy); with
    ``bucket`` > 1 the length dimension is padded to a multiple of it with keys and bounds that
    see nothing."""
    (b, n), (k, q) = kv_key.shape, by_bound.shape[1:]
    n_pad, q_pad = (-(-n // bucket) * bucket, -(-q // bucket) * bucket) if bucket > 1 else (n, q)
    host = host_buffer(b * n_pad + b * q_pad * k, torch.int32, device)  # one buffer, one copy
    both = host.numpy()
    kv_part = both[: b * n_pad].reshape(b, n_pad)
    q_part = both[b * n_pad :].reshape(b, k, q_pad)
    kv_part[:, :n] = kv_key
    kv_part[:, n:] = _BIG
    q_part[:, :, :q] = by_bound
    q_part[:, 0::2, q:] = _BIG if k > 1 else -1  # lower bounds, or the one hi
    q_part[:, 1::2, q:] = -_BIG
    kv, q_t = to_device(host, device).split([kv_part.size, q_part.size])
    if k == 1:  # [B, 1, q] and [B, q, 1] are the same memory
        return kv.view(kv_part.shape), q_t.view(b, q_pad, 1)
    return kv.view(kv_part.shape), q_t.view(q_part.shape).transpose(1, 2).contiguous()


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
        return _tensors(self._kv_key, self._bounds, resolve_device(device))

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
        mod = self.mask_mod_for(device)
        seq_lengths = (self.q_len, self.kv_len)
        num_blocks = (-(-self.q_len // bs[0]), -(-self.kv_len // bs[1]))
        tables = None
        if use_closed and block_kernel_available(device, num_blocks):  # CUDA: one launch
            tables = stack_block_tables([r.block_table(*bs) for r in self.relations])
            if tables[0].shape[2] > MAX_PIECES:  # many pieces a block: the torch route is faster
                tables = None
        if tables is not None:
            block_mask = block_mask_from_tables(*tables, seq_lengths, bs, mod, device)
        elif use_closed:
            partial, full = self.block_grids(bs, device)
            block_mask = block_mask_from_grids(partial, full, seq_lengths, bs, mod)
        else:
            block_mask = create_block_mask(
                mod, self.batch_size, 1, self.q_len, self.kv_len, device=device, BLOCK_SIZE=bs
            )
        self._built[key] = block_mask
        return block_mask

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
    kv_key = np.empty((b, n), dtype=np.int64)
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
            by_bound = np.empty((b, len(qb), q), dtype=np.int64)
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
