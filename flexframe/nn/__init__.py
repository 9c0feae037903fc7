"""The decoder stack: frame positions, attention over flexframe masks, the layers.

``config`` (the settings), ``kernels`` (which attention and which flex_attention kernel run),
``positions`` (frame rotary embeddings), ``attention`` and ``decoder``.
"""

from flexframe.nn.attention import Attention, resolve_mask
from flexframe.nn.config import DecoderConfig
from flexframe.nn.decoder import DecoderLayer, FlexFrameDecoder
from flexframe.nn.kernels import (
    KERNELS,
    Hardware,
    KernelPolicy,
    compiled_flex_attention,
    default_kernel_options,
    flash_available,
    resolve_backend,
)
from flexframe.nn.positions import FramePositions, FrameRotaryEmbedding

__all__ = [
    "KERNELS",
    "Attention",
    "DecoderConfig",
    "DecoderLayer",
    "FlexFrameDecoder",
    "FramePositions",
    "FrameRotaryEmbedding",
    "Hardware",
    "KernelPolicy",
    "compiled_flex_attention",
    "default_kernel_options",
    "flash_available",
    "resolve_backend",
    "resolve_mask",
]
