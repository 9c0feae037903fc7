"""The clips every run of the ablation trains and tests on: moving digits, or video files.

Moving digits: ``num_clips_train`` clips from the train split (seed ``data_seed``) and
``num_clips_test`` from the test split (seed ``data_seed + 1``), which draws other images.

Videos (``config.videos``: files, folders or globs): each file of at least ``num_frames`` frames
gives up to ``clips_per_video`` evenly spaced windows of ``num_frames`` consecutive frames,
center-cropped and resized to ``image_size``. The last ``test_fraction`` of the files (at least
one) are held out; a single video is split in time instead (train on its beginning, test on its
end), so no frame is in both.

Example:
    >>> from flexframe.experiment import AblationConfig
    >>> single_video_min_frames(num_frames=32, test_fraction=0.25)
    126
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from torch import Tensor, nn

from flexframe.experiment.config import AblationConfig

__all__ = [
    "NUM_VIEWS",
    "AblationData",
    "load_ablation_data",
    "single_video_min_frames",
    "batch_order",
    "clip_views",
    "tensor_checksum",
    "transform_clips",
    "weights_checksum",
]

NUM_VIEWS = 16
"""Views of a clip for augmentation: the 8 flips and transposes of the square frame, each in
time order or reversed (camera motion and bouncing digits are as plausible backwards)."""

Log = Callable[[str], None]


def tensor_checksum(*tensors: Tensor) -> str:
    """sha256 (first 16 hex digits) of the tensors' bytes, in order.

    Example:
        >>> tensor_checksum(torch.zeros(2)) == tensor_checksum(torch.zeros(2))
        True
    """
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class AblationData:
    """The clips every run trains and tests on, and where they came from.

    Attributes:
        train: ``[N, T, C, H, W]`` float32 training clips in [0, 1].
        test: ``[M, T, C, H, W]`` float32 held-out clips.
        source: ``"moving-digits"`` or ``"videos"``.
        description: one line saying what was loaded.
        videos_used: video files that gave clips (empty for moving digits).
        videos_skipped: ``(file, reason)`` for each video left out.

    Example:
        >>> data = AblationData(torch.zeros(4, 3, 1, 8, 8), torch.zeros(2, 3, 1, 8, 8), "demo", "")
        >>> data.channels, data.num_frames
        (1, 3)
    """

    train: Tensor
    test: Tensor
    source: str
    description: str
    videos_used: list[str] = field(default_factory=list)
    videos_skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def channels(self) -> int:
        """Image channels ``C``."""
        return int(self.train.shape[2])

    @property
    def num_frames(self) -> int:
        """Frames per clip ``T``."""
        return int(self.train.shape[1])

    def checksum(self) -> str:
        """sha256 (first 16 hex digits) of the train and test clips' bytes."""
        return tensor_checksum(self.train, self.test)


def transform_clips(clips: Tensor, views: Tensor) -> Tensor:
    """``[N, T, C, H, W]`` clips, clip ``i`` shown as view ``views[i]`` (0 .. 15): bit 0 flips
    left-right, bit 1 up-down, bit 2 transposes the frame (square frames), bit 3 reverses time.
    View 0 is the clip itself.

    Example:
        >>> clip = torch.arange(8.0).view(1, 2, 1, 2, 2)           # 2 frames of 2x2
        >>> transform_clips(clip, torch.tensor([1]))[0, 0, 0].tolist()   # left-right
        [[1.0, 0.0], [3.0, 2.0]]
        >>> transform_clips(clip, torch.tensor([8]))[0, :, 0, 0, 0].tolist()  # time reversed
        [4.0, 0.0]
    """
    out = []
    for clip, view in zip(clips, views.tolist(), strict=True):
        if view & 1:
            clip = clip.flip(-1)
        if view & 2:
            clip = clip.flip(-2)
        if view & 4 and clip.shape[-1] == clip.shape[-2]:
            clip = clip.transpose(-1, -2)
        if view & 8:
            clip = clip.flip(0)
        out.append(clip)
    return torch.stack(out) if out else clips


def batch_order(num_clips: int, steps: int, batch_size: int, seed: int) -> Tensor:
    """``[steps, batch_size]`` clip indices: the global batches of ``flexframe.distributed``
    (epochs of seeded permutations), the same for every configuration of a seed.

    Example:
        >>> order = batch_order(num_clips=4, steps=3, batch_size=2, seed=0)
        >>> order.shape, sorted(order[:2].flatten().tolist())
        (torch.Size([3, 2]), [0, 1, 2, 3])
    """
    from flexframe.distributed import global_batches

    batches = islice(global_batches(num_clips, batch_size, seed), steps)
    return torch.tensor(list(batches), dtype=torch.int64).view(steps, batch_size)


def clip_views(steps: int, batch_size: int, seed: int, augment: bool = True) -> Tensor:
    """``[steps, batch_size]`` the view (``transform_clips``) each clip of each step is shown
    in: drawn from ``seed`` alone, so the same for every configuration; all 0 without
    ``augment``.

    Example:
        >>> views = clip_views(steps=3, batch_size=4, seed=0)
        >>> views.shape, bool(views.max() < 16), int(clip_views(3, 4, 0, augment=False).sum())
        (torch.Size([3, 4]), True, 0)
    """
    if not augment:
        return torch.zeros(steps, batch_size, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 17)
    return torch.randint(0, NUM_VIEWS, (steps, batch_size), generator=generator)


def weights_checksum(*modules: nn.Module) -> str:
    """sha256 (first 16 hex digits) of the modules' state dicts, names included.

    Example:
        >>> weights_checksum(nn.Linear(2, 2)) == weights_checksum(nn.Linear(2, 2))  # new draws
        False
    """
    digest = hashlib.sha256()
    for m in modules:
        for name, value in m.state_dict().items():
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def single_video_min_frames(num_frames: int, test_fraction: float) -> int:
    """The fewest frames a lone video needs: ``num_frames`` on each side of its split in time.

    The split falls at frame ``round(count * (1 - test_fraction))``; the count is the smallest
    for which both parts hold a window (more frames never lose one).

    Example:
        >>> single_video_min_frames(32, 0.25), single_video_min_frames(16, 0.5)
        (126, 32)
    """
    count = 2 * num_frames
    while True:
        cut = round(count * (1.0 - test_fraction))
        if cut >= num_frames and count - cut >= num_frames:
            return count
        count += 1


def _window_starts(num_available: int, num_frames: int, max_windows: int) -> list[int]:
    """Evenly spaced starts of up to ``max_windows`` windows of ``num_frames`` frames."""
    span = num_available - num_frames
    count = min(max_windows, span + 1)
    if count == 1:
        return [0]
    return [round(k * span / (count - 1)) for k in range(count)]


def _read_windows(
    path: Path, starts: Sequence[int], num_frames: int, config: AblationConfig
) -> Tensor:
    """``[len(starts), T, C, H, W]``: the windows of ``path`` that start at ``starts``."""
    from flexframe.data import read_video_frames

    indices = [s + t for s in starts for t in range(num_frames)]
    frames = read_video_frames(path, indices, size=config.image_size, grayscale=config.grayscale)
    return frames.view(len(starts), num_frames, *frames.shape[1:])


def _split_plan(
    files: list[tuple[Path, int]], config: AblationConfig, name: str
) -> list[tuple[Path, int, int, str]]:
    """``(file, first frame, end frame, split)`` for every part of every file."""
    t = config.num_frames
    if len(files) == 1:
        # One video: train on its beginning and test on its end, never on the same frames.
        path, count = files[0]
        cut = round(count * (1.0 - config.test_fraction))
        if cut < t or count - cut < t:
            need = single_video_min_frames(t, config.test_fraction)
            raise ValueError(
                f"{name}: only one usable video ('{path}', {count} frames); a lone video is "
                f"split in time at test_fraction={config.test_fraction}, and each part needs a "
                f"window of num_frames={t}: give a video of at least {need} frames, more "
                "videos, or a smaller num_frames"
            )
        return [(path, 0, cut, "train"), (path, cut, count, "test")]
    num_test = min(len(files) - 1, max(1, round(config.test_fraction * len(files))))
    return [
        (path, 0, count, "train" if i < len(files) - num_test else "test")
        for i, (path, count) in enumerate(files)
    ]


def _load_videos(config: AblationConfig, log: Log, name: str) -> AblationData:
    from flexframe.data import VideoClips, VideoReadError

    t = config.num_frames
    assert config.videos is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Probing only (frame counts, unreadable and too-short files); the clips are read below.
        probe = VideoClips(config.videos, num_frames=t, size=config.image_size, name=name)
    for w in caught:  # skips are logged from probe.skipped below; anything else goes on
        if not str(w.message).startswith("skipping video"):
            warnings.warn(w.message, w.category, stacklevel=2)
    skipped = list(probe.skipped)
    files = list(zip(probe.paths, probe.frame_counts, strict=True))
    plan = _split_plan(files, config, name)
    clips: dict[str, list[Tensor]] = {"train": [], "test": []}
    used: list[str] = []
    for path, lo, hi, split in plan:
        starts = [lo + s for s in _window_starts(hi - lo, t, config.clips_per_video)]
        try:
            clips[split].append(_read_windows(path, starts, t, config))
        except (VideoReadError, IndexError) as exc:
            # The container's frame count can promise frames a damaged file cannot decode.
            skipped.append((str(path), f"unreadable: {getattr(exc, 'reason', exc)}"))
            continue
        if str(path) not in used:
            used.append(str(path))
    for file, reason in skipped:
        log(f"skipped video {file}: {reason}")
    for split in ("train", "test"):
        if not clips[split]:
            raise ValueError(
                f"{name}: no {split} clips left after skipping unreadable files "
                f"({len(used)} usable of {len(used) + len(skipped)}); give more videos"
            )
    train, test = torch.cat(clips["train"]), torch.cat(clips["test"])
    description = (
        f"{len(used)} of {len(used) + len(skipped)} video(s) used "
        f"({len(skipped)} skipped): {len(train)} train and {len(test)} held-out clips of "
        f"{t} frames at {config.image_size}x{config.image_size}"
    )
    return AblationData(train, test, "videos", description, used, skipped)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_ablation_data(
    config: AblationConfig, log: Log | None = None, *, videos_name: str = "videos"
) -> AblationData:
    """The training and held-out clips of ``config``: moving digits, or its ``videos``.

    See the module docstring for how clips are cut. Unreadable and too-short video files are
    logged by name (``log``, stderr by default) and skipped.

    Args:
        config: the settings.
        log: receives one line per skipped video.
        videos_name: what error messages call the videos setting (``--videos`` for the flag).

    Raises:
        FileNotFoundError: a videos entry matches no file.
        ValueError: no usable video, or too few frames or files to hold any out.

    Example:
        >>> data = load_ablation_data(AblationConfig(num_clips_train=3, num_clips_test=2,
        ...                                          num_frames=32, image_size=16))
        >>> data.train.shape, data.test.shape, data.source
        (torch.Size([3, 32, 1, 16, 16]), torch.Size([2, 32, 1, 16, 16]), 'moving-digits')
    """
    log = log or _stderr
    if config.videos is not None:
        return _load_videos(config, log, videos_name)
    from flexframe.data import make_moving_digits

    def clips(count: int, seed: int, split: str) -> Tensor:
        return make_moving_digits(
            count,
            num_frames=config.num_frames,
            image_size=config.image_size,
            num_digits=config.num_digits,
            digit_size=min(12, config.image_size // 2),
            seed=seed,
            split=split,
        )

    train = clips(config.num_clips_train, config.data_seed, "train")
    test = clips(config.num_clips_test, config.data_seed + 1, "test")
    description = (
        f"moving digits: {len(train)} train and {len(test)} held-out clips of "
        f"{config.num_frames} frames at {config.image_size}x{config.image_size}"
    )
    return AblationData(train, test, "moving-digits", description)
