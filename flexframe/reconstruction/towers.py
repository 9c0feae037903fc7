"""Vision towers for the targets: a frozen copy of the caller's tower, or plain pixel patches."""

from __future__ import annotations

import copy

import torch
from torch import nn

from flexframe._checks import check_int


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


def make_tower(vision_tower: nn.Module | str, patch_size: int) -> FrozenTower:
    """``"pixels"`` or any ``nn.Module``, frozen."""
    if isinstance(vision_tower, str):
        if vision_tower != "pixels":
            raise ValueError(f"vision_tower must be an nn.Module or 'pixels', got {vision_tower!r}")
        return FrozenTower(PixelPatchTower(patch_size))
    return FrozenTower(vision_tower)
