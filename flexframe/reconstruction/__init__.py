"""The autoregressive next-frame reconstruction loss for video LLMs (leak-free)."""

from flexframe.reconstruction.config import AutoregressiveReconstructionConfig
from flexframe.reconstruction.layout import FrameLayout
from flexframe.reconstruction.module import (
    AutoregressiveReconstructionModule,
    ReconstructionOutputs,
    create_autoregressive_reconstruction_module,
    pool_tokens,
)
from flexframe.reconstruction.towers import FrozenTower, PixelPatchTower

__all__ = [
    "AutoregressiveReconstructionConfig",
    "AutoregressiveReconstructionModule",
    "FrameLayout",
    "FrozenTower",
    "PixelPatchTower",
    "ReconstructionOutputs",
    "create_autoregressive_reconstruction_module",
    "pool_tokens",
]
