"""Vision towers for the targets: a frozen copy of the caller's tower, or plain pixel patches.

Two kinds: a *frame* tower maps frames ``[N, C, H, W]`` to ``[N, P, E]`` (:class:`FrozenTower`,
:class:`PixelPatchTower`); a *clip* tower maps clips ``[N, T, C, H, W]`` to the features of the
model's frames ``[N, F, P, E]``, for encoders that put several raw frames in one frame (Qwen2-VL's
temporal patches: :class:`FrozenClipTower`). Both take float frames in ``[0, 1]``
(:func:`check_video_frames`).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from flexframe._checks import check_int


def check_video_frames(video: torch.Tensor, name: str = "video_frames") -> None:
    """Refuse integer or non-finite video; warn when float frames leave ``[0, 1]``.

    The towers expect float frames in ``[0, 1]``: 0-255 video would give targets hundreds of
    times larger (and a loss 1e5 times larger), so integer video is refused rather than guessed
    at, and float frames outside ``[0, 1]`` get a ``UserWarning``.

    Example:
        >>> check_video_frames(torch.zeros(1, 2, 3, 4, 4, dtype=torch.uint8))
        Traceback (most recent call last):
        ...
        TypeError: video_frames are torch.uint8: give float frames in [0, 1] ...
    """
    if not video.is_floating_point():
        raise TypeError(
            f"{name} are {video.dtype}: give float frames in [0, 1] (0-255 video: "
            f"{name}.float() / 255); integer video is refused, not rescaled"
        )
    if video.numel() == 0:
        return
    low, high = (float(v) for v in torch.aminmax(video.detach()))
    if not (torch.isfinite(torch.tensor([low, high])).all()):
        raise ValueError(f"{name} hold NaN or infinite values (range [{low}, {high}])")
    if low < 0.0 or high > 1.0:
        warnings.warn(
            f"{name} hold values in [{low:.4g}, {high:.4g}], outside [0, 1]: the towers expect "
            "float frames in [0, 1] (0-255 video divided by 255); other scales give targets on "
            "another scale",
            UserWarning,
            stacklevel=3,
        )


class PixelPatchTower(nn.Module):
    """Pixel patches as features: ``[N, C, H, W]`` -> ``[N, (H/p)*(W/p), p*p*C]``, scaled to
    ``[-1, 1]`` from ``[0, 1]`` pixels. Lets the loss run with no pretrained encoder.

    Example:
        >>> PixelPatchTower(patch_size=4)(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 4, 48])
    """

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = check_int("patch_size", patch_size, minimum=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() != 4:
            raise ValueError(f"frames must be [N, C, H, W], got shape {tuple(frames.shape)}")
        n, c, h, w = frames.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(
                f"frame size {h}x{w} is not a multiple of the pixels tower's patch_size={p}"
            )
        patches = frames.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return patches.reshape(n, (h // p) * (w // p), p * p * c) * 2.0 - 1.0


class FrozenTower(nn.Module):
    """A frozen copy of a vision tower: never trained, never given a gradient, always in eval.

    The caller's tower is deep-copied, so neither its parameters nor its ``requires_grad`` flags
    change. Output ``[N, P, E]`` or an object with ``last_hidden_state`` of that shape.

    Example:
        >>> tower = nn.Sequential(nn.Flatten(2), nn.Linear(4, 3))  # [N, C, 2, 2] -> [N, C, 3]
        >>> frozen = FrozenTower(tower)
        >>> frozen(torch.rand(5, 2, 2, 2)).shape, frozen.tower[1].weight.requires_grad
        (torch.Size([5, 2, 3]), False)
    """

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        if not isinstance(tower, nn.Module):
            raise TypeError(f"vision_tower must be an nn.Module or 'pixels', got {tower!r}")
        self.tower = copy.deepcopy(tower)
        self.tower.requires_grad_(False)
        self.tower.eval()

    def train(self, mode: bool = True) -> FrozenTower:
        # Stay in eval: a BatchNorm's running statistics would otherwise drift under no_grad.
        super().train(mode)
        self.tower.eval()
        return self

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        out = self.tower(frames)
        out = getattr(out, "last_hidden_state", out)
        if not isinstance(out, torch.Tensor) or out.dim() != 3:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the vision tower must return [N, P, E] features, got {shape}")
        return out.detach()


class FrozenClipTower(nn.Module):
    """A frozen copy of a clip encoder: ``[N, T, C, H, W]`` -> ``[N, F, P, E]``.

    ``raw_frames_per_frame`` raw frames make one of the model's frames (Qwen2-VL's temporal
    patch: 2), so ``F = ceil(T / raw_frames_per_frame)``; the output is checked against it.

    Example:
        >>> class Pairs(nn.Module):  # two raw frames a frame, one token of their mean pixel
        ...     def forward(self, clip):
        ...         return clip.unflatten(1, (-1, 2)).mean((2, 3, 4, 5))[..., None, None]
        >>> FrozenClipTower(Pairs(), raw_frames_per_frame=2)(torch.rand(1, 4, 3, 2, 2)).shape
        torch.Size([1, 2, 1, 1])
    """

    def __init__(self, encoder: nn.Module, raw_frames_per_frame: int = 1) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"the clip encoder must be an nn.Module, got {encoder!r}")
        self.encoder = copy.deepcopy(encoder)
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        self.raw_frames_per_frame = check_int(
            "raw_frames_per_frame", raw_frames_per_frame, minimum=1
        )

    def train(self, mode: bool = True) -> FrozenClipTower:
        super().train(mode)
        self.encoder.eval()
        return self

    def frames_of(self, raw_frames: int) -> int:
        """The model's frames in a clip of ``raw_frames`` raw frames."""
        return -(-raw_frames // self.raw_frames_per_frame)

    @torch.no_grad()
    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if not isinstance(clips, torch.Tensor) or clips.dim() != 5:
            shape = tuple(clips.shape) if isinstance(clips, torch.Tensor) else None
            raise ValueError(f"clips must be [N, T, C, H, W], got shape {shape}")
        out = self.encoder(clips)
        want = (clips.shape[0], self.frames_of(clips.shape[1]))
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or tuple(out.shape[:2]) != want:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the clip encoder must return [N, F, P, E] with [N, F] = {list(want)}, got {got}"
            )
        return out.detach()


def make_tower(vision_tower: nn.Module | str, patch_size: int) -> FrozenTower:
    """``"pixels"`` or any ``nn.Module``, frozen."""
    if isinstance(vision_tower, str):
        if vision_tower != "pixels":
            raise ValueError(f"vision_tower must be an nn.Module or 'pixels', got {vision_tower!r}")
        return FrozenTower(PixelPatchTower(patch_size))
    return FrozenTower(vision_tower)
