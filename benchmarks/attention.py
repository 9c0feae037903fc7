"""Frame-masked attention through flexframe against cuDNN, FlashAttention-2 and dense-mask SDPA.

Every variant's output (and, for ``fwdbwd``, its q/k/v gradients) is checked against a reference
before it is timed; a variant that fails is reported FAILED and not timed, one that raises is an
error row, never a crash. Throughput is in useful TFLOP/s: FLOPs counted on the exact mask area
(see ``_common.py``), so a variant that computes masked-out or padding work gains nothing.

Run ``python benchmarks/attention.py --help``; ``benchmarks/README.md`` explains the columns.

Examples::

    python benchmarks/attention.py --out results/attention.json --plot results/attention.png
    python benchmarks/attention.py --device cpu --quick --out /tmp/smoke.json
    python benchmarks/attention.py --merge a.json b.json --out all.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _common as C
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from flexframe import MaskSpec, get_mask
from flexframe.sampling import MERGE_STRATEGIES

FRAME_MASKS = C.FRAME_MASKS
MASKS = (*C.ALL_FRAME_MASKS, "token-causal")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Relative-error bounds against the fp32 reference, by input dtype.
DEFAULT_TOL = {torch.bfloat16: 2e-2, torch.float16: 1e-2, torch.float32: 1e-3}

# kernel_options to try, by name. fwd_/bwd_ prefixes tune one pass only (an unprefixed BLOCK_M
# or num_warps would also change the backward kernel). A Triton kernel silently drops USE_TMA
# where it cannot use TMA (torch's can_use_tma), so a "tma" row that equals "default" may mean
# that.
FLEX_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "tma": {"USE_TMA": True},
    "tma-safe-rows": {"USE_TMA": True, "ROWS_GUARANTEED_SAFE": True},
    "fwd-128x128-w8-s3": {
        "fwd_BLOCK_M": 128,
        "fwd_BLOCK_N": 128,
        "fwd_num_warps": 8,
        "fwd_num_stages": 3,
    },
    "tma-fwd-128x128-w8-s2": {
        "USE_TMA": True,
        "fwd_BLOCK_M": 128,
        "fwd_BLOCK_N": 128,
        "fwd_num_warps": 8,
        "fwd_num_stages": 2,
    },
    "bwd-64x64-w4-s3": {
        "bwd_BLOCK_M1": 64,
        "bwd_BLOCK_N1": 64,
        "bwd_BLOCK_M2": 64,
        "bwd_BLOCK_N2": 64,
        "bwd_num_warps": 4,
        "bwd_num_stages": 3,
    },
    "flash": {"BACKEND": "FLASH"},
    # Inductor searches its own config list; its choice is printed as "AUTOTUNE ..." on stderr.
    "max-autotune": {},
}
COMPILE_MODES = {"max-autotune": "max-autotune-no-cudagraphs"}
BASELINE_VARIANTS = ("cudnn-token-causal", "fa2-token-causal", "sdpa-dense-mask", "flex-padded")
# flex-padded-<config>: padded frames under that config's kernel options (flex-padded: none).
PADDED_CONFIGS = ("tma", "flash")
OPT_IN_VARIANTS = (
    "flex-tma-fwd-128x128-w8-s2",
    "flex-max-autotune",
    *(f"flex-padded-{name}" for name in PADDED_CONFIGS),
)
# --quick: one compile per (mask, pass) and what needs none.
QUICK_VARIANTS = (*BASELINE_VARIANTS, "flex-default", "flex-tma", "flex-flash")
CUDNN = "cudnn-token-causal"
DENSE = "sdpa-dense-mask"


# -- masks and inputs ---------------------------------------------------------------------------
def key_padding_spec(num_frames: int, real_patches: int, padded_patches: int) -> MaskSpec:
    """Keys of each ``padded_patches``-token frame past its first ``real_patches`` are hidden.

    Example:
        >>> key_padding_spec(2, 1, 2).to_dense().int().tolist()[0]
        [1, 0, 1, 0]
    """
    n = num_frames * padded_patches

    def key_padding(b, h, q_idx, kv_idx):
        return kv_idx % padded_patches < real_patches

    return MaskSpec(
        name="key-padding",
        params={"real_patches": real_patches, "padded_patches": padded_patches},
        q_len=n,
        kv_len=n,
        mod_factory=lambda device: key_padding,
        num_patches_per_frame=padded_patches,
        description=f"hide the last {padded_patches - real_patches} (padding) keys of each frame",
    )


def padded_layout(num_frames: int, real_patches: int, padded_patches: int) -> torch.Tensor:
    """``[num_frames * real_patches]`` int64: where each real token sits in the padded sequence.

    Example:
        >>> padded_layout(2, 2, 3).tolist()
        [0, 1, 3, 4]
    """
    frames = torch.arange(num_frames, dtype=torch.int64)[:, None] * padded_patches
    return (frames + torch.arange(real_patches, dtype=torch.int64)[None, :]).reshape(-1)


def to_padded(
    x: torch.Tensor, layout: torch.Tensor, padded_len: int, fill: torch.Tensor | None
) -> torch.Tensor:
    """``[B, H, N, D]`` real tokens -> ``[B, H, padded_len, D]``; padding rows from ``fill``.

    ``fill`` (``[B, H, padded_len, D]``) supplies the padding rows (random inputs, so padding
    never hides behind zeros); ``None`` fills them with zeros (the gradient of padding outputs).
    """
    shape = (*x.shape[:-2], padded_len, x.shape[-1])
    out = torch.zeros(shape, dtype=x.dtype, device=x.device) if fill is None else fill.clone()
    out[..., layout.to(x.device), :] = x
    return out


def make_inputs(
    shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device, seed: int
) -> tuple[torch.Tensor, ...]:
    """Fresh ``q, k, v, dout`` of ``shape`` ``[B, H, N, D]``, standard normal, in ``dtype``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return tuple(
        torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)
        for _ in range(4)
    )


# -- references ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Reference:
    """What a variant's result is compared with, in fp32.

    ``full`` holds ``out, dq, dk, dv`` of every token (up to ``--ref-max-len``: SDPA's math
    backend with the dense mask). Beyond that, ``chunked`` holds the exact ``out`` of every token
    and ``dq`` of the sampled query ``rows``, ``dk, dv`` of the sampled key ``cols``, computed in
    chunks without any N x N tensor (see :func:`chunked_reference`).
    """

    method: str
    full: tuple[torch.Tensor, ...] | None = None
    chunked: tuple[torch.Tensor | None, ...] | None = None
    rows: torch.Tensor | None = None
    cols: torch.Tensor | None = None


def dense_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dout: torch.Tensor,
    dense: torch.Tensor,
    with_grads: bool,
) -> tuple[torch.Tensor, ...]:
    """fp32 ``(out, dq, dk, dv)`` (or ``(out,)``) from SDPA's math backend with the dense mask."""
    qf, kf, vf = (t.detach().float().requires_grad_(with_grads) for t in (q, k, v))
    with sdpa_kernel(SDPBackend.MATH):
        out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=dense)
    if not with_grads:
        return (out.detach(),)
    grads = torch.autograd.grad(out, (qf, kf, vf), dout.float())
    return (out.detach(), *grads)


def chunked_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dout: torch.Tensor,
    mask_mod: Callable[..., torch.Tensor],
    rows: torch.Tensor,
    cols: torch.Tensor,
    with_grads: bool,
    chunk: int = 256,
) -> tuple[torch.Tensor | None, ...]:
    """Exact fp32 attention at any length: ``(out, dq[rows], dk[cols], dv[cols])``.

    ``out`` (``[B, H, N, D]``) and the row log-sum-exps come from one pass over ``chunk`` query
    rows at a time, the mask evaluated on ``[chunk, N]`` only. The gradients use the textbook
    formulas with ``P = exp(S - lse)`` and ``delta = rowsum(dO * O)``: ``dq_i = scale *
    sum_j P_ij (dP_ij - delta_i) k_j`` for the sampled rows, ``dv_j = sum_i P_ij dO_i`` and
    ``dk_j = scale * sum_i P_ij (dP_ij - delta_i) q_i`` for the sampled key columns (a pass over
    all queries against those columns only). Without ``with_grads`` the last three are None.
    """
    n, d = k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d)
    device = q.device
    kf, vf = k.float(), v.float()
    keys = torch.arange(n, device=device)
    zero = torch.zeros((), dtype=torch.int64, device=device)

    def scores(query_idx: torch.Tensor, key_idx: torch.Tensor) -> torch.Tensor:
        visible = mask_mod(zero, zero, query_idx[:, None], key_idx[None, :])
        s = (q[..., query_idx, :].float() @ kf[..., key_idx, :].transpose(-1, -2)) * scale
        return s.masked_fill(~visible, -math.inf)

    out = torch.empty(q.shape, dtype=torch.float32, device=device)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=device)
    for start in range(0, n, chunk):
        r = keys[start : start + chunk]
        s = scores(r, keys)
        lse[..., r] = torch.logsumexp(s, dim=-1)
        out[..., r, :] = torch.exp(s - lse[..., r, None]) @ vf
    if not bool(torch.isfinite(lse).all()):
        raise RuntimeError("a query row sees no key: the attention reference is undefined")
    if not with_grads:
        return out, None, None, None
    dof = dout.float()
    delta = (dof * out).sum(-1)  # [B, H, N]
    p = torch.exp(scores(rows, keys) - lse[..., rows, None])
    ds = p * (dof[..., rows, :] @ vf.transpose(-1, -2) - delta[..., rows, None])
    dq = (ds @ kf) * scale
    dk = torch.zeros((*q.shape[:-2], cols.numel(), d), dtype=torch.float32, device=device)
    dv = torch.zeros_like(dk)
    for start in range(0, n, chunk):
        r = keys[start : start + chunk]
        p = torch.exp(scores(r, cols) - lse[..., r, None])  # [B, H, chunk, C]
        dv += p.transpose(-1, -2) @ dof[..., r, :]
        ds = p * (dof[..., r, :] @ vf[..., cols, :].transpose(-1, -2) - delta[..., r, None])
        dk += (ds.transpose(-1, -2) @ q[..., r, :].float()) * scale
    return out, dq, dk, dv


def sample_positions(n: int, count: int, seed: int, device: torch.device) -> torch.Tensor:
    """``min(count, n)`` sorted distinct positions: the first, the last and a random rest.

    Example:
        >>> pos = sample_positions(10, 4, seed=0, device=torch.device("cpu"))
        >>> len(pos), pos[0].item(), pos[-1].item(), bool((pos.diff() > 0).all())
        (4, 0, 9, True)
    """
    gen = torch.Generator().manual_seed(seed)
    inner = 1 + torch.randperm(max(n - 2, 0), generator=gen)[: max(count - 2, 0)]
    return torch.unique(torch.cat([torch.tensor([0, n - 1]), inner])).to(device)


# -- variants -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Prepared:
    """A variant ready to run: ``attend(q, k, v)`` on its own layout of the group's inputs."""

    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    dout: torch.Tensor
    extract: Callable[[torch.Tensor], torch.Tensor]  # back to the real tokens' layout
    mask_bytes: int | None
    tokens_computed: int
    kernel_options: dict[str, Any] | None = None
    block_stats: dict[str, Any] | None = None


class Unavailable(Exception):
    """This variant cannot run here (no CUDA, missing backend, option unknown to this torch)."""


_COMPILED: dict[tuple[str | None, bool], Callable[..., torch.Tensor]] = {}


def compiled_flex(mode: str | None, eager: bool, dynamic: bool) -> Callable[..., torch.Tensor]:
    """``torch.compile(flex_attention)`` for a compile mode (one callable per mode)."""
    if eager:
        return flex_attention
    key = (mode, dynamic)
    if key not in _COMPILED:
        # dynamic=False by default: each length gets its own static kernel, as a fixed-shape
        # video model would. --dynamic-shapes trades that for one kernel across lengths (fewer
        # compiles); rows record which.
        _COMPILED[key] = torch.compile(flex_attention, dynamic=dynamic, mode=mode)
    return _COMPILED[key]


def known_kernel_options() -> set[str] | None:
    """Keys this torch's ``FlexKernelOptions`` declares (``None`` where it has none)."""
    try:
        from torch.nn.attention.flex_attention import FlexKernelOptions
    except ImportError:
        return None
    return set(getattr(FlexKernelOptions, "__annotations__", {}))


def check_kernel_options(options: dict[str, Any]) -> None:
    """Raise :class:`Unavailable` for a key this torch's FlexKernelOptions does not declare."""
    known = known_kernel_options()
    if known is None:
        return
    for key in options:
        bare = key[4:] if key.startswith(("fwd_", "bwd_")) else key
        if bare not in known:
            raise Unavailable(
                f"kernel option {key!r} is not in torch {torch.__version__}'s FlexKernelOptions "
                f"({', '.join(sorted(known))})"
            )


def block_stats(block_mask: BlockMask) -> dict[str, Any]:
    """Partial and full block counts and sparsity (percent of blocks skipped)."""
    full = block_mask.full_kv_num_blocks
    return {
        "partial_blocks": int(block_mask.kv_num_blocks.sum()),
        "full_blocks": int(full.sum()) if full is not None else 0,
        "block_sparsity_pct": round(float(block_mask.sparsity()), 2),
    }


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclasses.dataclass
class Group:
    """One (sequence length, frame size, mask) point: a spec, inputs and their reference."""

    n_requested: int
    patches: int | None
    mask: str
    spec: MaskSpec
    num_frames: int | None
    padded_patches: int | None
    inputs: tuple[torch.Tensor, ...] = ()
    dense: torch.Tensor | None = None
    visible_pairs: int = 0


def prepare(ctx: Context, group: Group, variant: str, kind: str) -> Prepared:
    """Build ``variant`` for ``group`` (raises :class:`Unavailable` where it cannot run)."""
    q, k, v, dout = group.inputs
    device, n = ctx.device, group.spec.q_len
    if kind in ("cudnn", "fa2"):
        if device.type != "cuda":
            raise Unavailable(f"{variant} needs CUDA (device is {device})")
        backend = SDPBackend.CUDNN_ATTENTION if kind == "cudnn" else SDPBackend.FLASH_ATTENTION

        def attend_causal(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        return Prepared(attend_causal, q, k, v, dout, _identity, 0, n)
    if kind == "dense":
        if n > ctx.args.dense_max_len:
            raise Unavailable(
                f"skipped: N x N mask is {C.fmt_bytes(n * n)} (N={n} > --dense-max-len "
                f"{ctx.args.dense_max_len})"
            )
        dense = group.dense
        if dense is None:
            raise RuntimeError("internal: dense mask was not built for this group")
        # CUDA: the memory-efficient kernel, the one SDPA uses with a mask; CPU: SDPA's choice.
        backends = [SDPBackend.EFFICIENT_ATTENTION] if device.type == "cuda" else None

        def attend_dense(q, k, v):
            if backends is None:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
            with sdpa_kernel(backends):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=dense)

        return Prepared(attend_dense, q, k, v, dout, _identity, n * n, n)

    # flex variants
    config = kind.removeprefix("flex:")
    padded_config = _padded_base(config) if _is_padded(config) else None
    options = dict(ctx.flex_configs[padded_config or config])
    if config not in ("default", "padded") and device.type != "cuda":
        raise Unavailable(f"{variant}: kernel_options tune the Triton (CUDA) kernel")
    if config == "flash" and "BACKEND" not in (known_kernel_options() or set()):
        raise Unavailable(f"torch {torch.__version__} has no BACKEND kernel option (FLASH)")
    check_kernel_options(options)
    flex = compiled_flex(COMPILE_MODES.get(config), ctx.args.flex_eager, ctx.args.dynamic_shapes)
    kernel_options = options or None
    if padded_config is not None:
        if group.padded_patches is None:
            raise Unavailable("frames are already a multiple of the block size")
        pp, nf = group.padded_patches, group.num_frames
        padded = C.frame_spec(
            group.mask, nf, pp, ctx.args.window_size, ctx.args.timestamp_merge,
            **C.frame_options(ctx.args),
        )  # fmt: skip
        padded = padded & key_padding_spec(nf, group.patches, pp)
        block_mask = padded.block_mask(device, ctx.args.block_size)
        layout = padded_layout(nf, group.patches, pp).to(device)
        fill = make_inputs(tuple(q.shape[:-2]) + (nf * pp, q.shape[-1]), q.dtype, device, 7)
        qp, kp, vp = (
            to_padded(t, layout, nf * pp, f) for t, f in zip((q, k, v), fill[:3], strict=True)
        )
        dp = to_padded(dout, layout, nf * pp, None)  # padding outputs carry no loss

        def attend_padded(q, k, v):
            return flex(q, k, v, block_mask=block_mask, kernel_options=kernel_options)

        return Prepared(
            attend_padded,
            qp,
            kp,
            vp,
            dp,
            lambda x: x.index_select(-2, layout),
            C.block_mask_bytes(block_mask),
            nf * pp,
            None,
            block_stats(block_mask),
        )
    block_mask = group.spec.block_mask(device, ctx.args.block_size)

    def attend_flex(q, k, v):
        return flex(q, k, v, block_mask=block_mask, kernel_options=kernel_options)

    return Prepared(
        attend_flex,
        q,
        k,
        v,
        dout,
        _identity,
        C.block_mask_bytes(block_mask),
        n,
        options,
        block_stats(block_mask),
    )


# -- running --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Context:
    args: argparse.Namespace
    device: torch.device
    dtype: torch.dtype
    tol: float
    env: dict[str, Any]
    flex_configs: dict[str, dict[str, Any]]
    started: float
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def over_budget(self) -> bool:
        budget = self.args.time_budget_s
        return budget is not None and time.perf_counter() - self.started > budget

    def save(self) -> None:
        if self.args.out:
            C.write_json(self.args.out, document(self.env, vars_for_json(self.args), self.rows))


def run_once(
    prepared: Prepared, pass_name: str
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], Callable[[], Any]]:
    """Run a variant once (returns out, grads in the real layout) and the function to time."""
    attend, dout = prepared.attend, prepared.dout
    if pass_name == "fwd":
        q, k, v = prepared.q, prepared.k, prepared.v

        def step():
            return attend(q, k, v)

        # Not under no_grad: dynamo guards on grad mode, and the timed calls run without it
        # (the inputs need no grad, so no graph is recorded either way).
        out = step()
        return prepared.extract(out), (), step
    q, k, v = (t.detach().requires_grad_(True) for t in (prepared.q, prepared.k, prepared.v))

    def step():
        out = attend(q, k, v)
        return out, torch.autograd.grad(out, (q, k, v), dout)

    out, grads = step()
    return prepared.extract(out.detach()), tuple(prepared.extract(g) for g in grads), step


def check_result(
    ref: Reference, out: torch.Tensor, grads: tuple[torch.Tensor, ...]
) -> dict[str, float]:
    """Relative error of ``out`` (and the q/k/v grads) against the reference, by tensor."""
    names = ("out", "dq", "dk", "dv")
    got = (out, *grads)
    if ref.full is not None:
        return {
            name: C.relative_error(a.float(), b)
            for name, a, b in zip(names[: len(got)], got, ref.full, strict=True)
        }
    ref_out, ref_dq, ref_dk, ref_dv = ref.chunked
    errors = {"out": C.relative_error(out.float(), ref_out)}
    if grads:
        dq, dk, dv = grads
        errors["dq@rows"] = C.relative_error(dq[..., ref.rows, :].float(), ref_dq)
        errors["dk@cols"] = C.relative_error(dk[..., ref.cols, :].float(), ref_dk)
        errors["dv@cols"] = C.relative_error(dv[..., ref.cols, :].float(), ref_dv)
    return errors


def base_row(ctx: Context, group: Group, variant: str, kind: str, pass_name: str) -> dict[str, Any]:
    """A row with what is known before running: the point, the variant and its useful FLOPs."""
    args = ctx.args
    return {
        "n_requested": group.n_requested,
        "tokens": group.spec.q_len,
        "patches": group.patches,
        "mask": group.mask,
        "variant": variant,
        "pass": pass_name,
        "status": None,
        "message": None,
        "median_ms": None,
        "tflops": None,
        "pct_of_cudnn": None,
        "speedup_vs_dense": None,
        "rel_err": None,
        "rel_err_detail": None,
        "check": None,
        "visible_pairs": group.visible_pairs,
        "useful_flops": C.useful_flops(
            group.visible_pairs, args.batch, args.heads, args.head_dim, pass_name
        ),
        "mask_bytes": None,
        "dense_mask_bytes": group.spec.q_len * group.spec.kv_len,
        "tokens_computed": None,
        "kernel_options": None,
        "block_stats": None,
        "first_call_s": None,
        "flex_compiled": not args.flex_eager if kind.startswith("flex") else None,
        "flex_dynamic_shapes": args.dynamic_shapes if kind.startswith("flex") else None,
        "gpu_name": ctx.env["gpu_name"],
        "batch": args.batch,
        "heads": args.heads,
        "head_dim": args.head_dim,
        "dtype": str(ctx.dtype).removeprefix("torch."),
    }


def run_variant(
    ctx: Context, group: Group, ref: Reference, variant: str, kind: str, pass_name: str
) -> dict[str, Any]:
    """One table row: prepare, run once, check, time. Never raises for the variant's own faults."""
    args = ctx.args
    row = base_row(ctx, group, variant, kind, pass_name)
    if ctx.over_budget():
        row["status"] = "skipped"
        row["message"] = f"skipped: --time-budget-s {args.time_budget_s} spent"
        return row
    options = ctx.flex_configs.get(kind.removeprefix("flex:"), {})
    if pass_name == "fwd" and options and all(key.startswith("bwd_") for key in options):
        row["status"] = "skipped"
        row["message"] = "skipped: only bwd_ options, the forward is the default's"
        return row
    prepared = None
    try:
        prepared = prepare(ctx, group, variant, kind)
        row["mask_bytes"] = prepared.mask_bytes
        row["tokens_computed"] = prepared.tokens_computed
        row["kernel_options"] = prepared.kernel_options
        row["block_stats"] = prepared.block_stats
        t0 = time.perf_counter()
        out, grads, step = run_once(prepared, pass_name)
        C.synchronize(ctx.device)
        row["first_call_s"] = round(time.perf_counter() - t0, 3)
        errors = check_result(ref, out, grads)
        row["rel_err_detail"] = {k: float(f"{e:.3g}") for k, e in errors.items()}
        row["rel_err"] = max(errors.values())
        row["check"] = ref.method
        if not row["rel_err"] <= ctx.tol:
            row["status"] = "FAILED"
            row["message"] = f"relative error {row['rel_err']:.3g} > tolerance {ctx.tol:g}"
            return row
        del out, grads
        ms = C.bench(step, args.warmup_ms, args.rep_ms, ctx.device, min_reps=args.min_reps)
        row["median_ms"] = ms
        row["tflops"] = row["useful_flops"] / (ms * 1e-3) / 1e12
        row["status"] = "ok"
    except Unavailable as err:
        row["status"] = "skipped" if str(err).startswith("skipped") else "unavailable"
        row["message"] = str(err)
    except Exception as err:  # every other failure is a row, not a crash (see module doc)
        if C.is_oom(err):
            row["status"] = "OOM"
            asked = C.oom_request(err)
            row["message"] = f"OOM (asked for {asked})" if asked else C.error_message(err)
        else:
            row["status"] = "unavailable" if isinstance(err, NotImplementedError) else "error"
            row["message"] = C.error_message(err)
    finally:
        del prepared
        if ctx.device.type == "cuda" and row["status"] not in ("ok", None):
            torch.cuda.empty_cache()
    return row


def variant_plan(ctx: Context, group: Group) -> list[tuple[str, str]]:
    """``(row name, kind)`` of each variant that applies to ``group``."""
    chosen = ctx.args.variants
    plan: list[tuple[str, str]] = []
    flex_names = [name for name in ctx.flex_configs if f"flex-{name}" in chosen]
    if group.mask == "token-causal":
        for name, kind in ((CUDNN, "cudnn"), ("fa2-token-causal", "fa2")):
            if name in chosen:
                plan.append((name, kind))
        if "token-causal" not in ctx.args.masks:
            return plan
    plan += [(f"flex-{group.mask}-{name}", f"flex:{name}") for name in flex_names]
    if group.padded_patches is not None:
        for name in chosen:
            if name == "flex-padded" or name.startswith("flex-padded-"):
                suffix = name.removeprefix("flex-padded")
                plan.append((f"flex-{group.mask}-padded{suffix}", f"flex:padded{suffix}"))
    if DENSE in chosen:
        plan.append((DENSE, "dense"))
    return plan


def make_groups(ctx: Context, n: int) -> list[Group]:
    """The token-causal group at ``n`` tokens and one group per (frame size, frame mask)."""
    args = ctx.args
    groups = [Group(n, None, "token-causal", get_mask("token-causal", seq_len=n), None, None)]
    for patches in args.patches:
        num_frames = n // patches
        if num_frames < 1:
            raise ValueError(f"--seq-lens {n} is shorter than one frame of --patches {patches}")
        bs = args.block_size
        padded = None if patches % bs == 0 else -(-patches // bs) * bs
        for mask in args.masks:
            if mask == "token-causal":
                continue
            spec = C.frame_spec(
                mask, num_frames, patches, args.window_size, args.timestamp_merge,
                **C.frame_options(args),
            )  # fmt: skip
            groups.append(Group(n, patches, mask, spec, num_frames, padded))
    return groups


def run_group(ctx: Context, group: Group, seed: int) -> None:
    """Inputs, visible pairs and references for ``group``, then every variant and pass."""
    args, device = ctx.args, ctx.device
    plan = variant_plan(ctx, group)
    if not plan:
        return
    n = group.spec.q_len
    mask_mod = group.spec.mask_mod_for(device)
    block_mask = group.spec.block_mask(device, args.block_size)
    group.visible_pairs = C.count_visible_pairs(block_mask, mask_mod)
    if ctx.over_budget():  # the skipped rows, without building inputs or references
        for pass_name in args.passes:
            for variant, kind in plan:
                row = run_variant(ctx, group, Reference("none"), variant, kind, pass_name)
                ctx.rows.append(row)
        ctx.save()
        return
    shape = (args.batch, args.heads, n, args.head_dim)
    group.inputs = make_inputs(shape, ctx.dtype, device, seed)
    q, k, v, dout = group.inputs
    needs_dense = n <= args.ref_max_len or (
        any(kind == "dense" for _, kind in plan) and n <= args.dense_max_len
    )
    group.dense = group.spec.to_dense(device) if needs_dense else None
    if group.dense is not None:
        brute = int(group.dense.sum())
        if brute != group.visible_pairs:
            raise RuntimeError(
                f"visible-pair count from the block mask ({group.visible_pairs}) differs from "
                f"the dense mask's ({brute}) for {group.spec!r}: the FLOP counts would be wrong"
            )
    rows = sample_positions(n, args.check_rows, seed + 1, device)
    cols = sample_positions(n, args.check_rows, seed + 2, device)
    chunked = None  # computed once, with the gradients when any pass needs them
    for pass_name in args.passes:
        with_grads = pass_name == "fwdbwd"
        try:
            if n <= args.ref_max_len:
                full = dense_reference(q, k, v, dout, group.dense, with_grads)
                ref = Reference("dense fp32 (SDPA math)", full=full)
            else:
                if chunked is None:
                    any_grads = "fwdbwd" in args.passes
                    chunked = chunked_reference(q, k, v, dout, mask_mod, rows, cols, any_grads)
                method = "exact fp32, chunked: out on all tokens"
                if with_grads:
                    method += f", dq on {rows.numel()} rows, dk/dv on {cols.numel()} key columns"
                ref = Reference(method, chunked=chunked, rows=rows, cols=cols)
        except Exception as err:  # no reference, no check: every variant of the pass is an error
            if not C.is_oom(err):
                raise
            for variant, kind in plan:
                row = base_row(ctx, group, variant, kind, pass_name)
                row["status"] = "error"
                row["message"] = f"the reference ran out of memory: {C.error_message(err)}"
                ctx.rows.append(row)
                log_row(ctx, row)
            ctx.save()
            continue
        for variant, kind in plan:
            row = run_variant(ctx, group, ref, variant, kind, pass_name)
            ctx.rows.append(row)
            ctx.save()
            log_row(ctx, row)
        del ref
    group.inputs, group.dense = (), None
    if device.type == "cuda":
        torch.cuda.empty_cache()


def log_row(ctx: Context, row: dict[str, Any]) -> None:
    elapsed = time.perf_counter() - ctx.started
    if row["status"] == "ok":
        what = f"{row['median_ms']:.3f} ms  {row['tflops']:.1f} TFLOP/s  err {row['rel_err']:.2g}"
    else:
        what = f"{row['status']}: {row['message']}"
    print(
        f"[{elapsed:7.1f}s] N={row['tokens']} p={row['patches']} {row['mask']} "
        f"{row['variant']} {row['pass']}: {what}",
        file=sys.stderr,
        flush=True,
    )


# -- derived columns, tables, recommendation, plot ------------------------------------------------
def derive(rows: list[dict[str, Any]]) -> None:
    """Fill ``pct_of_cudnn`` and ``speedup_vs_dense`` from the other rows (same N and pass)."""
    cudnn = {
        (r["gpu_name"], r["n_requested"], r["pass"]): r["tflops"]
        for r in rows
        if r["variant"] == CUDNN and r["status"] == "ok"
    }
    dense = {
        (r["gpu_name"], r["n_requested"], r["patches"], r["mask"], r["pass"]): r["median_ms"]
        for r in rows
        if r["variant"] == DENSE and r["status"] == "ok"
    }
    for r in rows:
        if r["status"] != "ok":
            continue
        base = cudnn.get((r["gpu_name"], r["n_requested"], r["pass"]))
        r["pct_of_cudnn"] = 100.0 * r["tflops"] / base if base else None
        dense_ms = dense.get((r["gpu_name"], r["n_requested"], r["patches"], r["mask"], r["pass"]))
        r["speedup_vs_dense"] = dense_ms / r["median_ms"] if dense_ms else None


TABLE_HEADERS = (
    "N",
    "patches",
    "mask",
    "variant",
    "pass",
    "median ms",
    "TFLOP/s (useful)",
    "% of cuDNN token-causal",
    "speedup vs sdpa-dense-mask",
    "rel err",
    "mask memory (vs dense N²)",
    "status",
)


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for r in rows:
        n = str(r["tokens"])
        if r["tokens"] != r["n_requested"]:
            n += f" (of {r['n_requested']})"
        if _is_padded(_config_name(r)) and r["tokens_computed"]:
            n += f" (padded {r['tokens_computed']})"
        mem = None
        if r["mask_bytes"] is not None:
            mem = f"{C.fmt_bytes(r['mask_bytes'])} (vs {C.fmt_bytes(r['dense_mask_bytes'])})"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['message']}"
        pct, spd = r["pct_of_cudnn"], r["speedup_vs_dense"]
        out.append(
            [
                n,
                r["patches"] if r["patches"] is not None else "-",
                r["mask"],
                r["variant"],
                r["pass"],
                C.fmt_num(r["median_ms"], 4),
                C.fmt_num(r["tflops"], 4),
                None if pct is None else f"{pct:.1f}%",
                None if spd is None else f"{spd:.2f}x",
                C.fmt_num(r["rel_err"], 2),
                mem,
                status,
            ]
        )
    return out


def recommend(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Best flex kernel_options per (GPU, head dim, dtype) -> mask -> pass, and over all masks.

    A config qualifies for a (mask, pass) if it ran and passed everywhere the default config did;
    it is scored by the geometric mean of its TFLOP/s over the default's at those points, so it
    never wins by skipping the hard sizes. The default ({}) always qualifies: the fallback. A run
    without the default config is scored against ``tma`` or else its first config by name (the
    ``reference`` of each entry).
    """
    flex_rows = [r for r in rows if r["variant"].startswith("flex-")]
    result: dict[str, Any] = {}
    keys = sorted({(r["gpu_name"] or "cpu", r["head_dim"], r["dtype"]) for r in flex_rows})
    for gpu, head_dim, dtype in keys:
        mine = [
            r
            for r in flex_rows
            if (r["gpu_name"] or "cpu", r["head_dim"], r["dtype"]) == (gpu, head_dim, dtype)
        ]
        entry: dict[str, Any] = {}
        for mask in sorted({r["mask"] for r in mine}):
            for pass_name in C.PASSES:
                best = _best_config(
                    [r for r in mine if r["mask"] == mask and r["pass"] == pass_name], mask
                )
                if best:
                    entry.setdefault(mask, {})[pass_name] = best
        for pass_name in C.PASSES:
            best = _best_config([r for r in mine if r["pass"] == pass_name], None)
            if best:
                entry.setdefault("all-masks", {})[pass_name] = best
        result[f"{gpu} | head_dim={head_dim} | {dtype}"] = entry
    return result


def _config_name(row: dict[str, Any]) -> str:
    return row["variant"].removeprefix(f"flex-{row['mask']}-")


def _best_config(rows: list[dict[str, Any]], mask: str | None) -> dict[str, Any] | None:
    by_config: dict[str, dict[tuple, dict[str, Any]]] = {}
    for r in rows:
        name = _config_name(r)
        if _is_padded(name):  # a different layout, not a kernel option
            continue
        by_config.setdefault(name, {})[(r["n_requested"], r["patches"], r["mask"])] = r
    if not by_config:
        return None
    # Scored against torch's defaults, or where they did not run, against flexframe's Triton
    # default (tma), or else the first config by name.
    reference = next((n for n in ("default", "tma") if n in by_config), min(by_config))
    default = by_config[reference]
    points = [p for p, r in default.items() if r["status"] == "ok"]
    if not points:
        return None
    scored = []
    for name, got in by_config.items():
        ok = [got.get(p) for p in points]
        if any(r is None or r["status"] != "ok" for r in ok):
            continue
        ratios = [r["tflops"] / default[p]["tflops"] for r, p in zip(ok, points, strict=True)]
        geomean = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        scored.append((geomean, name, ok))
    geomean, name, ok = max(scored, key=lambda s: (s[0], s[1] == "default"))
    return {
        "config": name,
        "kernel_options": ok[0]["kernel_options"] or {},
        "compile_mode": COMPILE_MODES.get(name),
        "geomean_speedup_vs_default": round(geomean, 4),
        "reference": reference,
        "points": len(points),
        "tflops": {
            f"N={p[0]} patches={p[1]} {p[2]}": round(r["tflops"], 1)
            for p, r in zip(points, ok, strict=True)
        }
        if mask is not None
        else None,
    }


def print_recommendation(rec: dict[str, Any]) -> None:
    print("\n## Recommended kernel_options (by GPU | head_dim | dtype -> mask -> pass)\n")
    print("RECOMMENDED_KERNEL_OPTIONS = {")
    for key, entry in rec.items():
        gpu, head_dim, dtype = (part.strip() for part in key.split("|"))
        print(f"    ({gpu!r}, {int(head_dim.split('=')[1])}, {dtype!r}): {{")
        for mask, passes in entry.items():
            inner = ", ".join(
                f"{p!r}: {b['kernel_options']!r}"
                + (f"  # mode {b['compile_mode']!r}" if b["compile_mode"] else "")
                for p, b in passes.items()
            )
            gains = ", ".join(
                f"{p} x{b['geomean_speedup_vs_default']} ({b['config']} vs {b['reference']})"
                for p, b in passes.items()
            )
            print(f"        {mask!r}: {{{inner}}},  # vs default: {gains}")
        print("    },")
    print("}")


def plot(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """TFLOP/s against tokens, one line per (variant, frame size), one panel per pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    passes = [p for p in C.PASSES if any(r["pass"] == p for r in rows)]
    if not passes:
        raise ValueError("no rows to plot")
    fig, axes = plt.subplots(1, len(passes), figsize=(7 * len(passes), 5), squeeze=False)
    for ax, pass_name in zip(axes[0], passes, strict=True):
        series: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            if r["pass"] == pass_name and r["status"] == "ok":
                label = r["variant"]
                if not label.startswith("flex-") and r["mask"] != "token-causal":
                    label += f" ({r['mask']})"  # a baseline run under several masks
                label += f" p={r['patches']}" if r["patches"] else ""
                series.setdefault(label, []).append((r["tokens"], r["tflops"]))
        colors = plt.get_cmap("tab20").colors
        for i, (label, points) in enumerate(sorted(series.items())):
            points.sort()
            xs, ys = zip(*points, strict=True)
            style = "--" if "-tma" in label else ":" if "-default" in label else "-"
            ax.plot(xs, ys, style, marker="o", color=colors[i % len(colors)], label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tokens")
        ax.set_ylabel("useful TFLOP/s")
        ax.set_title(pass_name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def document(
    env: dict[str, Any] | list[dict[str, Any]], config: dict[str, Any], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    derive(rows)
    return {
        "benchmark": "attention",
        "env": env,
        "config": config,
        "flops_convention": "4*B*H*D per visible (q, kv) pair for fwd; fwdbwd = 3.5 x fwd",
        "rows": rows,
        "recommended_kernel_options": recommend(rows),
    }


def vars_for_json(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k != "merge"}


SUMMARY_CONFIGS = ("default", "padded", "tma", "padded-tma", "flash", "padded-flash")


def frame_size_summary(rows: Sequence[dict[str, Any]]) -> str | None:
    """TFLOP/s of flex by frame size, with and without padding frames (``SUMMARY_CONFIGS``).

    One row per (N, mask, pass); a column per frame size ``p`` (with its share of partial
    blocks, the ones that pay for evaluating the mask_mod) and per padded frame size.
    """
    ok = [r for r in rows if r["status"] == "ok" and r["patches"] is not None]
    cells: dict[tuple, dict[str, str]] = {}
    columns: list[str] = []
    for r in ok:
        suffix = _config_name(r)
        if suffix not in SUMMARY_CONFIGS:
            continue
        column = f"p={r['patches']}" + ("" if suffix == "default" else f" {suffix}")
        if column not in columns:
            columns.append(column)
        text = C.fmt_num(r["tflops"], 4)
        stats = r["block_stats"]
        if stats and stats["partial_blocks"] + stats["full_blocks"]:
            share = stats["partial_blocks"] / (stats["partial_blocks"] + stats["full_blocks"])
            text += f" ({100 * share:.0f}% partial)"
        cells.setdefault((r["n_requested"], r["mask"], r["pass"]), {})[column] = text
    if not cells:
        return None
    columns.sort(key=lambda c: (int(c.split()[0][2:]), SUMMARY_CONFIGS.index(c.split()[1])
                                if " " in c else -1))  # fmt: skip
    table = [[n, mask, p, *(got.get(c) for c in columns)] for (n, mask, p), got in cells.items()]
    return C.markdown_table(["N", "mask", "pass", *columns], table)


def report(doc: dict[str, Any], plot_path: str | None) -> None:
    print(C.markdown_table(TABLE_HEADERS, table_rows(doc["rows"])))
    summary = frame_size_summary(doc["rows"])
    if summary:
        print("\n## Frame size: useful TFLOP/s of flex by config (share of partial blocks)\n")
        print(summary)
    print_recommendation(doc["recommended_kernel_options"])
    if plot_path:
        plot(doc["rows"], plot_path)
        print(f"\nplot written to {plot_path}")


# -- command line ---------------------------------------------------------------------------------
def all_variant_names(flex_configs: dict[str, dict[str, Any]]) -> list[str]:
    padded = [f"flex-padded-{name}" for name in PADDED_CONFIGS if name in flex_configs]
    return [*BASELINE_VARIANTS, *(f"flex-{name}" for name in flex_configs), *padded]


def _is_padded(config: str) -> bool:
    """``padded`` (default options) or ``padded-<config>``: frames padded to the block size."""
    return config == "padded" or config.startswith("padded-")


def _padded_base(config: str) -> str:
    """The kernel-options config a padded config runs: ``padded-tma`` -> ``tma``, ``padded`` ->
    ``default``."""
    return config.removeprefix("padded").removeprefix("-") or "default"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seq-lens", type=int, nargs="+", help="tokens (default 16384 32768 65536)")
    p.add_argument("--patches", type=int, nargs="+", help="patches a frame (default 256 196 729)")
    p.add_argument("--masks", nargs="+", choices=MASKS, help=f"default: {' '.join(FRAME_MASKS)}")
    p.add_argument("--window-size", type=int, default=8, help="sliding-window frames back")
    p.add_argument("--frames-per-chunk", type=int, default=3, help="chunk-causal, teacher-forcing")
    p.add_argument("--sink-frames", type=int, default=1, help="sliding-window-sinks")
    p.add_argument("--num-videos", type=int, default=4, help="packed-causal-frame")
    p.add_argument("--timestamp-merge", default="concat", choices=MERGE_STRATEGIES)
    p.add_argument("--heads", type=int)
    p.add_argument("--head-dim", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--dtype", choices=DTYPES)
    p.add_argument("--passes", nargs="+", choices=C.PASSES)
    p.add_argument(
        "--variants",
        nargs="+",
        help="variants to run (default: all but " + ", ".join(OPT_IN_VARIANTS) + "); see --list",
    )
    p.add_argument(
        "--kernel-options",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help='extra flex config, e.g. tma4=\'{"USE_TMA": true, "fwd_num_warps": 4}\' (repeatable)',
    )
    p.add_argument("--list", action="store_true", help="list the variants and exit")
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--device", default=None, help="cuda (default where present) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke run)")
    p.add_argument("--out", help="JSON results (rewritten after every row)")
    p.add_argument("--plot", help="PNG of TFLOP/s against tokens")
    p.add_argument("--warmup-ms", type=float, help="do_bench warm-up (default 50)")
    p.add_argument("--rep-ms", type=float, help="do_bench repetition time (default 300)")
    p.add_argument("--min-reps", type=int, default=5, help="timed calls at least (CPU timing)")
    p.add_argument("--ref-max-len", type=int, help="dense fp32 reference up to here (8192)")
    p.add_argument("--dense-max-len", type=int, help="sdpa-dense-mask up to here (32768)")
    p.add_argument("--check-rows", type=int, default=256, help="sampled rows beyond ref-max-len")
    p.add_argument("--tol", type=float, help="relative-error bound (default by dtype)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget-s", type=float, help="stop starting variants after this")
    p.add_argument(
        "--flex-eager",
        action="store_true",
        help="flex_attention without torch.compile: checks this script's logic, never for timings",
    )
    p.add_argument(
        "--dynamic-shapes",
        action="store_true",
        help="compile flex with dynamic=True: one kernel for every length (fewer compiles)",
    )
    p.add_argument("--merge", nargs="+", metavar="JSON", help="combine earlier result files")
    args = p.parse_args(argv)

    cuda = torch.cuda.is_available()
    args.device = args.device or ("cuda" if cuda else "cpu")
    on_cpu = args.device.startswith("cpu")
    quick = {
        "seq_lens": [1024],
        "patches": [48],
        "masks": list(FRAME_MASKS),
        "heads": 2,
        "head_dim": 32 if on_cpu else 64,
        "batch": 1,
        "dtype": "fp32" if on_cpu else "bf16",
        "passes": list(C.PASSES),
        "warmup_ms": 5,
        "rep_ms": 20,
        "ref_max_len": 8192,
        "dense_max_len": 8192,
    }
    full = {
        "seq_lens": [16384, 32768, 65536],
        "patches": [256, 196, 729],
        "masks": list(FRAME_MASKS),
        "heads": 16,
        "head_dim": 128,
        "batch": 1,
        "dtype": "bf16",
        "passes": list(C.PASSES),
        "warmup_ms": 50,
        "rep_ms": 300,
        "ref_max_len": 8192,
        "dense_max_len": 32768,
    }
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for name in ("seq_lens", "patches"):
        for value in getattr(args, name):
            if value < 1:
                p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("heads", "head_dim", "batch", "block_size", "check_rows", "min_reps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.window_size < 0:
        p.error(f"--window-size must be >= 0, got {args.window_size}")

    args.flex_configs = dict(FLEX_CONFIGS)
    for item in args.kernel_options:
        name, sep, text = item.partition("=")
        if not sep or not name:
            p.error(f"--kernel-options wants NAME=JSON, got {item!r}")
        try:
            options = json.loads(text)
        except json.JSONDecodeError as err:
            p.error(f"--kernel-options {name}: not JSON ({err}): {text!r}")
        if not isinstance(options, dict):
            p.error(f"--kernel-options {name}: want a JSON object, got {text!r}")
        if name in args.flex_configs:
            p.error(f"--kernel-options name {name!r} is taken; pick another")
        args.flex_configs[name] = options
    names = all_variant_names(args.flex_configs)
    if args.list:
        return args
    if args.variants is None:
        extra = [f"flex-{name}" for name in args.flex_configs if name not in FLEX_CONFIGS]
        args.variants = [n for n in names if n not in OPT_IN_VARIANTS and n not in extra]
        args.variants += extra
        if args.quick:
            args.variants = list(QUICK_VARIANTS)
        if on_cpu:  # Triton kernel options do not apply; they would only be "unavailable" rows
            args.variants = [*BASELINE_VARIANTS, "flex-default", "flex-flash"]
    for name in args.variants:
        if name not in names:
            from flexframe._checks import did_you_mean

            p.error(f"unknown --variants {name!r}.{did_you_mean(name, names)} Known: {names}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark (or merge result files); print the table; return the JSON document."""
    args = parse_args(argv)
    if args.list:
        for name in all_variant_names(args.flex_configs):
            config_name = name.removeprefix("flex-")
            if _is_padded(config_name):
                base = FLEX_CONFIGS[_padded_base(config_name)]
                print(name, "frames padded to the block size,", json.dumps(base))
                continue
            config = args.flex_configs.get(config_name)
            print(name, "" if config is None else json.dumps(config))
        return {}
    if args.merge:
        return merge(args)
    device = C.resolve_device(args.device)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # the fp32 references must be exact
    try:
        with warnings.catch_warnings():
            if args.flex_eager:
                warnings.filterwarnings(
                    "ignore", message=".*flex_attention called without torch.compile"
                )
                print(
                    "WARNING: --flex-eager: flex rows time the unfused eager path; they check "
                    "this script's logic and are no benchmark",
                    file=sys.stderr,
                )
            else:
                # A compiled flex_attention that fell back to eager would materialize the
                # scores and report nonsense timings: make that an error, not a warning.
                warnings.filterwarnings(
                    "error", message=".*flex_attention called without torch.compile"
                )
                _raise_recompile_limits()
            return _run(args, device)
    finally:
        torch.set_float32_matmul_precision(precision)


def _run(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    dtype = DTYPES[args.dtype]
    env = C.env_info(device)
    ctx = Context(
        args=args,
        device=device,
        dtype=dtype,
        tol=args.tol if args.tol is not None else DEFAULT_TOL[dtype],
        env=env,
        flex_configs=args.flex_configs,
        started=time.perf_counter(),
    )
    print(f"# attention benchmark on {env['gpu_name'] or device}", file=sys.stderr)
    print(json.dumps(env), file=sys.stderr)
    seed = args.seed
    for n in args.seq_lens:
        for group in make_groups(ctx, n):
            seed += 10
            run_group(ctx, group, seed)
            if not args.flex_eager:
                torch._dynamo.reset()  # keeps the guard list short; kernels stay in the disk cache
    doc = document(env, vars_for_json(args), ctx.rows)
    if args.out:
        C.write_json(args.out, doc)
    report(doc, args.plot)
    return doc


def _raise_recompile_limits() -> None:
    """Let one compiled flex_attention hold every (shape, mask, options) of a run, and fail
    loudly, not fall back to eager, if that is ever exceeded."""
    config = torch._dynamo.config
    present = config.get_config_copy()
    for name, value in (
        ("recompile_limit", 512),
        ("cache_size_limit", 512),
        ("accumulated_recompile_limit", 4096),
        ("accumulated_cache_size_limit", 4096),
        ("fail_on_recompile_limit_hit", True),
    ):
        if name in present:
            setattr(config, name, value)


def merge(args: argparse.Namespace) -> dict[str, Any]:
    """Combine result files; a later file wins where a row (N, patches, mask, variant, pass)
    repeats."""
    envs, by_key = [], {}
    for path in args.merge:
        doc = json.loads(Path(path).read_text())
        if doc.get("benchmark") != "attention":
            raise ValueError(f"--merge {path}: not an attention benchmark result")
        envs.append(doc["env"])
        for r in doc["rows"]:
            key = (
                r["gpu_name"],
                r["n_requested"],
                r["patches"],
                r["mask"],
                r["variant"],
                r["pass"],
            )
            if key in by_key:
                print(f"--merge: {path} replaces row {key}", file=sys.stderr)
            by_key[key] = r
    doc = document(envs, {"merged": list(args.merge)}, list(by_key.values()))
    if args.out:
        C.write_json(args.out, doc)
    report(doc, args.plot)
    return doc


if __name__ == "__main__":
    main()
