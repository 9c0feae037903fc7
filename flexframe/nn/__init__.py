"""The decoder stack: frame positions, attention over flexframe masks, the layers.

``config`` (the settings), ``kernels`` (which attention and which flex_attention kernel run),
``positions`` (frame rotary embeddings), ``attention``, ``decoder``, and the frame KV cache for
generating chunk by chunk under the training mask: ``streaming`` (the design, which masks
stream), ``cache`` (``FrameKVCache``), ``cache_step`` and ``graphs`` (its CUDA graphs).
"""

from flexframe.nn.attention import Attention, resolve_mask
from flexframe.nn.cache import FrameKVCache
from flexframe.nn.cache_step import CacheStep, LayerStep, StepMask
from flexframe.nn.config import DecoderConfig
from flexframe.nn.decoder import DecoderLayer, FlexFrameDecoder
from flexframe.nn.graphs import StepGraphs
from flexframe.nn.kernels import (
    KERNELS,
    Hardware,
    KernelPolicy,
    compiled_flex_attention,
    decoding_kernel_fails,
    default_kernel_options,
    flash_available,
    flash_would_ignore_blocks,
    resolve_backend,
)
from flexframe.nn.positions import FramePositions, FrameRotaryEmbedding
from flexframe.nn.streaming import STREAMING_MASKS, StreamingRule, streaming_rule

__all__ = [
    "KERNELS",
    "STREAMING_MASKS",
    "Attention",
    "CacheStep",
    "DecoderConfig",
    "DecoderLayer",
    "FlexFrameDecoder",
    "FrameKVCache",
    "FramePositions",
    "FrameRotaryEmbedding",
    "Hardware",
    "KernelPolicy",
    "LayerStep",
    "StepGraphs",
    "StepMask",
    "StreamingRule",
    "compiled_flex_attention",
    "decoding_kernel_fails",
    "default_kernel_options",
    "flash_available",
    "flash_would_ignore_blocks",
    "resolve_backend",
    "resolve_mask",
    "streaming_rule",
]
