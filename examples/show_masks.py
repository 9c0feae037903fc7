"""Print the registered masks, the seed's 3x3 causal-frame mask, and a large mask's sparsity.

python examples/show_masks.py
"""

from __future__ import annotations

import time

import flexframe
from flexframe import get_mask, list_masks


def main() -> None:
    print("Registered masks:")
    for name in list_masks():
        print(f"  {flexframe.get_mask_entry(name).signature()}")
        print(f"      {flexframe.get_mask_entry(name).description}")

    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=3)
    print("\ncausal-frame, 3 frames x 3 patches (rows = queries, 1 = may attend):")
    for row in spec.to_dense().int().tolist():
        print("  " + " ".join(map(str, row)))

    big = get_mask("causal-frame", num_frames=64, num_patches_per_frame=256)
    start = time.perf_counter()
    block_mask = big.block_mask("cpu", block_size=128)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    print(
        f"\ncausal-frame, 64 frames x 256 patches = {big.q_len} tokens, 128x128 blocks:\n"
        f"  {block_mask.sparsity():.1f}% of blocks skipped; "
        f"built in closed form in {elapsed_ms:.1f} ms on the CPU"
    )


if __name__ == "__main__":
    main()
