"""Where a streaming step's time goes: host cost of each part, and a profiler table.

One case of ``streaming.py``'s context section (a 1-frame chunk against a 21-frame ring of
1,560-token frames, 12 heads of 128, bf16, the kernel policy's choice: FLASH where installed).
For each part of :class:`streaming.FastPath`'s step it prints the host microseconds a call
(no synchronization inside the loop, so a part the GPU runs asynchronously costs only its
launch), then the whole step's wall time against the attention alone, then ``torch.profiler``'s
table of the step sorted by host time. Diagnostic output only: the measured figures go through
``streaming.py``.

    python benchmarks/stream_profile.py [--heads 12] [--chunk 1] [--steps 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import _common as C
import torch
from streaming import Attention, DecoderConfig, FastPath, Frames, KernelPolicy, chunk_spec


def host_us(fn: Callable[[], Any], steps: int) -> float:
    """Host microseconds a call, the device synchronized only before and after."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    host = (time.perf_counter() - start) * 1e6 / steps
    torch.cuda.synchronize()
    return host


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--chunk", type=int, default=1)
    p.add_argument("--patches", type=int, default=1560)
    p.add_argument("--context-frames", type=int, default=21)
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    device, dtype, d, c = torch.device("cuda"), torch.bfloat16, 128, args.chunk
    policy = KernelPolicy(max_flash_shapes=64)
    spec = chunk_spec(args.context_frames, args.patches, c, args.context_frames // c - 1, 0)
    config = DecoderConfig(dim=args.heads * d, depth=1, num_heads=args.heads, head_dim=d,
                           attention_backend="flex")  # fmt: skip
    attn = Attention(config).to(device, dtype)
    fast = FastPath(spec, attn, c, policy, device, dtype)
    frames = Frames(args.heads, args.patches, d, device, dtype)
    with torch.no_grad():
        for step in range(args.context_frames // c + 2):  # the ring full and wrapped
            fast.step(*frames.qkv(step * c, c))
        q, k, v = frames.qkv(10_000, c)
        with fast.cache.begin(c, append=False) as s:
            block_mask = s.mask.block_mask()
            keys, values = s.write(0, k, v)
        print("kernel options:", policy.options(device, dtype, d))

        def begin_only() -> None:
            with fast.cache.begin(c, append=False) as s:
                s.mask.block_mask()

        def begin_write() -> None:
            with fast.cache.begin(c, append=False) as s:
                s.write(0, k, v)
                s.mask.block_mask()

        def attend_only() -> None:
            policy.attend(q, keys, values, block_mask, dynamic=False)

        def step() -> None:
            fast.step(q, k, v, append=False)

        def step_appending() -> None:  # what a generation loop runs: the ring moves on
            fast.step(q, k, v)

        rows = [("begin + step mask", host_us(begin_only, args.steps)),
                ("begin + write + mask", host_us(begin_write, args.steps)),
                ("attend (one BlockMask)", host_us(attend_only, args.steps)),
                ("whole step", host_us(step, args.steps)),
                ("whole appending step", host_us(step_appending, args.steps))]  # fmt: skip
        gpu_attend = C.bench(attend_only, 25, 200, device)
        gpu_step = C.bench(step, 25, 200, device)
        for name, us in rows:
            print(f"host {name:<26} {us:8.1f} us a call")
        print(f"do_bench attend {gpu_attend * 1e3:8.1f} us, step {gpu_step * 1e3:8.1f} us")
        for name, fn in (("step", step), ("appending step", step_appending)):
            syncs = C.synchronizing_calls(fn, times=3)
            print(f"synchronizing calls in 3 of a {name}: {len(syncs)}", *syncs[:6], sep="\n  ")
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                step()
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        print(table)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))


if __name__ == "__main__":
    main()
    sys.exit(0)
