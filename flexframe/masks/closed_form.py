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

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask, _mask_mod_signature, noop_mask


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
            starts, offsets = self.host
            ends = np.append(starts[1:], self.length) - 1
            last_of_segment = offsets + self.slope * ends
            first_of_next = offsets[1:] + self.slope * starts[1:]
            cached = bool((last_of_segment[:-1] <= first_of_next).all())
            object.__setattr__(self, "_monotone", cached)
        return cached

    @property
    def host(self) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, offsets)`` as int64 NumPy arrays: the builder's index arithmetic runs on the
        host over one entry per segment or block, where NumPy's per-call cost is smallest."""
        cached = self.__dict__.get("_host")
        if cached is None:
            cached = (
                self.starts.cpu().numpy().astype(np.int64),
                self.offsets.cpu().numpy().astype(np.int64),
            )
            object.__setattr__(self, "_host", cached)
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

    def _evaluate_host(self, positions: np.ndarray) -> np.ndarray:
        starts, offsets = self.host
        segment = np.searchsorted(starts, positions, side="right") - 1
        return offsets[segment] + self.slope * positions

    def block_min_max(
        self, block_size: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Minimum and maximum of the key over each block of real (unpadded) positions.

        Returns:
            ``(key_min, key_max)``, each ``[ceil(length / block_size)]`` int64 on ``device``.

        Example:
            >>> key = PiecewiseKey.per_frame(torch.tensor([0, 2, 1]), num_patches_per_frame=2)
            >>> [t.tolist() for t in key.block_min_max(4)]  # blocks: frames 0-1, frame 2
            [[0, 1], [2, 1]]
        """
        key_min, key_max = self._block_min_max_host(block_size)
        return torch.from_numpy(key_min).to(device), torch.from_numpy(key_max).to(device)

    def _block_min_max_host(self, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        num_blocks = -(-self.length // block_size)
        block_starts = np.arange(num_blocks, dtype=np.int64) * block_size
        if self.monotone:
            block_lasts = np.minimum(block_starts + block_size, self.length) - 1
            return self._evaluate_host(block_starts), self._evaluate_host(block_lasts)
        # The pieces: maximal runs of positions in one segment and one block. On a piece the key
        # is monotone (slope >= 0), so its extremes sit at the piece's two ends; a block's pieces
        # are consecutive, from the piece that starts at the block's start.
        starts, _ = self.host
        piece_first = np.union1d(starts, block_starts)  # sorted, unique
        piece_last = np.append(piece_first[1:], self.length) - 1
        first_piece = np.searchsorted(piece_first, block_starts)
        key_min = np.minimum.reduceat(self._evaluate_host(piece_first), first_piece)
        key_max = np.maximum.reduceat(self._evaluate_host(piece_last), first_piece)
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

    @property
    def monotone(self) -> bool:
        """True when every key never decreases along its positions.

        Then each block row (and block column) of the partial and full grids is a run of at most
        two intervals, and :func:`build_block_mask` writes the indices from the interval ends
        without forming the grids.
        """
        keys = (self.kv_key, self.q_hi) + (() if self.q_lo is None else (self.q_lo,))
        return all(key.monotone for key in keys)

    def block_grids(
        self, q_block_size: int, kv_block_size: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Which blocks are partial and which are full.

        The per-block key bounds are computed on the host (one entry per block) and sent to
        ``device`` in one copy; the grids themselves are formed there.

        Returns:
            ``(partial, full)``, each a ``[ceil(Q_LEN / BLOCK_Q), ceil(KV_LEN / BLOCK_KV)]`` bool
            tensor on ``device``; a block is in at most one of them.

        Example:
            >>> key = PiecewiseKey.per_frame(torch.arange(2), num_patches_per_frame=3)
            >>> partial, full = IntervalRelation(kv_key=key, q_hi=key).block_grids(2, 2)
            >>> partial.int().tolist(), full.int().tolist()  # frames [0, 0, 0, 1, 1, 1]
            ([[0, 1, 0], [0, 1, 1], [0, 0, 0]], [[1, 0, 0], [1, 0, 0], [1, 1, 1]])
        """
        hi_min, hi_max = self.q_hi._block_min_max_host(q_block_size)
        key_min, key_max = self.kv_key._block_min_max_host(kv_block_size)
        # Padded blocks are never full: shift their bounds so far that no comparison passes
        # (keys stay far below 2**62: they are frame ranks or positions, at most N**2).
        big = 2**62
        hi_min_full = hi_min.copy()
        if self.q_len % q_block_size:
            hi_min_full[-1] -= big
        key_max_full = key_max.copy()
        if self.kv_len % kv_block_size:
            key_max_full[-1] += big
        q_rows = [hi_max, hi_min_full]
        if self.q_lo is not None:
            q_rows += list(self.q_lo._block_min_max_host(q_block_size))
        q_side, kv_side = _to_device(
            np.stack(q_rows), np.stack([key_min, key_max, key_max_full]), device=device
        )
        hi_max, hi_min_full = q_side[0], q_side[1]
        key_min, key_max, key_max_full = kv_side
        any_visible = hi_max[:, None] >= key_min[None, :]
        all_visible = hi_min_full[:, None] >= key_max_full[None, :]
        if self.q_lo is not None:
            lo_min, lo_max = q_side[2], q_side[3]
            any_visible &= lo_min[:, None] <= key_max[None, :]
            all_visible &= lo_max[:, None] <= key_min[None, :]
        return any_visible & ~all_visible, all_visible

    def block_intervals(
        self, q_block_size: int, kv_block_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The partial and full blocks of each block row and column, as interval ends.

        Needs :attr:`monotone`. Row ``i``'s partial kv blocks are ``[x0, x1) + [x2, x3)`` and its
        full kv blocks ``[y0, y1)``; column ``j``'s partial and full q blocks likewise.

        Returns:
            ``(rows, columns)`` on the CPU: ``rows`` is ``[2, NUM_Q_BLOCKS, 4]`` int64 (partial,
            then full as ``[y0, y1, y1, y1]``) over kv blocks, ``columns`` is
            ``[2, NUM_KV_BLOCKS, 4]`` over q blocks.

        Example:
            >>> key = PiecewiseKey.per_frame(torch.arange(2), num_patches_per_frame=3)
            >>> rows, columns = IntervalRelation(kv_key=key, q_hi=key).block_intervals(2, 2)
            >>> rows[0].tolist()  # partial: row 0 has block 1, row 1 blocks 1-2, row 2 none
            [[0, 0, 1, 2], [0, 0, 1, 3], [0, 0, 3, 3]]
            >>> rows[1].tolist()  # full: rows 0 and 1 have block 0, row 2 blocks 0-2
            [[0, 1, 1, 1], [0, 1, 1, 1], [0, 3, 3, 3]]
        """
        rows, columns = self._block_intervals_host(q_block_size, kv_block_size)
        return torch.from_numpy(rows), torch.from_numpy(columns)

    def _block_intervals_host(
        self, q_block_size: int, kv_block_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.monotone:
            raise ValueError("block_intervals needs monotone keys (see IntervalRelation.monotone)")
        hi_min, hi_max = self.q_hi._block_min_max_host(q_block_size)
        key_min, key_max = self.kv_key._block_min_max_host(kv_block_size)
        nq, nkv = hi_min.size, key_min.size
        # Blocks that may be full: all but a padded last block.
        nq_full = nq - (self.q_len % q_block_size != 0)
        nkv_full = nkv - (self.kv_len % kv_block_size != 0)
        # All bounds are nondecreasing, so each condition holds on a prefix or a suffix.
        # Row i: any visible <=> key_min[j] <= hi_max[i] (prefix) and key_max[j] >= lo_min[i]
        # (suffix); all visible <=> key_max[j] <= hi_min[i] and key_min[j] >= lo_max[i].
        any_end = np.searchsorted(key_min, hi_max, side="right")
        all_end = np.minimum(np.searchsorted(key_max, hi_min, side="right"), nkv_full)
        # Column j: any visible <=> hi_max[i] >= key_min[j] (suffix) and lo_min[i] <= key_max[j]
        # (prefix); all visible <=> hi_min[i] >= key_max[j] and lo_max[i] <= key_min[j].
        col_any_start = np.searchsorted(hi_max, key_min)
        col_all_start = np.searchsorted(hi_min, key_max)
        if self.q_lo is None:
            any_start = all_start = np.zeros(nq, dtype=np.int64)
            col_any_end = col_all_end = np.full(nkv, nq, dtype=np.int64)
        else:
            lo_min, lo_max = self.q_lo._block_min_max_host(q_block_size)
            any_start = np.searchsorted(key_max, lo_min)
            all_start = np.searchsorted(key_min, lo_max)
            col_any_end = np.searchsorted(lo_min, key_max, side="right")
            col_all_end = np.searchsorted(lo_max, key_min, side="right")
        col_all_end = np.minimum(col_all_end, nq_full)
        if nq_full < nq:
            all_end[-1] = 0  # a padded row has no full block
        if nkv_full < nkv:
            col_all_end[-1] = 0
        return (
            _partial_and_full(any_start, any_end, all_start, all_end),
            _partial_and_full(col_any_start, col_any_end, col_all_start, col_all_end),
        )


def _partial_and_full(
    any_start: np.ndarray, any_end: np.ndarray, all_start: np.ndarray, all_end: np.ndarray
) -> np.ndarray:
    """``[2, R, 4]``: partial ``[x0, x1) + [x2, x3)`` and full ``[y0, y1)`` of each row, given the
    rows' any-visible ``[any_start, any_end)`` and all-visible ``[all_start, all_end)`` runs.

    The full run lies inside the any run when it is not empty; clamping both of its ends into
    the any run makes an empty full run a point, so partial = any minus full in both cases.
    """
    end = np.maximum(any_end, any_start)
    y0 = np.minimum(np.maximum(all_start, any_start), end)
    y1 = np.minimum(np.maximum(all_end, y0), end)
    partial = np.stack([any_start, y0, y1, end], axis=-1)
    full = np.stack([y0, y1, y1, y1], axis=-1)
    return np.stack([partial, full]).astype(np.int64, copy=False)


def _to_device(*arrays: np.ndarray, device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """Host arrays of one dtype as tensors on ``device``, sent there in a single copy (on the
    CPU the same route, so that the tests run the code a GPU runs)."""
    flat = torch.from_numpy(np.concatenate([a.reshape(-1) for a in arrays])).to(device)
    parts = flat.split([a.size for a in arrays])
    return tuple(part.view(a.shape) for part, a in zip(parts, arrays, strict=True))


def _intervals_to_ordered(
    intervals: np.ndarray, k: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval ends ``[..., R, 4]`` -> counts ``[..., R]`` and indices ``[..., R, k]``.

    A row with set blocks ``[x0, x1) + [x2, x3)`` lists them first, ascending, then the unset
    ones ``[0, x0) + [x1, x2) + [x3, k)``, ascending: torch's ordering. Slot ``c`` of the row
    holds ``c + offset``, where the offset is constant on each of the five runs; the run of a
    slot is found with one batched ``searchsorted`` over the four run ends. The run ends and
    offsets are worked out on the host and sent in one copy; ``device`` does four launches.
    """
    x0, x1, x2, x3 = np.moveaxis(intervals, -1, 0)
    n1 = x1 - x0
    num = n1 + x3 - x2
    gap1, gap2 = x0, x2 - x1
    run_ends = np.stack([n1, num, num + gap1, num + gap1 + gap2], axis=-1)
    offsets = np.stack([x0, x2 - n1, -num, x1 - gap1 - num, x3 - gap1 - gap2 - num], axis=-1)
    num, run_ends, offsets = _to_device(
        num.astype(np.int32), run_ends.astype(np.int32), offsets.astype(np.int32), device=device
    )
    slots = torch.arange(k, dtype=torch.int32, device=num.device)
    run = torch.searchsorted(run_ends, slots.expand(*num.shape, k).contiguous(), right=True)
    return num, offsets.gather(-1, run).add_(slots)


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
    device: torch.device | str,
    *,
    method: str = "auto",
) -> BlockMask:
    """A ``BlockMask`` for ``relation`` from its block structure alone (no N x N work).

    Args:
        relation: the mask as an interval relation; ``mask_mod`` must compute the same relation.
        mask_mod: evaluated by the kernel inside partial blocks.
        block_size: ``(BLOCK_Q, BLOCK_KV)``.
        device: where the BlockMask's tensors live.
        method: ``"intervals"`` writes each block row's indices from its interval ends (needs
            ``relation.monotone``; a handful of launches on a GPU), ``"grids"`` forms the partial
            and full grids and orders them with prefix sums (any relation), ``"auto"`` takes
            ``"intervals"`` when it applies. Both give the same tensors.

    Returns:
        A BlockMask with ``B = H = 1`` (it broadcasts over batch and heads) and
        ``seq_lengths = (q_len, kv_len)``.

    Example:
        >>> key = PiecewiseKey.per_frame(torch.arange(3), num_patches_per_frame=96)
        >>> bm = build_block_mask(IntervalRelation(kv_key=key, q_hi=key), None, (128, 128), "cpu")
        >>> bm.kv_num_blocks.tolist(), bm.full_kv_num_blocks.tolist()  # the last row is padded
        ([[[2, 2, 3]]], [[[0, 1, 0]]])
        >>> bm.kv_indices.tolist()  # each row: its partial blocks first, then the others
        [[[[0, 1, 2], [1, 2, 0], [0, 1, 2]]]]
    """
    if method not in ("auto", "intervals", "grids"):
        raise ValueError(f"method must be 'auto', 'intervals' or 'grids', got {method!r}")
    use_intervals = method == "intervals" or (method == "auto" and relation.monotone)
    nq = -(-relation.q_len // block_size[0])
    nkv = -(-relation.kv_len // block_size[1])
    if use_intervals:
        rows, columns = relation._block_intervals_host(*block_size)
        if nq == nkv:
            num, idx = _intervals_to_ordered(np.concatenate([rows, columns]), nkv, device)
            sides = [(num[i][None, None], idx[i][None, None]) for i in range(4)]
        else:
            num, idx = _intervals_to_ordered(rows, nkv, device)
            sides = [(num[i][None, None], idx[i][None, None]) for i in range(2)]
            num, idx = _intervals_to_ordered(columns, nq, device)
            sides += [(num[i][None, None], idx[i][None, None]) for i in range(2)]
    else:
        partial, full = relation.block_grids(*block_size, device=device)
        # Both sides from the grids directly: what BlockMask.from_kv_blocks would derive by
        # densifying the kv side again and sorting its transpose, without the round trip.
        if nq == nkv:
            num, idx = _dense_to_ordered(torch.stack([partial, full, partial.t(), full.t()]))
            sides = [(num[i][None, None], idx[i][None, None]) for i in range(4)]
        else:
            num, idx = _dense_to_ordered(torch.stack([partial, full]))
            sides = [(num[i][None, None], idx[i][None, None]) for i in range(2)]
            num, idx = _dense_to_ordered(torch.stack([partial.t(), full.t()]))
            sides += [(num[i][None, None], idx[i][None, None]) for i in range(2)]
    (kv, full_kv, q, full_q) = sides
    return BlockMask(
        (relation.q_len, relation.kv_len),
        *kv,
        *full_kv,
        *q,
        *full_q,
        BLOCK_SIZE=block_size,
        mask_mod=mask_mod if mask_mod is not None else noop_mask,
    )
