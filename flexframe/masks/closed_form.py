"""Closed-form BlockMask construction for frame-structured masks.

Every built-in mask in flexframe can be written as an *interval relation*::

    visible(q, kv)  <=>  q_lo(q) <= kv_key(kv) <= q_hi(q)

where each of ``kv_key``, ``q_lo`` and ``q_hi`` is a :class:`PiecewiseKey`: constant or slope-1
on each of a few contiguous segments of the sequence (frames, videos, or the whole sequence).
For causal-frame, ``kv_key(kv) = frame(kv)`` and ``q_hi(q) = frame(q)``, with no lower bound.

A block of ``BLOCK_Q x BLOCK_KV`` positions is then classified from four reductions per block row
or column, never from the N x N mask:

- *full* (no ``mask_mod`` needed inside): ``max q_lo <= min kv_key`` and ``max kv_key <= min q_hi``
  over the block, and the block holds no padding (torch pads with "masked", so a padded block is
  never full);
- *partial* (``mask_mod`` evaluated inside): some pair is visible, but not all;
- *skipped*: nothing is visible.

"Some pair is visible" is exact from block minima and maxima when there is no lower bound (one
threshold). With a lower bound it is exact under two invariants that each two-sided mask states
where it builds its relation: ``kv_key`` takes every integer between its minimum and maximum on any
contiguous run of keys (it is a frame or token index), and the rows' intervals ``[q_lo, q_hi]``
of consecutive queries overlap or touch, so their union over a block row is one interval.

Work and memory are O(number of segments + number of blocks): the per-block reductions run over
the pieces that block boundaries cut the segments into.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.attention.flex_attention import BlockMask, _mask_mod_signature


@dataclass(frozen=True)
class PiecewiseKey:
    """An integer key over positions ``0 .. length-1``, affine on each segment.

    ``key(t) = offsets[s] + slope * t`` for ``t`` in segment ``s = [starts[s], starts[s+1])``.

    Attributes:
        starts: ``[S]`` int64, first position of each segment; ``starts[0] == 0``, ascending.
        offsets: ``[S]`` int64, the key's offset on each segment.
        slope: 0 (constant on a segment) or 1 (increases with the position).
        length: number of positions.

    Example:
        >>> key = PiecewiseKey.per_frame(torch.tensor([0, 1, 2]), num_patches_per_frame=2)
        >>> key.evaluate(torch.arange(6)).tolist()
        [0, 0, 1, 1, 2, 2]
    """

    starts: torch.Tensor
    offsets: torch.Tensor
    slope: int
    length: int

    @staticmethod
    def per_frame(frame_values: torch.Tensor, num_patches_per_frame: int) -> PiecewiseKey:
        """The key ``frame_values[f]`` on every token of frame ``f`` (frames of equal size)."""
        num_frames = frame_values.numel()
        starts = torch.arange(num_frames, dtype=torch.int64) * num_patches_per_frame
        return PiecewiseKey(
            starts, frame_values.to(torch.int64), 0, num_frames * num_patches_per_frame
        )

    @staticmethod
    def position(length: int, offset: int = 0) -> PiecewiseKey:
        """The key ``t + offset``: the token position itself."""
        zero = torch.zeros(1, dtype=torch.int64)
        return PiecewiseKey(zero, zero + offset, 1, length)

    @staticmethod
    def constant(length: int, value: int) -> PiecewiseKey:
        """The same key ``value`` everywhere."""
        zero = torch.zeros(1, dtype=torch.int64)
        return PiecewiseKey(zero, zero + value, 0, length)

    @property
    def monotone(self) -> bool:
        """True when the key never decreases along the positions (then a block's extremes are
        its first and last position)."""
        cached = self.__dict__.get("_monotone")
        if cached is None:
            ends = torch.cat([self.starts[1:], torch.tensor([self.length])]) - 1
            last_of_segment = self.offsets + self.slope * ends
            first_of_next = self.offsets[1:] + self.slope * self.starts[1:]
            cached = bool((last_of_segment[:-1] <= first_of_next).all())
            object.__setattr__(self, "_monotone", cached)
        return cached

    def on(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(starts, offsets)`` on ``device``, copied there once."""
        copies = self.__dict__.setdefault("_copies", {})
        key = str(device)
        if key not in copies:
            copies[key] = (self.starts.to(device), self.offsets.to(device))
        return copies[key]

    def evaluate(self, positions: torch.Tensor) -> torch.Tensor:
        """The key at each of ``positions`` (any shape, values in ``[0, length)``)."""
        starts, offsets = self.on(positions.device)
        segment = torch.searchsorted(starts, positions, right=True) - 1
        return offsets[segment] + self.slope * positions

    def block_min_max(
        self, block_size: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Minimum and maximum of the key over each block of real (unpadded) positions.

        Returns:
            ``(key_min, key_max)``, each ``[ceil(length / block_size)]`` int64 on ``device``.
        """
        num_blocks = -(-self.length // block_size)
        block_starts = torch.arange(num_blocks, dtype=torch.int64, device=device) * block_size
        if self.monotone:
            block_lasts = (block_starts + block_size).clamp(max=self.length) - 1
            return self.evaluate(block_starts), self.evaluate(block_lasts)
        # The pieces: maximal runs of positions in one segment and one block. On a piece the key
        # is monotone (slope >= 0), so its extremes sit at the piece's two ends.
        starts, _ = self.on(device)
        cuts = torch.unique(torch.cat([starts, block_starts]))  # sorted
        piece_first = cuts
        end = torch.full((1,), self.length, dtype=torch.int64, device=device)
        piece_last = torch.cat([cuts[1:], end]) - 1
        lo = self.evaluate(piece_first)
        hi = self.evaluate(piece_last)
        block = piece_first // block_size
        big = torch.iinfo(torch.int64).max
        key_min = torch.full((num_blocks,), big, dtype=torch.int64, device=device)
        key_max = torch.full((num_blocks,), -big, dtype=torch.int64, device=device)
        key_min.scatter_reduce_(0, block, lo, reduce="amin")
        key_max.scatter_reduce_(0, block, hi, reduce="amax")
        return key_min, key_max


@dataclass(frozen=True)
class IntervalRelation:
    """``visible(q, kv) <=> q_lo(q) <= kv_key(kv) <= q_hi(q)``; ``q_lo=None`` means no lower bound.

    See the module docstring for the invariants a two-sided relation must keep.
    """

    kv_key: PiecewiseKey
    q_hi: PiecewiseKey
    q_lo: PiecewiseKey | None = None

    @property
    def q_len(self) -> int:
        return self.q_hi.length

    @property
    def kv_len(self) -> int:
        return self.kv_key.length

    def block_grids(
        self, q_block_size: int, kv_block_size: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Which blocks are partial and which are full.

        Returns:
            ``(partial, full)``, each a ``[ceil(Q_LEN / BLOCK_Q), ceil(KV_LEN / BLOCK_KV)]`` bool
            tensor on ``device``; a block is in at most one of them.
        """
        hi_min, hi_max = self.q_hi.block_min_max(q_block_size, device)
        key_min, key_max = self.kv_key.block_min_max(kv_block_size, device)
        any_visible = hi_max[:, None] >= key_min[None, :]
        all_visible = hi_min[:, None] >= key_max[None, :]
        if self.q_lo is not None:
            lo_min, lo_max = self.q_lo.block_min_max(q_block_size, device)
            any_visible &= lo_min[:, None] <= key_max[None, :]
            all_visible &= lo_max[:, None] <= key_min[None, :]
        q_padded = _padded_blocks(self.q_len, q_block_size, device)
        kv_padded = _padded_blocks(self.kv_len, kv_block_size, device)
        full = all_visible & ~q_padded[:, None] & ~kv_padded[None, :]
        partial = any_visible & ~full
        return partial, full


def _padded_blocks(length: int, block_size: int, device: torch.device | str) -> torch.Tensor:
    """``[num_blocks]`` bool: which blocks run past ``length`` (only the last one can)."""
    num_blocks = -(-length // block_size)
    padded = torch.zeros(num_blocks, dtype=torch.bool, device=device)
    padded[-1] = length % block_size != 0
    return padded


def _dense_to_ordered(grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., n, k]`` bool -> (``[..., n]`` counts, ``[..., n, k]`` indices), torch's ordering.

    Indices of the set blocks come first in ascending order, then the others in ascending order:
    what ``create_block_mask``'s stable descending argsort gives, computed here with two prefix
    sums and a scatter instead of a sort. Several grids go through at once (fewer launches).
    """
    k = grids.shape[-1]
    ones = grids.to(torch.int32)
    num = ones.sum(dim=-1, dtype=torch.int32)
    slot_if_set = ones.cumsum(dim=-1) - 1
    slot_if_unset = num[..., None] + (1 - ones).cumsum(dim=-1) - 1
    slot = torch.where(grids, slot_if_set, slot_if_unset).long()
    columns = torch.arange(k, dtype=torch.int32, device=grids.device).expand_as(slot)
    indices = torch.empty_like(columns).scatter_(-1, slot, columns)
    return num, indices


def build_block_mask(
    relation: IntervalRelation,
    mask_mod: _mask_mod_signature,
    block_size: tuple[int, int],
    device: torch.device,
) -> BlockMask:
    """A ``BlockMask`` for ``relation`` from its block structure alone (no N x N work).

    Args:
        relation: the mask as an interval relation; ``mask_mod`` must compute the same relation.
        mask_mod: evaluated by the kernel inside partial blocks.
        block_size: ``(BLOCK_Q, BLOCK_KV)``.
        device: where the BlockMask's tensors live.

    Returns:
        A BlockMask with ``B = H = 1`` (it broadcasts over batch and heads) and
        ``seq_lengths = (q_len, kv_len)``.
    """
    partial, full = relation.block_grids(*block_size, device=device)
    # Both sides from the grids directly: what BlockMask.from_kv_blocks would derive by
    # densifying the kv side again and sorting its transpose, without the round trip.
    if partial.shape[0] == partial.shape[1]:
        num, idx = _dense_to_ordered(torch.stack([partial, full, partial.t(), full.t()]))
        kv, full_kv, q, full_q = ((num[i][None, None], idx[i][None, None]) for i in range(4))
    else:
        num, idx = _dense_to_ordered(torch.stack([partial, full]))
        kv, full_kv = ((num[i][None, None], idx[i][None, None]) for i in range(2))
        num, idx = _dense_to_ordered(torch.stack([partial.t(), full.t()]))
        q, full_q = ((num[i][None, None], idx[i][None, None]) for i in range(2))
    return BlockMask(
        (relation.q_len, relation.kv_len),
        *kv,
        *full_kv,
        *q,
        *full_q,
        BLOCK_SIZE=block_size,
        mask_mod=mask_mod,
    )
