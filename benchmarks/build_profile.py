"""Where a closed-form BlockMask build's time goes on a GPU: host profile and device kernels.

Diagnostic output only (the measured figures go through ``mask_build.py`` and
``prompt_masks.py``). For each case it prints the median wall-clock milliseconds of a build
(synchronized around each call), the host functions that take the most time (``cProfile``,
by own time), the device kernels (``torch.profiler``), and every call that synchronizes the
host with the device (``torch.cuda.set_sync_debug_mode``).

Cases: ``causal-frame`` (one interval) and ``sliding-window`` with a sink frame (a union of two)
at 128K tokens of 1,560-token frames, and the 32K-token prompt mask of ``prompt_masks.py``.

    python benchmarks/build_profile.py [--cases causal-frame sliding-window-sinks prompt]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

import _common as C
import torch
from prompt_masks import prompt_ids

from flexframe import get_mask
from flexframe.masks.closed_form import build_block_mask


def cases(device: torch.device) -> dict[str, Callable[[], Any]]:
    frame = get_mask("causal-frame", num_frames=84, num_patches_per_frame=1560)
    sinks = get_mask("sliding-window", num_frames=84, num_patches_per_frame=1560, window_size=2,
                     sink_frames=1)  # fmt: skip
    ids = prompt_ids(1, 20, 1560, (600, 200))
    return {
        "causal-frame": lambda: build_block_mask(
            frame.relation, frame.mask_mod, (128, 128), device
        ),
        "sliding-window-sinks": lambda: build_block_mask(
            sinks.relation, sinks.mask_mod, (128, 128), device
        ),
        "prompt": lambda: get_mask("prompt-causal-frame", frame_ids=ids).block_mask(device),
    }


def median_ms(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["causal-frame", "sliding-window-sinks", "prompt"])
    p.add_argument("--reps", type=int, default=200)
    args = p.parse_args()
    device = torch.device("cuda")
    table = cases(device)
    for name in args.cases:
        fn = table[name]
        for _ in range(20):
            fn()
        print(f"## {name}: median {median_ms(fn, args.reps):.3f} ms a build")
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(22)
        print("\n".join(line for line in text.getvalue().splitlines()[4:] if line.strip()))
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14))
        syncs = C.synchronizing_calls(fn)
        print(f"synchronizing calls in one build: {len(syncs)}", *syncs[:5], sep="\n  ")


if __name__ == "__main__":
    main()
    sys.exit(0)
