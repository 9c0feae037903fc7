"""Block-mask construction time: flexframe's closed-form builder against torch's create_block_mask.

Builders, each timed on its own (median wall-clock ms, the device synchronized around each call,
warm-up excluded):

- ``closed-form``: ``flexframe.masks.closed_form.build_block_mask``, the uncached builder behind
  ``MaskSpec.block_mask`` (O(frames + blocks), no N x N work): block tables on the host, then on
  CUDA one Triton launch writes every BlockMask tensor (``flexframe.masks.block_kernel``);
- ``closed-form-torch``: the same block bounds with the grids formed by torch operations on the
  device and ordered with prefix sums (the route before the kernel, and the CPU's route);
- ``closed-form-cached``: ``spec.block_mask(device)`` once it is cached (what a training step
  pays after its first call);
- ``eager``: ``torch.nn.attention.flex_attention.create_block_mask`` (materializes N x N);
- ``compiled``: ``torch.compile(create_block_mask, dynamic=False)``, compiled once per shape.

Before timing, every builder's BlockMask is compared with torch's (eager where it fits, else
compiled): block counts exactly, block indices on their valid entries. A builder that disagrees
is FAILED and not timed; one that runs out of memory is an ``OOM (asked for X)`` row.

Examples::

    python benchmarks/mask_build.py --out results/mask_build.json
    python benchmarks/mask_build.py --device cpu --quick --out /tmp/mask_build.json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import _common as C
import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

from flexframe import clear_block_mask_cache
from flexframe.masks.closed_form import block_mask_from_grids, build_block_mask
from flexframe.sampling import MERGE_STRATEGIES

BUILDERS = ("closed-form", "closed-form-torch", "closed-form-cached", "eager", "compiled")
REFERENCE_ORDER = ("eager", "compiled")  # torch's own builders, the definition to match


def compare_block_masks(got: BlockMask, ref: BlockMask) -> str | None:
    """``None`` if ``got`` and ``ref`` describe the same blocks, else what differs.

    Counts must be equal; indices are compared on their valid entries only (the entries past a
    row's count are not read by the kernel).

    Example:
        >>> from flexframe import get_mask
        >>> spec = get_mask("causal-frame", num_frames=4, num_patches_per_frame=3)
        >>> a = spec.block_mask("cpu", 4, builder="closed-form")
        >>> b = spec.block_mask("cpu", 4, builder="create_block_mask")
        >>> compare_block_masks(a, b) is None
        True
    """
    if tuple(got.seq_lengths) != tuple(ref.seq_lengths):
        return f"seq_lengths {tuple(got.seq_lengths)} != {tuple(ref.seq_lengths)}"
    if tuple(got.BLOCK_SIZE) != tuple(ref.BLOCK_SIZE):
        return f"BLOCK_SIZE {tuple(got.BLOCK_SIZE)} != {tuple(ref.BLOCK_SIZE)}"
    for side in ("kv", "q"):
        for kind in ("", "full_"):
            num_name, idx_name = f"{kind}{side}_num_blocks", f"{kind}{side}_indices"
            num_a, num_b = getattr(got, num_name), getattr(ref, num_name)
            if (num_a is None) != (num_b is None):
                return f"{num_name} is None in one mask only"
            if num_a is None:
                continue
            if num_a.shape != num_b.shape or not torch.equal(num_a.cpu(), num_b.cpu()):
                return f"{num_name} differs"
            idx_a, idx_b = getattr(got, idx_name).cpu(), getattr(ref, idx_name).cpu()
            if idx_a.shape != idx_b.shape:
                return f"{idx_name} shape {tuple(idx_a.shape)} != {tuple(idx_b.shape)}"
            valid = torch.arange(idx_a.shape[-1]) < num_a.cpu()[..., None]
            if not torch.equal(idx_a[valid], idx_b[valid]):
                return f"{idx_name} differs on its valid entries"
    return None


def bit_identical(got: BlockMask, ref: BlockMask) -> bool:
    """Whether every index tensor is equal entry for entry, the unread tail included."""
    names = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices")
    names += tuple(name.replace("kv_", "q_") for name in names)
    for name in names:
        a, b = getattr(got, name), getattr(ref, name)
        if (a is None) != (b is None):
            return False
        if a is not None and (a.shape != b.shape or not torch.equal(a.cpu(), b.cpu())):
            return False
    return True


def make_builders(
    spec: Any, block_size: int, device: torch.device, compiled: Callable[..., BlockMask]
) -> dict[str, Callable[[], BlockMask]]:
    """Zero-argument functions that build ``spec``'s BlockMask, by builder name."""
    mod = spec.mask_mod_for(device)
    n_q, n_kv = spec.q_len, spec.kv_len
    bs = (block_size, block_size)
    return {
        "closed-form": lambda: build_block_mask(spec.relation, mod, bs, device),
        "closed-form-torch": lambda: block_mask_from_grids(
            *spec.relation.block_grids(*bs, device=device), (n_q, n_kv), bs, mod
        ),
        "closed-form-cached": lambda: spec.block_mask(device, block_size, builder="closed-form"),
        "eager": lambda: create_block_mask(mod, 1, 1, n_q, n_kv, device=device, BLOCK_SIZE=bs),
        "compiled": lambda: compiled(mod, 1, 1, n_q, n_kv, device=device, BLOCK_SIZE=bs),
    }


def peak_extra_bytes(fn: Callable[[], BlockMask], device: torch.device) -> int | None:
    """Peak device memory one call allocates beyond what was live before it (CUDA only)."""
    if device.type != "cuda":
        return None
    gc.collect()
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del result
    return int(peak)


def run_point(
    args: argparse.Namespace,
    device: torch.device,
    mask: str,
    n: int,
    patches: int,
    compiled: Callable[..., BlockMask],
) -> list[dict[str, Any]]:
    """Rows for every builder at one (mask, length, frame size)."""
    num_frames = n // patches
    if num_frames < 1:
        raise ValueError(f"--seq-lens {n} is shorter than one frame of --patches {patches}")
    spec = C.frame_spec(
        mask, num_frames, patches, args.window_size, args.timestamp_merge, **C.frame_options(args)
    )
    tokens = spec.q_len
    builders = make_builders(spec, args.block_size, device, compiled)
    rows: dict[str, dict[str, Any]] = {}
    built: dict[str, BlockMask] = {}
    # Builders run in REFERENCE_ORDER first so that the reference exists before the others.
    order = [b for b in REFERENCE_ORDER if b in args.builders]
    order += [b for b in args.builders if b not in order]
    for name in order:
        row = {
            "n_requested": n,
            "tokens": tokens,
            "patches": patches,
            "mask": mask,
            "builder": name,
            "status": None,
            "message": None,
            "median_ms": None,
            "first_call_s": None,
            "peak_extra_bytes": None,
            "dense_mask_bytes": tokens * tokens,
            "matches": None,
            "partial_blocks": None,
            "full_blocks": None,
            "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        }
        rows[name] = row
        if name == "eager" and args.eager_max_len is not None and tokens > args.eager_max_len:
            row["status"] = "skipped"
            row["message"] = (
                f"skipped: eager materializes N x N ({C.fmt_bytes(tokens * tokens)} of bools) "
                f"and N={tokens} > --eager-max-len {args.eager_max_len}"
            )
            continue
        fn = builders[name]
        try:
            if name == "closed-form-cached":
                spec.block_mask(device, args.block_size, builder="closed-form")  # fill the cache
            t0 = time.perf_counter()
            block_mask = fn()
            C.synchronize(device)
            row["first_call_s"] = round(time.perf_counter() - t0, 4)
            row["peak_extra_bytes"] = peak_extra_bytes(fn, device)
            built[name] = block_mask
            row["partial_blocks"] = int(block_mask.kv_num_blocks.sum())
            full = block_mask.full_kv_num_blocks
            row["full_blocks"] = int(full.sum()) if full is not None else 0
            row["status"] = "built"
        except Exception as err:  # a builder's failure is a row, not a crash
            if C.is_oom(err):
                asked = C.oom_request(err)
                row["status"] = "OOM"
                row["message"] = f"OOM (asked for {asked})" if asked else C.error_message(err)
            else:
                row["status"] = "error"
                row["message"] = C.error_message(err)
            built.pop(name, None)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    ref_name = next((b for b in REFERENCE_ORDER if b in built), None)
    for name, row in rows.items():
        if row["status"] != "built":
            continue
        if ref_name is None:
            row["matches"] = "no torch builder succeeded to compare with"
        elif name == ref_name:
            row["matches"] = "reference"
        else:
            diff = compare_block_masks(built[name], built[ref_name])
            if diff is None:
                same = (
                    "bit-identical"
                    if bit_identical(built[name], built[ref_name])
                    else ("valid entries")
                )
                row["matches"] = f"yes ({ref_name}, {same})"
            else:
                row["matches"] = f"NO vs {ref_name}: {diff}"
            if diff is not None:
                row["status"] = "FAILED"
                row["message"] = f"BlockMask differs from {ref_name}'s: {diff}"
                continue
        try:
            row["median_ms"] = C.bench_wallclock(
                builders[name], args.warmup_ms, args.rep_ms, device, min_reps=args.min_reps
            )
            row["status"] = "ok"
        except Exception as err:
            row["status"] = "OOM" if C.is_oom(err) else "error"
            row["message"] = C.error_message(err)
    built.clear()
    clear_block_mask_cache(spec.name)  # the cached masks hold device memory
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return [rows[b] for b in args.builders]


TABLE_HEADERS = (
    "N",
    "patches",
    "mask",
    "builder",
    "median ms",
    "× faster than eager",
    "× faster than compiled",
    "peak extra memory",
    "first call s",
    "partial / full blocks",
    "same as torch",
    "status",
)


def table_rows(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    base = {
        (r["n_requested"], r["patches"], r["mask"], r["builder"]): r["median_ms"]
        for r in rows
        if r["status"] == "ok"
    }
    out = []
    for r in rows:
        key = (r["n_requested"], r["patches"], r["mask"])
        ratios = []
        for other in ("eager", "compiled"):
            other_ms = base.get((*key, other))
            ok = r["status"] == "ok" and other_ms and r["builder"] != other
            ratios.append(f"{other_ms / r['median_ms']:.1f}x" if ok else None)
        n = str(r["tokens"]) + (
            "" if r["tokens"] == r["n_requested"] else f" (of {r['n_requested']})"
        )
        blocks = None
        if r["partial_blocks"] is not None:
            blocks = f"{r['partial_blocks']} / {r['full_blocks']}"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['message']}"
        out.append(
            [
                n,
                r["patches"],
                r["mask"],
                r["builder"],
                C.fmt_num(r["median_ms"], 4),
                *ratios,
                C.fmt_bytes(r["peak_extra_bytes"]),
                r["first_call_s"],
                blocks,
                r["matches"],
                status,
            ]
        )
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seq-lens", type=int, nargs="+", help="default 16384 32768 65536 131072")
    p.add_argument("--patches", type=int, nargs="+", help="patches a frame (default 256 196 729)")
    p.add_argument("--masks", nargs="+", choices=C.ALL_FRAME_MASKS, default=["causal-frame"])
    p.add_argument("--window-size", type=int, default=8)
    p.add_argument("--frames-per-chunk", type=int, default=3, help="chunk-causal, teacher-forcing")
    p.add_argument("--sink-frames", type=int, default=1, help="sliding-window-sinks")
    p.add_argument("--num-videos", type=int, default=4, help="packed-causal-frame")
    p.add_argument("--timestamp-merge", default="concat", choices=MERGE_STRATEGIES)
    p.add_argument("--builders", nargs="+", choices=BUILDERS, default=list(BUILDERS))
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--device", default=None, help="cuda (default where present) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke run)")
    p.add_argument("--out", help="JSON results")
    p.add_argument("--warmup-ms", type=float, default=None, help="default 50 (quick: 5)")
    p.add_argument("--rep-ms", type=float, default=None, help="default 500 (quick: 20)")
    p.add_argument("--min-reps", type=int, default=5, help="timed calls at least")
    p.add_argument(
        "--eager-max-len",
        type=int,
        default=None,
        help="skip eager create_block_mask above this many tokens (default: try every length on "
        "CUDA and report OOM; 16384 on the CPU, where a huge allocation may swap or be killed)",
    )
    args = p.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_cpu = args.device.startswith("cpu")
    if args.seq_lens is None:
        args.seq_lens = [1024] if args.quick else [16384, 32768, 65536, 131072]
    if args.patches is None:
        args.patches = [64, 48] if args.quick else [256, 196, 729]
    if args.warmup_ms is None:
        args.warmup_ms = 5.0 if args.quick else 50.0
    if args.rep_ms is None:
        args.rep_ms = 20.0 if args.quick else 500.0
    if args.eager_max_len is None and on_cpu:
        args.eager_max_len = 16384
    for name in ("seq_lens", "patches"):
        for value in getattr(args, name):
            if value < 1:
                p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.block_size < 1:
        p.error(f"--block-size must be >= 1, got {args.block_size}")
    if len(set(args.builders)) != len(args.builders):
        p.error(f"--builders lists a builder twice: {args.builders}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Time every builder at every size; print the table; return (and write) the JSON document."""
    args = parse_args(argv)
    device = C.resolve_device(args.device)
    env = C.env_info(device)
    print(f"# mask-build benchmark on {env['gpu_name'] or device}", file=sys.stderr)
    print(json.dumps(env), file=sys.stderr)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for n in args.seq_lens:
        for patches in args.patches:
            for mask in args.masks:
                # One fresh compiled builder per shape: each is a static-shape compile, and the
                # guard list of one shared callable would grow with every shape.
                torch._dynamo.reset()
                compiled = torch.compile(create_block_mask, dynamic=False)
                for row in run_point(args, device, mask, n, patches, compiled):
                    rows.append(row)
                    what = (
                        f"{row['median_ms']:.4g} ms"
                        if row["status"] == "ok"
                        else f"{row['status']}: {row['message']}"
                    )
                    print(
                        f"[{time.perf_counter() - started:7.1f}s] N={row['tokens']} p={patches} "
                        f"{mask} {row['builder']}: {what}",
                        file=sys.stderr,
                        flush=True,
                    )
                doc = {"benchmark": "mask_build", "env": env, "config": vars(args), "rows": rows}
                if args.out:
                    C.write_json(args.out, doc)
    doc = {"benchmark": "mask_build", "env": env, "config": vars(args), "rows": rows}
    print(C.markdown_table(TABLE_HEADERS, table_rows(rows)))
    return doc


if __name__ == "__main__":
    main()
