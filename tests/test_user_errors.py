"""What a new user trips over, by class (issue 17): figures, silent acceptances, unclear errors.

Each class is tested with several inputs of its kind: the masks' and the sampler's share of it
(the pictures, the loss and the command line have their own files).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import expected_block_grids, mask_configs, reference_dense

from flexframe import FramePositions, get_mask, get_mask_entry, sample_fast_slow_frames
from flexframe.masks import MAX_DENSE_BYTES


# -- figures that read as bugs -----------------------------------------------------------------
@given(mask_configs(), st.integers(1, 200))
def test_sparsity_is_the_share_of_blocks_skipped_in_percent(config, block):
    name, params = config
    spec = get_mask(name, **params)
    partial, full = expected_block_grids(reference_dense(name, params), block, block)
    skipped = 1.0 - float((partial | full).sum()) / partial.numel()
    assert 0.0 <= spec.sparsity(block) <= 100.0
    assert spec.sparsity(block) == pytest.approx(100.0 * skipped)


@pytest.mark.parametrize(
    "name, params",
    [
        ("causal-frame", {"num_frames": 4, "num_patches_per_frame": 3}),  # 12 tokens, one block
        ("full", {"seq_len": 8, "kv_len": 4}),
        ("token-causal", {"seq_len": 300}),
    ],
)
def test_tiny_and_padded_masks_skip_between_0_and_100_percent(name, params):
    sparsity = get_mask(name, **params).sparsity(128)
    assert 0.0 <= sparsity <= 100.0


def test_a_literal_parameter_is_listed_by_its_values():
    signature = get_mask_entry("timestamp-causal").signature()
    assert "within_frame: 'full' | 'causal' = 'full'" in signature
    assert "WithinFrame" not in signature and "num_frames: int | None = None" in signature


# -- silent acceptances ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 3, 16, 8, 8), (2, 1, 32, 4, 4), (1, 4, 24, 2, 2)])
def test_a_clip_that_looks_like_b_c_t_h_w_gets_a_warning(shape):
    with pytest.warns(UserWarning, match=r"read as \[B, T, C, H, W\].*transpose\(1, 2\)"):
        sample_fast_slow_frames(torch.rand(shape), num_fast=2, num_slow=2)


@pytest.mark.parametrize("frames, num_fast, num_slow", [(5, 8, 2), (3, 2, 4), (6, 8, 8)])
def test_a_clip_shorter_than_the_frames_asked_for_warns_that_frames_repeat(
    frames, num_fast, num_slow
):
    video = torch.rand(1, frames, 3, 4, 4)
    with pytest.warns(UserWarning, match=f"the clip has T={frames} frames, fewer than"):
        sample_fast_slow_frames(video, num_fast=num_fast, num_slow=num_slow)


@pytest.mark.parametrize("shape", [(1, 16, 3, 8, 8), (2, 32, 1, 4, 4), (1, 8, 16, 2, 2)])
def test_a_long_enough_b_t_c_h_w_clip_gets_no_warning(shape):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_fast_slow_frames(torch.rand(shape), num_fast=4, num_slow=4)


FRAMED = [
    get_mask("causal-frame", num_frames=4, num_patches_per_frame=3),
    get_mask("sliding-window", num_frames=4, num_patches_per_frame=3, window_size=1),
    get_mask("timestamp-causal", timestamps=[0, 3, 1, 2], num_patches_per_frame=3),
]
FRAMELESS = [get_mask("token-causal", seq_len=12), get_mask("full", seq_len=12)]


@pytest.mark.parametrize("framed", FRAMED, ids=lambda s: s.name)
@pytest.mark.parametrize("frameless", FRAMELESS, ids=lambda s: s.name)
def test_a_mask_without_frames_keeps_the_other_operands_frames(framed, frameless):
    want = FramePositions.from_mask(framed)
    for combined in (framed & frameless, frameless & framed, framed | frameless):
        assert combined.num_patches_per_frame == 3
        got = FramePositions.from_mask(combined)
        assert torch.equal(got.frame, want.frame) and torch.equal(got.patch, want.patch)


def test_masks_of_two_different_frame_sizes_combine_without_frames():
    a = get_mask("causal-frame", num_frames=4, num_patches_per_frame=3)
    b = get_mask("causal-frame", num_frames=6, num_patches_per_frame=2)
    assert (a & b).num_patches_per_frame is None and (a & b).frame_times is None


# -- unclear errors and crashes from inside torch ---------------------------------------------------
@pytest.mark.parametrize(
    "name, params",
    [
        ("causal-frame", {"num_frames": 512, "num_patches_per_frame": 256}),  # 16 GiB
        ("token-causal", {"seq_len": 1 << 20}),  # 1 TiB
        ("full", {"seq_len": 70_000, "kv_len": 70_000}),
    ],
)
def test_a_dense_mask_above_the_limit_is_refused_with_its_size_and_what_to_use(name, params):
    spec = get_mask(name, **params)
    assert spec.q_len * spec.kv_len > MAX_DENSE_BYTES
    with pytest.raises(ValueError, match=r"would hold [\d,]+ bytes .*GiB.*block_mask\(\)"):
        spec.to_dense()


@pytest.mark.parametrize(
    "make, block_size",
    [
        (lambda: get_mask("causal-frame", num_frames=8, num_patches_per_frame=8)
         & get_mask("token-causal", seq_len=64), 100_000),
        (lambda: get_mask("token-causal", seq_len=1 << 17)
         | get_mask("full", seq_len=1 << 17), 128),
    ],
)  # fmt: skip
def test_torchs_eager_builder_is_refused_past_the_limit_counting_its_padded_grid(make, block_size):
    with pytest.raises(ValueError, match=r"create_block_mask .*padded grid of [\d,]+ cells"):
        make().block_mask("cpu", block_size)


@pytest.mark.parametrize("device", ["gpu", "cuda0", "tpu:1"])
def test_a_device_torch_cannot_read_is_named_with_what_to_write(device):
    spec = get_mask("causal-frame", num_frames=2, num_patches_per_frame=2)
    with pytest.raises(ValueError, match=rf"device={device!r} is not a device; use 'cpu', 'cuda'"):
        spec.block_mask(device)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_cuda_without_a_gpu_is_refused_in_one_line(device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = get_mask("causal-frame", num_frames=2, num_patches_per_frame=2)
    for call in (lambda: spec.block_mask(device), lambda: spec.to_dense(device)):
        with pytest.raises(ValueError, match="torch sees no CUDA GPU.*use 'cpu' or 'auto'"):
            call()
