"""Real videos as training clips: decode with PyAV, crop and resize to the model's resolution.

PyAV is an optional dependency (``pip install "flexframe[video]"``); it is imported only when a
function here is called, so ``import flexframe`` works without it.

Reading rules, shared by :func:`read_video_frames` and :class:`VideoClips`:

- frames are decoded in order from frame 0 and decoding stops at the largest requested index
  (no seeking, so indices are exact frame numbers in decode order);
- each frame is center-cropped to the target aspect ratio (a square for ``size=32``), keeping
  the pixel aspect, then resized with ``bilinear`` interpolation and ``antialias=True``; the
  result is ``[T, C, H, W]`` float32 in [0, 1] with ``C = 3`` (RGB) or ``C = 1``
  (``grayscale``: ``0.299 R + 0.587 G + 0.114 B``);
- a file that cannot be opened or decoded raises :class:`VideoReadError` naming it.

Example:
    >>> import torch
    >>> ramp = torch.linspace(0, 1, 12).view(12, 1, 1, 1).expand(12, 3, 32, 48)
    >>> path = write_video("ramp.mp4", ramp, fps=8)      # frame t has brightness t / 11
    >>> count_video_frames(path)
    12
    >>> clip = read_video_frames(path, [11, 0, 5], size=16, grayscale=True)
    >>> clip.shape
    torch.Size([3, 1, 16, 16])
    >>> [round(v, 1) for v in clip.mean(dim=(1, 2, 3)).tolist()]
    [1.0, 0.0, 0.5]
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .._checks import check_int, check_int_sequence

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoClips",
    "VideoReadError",
    "count_video_frames",
    "expand_video_paths",
    "read_video_frames",
    "write_video",
]

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4",
    ".m4v",
    ".mov",
    ".webm",
    ".mkv",
    ".avi",
    ".mpg",
    ".mpeg",
    ".ts",
    ".ogv",
    ".flv",
    ".wmv",
    ".gif",
)
"""File extensions (lower case) that a directory given to :func:`expand_video_paths` yields."""

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma


class VideoReadError(RuntimeError):
    """A video file could not be opened or decoded.

    Attributes:
        path: The file, as given.
        reason: What went wrong, without the file name.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise ImportError(
            'reading and writing videos needs PyAV: pip install "flexframe[video]" '
            "(or pip install av)"
        ) from exc
    return av


def _existing_file(path: object, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {path!r}")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{name}: no such file: '{path}'")
    if not p.is_file():
        raise ValueError(f"{name} must be a file, got the directory '{path}'")
    return p


def _check_size(size: object) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"size must be an int or an (H, W) pair, got {size!r}")
        return check_int("size[0]", size[0], minimum=1), check_int("size[1]", size[1], minimum=1)
    side = check_int("size", size, minimum=1)
    return side, side


def _open(av: Any, path: Path, mode: str = "r") -> Any:
    try:
        return av.open(str(path), mode)
    except av.FFmpegError as exc:
        raise VideoReadError(path, f"cannot open ({exc})") from exc


def _video_stream(container: Any, path: Path) -> Any:
    if not container.streams.video:
        raise VideoReadError(path, "has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _crop_resize(frame: Tensor, out_hw: tuple[int, int] | None) -> Tensor:
    """``[C, H, W]`` -> ``[C, h, w]``: center-crop to the aspect ``h / w``, then resize."""
    if out_hw is None:
        return frame
    height, width = frame.shape[-2:]
    out_h, out_w = out_hw
    # Largest centered window with aspect out_h / out_w (integer cross-multiplication).
    if height * out_w > width * out_h:
        crop_h, crop_w = max(1, round(width * out_h / out_w)), width
    else:
        crop_h, crop_w = height, max(1, round(height * out_w / out_h))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    frame = frame[:, top : top + crop_h, left : left + crop_w]
    if (crop_h, crop_w) == (out_h, out_w):
        return frame
    resized = F.interpolate(
        frame[None], size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=True
    )[0]
    # The filter weights are non-negative and sum to 1; clamp only float rounding.
    return resized.clamp_(0.0, 1.0)


def _to_tensor(rgb: Any, grayscale: bool) -> Tensor:
    """``[H, W, 3]`` uint8 array -> ``[C, H, W]`` float32 in [0, 1]."""
    frame = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
    if grayscale:
        weights = torch.tensor(_GRAY_WEIGHTS).view(3, 1, 1)
        frame = (frame * weights).sum(dim=0, keepdim=True).clamp_(0.0, 1.0)
    return frame


def read_video_frames(
    path: str | os.PathLike,
    frame_indices: Sequence[int] | Tensor | None = None,
    size: int | tuple[int, int] | None = 32,
    grayscale: bool = False,
) -> Tensor:
    """Decode the requested frames of a video file as ``[T, C, H, W]`` float32 in [0, 1].

    Frames are decoded from the start and decoding stops at the largest requested index. Each
    frame is center-cropped to the aspect of ``size`` and resized (bilinear, antialiased).

    Args:
        path: The video file.
        frame_indices: Frame numbers to return, in the order to return them; may repeat and be
            unsorted. ``None`` returns every frame.
        size: Output ``H = W`` (int), ``(H, W)``, or ``None`` to keep the decoded resolution
            without cropping.
        grayscale: Return one luma channel (``C = 1``) instead of RGB (``C = 3``).

    Returns:
        ``[len(frame_indices), C, H, W]`` float32 in [0, 1].

    Raises:
        FileNotFoundError: ``path`` does not exist.
        VideoReadError: The file cannot be opened or decoded, or has no video stream.
        IndexError: A requested index is past the last decodable frame.
        ImportError: PyAV is not installed.

    Example:
        >>> import torch
        >>> frames = torch.zeros(4, 3, 8, 8)
        >>> frames[2] = 1.0                                   # only frame 2 is white
        >>> path = write_video("white2.mp4", frames)
        >>> clip = read_video_frames(path, [2, 0, 2], size=4)
        >>> clip.shape
        torch.Size([3, 3, 4, 4])
        >>> [round(v, 1) for v in clip.mean(dim=(1, 2, 3)).tolist()]
        [1.0, 0.0, 1.0]
    """
    p = _existing_file(path)
    indices = None
    if frame_indices is not None:
        indices = check_int_sequence("frame_indices", frame_indices, minimum=0)
    out_hw = _check_size(size)
    av = _import_av()
    wanted = None if indices is None else set(indices)
    last = None if indices is None else max(indices)
    decoded: dict[int, Tensor] = {}
    num_decoded = 0
    with _open(av, p) as container:
        stream = _video_stream(container, p)
        try:
            for i, frame in enumerate(container.decode(stream)):
                num_decoded = i + 1
                if wanted is None or i in wanted:
                    rgb = frame.to_ndarray(format="rgb24")
                    decoded[i] = _crop_resize(_to_tensor(rgb, grayscale), out_hw)
                if last is not None and i >= last:
                    break
        except av.FFmpegError as exc:
            raise VideoReadError(p, f"cannot decode frame {num_decoded} ({exc})") from exc
    if num_decoded == 0:
        raise VideoReadError(p, "has no decodable frames")
    if indices is None:
        indices = tuple(range(num_decoded))
    elif last is not None and last >= num_decoded:
        raise IndexError(
            f"frame_indices asks for frame {last}, but '{path}' has only {num_decoded} "
            f"decodable frames (0..{num_decoded - 1})"
        )
    shapes = {tuple(decoded[i].shape) for i in decoded}
    if len(shapes) > 1:
        raise VideoReadError(p, f"frame size changes within the video {sorted(shapes)}; pass size")
    return torch.stack([decoded[i] for i in indices])


def count_video_frames(path: str | os.PathLike, exact: bool = False) -> int:
    """Number of frames in a video: the container's count, or a full decode when there is none.

    The container's count (``stream.frames``) is free but can overstate what decodes from a
    damaged file; ``exact=True`` always decodes every frame and counts them.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        VideoReadError: The file cannot be opened or decoded, or has no video stream.

    Example:
        >>> import torch
        >>> path = write_video("five.mp4", torch.zeros(5, 3, 8, 8))
        >>> count_video_frames(path), count_video_frames(path, exact=True)
        (5, 5)
    """
    p = _existing_file(path)
    av = _import_av()
    with _open(av, p) as container:
        stream = _video_stream(container, p)
        if stream.frames > 0 and not exact:
            return int(stream.frames)
        count = 0
        try:
            for _ in container.decode(stream):
                count += 1
        except av.FFmpegError as exc:
            raise VideoReadError(p, f"cannot decode frame {count} ({exc})") from exc
        return count


def _encoder_available(av: Any, name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # UnknownCodecError and friends differ across PyAV versions
        return False
    return True


def _default_codec(av: Any, suffix: str) -> tuple[str, dict[str, str]]:
    # High-quality settings: test videos and demo data should decode close to what was written.
    if suffix == ".webm":
        choices = [("libvpx-vp9", {"crf": "10", "b": "0"}), ("libvpx", {"crf": "4", "b": "1M"})]
    else:
        choices = [("libx264", {"crf": "12"}), ("mpeg4", {"qmax": "3"})]
    for name, options in choices:
        if _encoder_available(av, name):
            return name, options
    names = " or ".join(name for name, _ in choices)
    raise ValueError(f"this PyAV build has no {names} encoder for '{suffix}' files; pass codec")


def write_video(
    path: str | os.PathLike,
    frames: Tensor,
    fps: int = 8,
    codec: str | None = None,
    options: Mapping[str, str] | None = None,
) -> Path:
    """Write ``[T, C, H, W]`` frames in [0, 1] (``C`` 1 or 3) to a video file with PyAV.

    The container comes from the file extension. The default codec is ``libx264`` (``crf=12``,
    falling back to ``mpeg4``), or ``libvpx-vp9`` for ``.webm``; pixels are stored as yuv420p,
    so ``H`` and ``W`` must be even and colours are slightly lossy.

    Args:
        path: Output file; its folder must exist. An existing file is overwritten.
        frames: ``[T, C, H, W]`` float tensor with values in [0, 1], ``T >= 1``.
        fps: Frames per second.
        codec: Encoder name (see ``av.codecs_available``); ``None`` picks the default above.
        options: Encoder options; with ``codec=None`` they replace the default ones.

    Returns:
        The path written, as a ``Path``.

    Example:
        >>> import torch
        >>> write_video("gray.mp4", torch.full((3, 1, 16, 16), 0.5)).name
        'gray.mp4'
        >>> write_video("odd.mp4", torch.zeros(3, 1, 15, 16))
        Traceback (most recent call last):
        ...
        ValueError: frames height and width must be even for yuv420p video, got H=15, W=16; ...
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {path!r}")
    p = Path(path).expanduser()
    if not p.parent.is_dir():
        raise FileNotFoundError(f"path: the folder '{p.parent}' does not exist")
    if not isinstance(frames, Tensor) or frames.dim() != 4 or frames.shape[1] not in (1, 3):
        shape = list(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a [T, C, H, W] tensor with C in (1, 3), got {shape}")
    num_frames, _, height, width = frames.shape
    if min(num_frames, height, width) < 1:
        raise ValueError(f"frames must not be empty, got shape {list(frames.shape)}")
    if not frames.dtype.is_floating_point:
        raise TypeError(f"frames must be a float tensor in [0, 1], got dtype {frames.dtype}")
    if height % 2 or width % 2:
        raise ValueError(
            f"frames height and width must be even for yuv420p video, got H={height}, W={width}; "
            f"pad with torch.nn.functional.pad(frames, (0, {width % 2}, 0, {height % 2}))"
        )
    lo, hi = float(frames.min()), float(frames.max())
    if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
        raise ValueError(f"frames must lie in [0, 1], got values from {lo} to {hi}")
    fps = check_int("fps", fps, minimum=1)
    av = _import_av()
    if codec is None:
        codec, default_options = _default_codec(av, p.suffix.lower())
        options = default_options if options is None else options
    pixels = (frames.detach().cpu().float().expand(-1, 3, -1, -1) * 255.0).round_()
    rgb = pixels.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()  # [T, H, W, 3]
    with _open(av, p, "w") as container:
        try:
            stream = container.add_stream(codec, rate=fps, options=dict(options or {}))
        except (av.FFmpegError, ValueError) as exc:
            raise ValueError(f"codec {codec!r} cannot write '{path}' ({exc})") from exc
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for image in rgb:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush frames the encoder still holds
    return p


def _has_glob_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def expand_video_paths(
    paths: str | os.PathLike | Sequence[str | os.PathLike], *, name: str = "paths"
) -> list[Path]:
    """Expand files, globs and directories into a sorted-per-entry list of distinct files.

    Each entry is, in this order of precedence: an existing file (kept whatever its
    extension); an existing directory (every file below it, recursively, whose extension is in
    :data:`VIDEO_EXTENSIONS`); or a glob pattern (``*``, ``?``, ``[...]``, ``**`` recursive).
    Files keep the order of the entries, each entry's matches sorted; duplicates are dropped.

    Args:
        paths: Files, directories or globs.
        name: What error messages call ``paths``: a caller that takes them under its own name
            (a setting ``videos``, a flag ``--videos``) passes that name.

    Raises:
        FileNotFoundError: An entry is neither an existing path nor a pattern that matches a
            file; the message names it.
        ValueError: A directory holds no video file, or ``paths`` is empty.

    Example:
        >>> import torch
        >>> Path("found").mkdir(exist_ok=True)
        >>> for name in ("b.mp4", "a.mp4", "notes.txt"):
        ...     _ = write_video(f"found/{name}", torch.zeros(2, 3, 8, 8)) if name.endswith(
        ...         "mp4") else Path(f"found/{name}").write_text("not a video")
        >>> [str(p) for p in expand_video_paths("found/*.mp4")]
        ['found/a.mp4', 'found/b.mp4']
        >>> [p.name for p in expand_video_paths("found")]      # a folder: video extensions only
        ['a.mp4', 'b.mp4']
        >>> expand_video_paths("clips/*.mp4")
        Traceback (most recent call last):
        ...
        FileNotFoundError: paths: the pattern 'clips/*.mp4' matches no file
        >>> expand_video_paths("clips/*.mp4", name="--videos")
        Traceback (most recent call last):
        ...
        FileNotFoundError: --videos: the pattern 'clips/*.mp4' matches no file
    """
    if isinstance(paths, (str, os.PathLike)):
        entries = [paths]
    elif isinstance(paths, Sequence):
        entries = list(paths)
    else:
        raise TypeError(f"{name} must be a path, a glob or a sequence of them, got {paths!r}")
    if not entries:
        raise ValueError(f"{name} must name at least one file, directory or glob, got []")
    found: list[Path] = []
    for entry in entries:
        if not isinstance(entry, (str, os.PathLike)):
            raise TypeError(f"{name} entries must be str or os.PathLike, got {entry!r}")
        text = os.path.expanduser(os.fspath(entry))
        p = Path(text)
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            videos = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
            )
            if not videos:
                raise ValueError(
                    f"{name}: the directory '{entry}' holds no file with a video extension "
                    f"({', '.join(VIDEO_EXTENSIONS)})"
                )
            found.extend(videos)
        elif _has_glob_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                raise FileNotFoundError(f"{name}: the pattern '{entry}' matches no file")
            found.extend(matches)
        else:
            raise FileNotFoundError(f"{name}: no such file or directory: '{entry}'")
    return list(dict.fromkeys(found))


class VideoClips(Dataset):
    """One clip per usable video file, ``[T, C, H, W]`` float32 in [0, 1].

    Files come from :func:`expand_video_paths`. Each is probed once (its frame count, from
    :func:`count_video_frames`); a file that cannot be read or has fewer than ``min_frames``
    frames is skipped with a ``UserWarning`` naming it and the reason, and recorded in
    :attr:`skipped`. If no file is usable, construction raises ``ValueError`` naming the paths.

    The clip of a file with ``n`` frames is made of frames ``frame_indices_fn(n)`` in that
    order, or, by default, its first ``num_frames`` frames (consecutive frames at the file's
    own frame rate; only those are decoded).

    Args:
        paths: Files, directories or globs (see :func:`expand_video_paths`).
        num_frames: Frames per clip with the default indices; also the default ``min_frames``.
        size: Output ``H = W`` (int), ``(H, W)``, or ``None`` for the decoded resolution.
        frame_indices_fn: ``n -> indices`` (a sequence of ints or 1-D integer tensor, each in
            ``0..n - 1``). It is called once per file at construction to check it, then on
            every access.
        min_frames: Files with fewer frames are skipped; default ``num_frames``.
        grayscale: One luma channel instead of RGB.
        exact_count: Count frames by decoding each file instead of trusting the container's
            count (slower, but catches truncated files at construction).
        name: What error messages call ``paths`` (see :func:`expand_video_paths`).

    Attributes:
        paths: The usable files, in order; ``dataset[i]`` reads ``paths[i]``.
        frame_counts: Frames in each usable file.
        skipped: ``(file, reason)`` for each file left out.

    Example:
        >>> import torch, warnings
        >>> Path("videos").mkdir(exist_ok=True)
        >>> _ = write_video("videos/long.mp4", torch.rand(12, 3, 16, 16))
        >>> _ = write_video("videos/short.mp4", torch.rand(3, 3, 16, 16))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     clips = VideoClips("videos/*.mp4", num_frames=8, size=8)
        >>> len(clips), [p.name for p in clips.paths], clips[0].shape
        (1, ['long.mp4'], torch.Size([8, 3, 8, 8]))
        >>> clips.skipped
        [('videos/short.mp4', 'too short: 3 frames, need at least 8')]
        >>> print(caught[0].message)
        skipping video videos/short.mp4: too short: 3 frames, need at least 8
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        num_frames: int,
        size: int | tuple[int, int] | None = 32,
        frame_indices_fn: Callable[[int], Sequence[int] | Tensor] | None = None,
        min_frames: int | None = None,
        grayscale: bool = False,
        exact_count: bool = False,
        *,
        name: str = "paths",
    ) -> None:
        self.num_frames = check_int("num_frames", num_frames, minimum=1)
        self.min_frames = self.num_frames
        if min_frames is not None:
            self.min_frames = check_int("min_frames", min_frames, minimum=1)
        self.size = _check_size(size)
        if frame_indices_fn is not None and not callable(frame_indices_fn):
            raise TypeError(
                f"frame_indices_fn must be callable (n -> indices), got {frame_indices_fn!r}"
            )
        if self.min_frames < self.num_frames and frame_indices_fn is None:
            raise ValueError(
                f"min_frames ({min_frames}) < num_frames ({num_frames}) needs frame_indices_fn: "
                f"the default clip is the first num_frames frames"
            )
        self.frame_indices_fn = frame_indices_fn
        self.grayscale = bool(grayscale)
        self.paths: list[Path] = []
        self.frame_counts: list[int] = []
        self.skipped: list[tuple[str, str]] = []
        candidates = expand_video_paths(paths, name=name)
        for path in candidates:
            try:
                count = count_video_frames(path, exact=exact_count)
            except VideoReadError as exc:
                self._skip(path, f"unreadable: {exc.reason}")
                continue
            if count < self.min_frames:
                self._skip(path, f"too short: {count} frames, need at least {self.min_frames}")
                continue
            self._indices(path, count)  # a bad frame_indices_fn fails here, not mid-training
            self.paths.append(path)
            self.frame_counts.append(count)
        if not self.paths:
            reasons = "; ".join(f"{name}: {reason}" for name, reason in self.skipped[:5])
            more = f" (and {len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
            raise ValueError(
                f"no usable video among the {len(candidates)} file(s) from {name}={paths!r}: "
                f"{reasons}{more}"
            )

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append((str(path), reason))
        warnings.warn(f"skipping video {path}: {reason}", UserWarning, stacklevel=3)

    def _indices(self, path: Path, count: int) -> tuple[int, ...]:
        if self.frame_indices_fn is None:
            return tuple(range(self.num_frames))
        indices = check_int_sequence(
            f"frame_indices_fn({count})", self.frame_indices_fn(count), minimum=0
        )
        if max(indices) >= count:
            raise IndexError(
                f"frame_indices_fn({count}) returned frame {max(indices)} for '{path}', "
                f"which has {count} frames (0..{count - 1})"
            )
        return indices

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        """The clip of ``paths[index]``, ``[T, C, H, W]`` float32 in [0, 1]."""
        path = self.paths[index]
        indices = self._indices(path, self.frame_counts[index])
        return read_video_frames(path, indices, size=self.size, grayscale=self.grayscale)

    def __repr__(self) -> str:
        return (
            f"VideoClips({len(self.paths)} videos used, {len(self.skipped)} skipped, "
            f"num_frames={self.num_frames}, size={self.size})"
        )
