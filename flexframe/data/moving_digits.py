"""Moving handwritten digits: Moving MNIST-style clips built from bundled digit images.

Each clip shows ``num_digits`` real handwritten digits from the UCI "Optical Recognition of
Handwritten Digits" set (Alpaydin and Kaynak, 1998; CC BY 4.0), the 1797 images of 8x8 pixels,
values 0..16, that scikit-learn ships as ``load_digits``; flexframe ships the same images in
``flexframe/data/digits.npz`` (45 KB), so nothing is downloaded and nothing else is needed. They
are upsampled to ``digit_size`` pixels, each moving at a constant velocity and bouncing
off the walls, after Moving MNIST (Srivastava et al., 2015). Overlapping digits are composited
with a pixel-wise maximum.

Motion rule, per digit and axis, with ``L = image_size - digit_size`` (the top-left corner's
range)::

    p(t)   = fold(p0 + v * t)          fold(p) = r if r <= L else 2 * L - r,   r = p mod 2L
    pixel  = round(p(t))               in 0..L, so a digit never leaves the frame

which is a point bouncing elastically between 0 and ``L``. ``p0`` is uniform in ``[0, L]``; the
velocity has a uniform direction and a speed uniform in ``speed`` (pixels per frame).

Every random draw of clip ``index`` comes from its own NumPy generator,
``numpy.random.default_rng([seed, index])``, so a clip depends only on ``(seed, index)`` and the
dataset arguments: not on access order, ``num_workers`` or the global RNG. (A
``torch.Generator`` would not do: its CPU seed keeps only 32 bits, so packing seed and index
into one seed makes different seeds collide.)

Splits use disjoint images: ``"train"`` draws from the first 80% of the images (indices
0..1436), ``"test"`` from the last 20% (1437..1796).

Example:
    >>> clips = make_moving_digits(4, num_frames=32, seed=0)
    >>> clips.shape, clips.dtype
    (torch.Size([4, 32, 1, 32, 32]), torch.float32)
    >>> bool(clips.min() >= 0), bool(clips.max() <= 1)
    (True, True)
    >>> torch.equal(clips[2], MovingDigits(10, num_frames=32, seed=0)[2])
    True
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_int, did_you_mean

__all__ = ["DigitMotion", "MovingDigits", "SPLITS", "make_moving_digits"]

SPLITS: tuple[str, ...] = ("train", "test")
"""Valid ``split`` values."""

_NUM_DIGIT_IMAGES = 1797
_NUM_TRAIN_IMAGES = int(0.8 * _NUM_DIGIT_IMAGES)  # 1437


@functools.lru_cache(maxsize=1)
def _bundled_digit_images() -> Tensor:
    """``[1797, 8, 8]`` float32 in [0, 1]: the bundled digits divided by 16."""
    with np.load(Path(__file__).with_name("digits.npz")) as archive:
        images = archive["images"]  # uint8, values 0..16
    return torch.from_numpy(images.astype(np.float32)).div_(16.0)


@functools.lru_cache(maxsize=8)
def _digit_images(digit_size: int) -> Tensor:
    """``[1797, digit_size, digit_size]`` float32 in [0, 1], bilinearly resized from 8x8."""
    images = _bundled_digit_images()
    if digit_size == images.shape[-1]:
        return images
    resized = F.interpolate(
        images[:, None], size=(digit_size, digit_size), mode="bilinear", align_corners=False
    )[:, 0]
    # Bilinear weights are convex, so values stay in [0, 1] up to float rounding; clamp that.
    return resized.clamp_(0.0, 1.0)


def _split_indices(split: str) -> Tensor:
    if split == "train":
        return torch.arange(0, _NUM_TRAIN_IMAGES)
    return torch.arange(_NUM_TRAIN_IMAGES, _NUM_DIGIT_IMAGES)


def _check_speed(speed: object) -> tuple[float, float]:
    if not (
        isinstance(speed, (tuple, list))
        and len(speed) == 2
        and all(isinstance(s, numbers.Real) and not isinstance(s, bool) for s in speed)
    ):
        raise TypeError(
            f"speed must be a (min, max) pair of numbers in pixels per frame, got {speed!r}"
        )
    low, high = float(speed[0]), float(speed[1])
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low <= high):
        raise ValueError(f"speed must satisfy 0 <= min <= max (finite), got {speed!r}")
    return low, high


@dataclass(frozen=True)
class DigitMotion:
    """The random draws behind one clip and the digit positions they give.

    Attributes:
        image_indices: ``[num_digits]`` int64, indices into the bundled digit images.
        start: ``[num_digits, 2]`` float64, top-left corner ``(x, y)`` at frame 0, in pixels.
        velocity: ``[num_digits, 2]`` float64, ``(dx, dy)`` in pixels per frame (before bounces).
        positions: ``[num_frames, num_digits, 2]`` int64, the drawn top-left corner ``(x, y)``
            of each digit in each frame, each coordinate in ``0..image_size - digit_size``.
    """

    image_indices: Tensor
    start: Tensor
    velocity: Tensor
    positions: Tensor


class MovingDigits(Dataset):
    """Moving MNIST-style clips of real handwritten digits, ``[T, 1, H, W]`` float32 in [0, 1].

    Clips are generated on access from ``(seed, index)`` (see the module docstring for the motion
    rule), so the dataset holds no frames in memory and is identical under any access order or
    number of ``DataLoader`` workers.

    Args:
        num_clips: Number of clips (``len(dataset)``), at least 1.
        num_frames: Frames per clip ``T``, at least 2 (the default 48 falls in the medium
            fast/slow preset, 30..60 frames).
        image_size: Height and width ``H = W`` of each frame, greater than ``digit_size`` so
            digits have room to move.
        num_digits: Digits per clip, at least 1.
        digit_size: Side of each digit in pixels after bilinear upsampling from 8x8; at least 1.
        seed: Dataset seed, a non-negative int.
        split: ``"train"`` (first 80% of ``load_digits``) or ``"test"`` (last 20%).
        speed: ``(min, max)`` speed in pixels per frame; each digit's speed is uniform in it.

    Attributes:
        source_indices: ``[P]`` int64, the ``load_digits`` indices this split draws from.

    Example:
        >>> ds = MovingDigits(8, num_frames=40, image_size=32, num_digits=2, seed=1)
        >>> len(ds), ds[0].shape
        (8, torch.Size([40, 1, 32, 32]))
        >>> ds.motion(0).positions.shape            # [T, num_digits, (x, y)]
        torch.Size([40, 2, 2])
        >>> int(ds.motion(0).positions.min()) >= 0, int(ds.motion(0).positions.max()) <= 20
        (True, True)
    """

    def __init__(
        self,
        num_clips: int,
        num_frames: int = 48,
        image_size: int = 32,
        num_digits: int = 2,
        digit_size: int = 12,
        seed: int = 0,
        split: str = "train",
        speed: tuple[float, float] = (1.0, 3.0),
    ) -> None:
        self.num_clips = check_int("num_clips", num_clips, minimum=1)
        self.num_frames = check_int("num_frames", num_frames, minimum=2)
        self.digit_size = check_int("digit_size", digit_size, minimum=1)
        self.image_size = check_int("image_size", image_size, minimum=1)
        if self.image_size <= self.digit_size:
            raise ValueError(
                f"image_size must be greater than digit_size so digits can move, got "
                f"image_size={image_size} and digit_size={digit_size}"
            )
        self.num_digits = check_int("num_digits", num_digits, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        if split not in SPLITS:
            hint = did_you_mean(split, SPLITS) if isinstance(split, str) else ""
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.{hint}")
        self.split = split
        self.speed = _check_speed(speed)
        self.source_indices: Tensor = _split_indices(split)

    def __len__(self) -> int:
        return self.num_clips

    def _check_index(self, index: object) -> int:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"index must be an int, got {index!r} ({type(index).__name__})")
        index = int(index)
        if not -self.num_clips <= index < self.num_clips:
            raise IndexError(f"index {index} is out of range for {self.num_clips} clips")
        return index % self.num_clips

    def motion(self, index: int) -> DigitMotion:
        """The digits, start positions, velocities and per-frame positions of clip ``index``.

        Example:
            >>> m = MovingDigits(4, num_frames=10, num_digits=1, seed=0).motion(3)
            >>> m.image_indices.shape, m.start.shape, m.velocity.shape, m.positions.shape
            (torch.Size([1]), torch.Size([1, 2]), torch.Size([1, 2]), torch.Size([10, 1, 2]))
        """

        index = self._check_index(index)
        rng = np.random.default_rng([self.seed, index])
        d = self.num_digits
        span = float(self.image_size - self.digit_size)  # L: the corner moves in [0, L]
        pick = torch.from_numpy(rng.integers(0, len(self.source_indices), size=d))
        start = torch.from_numpy(rng.random((d, 2))) * span
        angle = torch.from_numpy(rng.random(d)) * (2.0 * math.pi)
        low, high = self.speed
        speed = low + (high - low) * torch.from_numpy(rng.random(d))
        velocity = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1) * speed[:, None]

        t = torch.arange(self.num_frames, dtype=torch.float64)[:, None, None]
        # Unfolding the reflections: a bounce between walls 0 and L is a straight line mod 2L.
        r = torch.remainder(start + velocity * t, 2.0 * span)
        folded = torch.where(r <= span, r, 2.0 * span - r)
        positions = torch.round(folded).long()
        return DigitMotion(self.source_indices[pick], start, velocity, positions)

    def __getitem__(self, index: int) -> Tensor:
        """Clip ``index`` as ``[T, 1, H, W]`` float32 in [0, 1]."""
        h = self.image_size
        canvas = torch.zeros(self.num_frames * h * h)
        self._draw(index, canvas)
        return canvas.view(self.num_frames, 1, h, h)

    def _draw(self, index: int, canvas: Tensor) -> None:
        """Draw clip ``index`` into ``canvas``, a zeroed ``[T * H * W]`` float32 view."""
        motion = self.motion(index)
        images = _digit_images(self.digit_size)[motion.image_indices]  # [D, s, s]
        t, h, s = self.num_frames, self.image_size, self.digit_size
        offsets = torch.arange(s)
        x = motion.positions[..., 0][:, :, None, None] + offsets[None, None, None, :]  # [T,D,1,s]
        y = motion.positions[..., 1][:, :, None, None] + offsets[None, None, :, None]  # [T,D,s,1]
        frame = torch.arange(t)[:, None, None, None]
        flat = ((frame * h + y) * h + x).reshape(-1)  # [T * D * s * s] into the [T, H, W] canvas
        values = images.expand(t, -1, -1, -1).reshape(-1)
        # amax composites overlapping digits; the zero canvas takes part, which is harmless.
        canvas.scatter_reduce_(0, flat, values, reduce="amax")

    def __repr__(self) -> str:
        return (
            f"MovingDigits(num_clips={self.num_clips}, num_frames={self.num_frames}, "
            f"image_size={self.image_size}, num_digits={self.num_digits}, "
            f"digit_size={self.digit_size}, seed={self.seed}, split={self.split!r}, "
            f"speed={self.speed})"
        )


def make_moving_digits(
    num_clips: int,
    num_frames: int = 48,
    image_size: int = 32,
    num_digits: int = 2,
    digit_size: int = 12,
    seed: int = 0,
    split: str = "train",
    speed: tuple[float, float] = (1.0, 3.0),
) -> Tensor:
    """All clips of a :class:`MovingDigits` dataset stacked into ``[N, T, 1, H, W]`` float32.

    Clip ``i`` equals ``MovingDigits(...)[i]`` for the same arguments.

    Example:
        >>> make_moving_digits(3, num_frames=8, image_size=16, digit_size=8).shape
        torch.Size([3, 8, 1, 16, 16])
    """
    dataset = MovingDigits(
        num_clips, num_frames, image_size, num_digits, digit_size, seed, split, speed
    )
    h = dataset.image_size
    # One allocation for the batch: many small fresh buffers cost a page fault each.
    clips = torch.zeros(len(dataset), dataset.num_frames * h * h)
    for i in range(len(dataset)):
        dataset._draw(i, clips[i])
    return clips.view(len(dataset), dataset.num_frames, 1, h, h)
