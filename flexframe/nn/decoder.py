"""`FlexFrameDecoder`: pre-norm transformer layers whose attention follows a flexframe mask.

Each layer is self-attention, an optional cross-attention to a ``memory`` sequence, and an MLP,
each behind a LayerNorm and a residual, in the shape of nanoGPT's ``Block``; one
:class:`~flexframe.nn.config.DecoderConfig` is passed down to every layer and attention.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.attention.flex_attention import BlockMask
from torch.utils.checkpoint import checkpoint

from flexframe._checks import check_weights_dtype
from flexframe.masks import MaskSpec, get_mask
from flexframe.nn.attention import (
    Attention,
    AttentionMask,
    MaskLike,
    check_tokens,
    mask_lengths,
    resolve_mask,
)
from flexframe.nn.config import DecoderConfig
from flexframe.nn.kernels import KernelPolicy
from flexframe.nn.positions import FramePositions

if TYPE_CHECKING:
    from flexframe.nn.cache import FrameKVCache
    from flexframe.nn.cache_step import LayerStep


class MLP(nn.Module):
    """Two linear layers with a GELU between, ``dim -> mlp_ratio * dim -> dim``."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        hidden = int(config.dim * config.mlp_ratio)
        self.fc = nn.Linear(config.dim, hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, config.dim, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(nn.functional.gelu(self.fc(x)))


class DecoderLayer(nn.Module):
    """Pre-norm self-attention, optional cross-attention, and MLP, each with a residual."""

    def __init__(self, config: DecoderConfig, kernels: KernelPolicy | None = None) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(config.dim)
        self.self_attn = Attention(config, kernels)
        self.norm_cross = nn.LayerNorm(config.dim) if config.cross_attention else None
        self.cross_attn = Attention(config, kernels) if config.cross_attention else None
        self.norm_mlp = nn.LayerNorm(config.dim)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        mask: AttentionMask,
        positions: FramePositions | None,
        memory: torch.Tensor | None = None,
        memory_mask: MaskSpec | BlockMask | None = None,
        memory_positions: FramePositions | None = None,
        cache_layer: LayerStep | None = None,
    ) -> torch.Tensor:
        """``x`` ``[B, N, dim]`` through the layer; with ``cache_layer`` (a KV cache step, see
        ``flexframe.nn.streaming``) the self-attention runs against the cached frames."""
        h = self.norm_self(x)
        if cache_layer is None:
            x = x + self.self_attn(h, h, mask, positions, positions)
        else:
            x = x + cache_layer.attend(self.self_attn, h)
        return self.finish(x, positions, memory, memory_mask, memory_positions)

    def finish(
        self,
        x: torch.Tensor,
        positions: FramePositions | None,
        memory: torch.Tensor | None = None,
        memory_mask: MaskSpec | BlockMask | None = None,
        memory_positions: FramePositions | None = None,
    ) -> torch.Tensor:
        """What follows the self-attention: the cross-attention (when built) and the MLP."""
        if self.cross_attn is not None and self.norm_cross is not None:
            assert memory is not None and memory_mask is not None  # checked by the decoder
            x = x + self.cross_attn(
                self.norm_cross(x), memory, memory_mask, positions, memory_positions
            )
        return x + self.mlp(self.norm_mlp(x))


class FlexFrameDecoder(nn.Module):
    """A stack of pre-norm decoder layers whose attention follows a flexframe mask.

    Build it from a :class:`~flexframe.nn.config.DecoderConfig` or from the same settings by
    name (``dim``, ``depth``, ``num_heads``, ``num_kv_heads``, ``head_dim``, ``mlp_ratio``,
    ``cross_attention``, ``attention_backend``, ``bias``, ``rotary``,
    ``activation_checkpointing``, ``kernel_options``; see ``DecoderConfig`` for each).

    Args:
        config: the settings, or ``None`` to build them from ``settings``.
        kernels: flex_attention's kernel policy (default: the process's).
        **settings: ``DecoderConfig`` fields, when no ``config`` is given.

    Example:
        >>> import torch
        >>> from flexframe import FlexFrameDecoder
        >>> decoder = FlexFrameDecoder(dim=32, depth=2, num_heads=4).eval()
        >>> x = torch.randn(2, 3 * 4, 32)  # [B, N, dim]: 3 frames of 4 patches
        >>> with torch.no_grad():
        ...     y = decoder(x, "causal-frame", mask_params={"num_frames": 3,
        ...                                                 "num_patches_per_frame": 4})
        >>> y.shape
        torch.Size([2, 12, 32])
    """

    def __init__(
        self,
        config: DecoderConfig | None = None,
        *,
        kernels: KernelPolicy | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        if config is None:
            config = DecoderConfig(**settings)
        elif not isinstance(config, DecoderConfig):
            raise TypeError(
                f"FlexFrameDecoder takes a DecoderConfig or its settings by name (dim=..., "
                f"depth=..., num_heads=...), got {config!r} as its first argument"
            )
        elif settings:
            raise TypeError(
                f"pass a DecoderConfig or settings by name, not both (got {sorted(settings)})"
            )
        self.config = config
        self.dim = config.dim
        self.layers = nn.ModuleList(DecoderLayer(config, kernels) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    def forward(
        self,
        x: torch.Tensor,
        mask: MaskLike | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: MaskLike | None = None,
        *,
        mask_params: Mapping[str, Any] | None = None,
        positions: FramePositions | None = None,
        memory_positions: FramePositions | None = None,
        cache: FrameKVCache | None = None,
        append: bool = True,
    ) -> torch.Tensor:
        """Run the stack on ``x`` ``[B, N, dim]``; returns ``[B, N, dim]``.

        Args:
            x: the token sequence.
            mask: the self-attention mask: a ``MaskSpec``, a ``BlockMask``, a registry name
                (with ``mask_params``) or a mapping ``{"name": ..., **params}``.
            memory: ``[B, M, dim]`` for the cross-attention; required when the decoder was
                built with ``cross_attention=True``, refused otherwise.
            memory_mask: the ``[N, M]`` cross-attention mask. Required unless the self-attention
                mask is ``full``: under any causal mask an unmasked cross-attention would let
                every query read all of ``memory``, future frames included.
            mask_params: parameters when ``mask`` is a registry name.
            positions: per-token frame and patch positions; by default derived from the mask
                (timestamps for ``timestamp-causal``). A bare ``BlockMask`` carries none: pass
                them, or the rotary positions are skipped (with a warning).
            memory_positions: positions of the memory tokens; rotary positions are applied in
                the cross-attention only when both ``positions`` and these are known.
            cache: a :class:`~flexframe.nn.FrameKVCache` built for this decoder: ``x`` is then a
                chunk of ``c`` whole frames ``[B, c * P, dim]`` that attends to the cached frames
                its mask allows and to itself (``mask`` may be left out; given, it must be the
                cache's: the same name, frames, patches and parameters). Returns
                ``[B, c * P, dim]``. See ``flexframe.nn.streaming``.
            append: with a cache, write the chunk's frames into it (the default), or only read
                it (``False``: a denoising pass over the same chunk).
        """
        if cache is not None:
            return self._cache_step(
                x, cache, mask, mask_params, positions, memory, memory_mask, memory_positions,
                append,
            )  # fmt: skip
        if mask is None:
            raise TypeError("FlexFrameDecoder needs a mask (or a cache=FrameKVCache)")
        if append is not True:
            raise ValueError("append is for a step with a cache (cache=...)")
        spec = self._check_input(x, mask, mask_params)
        if positions is None and isinstance(spec, MaskSpec):
            positions = FramePositions.from_mask(spec)
        if positions is None and self.config.rotary:
            warnings.warn(
                "FlexFrameDecoder got a bare BlockMask and no positions: it carries no frame "
                "times, so the rotary frame+patch positions are skipped. Pass the MaskSpec, or "
                "positions=FramePositions.from_mask(spec).",
                UserWarning,
                stacklevel=2,
            )
        cross = self._cross_mask(x, spec, memory, memory_mask)
        for layer in self.layers:
            if self.config.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(
                    layer, x, spec, positions, memory, cross, memory_positions, use_reentrant=False
                )
            else:
                x = layer(x, spec, positions, memory, cross, memory_positions)
        return self.norm(x)

    def _cache_step(
        self,
        x: torch.Tensor,
        cache: FrameKVCache,
        mask: MaskLike | None,
        mask_params: Mapping[str, Any] | None,
        positions: FramePositions | None,
        memory: torch.Tensor | None,
        memory_mask: MaskLike | None,
        memory_positions: FramePositions | None,
        append: bool,
    ) -> torch.Tensor:
        """One streaming step (``forward`` with a cache)."""
        self._check_x(x)
        cache.check_module(self)
        if mask is not None:
            cache.check_mask(mask, mask_params)
        if positions is not None:
            raise ValueError(
                "positions come from the cache with a cache step (the chunk's absolute frame "
                "times); leave positions out"
            )
        cross = self._cross_mask(x, cache.spec, memory, memory_mask)
        with cache.begin(cache.check_input(x), append=append) as step:
            for i, layer in enumerate(self.layers):
                x = layer(
                    x, step.mask, step.positions, memory, cross, memory_positions, step.layer(i)
                )
        return self.norm(x)

    def _check_x(self, x: torch.Tensor) -> None:
        check_tokens(x, self.dim)
        check_weights_dtype("x", x, self.norm.weight, "decoder")

    def _check_input(
        self, x: torch.Tensor, mask: MaskLike, mask_params: Mapping[str, Any] | None
    ) -> MaskSpec | BlockMask:
        self._check_x(x)
        spec = resolve_mask(mask, mask_params)
        q_len, kv_len = mask_lengths(spec)
        if (q_len, kv_len) != (x.shape[1], x.shape[1]):
            raise ValueError(
                f"the mask is [{q_len}, {kv_len}] (queries, keys) but x has {x.shape[1]} "
                f"tokens, so {x.shape[1]} queries and {x.shape[1]} keys"
            )
        return spec

    def _cross_mask(
        self,
        x: torch.Tensor,
        spec: MaskSpec | BlockMask,
        memory: torch.Tensor | None,
        memory_mask: MaskLike | None,
    ) -> MaskSpec | BlockMask | None:
        if memory is None:
            if self.config.cross_attention:
                raise ValueError(
                    "this decoder was built with cross_attention=True, so every call needs "
                    "memory ([B, M, dim]) and its memory_mask; build it with "
                    "cross_attention=False for self-attention alone"
                )
            if memory_mask is not None:
                raise ValueError("memory_mask was given without memory")
            return None
        if not self.config.cross_attention:
            raise ValueError(
                "memory was given but this decoder has no cross-attention; build it with "
                "cross_attention=True"
            )
        if memory.dim() != 3 or memory.shape[0] != x.shape[0] or memory.shape[-1] != self.dim:
            raise ValueError(
                f"memory must be [B={x.shape[0]}, M, {self.dim}], got {tuple(memory.shape)}"
            )
        if memory_mask is None:
            if not (isinstance(spec, MaskSpec) and spec.name == "full"):
                name = spec.name if isinstance(spec, MaskSpec) else "BlockMask"
                raise ValueError(
                    f"cross-attention without a memory_mask is refused: the self-attention "
                    f"mask {name!r} is causal, and an unmasked cross-attention lets every "
                    "query read all of memory, future frames included (how the seed "
                    "design's predictor, tgt=x, memory=x, leaks). Pass memory_mask: the same "
                    "mask when memory holds the same frames, or get_mask('full', "
                    f"seq_len={x.shape[1]}, kv_len={memory.shape[1]}) to allow all of it."
                )
            memory_mask = get_mask("full", seq_len=x.shape[1], kv_len=memory.shape[1])
        return resolve_mask(memory_mask)
