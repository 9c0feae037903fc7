"""The host half of a closed-form build: the block tables the CUDA kernel reads, on any machine.

On CUDA, ``build_block_mask`` and ``PromptMaskSpec.block_mask`` work out a mask's blocks on the
host (``IntervalRelation.block_table``: NumPy over frames, pieces and blocks), then one Triton
launch writes the BlockMask (``flexframe.masks.block_kernel``). At 128K tokens the launch and
its copy cost about 0.2 ms on an H200 host; the rest of a build is this host half. It needs no
GPU, so it is measured here on whatever machine runs the script, case by case:

- ``tables``: ``spec.relation.block_table(128, 128)`` with the spec kept (what a repeated
  ``build_block_mask`` does; the keys keep their block extremes);
- ``tables, new spec``: ``get_mask(...)`` then the tables, nothing kept (a first build);
- for the prompt masks (32,000 tokens: 600 text, 20 frames of 1,560, 200 text):
  ``host half``: ``get_mask(..., frame_ids=ids)``, the stacked tables and the mask_mod's tensors
  (everything ``block_mask("cuda")`` does before its one copy and the launch);
- the anchor in the same run: ``CPU build``, the whole BlockMask built on this CPU by the torch
  route (``build_block_mask(..., "cpu")``, a new spec for the prompts).

Before timing, the tables' meaning (``grids_from_tables``) is compared with the torch route's
grids; a case that disagrees is FAILED and not timed. Wall-clock ms over ``--reps`` calls after
10 warm-up calls (``--anchor-reps`` for the CPU build): the median and the 10th percentile (a
shared machine's noise is one-sided).

    python benchmarks/host_tables.py --out benchmarks/results/host_tables-cpu.json
    python benchmarks/host_tables.py --quick --reps 3 --anchor-reps 1  # a smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import _common as C
import numpy as np
import torch
from prompt_masks import prompt_ids

from flexframe import get_mask
from flexframe.masks.block_kernel import grids_from_tables
from flexframe.masks.closed_form import build_block_mask

BS = (128, 128)
FRAME_CASES = (  # (mask, frames, tokens a frame): 128K tokens, mask_build.py's settings
    *((m, 84, 1560) for m in ("causal-frame", "chunk-causal", "chunk-causal-window",
                              "sliding-window-sinks", "teacher-forcing", "packed-causal-frame")),
    *((m, 512, 256) for m in ("causal-frame", "chunk-causal", "chunk-causal-window",
                              "sliding-window-sinks", "teacher-forcing", "packed-causal-frame")),
)  # fmt: skip
PROMPT_CASES = (
    ("prompt-causal-frame", {}),
    ("prompt-sliding-window", {"window_size": 4, "sink_frames": 1}),
    ("prompt-timestamp-causal", {"within_frame": "full", "timestamps": list(range(20))}),
)


def timed(fn: Callable[[], Any], reps: int) -> dict[str, float]:
    """Median and 10th-percentile wall-clock ms of ``reps`` calls after 10 warm-up calls."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {"median_ms": times[len(times) // 2], "p10_ms": times[len(times) // 10]}


def same_blocks(rows: Any, cols: Any, grids: tuple[torch.Tensor, torch.Tensor]) -> bool:
    """The tables classify every block as the torch route's grids do (``[B, nq, nkv]``)."""
    partial, full = grids_from_tables(torch.from_numpy(rows), torch.from_numpy(cols))
    return torch.equal(partial, grids[0]) and torch.equal(full, grids[1])


def frame_rows(reps: int, anchor_reps: int, scale: int = 1) -> list[dict[str, Any]]:
    out = []
    for mask, all_frames, p in FRAME_CASES:
        frames = max(2, all_frames // scale)

        def new_spec(mask=mask, frames=frames, p=p):
            return C.frame_spec(mask, frames, p, window_size=8)

        spec = new_spec()
        rel = spec.relation
        row: dict[str, Any] = {"case": mask, "tokens": spec.q_len, "patches": p}
        rows, cols = rel.block_table(*BS)
        row["pieces_a_block"] = int(rows.shape[1])
        if not same_blocks(rows, cols, rel.block_grids(*BS)):
            out.append({**row, "status": "FAILED"})
            continue
        row["tables"] = timed(lambda rel=rel: rel.block_table(*BS), reps)
        row["tables, new spec"] = timed(lambda f=new_spec: f().relation.block_table(*BS), reps)
        row["CPU build"] = timed(
            lambda rel=rel, spec=spec: build_block_mask(rel, spec.mask_mod, BS, "cpu"), anchor_reps
        )
        out.append({**row, "status": "ok"})
    return out


def prompt_rows(reps: int, anchor_reps: int, scale: int = 1) -> list[dict[str, Any]]:
    ids = prompt_ids(1, 20, 1560 // scale, (600, 200))
    out = []
    for name, params in PROMPT_CASES:

        def host_half(name=name, params=params):
            spec = get_mask(name, frame_ids=ids, **params)
            tables = spec._block_tables(BS)  # the tables block_mask("cuda") sends
            spec.mask_mod_for("cpu")
            return tables

        spec = get_mask(name, frame_ids=ids, **params)
        row: dict[str, Any] = {"case": name, "tokens": spec.kv_len, "patches": 1560 // scale}
        rows, cols = host_half()
        row["pieces_a_block"] = int(rows.shape[2])
        if not same_blocks(rows, cols, spec.block_grids(BS)):
            out.append({**row, "status": "FAILED"})
            continue
        row["host half"] = timed(host_half, reps)
        row["CPU build"] = timed(
            lambda name=name, params=params: get_mask(name, frame_ids=ids, **params).block_mask(
                "cpu"
            ),
            anchor_reps,
        )
        out.append({**row, "status": "ok"})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    columns = ("tables", "tables, new spec", "host half", "CPU build")
    body = []
    for r in rows:
        cells = [r["case"], f"{r['tokens']:,}", r["patches"], r["pieces_a_block"]]
        for c in columns:
            cells.append(
                f"{r[c]['median_ms']:.3f} ({r[c]['p10_ms']:.3f})" if c in r else r["status"]
                if r["status"] != "ok" else ""
            )  # fmt: skip
        body.append(cells)
    headers = ["case", "tokens", "tokens a frame", "pieces a block",
               *(f"{c}: median (p10) ms" for c in columns)]  # fmt: skip
    return C.markdown_table(headers, body)


def host_info() -> dict[str, Any]:
    """What the host half's speed depends on: the CPU, NumPy, and the code that ran."""
    model = platform.processor() or None
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    import flexframe

    where = os.path.dirname(os.path.dirname(os.path.abspath(flexframe.__file__)))
    try:
        git = ["git", "-C", where]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain", "flexframe"], capture_output=True,
                               text=True, check=True).stdout.strip()  # fmt: skip
        code = commit + ("+uncommitted changes in flexframe/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        code = None
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "numpy_version": np.__version__,
            "flexframe_code": code, "flexframe_path": where}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--anchor-reps", type=int, default=20, help="calls timed for the CPU build")
    p.add_argument("--out", default=None, help="JSON results file")
    p.add_argument("--quick", action="store_true", help="1/12 of the sizes (a smoke run)")
    args = p.parse_args(argv)
    scale = 12 if args.quick else 1
    rows = frame_rows(args.reps, args.anchor_reps, scale) + prompt_rows(
        args.reps, args.anchor_reps, scale
    )
    doc = {"benchmark": "host_tables", "env": {**C.env_info(torch.device("cpu")), **host_info()},
           "config": vars(args), "rows": rows}  # fmt: skip
    if args.out:
        C.write_json(args.out, doc)
    print(table(rows))
    return doc


if __name__ == "__main__":
    main()
    sys.exit(0)
