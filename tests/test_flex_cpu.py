"""flex_attention under torch.compile, on the CPU, against SDPA with the dense mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from flexframe import get_mask

# One compiled callable for the whole file: each new shape or mask_mod still compiles once
# (about 25 s on a CPU), so the cases below are few and chosen to cover what matters.
compiled_flex = torch.compile(flex_attention)


@pytest.mark.parametrize(
    "name, params",
    [
        ("causal-frame", {"num_frames": 4, "num_patches_per_frame": 64}),
        # 6 frames of 33 tokens = 198: not a multiple of 128, so the last block is padded.
        ("timestamp-causal", {"timestamps": [0, 8, 1, 9, 2, 10], "num_patches_per_frame": 33}),
        ("sliding-window", {"num_frames": 5, "num_patches_per_frame": 40, "window_size": 1}),
    ],
)
def test_compiled_flex_attention_equals_sdpa_with_the_dense_mask(name, params):
    spec = get_mask(name, **params)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, spec.q_len, 32, generator=gen) for _ in range(3))
    out = compiled_flex(q, k, v, block_mask=spec.block_mask("cpu"))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=spec.to_dense())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
