"""Blocks of a mask as FlexAttention runs them: the one block classification of the package.

A mask's ``[Q_BLOCKS, KV_BLOCKS]`` grid of full, partial and skipped blocks comes from
:meth:`MaskSpec.block_grids` (the closed-form builder's grids when the mask has a closed form,
else its BlockMask read back), from a ``BlockMask`` (:func:`grids_from_block_mask`), or from a
dense bool tensor reduced block by block. The pictures, the summaries and the command line all
read the grids from here, so they all count the same blocks the kernel runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.attention.flex_attention import BlockMask, create_mask

from flexframe._checks import normalize_block_size


def plural(count: int, noun: str) -> str:
    """``"1 block"``, ``"2 blocks"``.

    Example:
        >>> plural(1, "block"), plural(0, "step")
        ('1 block', '0 steps')
    """
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _grid_from_indices(num: torch.Tensor, idx: torch.Tensor, nq: int, nk: int) -> torch.Tensor:
    """``[nq, nk]`` bool from a BlockMask side (``num [..., nq]``, ``idx [..., nq, nk]``)."""
    num, idx = num.reshape(-1, nq)[0].cpu(), idx.reshape(-1, nq, idx.shape[-1])[0].cpu()
    grid = torch.zeros(nq, nk + 1, dtype=torch.bool)
    slots = torch.arange(idx.shape[-1])[None, :] < num[:, None]
    rows = torch.arange(nq)[:, None].expand_as(idx)
    grid[rows[slots], idx[slots].long()] = True
    return grid[:, :nk]


def grids_from_block_mask(block_mask: BlockMask) -> tuple[torch.Tensor, torch.Tensor]:
    """``(partial, full)`` ``[Q_BLOCKS, KV_BLOCKS]`` bool grids of a BlockMask (batch 0, head 0).

    Example:
        >>> from flexframe import get_mask
        >>> bm = get_mask("causal-frame", num_frames=2, num_patches_per_frame=2).block_mask(
        ...     "cpu", block_size=2)
        >>> [g.int().tolist() for g in grids_from_block_mask(bm)]
        [[[0, 0], [0, 0]], [[1, 0], [1, 1]]]
    """
    q_len, kv_len = (int(n) for n in block_mask.seq_lengths)
    bq, bk = block_mask.BLOCK_SIZE
    nq, nk = -(-q_len // bq), -(-kv_len // bk)
    partial = _grid_from_indices(block_mask.kv_num_blocks, block_mask.kv_indices, nq, nk)
    full_num, full_idx = block_mask.full_kv_num_blocks, block_mask.full_kv_indices
    if full_num is None or full_idx is None:
        full = torch.zeros_like(partial)
    else:
        full = _grid_from_indices(full_num, full_idx, nq, nk)
    return partial & ~full, full


def grids_from_dense(
    dense: torch.Tensor, block_size: int | tuple[int, int] = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(partial, full)`` grids of a ``[q_len, kv_len]`` bool mask (padding never full).

    Example:
        >>> dense = torch.ones(3, 3, dtype=torch.bool).tril()
        >>> [g.int().tolist() for g in grids_from_dense(dense, 2)]
        [[[1, 0], [1, 1]], [[0, 0], [0, 0]]]
    """
    bq, bk = normalize_block_size(block_size)
    q_len, kv_len = dense.shape
    nq, nk = -(-q_len // bq), -(-kv_len // bk)
    padded = torch.zeros(nq * bq, nk * bk, dtype=torch.int32)
    padded[:q_len, :kv_len] = dense.cpu().to(torch.int32)
    counts = padded.view(nq, bq, nk, bk).sum(dim=(1, 3))
    full = counts == bq * bk
    return (counts > 0) & ~full, full


def dense_from_block_mask(block_mask: BlockMask) -> torch.Tensor:
    """The ``[q_len, kv_len]`` bool mask a kernel applies for ``block_mask`` (batch 0, head 0).

    Full blocks are visible whole; the mask_mod decides inside partial blocks; the rest is
    masked. Materializes ``q_len * kv_len`` booleans: for the sdpa backend, pictures and tests.

    Example:
        >>> from flexframe import get_mask
        >>> spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=2)
        >>> torch.equal(dense_from_block_mask(spec.block_mask("cpu", block_size=4)),
        ...             spec.to_dense())
        True
    """
    q_len, kv_len = (int(n) for n in block_mask.seq_lengths)
    bq, bk = block_mask.BLOCK_SIZE
    device = block_mask.kv_num_blocks.device
    partial, full = grids_from_block_mask(block_mask)

    def expand(grid: torch.Tensor) -> torch.Tensor:
        return grid.repeat_interleave(bq, 0).repeat_interleave(bk, 1)[:q_len, :kv_len]

    inside = create_mask(block_mask.mask_mod, 1, 1, q_len, kv_len, device)[0, 0].bool().cpu()
    return (expand(full) | (expand(partial) & inside)).to(device)


@dataclass(frozen=True)
class BlockSparsity:
    """Block counts of a mask as FlexAttention runs it.

    Attributes:
        q_len: query tokens.
        kv_len: key tokens.
        block_size: ``(BLOCK_Q, BLOCK_KV)``.
        num_q_blocks: ``ceil(q_len / BLOCK_Q)``.
        num_kv_blocks: ``ceil(kv_len / BLOCK_KV)``.
        full: blocks computed without evaluating the mask_mod.
        partial: blocks computed with the mask_mod evaluated inside.
        skipped: blocks never computed.

    Example:
        >>> from flexframe import get_mask
        >>> stats = BlockSparsity.of(
        ...     get_mask("causal-frame", num_frames=4, num_patches_per_frame=2), block_size=2)
        >>> (stats.full, stats.partial, stats.skipped), stats.skipped_share
        ((10, 0, 6), 0.375)
    """

    q_len: int
    kv_len: int
    block_size: tuple[int, int]
    num_q_blocks: int
    num_kv_blocks: int
    full: int
    partial: int
    skipped: int

    @staticmethod
    def of(mask: object, block_size: int | tuple[int, int] | None = None) -> BlockSparsity:
        """The counts of a ``MaskSpec``, a ``BlockMask`` or a dense bool tensor (see
        :func:`flexframe.masks.blocks.block_grids`)."""
        partial, full, bs, (q_len, kv_len) = block_grids(mask, block_size)
        nq, nk = full.shape
        n_full, n_partial = int(full.sum()), int(partial.sum())
        return BlockSparsity(
            q_len, kv_len, bs, nq, nk, n_full, n_partial, nq * nk - n_full - n_partial
        )

    @property
    def total(self) -> int:
        """All blocks of the grid: ``num_q_blocks * num_kv_blocks``."""
        return self.num_q_blocks * self.num_kv_blocks

    @property
    def computed(self) -> int:
        """Blocks the kernel computes: ``full + partial``."""
        return self.full + self.partial

    @property
    def skipped_share(self) -> float:
        """Skipped blocks over all blocks, in [0, 1]."""
        return self.skipped / self.total

    @property
    def computed_share(self) -> float:
        """Computed blocks over all blocks, in [0, 1]: the kernel's work as a share of dense
        attention over the same (padded) block grid."""
        return self.computed / self.total

    @property
    def padded(self) -> bool:
        """Whether the last block row or column holds padding (a length not a multiple of the
        block size): the grid then covers more than ``q_len x kv_len`` tokens."""
        bq, bk = self.block_size
        return self.q_len % bq != 0 or self.kv_len % bk != 0

    def __str__(self) -> str:
        bq, bk = self.block_size
        text = (
            f"{plural(self.total, 'block')} of {bq}x{bk}: {self.full} full, {self.partial} "
            f"partial, {self.skipped} skipped ({self.skipped_share:.1%} skipped; the kernel "
            f"computes {self.computed_share:.1%} of the block grid)"
        )
        if self.padded:
            text += (
                f"; the grid pads {self.q_len}x{self.kv_len} tokens to "
                f"{self.num_q_blocks * bq}x{self.num_kv_blocks * bk}"
            )
        return text


def block_grids(
    mask: object, block_size: int | tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int], tuple[int, int]]:
    """``(partial, full, block_size, (q_len, kv_len))`` of any mask, on the CPU.

    A ``MaskSpec`` goes through :meth:`MaskSpec.block_grids` (closed form, or its BlockMask); a
    ``BlockMask`` is read back (its own block size; another one is refused); a dense
    ``[q_len, kv_len]`` bool tensor is reduced block by block. ``block_size=None`` means 128, or
    a BlockMask's own.

    Example:
        >>> import torch
        >>> partial, full, bs, lengths = block_grids(torch.ones(4, 4, dtype=torch.bool).tril(), 2)
        >>> partial.int().tolist(), full.int().tolist(), bs, lengths
        ([[1, 0], [0, 1]], [[0, 0], [1, 0]], (2, 2), (4, 4))
    """
    from flexframe.masks.spec import MaskSpec

    if isinstance(mask, BlockMask):
        own = tuple(int(b) for b in mask.BLOCK_SIZE)
        if block_size is not None and normalize_block_size(block_size) != own:
            raise ValueError(
                f"block_size={block_size!r} differs from the BlockMask's BLOCK_SIZE={own}; pass "
                f"block_size=None (or {own}) for a BlockMask"
            )
        partial, full = grids_from_block_mask(mask)
        lengths = tuple(int(n) for n in mask.seq_lengths)
        return partial, full, (own[0], own[1]), (lengths[0], lengths[1])
    bs = normalize_block_size(block_size)
    if isinstance(mask, MaskSpec):
        partial, full = mask.block_grids(bs, "cpu")
        return partial, full, bs, (mask.q_len, mask.kv_len)
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.dtype == torch.bool:
        partial, full = grids_from_dense(mask, bs)
        return partial, full, bs, (int(mask.shape[0]), int(mask.shape[1]))
    what = type(mask).__name__
    if isinstance(mask, torch.Tensor):
        what += f" of shape {tuple(mask.shape)} and dtype {mask.dtype}"
    raise TypeError(
        f"mask must be a MaskSpec, a BlockMask or a [q_len, kv_len] bool tensor, got {what}"
    )
