"""Streaming inference with flexframe's frame KV cache against what generators do today.

For each case (heads x chunk size; B=1, head dim 128, bf16, 1,560 tokens a latent frame):

- **context**: a ``c``-frame chunk against a 21-frame context (``chunk-causal`` with chunks of
  ``c`` frames and a window of ``21 / c - 1`` chunks: 32,760 visible tokens), in the steady state
  of the ring. Timed: the chunk-against-cache attention alone, and the whole step (cache write,
  slot table, per-step BlockMask, all Python overhead), against (b) the anchor path of today's
  generators: contiguous key/value tensors rolled by ``torch.cat`` and attended with
  ``scaled_dot_product_attention`` (cuDNN and flash backends) over the valid slice.
- **long**: 600 generated frames with one sink chunk and the same window. Peak memory in each
  stretch from frame 50 to 600 (flat within 1 % is the goal), the step time at frames 100 and
  600, and (a) recomputing the whole sequence under the training mask at those lengths (the
  attention over all frames plus building its BlockMask: what a user does without a cache).

Every path's output is checked before it is timed: the cache's step against an fp32 SDPA with
the dense mask built here from the cache's slot table, the anchor against the same reference, and
(a)'s rows of the last chunk against the cache's step at that frame. A failed check is reported
FAILED and not timed. Useful TFLOP/s count the visible (query, key) pairs only.

Run (the H200 command is in ``benchmarks/README.md``)::

    python benchmarks/streaming.py --out results/streaming-h200.json
    python benchmarks/streaming.py --smoke --out /tmp/streaming-smoke.json   # CPU, tiny
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import _common as C
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from flexframe import get_mask
from flexframe.masks.closed_form import build_block_mask
from flexframe.nn import Attention, DecoderConfig, FrameKVCache, KernelPolicy

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TOL = {torch.bfloat16: 2e-2, torch.float16: 1e-2, torch.float32: 1e-3}
ANCHOR_BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}


# -- inputs ------------------------------------------------------------------------------------
class Frames:
    """Deterministic per-frame queries, keys and values ``[1, H, P, D]``: every path sees the
    same frames, so their outputs can be compared."""

    def __init__(self, heads: int, p: int, d: int, device: torch.device, dtype: torch.dtype):
        self.heads, self.p, self.d, self.device, self.dtype = heads, p, d, device, dtype

    def qkv(self, first: int, count: int) -> tuple[torch.Tensor, ...]:
        shape = (3, 1, self.heads, count * self.p, self.d)
        qkv = torch.empty(shape, device=self.device, dtype=self.dtype)
        for j, f in enumerate(range(first, first + count)):
            g = torch.Generator(self.device).manual_seed(1_000_003 * 7 + f)
            qkv[:, :, :, j * self.p : (j + 1) * self.p] = torch.randn(
                (3, 1, self.heads, self.p, self.d), generator=g, device=self.device,
                dtype=self.dtype,
            )  # fmt: skip
        return qkv[0], qkv[1], qkv[2]


def chunk_spec(num_frames: int, p: int, c: int, window: int, sinks: int):
    """The training mask of a case: chunk-causal, chunks of ``c`` frames, a window of
    ``window`` chunks and ``sinks`` sink chunks."""
    params: dict[str, Any] = {"window_size": window}
    if sinks:
        params["sink_chunks"] = sinks
    return get_mask(
        "chunk-causal", num_frames=num_frames, num_patches_per_frame=p, frames_per_chunk=c, **params
    )


def dense_from_slots(slots: Sequence[int], f0: int, c: int, p: int, fpc: int, w: int, s: int):
    """``[c * P, slots * P]`` bool, written here from chunk-causal's definition: a query of frame
    ``f`` sees slot ``j``'s frame ``g >= 0`` iff chunk(g) <= chunk(f) and (chunk(f) - chunk(g)
    <= w or chunk(g) < s)."""
    rows = []
    for f in range(f0, f0 + c):
        cq = f // fpc
        rows.append(
            [g >= 0 and g // fpc <= cq and (cq - g // fpc <= w or g // fpc < s) for g in slots]
        )
    frames = torch.tensor(rows, dtype=torch.bool)
    return frames.repeat_interleave(p, 0).repeat_interleave(p, 1)


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dense: torch.Tensor):
    """fp32 SDPA with a dense mask (memory-efficient kernel on CUDA: no N x N scores)."""
    return F.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=dense.to(q.device)
    ).to(q.dtype)


# -- the two streaming paths -------------------------------------------------------------------
class FastPath:
    """flexframe's cache at the attention level: write the chunk, build the step's mask, attend
    through the kernel policy (FlashAttention-4 on Hopper where installed)."""

    def __init__(
        self, spec, attn: Attention, c: int, policy: KernelPolicy, device, dtype, graphs=False
    ):
        self.cache = FrameKVCache.for_mask(
            spec, attn, 1, chunk_frames=c, device=device, dtype=dtype, cuda_graphs=graphs
        )
        self.policy = policy

    def step(self, q, k, v, append: bool = True) -> torch.Tensor:
        with self.cache.begin(q.shape[2] // self.cache.num_patches_per_frame, append=append) as s:
            keys, values = s.write(0, k, v)
            block_mask = s.mask.block_mask()

            def run(query: torch.Tensor) -> torch.Tensor:
                # As a decoder's cache step runs it: compiled for the step's fixed shapes.
                return self.policy.attend(query, keys, values, block_mask, dynamic=False)

            graphs = self.cache.graphs  # cuda_graphs=True: as the decoder's step replays it
            return run(q) if graphs is None else graphs.attend(run, q, keys, values, block_mask)


class Anchor:
    """Today's generators: contiguous keys and values, rolled by ``torch.cat`` once full (sinks
    kept), attended with SDPA over all of them (all visible under chunk-causal)."""

    def __init__(self, sink_tokens: int, capacity_tokens: int, backend: str | None):
        self.sinks, self.capacity = sink_tokens, capacity_tokens
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.backend = backend

    def kernel(self):
        return (
            nullcontext() if self.backend is None else sdpa_kernel([ANCHOR_BACKENDS[self.backend]])
        )

    def roll(self, k: torch.Tensor, v: torch.Tensor) -> None:
        if self.k is None or self.v is None:
            self.k, self.v = k, v
            return
        n = k.shape[2]
        if self.k.shape[2] + n <= self.capacity:
            self.k, self.v = torch.cat([self.k, k], 2), torch.cat([self.v, v], 2)
            return
        s = self.sinks
        self.k = torch.cat([self.k[:, :, :s], self.k[:, :, s + n :], k], 2)
        self.v = torch.cat([self.v[:, :, :s], self.v[:, :, s + n :], v], 2)

    def attend(self, q: torch.Tensor) -> torch.Tensor:
        with self.kernel():
            return F.scaled_dot_product_attention(q, self.k, self.v)

    def step(self, q, k, v) -> torch.Tensor:
        self.roll(k, v)
        return self.attend(q)


# -- timing ------------------------------------------------------------------------------------
def wall_ms(fn: Callable[[], Any], steps: int, device: torch.device) -> float:
    """Milliseconds a step over ``steps`` steps back to back, synchronized at the ends only:
    what a generation loop waits for, host overhead included."""
    fn()
    C.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    C.synchronize(device)
    return (time.perf_counter() - start) * 1e3 / steps


def tflops(pairs: int, heads: int, d: int, ms: float | None) -> float | None:
    return None if not ms else 4.0 * heads * d * pairs / (ms * 1e-3) / 1e12


def peak_bytes(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


# -- one case ----------------------------------------------------------------------------------
class Case:
    """One (heads, chunk size) case: its three sections write rows into ``rows``."""

    def __init__(self, args, heads: int, c: int, policy: KernelPolicy, rows: list) -> None:
        self.args, self.heads, self.c, self.policy, self.rows = args, heads, c, policy, rows
        self.device, self.dtype, self.p, self.d = (
            args.device,
            args.dtype,
            args.patches,
            args.head_dim,
        )
        self.tol = TOL[self.dtype]
        if args.context_frames % c:
            raise ValueError(f"--context-frames {args.context_frames} is not a multiple of {c}")
        self.window = args.context_frames // c - 1
        self.frames = Frames(heads, self.p, self.d, self.device, self.dtype)
        config = DecoderConfig(dim=heads * self.d, depth=1, num_heads=heads, head_dim=self.d,
                               attention_backend="flex")  # fmt: skip
        self.attn = Attention(config).to(self.device, self.dtype)
        self.timing = self.frames.qkv(10_000, c)  # inputs of the timed steps (any content)
        self.anchors = list(ANCHOR_BACKENDS) if self.device.type == "cuda" else [None]

    def add(self, section: str, variant: str, **fields: Any) -> dict:
        row = {"heads": self.heads, "chunk_frames": self.c, "head_dim": self.d,
               "patches": self.p, "window_chunks": self.window, "section": section,
               "variant": variant, **fields}  # fmt: skip
        self.rows.append(row)
        return row

    def bench(self, fn: Callable[[], Any], min_reps: int = 5) -> float:
        return C.bench(fn, self.args.warmup_ms, self.args.rep_ms, self.device, min_reps=min_reps)

    def wall(self, fn: Callable[[], Any]) -> float:
        return wall_ms(fn, self.args.loop_steps, self.device)

    def context(self) -> None:
        """A chunk against the 21-frame context, in the ring's steady state."""
        c, p, args = self.c, self.p, self.args
        spec = chunk_spec(args.context_frames, p, c, self.window, 0)
        fast = FastPath(spec, self.attn, c, self.policy, self.device, self.dtype)
        reference_anchor = Anchor(0, args.context_frames * p, self.anchors[0])
        for step in range(args.context_frames // c + 2):  # the ring full and wrapped
            q, k, v = self.frames.qkv(step * c, c)
            out_fast = fast.step(q, k, v)
            out_anchor = reference_anchor.step(q, k, v)
        slots = fast.cache.slot_frames.tolist()
        dense = dense_from_slots(slots, fast.cache.frames - c, c, p, c, self.window, 0)
        pairs = int(dense.sum())
        keys, values = fast.cache.keys(0), fast.cache.values(0)
        ref = reference(q, keys, values, dense)  # what the last step should have computed
        err_fast = C.relative_error(out_fast, ref)
        with fast.cache.begin(c, append=False) as step_:  # the steady state's BlockMask
            block_mask = step_.mask.block_mask()
        qt, kt, vt = self.timing
        if err_fast > self.tol:
            self.add("context", "fast-attention", status="FAILED", rel_err=err_fast)
        else:
            ms = self.bench(lambda: self.policy.attend(qt, keys, values, block_mask))
            self.add("context", "fast-attention", status="ok", ms=ms,
                     tflops=tflops(pairs, self.heads, self.d, ms), rel_err=err_fast,
                     kernel_options=self.policy.options(self.device, self.dtype, self.d),
                     pairs=pairs, q_len=c * p, kv_len=len(slots) * p)  # fmt: skip
            self.add("context", "fast-step", status="ok",
                     ms=self.bench(lambda: fast.step(qt, kt, vt)),
                     wall_ms=self.wall(lambda: fast.step(qt, kt, vt)),
                     cache_bytes=fast.cache.memory_bytes)  # fmt: skip
        if self.device.type == "cuda":
            self.graphed(spec, ref, err_fast)
        self.add("context", "anchor-reference", status="ok" if C.relative_error(out_anchor, ref)
                 <= self.tol else "FAILED", rel_err=C.relative_error(out_anchor, ref))  # fmt: skip
        for backend in self.anchors:
            name = f"anchor-{backend or 'sdpa'}"
            anchor = Anchor(0, args.context_frames * p, backend)
            anchor.k, anchor.v = reference_anchor.k, reference_anchor.v
            try:
                err = C.relative_error(anchor.attend(q), ref)
            except RuntimeError as exc:  # a backend this GPU or dtype lacks
                self.add("context", f"{name}-attention", status="error",
                         message=C.error_message(exc))  # fmt: skip
                continue
            if err > self.tol:
                self.add("context", f"{name}-attention", status="FAILED", rel_err=err)
                continue
            ms = self.bench(lambda a=anchor: a.attend(qt))
            self.add("context", f"{name}-attention", status="ok", ms=ms, rel_err=err,
                     tflops=tflops(c * p * anchor.k.shape[2], self.heads, self.d, ms))  # fmt: skip
            self.add("context", f"{name}-step", status="ok",
                     ms=self.bench(lambda a=anchor: a.step(qt, kt, vt)),
                     wall_ms=self.wall(lambda a=anchor: a.step(qt, kt, vt)))  # fmt: skip

    def graphed(self, spec, ref: torch.Tensor, err_fast: float) -> None:
        """The same steps with ``cuda_graphs=True``: checked against the same reference, then
        timed back to back."""
        c, p, args = self.c, self.p, self.args
        fast = FastPath(spec, self.attn, c, self.policy, self.device, self.dtype, graphs=True)
        for step in range(args.context_frames // c + 2):  # as above: the ring full and wrapped
            out = fast.step(*self.frames.qkv(step * c, c))
        for step in range(args.context_frames // c + 2, args.context_frames // c + 5):
            out = fast.step(*self.frames.qkv(step * c, c))  # graphs recorded and replayed
        graphs = fast.cache.graphs
        slots = fast.cache.slot_frames.tolist()
        dense = dense_from_slots(slots, fast.cache.frames - c, c, p, c, self.window, 0)
        keys, values = fast.cache.keys(0), fast.cache.values(0)
        err = C.relative_error(out, reference(self.frames.qkv(fast.cache.frames - c, c)[0],
                                              keys, values, dense))  # fmt: skip
        if err > self.tol or graphs is None or graphs.disabled_by or not graphs.replays:
            self.add("context", "fast-step-graphs", status="FAILED", rel_err=err,
                     message=None if graphs is None else graphs.disabled_by)  # fmt: skip
            return
        qt, kt, vt = self.timing
        self.add("context", "fast-step-graphs", status="ok", rel_err=err,
                 ms=self.bench(lambda: fast.step(qt, kt, vt)),
                 wall_ms=self.wall(lambda: fast.step(qt, kt, vt)), graphs=len(graphs),
                 replays=graphs.replays, reference_rel_err=err_fast)  # fmt: skip

    def long(self) -> dict[int, dict[str, Any]]:
        """The long run with a sink chunk: memory by stretch, the step at the marks; returns
        the fast path's step at each mark (for the recomputation's check)."""
        c, p, args, device = self.c, self.p, self.args, self.device
        spec = chunk_spec(args.long_frames, p, c, self.window, 1)
        fast = FastPath(spec, self.attn, c, self.policy, device, self.dtype)
        anchor = Anchor(c * p, (args.context_frames + c) * p, self.anchors[0])
        marks = sorted({*args.recompute_at, *range(100, args.long_frames + 1, 100)})
        marks = [m for m in marks if m <= args.long_frames] or [args.long_frames]
        saved: dict[int, dict[str, Any]] = {}

        def run(step_fn: Callable[..., Any], timed: bool) -> list[tuple[int, int]]:
            """Generate the long run; the peak memory of each stretch between marks from
            --memory-from on (the timing at a mark is left out of the stretches)."""
            peaks: list[tuple[int, int]] = []
            pending = list(marks)
            frame, tracking = 0, False
            while frame < args.long_frames:
                n = min(c, args.long_frames - frame)
                q, k, v = self.frames.qkv(frame, n)
                out = step_fn(q, k, v)
                frame += n
                if not tracking and frame >= args.memory_from:
                    C.synchronize(device)
                    reset_peak(device)
                    tracking = True
                while pending and frame >= pending[0]:
                    mark = pending.pop(0)
                    C.synchronize(device)
                    if tracking:
                        peaks.append((frame, peak_bytes(device)))
                    if timed and (mark in args.recompute_at or mark == marks[-1]):
                        # the output kept on the host: the run's memory is the cache's alone
                        saved[mark] = {"frames": frame, "out": out.cpu(),
                                       **self.time_reading_step(fast, q, k, v)}  # fmt: skip
                    reset_peak(device)
            return peaks

        peaks = run(fast.step, timed=True)
        self.add("long", "fast-memory", status="ok", peak_bytes=peaks, drift=drift(peaks),
                 cache_bytes=fast.cache.memory_bytes, frames=args.long_frames)  # fmt: skip
        for entry in saved.values():
            self.add("long", "fast-step", status="ok", frames=entry["frames"], ms=entry["ms"],
                     wall_ms=entry["wall_ms"])  # fmt: skip
        anchor_peaks = run(anchor.step, timed=False)
        qt, kt, vt = self.timing
        self.add("long", f"anchor-{self.anchors[0] or 'sdpa'}-memory", status="ok",
                 peak_bytes=anchor_peaks, drift=drift(anchor_peaks),
                 wall_ms=self.wall(lambda: anchor.step(qt, kt, vt)))  # fmt: skip
        return saved

    def time_reading_step(self, fast: FastPath, q, k, v) -> dict[str, float]:
        """The step at this frame, timed without appending (the same work). The closure, and the
        chunk it holds, end here, so that the rest of the run holds no more than before."""

        def again() -> torch.Tensor:
            return fast.step(q, k, v, append=False)

        return {"ms": self.bench(again), "wall_ms": self.wall(again)}

    def recompute(self, saved: dict[int, dict[str, Any]], started: float) -> None:
        """(a): the attention over the whole sequence under the training mask, and its build."""
        for mark in self.args.recompute_at:
            if mark not in saved:
                continue
            n = saved[mark]["frames"]
            if time.perf_counter() - started > self.args.time_budget_s:
                self.add("recompute", "recompute", status="skipped", frames=n,
                         message="--time-budget-s spent")  # fmt: skip
                continue
            try:
                self._recompute_at(n, saved[mark])
            except Exception as exc:  # noqa: BLE001 (an OOM or a kernel failure is a row)
                status = "OOM" if C.is_oom(exc) else "error"
                self.add("recompute", "recompute", status=status, frames=n,
                         message=C.error_message(exc))  # fmt: skip
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _recompute_at(self, n: int, fast_step: dict[str, Any]) -> None:
        c, p, device = self.c, self.p, self.device
        spec = chunk_spec(n, p, c, self.window, 1)
        qf, kf, vf = self.frames.qkv(0, n)  # the frames as streamed
        block_mask = spec.block_mask(device)
        out = self.policy.attend(qf, kf, vf, block_mask)[:, :, -c * p :]
        err = C.relative_error(out, fast_step["out"].to(device))
        if err > 2 * self.tol:
            self.add("recompute", "recompute", status="FAILED", frames=n, rel_err_vs_fast=err)
            return
        ms = self.bench(lambda: self.policy.attend(qf, kf, vf, block_mask), min_reps=1)
        mod = spec.mask_mod_for(device)
        build_ms = C.bench_wallclock(
            lambda: build_block_mask(spec.relation, mod, (128, 128), device), 0,
            self.args.rep_ms, device, min_reps=3,
        )  # fmt: skip
        frame_pairs = int(chunk_spec(n, 1, c, self.window, 1).to_dense().sum())
        self.add("recompute", "recompute", status="ok", frames=n, ms=ms, build_ms=build_ms,
                 rel_err_vs_fast=err, tflops=tflops(frame_pairs * p * p, self.heads, self.d, ms),
                 speedup=(ms + build_ms) / fast_step["ms"])  # fmt: skip


def drift(peaks: list[tuple[int, int]]) -> float | None:
    """``(max - min) / min`` of the stretches' peak bytes (0: flat)."""
    values = [b for _, b in peaks]
    return (max(values) - min(values)) / min(values) if values and min(values) else None


# -- summary -----------------------------------------------------------------------------------
def summarize(rows: list[dict]) -> list[dict]:
    """One line per case: the goals' numbers."""
    out = []
    cases = sorted({(r["heads"], r["chunk_frames"]) for r in rows})
    for heads, c in cases:
        mine = [
            r for r in rows if (r["heads"], r["chunk_frames"]) == (heads, c) and r["status"] == "ok"
        ]

        def get(section: str, variant: str, key: str, rs=mine):
            hits = [r for r in rs if r["section"] == section and r["variant"] == variant]
            return hits[0].get(key) if hits else None

        anchor_att = [
            r["ms"]
            for r in mine
            if r["variant"].startswith("anchor") and r["variant"].endswith("attention")
        ]
        anchor_step = [
            r["wall_ms"]
            for r in mine
            if r["section"] == "context"
            and r["variant"].startswith("anchor")
            and r["variant"].endswith("step")
        ]
        fast_att, fast_step = (
            get("context", "fast-attention", "ms"),
            get("context", "fast-step", "wall_ms"),
        )
        rec = {r["frames"]: r for r in mine if r["section"] == "recompute"}
        graphed = get("context", "fast-step-graphs", "wall_ms")
        line = {
            "heads": heads,
            "chunk_frames": c,
            "fast_attention_ms": fast_att,
            "anchor_attention_ms": min(anchor_att) if anchor_att else None,
            "attention_speedup": (min(anchor_att) / fast_att) if anchor_att and fast_att else None,
            "fast_tflops": get("context", "fast-attention", "tflops"),
            "fast_step_ms": fast_step,
            "anchor_step_ms": min(anchor_step) if anchor_step else None,
            "step_speedup": (min(anchor_step) / fast_step) if anchor_step and fast_step else None,
            "fast_step_graphs_ms": graphed,
            "step_speedup_graphs": (min(anchor_step) / graphed)
            if anchor_step and graphed
            else None,
            "memory_drift": get("long", "fast-memory", "drift"),
            "speedup_over_recompute": {n: r["speedup"] for n, r in sorted(rec.items())},
        }
        out.append(line)
    return out


def print_table(summary: list[dict]) -> None:
    headers = ["heads", "chunk", "attn ms (fast / anchor)", "x", "TFLOP/s",
               "step ms (fast / anchor)", "x", "step ms with graphs", "x", "memory drift",
               "x over recompute"]  # fmt: skip
    body = []
    for s in summary:
        body.append([
            s["heads"], s["chunk_frames"],
            f"{C.fmt_num(s['fast_attention_ms'])} / {C.fmt_num(s['anchor_attention_ms'])}",
            C.fmt_num(s["attention_speedup"]), C.fmt_num(s["fast_tflops"]),
            f"{C.fmt_num(s['fast_step_ms'])} / {C.fmt_num(s['anchor_step_ms'])}",
            C.fmt_num(s["step_speedup"]),
            C.fmt_num(s["fast_step_graphs_ms"]), C.fmt_num(s["step_speedup_graphs"]),
            None if s["memory_drift"] is None else f"{100 * s['memory_drift']:.2f} %",
            ", ".join(f"{n}: {C.fmt_num(x)}" for n, x in s["speedup_over_recompute"].items())
            or None,
        ])  # fmt: skip
    print(C.markdown_table(headers, body))


def flash_version() -> str | None:
    for name in ("flash-attn-4", "flash_attn_4", "flash-attn"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="JSON results file")
    p.add_argument(
        "--smoke", action="store_true", help="tiny sizes on the CPU (a check, no numbers)"
    )
    p.add_argument("--device", default=None, help="cuda (default) or cpu")
    p.add_argument("--heads", type=int, nargs="+", default=None, help="default 12 16")
    p.add_argument(
        "--chunks", type=int, nargs="+", default=None, help="frames a step (default 1 3)"
    )
    p.add_argument("--patches", type=int, default=None, help="tokens a frame (default 1560)")
    p.add_argument("--head-dim", type=int, default=None, help="default 128")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default bf16")
    p.add_argument("--context-frames", type=int, default=None, help="default 21")
    p.add_argument("--long-frames", type=int, default=None, help="default 600")
    p.add_argument("--recompute-at", type=int, nargs="+", default=None, help="default 100 600")
    p.add_argument("--memory-from", type=int, default=None, help="default 50")
    p.add_argument("--warmup-ms", type=float, default=None, help="default 25")
    p.add_argument("--rep-ms", type=float, default=None, help="default 200")
    p.add_argument("--loop-steps", type=int, default=None, help="steps of a wall-clock loop (50)")
    p.add_argument("--context-only", action="store_true",
                   help="the context section alone (no long run, no recomputation)")  # fmt: skip
    p.add_argument("--time-budget-s", type=float, default=420.0,
                   help="start no recomputation after this many seconds")  # fmt: skip
    args = p.parse_args(argv)
    # head_dim 32: the CPU flex kernel's smallest (flexframe.nn.kernels.CPU_MIN_HEAD_DIM)
    tiny = {"device": "cpu", "heads": [2], "chunks": [3], "patches": 24, "head_dim": 32,
            "dtype": "fp32", "context_frames": 6, "long_frames": 12, "recompute_at": [6, 12],
            "memory_from": 3, "warmup_ms": 0.0, "rep_ms": 0.0, "loop_steps": 2}  # fmt: skip
    full = {"device": "cuda", "heads": [12, 16], "chunks": [1, 3], "patches": 1560,
            "head_dim": 128, "dtype": "bf16", "context_frames": 21, "long_frames": 600,
            "recompute_at": [100, 600], "memory_from": 50, "warmup_ms": 25.0, "rep_ms": 200.0,
            "loop_steps": 50}  # fmt: skip
    for key, value in (tiny if args.smoke else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.device = C.resolve_device(args.device)
    args.dtype = DTYPES[args.dtype]
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    policy = KernelPolicy(max_flash_shapes=64)  # every case's shapes get FLASH where it runs
    rows: list[dict] = []
    doc: dict[str, Any] = {
        "env": {**C.env_info(args.device), "flash_attn_version": flash_version()},
        "args": {
            k: (str(v) if isinstance(v, (torch.device, torch.dtype)) else v)
            for k, v in vars(args).items()
        },  # fmt: skip
        "rows": rows,
    }
    for heads in args.heads:
        for c in args.chunks:
            t0 = time.perf_counter()
            try:
                case = Case(args, heads, c, policy, rows)
                case.context()
                if not args.context_only:
                    case.recompute(case.long(), started)
            except Exception as exc:  # noqa: BLE001 (a failed case is a row, the rest runs)
                rows.append({"heads": heads, "chunk_frames": c, "section": "case",
                             "variant": "all", "status": "OOM" if C.is_oom(exc) else "error",
                             "message": C.error_message(exc)})  # fmt: skip
            print(
                f"case heads={heads} chunk={c}: {time.perf_counter() - t0:.0f} s", file=sys.stderr
            )
            doc["summary"] = summarize(rows)
            doc["seconds"] = time.perf_counter() - started
            C.write_json(args.out, doc)
            if args.device.type == "cuda":
                torch.cuda.empty_cache()
    print_table(doc["summary"])
    return doc


if __name__ == "__main__":
    main()
    sys.exit(0)
