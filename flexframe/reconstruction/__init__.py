"""The autoregressive next-frame reconstruction loss for video LLMs (leak-free)."""

from flexframe.reconstruction.config import AutoregressiveReconstructionConfig
from flexframe.reconstruction.layout import FrameLayout
from flexframe.reconstruction.module import (
    AutoregressiveReconstructionModule,
    ReconstructionOutputs,
    create_autoregressive_reconstruction_module,
    pool_tokens,
)
from flexframe.reconstruction.towers import (
    FrozenClipTower,
    FrozenTower,
    PixelPatchTower,
    check_video_frames,
)

__all__ = [
    "AutoregressiveReconstructionConfig",
    "AutoregressiveReconstructionModule",
    "FrameLayout",
    "FrozenClipTower",
    "FrozenTower",
    "PixelPatchTower",
    "ReconstructionOutputs",
    "check_video_frames",
    "create_autoregressive_reconstruction_module",
    "pool_tokens",
]
