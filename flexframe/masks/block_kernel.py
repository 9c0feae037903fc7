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


def host_buffer(size: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A 1-D host tensor to fill (through ``.numpy()``) and send with :func:`to_device`:
    page-locked when ``device`` is CUDA (from torch's caching host allocator), else plain.

    Example:
        >>> buffer = host_buffer(3, torch.int64, "cpu")
        >>> buffer.numpy()[:] = [1, 2, 3]
        >>> to_device(buffer, "cpu").tolist()
        [1, 2, 3]
    """
    pinned = torch.device(device).type == "cuda"
    return torch.empty(size, dtype=dtype, pin_memory=pinned)


def to_device(buffer: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``buffer`` (from :func:`host_buffer`) on ``device``. To CUDA from page-locked memory the
    copy is queued on the current stream and the host does not wait for it (a copy from
    pageable memory synchronizes: on the H200 hosts each such copy cost about 0.1 ms of a
    build); torch's caching host allocator keeps the memory until the copy has run. On the CPU:
    the buffer itself."""
    if buffer.is_pinned():
        return buffer.to(device, non_blocking=True)
    return buffer.to(device)


def arrays_to_device(arrays: list[np.ndarray], device: torch.device | str) -> torch.Tensor:
    """Host int64 arrays, one after another in one :func:`host_buffer`, sent to ``device`` in
    a single copy (:func:`to_device`): the flat ``[sum of sizes]`` tensor there.

    Example:
        >>> arrays_to_device([np.array([[1, 2]]), np.array([3])], "cpu").tolist()
        [1, 2, 3]
    """
    sizes = [int(np.size(a)) for a in arrays]
    host = host_buffer(sum(sizes), torch.int64, device)
    flat, at = host.numpy(), 0
    for a, size in zip(arrays, sizes, strict=True):
        flat[at : at + size].reshape(np.shape(a))[...] = a
        at += size
    return to_device(host, device)


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


def _launch(tables: torch.Tensor, rows_shape: tuple[int, ...], nkv: int, out: torch.Tensor) -> None:
    """One launch: ``tables`` holds the rows table ``rows_shape`` then the cols table."""
    b, nq, p, k, _ = rows_shape
    block = max(16, 1 << (max(nq, nkv) - 1).bit_length())
    rows_size = int(np.prod(rows_shape))
    _kernel()[(nq + nkv, b)](
        tables, tables[rows_size:], out, nq, nkv, P=p, K=k, BLOCK=block,
        num_warps=4 if block <= 2048 else 8,
    )  # fmt: skip


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
    b, nq, p, k, _ = rows.shape
    nkv = cols.shape[1]
    if not block_kernel_available(device, (nq, nkv)):
        raise ValueError(
            f"the block kernel does not run for device={str(device)!r} at {nq} x {nkv} blocks; "
            "use flexframe.masks.closed_form.build_block_mask (the torch route) instead"
        )
    layout = _layout(b, nq, nkv)
    total = layout[-1][0] + int(np.prod(layout[-1][1]))
    if total >= 2**31:
        raise ValueError(f"{total:,} index entries exceed the kernel's int32 offsets")
    tables = arrays_to_device([rows, cols], device)
    out = torch.empty(total, dtype=torch.int32, device=device)
    with torch.cuda.device(out.device):
        _launch(tables, rows.shape, nkv, out)
    tensors = [out[at : at + int(np.prod(shape))].view(shape) for at, shape in layout]
    return assemble_block_mask(seq_lengths, tensors, block_size, mask_mod)


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
