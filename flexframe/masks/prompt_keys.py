"""Keys and bounds of a prompt mask, run by run: what each token's mask_mod entry holds.

A prompt mask (:mod:`flexframe.masks.prompt`) is a relation between a key per kv token and one
or more bounds per query (``kv_key <= q_hi``, or ``kv_key`` in one of two intervals). Every such
key and bound is constant or the position itself on each run of equal ids of a row (a frame, a
stretch of text, padding: :class:`~flexframe.masks.prompt_layout._Row`), so this module states
them per run (:class:`_RunKey`), one function per family; the closed form reads them run by run
and only the mask_mod's tensors are written token by token.

Example:
    >>> import torch
    >>> from flexframe.masks.prompt_layout import TEXT, _check_frame_ids, _read_row
    >>> row = _read_row(_check_frame_ids(torch.tensor([[TEXT, 0, 0, 1, TEXT]])).numpy()[0], 0)
    >>> kv, (q_hi,) = _causal_frame_keys(row)
    >>> kv.per_token(row).tolist(), q_hi.per_token(row).tolist()
    ([0, 1, 2, 3, 4], [0, 2, 2, 3, 4])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexframe.masks.piecewise import PiecewiseKey
from flexframe.masks.prompt_layout import PAD, _Row

_BIG = 2**30  # beyond every position; the keys are int32 on the device
_POSITIONS: dict[type, np.ndarray] = {}  # kept aranges, by dtype


def _positions(n: int, dtype: type = np.int64) -> np.ndarray:
    """``np.arange(n, dtype=dtype)`` as a read-only view of one kept array (an arange of a
    prompt's length costs more than a copy of it)."""
    kept = _POSITIONS.get(dtype)
    if kept is None or kept.size < n:
        kept = np.arange(max(n, 2 * (0 if kept is None else kept.size)), dtype=dtype)
        kept.flags.writeable = False
        _POSITIONS[dtype] = kept
    return kept[:n]


@dataclass(frozen=True)
class _RunKey:
    """A key or bound over a row, ``offset[u] + slope[u] * t`` at each position ``t`` of run
    ``u`` (the row's runs of equal ids): every prompt key is constant or the position itself on
    each run, so the closed form reads it run by run and only the mask_mod's tensors need it
    token by token."""

    offset: np.ndarray  # [U] int64
    slope: np.ndarray | int  # [U] int64 of 0s and 1s, or one for every run

    def per_token(self, row: _Row) -> np.ndarray:
        """``[L]`` int32 (what the mask_mod reads on the device; every key and bound lies in
        ``(-2**31, 2**31)``): the value at every position of the row."""
        values = row.per_token(self.offset.astype(np.int32))
        if isinstance(self.slope, np.ndarray):
            rising = np.flatnonzero(self.slope)
            if rising.size > 64:  # many rising runs: one pass over the tokens
                values += _positions(row.length, np.int32) * row.per_token(self.slope)
            else:  # a few (text between videos): their positions only
                ends = row.run_start + row.run_length
                for a, z in zip(row.run_start[rising].tolist(), ends[rising].tolist(), strict=True):
                    values[a:z] += _positions(z, np.int32)[a:]
        elif self.slope:
            values += _positions(row.length, np.int32)
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
