"""Piecewise keys: an integer per position, constant or the position itself on each segment.

The closed-form builder (:mod:`flexframe.masks.closed_form`) states every mask in these keys: a
frame index, a chunk, a video's first frame, a token's position, or a prompt's bound run by run.
A :class:`PiecewiseKey` holds one entry per segment, never one per position, and gives each
block's extremes from its segments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch


@dataclass(frozen=True)
class PiecewiseKey:
    """An integer key over positions ``0 .. length-1``, affine on each segment.

    ``key(t) = offsets[s] + slope[s] * t`` for ``t`` in segment ``s = [starts[s], starts[s+1])``.

    Attributes:
        starts: ``[S]`` int64, first position of each segment; ``starts[0] == 0``, ascending.
        offsets: ``[S]`` int64, the key's offset on each segment.
        slope: 0 (constant on every segment) or 1 (increases with the position on every
            segment), or a ``[S]`` int64 tensor of 0s and 1s, one per segment (a prompt's text
            rises with the position where its frames are constant).
        length: number of positions.

    Example:
        >>> key = PiecewiseKey.per_frame(torch.tensor([0, 1, 2]), num_patches_per_frame=2)
        >>> key.evaluate(torch.arange(6)).tolist()
        [0, 0, 1, 1, 2, 2]
    """

    starts: torch.Tensor
    offsets: torch.Tensor
    slope: int | torch.Tensor
    length: int
    _bounds: dict[int, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if isinstance(self.slope, np.integer):  # the builder tests for an int
            object.__setattr__(self, "slope", int(self.slope))
        if isinstance(self.slope, torch.Tensor):
            if self.slope.shape != self.starts.shape:
                raise ValueError(
                    f"slope must be 0, 1 or one value per segment (shape "
                    f"{tuple(self.starts.shape)}), got a tensor of shape {tuple(self.slope.shape)}"
                )
            self.host_slope  # noqa: B018 (checks its values now, not at first use)
        elif isinstance(self.slope, bool) or self.slope not in (0, 1):
            raise ValueError(
                f"slope must be 0 or 1 (or a tensor of them, one per segment), got {self.slope!r}"
            )

    @staticmethod
    def per_frame(frame_values: torch.Tensor, num_patches_per_frame: int) -> PiecewiseKey:
        """The key ``frame_values[f]`` on every token of frame ``f`` (frames of equal size)."""
        num_frames = frame_values.numel()
        starts = torch.arange(num_frames, dtype=torch.int64) * num_patches_per_frame
        return PiecewiseKey(
            starts, frame_values.to(torch.int64), 0, num_frames * num_patches_per_frame
        )

    @staticmethod
    def from_numpy(
        starts: np.ndarray, offsets: np.ndarray, slope: np.ndarray | int, length: int
    ) -> PiecewiseKey:
        """The key of int64 NumPy ``starts``, ``offsets`` and ``slope`` (an int or ``[S]``),
        read by the builder as NumPy arrays, with no round trip through torch. The arrays are
        copied (a few entries a segment): writing into them later changes nothing.

        Example:
            >>> starts, offsets, slope = np.array([0, 2]), np.array([5, 0]), np.array([0, 1])
            >>> key = PiecewiseKey.from_numpy(starts, offsets, slope, length=4)
            >>> key.evaluate(torch.arange(4)).tolist()
            [5, 5, 2, 3]
        """
        rises = not isinstance(slope, (int, np.integer))
        arrays = [np.array(a, dtype=np.int64) for a in (starts, offsets)]
        if rises:
            arrays.append(np.array(slope, dtype=np.int64))
        tensors = [torch.from_numpy(a) for a in arrays]
        key = PiecewiseKey(tensors[0], tensors[1], tensors[2] if rises else int(slope), length)
        views = [a.view() for a in arrays[:2]]
        for view in views:
            view.flags.writeable = False
        key.__dict__["host"] = tuple(views)  # what the cached property would compute
        return key

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

    @cached_property
    def host(self) -> tuple[np.ndarray, np.ndarray]:
        """``(starts, offsets)`` as int64 NumPy arrays: the builder's index arithmetic runs on the
        host over one entry per segment or block, where NumPy's per-call cost is smallest."""
        arrays = tuple(
            np.asarray(t.cpu().numpy(), dtype=np.int64) for t in (self.starts, self.offsets)
        )
        for array in arrays:  # often the tensors' own memory: read-only, as the key is
            array.flags.writeable = False
        return arrays  # type: ignore[return-value]

    @cached_property
    def host_slope(self) -> np.ndarray | int:
        """The slope as the builder reads it: one int for every segment, or ``[S]`` int64."""
        if not isinstance(self.slope, torch.Tensor):
            return self.slope
        return self._checked_slope(np.asarray(self.slope.cpu().numpy(), dtype=np.int64))

    @staticmethod
    def _checked_slope(slope: np.ndarray) -> np.ndarray:
        if ((slope != 0) & (slope != 1)).any():
            raise ValueError(
                f"slope must hold 0s and 1s, got {sorted(set(slope.tolist()) - {0, 1})[:3]}"
            )
        if slope.flags.writeable:
            slope = slope.view()
            slope.flags.writeable = False
        return slope

    @cached_property
    def rises(self) -> bool:
        """True when the key has slope 1 on some segment."""
        slope = self.host_slope
        return bool(slope.any()) if isinstance(slope, np.ndarray) else slope == 1

    @cached_property
    def monotone(self) -> bool:
        """True when the key never decreases along the positions (then a block's extremes are
        its first and last position)."""
        starts, offsets = self.host
        slope = self.host_slope
        ends = np.minimum(np.append(starts[1:], self.length), self.length) - 1
        held = ends >= starts  # segments that hold a position (starts may repeat)
        if not held.all():
            starts, offsets, ends = starts[held], offsets[held], ends[held]
            slope = slope if isinstance(slope, int) else slope[held]
        first = offsets + slope * starts
        last = offsets + slope * ends
        return bool((last[:-1] <= first[1:]).all())

    def evaluate(self, positions: torch.Tensor) -> torch.Tensor:
        """The key at each of ``positions`` (any shape, values in ``[0, length)``)."""
        values = self.evaluate_host(positions.cpu().numpy().astype(np.int64))
        return torch.from_numpy(values).to(positions.device)

    def evaluate_host(self, positions: np.ndarray) -> np.ndarray:
        """:meth:`evaluate` on int64 NumPy positions."""
        starts, offsets = self.host
        slope = self.host_slope
        segment = np.searchsorted(starts, positions, side="right") - 1
        if isinstance(slope, int):
            return offsets[segment] + slope * positions
        return offsets[segment] + slope[segment] * positions

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
        key_min, key_max = self.block_min_max_host(block_size)
        return torch.tensor(key_min, device=device), torch.tensor(key_max, device=device)

    def block_min_max_host(self, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`block_min_max` as read-only NumPy arrays, kept per block size (a relation
        often uses one key on both sides, and the key is immutable)."""
        if block_size not in self._bounds:
            bounds = self._compute_block_min_max(block_size)
            for array in bounds:
                array.flags.writeable = False
            self._bounds[block_size] = bounds
        return self._bounds[block_size]

    def _compute_block_min_max(self, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        num_blocks = -(-self.length // block_size)
        block_starts = np.arange(num_blocks, dtype=np.int64) * block_size
        if self.monotone:
            block_lasts = np.minimum(block_starts + block_size, self.length) - 1
            return self.evaluate_host(block_starts), self.evaluate_host(block_lasts)
        # On a piece (a run of positions in one segment and one block) the key is monotone
        # (slope >= 0), so its extremes sit at the piece's two ends.
        piece_first, first_piece = _pieces(self.host[0], self.length, block_size)
        piece_last = np.append(piece_first[1:], self.length) - 1
        key_min = np.minimum.reduceat(self.evaluate_host(piece_first), first_piece)
        key_max = np.maximum.reduceat(self.evaluate_host(piece_last), first_piece)
        return key_min, key_max


def _pieces(starts: np.ndarray, length: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The first position of every piece (a maximal run of positions inside one segment and one
    block, sorted) and the index of each block's first piece; ``starts`` may repeat."""
    num_blocks = -(-length // block_size)
    block_starts = np.arange(num_blocks, dtype=np.int64) * block_size
    cuts = np.sort(np.concatenate([starts[starts < length], block_starts]))
    piece_first = cuts[np.concatenate([[True], cuts[1:] != cuts[:-1]])]
    return piece_first, np.searchsorted(piece_first, block_starts)
