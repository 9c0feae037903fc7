"""Streaming inference: generate frame by frame (or chunk by chunk) with a KV cache that the
training mask drives.

A model trained under a frame mask runs at inference one chunk of ``c`` whole frames at a time,
``decoder(x_chunk, cache=cache)`` with ``x_chunk`` ``[B, c * P, dim]``, reusing the keys and
values of the frames before. The cache is built from the mask that trained the model
(:meth:`FrameKVCache.for_mask`), and every step attends to exactly what that mask allows: the
step's mask is the training mask's own ``mask_mod``, evaluated at one token a frame on
``(query frame, frame held by the key's slot)``. The tests prove that the concatenated outputs of
a chunk-by-chunk run equal the full-sequence forward under the same mask.

Masks with a streaming form (:func:`streaming_rule`):

- ``causal-frame``: every earlier frame stays visible, so the cache holds up to ``max_frames``
  (default: the mask's ``num_frames``);
- ``sliding-window`` (with ``sink_frames``): a query frame ``f`` sees ``f - w .. f`` and the sinks;
- ``chunk-causal`` (with ``window_size`` chunks and ``sink_chunks``); without a window it keeps up
  to ``max_frames`` like causal-frame. Steps start at a chunk boundary and hold whole chunks (every
  token of a chunk sees the whole chunk), except a shorter last chunk, as in the mask;
- ``teacher-forcing``: the ``[clean | noisy]`` training mask streams as the ``chunk-causal`` mask
  with its parameters (clean chunks are appended; a noisy chunk runs without appending and sees
  the cached clean chunks the window and sinks allow, and itself), one chunk a step
  (``chunk_frames=frames_per_chunk``): a step of two noisy chunks would let one see the other;
- ``timestamp-causal`` only over frames in order (timestamps ``0, 1, .., F - 1``, whole frames):
  that is causal-frame.

Refused, with the reason: ``fast-slow`` (slow frames see later ones), ``timestamp-causal`` out of
order, ``packed-causal-frame`` (several videos: one cache per video), ``token-causal`` and
``full`` (no frames), combined masks, masks built by hand or registered by a user, and bare
BlockMasks (no frame structure flexframe can check).

Design (what was chosen, and why):

- **Buffers.** Per layer, keys and values ``[B, H_kv, capacity_frames * P, head_dim]``,
  zero-filled once (masked slots must hold finite values: a masked score is 0 * value) and written
  in place, a frame to a slot; no ``torch.cat``, no clone-and-shift. Their storage runs on, in
  zeros, to the end of the last key block, so a kernel that loads that block whole (a padded,
  partial block where the Triton kernel checks no bounds) reads finite values it then masks.
  Keys are cached rotated (``Attention.project_kv``) at their absolute frame times, so a frame's
  position never changes.
- **Capacity.** With a window (``sliding-window``; ``chunk-causal`` with ``window_size``) the cache
  keeps the sink frames in slots of their own and the rest in a ring of ``window + chunk_frames``
  frames: a step of ``c <= chunk_frames`` frames starting at frame ``f0`` needs frames
  ``f0 - window .. f0 + c - 1`` beyond the sinks, ``window + c`` of them, where ``window`` is
  ``window_size`` frames, or ``window_size * frames_per_chunk`` for chunk-causal's chunk-level
  window (chunk ``k`` sees chunks ``k - w .. k``, and a step starts at a chunk boundary). Frame
  ``f`` past the sinks goes to slot ``sinks + (f - sinks) % ring``, overwriting the frame that
  left the window ``ring`` frames before. Memory is constant however long the video runs, and
  the cache streams past the mask's ``num_frames`` (as the same rule over more frames). Without
  a window the layout is linear (slot ``f`` holds frame ``f``) up to ``max_frames``, and so is a
  window whose ring would hold more than the mask's ``num_frames`` (a window as long as the
  mask drops no frame within it): by default such a cache holds the mask's frames and stops
  there, rather than allocate the window (``window_size=1000`` over a 21-frame mask would be
  1,000 frames a layer); ``max_frames`` asks for more, and sizes the ring then. A cache never
  holds more frames than its mask has unless ``max_frames`` asks for them.
- **A step** writes the chunk's keys and values into its slots first and then attends from the
  chunk to the whole buffer (one key/value tensor, fixed shapes). The slot table (which frame sits
  in which slot, ``-1`` for none) and the frames of the chunk live in one small int64 tensor on
  the device, which the step's ``mask_mod`` reads; both are rewritten in place before each step
  (one small host-to-device copy from pinned memory, which does not wait for the device), so
  nothing the compiled kernel specializes on changes and one compiled kernel serves every step
  of a chunk size. On Hopper it is FlashAttention-4 through
  flexframe's :class:`~flexframe.nn.kernels.KernelPolicy`, like the training path. Every cache's
  mask_mod is the same closure, so each (setting, step size) gets a code object of its own,
  shared by the caches of that setting: the policy compiles a function a code object, here once
  (``dynamic=False``: a step's shapes are fixed), so a process that streams many settings never
  reaches dynamo's recompile limit (past it, torch falls back to its unfused eager kernel) nor
  has a setting's lengths made dynamic by another's (the CPU kernel cannot compile those), and
  a new cache of a setting seen before reuses its kernel.
- **The step's BlockMask** is classified in closed form from the ``[c, capacity_frames]``
  frame-visibility table (the rule on the host, over ``c * capacity`` entries): a block is full
  iff every (query, key) pair in it is visible, partial iff some pair is, exactly (tested
  against the dense mask from the slot table). A last block that holds padding (positions past
  ``c * P`` or the buffer's length) follows torch's ``create_block_mask``: it is never full, so
  the mask_mod (which sees the padded table entries as empty slots) hides the padding. One case
  is relaxed, where it is provably safe: when both block sizes divide 128 (the default 128), a
  padded last block whose real pairs are all visible is full. Torch's Triton kernel drops its
  bound checks only when both lengths are multiples of 128 (``IS_DIVISIBLE``, decided modulo
  128, not modulo the block size): then, with block sizes that divide 128, no block holds
  padding; otherwise it checks the key bound (``kv_idx < KV_LEN``) in every block, full ones
  included, and never writes padded query rows. The CPU kernel bounds each block by the
  lengths; FlashAttention-4 over such masks is tested on the H200
  (``tests/test_streaming_cuda.py``). With a block size that does not divide 128 (256, say) and
  lengths that are multiples of 128 but not of the block, a full padded block would let the
  Triton kernel read keys past the buffer's end into the softmax, so it is partial there. The
  relaxation matters for speed: ``c * P`` is rarely a multiple of 128 (1,560-token frames), and
  a partial row of blocks costs the mask_mod, which reads the slot table, in every one of its
  blocks; in the ring's steady state every block is full (FLASH runs a 3-frame chunk of
  1,560-token frames, 16 heads, against a 21-frame cache at 618 TFLOP/s on the H200:
  ``benchmarks/results/streaming-h200.json``).
  The BlockMasks are kept by that table in a small LRU: a ring in its steady state repeats its
  tables with a period of ``ring / gcd(ring, c)`` steps, so after the first cycle a step builds
  no BlockMask at all.
- **Denoising passes** (``append=False``): the chunk is written into the slots it will occupy
  (they hold frames no later query can see), attended, and then marked empty again; the frame
  count does not move. Running the same chunk several times and appending it last leaves the
  cache exactly as appending it once.
- **sdpa** (the CPU default) gets the dense ``[c * P, used * P]`` mask from the same table, over
  the slots filled so far.
- The cache path is for inference: it refuses keys and values that autograd tracks (the buffers
  are written in place, which autograd cannot follow): run it under ``torch.no_grad()``.

The pieces: this module (which masks stream and how: :func:`streaming_rule`, the step's
:func:`step_mask_mod` and :func:`step_block_grids`), ``flexframe.nn.cache``
(:class:`~flexframe.nn.cache.FrameKVCache`: buffers, layout, slot table, the step's masks) and
``flexframe.nn.cache_step`` (:class:`~flexframe.nn.cache_step.CacheStep`: one step's writes).

Example:
    >>> import torch
    >>> from flexframe import FlexFrameDecoder, get_mask
    >>> from flexframe.nn import FrameKVCache
    >>> torch.manual_seed(0) and None
    >>> decoder = FlexFrameDecoder(dim=32, depth=2, num_heads=4).eval()
    >>> spec = get_mask("sliding-window", num_frames=6, num_patches_per_frame=3, window_size=1)
    >>> cache = FrameKVCache.for_mask(spec, decoder)
    >>> x = torch.randn(1, 6 * 3, 32)  # [B, F * P, dim]
    >>> with torch.no_grad():
    ...     steps = [decoder(x[:, 3 * f : 3 * f + 3], cache=cache) for f in range(6)]
    ...     full = decoder(x, spec)
    >>> torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5), cache.capacity_frames
    (True, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask

from flexframe.masks import (
    MaskSpec,
    generate_causal_frame_mask_mod,
    generate_chunk_causal_mask_mod,
    generate_sliding_window_mask_mod,
    get_mask,
)
from flexframe.masks.spec import MaskMod
from flexframe.nn.attention import MaskLike, resolve_mask

STREAMING_MASKS: tuple[str, ...] = (
    "causal-frame",
    "sliding-window",
    "chunk-causal",
    "teacher-forcing",
    "timestamp-causal",
)
"""Masks with a streaming form (``timestamp-causal`` only over frames in order)."""

_REFUSED: dict[str, str] = {
    "fast-slow": "its slow frames see slow frames later in time, and every fast frame sees all "
    "slow frames, so no frame's output can be computed before the whole clip is known",
    "packed-causal-frame": "it packs several videos into one sequence; stream each video with a "
    "cache of its own under 'causal-frame'",
    "token-causal": "it has no frames (a frame cache holds whole frames); frame masks stream",
    "full": "every token sees every other, later frames included",
}


@dataclass(frozen=True)
class StreamingRule:
    """What streaming needs to know of a mask: its rule between frames and its window.

    Attributes:
        name: the rule's family (``"chunk-causal"`` for a ``teacher-forcing`` mask).
        num_patches_per_frame: tokens per frame ``P``.
        frame_rule: the training mask's ``mask_mod`` at one token a frame:
            ``frame_rule(b, h, q_frame, kv_frame)`` is True iff a query of frame ``q_frame`` may
            see frame ``kv_frame``.
        sink_frames: frames kept for good (the sinks), beyond any window.
        window_frames: how many frames before a step's first frame the step may still need,
            beyond the sinks; ``None``: all of them (no window).
        frames_per_chunk: a step starts at a multiple of this and holds whole chunks (1 for
            frame masks).
        params: the mask's parameters.

    Example:
        >>> spec = get_mask("chunk-causal", num_frames=9, num_patches_per_frame=2,
        ...                 frames_per_chunk=3, window_size=1, sink_chunks=1)
        >>> rule = streaming_rule(spec)
        >>> rule.sink_frames, rule.window_frames, rule.frames_per_chunk
        (3, 3, 3)
    """

    name: str
    num_patches_per_frame: int
    frame_rule: MaskMod
    sink_frames: int
    window_frames: int | None
    frames_per_chunk: int
    params: Mapping[str, Any]

    def visible(self, q_frames: np.ndarray, kv_frames: np.ndarray) -> np.ndarray:
        """``[len(q_frames), len(kv_frames)]`` bool: which frames the queries see; a negative
        ``kv_frames`` entry (an empty slot) is never visible."""
        q = q_frames.astype(np.int64)[:, None]
        kv = kv_frames.astype(np.int64)[None, :]
        # The training mask's own mask_mod, on NumPy arrays (its operators broadcast alike).
        rule: Callable[..., Any] = self.frame_rule
        seen = np.asarray(rule(0, 0, q, kv)).astype(np.bool_)
        return np.broadcast_to(seen, (q.shape[0], kv.shape[1])) & (kv >= 0)


def streaming_rule(spec: MaskLike, mask_params: Mapping[str, Any] | None = None) -> StreamingRule:
    """The streaming form of a registered mask, or a ``ValueError`` that says why it has none.

    Example:
        >>> streaming_rule(get_mask("sliding-window", num_frames=8, num_patches_per_frame=4,
        ...                         window_size=2, sink_frames=1)).window_frames
        2
        >>> streaming_rule(get_mask("fast-slow", num_fast_frames=2, num_slow_frames=2,
        ...                         num_patches_per_frame=1))
        Traceback (most recent call last):
        ...
        ValueError: mask 'fast-slow' has no streaming form: its slow frames see ...
    """
    resolved = resolve_mask(spec, mask_params)
    if isinstance(resolved, BlockMask):
        raise ValueError(
            "a bare BlockMask has no streaming form: it carries no frames flexframe can check. "
            f"Pass the registered mask it came from (one of {', '.join(STREAMING_MASKS)})"
        )
    spec = resolved
    name = spec.name
    if name in _REFUSED:
        raise ValueError(f"mask {name!r} has no streaming form: {_REFUSED[name]}")
    if name not in STREAMING_MASKS or spec.num_patches_per_frame is None:
        raise ValueError(
            f"mask {name!r} has no streaming form flexframe knows: a frame cache streams the "
            f"registered masks {', '.join(STREAMING_MASKS)} (a mask without frame structure, a "
            "combined mask or one registered by a user cannot be checked for a streaming form)"
        )
    if _registry_key(spec) != spec.cache_key:
        raise ValueError(
            f"mask {name!r} was not built by flexframe's registry (built by hand, or its name "
            "registered again): its mask_mod cannot be trusted to follow the registered rule. "
            f"Build it with get_mask({name!r}, ...)"
        )
    p = spec.num_patches_per_frame
    params = dict(spec.params)
    if name == "causal-frame":
        return StreamingRule(name, p, generate_causal_frame_mask_mod(1), 0, None, 1, params)
    if name == "sliding-window":
        w, s = params["window_size"], params.get("sink_frames", 0)
        rule = generate_sliding_window_mask_mod(1, w, s)
        return StreamingRule(name, p, rule, s, w, 1, params)
    if name in ("chunk-causal", "teacher-forcing"):
        fpc = params["frames_per_chunk"]
        w, s = params.get("window_size"), params.get("sink_chunks", 0)
        rule = generate_chunk_causal_mask_mod(1, fpc, w, s)
        if w is None:
            return StreamingRule("chunk-causal", p, rule, 0, None, fpc, params)
        return StreamingRule("chunk-causal", p, rule, s * fpc, w * fpc, fpc, params)
    # timestamp-causal
    timestamps = list(params["timestamps"])
    if params.get("within_frame", "full") != "full":
        raise ValueError(
            "mask 'timestamp-causal' with within_frame='causal' has no streaming form: its tokens "
            "see each other in token order inside a frame, and a frame cache holds whole frames"
        )
    if timestamps != list(range(len(timestamps))):
        raise ValueError(
            f"mask 'timestamp-causal' over an out-of-order layout (timestamps {timestamps}) has no "
            "streaming form: frames must arrive in time order, one a time step (timestamps 0, 1, "
            ".., F - 1), and then it is 'causal-frame'; stream with 'causal-frame' over the frames "
            "in time order"
        )
    return StreamingRule("causal-frame", p, generate_causal_frame_mask_mod(1), 0, None, 1, params)


def _registry_key(spec: MaskSpec) -> Any:
    try:
        return get_mask(spec.name, **dict(spec.params)).cache_key
    except (KeyError, TypeError, ValueError):
        return None


def step_mask_mod(table: torch.Tensor, p: int, q_entries: int, rule: MaskMod) -> MaskMod:
    """The step's mask_mod: ``table[j]`` is the frame of the chunk's ``j``-th frame and
    ``table[q_entries + s]`` the frame in slot ``s`` (``-1``: empty); a query of chunk token
    ``q_idx`` sees key ``kv_idx`` iff its slot holds a frame the training mask's rule lets the
    query's frame see. Both parts are padded to whole blocks, so the padded rows and columns of
    the last blocks index inside the table (FlashAttention-4's CuTe DSL compiles neither a
    clamp nor a load at a constant index, so the table is read at tensor indices only).

    Example:
        >>> table = torch.tensor([5, 6, 4, 5, 6, -1])  # chunk: frames 5, 6 | slots: 4, 5, 6, -
        >>> mod = step_mask_mod(table, 1, 2, generate_causal_frame_mask_mod(1))
        >>> [[bool(mod(0, 0, torch.tensor(q), torch.tensor(k))) for k in range(4)]
        ...  for q in range(2)]
        [[True, True, False, False], [True, True, True, False]]
    """

    def frame_kv_cache(b, h, q_idx, kv_idx):
        q_frame = table[q_idx // p]
        kv_frame = table[q_entries + kv_idx // p]
        return (kv_frame >= 0) & rule(b, h, q_frame, kv_frame)

    return frame_kv_cache


TRITON_DIVISIBLE = 128
"""torch's Triton flex kernel drops its bound checks when both lengths are multiples of this
(``IS_DIVISIBLE`` in ``torch/_inductor/kernel/flex/flex_attention.py``), whatever the block size."""


def padded_blocks_may_be_full(block_size: tuple[int, int]) -> bool:
    """Whether a step's padded last blocks may be marked full (when all their real pairs are
    visible): only when both block sizes divide :data:`TRITON_DIVISIBLE` (see the module
    docstring); otherwise a padded block is never full, as in torch's ``create_block_mask``.

    Example:
        >>> padded_blocks_may_be_full((128, 128)), padded_blocks_may_be_full((128, 256))
        (True, False)
    """
    return all(TRITON_DIVISIBLE % size == 0 for size in block_size)


def step_block_grids(
    visible: np.ndarray, p: int, block_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(partial, full)`` ``[Q_BLOCKS, KV_BLOCKS]`` grids of a step from its ``[c, slots]``
    frame-visibility table, exactly: query block ``i`` covers frames ``row_lo[i] .. row_hi[i]`` of
    the chunk and key block ``j`` slots ``slot_lo[j] .. slot_hi[j]``; counts of visible
    (frame, slot) pairs over those ranges, by prefix sums, say whether some or all are visible.
    A last block that holds padding is never full, unless :func:`padded_blocks_may_be_full`:
    then it is full when all its real pairs are visible (see the module docstring).

    Example:
        >>> visible = np.array([[True, True, False], [True, True, True]])  # 2 frames, 3 slots
        >>> partial, full = step_block_grids(visible, p=2, block_size=(4, 4))
        >>> partial.astype(int).tolist(), full.astype(int).tolist()  # slot 2: padded, half seen
        ([[0, 1]], [[1, 0]])
        >>> visible = np.ones((1, 3), dtype=bool)  # 1 frame sees its 3 slots, 6 keys
        >>> [step_block_grids(visible, 2, (2, size))[1].astype(int).tolist() for size in (4, 3)]
        [[[1, 1]], [[1, 1]]]
        >>> step_block_grids(visible, 2, (2, 5))[1].astype(int).tolist()  # 5: keys 5..9 padded
        [[1, 0]]
    """
    c, slots = visible.shape
    q_bs, kv_bs = block_size
    q_len, kv_len = c * p, slots * p
    q_first = np.arange(0, q_len, q_bs)
    kv_first = np.arange(0, kv_len, kv_bs)
    row_lo, row_hi = q_first // p, (np.minimum(q_first + q_bs, q_len) - 1) // p
    slot_lo, slot_hi = kv_first // p, (np.minimum(kv_first + kv_bs, kv_len) - 1) // p
    per_slot = np.zeros((c, slots + 1), dtype=np.int64)
    np.cumsum(visible, axis=1, out=per_slot[:, 1:])
    seen = per_slot[:, slot_hi + 1] - per_slot[:, slot_lo]  # [c, KV_BLOCKS]
    rows_any = np.zeros((c + 1, kv_first.size), dtype=np.int64)
    rows_all = np.zeros_like(rows_any)
    np.cumsum(seen > 0, axis=0, out=rows_any[1:])
    np.cumsum(seen == (slot_hi - slot_lo + 1), axis=0, out=rows_all[1:])
    any_visible = (rows_any[row_hi + 1] - rows_any[row_lo]) > 0
    all_visible = (rows_all[row_hi + 1] - rows_all[row_lo]) == (row_hi - row_lo + 1)[:, None]
    if not padded_blocks_may_be_full(block_size):
        if q_len % q_bs:
            all_visible[-1, :] = False
        if kv_len % kv_bs:
            all_visible[:, -1] = False
    return any_visible & ~all_visible, all_visible
