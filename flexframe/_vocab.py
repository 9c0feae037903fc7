"""flexframe's vocabulary: every enumeration and shared default, defined once.

Every module that takes one of these values imports it from here, so a choice is spelled, checked
and documented in one place. Which ``"auto"`` means what is said once too:

- ``attention_backend="auto"``: ``flex`` on a CUDA device, ``sdpa`` on the CPU (FlexAttention
  has no backward pass on the CPU, and its CPU kernel takes tens of seconds to compile);
- ``device="auto"`` (or ``None``): the current CUDA device when torch sees one, else the CPU;
- ``fast_slow_preset="auto"``: the seed design's preset for the clip length;
- ``parallel="auto"``: FSDP2 on GPUs, DDP on the CPU;
- ``builder="auto"``: the closed-form BlockMask builder when a mask has one, else torch's.
"""

from __future__ import annotations

from typing import Literal

MergeStrategy = Literal["concat", "interleave"]
MERGE_STRATEGIES: tuple[str, ...] = ("concat", "interleave")
"""How fast and slow frames are merged: ``[slow | fast]`` or alternating."""

LossType = Literal["mse", "smooth_l1", "cosine"]
LOSS_TYPES: tuple[str, ...] = ("mse", "smooth_l1", "cosine")
"""Training losses of the reconstruction module (held-out errors are always MSE)."""

Backend = Literal["auto", "flex", "sdpa"]
ATTENTION_BACKENDS: tuple[str, ...] = ("auto", "flex", "sdpa")
"""Attention backends; ``auto`` is flex on CUDA, sdpa on the CPU."""

WithinFrame = Literal["full", "causal"]
WITHIN_FRAME: tuple[str, ...] = ("full", "causal")
"""How tokens of one frame (one timestamp) see each other: all of them, or in token order."""

PRESET_NAMES: tuple[str, ...] = ("short", "medium", "long")
"""The seed design's fast/slow presets."""

PARALLEL_MODES: tuple[str, ...] = ("auto", "fsdp", "ddp")
"""How the ablation trains under torchrun."""

Builder = Literal["auto", "closed-form", "create_block_mask"]
BUILDERS: tuple[str, ...] = ("auto", "closed-form", "create_block_mask")
"""BlockMask builders."""

DEFAULT_BLOCK_SIZE = 128
"""FlexAttention's block size, the default everywhere a block size is asked for."""

DEFAULT_FAST_STRIDE = 1
DEFAULT_SLOW_STRIDE = 4
DEFAULT_NUM_FAST = 8
DEFAULT_NUM_SLOW = 8
FAST_SLOW_KEYS: tuple[str, ...] = ("fast_stride", "slow_stride", "num_fast", "num_slow")
"""The four numbers of a fast/slow sampling, in the order the sampler takes them."""
FAST_SLOW_DEFAULTS: dict[str, int] = {
    "fast_stride": DEFAULT_FAST_STRIDE,
    "slow_stride": DEFAULT_SLOW_STRIDE,
    "num_fast": DEFAULT_NUM_FAST,
    "num_slow": DEFAULT_NUM_SLOW,
}
