"""Camera-like clips where no camera clip is at hand: a handheld pan and zoom over a scene.

The ablation's tests and README use them as "real" video: consecutive frames are nearly equal,
as in camera footage, so copying the last frame is a strong baseline, and beating it takes a
model that learned the motion. Write them with :func:`flexframe.data.write_video` and read them
back with ``flexframe ablate --videos``.

Example:
    >>> from flexframe.data import write_video
    >>> _ = write_video("pan.mp4", synthetic_camera_frames(12, size=32, seed=0))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flexframe._checks import check_int

__all__ = ["synthetic_camera_frames"]


def _scene(side: int, channels: int, generator: torch.Generator) -> Tensor:
    """``[C, side, side]`` in [0, 1]: 1/f noise (mostly luminance) under flat-coloured discs and
    boxes with sharp edges, the statistics of a natural scene in rough outline."""
    fy = torch.fft.fftfreq(side).view(-1, 1)
    fx = torch.fft.rfftfreq(side).view(1, -1)
    shape = (channels, side, side // 2 + 1)
    spectrum = torch.complex(torch.randn(shape, generator=generator),
                             torch.randn(shape, generator=generator))  # fmt: skip
    amplitude = (fx**2 + fy**2).sqrt().clamp(min=1.0 / side) ** -1.2
    noise = torch.fft.irfft2(spectrum * amplitude, s=(side, side))
    noise = noise / noise.std(dim=(1, 2), keepdim=True)
    scene = noise[:1] + 0.35 * noise  # mostly luminance, some colour
    for _ in range(12):
        colour = (torch.rand(channels, 1, 1, generator=generator) - 0.5) * 3
        y0, x0 = torch.randint(0, side, (2,), generator=generator).tolist()
        r = int(torch.randint(side // 24, side // 8, (1,), generator=generator))
        disc = float(torch.rand(1, generator=generator)) < 0.5
        top, left = max(0, y0 - r), max(0, x0 - int(1.6 * r))
        yy = torch.arange(top, min(side, y0 + r + 1)).view(-1, 1) - y0
        xx = torch.arange(left, min(side, x0 + int(1.6 * r) + 1)).view(1, -1) - x0
        inside = yy**2 + xx**2 < r * r if disc else (yy.abs() < r) & (xx.abs() < int(1.6 * r))
        box = scene[:, top : top + yy.shape[0], left : left + xx.shape[1]]
        box.copy_(torch.where(inside, colour + 0.3 * box, box))
    return ((scene - scene.mean()) / scene.std() * 0.2 + 0.5).clamp(0.0, 1.0)


def synthetic_camera_frames(
    num_frames: int,
    size: int = 64,
    *,
    seed: int = 0,
    channels: int = 3,
    speed: float = 1.0,
    noise: float = 0.01,
) -> Tensor:
    """Camera-like frames ``[T, C, size, size]`` float32 in [0, 1]: a handheld pan and zoom.

    A textured scene (1/f noise under sharp-edged shapes) is filmed by a camera whose velocity
    and zoom rate drift smoothly (each an autoregressive process), sampled bilinearly, with
    Gaussian sensor noise. Consecutive frames are nearly equal, as in real video, so copying
    the last frame is a strong baseline; what beats it has learned the motion. The same
    ``seed`` gives the same frames. Written with :func:`write_video`, they stand in for camera
    clips where none are at hand.

    Args:
        num_frames: frames ``T``.
        size: frame height and width.
        seed: the scene and the camera path.
        channels: 3 (RGB) or 1.
        speed: scales the camera's motion (1: about a quarter pixel a frame at ``size=32``).
        noise: standard deviation of the sensor noise, in [0, 1] pixel units.

    Example:
        >>> frames = synthetic_camera_frames(16, size=32, seed=1)
        >>> frames.shape, 0.0 <= float(frames.min()) <= float(frames.max()) <= 1.0
        (torch.Size([16, 3, 32, 32]), True)
        >>> near = (frames[1:] - frames[:-1]).abs().mean()    # consecutive frames
        >>> far = (frames[8:] - frames[:-8]).abs().mean()     # eight frames apart
        >>> bool(near < far)
        True
    """
    num_frames = check_int("num_frames", num_frames, minimum=1)
    size = check_int("size", size, minimum=2)
    channels = check_int("channels", channels, minimum=1)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    generator = torch.Generator().manual_seed(check_int("seed", seed))
    scene = _scene(512, channels, generator)
    position = (torch.rand(2, generator=generator) - 0.5) * 0.5
    velocity = torch.randn(2, generator=generator) * 0.003 * speed
    log_zoom, zoom_rate = 0.0, 0.0
    axis = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    frames = []
    for _ in range(num_frames):
        velocity = 0.97 * velocity + 0.0006 * speed * torch.randn(2, generator=generator)
        zoom_rate = 0.95 * zoom_rate + 0.001 * float(torch.randn(1, generator=generator))
        position = (position + velocity).clamp(-0.6, 0.6)
        log_zoom = max(-0.5, min(0.5, log_zoom + zoom_rate))
        view = 0.2 * math.exp(log_zoom)  # the frame spans a tenth of the scene, zoomed
        grid = torch.stack([xx * view + position[0], yy * view + position[1]], dim=-1)[None]
        frame = F.grid_sample(scene[None], grid, mode="bilinear", padding_mode="reflection",
                              align_corners=False)[0]  # fmt: skip
        frame = frame + noise * torch.randn(frame.shape, generator=generator)
        frames.append(frame.clamp(0.0, 1.0))
    return torch.stack(frames)
