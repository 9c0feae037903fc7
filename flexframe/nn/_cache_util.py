"""Helpers of :class:`~flexframe.nn.cache.FrameKVCache`: buffers, host copies, mask identity,
and the code objects that let compiled step kernels be shared across caches.
"""

from __future__ import annotations

import math
import sys
import types
from typing import Any

import numpy as np
import torch
from torch import nn

from flexframe.masks import MaskSpec
from flexframe.masks.spec import MaskMod
from flexframe.nn.attention import Attention
from flexframe.nn.streaming import StreamingRule

_STEP_CODES: dict[Any, types.CodeType] = {}
"""A code object for each (cache setting, step size) a step's mask_mod ran with in this process:
small, and what lets compiled kernels be shared across caches (see ``_step_mask_mod``)."""


def _with_code(mod: MaskMod, key: Any, family: str) -> MaskMod:
    """``mod`` (a closure) as a function whose code object is the one kept for ``key``."""
    function: Any = mod
    code = _STEP_CODES.get((function.__code__, key))
    if code is None:
        name = f"frame_kv_cache_{family.replace('-', '_')}_{len(_STEP_CODES)}"
        code = function.__code__.replace(co_name=name)
        if sys.version_info >= (3, 11):
            code = code.replace(co_qualname=name)
        _STEP_CODES[(function.__code__, key)] = code
    return types.FunctionType(
        code, function.__globals__, code.co_name, function.__defaults__, function.__closure__
    )


def _progressions(positions: np.ndarray, values: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(first, count, value, step)`` for each maximal run of consecutive ``positions`` whose
    ``values`` stay equal (step 0) or rise by one (step 1), in order.

    Example:
        >>> _progressions(np.array([0, 1, 2, 5, 6]), np.array([7, 8, 9, -1, -1]))
        [(0, 3, 7, 1), (5, 2, -1, 0)]
    """
    runs: list[tuple[int, int, int, int]] = []
    for position, value in zip(positions.tolist(), values.tolist(), strict=True):
        if runs:
            first, count, start, step = runs[-1]
            if position == first + count:
                if count == 1 and value - start in (0, 1):
                    runs[-1] = (first, 2, start, value - start)
                    continue
                if value == start + step * count:
                    runs[-1] = (first, count + 1, start, step)
                    continue
        runs.append((position, 1, value, 0))
    return runs


def _zeros(
    shape: tuple[int, ...], tail: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """A contiguous zero tensor of ``shape`` whose storage holds ``tail`` more zeros after it."""
    count = math.prod(shape)
    return torch.zeros(count + tail, device=device, dtype=dtype)[:count].view(shape)


def _host_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` as a CPU tensor to copy to ``device`` without waiting for the device's queue:
    in pinned memory for CUDA (the caching host allocator keeps the block until the copy has
    run), as it is for the CPU."""
    host = torch.from_numpy(np.ascontiguousarray(array))
    return host.pin_memory() if device.type == "cuda" else host


def _module_shape(module: nn.Module) -> tuple[int, Any]:
    """(layers, config) of a decoder or a lone attention."""
    from flexframe.nn.decoder import FlexFrameDecoder

    if isinstance(module, FlexFrameDecoder):
        return len(module.layers), module.config
    if isinstance(module, Attention):
        return 1, module.config
    raise TypeError(
        f"a FrameKVCache is for a FlexFrameDecoder or an Attention, got {type(module).__name__}"
    )


def _identity(spec: MaskSpec, rule: StreamingRule) -> tuple[Any, ...]:
    """What makes two streamable masks the same mask: name, lengths, patches, rule parameters."""
    return (spec.name, spec.q_len, spec.kv_len, rule.num_patches_per_frame, _rule_params(rule))


def _rule_params(rule: StreamingRule) -> tuple[Any, ...]:
    params = rule.params
    if rule.name == "sliding-window":
        return (params["window_size"], params.get("sink_frames", 0))
    if rule.name == "chunk-causal":
        return (params["frames_per_chunk"], params.get("window_size"), params.get("sink_chunks", 0))
    return ()


def _describe(spec: MaskSpec) -> str:
    params = ", ".join(f"{k}={v!r}" for k, v in spec.params.items())
    return f"{spec.name}({params})"
