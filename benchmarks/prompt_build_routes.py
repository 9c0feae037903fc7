"""Prompt-mask builds on CUDA by route: the one-launch block kernel against the torch route.

For each prompt family on the benchmark prompt of ``prompt_masks.py`` (600 text tokens, 20 frames
of 1,560, 200 text tokens): ``get_mask(...).block_mask("cuda")`` (the block kernel,
``flexframe.masks.block_kernel``, where the tables have at most ``MAX_PIECES`` pieces a block)
against the same grids formed by torch operations (``block_grids`` + ``block_mask_from_grids``).
Both BlockMasks are compared tensor for tensor first; median wall-clock ms of 60 builds, the
device synchronized around each, after 10 warm-up builds. CUDA only::

    python benchmarks/prompt_build_routes.py
"""

from __future__ import annotations

import build_profile
import torch
from prompt_masks import prompt_ids, torch_route

from flexframe import get_mask

TENSORS = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
           "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")  # fmt: skip
FAMILIES = (
    ("prompt-causal-frame", {}),
    ("prompt-sliding-window", {"window_size": 4, "sink_frames": 1}),
    ("prompt-timestamp-causal", {"within_frame": "full", "timestamps": list(range(20))}),
)


def median_ms(fn, n: int = 60) -> float:
    """``build_profile.median_ms`` (synchronized wall clock) after 10 warm-up calls."""
    for _ in range(10):
        fn()
    return build_profile.median_ms(fn, n)


def main() -> None:
    ids = prompt_ids(1, 20, 1560, (600, 200))
    for name, params in FAMILIES:

        def kernel(name=name, params=params):
            return get_mask(name, frame_ids=ids, **params).block_mask("cuda")

        def by_torch(name=name, params=params):
            return torch_route(get_mask(name, frame_ids=ids, **params), "cuda")

        a, b = kernel(), by_torch()
        same = all(torch.equal(getattr(a, t), getattr(b, t)) for t in TENSORS)
        print(f"{name:26s} block_mask {median_ms(kernel):.3f} ms  torch route "
              f"{median_ms(by_torch):.3f} ms  same={same}")  # fmt: skip


if __name__ == "__main__":
    main()
