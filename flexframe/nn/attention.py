"""Multi-head attention over a flexframe mask, with two backends and one call site.

``flex``: ``flex_attention`` with the mask's ``BlockMask``, compiled once per process. Its
kernel: FlashAttention-4 (``BACKEND="FLASH"``) on Hopper where ``flash-attn-4`` is installed
(``pip install "flexframe[flash]"``), else the Triton kernel; see
:func:`default_kernel_options`.
``sdpa``: ``scaled_dot_product_attention`` with the mask's dense ``[q_len, kv_len]`` bool tensor.
``auto``: FlexAttention has no backward pass on the CPU (torch raises NotImplementedError), so
``auto`` trains with ``sdpa`` on the CPU and with ``flex`` on a GPU, and infers with ``flex``
everywhere. "Trains" means a backward pass may follow: grad mode is on and an input or weight
requires grad; run inference under ``torch.no_grad()`` to get ``flex`` on the CPU. ``auto`` logs
its choice once per (device, mode) through ``logging``.

Compilation: one compiled ``flex_attention`` serves every module. A new ``BlockMask`` of the
same shape and mask family (a new batch, other timestamps) reuses the compiled kernel: the
BlockMask's tensors and the tensors its mask_mod reads are kernel inputs, not constants. A new
sequence length compiles once more; from the second length on torch marks lengths dynamic, so
frame counts that vary from batch to batch cost a bounded number of compilations (measured in
``tests/test_decoder.py``). A mask_mod that closes over a different Python integer (another
``num_patches_per_frame``) is another kernel. FLASH cannot take dynamic lengths: it is compiled
apart, one kernel per input signature, for at most ``FLASH_MAX_SHAPES`` signatures a process
(later ones run the Triton kernel).
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_mask, flex_attention

from flexframe._checks import check_int, did_you_mean
from flexframe.masks import MaskSpec, get_mask
from flexframe.nn.positions import FramePositions, FrameRotaryEmbedding

logger = logging.getLogger("flexframe")

Backend = Literal["auto", "flex", "sdpa"]
BACKENDS = ("auto", "flex", "sdpa")
MaskLike = MaskSpec | BlockMask | str | Mapping[str, Any]

_compiled_flex: Callable[..., torch.Tensor] | None = None
_compiled_flash: Callable[..., torch.Tensor] | None = None


FLASH_HEAD_DIMS = (64, 96, 128)  # head dims the FLASH default is tested with (tests/test_cuda.py)


def default_kernel_options(
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    head_dim: int | None = None,
) -> dict[str, Any]:
    """The flex_attention ``kernel_options`` flexframe uses by default for these inputs.

    The first that applies, on a CUDA GPU:

    1. ``{"BACKEND": "FLASH"}``, FlashAttention-4 (CuTe DSL) under FlexAttention, on Hopper
       (compute capability 9.x) when ``flash_attn.cute`` can be imported (``pip install
       flexframe[flash]``), torch knows the option, ``dtype`` is bfloat16 or float16,
       ``head_dim`` is one of ``FLASH_HEAD_DIMS`` and deterministic algorithms are off (its
       block-sparse backward has no deterministic mode before Blackwell). Measured at 97-114 %
       of cuDNN's token-causal throughput on frame masks, against 67-82 % for the Triton kernel
       (``benchmarks/RESULTS.md``, H200, head dim 128, 16K-64K tokens).
    2. ``{"USE_TMA": True}`` on Hopper: the Triton kernel with Tensor Memory Accelerator loads,
       3-9 % faster forward than torch's defaults.
    3. ``{}``, torch's defaults: the fallback that always works.

    Without ``dtype`` and ``head_dim``, or for a (device, dtype, head_dim) where FLASH failed to
    compile once in this process (see :class:`Attention`), the choice starts at 2.

    Example:
        >>> default_kernel_options("cpu", torch.bfloat16, 128)
        {}
    """
    dev = torch.device(device)
    flash = dtype is not None and head_dim is not None and _flash_applies(dev, dtype, head_dim)
    return dict(_kernel_options_for(str(dev), flash))


def flash_available() -> bool:
    """Whether flex_attention's FLASH backend (FlashAttention-4) can run in this process: torch
    knows ``BACKEND`` and ``flash_attn.cute`` can be imported.

    Example:
        >>> isinstance(flash_available(), bool)
        True
    """
    return _flash_importable() and "BACKEND" in _known_kernel_options()


@functools.cache
def _flash_importable() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except (ImportError, ValueError):  # flash_attn absent, or a broken install
        return False


@functools.cache
def _known_kernel_options() -> frozenset[str]:
    try:
        from torch.nn.attention.flex_attention import FlexKernelOptions
    except ImportError:  # a torch that does not declare its kernel options
        return frozenset()
    return frozenset(getattr(FlexKernelOptions, "__annotations__", {}))


def _flash_applies(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    return (
        device.type == "cuda"
        and torch.cuda.is_available()
        and dtype in (torch.bfloat16, torch.float16)
        and head_dim in FLASH_HEAD_DIMS
        and not torch.are_deterministic_algorithms_enabled()
        and (str(device), dtype, head_dim) not in _FLASH_FAILED
        and _capability(str(device))[0] == 9
        and flash_available()
    )


@functools.cache
def _capability(device: str) -> tuple[int, int]:
    return torch.cuda.get_device_capability(torch.device(device))


@functools.cache
def _kernel_options_for(device: str, flash: bool) -> tuple[tuple[str, Any], ...]:
    dev = torch.device(device)
    if flash:  # _flash_applies checked the device
        return (("BACKEND", "FLASH"),)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return ()
    if _capability(device)[0] == 9 and "USE_TMA" in _known_kernel_options():
        return (("USE_TMA", True),)
    return ()


# (device, dtype, head_dim) where a default FLASH kernel failed to compile in this process
_FLASH_FAILED: set[tuple[str, torch.dtype, int]] = set()
# input signatures the default FLASH path compiled for (at most FLASH_MAX_SHAPES)
_FLASH_SHAPES: set[tuple[Any, ...]] = set()
_FLASH_SHAPES_FULL: set[bool] = set()  # logged that the budget is spent


def _flash_signature(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask, gqa: bool
) -> tuple[Any, ...]:
    """What a ``dynamic=False`` compile specializes on, as far as flexframe can see: shapes,
    dtype, device, GQA, the BlockMask's block size and lengths, and its mask_mod's code."""
    mod = block_mask.mask_mod
    return (
        tuple(q.shape),
        tuple(k.shape),
        tuple(v.shape),
        q.dtype,
        str(q.device),
        gqa,
        tuple(block_mask.BLOCK_SIZE),
        tuple(block_mask.seq_lengths),
        getattr(mod, "__code__", type(mod)),
    )


FLASH_MAX_SHAPES = 8  # input signatures a process compiles the default FLASH kernel for


def _compiled_flash_attention() -> Callable[..., torch.Tensor]:
    """The process-wide ``torch.compile(flex_attention, dynamic=False)`` for ``BACKEND="FLASH"``.

    FLASH cannot take lengths as symbols (torch: "captures a dynamic scalar"), so it gets its own
    compiled function that never marks them dynamic: one kernel per input signature. The first
    use raises dynamo's ``recompile_limit`` by ``FLASH_MAX_SHAPES``, the entries the default
    FLASH path may add, so that the shared Triton function keeps its own headroom.
    """
    global _compiled_flash
    if _compiled_flash is None:
        import torch._dynamo.config as dynamo_config

        dynamo_config.recompile_limit += FLASH_MAX_SHAPES
        logger.info(
            "flexframe: FLASH flex_attention compiled with dynamic=False; dynamo's "
            "recompile_limit raised by %d to %d",
            FLASH_MAX_SHAPES,
            dynamo_config.recompile_limit,
        )
        _compiled_flash = torch.compile(flex_attention, dynamic=False)
    return _compiled_flash


def compiled_flex_attention() -> Callable[..., torch.Tensor]:
    """The process-wide ``torch.compile(flex_attention)``, built on first use.

    Example:
        >>> fn = compiled_flex_attention()
        >>> fn is compiled_flex_attention()
        True
    """
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex


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


def mask_is_unrestricted(mask: MaskSpec | BlockMask) -> bool:
    """True only for a mask that provably lets every query see every key.

    A ``MaskSpec`` is unrestricted when it is the registry's ``full`` mask; any other mask,
    a user's own or a ``BlockMask``, counts as restricted, which is the safe side for the
    cross-attention check.

    Example:
        >>> mask_is_unrestricted(get_mask("full", seq_len=3))
        True
    """
    return isinstance(mask, MaskSpec) and mask.name == "full"


def dense_from_block_mask(block_mask: BlockMask) -> torch.Tensor:
    """The ``[q_len, kv_len]`` bool mask a kernel applies for ``block_mask`` (batch 0, head 0).

    Full blocks are visible whole; the mask_mod decides inside partial blocks; the rest is
    masked. Materializes N x N: for the sdpa backend and tests.
    """
    q_len, kv_len = block_mask.seq_lengths
    device = block_mask.kv_num_blocks.device
    q_bs, kv_bs = block_mask.BLOCK_SIZE
    partial = (
        BlockMask(
            block_mask.seq_lengths,
            block_mask.kv_num_blocks,
            block_mask.kv_indices,
            None,
            None,
            None,
            None,
            None,
            None,
            BLOCK_SIZE=block_mask.BLOCK_SIZE,
        )
        .to_dense()[0, 0]
        .bool()
    )
    full = block_mask.to_dense()[0, 0].bool() & ~partial

    def expand(grid: torch.Tensor) -> torch.Tensor:
        return grid.repeat_interleave(q_bs, 0).repeat_interleave(kv_bs, 1)[:q_len, :kv_len]

    inside = create_mask(block_mask.mask_mod, 1, 1, q_len, kv_len, device)[0, 0].bool()
    return expand(full) | (expand(partial) & inside)


class _DenseCache:
    """A small LRU of dense masks for the sdpa backend (each is q_len x kv_len booleans).

    A ``MaskSpec`` is keyed by its ``cache_key`` (name, params, lengths and origin, so a
    re-registered mask is not served stale); a bare ``BlockMask`` by its identity, with the entry
    holding the BlockMask itself so that its ``id`` cannot be reused by another object while the
    entry lives.
    """

    def __init__(self, maxsize: int = 8) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Any, tuple[Any, torch.Tensor]] = OrderedDict()

    def get(self, mask: MaskSpec | BlockMask, device: torch.device) -> torch.Tensor:
        if isinstance(mask, MaskSpec):
            key = ("spec", mask.cache_key, str(device))
        else:
            key = ("block_mask", id(mask), str(device))
        entry = self._data.get(key)
        if entry is not None and (isinstance(mask, MaskSpec) or entry[0] is mask):
            self._data.move_to_end(key)
            return entry[1]
        if isinstance(mask, MaskSpec):
            dense = mask.to_dense(device)
        else:
            dense = dense_from_block_mask(mask).to(device)
        self._data[key] = (mask, dense)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return dense


_DENSE_CACHE = _DenseCache()
_LOGGED_CHOICES: set[tuple[str, bool, str]] = set()


def _check_backend(requested: object) -> None:
    if requested not in BACKENDS:
        raise ValueError(
            f"attention_backend must be one of {', '.join(BACKENDS)}, got {requested!r}."
            f"{did_you_mean(str(requested), BACKENDS)}"
        )


def choose_backend(requested: Backend, device: torch.device, training: bool) -> str:
    """The backend ``requested`` resolves to on ``device`` (``auto``: see the module docstring).

    Example:
        >>> choose_backend("auto", torch.device("cpu"), training=True)
        'sdpa'
        >>> choose_backend("auto", torch.device("cpu"), training=False)
        'flex'
    """
    _check_backend(requested)
    if requested != "auto":
        return requested
    if training and device.type == "cpu":
        chosen, why = "sdpa", "FlexAttention has no backward pass on the CPU"
    elif training:
        chosen, why = "flex", f"training on {device.type}"
    else:
        chosen, why = "flex", "inference"
    key = (device.type, training, chosen)
    if key not in _LOGGED_CHOICES:
        _LOGGED_CHOICES.add(key)
        logger.info("flexframe attention_backend='auto' uses %r on %s: %s", chosen, device, why)
    return chosen


class Attention(nn.Module):
    """Multi-head attention (self or cross) with grouped-query heads and frame rotary positions.

    Args:
        dim: model width.
        num_heads: query heads.
        num_kv_heads: key/value heads; must divide ``num_heads`` (grouped-query attention).
            Defaults to ``num_heads``.
        head_dim: width of a head; defaults to ``dim // num_heads``.
        attention_backend: ``"auto"``, ``"flex"`` or ``"sdpa"`` (module docstring).
        bias: biases in the projections.
        rotary: apply frame+patch rotary positions when positions are given (needs a head_dim
            that is a multiple of 4).
        kernel_options: flex_attention ``kernel_options``; ``None`` takes
            :func:`default_kernel_options` for the device, ``{}`` torch's defaults.

    Example:
        >>> attn = Attention(dim=32, num_heads=4, num_kv_heads=2)
        >>> x = torch.randn(2, 6, 32)  # [B, N, dim]
        >>> attn(x, x, get_mask("causal-frame", num_frames=3, num_patches_per_frame=2)).shape
        torch.Size([2, 6, 32])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        attention_backend: Backend = "auto",
        bias: bool = False,
        rotary: bool = True,
        kernel_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        dim = check_int("dim", dim, minimum=1)
        self.kernel_options = None if kernel_options is None else dict(kernel_options)
        num_heads = check_int("num_heads", num_heads, minimum=1)
        num_kv_heads = check_int(
            "num_kv_heads", num_heads if num_kv_heads is None else num_kv_heads, minimum=1
        )
        if num_heads % num_kv_heads:
            raise ValueError(
                f"num_kv_heads must divide num_heads, got num_heads={num_heads}, "
                f"num_kv_heads={num_kv_heads}"
            )
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(
                    f"dim must be divisible by num_heads (or pass head_dim), got dim={dim}, "
                    f"num_heads={num_heads}"
                )
            head_dim = dim // num_heads
        head_dim = check_int("head_dim", head_dim, minimum=1)
        _check_backend(attention_backend)
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.attention_backend = attention_backend
        self.q_proj = nn.Linear(dim, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, num_kv_heads * head_dim, bias=bias)
        self.out_proj = nn.Linear(num_heads * head_dim, dim, bias=bias)
        if rotary and head_dim % 4:
            raise ValueError(
                f"frame rotary positions need head_dim to be a multiple of 4, got head_dim="
                f"{head_dim}; choose another dim/num_heads or pass rotary=False"
            )
        self.rotary = FrameRotaryEmbedding(head_dim) if rotary else None

    def _heads(self, x: torch.Tensor, proj: nn.Linear, heads: int) -> torch.Tensor:
        b, n, _ = x.shape
        return proj(x).view(b, n, heads, self.head_dim).transpose(1, 2)  # [B, H, N, head_dim]

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        mask: MaskSpec | BlockMask,
        q_positions: FramePositions | None = None,
        kv_positions: FramePositions | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` ``[B, N, dim]`` to ``context`` ``[B, M, dim]`` under ``mask``.

        ``mask`` must be ``[N, M]``. Rotary positions apply when both position sets are given.
        Returns ``[B, N, dim]``.
        """
        q_len, kv_len = (
            (mask.q_len, mask.kv_len) if isinstance(mask, MaskSpec) else mask.seq_lengths
        )
        if (x.shape[1], context.shape[1]) != (q_len, kv_len):
            raise ValueError(
                f"the mask is [{q_len}, {kv_len}] (queries, keys) but the inputs have "
                f"{x.shape[1]} queries and {context.shape[1]} keys"
            )
        q = self._heads(x, self.q_proj, self.num_heads)
        k = self._heads(context, self.k_proj, self.num_kv_heads)
        v = self._heads(context, self.v_proj, self.num_kv_heads)
        if self.rotary is not None and q_positions is not None and kv_positions is not None:
            q, k = self.rotary(q, q_positions), self.rotary(k, kv_positions)
        # "Training" means a backward pass may follow: grad mode on and something needs a grad.
        # (Inference on the CPU with flex needs torch.no_grad() or torch.inference_mode().)
        # Any of q, k, v needing a grad covers inputs and every projection (a frozen q_proj with
        # trainable k_proj / v_proj, as in LoRA-style tuning, still trains).
        training = torch.is_grad_enabled() and (
            q.requires_grad or k.requires_grad or v.requires_grad
        )
        backend = choose_backend(self.attention_backend, x.device, training)
        gqa = self.num_kv_heads != self.num_heads
        if backend == "flex":
            block_mask = mask.block_mask(x.device) if isinstance(mask, MaskSpec) else mask
            # One memory layout whether or not rotary ran, so that the compiled kernel's stride
            # guards hold (a bare BlockMask has no positions, hence no rotary).
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
            out = self._flex(q, k, v, block_mask, gqa)
        else:
            dense = _DENSE_CACHE.get(mask, x.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=dense, enable_gqa=gqa)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))

    def _flex(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask, gqa: bool
    ) -> torch.Tensor:
        """``flex_attention`` with this module's kernel options (``None``: the default for the
        inputs).

        FLASH runs through its own compiled function (``dynamic=False``: a kernel per input
        signature). The default FLASH path compiles for the first ``FLASH_MAX_SHAPES``
        signatures of the process and sends others to the Triton default, whose lengths may be
        dynamic; a default FLASH kernel that fails in the forward call (where it is compiled)
        is reported once and replaced by the Triton default for that (device, dtype, head_dim).
        Options the caller chose are never replaced, and an error from the backward pass is
        raised there: ``tests/test_cuda.py`` runs FLASH's backward for every mask and head dim
        of the default.
        """
        options = self.kernel_options
        chosen_by_default = options is None
        if options is None:
            options = default_kernel_options(q.device, q.dtype, q.shape[-1])
        signature = None
        if chosen_by_default and options.get("BACKEND") == "FLASH":
            signature = _flash_signature(q, k, v, block_mask, gqa)
            if signature not in _FLASH_SHAPES and len(_FLASH_SHAPES) >= FLASH_MAX_SHAPES:
                options = default_kernel_options(q.device)
                if not _FLASH_SHAPES_FULL:
                    _FLASH_SHAPES_FULL.add(True)
                    logger.info(
                        "flexframe: FLASH compiled for %d input shapes already; new shapes use "
                        "kernel_options=%s (FLASH_MAX_SHAPES)",
                        FLASH_MAX_SHAPES,
                        options,
                    )
                signature = None
        flash = options.get("BACKEND") == "FLASH"
        attend = _compiled_flash_attention() if flash else compiled_flex_attention()
        try:
            out = attend(
                q, k, v, block_mask=block_mask, enable_gqa=gqa, kernel_options=options or None
            )
        except Exception as err:
            if not chosen_by_default or not flash or isinstance(err, torch.OutOfMemoryError):
                raise
            _FLASH_FAILED.add((str(q.device), q.dtype, q.shape[-1]))
            fallback = default_kernel_options(q.device)
            first_line = (str(err).strip().splitlines() or [""])[0][:300]
            message = (
                f"flexframe: the FLASH flex_attention kernel failed on {q.device} for "
                f"{q.dtype} head_dim={q.shape[-1]} ({type(err).__name__}: {first_line}); using "
                f"kernel_options={fallback} for these from now on in this process"
            )
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return compiled_flex_attention()(
                q, k, v, block_mask=block_mask, enable_gqa=gqa, kernel_options=fallback or None
            )
        if signature is not None:
            _FLASH_SHAPES.add(signature)
        return out
