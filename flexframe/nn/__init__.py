"""The decoder stack: attention over flexframe masks, frame positions, and the layers."""

from flexframe.nn.attention import (
    Attention,
    choose_backend,
    compiled_flex_attention,
    default_kernel_options,
    dense_from_block_mask,
    flash_available,
    resolve_mask,
)
from flexframe.nn.decoder import DecoderLayer, FlexFrameDecoder
from flexframe.nn.positions import FramePositions, FrameRotaryEmbedding

__all__ = [
    "Attention",
    "DecoderLayer",
    "FlexFrameDecoder",
    "FramePositions",
    "FrameRotaryEmbedding",
    "choose_backend",
    "compiled_flex_attention",
    "default_kernel_options",
    "dense_from_block_mask",
    "flash_available",
    "resolve_mask",
]
