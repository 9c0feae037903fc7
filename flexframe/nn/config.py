"""`DecoderConfig`: every setting of the decoder stack, passed down whole (as nanoGPT's config).

Example:
    >>> cfg = DecoderConfig(dim=64, depth=2, num_heads=4, num_kv_heads=2)
    >>> cfg.head_dim, cfg.kv_dim
    (16, 32)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flexframe._checks import check_choice, check_int
from flexframe._config import check_settings, setting
from flexframe._vocab import ATTENTION_BACKENDS


@dataclass
class DecoderConfig:
    """Settings of :class:`~flexframe.FlexFrameDecoder`, its layers and their attention.

    Attributes:
        dim: model width.
        depth: number of layers.
        num_heads: query heads per attention.
        num_kv_heads: key/value heads (grouped-query attention); must divide ``num_heads``;
            ``None``: as many as ``num_heads``.
        head_dim: width of a head (64 and 128 are the fast ones on GPUs); ``None``:
            ``dim // num_heads``. Frame rotary positions need a multiple of 4.
        mlp_ratio: MLP hidden width over ``dim``.
        cross_attention: add a cross-attention to a ``memory`` sequence in every layer.
        attention_backend: ``"auto"`` (flex on CUDA, sdpa on the CPU), ``"flex"`` or ``"sdpa"``.
        bias: biases in the linear layers.
        rotary: frame+patch rotary positions in every attention.
        activation_checkpointing: recompute each layer's activations in the backward pass.
        kernel_options: flex_attention ``kernel_options`` for every attention; ``None`` takes
            the tuned default for the inputs (``flexframe.nn.kernels``).

    Example:
        >>> DecoderConfig(dim=30, depth=1, num_heads=4)
        Traceback (most recent call last):
        ...
        ValueError: dim must be divisible by num_heads (or pass head_dim), got dim=30, num_heads=4
    """

    dim: int = setting(256, "model width", "int", minimum=1)
    depth: int = setting(2, "number of layers", "int", minimum=1)
    num_heads: int = setting(4, "query heads", "int", minimum=1)
    num_kv_heads: int | None = setting(None, "key/value heads", "int?", minimum=1)
    head_dim: int | None = setting(None, "width of a head", "int?", minimum=1)
    mlp_ratio: float = setting(4.0, "MLP width over dim", "float", low=0.0, strict_low=True)
    cross_attention: bool = setting(False, "a cross-attention in every layer", "bool")
    attention_backend: str = setting(
        "auto", "auto, flex or sdpa", "choice", choices=ATTENTION_BACKENDS
    )
    bias: bool = setting(False, "biases in the linear layers", "bool")
    rotary: bool = setting(True, "frame+patch rotary positions", "bool")
    activation_checkpointing: bool = setting(False, "recompute layers in backward", "bool")
    kernel_options: Mapping[str, Any] | None = setting(
        None, "flex_attention kernel_options", "mapping?"
    )

    def __post_init__(self) -> None:
        check_settings(self)
        check_choice("attention_backend", self.attention_backend, ATTENTION_BACKENDS)
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_kv_heads must divide num_heads, got num_heads={self.num_heads}, "
                f"num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim is None:
            if self.dim % self.num_heads:
                raise ValueError(
                    f"dim must be divisible by num_heads (or pass head_dim), got dim={self.dim}, "
                    f"num_heads={self.num_heads}"
                )
            self.head_dim = self.dim // self.num_heads
        if self.rotary and self.head_dim % 4:
            raise ValueError(
                f"frame rotary positions need head_dim to be a multiple of 4, got head_dim="
                f"{self.head_dim}; choose another dim/num_heads or pass rotary=False"
            )

    @property
    def kv_heads(self) -> int:
        """Key/value heads, resolved (``num_kv_heads`` after ``__post_init__``)."""
        return check_int("num_kv_heads", self.num_kv_heads, minimum=1)

    @property
    def head_size(self) -> int:
        """Head width, resolved."""
        return check_int("head_dim", self.head_dim, minimum=1)

    @property
    def kv_dim(self) -> int:
        """Width of the key (and value) projection: ``num_kv_heads * head_dim``."""
        return self.kv_heads * self.head_size
