"""The registered masks against brute-force definitions, and the closed-form BlockMask builder."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    BLOCK_MASK_TENSORS,
    block_mask_grids,
    expand_block_mask,
    expected_block_grids,
    mask_configs,
    reference_dense,
)
from torch.nn.attention.flex_attention import create_block_mask

import flexframe
from flexframe import FrameLevelMaskGenerator, get_mask, list_masks

block_sizes = st.one_of(st.integers(1, 9), st.tuples(st.integers(1, 9), st.integers(1, 9)))


@given(mask_configs())
def test_dense_mask_equals_the_written_definition(config):
    name, params = config
    spec = get_mask(name, **params)
    expected = reference_dense(name, params)
    assert spec.to_dense().shape == (spec.q_len, spec.kv_len) == expected.shape
    assert torch.equal(spec.to_dense(), expected)


@given(mask_configs(), block_sizes)
def test_closed_form_blocks_equal_create_block_mask_and_the_dense_mask(config, block_size):
    name, params = config
    spec = get_mask(name, **params)
    expected = reference_dense(name, params)
    q_bs, kv_bs = block_size if isinstance(block_size, tuple) else (block_size, block_size)
    want_partial, want_full = expected_block_grids(expected, q_bs, kv_bs)

    closed = spec.block_mask("cpu", block_size, builder="closed-form")
    generic = spec.block_mask("cpu", block_size, builder="create_block_mask")
    for bm in (closed, generic):
        partial, full = block_mask_grids(bm)
        assert torch.equal(partial, want_partial)
        assert torch.equal(full, want_full)
        assert bm.seq_lengths == (spec.q_len, spec.kv_len)
        assert torch.equal(expand_block_mask(bm, spec.to_dense()), expected)
    # Exactly torch's tensors, ordering of indices included.
    for attr in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
        assert torch.equal(getattr(closed, attr), getattr(generic, attr)), attr


@pytest.mark.parametrize("block_size", [64, 128, (128, 64), (64, 128)])
@pytest.mark.parametrize(
    "name, params",
    [
        ("causal-frame", {"num_frames": 5, "num_patches_per_frame": 196}),
        ("sliding-window", {"num_frames": 6, "num_patches_per_frame": 50, "window_size": 2}),
        ("fast-slow", {"num_fast_frames": 3, "num_slow_frames": 2, "num_patches_per_frame": 129}),
        ("timestamp-causal", {"timestamps": [0, 4, 8, 6, 7, 8], "num_patches_per_frame": 100}),
        (
            "timestamp-causal",
            {"timestamps": [0, 8, 4, 8], "num_patches_per_frame": 64, "within_frame": "causal"},
        ),
        ("packed-causal-frame", {"frames_per_video": [2, 3, 1], "num_patches_per_frame": 90}),
        (
            "sliding-window",
            {"num_frames": 9, "num_patches_per_frame": 50, "window_size": 2, "sink_frames": 2},
        ),
        ("chunk-causal", {"num_frames": 7, "num_patches_per_frame": 60, "frames_per_chunk": 3}),
        (
            "chunk-causal",
            {
                "num_frames": 9,
                "num_patches_per_frame": 70,
                "frames_per_chunk": 2,
                "window_size": 1,
                "sink_chunks": 1,
            },
        ),  # fmt: skip
        ("teacher-forcing", {"num_frames": 5, "num_patches_per_frame": 70, "frames_per_chunk": 2}),
        (
            "teacher-forcing",
            {
                "num_frames": 7,
                "num_patches_per_frame": 45,
                "frames_per_chunk": 3,
                "window_size": 1,
                "sink_chunks": 1,
            },
        ),  # fmt: skip
        ("token-causal", {"seq_len": 333}),
        ("full", {"seq_len": 200}),
    ],
)
def test_block_sizes_64_and_128_with_lengths_off_the_block_grid(name, params, block_size):
    spec = get_mask(name, **params)
    closed = spec.block_mask("cpu", block_size, builder="closed-form")
    generic = create_block_mask(
        spec.mask_mod, 1, 1, spec.q_len, spec.kv_len, device="cpu", BLOCK_SIZE=block_size
    )
    for attr in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
        assert torch.equal(getattr(closed, attr), getattr(generic, attr)), attr
    assert closed.seq_lengths == (spec.q_len, spec.kv_len)
    assert torch.equal(closed.to_dense(), generic.to_dense())


def test_closed_form_builder_does_no_n_by_n_work():
    # 262,144 tokens: an N x N bool mask would need 64 GiB, four times this machine's memory.
    spec = get_mask("causal-frame", num_frames=512, num_patches_per_frame=512)
    bm = spec.block_mask("cpu", 128, builder="closed-form")
    num_blocks = 262_144 // 128
    row_frame = torch.arange(num_blocks) // 4  # 512 patches = 4 blocks a frame
    assert torch.equal(bm.full_kv_num_blocks[0, 0].long(), 4 * (row_frame + 1))
    assert int(bm.kv_num_blocks.sum()) == 0  # frames fill whole blocks: nothing is partial
    assert bm.seq_lengths == (262_144, 262_144)


@given(mask_configs())
def test_every_query_sees_at_least_one_key(config):
    spec = get_mask(*config[:1], **config[1])
    assert spec.to_dense().any(dim=1).all()


@given(mask_configs())
def test_no_query_sees_a_later_frame(config):
    name, params = config
    if name in ("full", "fast-slow", "teacher-forcing"):
        return  # not causal by design (fast-slow's leak below, teacher forcing's own file)
    spec = get_mask(name, **params)
    dense = spec.to_dense()
    n = dense.shape[0]
    if name == "token-causal":
        time_of = torch.arange(n)
    elif name == "timestamp-causal":
        ts = torch.tensor(params["timestamps"])
        time_of = ts.repeat_interleave(params["num_patches_per_frame"])
    elif name == "chunk-causal":  # a chunk is one time step: its frames see each other
        time_of = torch.arange(n) // params["num_patches_per_frame"] // params["frames_per_chunk"]
    else:
        time_of = torch.arange(n) // params["num_patches_per_frame"]
    later = time_of[None, :] > time_of[:, None]  # key later than query
    assert not (dense & later).any()


def test_the_seed_design_table_for_three_frames_of_three_patches():
    table = [
        [1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1],
    ]
    mask = FrameLevelMaskGenerator().create_causal_frame_mask(3, 3)
    assert mask.dtype == torch.bool
    assert mask.int().tolist() == table


def test_fast_slow_lets_fast_frames_see_later_slow_frames_and_says_so():
    # Seed layout with 2 slow frames shown at t=0, 8 and 2 fast frames at t=6, 7: fast frame
    # t=6 sees the slow frame t=8, a frame from its future. The docstring must warn of it.
    spec = get_mask("fast-slow", num_fast_frames=2, num_slow_frames=2, num_patches_per_frame=1)
    assert spec.to_dense()[2, 1]
    doc = flexframe.masks.frame.fast_slow_mask.__doc__
    assert "leaks the future" in doc and "later in time" in doc and "timestamp-causal" in doc


@pytest.mark.parametrize(
    "method, args, name, params",
    [
        ("create_causal_frame_mask", (4, 3), "causal-frame",
         {"num_frames": 4, "num_patches_per_frame": 3}),
        ("create_sliding_window_frame_mask", (5, 2, 1), "sliding-window",
         {"num_frames": 5, "num_patches_per_frame": 2, "window_size": 1}),
        ("create_fast_slow_frame_mask", (2, 3, 2), "fast-slow",
         {"num_fast_frames": 2, "num_slow_frames": 3, "num_patches_per_frame": 2}),
    ],
)  # fmt: skip
def test_seed_generator_methods_give_the_written_definitions(method, args, name, params):
    mask = getattr(FrameLevelMaskGenerator(), method)(*args)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, reference_dense(name, params))


def test_frame_position_ids_repeat_each_frame_index():
    assert flexframe.create_frame_position_ids(3, 2).tolist() == [0, 0, 1, 1, 2, 2]
    assert FrameLevelMaskGenerator().create_frame_position_ids(2, 3).tolist() == [0, 0, 0, 1, 1, 1]


def test_list_masks_is_sorted_and_holds_the_built_ins():
    names = list_masks()
    assert names == sorted(names)
    expected = {
        "causal-frame",
        "chunk-causal",
        "sliding-window",
        "fast-slow",
        "teacher-forcing",
        "timestamp-causal",
        "token-causal",
        "full",
        "packed-causal-frame",
    }
    assert expected <= set(names)
    assert list_masks("*window*") == ["prompt-sliding-window", "sliding-window"]


@given(mask_configs(max_frames=4, max_patches=4), mask_configs(max_frames=4, max_patches=4))
def test_and_or_combine_like_logical_and_or(a, b):
    spec_a = get_mask(a[0], **a[1])
    spec_b = get_mask(b[0], **b[1])
    if spec_a.q_len != spec_b.q_len:
        with pytest.raises(ValueError, match="different shapes"):
            _ = spec_a & spec_b
        return
    dense_a, dense_b = reference_dense(*a), reference_dense(*b)
    both, either = spec_a & spec_b, spec_a | spec_b
    assert torch.equal(both.to_dense(), dense_a & dense_b)
    assert torch.equal(either.to_dense(), dense_a | dense_b)
    partial, full = block_mask_grids(both.block_mask("cpu", 2))
    want_partial, want_full = expected_block_grids(dense_a & dense_b, 2, 2)
    assert torch.equal(partial, want_partial) and torch.equal(full, want_full)


@given(mask_configs(), block_sizes)
@settings(max_examples=30)
def test_closed_form_q_side_equals_torchs_transpose(config, block_size):
    # The backward pass reads the q-side tensors; they must be what torch derives from the kv side.
    spec = get_mask(config[0], **config[1])
    closed = spec.block_mask("cpu", block_size, builder="closed-form")
    generic = spec.block_mask("cpu", block_size, builder="create_block_mask")
    for attr in ("q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices"):
        assert torch.equal(getattr(closed, attr), getattr(generic, attr)), attr


@given(mask_configs(max_frames=8, max_patches=9), block_sizes)
@settings(max_examples=60)
def test_the_closed_form_gives_torchs_tensors_for_the_written_definition(config, block_size):
    # Against create_block_mask on the brute-force dense mask (not the library's mask_mod),
    # both sides and the order of indices included.
    name, params = config
    spec = get_mask(name, **params)
    bs = block_size if isinstance(block_size, tuple) else (block_size, block_size)
    dense = reference_dense(name, params)
    want = create_block_mask(
        lambda b, h, q, kv: dense[q, kv], 1, 1, spec.q_len, spec.kv_len, device="cpu",
        BLOCK_SIZE=bs,
    )  # fmt: skip
    got = spec.block_mask("cpu", bs, builder="closed-form")
    for attr in BLOCK_MASK_TENSORS:
        assert torch.equal(getattr(got, attr), getattr(want, attr)), attr


@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=40),
    st.integers(1, 5),
    st.sampled_from(["full", "causal"]),
    block_sizes,
)
@settings(max_examples=40)
def test_timestamps_that_go_back_many_times_give_torchs_tensors(timestamps, p, within, block_size):
    # Block bounds that fall and rise again up to once a block, on both sides, against torch.
    params = {"timestamps": timestamps, "num_patches_per_frame": p, "within_frame": within}
    spec = get_mask("timestamp-causal", **params)
    bs = block_size if isinstance(block_size, tuple) else (block_size, block_size)
    want = create_block_mask(
        spec.mask_mod, 1, 1, spec.q_len, spec.kv_len, device="cpu", BLOCK_SIZE=bs
    )
    got = spec.block_mask("cpu", bs, builder="closed-form")
    for attr in BLOCK_MASK_TENSORS:
        assert torch.equal(getattr(got, attr), getattr(want, attr)), attr
