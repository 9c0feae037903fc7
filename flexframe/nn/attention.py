"""Multi-head attention over a flexframe mask, with one call site for either backend.

``flex``: ``flex_attention`` with the mask's ``BlockMask`` and the kernel policy's options
(``flexframe.nn.kernels``). ``sdpa``: ``scaled_dot_product_attention`` with the mask's dense
``[q_len, kv_len]`` bool tensor (cached). ``auto``: flex on CUDA, sdpa on the CPU. A mask is a
``MaskSpec``, a bare ``BlockMask``, or any :class:`MaskSource` (a KV cache step's mask,
``flexframe.nn.cache_step``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask

from flexframe.masks import MaskSpec, dense_from_block_mask, get_mask
from flexframe.masks.cache import DENSE_MASKS
from flexframe.nn.config import DecoderConfig
from flexframe.nn.kernels import KERNELS, KernelPolicy, resolve_backend
from flexframe.nn.positions import FramePositions, FrameRotaryEmbedding

if TYPE_CHECKING:
    from flexframe.nn.cache import FrameKVCache
    from flexframe.nn.graphs import StepGraphs

MaskLike = MaskSpec | BlockMask | str | Mapping[str, Any]


class MaskSource(Protocol):
    """A ``[q_len, kv_len]`` mask that gives its BlockMask (flex) and dense form (sdpa) on a
    device: ``MaskSpec``, and the mask of a KV cache step."""

    @property
    def q_len(self) -> int: ...

    @property
    def kv_len(self) -> int: ...

    def block_mask(self, device: torch.device) -> BlockMask: ...

    def dense(self, device: torch.device) -> torch.Tensor: ...


AttentionMask = MaskSource | BlockMask


def resolve_mask(
    mask: MaskLike, mask_params: Mapping[str, Any] | None = None
) -> MaskSpec | BlockMask:
    """A ``MaskSpec`` or ``BlockMask`` from what a caller or a config gives.

    Accepts a ``MaskSpec``, a ``BlockMask``, a registry name with ``mask_params``, or a mapping
    ``{"name": ..., **params}``.

    Example:
        >>> resolve_mask({"name": "token-causal", "seq_len": 4}).name
        'token-causal'
    """
    if isinstance(mask, (MaskSpec, BlockMask)):
        if mask_params:
            raise ValueError("mask_params is only for a mask given by name")
        return mask
    if isinstance(mask, str):
        return get_mask(mask, **dict(mask_params or {}))
    if isinstance(mask, Mapping):
        params = dict(mask)
        if "name" not in params:
            raise ValueError(f"a mask given as a mapping needs a 'name' key, got {mask!r}")
        name = params.pop("name")
        return get_mask(name, **params, **dict(mask_params or {}))
    raise TypeError(
        "mask must be a MaskSpec, a BlockMask, a registry name or a mapping with 'name', "
        f"got {type(mask).__name__}"
    )


def check_tokens(x: Any, dim: int, name: str = "x") -> None:
    """Refuse anything but a token tensor ``[B, N, dim]``, naming it ``name``.

    Example:
        >>> check_tokens(torch.zeros(2, 5, 8), 8)
        >>> check_tokens(torch.zeros(5, 8), 8, "x_chunk")
        Traceback (most recent call last):
        ...
        ValueError: x_chunk must be [B, N, 8], got (5, 8)
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be [B, N, {dim}], got {shape}")


def mask_lengths(mask: AttentionMask) -> tuple[int, int]:
    """``(q_len, kv_len)`` of a spec, a cache step's mask or a BlockMask."""
    if isinstance(mask, BlockMask):
        return int(mask.seq_lengths[0]), int(mask.seq_lengths[1])
    return mask.q_len, mask.kv_len


def dense_mask(mask: AttentionMask, device: torch.device) -> torch.Tensor:
    """The ``[q_len, kv_len]`` bool mask the sdpa backend applies (cached)."""
    if not isinstance(mask, BlockMask):
        return mask.dense(device)
    # A bare BlockMask is keyed by its identity; the entry holds the BlockMask itself, so its id
    # cannot be reused by another object while the entry lives.
    key = (("BlockMask", id(mask)), str(device))
    entry = DENSE_MASKS.get(key)
    if entry is None or entry[0] is not mask:
        entry = (mask, dense_from_block_mask(mask).to(device))
        DENSE_MASKS.put(key, entry)
    return entry[1]


class Attention(nn.Module):
    """Multi-head attention (self or cross) with grouped-query heads and frame rotary positions.

    Args:
        config: the decoder's settings (``dim``, heads, ``attention_backend``, ``rotary``,
            ``kernel_options``, ...).
        kernels: the kernel policy for flex (default: the process's, ``nn.kernels.KERNELS``).

    Example:
        >>> import torch
        >>> from flexframe import DecoderConfig, get_mask
        >>> attn = Attention(DecoderConfig(dim=32, depth=1, num_heads=4)).eval()
        >>> x = torch.randn(2, 6, 32)
        >>> attn(x, x, get_mask("causal-frame", num_frames=3, num_patches_per_frame=2)).shape
        torch.Size([2, 6, 32])
    """

    def __init__(self, config: DecoderConfig, kernels: KernelPolicy | None = None) -> None:
        super().__init__()
        self.config = config
        self.kernels = kernels if kernels is not None else KERNELS
        self.num_heads, self.num_kv_heads = config.num_heads, config.kv_heads
        self.head_dim = config.head_size
        self.q_proj = nn.Linear(config.dim, self.num_heads * self.head_dim, bias=config.bias)
        self.k_proj = nn.Linear(config.dim, config.kv_dim, bias=config.bias)
        self.v_proj = nn.Linear(config.dim, config.kv_dim, bias=config.bias)
        self.out_proj = nn.Linear(self.num_heads * self.head_dim, config.dim, bias=config.bias)
        self.rotary = FrameRotaryEmbedding(self.head_dim) if config.rotary else None

    def heads(self, x: torch.Tensor, proj: nn.Linear, heads: int) -> torch.Tensor:
        """``[B, N, dim]`` -> ``[B, heads, N, head_dim]`` through ``proj``."""
        b, n, _ = x.shape
        return proj(x).view(b, n, heads, self.head_dim).transpose(1, 2)

    def project_kv(
        self, context: torch.Tensor, positions: FramePositions | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[B, H_kv, M, head_dim]`` of ``context`` ``[B, M, dim]``, the keys
        rotated by ``positions`` (what a KV cache stores)."""
        k = self.heads(context, self.k_proj, self.num_kv_heads)
        v = self.heads(context, self.v_proj, self.num_kv_heads)
        if self.rotary is not None and positions is not None:
            k = self.rotary(k, positions)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: AttentionMask | None = None,
        q_positions: FramePositions | None = None,
        kv_positions: FramePositions | None = None,
        *,
        cache: FrameKVCache | None = None,
        append: bool = True,
    ) -> torch.Tensor:
        """Attend from ``x`` ``[B, N, dim]`` to ``context`` ``[B, M, dim]`` under ``mask``.

        ``mask`` must be ``[N, M]``. Rotary positions apply when both position sets are given.
        Returns ``[B, N, dim]``. With ``cache`` (a :class:`~flexframe.nn.FrameKVCache` built for
        this attention) ``x`` is a chunk of whole frames ``[B, c * P, dim]`` attending to itself
        and the cached frames its mask allows, appended to the cache unless ``append=False``.
        """
        if cache is not None:
            if any(a is not None for a in (context, mask, q_positions, kv_positions)):
                raise ValueError(
                    "with a cache, attention takes the chunk alone, attention(x_chunk, "
                    "cache=cache): the keys, the mask and the positions come from the cache"
                )
            return cache.attend(self, x, append=append)
        if context is None or mask is None:
            raise TypeError("attention(x, context, mask) needs a context and a mask (or a cache)")
        if append is not True:
            raise ValueError("append is for a step with a cache (cache=...)")
        q_len, kv_len = mask_lengths(mask)
        if (x.shape[1], context.shape[1]) != (q_len, kv_len):
            raise ValueError(
                f"the mask is [{q_len}, {kv_len}] (queries, keys) but the inputs have "
                f"{x.shape[1]} queries and {context.shape[1]} keys"
            )
        if self.rotary is None or q_positions is None or kv_positions is None:
            q_positions = kv_positions = None
        k, v = self.project_kv(context, kv_positions)
        return self.attend(x, k, v, mask, q_positions)

    def attend(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: AttentionMask,
        q_positions: FramePositions | None = None,
        *,
        dynamic: bool | None = None,
        graphs: StepGraphs | None = None,
    ) -> torch.Tensor:
        """Queries of ``x`` ``[B, N, dim]`` (rotated by ``q_positions``) against keys and values
        ``[B, H_kv, M, head_dim]`` under the ``[N, M]`` ``mask``; returns ``[B, N, dim]``.

        ``dynamic`` is for flex: ``False`` compiles for these shapes (a caller whose shapes never
        change, as a KV cache step); ``None`` leaves it to torch (see ``nn.kernels``).
        ``graphs``: a KV cache's recorded flex calls (``nn.graphs``), used where ``k`` and ``v``
        are already contiguous (the cache's own buffers)."""
        q_len, kv_len = mask_lengths(mask)
        if (x.shape[1], k.shape[2]) != (q_len, kv_len):
            raise ValueError(
                f"the mask is [{q_len}, {kv_len}] (queries, keys) but the inputs have "
                f"{x.shape[1]} queries and {k.shape[2]} keys"
            )
        q = self.heads(x, self.q_proj, self.num_heads)
        if self.rotary is not None and q_positions is not None:
            q = self.rotary(q, q_positions)
        gqa = self.num_kv_heads != self.num_heads
        backend = resolve_backend(self.config.attention_backend, x.device)
        if backend == "flex":
            if (
                x.device.type == "cpu"
                and torch.is_grad_enabled()
                and (q.requires_grad or k.requires_grad or v.requires_grad)
            ):
                raise RuntimeError(
                    "attention_backend='flex' cannot train on the CPU: FlexAttention has no "
                    "backward pass there. Use 'auto' or 'sdpa' to train, or run under "
                    "torch.no_grad() to infer with flex"
                )
            block_mask = mask if isinstance(mask, BlockMask) else mask.block_mask(x.device)
            # One memory layout whether or not rotary ran, so that the compiled kernel's stride
            # guards hold.
            qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
            options = self.config.kernel_options

            def run(query: torch.Tensor) -> torch.Tensor:
                return self.kernels.attend(query, kc, vc, block_mask, enable_gqa=gqa,
                                           kernel_options=options, dynamic=dynamic)  # fmt: skip

            in_place = kc.data_ptr() == k.data_ptr() and vc.data_ptr() == v.data_ptr()
            if graphs is not None and in_place:
                chosen = None if options is None else repr(sorted(options.items()))
                settings = (id(self), id(self.kernels), gqa, chosen, dynamic)
                out = graphs.attend(run, qc, kc, vc, block_mask, settings)
            else:
                out = run(qc)
        else:
            dense = dense_mask(mask, x.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=dense, enable_gqa=gqa)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))
