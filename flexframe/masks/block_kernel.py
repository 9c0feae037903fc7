"""A closed-form BlockMask's device half in one launch: a Triton kernel over the block tables.

:meth:`IntervalRelation.block_table <flexframe.masks.closed_form.IntervalRelation.block_table>`
states a mask's blocks in two small host tables, O(segments + blocks) entries: per q block a few
pieces of intervals, per kv block its key range. From them, one kernel program per row writes a
row of every BlockMask tensor directly: which blocks of the row are partial and which are full,
their counts, and their indices in torch's order (set blocks first, ascending, then the others),
for the kv side (a row per q block) and the q side (a row per kv block) alike.

Why a kernel: the torch route (:func:`flexframe.masks.closed_form.build_block_mask`) takes some
15-30 small launches, and on the H200 hosts this project measured, a launch costs 20-40 us of
host time, so a build at 128K tokens spent most of its 0.6-1.5 ms launching. The kernel takes one
copy of the tables to the device, one allocation and one launch.

It runs on CUDA devices with Triton. :func:`block_kernel_available` says whether it will be used;
elsewhere the torch route builds the same tensors (the CUDA tests check them equal, tensor for
tensor, and equal to torch's ``create_block_mask``). :func:`grids_from_tables` is the tables'
meaning in plain torch, the reference the CPU tests hold the tables to.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask, _mask_mod_signature, noop_mask

# A row is one program's vector: 16,384 blocks a side (2M tokens at 128) is the largest a program
# holds; past it, or past int32 offsets, the torch route builds the mask.
MAX_BLOCKS = 16384
# A program loops over its q blocks' pieces: with a few (frames and chunks, 1-3 a block) the
# kernel beat the torch route on an H200 (e.g. a window + sinks at 128K tokens: 0.70 against
# 1.18 ms), with a piece per token (128 a block: a prompt's text under a sliding window, before
# the tables joined runs of growing intervals into one piece) it lost (7.1 against 3.3 ms).
# Tables with more pieces a block than this go the torch route; the limit between the two
# measured points is a choice, not a measurement.
MAX_PIECES = 8
_DISABLE_ENV = "FLEXFRAME_BLOCK_KERNEL"  # "0": never use the kernel (the torch route instead)


class HostArrays:
    """Host arrays bound for one device in one copy. Every host-to-device copy of a build goes
    through it.

    It holds one host buffer of bytes, NumPy views of it to fill (:attr:`arrays`, each at a
    16-byte aligned offset), and :meth:`send`: one copy that gives the arrays on the device as
    tensors of their shapes and dtypes. It is one-shot: fill, send once, do not write again.

    For CUDA the buffer is page-locked (from torch's caching host allocator, which keeps it
    until the copy has run), and the copy is queued on the current stream without the host
    waiting for it. A copy from pageable memory synchronizes: on the H200 hosts each such copy
    cost about 0.1 ms of a build, and each page-locked one (the allocation, the copy, its event)
    50-100 us of host time, so a build makes one. On the CPU the arrays are views of the buffer.

    Example:
        >>> stage = HostArrays([((2,), torch.int64), ((1, 3), torch.int32)], "cpu")
        >>> stage.arrays[0][:] = [1, 2]
        >>> stage.arrays[1][:] = 7
        >>> [t.tolist() for t in stage.send()]
        [[1, 2], [[7, 7, 7]]]
    """

    def __init__(
        self, layout: list[tuple[tuple[int, ...], torch.dtype]], device: torch.device | str
    ) -> None:
        self.device = torch.device(device)
        # (shape, strides, dtype, offset in bytes) of each array
        self._parts: list[tuple[tuple[int, ...], tuple[int, ...], torch.dtype, int]] = []
        at = 0
        for shape, dtype in layout:
            shape = tuple(shape)
            self._parts.append((shape, _strides(shape), dtype, at))
            at += -(-math.prod(shape) * dtype.itemsize // 16) * 16
        self._pinned = self.device.type == "cuda"
        self._sent = False
        self._buffer = torch.empty(max(at, 16), dtype=torch.uint8, pin_memory=self._pinned)
        raw = self._buffer.numpy()
        self.arrays: list[np.ndarray] = [
            np.ndarray(shape, _numpy_dtype(dtype), buffer=raw, offset=offset)
            for shape, _, dtype, offset in self._parts
        ]

    def send(self) -> list[torch.Tensor]:
        """The arrays on the device (views of one tensor there), in :attr:`arrays`' order. The
        host arrays are read-only from then on (a write could race the queued copy), and a
        second send is refused."""
        if self._sent:
            raise RuntimeError("HostArrays.send() was called already: a stage sends once")
        self._sent = True
        for array in self.arrays:
            array.flags.writeable = False
        if self._pinned:  # queued on the current stream; the host does not wait
            flat = self._buffer.to(self.device, non_blocking=True)
        else:
            flat = self._buffer.to(self.device)
        by_dtype: dict[torch.dtype, torch.Tensor] = {}
        out = []
        for shape, strides, dtype, offset in self._parts:
            whole = by_dtype.get(dtype)
            if whole is None:
                whole = by_dtype[dtype] = flat.view(dtype)
            out.append(whole.as_strided(shape, strides, offset // dtype.itemsize))
        return out


@functools.cache
def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


def arrays_to_device(arrays: list[np.ndarray], device: torch.device | str) -> list[torch.Tensor]:
    """Host integer arrays (int64 or int32) as tensors of their shapes and dtypes on ``device``,
    sent in a single copy (:class:`HostArrays`).

    Example:
        >>> [t.tolist() for t in arrays_to_device([np.array([[1, 2]]), np.array([3])], "cpu")]
        [[[1, 2]], [3]]
    """
    layout = [(np.shape(a), torch.from_numpy(np.empty(0, np.asarray(a).dtype)).dtype) for a in
              arrays]  # fmt: skip
    stage = HostArrays(layout, device)
    for slot, a in zip(stage.arrays, arrays, strict=True):
        slot[...] = a
    return stage.send()


def grids_from_tables(rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(partial, full)`` ``[..., Q_BLOCKS, KV_BLOCKS]`` bool grids from the block tables.

    ``rows`` ``[..., Q_BLOCKS, P, K, 4]`` and ``cols`` ``[..., KV_BLOCKS, 3]``, as
    :meth:`~flexframe.masks.closed_form.IntervalRelation.block_table` gives them (leading batch
    dimensions optional). Dense in ``Q_BLOCKS * P * K * KV_BLOCKS``: the reference meaning of the
    tables, not a fast route.

    Example:
        >>> from flexframe.masks.closed_form import IntervalRelation, PiecewiseKey
        >>> key = PiecewiseKey.per_frame(torch.arange(2), num_patches_per_frame=3)
        >>> rows, cols = IntervalRelation(kv_key=key, q_hi=key).block_table(2, 2)
        >>> partial, full = grids_from_tables(torch.from_numpy(rows), torch.from_numpy(cols))
        >>> partial.int().tolist(), full.int().tolist()
        ([[0, 1, 0], [0, 1, 1], [0, 0, 0]], [[1, 0, 0], [1, 0, 0], [1, 1, 1]])
    """
    any_lo, any_hi, full_lo, full_hi = (rows[..., i, None] for i in range(4))  # [.., Q, P, K, 1]
    shape = (*cols.shape[:-2], 1, 1, 1, cols.shape[-2])
    kmin, kmax, kmax_full = (cols[..., i].reshape(shape) for i in range(3))
    meets = (any_lo <= kmax) & (any_hi >= kmin)  # [..., Q, P, K, KV]
    holds = (full_lo <= kmin) & (full_hi >= kmax_full)
    any_visible = meets.any(-2).any(-2)
    full = holds.any(-2).all(-2)
    return any_visible & ~full, full


def block_kernel_available(
    device: torch.device | str, num_blocks: tuple[int, int] = (1, 1)
) -> bool:
    """True when :func:`block_mask_from_tables` runs the kernel for ``device`` (a CUDA device,
    Triton importable, at most :data:`MAX_BLOCKS` blocks a side, ``FLEXFRAME_BLOCK_KERNEL`` not
    ``0``); otherwise it builds through torch. The builders also take the torch route for
    tables of more than :data:`MAX_PIECES` pieces a block.

    Example:
        >>> block_kernel_available("cpu")
        False
    """
    if torch.device(device).type != "cuda" or os.environ.get(_DISABLE_ENV) == "0":
        return False
    return max(num_blocks) <= MAX_BLOCKS and _kernel() is not None


@functools.cache
def _kernel() -> Any:
    """The Triton kernel (compiled on first launch); None without Triton."""
    from flexframe.masks._block_triton import block_rows

    return block_rows


def _launch(rows: torch.Tensor, cols: torch.Tensor, out: torch.Tensor) -> None:
    """One launch over the tables on the device (``rows`` ``[B, NQ, P, K, 4]``, ``cols``
    ``[B, NKV, 3]``, both contiguous int64) into ``out``, laid out as :func:`_layout` says."""
    b, nq, p, k, _ = rows.shape
    nkv = cols.shape[1]
    block = max(16, 1 << (max(nq, nkv) - 1).bit_length())
    _kernel()[(nq + nkv, b)](
        rows, cols, out, nq, nkv, P=p, K=k, BLOCK=block, num_warps=4 if block <= 2048 else 8
    )


def _layout(b: int, nq: int, nkv: int) -> list[tuple[int, tuple[int, ...]]]:
    """(offset, shape) of the eight tensors in the kernel's output, in BlockMask's order."""
    out: list[tuple[int, tuple[int, ...]]] = []
    at = 0
    for rows, cols in ((nq, nkv), (nkv, nq)):
        for _ in range(2):  # partial, then full
            out.append((at, (b, 1, rows)))
            at += b * rows
            out.append((at, (b, 1, rows, cols)))
            at += b * rows * cols
    return out


def block_mask_from_tables(
    rows: np.ndarray,
    cols: np.ndarray,
    seq_lengths: tuple[int, int],
    block_size: tuple[int, int],
    mask_mod: _mask_mod_signature | None,
    device: torch.device | str,
) -> BlockMask:
    """A ``BlockMask`` of batch ``B`` from block tables, written by one CUDA kernel launch.

    Args:
        rows: ``[B, Q_BLOCKS, P, K, 4]`` int64 (or without ``B``), from
            :meth:`~flexframe.masks.closed_form.IntervalRelation.block_table`.
        cols: ``[B, KV_BLOCKS, 3]`` int64 (or without ``B``).
        seq_lengths: ``(q_len, kv_len)``.
        block_size: ``(BLOCK_Q, BLOCK_KV)``.
        mask_mod: evaluated by the attention kernel inside partial blocks.
        device: a CUDA device (see :func:`block_kernel_available`).

    Returns:
        The BlockMask, ``H = 1`` (it broadcasts over heads); its tensors equal those of the
        torch route and of torch's ``create_block_mask``.

    Example:
        >>> from flexframe.masks.closed_form import IntervalRelation, PiecewiseKey
        >>> key = PiecewiseKey.per_frame(torch.arange(3), num_patches_per_frame=96)
        >>> rows, cols = IntervalRelation(kv_key=key, q_hi=key).block_table(128, 128)
        >>> if block_kernel_available("cuda"):
        ...     bm = block_mask_from_tables(rows, cols, (288, 288), (128, 128), None, "cuda")
        ...     assert bm.kv_num_blocks.tolist() == [[[2, 2, 3]]]
    """
    if rows.ndim == 4:
        rows, cols = rows[None], cols[None]
    rows_t, cols_t = arrays_to_device([rows, cols], device)  # checked there, on the device
    return block_mask_from_device_tables(rows_t, cols_t, seq_lengths, block_size, mask_mod)


def block_mask_from_device_tables(
    rows: torch.Tensor,
    cols: torch.Tensor,
    seq_lengths: tuple[int, int],
    block_size: tuple[int, int],
    mask_mod: _mask_mod_signature | None,
) -> BlockMask:
    """:func:`block_mask_from_tables` from tables already on the CUDA device: ``rows``
    ``[B, Q_BLOCKS, P, K, 4]`` and ``cols`` ``[B, KV_BLOCKS, 3]``, contiguous int64 (for
    instance sent with other arrays in one :class:`HostArrays` copy, as the prompt masks send
    their mask_mod's tensors with them).

    Example:
        >>> from flexframe.masks.closed_form import IntervalRelation, PiecewiseKey
        >>> key = PiecewiseKey.per_frame(torch.arange(3), num_patches_per_frame=96)
        >>> rows, cols = IntervalRelation(kv_key=key, q_hi=key).block_table(128, 128)
        >>> if block_kernel_available("cuda"):
        ...     rows_t, cols_t = arrays_to_device([rows[None], cols[None]], "cuda")
        ...     bm = block_mask_from_device_tables(rows_t, cols_t, (288, 288), (128, 128), None)
        ...     assert bm.kv_num_blocks.tolist() == [[[2, 2, 3]]]
    """
    blocks = tuple(-(-n // s) for n, s in zip(seq_lengths, block_size, strict=True))
    if (
        rows.dim() != 5
        or cols.dim() != 3
        or rows.shape[-1] != 4
        or cols.shape[-1] != 3
        or rows.shape[0] != cols.shape[0]
        or (rows.shape[1], cols.shape[1]) != blocks
    ):
        raise ValueError(
            f"rows must be [B, Q_BLOCKS, P, K, 4] and cols [B, KV_BLOCKS, 3] with {blocks} "
            f"blocks for seq_lengths={tuple(seq_lengths)} and block_size={tuple(block_size)}, "
            f"got rows {tuple(rows.shape)} and cols {tuple(cols.shape)}"
        )
    for name, t in (("rows", rows), ("cols", cols)):
        if t.dtype != torch.int64 or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous int64 tensor, got {t.dtype}")
    if rows.device != cols.device:
        raise ValueError(f"rows and cols must be on one device, got {rows.device}, {cols.device}")
    b, nq = rows.shape[:2]
    nkv = cols.shape[1]
    if not block_kernel_available(rows.device, (nq, nkv)):
        raise ValueError(
            f"the block kernel does not run for device={str(rows.device)!r} at {nq} x {nkv} "
            "blocks; use flexframe.masks.closed_form.build_block_mask (the torch route) instead"
        )
    layout, total = _output_layout(b, nq, nkv)
    if total >= 2**31:
        raise ValueError(f"{total:,} index entries exceed the kernel's int32 offsets")
    out = torch.empty(total, dtype=torch.int32, device=rows.device)
    with torch.cuda.device(out.device):
        _launch(rows, cols, out)
    tensors = [out.as_strided(shape, strides, at) for at, shape, strides in layout]
    return assemble_block_mask(seq_lengths, tensors, block_size, mask_mod)


@functools.lru_cache(maxsize=64)
def _output_layout(
    b: int, nq: int, nkv: int
) -> tuple[list[tuple[int, tuple[int, ...], tuple[int, ...]]], int]:
    """:func:`_layout` with each tensor's strides, and the output's total size."""
    layout = _layout(b, nq, nkv)
    total = layout[-1][0] + math.prod(layout[-1][1])
    return [(at, shape, _strides(shape)) for at, shape in layout], total


def _strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A contiguous tensor's strides."""
    return tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))


def assemble_block_mask(
    seq_lengths: tuple[int, int],
    tensors: list[torch.Tensor],
    block_size: tuple[int, int],
    mask_mod: _mask_mod_signature | None,
) -> BlockMask:
    """The ``BlockMask`` of its eight tensors, in its own order (kv side: partial counts and
    indices, full counts and indices; then the q side's four); no ``mask_mod`` is ``noop_mask``.

    Example:
        >>> num, idx = torch.ones(1, 1, 1, dtype=torch.int32), torch.zeros(1, 1, 1, 1).int()
        >>> assemble_block_mask((4, 4), [num, idx] * 4, (4, 4), None).kv_num_blocks.tolist()
        [[[1]]]
    """
    kv_num, kv_idx, fkv_num, fkv_idx, q_num, q_idx, fq_num, fq_idx = tensors
    return BlockMask(
        seq_lengths,
        kv_num,
        kv_idx,
        fkv_num,
        fkv_idx,
        q_num,
        q_idx,
        fq_num,
        fq_idx,
        BLOCK_SIZE=block_size,
        mask_mod=mask_mod if mask_mod is not None else noop_mask,
    )
