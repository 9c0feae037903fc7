"""Print the registered masks, the seed's 3x3 causal-frame mask, and a large mask's blocks.

python examples/show_masks.py            # print only
python examples/show_masks.py pictures/  # also save the pictures there (PNG)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import flexframe
from flexframe import get_mask, list_masks
from flexframe.viz import compare_masks, mask_summary, plot_block_sparsity, visualize_mask


def main(out: Path | None = None) -> None:
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
    big.block_mask("cpu", block_size=128)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    print(f"\n{big.q_len} tokens, built in closed form in {elapsed_ms:.1f} ms on the CPU:")
    print(mask_summary(big))

    if out is not None:  # pictures are saved only where asked
        out.mkdir(parents=True, exist_ok=True)
        visualize_mask(spec, title="My Frame Mask", path=out / "my_frame_mask.png")
        plot_block_sparsity(big, path=out / "causal_frame_16k_blocks.png")
        generation = {
            "chunk-causal": get_mask(
                "chunk-causal", num_frames=9, num_patches_per_frame=4, frames_per_chunk=3
            ),
            "teacher-forcing": get_mask(
                "teacher-forcing", num_frames=6, num_patches_per_frame=3, frames_per_chunk=2
            ),
        }
        compare_masks(generation, path=out / "generation_masks.png")
        print(f"\nwrote 3 pictures into {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
