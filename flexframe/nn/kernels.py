"""Which attention runs: the backend (flex or sdpa) and flex_attention's kernel.

**Backend.** :func:`resolve_backend` gives ``"auto"`` its one meaning: ``flex`` on a CUDA
device, ``sdpa`` on the CPU (FlexAttention has no backward pass on the CPU, and its CPU kernel
takes tens of seconds to compile per shape). Ask for ``"flex"`` to run FlexAttention's CPU kernel
in inference.

**Kernel.** A :class:`KernelPolicy` owns the choice of flex_attention's ``kernel_options`` and
all the state that choice keeps in a process: its compiled functions, the shapes FLASH was
compiled for and the inputs where FLASH failed. The process has one, :data:`KERNELS`; a test
builds its own, with the hardware it pretends to have. The default options, the first that
applies on a CUDA GPU:

1. ``{"BACKEND": "FLASH"}``, FlashAttention-4 (CuTe DSL) under FlexAttention, on Hopper
   (compute capability 9.x) when ``flash_attn.cute`` can be imported (``pip install
   "flexframe[flash]"``), torch knows the option, the inputs are bfloat16 or float16, the head
   dim is one of :data:`FLASH_HEAD_DIMS` and deterministic algorithms are off (its block-sparse
   backward has no deterministic mode before Blackwell). Measured at 97-114 % of cuDNN's
   token-causal throughput on frame masks, against 67-82 % for the Triton kernel
   (``benchmarks/RESULTS.md``, H200, head dim 128, 16K-64K tokens).
2. ``{"USE_TMA": True}`` on Hopper: the Triton kernel with Tensor Memory Accelerator loads.
3. ``{}``, torch's defaults: the fallback that always works.

**Compilation.** Each mask family (each mask_mod code object) gets its own compiled
``flex_attention`` call, a function with a code object of its own: dynamo keeps a family's
graphs, and counts its recompilations against ``recompile_limit`` (8), apart from the other
families', so a process that runs many masks never hits the limit and silently falls back to
the unfused, N x N-materializing eager kernel (torch warns "flex_attention called without
torch.compile"; the test suite turns that warning into an error). No global setting is changed.
A new BlockMask of the same shape and family reuses the compiled kernel, and from the second
length on torch marks lengths dynamic. FLASH cannot take dynamic lengths ("captures a dynamic
scalar"), so it is compiled with ``dynamic=False``, one kernel per input signature, for at most
``max_flash_shapes`` signatures a policy (later ones run the Triton kernel). A caller whose
shapes never change (a KV-cache step) asks for ``dynamic=False`` on the Triton path too. A
default FLASH kernel that fails in its forward call is reported once (a ``RuntimeWarning``) and
replaced by the Triton default for that (device, dtype, head_dim); options a caller chose are
never replaced, and running out of memory is never a reason to fall back. On the CPU, head dims
below :data:`CPU_MIN_HEAD_DIM` are refused (torch's CPU kernel is wrong there).

**A BlockMask FLASH would ignore.** When a BlockMask's mask_mod returns a constant (torch's
``noop_mask``, the default of ``BlockMask.from_kv_blocks``, or any mask_mod whose result does
not depend on its indices), torch's FLASH lowering calls the mask graph trivial and drops the
BlockMask: FlashAttention-4 then attends to every key, the skipped blocks included (seen on an
H200 with torch 2.11 and flash-attn-4 4.0.0b36; torch 2.13's template does the same; the class
of torch issue 188322). The policy checks each mask_mod once (a trace of it; kept per code
object and closure) and, where such a BlockMask does not already compute every pair FLASH
would, runs the Triton kernel for it by default, and refuses ``kernel_options={"BACKEND":
"FLASH"}`` chosen by the caller with a ``ValueError`` saying what to do. flexframe's own masks
always depend on their indices and never take this path. The check is broader than torch's
own (an output that is literally ``aten.full``): any mask_mod whose result depends on no index
counts, so a few constant mask_mods that torch would still read leave FLASH needlessly, and
none that it drops gets through. Inside an outer ``torch.compile`` the
check cannot run (it needs a trace and a look at the block counts): there, give hand-built
BlockMasks their real mask_mod.

**Short steps with grouped heads on the Triton kernel.** Below 128 queries, torch's CUDA
lowering runs its flex *decoding* kernel, whose tile (``next_pow2(q_len * query heads per kv
head)`` rows) must divide the BlockMask's q block; else torch finds no configuration
(``NoValidChoicesError``; an H200, torch 2.11: a 1-frame streaming step of 100 tokens, 2 heads
a kv head). The policy runs torch's main kernel there (same result): ``BACKEND="TRITON"`` for
``"AUTO"``, ``FORCE_USE_FLEX_ATTENTION=True`` without a backend; a caller's backend or
``FORCE_USE_FLEX_ATTENTION`` is kept (:func:`decoding_kernel_fails`). The main kernel fails too
on a q block below or not a multiple of its own tile, or a kv block not a multiple of 64.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import sys
import types
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from flexframe._checks import check_choice, check_int, resolve_device
from flexframe._vocab import ATTENTION_BACKENDS

logger = logging.getLogger("flexframe")

FLASH_HEAD_DIMS = (64, 96, 128)
"""Head dims the FLASH default is tested with (``tests/test_cuda.py``)."""
CPU_MIN_HEAD_DIM = 32
"""The smallest head dim flex runs on the CPU: torch's CPU kernel is wrong below it at some
lengths (head dims 8 and 16 at 24, 40 or 136 keys, torch 2.13), so smaller ones are refused."""


def resolve_backend(requested: str, device: torch.device | str) -> str:
    """The backend ``requested`` runs on ``device``: ``"auto"`` is flex on CUDA, sdpa elsewhere.

    Example:
        >>> resolve_backend("auto", "cpu"), resolve_backend("flex", "cpu")
        ('sdpa', 'flex')
    """
    check_choice("attention_backend", requested, ATTENTION_BACKENDS)
    if requested != "auto":
        return requested
    return "flex" if torch.device(device).type == "cuda" else "sdpa"


@dataclass(frozen=True)
class Hardware:
    """What the kernel choice needs to know of a device.

    Attributes:
        cuda: a CUDA GPU torch can use.
        capability: its compute capability, ``(0, 0)`` for none.
        flash_installed: ``flash_attn.cute`` (FlashAttention-4) can be imported.
        known_options: the ``kernel_options`` this torch declares.

    Example:
        >>> Hardware.of(torch.device("cpu")).cuda
        False
    """

    cuda: bool
    capability: tuple[int, int]
    flash_installed: bool
    known_options: frozenset[str]

    @staticmethod
    def of(device: torch.device) -> Hardware:
        """The hardware behind ``device``, probed."""
        cuda = device.type == "cuda" and torch.cuda.is_available()
        major, minor = torch.cuda.get_device_capability(device) if cuda else (0, 0)
        return Hardware(cuda, (major, minor), _flash_installed(), _known_kernel_options())


def _flash_installed() -> bool:
    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except (ImportError, ValueError):  # flash_attn absent, or a broken install
        return False


def _known_kernel_options() -> frozenset[str]:
    try:
        from torch.nn.attention.flex_attention import FlexKernelOptions
    except ImportError:  # a torch that does not declare its kernel options
        return frozenset()
    return frozenset(getattr(FlexKernelOptions, "__annotations__", {}))


def flash_available() -> bool:
    """Whether flex_attention's FLASH backend (FlashAttention-4) can run in this process: torch
    knows ``BACKEND`` and ``flash_attn.cute`` can be imported.

    Example:
        >>> isinstance(flash_available(), bool)
        True
    """
    return _flash_installed() and "BACKEND" in _known_kernel_options()


def _call_flex(q, k, v, block_mask, enable_gqa, kernel_options):  # noqa: ANN001, ANN202
    return flex_attention(
        q, k, v, block_mask=block_mask, enable_gqa=enable_gqa, kernel_options=kernel_options
    )


def _flex_function(name: str) -> Callable[..., torch.Tensor]:
    """A function that calls flex_attention under a code object of its own, named ``name``:
    dynamo keeps what it compiles for it, and counts its recompilations, apart."""
    code = _call_flex.__code__.replace(co_name=name)
    if sys.version_info >= (3, 11):
        code = code.replace(co_qualname=name)
    return types.FunctionType(code, _call_flex.__globals__, name)


def _signature(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask, gqa: bool
) -> tuple[Any, ...]:
    """What a ``dynamic=False`` compile specializes on, as far as flexframe can see: shapes,
    dtype, device, GQA, the BlockMask's block size and lengths, and its mask_mod's code with
    the numbers it closes over."""
    mod = block_mask.mask_mod
    closure = tuple(
        c.cell_contents
        for c in (getattr(mod, "__closure__", None) or ())
        if isinstance(c.cell_contents, (int, float, bool, type(None)))
    )
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
        closure,
    )


# -- mask_mods FLASH would call trivial ---------------------------------------------------------
# Ops that read only the shape, dtype or device of a tensor argument: a result built by one of
# them does not depend on the indices it was given.
_SHAPE_ONLY = {"new_ones", "new_zeros", "new_full", "new_empty", "ones_like", "zeros_like",
               "full_like", "empty_like"}  # fmt: skip
_DEPENDS_BY_FN: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_DEPENDS_BY_CODE: dict[tuple[Any, ...], bool] = {}


def _code_key(fn: Any, depth: int = 0) -> tuple[Any, ...] | None:
    """What a mask_mod's trace depends on: its code, and its closure (tensors by dtype and
    rank, one-element tensors and plain values by value, functions by their own key); ``None``
    where unknown."""
    code = getattr(fn, "__code__", None)
    if code is None or depth > 8:
        return None
    cells: list[Any] = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            value = None
        if isinstance(value, torch.Tensor) and value.numel() == 1:  # a flag a trace may branch on
            try:
                cells.append(("scalar", value.dtype, value.dim(), value.item()))
            except (RuntimeError, NotImplementedError):  # no value to read (a meta tensor)
                return None
        elif isinstance(value, torch.Tensor):
            cells.append(("tensor", value.dtype, value.dim()))
        elif isinstance(value, (bool, int, float, str, type(None))):
            cells.append((type(value), value))
        elif callable(value) and hasattr(value, "__code__"):
            inner = _code_key(value, depth + 1)
            if inner is None:
                return None
            cells.append(inner)
        else:
            return None
    defaults = getattr(fn, "__defaults__", None) or ()
    if not all(isinstance(d, (bool, int, float, str, type(None))) for d in defaults):
        return None
    return (code, tuple(cells), defaults)


def _trace(mask_mod: Any, device: torch.device) -> torch.fx.Graph | None:
    """``mask_mod`` traced on four scalar indices (``None`` if it cannot be traced here)."""
    from torch._decomp import core_aten_decompositions

    def called(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> Any:
        return mask_mod(b, h, q, kv)  # four arguments, as flex gives them (bound methods and
        # mask_mods with defaulted parameters included)

    indices = [torch.zeros((), dtype=torch.int32, device=device) for _ in range(4)]
    decompositions: Any = core_aten_decompositions()  # what inductor lowers: new_ones -> full
    try:
        return make_fx(called, decomposition_table=decompositions)(*indices).graph
    except Exception as err:  # noqa: BLE001 (any failure: unknown)
        logger.debug("flexframe: could not trace mask_mod %r (%s)", mask_mod, err)
        return None


def _reads_values(graph: torch.fx.Graph) -> bool:
    """Whether the trace read a tensor's value into Python (``.item()``, a branch on a tensor):
    then another call with other tensors can trace differently."""
    return any("_local_scalar_dense" in str(node.target) for node in graph.nodes)


def _traced_depends_on_indices(graph: torch.fx.Graph) -> bool:
    """Whether a traced mask_mod's result depends on any of its four indices. This is broader
    than torch's own test (an output that is literally ``aten.full``): a result that depends on
    no index is constant, and is taken for one, so that nothing FLASH drops gets through."""
    output = next(node for node in graph.nodes if node.op == "output").args[0]
    stack = [output] if isinstance(output, torch.fx.Node) else []
    seen: set[torch.fx.Node] = set()
    while stack:
        node = stack.pop()
        if node.op == "placeholder":
            return True
        if node in seen:
            continue
        seen.add(node)
        name = getattr(getattr(node.target, "_schema", None), "name", "").split("::")[-1]
        inputs = node.all_input_nodes[1:] if name in _SHAPE_ONLY else node.all_input_nodes
        stack.extend(inputs)
    return False


def _depends_on_indices(mask_mod: Any, device: torch.device) -> bool:
    """Whether ``mask_mod``'s result depends on its indices, kept per mask_mod and per code key
    (a code key only where the trace read no tensor's value). A mask_mod that cannot be traced
    here counts as depending on them: its behaviour is left as it was."""
    try:
        return _DEPENDS_BY_FN[mask_mod]
    except (KeyError, TypeError):  # not seen, or not weakly referable
        pass
    key = _code_key(mask_mod)
    depends = _DEPENDS_BY_CODE.get(key) if key is not None else None
    if depends is None:
        graph = _trace(mask_mod, device)
        depends = graph is None or _traced_depends_on_indices(graph)
        if key is not None and graph is not None and not _reads_values(graph):
            _DEPENDS_BY_CODE[key] = depends
    try:
        _DEPENDS_BY_FN[mask_mod] = depends
    except TypeError:
        pass
    return depends


def decoding_kernel_fails(
    q: torch.Tensor,
    k: torch.Tensor,
    block_mask: BlockMask,
    enable_gqa: bool = False,
    block_m: int | None = None,
) -> bool:
    """Whether torch's CUDA flex *decoding* kernel (what it runs for fewer than 128 queries)
    finds no configuration for these inputs: its tile of ``block_m`` rows (the caller's
    ``BLOCK_M`` option; by default ``max(16, next_pow2(q_len * query heads per kv head))``) does
    not divide the BlockMask's q block (the module doc says more). The policy then runs torch's
    main kernel.

    Example:
        >>> from flexframe import get_mask
        >>> bm = get_mask("causal-frame", num_frames=1, num_patches_per_frame=100).block_mask()
        >>> q, k = torch.zeros(1, 4, 100, 64), torch.zeros(1, 2, 100, 64)
        >>> decoding_kernel_fails(q, k, bm, enable_gqa=True), decoding_kernel_fails(q, q, bm)
        (True, False)
    """
    q_len = q.shape[-2]
    if not 0 < q_len < 128:
        return False
    group = q.shape[1] // k.shape[1] if enable_gqa and k.shape[1] else 1
    rows = block_m or max(16, 1 << (q_len * group - 1).bit_length())
    return block_mask.BLOCK_SIZE[0] % rows != 0


def _without_failing_decoding(
    options: dict[str, Any],
    q: torch.Tensor,
    k: torch.Tensor,
    block_mask: BlockMask,
    enable_gqa: bool,
) -> dict[str, Any]:
    """``options`` that run torch's main kernel where its decoding kernel would find no
    configuration on CUDA (the module doc says how; a caller's choice is kept)."""
    backend = options.get("BACKEND")
    if (
        not q.is_cuda
        or backend not in (None, "AUTO")
        or "FORCE_USE_FLEX_ATTENTION" in options
        or not decoding_kernel_fails(q, k, block_mask, enable_gqa, options.get("BLOCK_M"))
    ):
        return options
    if backend == "AUTO":
        return {**options, "BACKEND": "TRITON"}
    return {**options, "FORCE_USE_FLEX_ATTENTION": True}


def flash_would_ignore_blocks(block_mask: BlockMask) -> bool:
    """Whether torch's FLASH backend would compute something else than ``block_mask`` says:
    its mask_mod returns a constant (FLASH then drops the BlockMask and attends to every key)
    and the BlockMask does not already compute exactly that (every block, each visible).

    Example:
        >>> from torch.nn.attention.flex_attention import BlockMask
        >>> blocks = BlockMask.from_kv_blocks(torch.tensor([[[1, 2]]]),
        ...                                   torch.tensor([[[[0, 1], [0, 1]]]]))  # no mask_mod
        >>> flash_would_ignore_blocks(blocks)  # the first row skips block 1
        True
        >>> from flexframe import get_mask
        >>> flash_would_ignore_blocks(get_mask("causal-frame", num_frames=2,
        ...                                    num_patches_per_frame=128).block_mask())
        False
    """
    device = block_mask.kv_num_blocks.device
    if _depends_on_indices(block_mask.mask_mod, device):
        return False
    zero = torch.zeros((), dtype=torch.int32, device=device)
    visible = bool(block_mask.mask_mod(zero, zero, zero, zero))
    full = block_mask.full_kv_num_blocks
    full = torch.zeros_like(block_mask.kv_num_blocks) if full is None else full
    computed_whole = block_mask.kv_num_blocks + full if visible else full
    if not visible and bool((block_mask.kv_num_blocks > 0).any()):
        return True  # partial blocks that show nothing; FLASH would show them
    kv_blocks = -(-block_mask.seq_lengths[1] // block_mask.BLOCK_SIZE[1])
    return not bool((computed_whole == kv_blocks).all())


class KernelPolicy:
    """The choice of flex_attention's kernel, and the state it keeps, in one object.

    Args:
        hardware: how to learn a device's :class:`Hardware` (probed by default; a test passes
            what it pretends to run on).
        max_flash_shapes: input signatures the default FLASH kernel is compiled for.
        compile: the compiler (``torch.compile``); a test may pass a stand-in.

    Example:
        >>> policy = KernelPolicy(hardware=lambda device: Hardware(True, (9, 0), True,
        ...                                                      frozenset({"BACKEND"})))
        >>> policy.options("cuda", torch.bfloat16, 128), policy.options("cuda", torch.float32, 128)
        ({'BACKEND': 'FLASH'}, {})
    """

    def __init__(
        self,
        hardware: Callable[[torch.device], Hardware] | None = None,
        max_flash_shapes: int = 8,
        compile: Callable[..., Callable[..., torch.Tensor]] = torch.compile,
    ) -> None:
        self._probe = hardware or Hardware.of
        self.max_flash_shapes = check_int("max_flash_shapes", max_flash_shapes, minimum=0)
        self._compile = compile
        self._hardware: dict[str, Hardware] = {}
        self._compiled: dict[tuple[Any, bool, bool | None], Callable[..., torch.Tensor]] = {}
        self.flash_failed: set[tuple[str, torch.dtype, int]] = set()
        """(device, dtype, head_dim) where the default FLASH kernel failed."""
        self.flash_signatures: set[tuple[Any, ...]] = set()
        """Input signatures the default FLASH path compiled for."""
        self._said_full = False

    def hardware(self, device: torch.device | str) -> Hardware:
        """The (cached) :class:`Hardware` of ``device``."""
        key = str(device)
        if key not in self._hardware:
            self._hardware[key] = self._probe(torch.device(device))
        return self._hardware[key]

    def options(
        self,
        device: torch.device | str,
        dtype: torch.dtype | None = None,
        head_dim: int | None = None,
    ) -> dict[str, Any]:
        """The default ``kernel_options`` for these inputs (a fresh dict); see the module doc.

        Without ``dtype`` and ``head_dim``, or where FLASH failed once, the choice starts at the
        Triton kernel.
        """
        hw = self.hardware(device)
        if not hw.cuda:
            return {}
        hopper = hw.capability[0] == 9
        if (
            hopper
            and dtype in (torch.bfloat16, torch.float16)
            and head_dim in FLASH_HEAD_DIMS
            and not torch.are_deterministic_algorithms_enabled()
            and (str(device), dtype, head_dim) not in self.flash_failed
            and hw.flash_installed
            and "BACKEND" in hw.known_options
        ):
            return {"BACKEND": "FLASH"}
        if hopper and "USE_TMA" in hw.known_options:
            return {"USE_TMA": True}
        return {}

    def compiled(
        self, mask_mod: Any = None, flash: bool = False, dynamic: bool | None = None
    ) -> Callable[..., torch.Tensor]:
        """The compiled ``(q, k, v, block_mask, enable_gqa, kernel_options)`` call for the mask
        family of ``mask_mod`` (its code object; ``None``: a shared one), for FLASH (always
        ``dynamic=False``) or the Triton kernel (torch's automatic dynamic shapes, or
        ``dynamic``); built on first use."""
        code = getattr(mask_mod, "__code__", None)
        dynamic = False if flash else dynamic
        key = (code, flash, dynamic)
        if key not in self._compiled:
            family = re.sub(r"\W", "_", getattr(code, "co_name", "any"))
            fn = _flex_function(f"flex_attention_{family}_{len(self._compiled)}")
            self._compiled[key] = self._compile(fn, dynamic=dynamic)
        return self._compiled[key]

    def triton(self) -> Callable[..., torch.Tensor]:
        """The shared compiled call (Triton kernel) for masks of any family."""
        return self.compiled()

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        block_mask: BlockMask,
        *,
        enable_gqa: bool = False,
        kernel_options: Mapping[str, Any] | None = None,
        dynamic: bool | None = None,
    ) -> torch.Tensor:
        """``flex_attention(q, k, v)`` ``[B, H, N, D]`` under ``block_mask`` with the caller's
        ``kernel_options``, or, for ``None``, this policy's default (with FLASH's shape budget
        and fallback, see the module docstring). ``dynamic=False`` compiles the Triton path for
        fixed shapes (a caller whose shapes never change)."""
        if q.device.type == "cpu" and q.shape[-1] < CPU_MIN_HEAD_DIM:
            raise ValueError(
                f"flex_attention on the CPU with head_dim={q.shape[-1]} is refused: torch's CPU "
                f"kernel gives wrong results for head dims below {CPU_MIN_HEAD_DIM} at some "
                "lengths (measured with torch 2.13: errors up to 2.8, and NaN, against sdpa at "
                "24 or 136 keys). Use attention_backend='sdpa' (what 'auto' runs on the CPU), or "
                f"a head dim of {CPU_MIN_HEAD_DIM} or more"
            )
        chosen_by_default = kernel_options is None
        device = str(q.device)
        if kernel_options is None:
            options = self.options(device, q.dtype, q.shape[-1])
        else:
            options = dict(kernel_options)
        signature = None
        if chosen_by_default and options.get("BACKEND") == "FLASH":
            signature = _signature(q, k, v, block_mask, enable_gqa)
            if (
                signature not in self.flash_signatures
                and len(self.flash_signatures) >= self.max_flash_shapes
            ):
                options = self.options(device)
                if not self._said_full:
                    self._said_full = True
                    logger.info(
                        "flexframe: FLASH compiled for %d input shapes already; new shapes use "
                        "kernel_options=%s (max_flash_shapes)",
                        self.max_flash_shapes,
                        options,
                    )
                signature = None
        flash = options.get("BACKEND") == "FLASH"
        if flash and not torch.compiler.is_compiling() and flash_would_ignore_blocks(block_mask):
            if not chosen_by_default:
                raise ValueError(
                    "kernel_options={'BACKEND': 'FLASH'} with a BlockMask whose mask_mod "
                    f"({getattr(block_mask.mask_mod, '__name__', block_mask.mask_mod)!r}) returns "
                    "a constant and that skips blocks: torch's FLASH backend drops such a "
                    "BlockMask and attends to every key, the skipped blocks included. Give the "
                    "BlockMask its real mask_mod (flexframe's get_mask(...).block_mask() does), or "
                    "leave kernel_options unset (flexframe then runs the Triton kernel for it)"
                )
            options, flash, signature = self.options(device), False, None
        if not flash:
            options = _without_failing_decoding(options, q, k, block_mask, enable_gqa)
        try:
            attend = self.compiled(block_mask.mask_mod, flash, dynamic)
            out = attend(q, k, v, block_mask, enable_gqa, options or None)
        except Exception as err:
            if not chosen_by_default or not flash or isinstance(err, torch.OutOfMemoryError):
                raise
            self.flash_failed.add((device, q.dtype, q.shape[-1]))
            fallback = self.options(device)
            first_line = (str(err).strip().splitlines() or [""])[0][:300]
            message = (
                f"flexframe: the FLASH flex_attention kernel failed on {device} for "
                f"{q.dtype} head_dim={q.shape[-1]} ({type(err).__name__}: {first_line}); using "
                f"kernel_options={fallback} for these from now on in this process"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            attend = self.compiled(block_mask.mask_mod, flash=False, dynamic=dynamic)
            fallback = _without_failing_decoding(fallback, q, k, block_mask, enable_gqa)
            return attend(q, k, v, block_mask, enable_gqa, fallback or None)
        if signature is not None:
            self.flash_signatures.add(signature)
        return out


KERNELS = KernelPolicy()
"""The process's kernel policy, used by every :class:`~flexframe.nn.Attention` not given one."""


def default_kernel_options(
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    head_dim: int | None = None,
) -> dict[str, Any]:
    """The flex_attention ``kernel_options`` flexframe uses by default for these inputs
    (:data:`KERNELS`' choice; see the module docstring for the order).

    Example:
        >>> default_kernel_options("cpu", torch.bfloat16, 128)
        {}
    """
    return KERNELS.options(resolve_device(device), dtype, head_dim)


def compiled_flex_attention() -> Callable[..., torch.Tensor]:
    """The process's shared compiled ``flex_attention`` (the Triton kernel), built on first use.

    It takes ``(q, k, v, block_mask=..., enable_gqa=..., kernel_options=...)`` as
    ``flex_attention`` does.

    Example:
        >>> compiled_flex_attention() is compiled_flex_attention()
        True
    """
    return _shared_flex()


@functools.cache
def _shared_flex() -> Callable[..., torch.Tensor]:
    return torch.compile(flex_attention)
