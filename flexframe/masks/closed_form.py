"""Closed-form BlockMask construction for frame-structured masks.

Every built-in mask in flexframe is an *interval relation*::

    visible(q, kv)  <=>  lo_i(q) <= kv_key(kv) <= hi_i(q)   for some interval i

where ``kv_key`` and every bound are :class:`PiecewiseKey` s: constant or slope-1 on each of a
few contiguous segments of the sequence (frames, chunks, videos, or the whole sequence). For
causal-frame there is one interval, ``kv_key(kv) = frame(kv)`` and ``hi(q) = frame(q)`` with no
lower bound; a sliding window with sink frames is the union of two, the window and the sinks.

A block of ``BLOCK_Q x BLOCK_KV`` positions is classified from the keys' minima and maxima over
its rows and columns, never from the N x N mask:

- *full* (no ``mask_mod`` needed inside): every pair visible, and the block holds no padding
  (torch pads with "masked", so a padded block is never full);
- *partial* (``mask_mod`` evaluated inside): some pair visible, but not all;
- *skipped*: nothing visible.

The classification is exact (it equals torch's ``create_block_mask`` block for block) under one
invariant on the keys: ``kv_key`` takes every integer between its minimum and maximum on any
contiguous run of positions (it is a frame, chunk or token index, rising by at most 1). Then a
block column's keys are the whole integer range ``[key_min, key_max]``, and

- with one interval, per block row: some pair is visible iff the union of the rows' intervals
  meets that range, and all are iff every row's interval holds it. The union of the rows'
  intervals over a block row is one interval when consecutive rows' intervals overlap or touch,
  which each two-sided mask states where it builds its relation; a one-sided relation (no lower
  bound) needs nothing;
- with several intervals (a union), per *piece*, a maximal run of rows inside one block and one
  segment of every bound (lower bounds constant there, upper bounds constant or rising by one a
  row): on a piece every interval only grows, so each row's union of intervals holds the one
  before it, and some pair is visible iff the piece's last row sees one, all are iff one
  connected part of its first row's union holds the range; a block row is full iff all its
  pieces are, and has a visible pair iff one of them does. No invariant on the rows.
  Consecutive pieces on which every interval only grows (``lo`` never rises and ``hi`` never
  falls, or the interval was empty before: text tokens that see up to themselves) make one
  piece by the same argument.

Work and memory are O(segments + blocks): the bounds per block and per piece are worked out on
the host (one entry each), O(Q_BLOCKS * KV_BLOCKS) work forms the grids on the device. A union's
host table holds ``P`` slots for every q block, ``P`` the most pieces one block has: about
segments + Q_BLOCKS entries an interval when pieces are spread evenly, at most ``q_len``. On
CUDA one Triton launch turns the tables into every BlockMask tensor
(:mod:`flexframe.masks.block_kernel`); elsewhere the grids are formed by torch operations and
their indices ordered with two prefix sums and a scatter (:func:`build_block_mask`). An earlier
second index writer, which wrote the indices from runs of blocks on the host, gave the same
tensors and was faster only on the CPU, at lengths a CPU does not run attention at; on an H200
the grids were 1.1-4.5x faster (``benchmarks/RESULTS.md``), so they replaced it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask, _mask_mod_signature

from flexframe.masks.block_kernel import (
    MAX_PIECES,
    arrays_to_device,
    assemble_block_mask,
    block_kernel_available,
    block_mask_from_tables,
)
from flexframe.masks.piecewise import PiecewiseKey, _pieces

__all__ = [
    "Interval",
    "IntervalRelation",
    "PiecewiseKey",
    "block_mask_from_grids",
    "build_block_mask",
    "ordered_indices",
    "stack_block_tables",
]

_BIG = 2**62  # beyond any key: keys are frame ranks or positions, at most N**2 < 2**62
_POS_INF, _NEG_INF = np.iinfo(np.int64).max, np.iinfo(np.int64).min  # beyond key + _BIG too


@dataclass(frozen=True)
class Interval:
    """``lo(q) <= kv_key(kv) <= hi(q)``; ``lo=None`` means no lower bound. A row whose ``lo`` is
    above its ``hi`` (or whose ``hi`` is below every key) sees nothing through this interval."""

    hi: PiecewiseKey
    lo: PiecewiseKey | None = None


@dataclass(frozen=True)
class IntervalRelation:
    """``visible(q, kv)`` iff ``kv_key(kv)`` lies in one of the query's intervals.

    ``IntervalRelation(kv_key, q_hi, q_lo)`` is one interval; ``union`` adds more (each a
    :class:`Interval`; in a union every lower bound has slope 0, an upper bound slope 0 or 1 on
    each segment). See the module docstring for the invariants.

    Example:
        >>> key = PiecewiseKey.per_frame(torch.arange(2), num_patches_per_frame=3)
        >>> partial, full = IntervalRelation(kv_key=key, q_hi=key).block_grids(2, 2)
        >>> partial.int().tolist(), full.int().tolist()  # frames [0, 0, 0, 1, 1, 1]
        ([[0, 1, 0], [0, 1, 1], [0, 0, 0]], [[1, 0, 0], [1, 0, 0], [1, 1, 1]])
    """

    kv_key: PiecewiseKey
    q_hi: PiecewiseKey
    q_lo: PiecewiseKey | None = None
    union: tuple[Interval, ...] = ()

    def __post_init__(self) -> None:
        if self.union:
            for interval in self.intervals:
                if interval.lo is not None and interval.lo.rises:
                    raise ValueError(
                        "the lower bounds of a union of intervals must have slope 0 (an upper "
                        "bound may rise with the position: its interval then only grows)"
                    )

    @property
    def intervals(self) -> tuple[Interval, ...]:
        """Every interval of the relation, the first one first."""
        return (Interval(self.q_hi, self.q_lo), *self.union)

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
        cols = self._kv_columns(kv_block_size)
        if self.union:
            return self._union_grids(q_block_size, cols, device)
        # One interval: its table's one piece, (any_lo, any_hi, full_lo, full_hi) per q block.
        rows = self._interval_rows(q_block_size)
        q_side, kv_side = _to_device(rows.T, cols.T, device=device)
        any_lo, any_hi, full_lo, full_hi = (q[:, None] for q in q_side)
        kmin, kmax, kmax_full = (k[None, :] for k in kv_side)
        any_visible = any_hi >= kmin
        all_visible = full_hi >= kmax_full
        if self.q_lo is not None:
            any_visible &= any_lo <= kmax
            all_visible &= full_lo <= kmin
        return any_visible & ~all_visible, all_visible

    def _kv_columns(self, kv_block_size: int) -> np.ndarray:
        """``[KV_BLOCKS, 3]``: ``(key_min, key_max, key_max_full)`` of each kv block (a padded kv
        block is never full: its ``key_max_full`` is above every bound)."""
        cols = np.empty((-(-self.kv_len // kv_block_size), 3), dtype=np.int64)
        cols[:, 0], cols[:, 1] = self.kv_key.block_min_max_host(kv_block_size)
        cols[:, 2] = cols[:, 1]
        if self.kv_len % kv_block_size:
            cols[-1, 2] += _BIG
        return cols

    def _interval_rows(self, q_block_size: int) -> np.ndarray:
        """One interval's ``[Q_BLOCKS, 4]``: ``(any_lo, any_hi, full_lo, full_hi)`` of each q
        block, the union and the intersection of its rows' intervals (a padded q block is never
        full: its ``full_hi`` is below every key)."""
        hi_min, hi_max = self.q_hi.block_min_max_host(q_block_size)
        rows = np.empty((hi_max.size, 4), dtype=np.int64)
        rows[:, 1], rows[:, 3] = hi_max, hi_min
        if self.q_len % q_block_size:
            rows[-1, 3] -= _BIG
        if self.q_lo is None:
            rows[:, 0::2] = -_BIG
        else:
            rows[:, 0], rows[:, 2] = self.q_lo.block_min_max_host(q_block_size)
        return rows

    def _union_pieces(self, q_block_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The union's pieces on the host, ``P`` slots per q block:
        ``(table [4, k, P, Q_BLOCKS], used [P, Q_BLOCKS] bool)``.

        ``table[:, m, s, b]`` is ``(any_lo, any_hi, full_lo, full_hi)`` of interval ``m`` at block
        ``b``'s piece ``s``: the interval on the piece's last row, and the connected part of the
        union that holds the ``m``-th interval (by lower end) on its first row. ``used`` says
        which slots hold a piece (the others are garbage). A padded last q block is never full:
        its pieces' ``full_lo`` is above every key. (Slots first: NumPy is several times slower
        on arrays whose innermost dimension is short.)

        A piece is a run of rows in one block and one segment of every bound (``lo`` constant,
        ``hi`` constant or rising), or a run of such runs on which every interval only grows
        (its ``lo`` never rises, its ``hi`` never falls, e.g. text tokens that see up to
        themselves). On such a run the rows' unions of intervals are nested, so some pair is
        visible iff the last row sees one, and all are iff the first row sees all: the two rows
        the table keeps.
        """
        bounds = [b for iv in self.intervals for b in (iv.lo, iv.hi) if b is not None]
        segments = {b.host[0].tobytes(): b.host[0] for b in bounds}  # bounds often share them
        nq = -(-self.q_len // q_block_size)
        block_starts = np.arange(nq, dtype=np.int64) * q_block_size
        starts = next(iter(segments.values()))
        last: tuple[np.ndarray, np.ndarray] | None = None  # the pieces' last rows' intervals
        if len(segments) == 1 and starts[-1] < self.q_len and (starts[1:] > starts[:-1]).all():
            # One segmentation, strictly ascending, inside the rows: block b's pieces start at
            # the block and at each segment start inside it, so piece s lies in segment
            # first[b] - 1 + s.
            first = np.searchsorted(starts, block_starts, side="right")
            inside = np.searchsorted(starts, block_starts + q_block_size) - first
            slots = np.arange(1 + int(inside.max()))[:, None]
            used = slots <= inside
            segment = np.minimum(first - 1 + slots, starts.size - 1)
            rows = None
            if any(b.rises for b in bounds):  # the pieces' first and last rows
                block_end = np.minimum(block_starts + q_block_size, self.q_len)
                segment_end = np.append(starts[1:], self.q_len)[segment]
                first_row = np.maximum(starts[segment], block_starts)
                rows = (first_row, np.minimum(segment_end, block_end) - 1)
            lo, hi, hi_last = self._bound_values({starts.tobytes(): segment}, rows)
            if hi_last is not None:  # a rising upper bound: its interval grows along the piece
                last = (lo, hi_last)
        else:  # cut the blocks at every segment start of every bound, then join growing runs
            piece_first, first_piece = _pieces(
                np.concatenate(list(segments.values())), self.q_len, q_block_size
            )
            rows = None
            if any(b.rises for b in bounds):
                rows = (piece_first, np.append(piece_first[1:], self.q_len) - 1)
            lo, hi, hi_last = self._bound_values(
                {k: np.searchsorted(s, piece_first, side="right") - 1 for k, s in segments.items()},
                rows,
            )  # [k, pieces], on each piece's first row (and hi on its last row)
            hi_end = hi if hi_last is None else hi_last
            grows = ((lo[:, 1:] <= lo[:, :-1]) & (hi[:, 1:] >= hi_end[:, :-1])) | (
                lo[:, :-1] > hi_end[:, :-1]  # an empty interval grows into any
            )
            joined = np.append(False, grows.all(0))
            joined[first_piece] = False  # a piece never crosses a block
            run_first = np.flatnonzero(~joined)
            run_last = np.append(run_first[1:], piece_first.size) - 1
            block = np.searchsorted(first_piece, run_first, side="right") - 1
            starts_of_block = np.searchsorted(run_first, first_piece)
            slot = np.arange(run_first.size) - starts_of_block[block]
            counts = np.diff(np.append(starts_of_block, run_first.size))
            used = np.zeros((int(counts.max()), nq), dtype=bool)
            used[slot, block] = True
            at_first = np.zeros(used.shape, dtype=np.int64)
            at_last = np.zeros(used.shape, dtype=np.int64)
            at_first[slot, block], at_last[slot, block] = run_first, run_last
            last = (lo[:, at_last], hi_end[:, at_last])
            lo, hi = lo[:, at_first], hi[:, at_first]
        k = len(self.intervals)
        table = np.empty((4, k, *used.shape), dtype=np.int64)
        any_lo, any_hi, part_lo, part_hi = table  # views, [k, P, Q_BLOCKS] each
        any_lo[:], any_hi[:] = (lo, hi) if last is None else last
        for a, b in ((any_lo, any_hi), (lo, hi)):  # empty: meets no key, and sorts last so
            empty = a > b  # that it joins nothing
            np.putmask(a, empty, _BIG)
            np.putmask(b, empty, -_BIG)
        # The union's connected parts on the first rows: sort by lower end, then join intervals
        # that touch.
        if k == 2:  # the usual union (a window and its sinks): a swap, not a sort
            swap = lo[1] < lo[0]
            lo, hi = np.where(swap, lo[::-1], lo), np.where(swap, hi[::-1], hi)
        elif k > 2:
            order = np.argsort(lo, axis=0, kind="stable")
            lo, hi = np.take_along_axis(lo, order, 0), np.take_along_axis(hi, order, 0)
        part_lo[:], part_hi[:] = lo, hi
        for m in range(1, k):
            joins = lo[m] <= part_hi[m - 1] + 1
            part_lo[m] = np.where(joins, part_lo[m - 1], lo[m])
            part_hi[m] = np.where(joins, np.maximum(part_hi[m - 1], hi[m]), hi[m])
        if self.q_len % q_block_size:  # a padded q block is never full
            part_lo[..., -1] = _BIG
        return table, used

    def _bound_values(
        self,
        segment_of: dict[bytes, np.ndarray],
        rows: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(lo, hi, hi_last)`` ``[k, *shape]``: each interval's bounds at the pieces whose
        segments ``segment_of`` names (an array of one shape per segmentation); no lower bound
        is ``-_BIG``. With ``rows`` (each piece's first and last row), ``hi`` is on the first
        row and ``hi_last`` on the last (upper bounds may rise); without, every bound has slope
        0 and ``hi_last`` is None."""
        shape = next(iter(segment_of.values())).shape
        lo = np.full((len(self.intervals), *shape), -_BIG, dtype=np.int64)
        hi = np.empty_like(lo)
        hi_last = None if rows is None else np.empty_like(lo)
        for m, iv in enumerate(self.intervals):  # a bound's value: offset (+ slope * row)
            segment = segment_of[iv.hi.host[0].tobytes()]
            hi[m] = iv.hi.host[1][segment]
            if hi_last is not None:
                assert rows is not None
                slope = iv.hi.host_slope
                slope = slope if isinstance(slope, int) else slope[segment]
                hi_last[m] = hi[m] + slope * rows[1]
                hi[m] += slope * rows[0]
            if iv.lo is not None:
                lo[m] = iv.lo.host[1][segment_of[iv.lo.host[0].tobytes()]]
        return lo, hi, hi_last

    def _union_grids(
        self, q_block_size: int, cols: np.ndarray, device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pieces, used = self._union_pieces(q_block_size)
        # The used pieces in a row, block after block, and one in front that sees nothing and
        # is never full (the prefix sums below then need no leading zero).
        front = np.array([_BIG, -_BIG, _BIG, -_BIG])[:, None, None].repeat(pieces.shape[1], 1)
        table = np.concatenate([front, pieces.swapaxes(2, 3)[:, :, used.T]], axis=-1)
        ends = np.concatenate([[0], np.cumsum(used.sum(0))])
        q_side, kv_side, ends_t = _to_device(
            table[:, :, None, :],  # [4, k, 1, 1 + pieces]
            cols.T[:, None, :, None],  # [3, 1, KV_BLOCKS, 1]
            ends,
            device=device,
        )
        # Laid out [.., KV_BLOCKS, pieces]: the prefix sums below then run along the innermost
        # dimension (on an H200 a scan along an outer one took 250 us of a 1.4 ms build).
        lo_t, hi_t, plo, phi = q_side.unbind(0)
        kmin, kmax, kmax_full = kv_side.unbind(0)
        any_piece = ((lo_t <= kmax) & (hi_t >= kmin)).any(0)  # [KV_BLOCKS, pieces]
        not_full = ((plo > kmin) | (phi < kmax_full)).all(0)
        # Per block: the pieces that show something, and those that are not full.
        counts = torch.stack([any_piece, not_full]).cumsum(-1, dtype=torch.int32)
        per_block = counts[..., ends_t[1:]] - counts[..., ends_t[:-1]]  # [2, KV_BLOCKS, Q_BLOCKS]
        per_block = per_block.transpose(-1, -2)
        # Partial: some piece shows something and some piece is not full; full: none is not.
        return (per_block > 0).all(0), per_block[1] == 0

    def block_table(self, q_block_size: int, kv_block_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The relation's blocks as two small host tables (what the CUDA block kernel reads).

        Returns:
            ``(rows, cols)``. ``rows``: ``[Q_BLOCKS, P, K, 4]`` int64: for each q block, ``P``
            pieces of ``K`` intervals, each ``(any_lo, any_hi, full_lo, full_hi)``. ``cols``:
            ``[KV_BLOCKS, 3]`` int64: ``(key_min, key_max, key_max_full)`` of each kv block.

        Block ``(b, j)`` has a visible pair iff some interval ``[any_lo, any_hi]`` of some piece
        of ``b`` meets ``[key_min_j, key_max_j]``, and is full iff every piece of ``b`` has an
        interval ``[full_lo, full_hi]`` that holds ``[key_min_j, key_max_full_j]``; partial
        blocks are those with a visible pair that are not full. The same classification as
        :meth:`block_grids` (a test checks it). Unused slots hold pieces that see nothing and
        are full (they change neither answer).

        Example:
            >>> key = PiecewiseKey.per_frame(torch.arange(2), num_patches_per_frame=3)
            >>> rows, cols = IntervalRelation(kv_key=key, q_hi=key).block_table(2, 2)
            >>> rows.shape, cols.tolist()  # one piece of one interval per q block
            ((3, 1, 1, 4), [[0, 0, 0], [0, 1, 1], [1, 1, 1]])
        """
        cols = self._kv_columns(kv_block_size)
        if self.union:
            pieces, used = self._union_pieces(q_block_size)
            if not used.all():
                np.copyto(pieces, _UNUSED[:, None, None, None], where=~used)
            rows = np.ascontiguousarray(pieces.transpose(3, 2, 1, 0))  # [Q_BLOCKS, P, k, 4]
            return rows, cols
        return self._interval_rows(q_block_size)[:, None, None, :], cols


def _to_device(*arrays: np.ndarray, device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """Host int64 arrays as tensors on ``device``, sent there in a single copy (on the CPU the
    same route, so that the tests run the code a GPU runs; to CUDA from page-locked memory,
    without waiting for it: :func:`~flexframe.masks.block_kernel.to_device`)."""
    return tuple(arrays_to_device(list(arrays), device))


def ordered_indices(grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., n, k]`` bool -> (``[..., n]`` counts, ``[..., n, k]`` indices), torch's ordering.

    Indices of the set blocks come first in ascending order, then the others in ascending order:
    what ``create_block_mask``'s stable descending argsort gives, computed here with two prefix
    sums and a scatter instead of a sort. Several grids go through at once (fewer launches).

    Example:
        >>> num, idx = ordered_indices(torch.tensor([[False, True, True], [True, False, False]]))
        >>> num.tolist(), idx.tolist()
        ([2, 1], [[1, 2, 0], [0, 1, 2]])
    """
    k = grids.shape[-1]
    set_so_far = grids.cumsum(dim=-1, dtype=torch.int32)  # set blocks up to and including j
    num = set_so_far[..., -1] if k else grids.sum(dim=-1, dtype=torch.int32)
    columns = torch.arange(k, dtype=torch.int32, device=grids.device)
    # A set block j goes to slot set_so_far - 1; an unset one after all set blocks, at
    # num + (unset blocks before it) = num + j - set_so_far.
    slot = torch.where(grids, set_so_far - 1, num[..., None] + columns - set_so_far)
    indices = torch.empty_like(set_so_far).scatter_(-1, slot.long(), columns.expand_as(slot))
    return num.contiguous(), indices


def block_mask_from_grids(
    partial: torch.Tensor,
    full: torch.Tensor,
    seq_lengths: tuple[int, int],
    block_size: tuple[int, int],
    mask_mod: _mask_mod_signature | None,
) -> BlockMask:
    """A ``BlockMask`` from its ``[..., Q_BLOCKS, KV_BLOCKS]`` partial and full grids.

    Both sides (kv and q indices) come from the grids directly: what
    ``BlockMask.from_kv_blocks`` would derive by densifying the kv side again and sorting its
    transpose, without the round trip. Leading dimensions are the batch and head dimensions (a
    2-D grid gets ``B = H = 1``, which broadcasts).
    """
    if partial.dim() == 2:  # [Q_BLOCKS, KV_BLOCKS]: B = H = 1
        partial, full = partial[None, None], full[None, None]
    elif partial.dim() == 3:  # [B, Q_BLOCKS, KV_BLOCKS]: H = 1
        partial, full = partial[:, None], full[:, None]
    nq, nkv = partial.shape[-2:]
    sides = [(partial, full), (partial.transpose(-1, -2), full.transpose(-1, -2))]
    if nq == nkv:  # one batch of four grids: fewer launches
        num_all, idx_all = ordered_indices(torch.stack([g for side in sides for g in side]))
        num, idx = list(num_all.unbind()), list(idx_all.unbind())
    else:
        num, idx = [], []
        for side in sides:
            side_num, side_idx = ordered_indices(torch.stack(side))
            num += side_num.unbind()
            idx += side_idx.unbind()
    tensors = [t for pair in zip(num, idx, strict=True) for t in pair]  # counts, then indices
    return assemble_block_mask(seq_lengths, tensors, block_size, mask_mod)


def build_block_mask(
    relation: IntervalRelation,
    mask_mod: _mask_mod_signature | None,
    block_size: tuple[int, int],
    device: torch.device | str,
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

    Example:
        >>> key = PiecewiseKey.per_frame(torch.arange(3), num_patches_per_frame=96)
        >>> bm = build_block_mask(IntervalRelation(kv_key=key, q_hi=key), None, (128, 128), "cpu")
        >>> bm.kv_num_blocks.tolist(), bm.full_kv_num_blocks.tolist()  # the last row is padded
        ([[[2, 2, 3]]], [[[0, 1, 0]]])
        >>> bm.kv_indices.tolist()  # each row: its partial blocks first, then the others
        [[[[0, 1, 2], [1, 2, 0], [0, 1, 2]]]]
    """
    seq_lengths = (relation.q_len, relation.kv_len)
    num_blocks = (-(-relation.q_len // block_size[0]), -(-relation.kv_len // block_size[1]))
    if block_kernel_available(device, num_blocks):  # CUDA: one launch (masks.block_kernel)
        rows, cols = relation.block_table(*block_size)
        if rows.shape[1] <= MAX_PIECES:
            return block_mask_from_tables(rows, cols, seq_lengths, block_size, mask_mod, device)
    partial, full = relation.block_grids(*block_size, device=device)
    return block_mask_from_grids(partial, full, seq_lengths, block_size, mask_mod)


# A table slot that changes no block: its interval sees nothing (for "some pair visible") and
# holds every key (for "all pairs visible"); (any_lo, any_hi, full_lo, full_hi).
_UNUSED = np.array([_BIG, -_BIG, _NEG_INF, _POS_INF], dtype=np.int64)


def _unused_pieces(shape: tuple[int, ...]) -> np.ndarray:
    """``[*shape, 4]`` int64 table slots that change no block (:data:`_UNUSED`)."""
    return np.broadcast_to(_UNUSED, (*shape, 4)).copy()


def stack_block_tables(
    tables: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Several relations' :meth:`IntervalRelation.block_table` s as one batch:
    ``([B, Q_BLOCKS, P, K, 4], [B, KV_BLOCKS, 3])``, the fewer pieces padded with pieces that see
    nothing and are full (they change no block). The relations share their shapes but ``P``.

    Example:
        >>> key = PiecewiseKey.per_frame(torch.arange(2), num_patches_per_frame=3)
        >>> table = IntervalRelation(kv_key=key, q_hi=key).block_table(2, 2)
        >>> [t.shape for t in stack_block_tables([table, table])]
        [(2, 3, 1, 1, 4), (2, 3, 3)]
    """
    if len(tables) == 1:  # a batch of one: nothing to pad
        return tables[0][0][None], tables[0][1][None]
    pieces = max(rows.shape[1] for rows, _ in tables)
    nq, _, k, _ = tables[0][0].shape
    out = _unused_pieces((len(tables), nq, pieces, k))
    for b, (rows, _) in enumerate(tables):
        out[b, :, : rows.shape[1]] = rows
    return out, np.stack([cols for _, cols in tables])


def at_most_block_tables(
    kv_key: np.ndarray, q_hi: np.ndarray, q_block_size: int, kv_block_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The block tables of ``kv_key <= q_hi`` for a batch, from per-token values:
    ``([B, Q_BLOCKS, 1, 1, 4], [B, KV_BLOCKS, 3])`` int64, as :func:`stack_block_tables` of each
    row's :meth:`IntervalRelation.block_table` gives them (a block has a visible pair iff its
    smallest key is at most its largest bound, and is full iff its largest key is at most its
    smallest bound). ``kv_key`` is ``[B, KV_LEN]``, ``q_hi`` ``[B, Q_LEN]``, any integer dtype.
    Four NumPy reductions over the tokens: where a batch's keys are already written token by
    token (a prompt's mask_mod tensors), cheaper than stating each row's keys piecewise.

    Example:
        >>> frames = np.repeat([[0, 1]], 3, axis=1)  # two frames of 3 tokens
        >>> rows, cols = at_most_block_tables(frames, frames, 2, 2)
        >>> key = PiecewiseKey.per_frame(torch.arange(2), num_patches_per_frame=3)
        >>> want = stack_block_tables([IntervalRelation(kv_key=key, q_hi=key).block_table(2, 2)])
        >>> np.array_equal(rows, want[0]) and np.array_equal(cols, want[1])
        True
    """
    (b, kv_len), q_len = kv_key.shape, q_hi.shape[1]
    kv_starts = np.arange(0, kv_len, kv_block_size)
    q_starts = np.arange(0, q_len, q_block_size)
    cols = np.empty((b, kv_starts.size, 3), dtype=np.int64)
    cols[..., 0] = np.minimum.reduceat(kv_key, kv_starts, axis=1)
    cols[..., 1] = cols[..., 2] = np.maximum.reduceat(kv_key, kv_starts, axis=1)
    if kv_len % kv_block_size:  # a padded kv block is never full
        cols[:, -1, 2] += _BIG
    rows = np.empty((b, q_starts.size, 1, 1, 4), dtype=np.int64)
    rows[..., 0::2] = -_BIG  # no lower bound
    rows[:, :, 0, 0, 1] = np.maximum.reduceat(q_hi, q_starts, axis=1)
    rows[:, :, 0, 0, 3] = np.minimum.reduceat(q_hi, q_starts, axis=1)
    if q_len % q_block_size:  # a padded q block is never full
        rows[:, -1, 0, 0, 3] -= _BIG
    return rows, cols
