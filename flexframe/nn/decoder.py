"""`FlexFrameDecoder`: pre-norm transformer layers whose attention follows a flexframe mask.

Each layer is self-attention, an optional cross-attention to a ``memory`` sequence, and an MLP,
each behind a LayerNorm and a residual, in the shape of nanoGPT's ``Block``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.attention.flex_attention import BlockMask
from torch.utils.checkpoint import checkpoint

from flexframe._checks import check_int
from flexframe.masks import MaskSpec, get_mask
from flexframe.nn.attention import (
    Attention,
    Backend,
    MaskLike,
    mask_is_unrestricted,
    resolve_mask,
)
from flexframe.nn.positions import FramePositions

logger = logging.getLogger("flexframe")


class MLP(nn.Module):
    """Two linear layers with a GELU between, ``dim -> hidden_dim -> dim``."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, hidden_dim, bias=bias)
        self.proj = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(nn.functional.gelu(self.fc(x)))


class DecoderLayer(nn.Module):
    """Pre-norm self-attention, optional cross-attention, and MLP, each with a residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int | None,
        head_dim: int | None,
        mlp_ratio: float,
        cross_attention: bool,
        attention_backend: Backend,
        bias: bool,
        rotary: bool = True,
        kernel_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        attn_args = (
            dim, num_heads, num_kv_heads, head_dim, attention_backend, bias, rotary, kernel_options
        )  # fmt: skip
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = Attention(*attn_args)
        self.norm_cross = nn.LayerNorm(dim) if cross_attention else None
        self.cross_attn = Attention(*attn_args) if cross_attention else None
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), bias)

    def forward(
        self,
        x: torch.Tensor,
        mask: MaskSpec | BlockMask,
        positions: FramePositions | None,
        memory: torch.Tensor | None = None,
        memory_mask: MaskSpec | BlockMask | None = None,
        memory_positions: FramePositions | None = None,
    ) -> torch.Tensor:
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, mask, positions, positions)
        if self.cross_attn is not None and memory is not None:
            x = x + self.cross_attn(
                self.norm_cross(x), memory, memory_mask, positions, memory_positions
            )
        return x + self.mlp(self.norm_mlp(x))


class FlexFrameDecoder(nn.Module):
    """A stack of pre-norm decoder layers whose attention follows a flexframe mask.

    Args:
        dim: model width.
        depth: number of layers.
        num_heads: query heads per attention.
        num_kv_heads: key/value heads (grouped-query attention); must divide ``num_heads``.
        head_dim: width of a head (64 and 128 are the fast ones on GPUs); default
            ``dim // num_heads``. Frame rotary positions need a multiple of 4.
        mlp_ratio: MLP hidden width over ``dim``.
        cross_attention: add a cross-attention to ``memory`` in every layer.
        attention_backend: ``"auto"``, ``"flex"`` or ``"sdpa"``; see ``flexframe.nn.attention``.
        bias: biases in the linear layers.
        rotary: frame+patch rotary positions in every attention (head_dim a multiple of 4).
        activation_checkpointing: recompute each layer's activations in the backward pass
            instead of storing them (``torch.utils.checkpoint``, non-reentrant).
        kernel_options: flex_attention ``kernel_options`` for every attention; ``None`` takes
            the tuned default for the device (``flexframe.nn.attention.default_kernel_options``).

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
        dim: int,
        depth: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        mlp_ratio: float = 4.0,
        cross_attention: bool = False,
        attention_backend: Backend = "auto",
        bias: bool = False,
        rotary: bool = True,
        activation_checkpointing: bool = False,
        kernel_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        depth = check_int("depth", depth, minimum=1)
        self.activation_checkpointing = bool(activation_checkpointing)
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio!r}")
        self.dim = check_int("dim", dim, minimum=1)
        self.cross_attention = bool(cross_attention)
        self.rotary = bool(rotary)
        self._warned_no_positions = False
        self.layers = nn.ModuleList(
            DecoderLayer(
                dim,
                num_heads,
                num_kv_heads,
                head_dim,
                mlp_ratio,
                cross_attention,
                attention_backend,
                bias,
                rotary,
                kernel_options,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        mask: MaskLike,
        memory: torch.Tensor | None = None,
        memory_mask: MaskLike | None = None,
        *,
        mask_params: Mapping[str, Any] | None = None,
        positions: FramePositions | None = None,
        memory_positions: FramePositions | None = None,
    ) -> torch.Tensor:
        """Run the stack on ``x`` ``[B, N, dim]``; returns ``[B, N, dim]``.

        Args:
            x: the token sequence.
            mask: the self-attention mask: a ``MaskSpec``, a ``BlockMask``, a registry name
                (with ``mask_params``) or a mapping ``{"name": ..., **params}``.
            memory: ``[B, M, dim]`` for the cross-attention (needs ``cross_attention=True``).
            memory_mask: the ``[N, M]`` cross-attention mask. Required unless the self-attention
                mask is ``full``: under any causal mask an unmasked cross-attention would let
                every query read all of ``memory``, future frames included.
            mask_params: parameters when ``mask`` is a registry name.
            positions: per-token frame and patch positions; by default derived from the mask
                (timestamps for ``timestamp-causal``; none for a bare ``BlockMask``).
            memory_positions: positions of the memory tokens; rotary positions are applied in
                the cross-attention only when both ``positions`` and these are known.
        """
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be [B, N, {self.dim}], got shape {tuple(x.shape)}")
        spec = resolve_mask(mask, mask_params)
        if positions is None and isinstance(spec, MaskSpec):
            positions = FramePositions.from_mask(spec)
        if positions is None and self.rotary and not self._warned_no_positions:
            self._warned_no_positions = True
            logger.warning(
                "FlexFrameDecoder got a bare BlockMask and no positions: it carries no frame "
                "times, so the rotary frame+patch positions are skipped. Pass the MaskSpec, or "
                "positions=FramePositions.from_mask(spec)."
            )
        cross = None
        if memory is not None:
            if not self.cross_attention:
                raise ValueError(
                    "memory was given but this decoder has no cross-attention; build it with "
                    "cross_attention=True"
                )
            if memory.dim() != 3 or memory.shape[0] != x.shape[0] or memory.shape[-1] != self.dim:
                raise ValueError(
                    f"memory must be [B={x.shape[0]}, M, {self.dim}], got {tuple(memory.shape)}"
                )
            if memory_mask is None:
                if not mask_is_unrestricted(spec):
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
            cross = resolve_mask(memory_mask)
        elif memory_mask is not None:
            raise ValueError("memory_mask was given without memory")
        for layer in self.layers:
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(
                    layer, x, spec, positions, memory, cross, memory_positions, use_reentrant=False
                )
            else:
                x = layer(x, spec, positions, memory, cross, memory_positions)
        return self.norm(x)
