"""Training data: moving handwritten digits (built in, no download) and real video files.

:class:`MovingDigits` builds Moving MNIST-style clips from digit images bundled with flexframe;
:class:`VideoClips` and :func:`read_video_frames` decode video files with
PyAV (``pip install "flexframe[video]"``). Both give ``[T, C, H, W]`` float32 clips in [0, 1].

Example:
    >>> from flexframe.data import MovingDigits
    >>> MovingDigits(2, num_frames=32)[0].shape
    torch.Size([32, 1, 32, 32])
"""

from .moving_digits import SPLITS, DigitMotion, MovingDigits, make_moving_digits
from .video import (
    VIDEO_EXTENSIONS,
    VideoClips,
    VideoReadError,
    count_video_frames,
    expand_video_paths,
    read_video_frames,
    write_video,
)

__all__ = [
    "SPLITS",
    "VIDEO_EXTENSIONS",
    "DigitMotion",
    "MovingDigits",
    "VideoClips",
    "VideoReadError",
    "count_video_frames",
    "expand_video_paths",
    "make_moving_digits",
    "read_video_frames",
    "write_video",
]
