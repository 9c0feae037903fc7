"""The block tables that the CUDA block kernel reads, held to the brute-force definitions.

The kernel itself runs on CUDA only (``tests/test_cuda.py`` checks its tensors against torch's
``create_block_mask`` there); what it reads, :meth:`IntervalRelation.block_table`, is built on
the host and is checked here through :func:`grids_from_tables`, the tables' meaning in torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import block_mask_grids, expected_block_grids, mask_configs, reference_dense
from test_hf_prompt_masks import prompt_masks, reference

from flexframe import get_mask
from flexframe.masks.block_kernel import (
    HostArrays,
    arrays_to_device,
    block_kernel_available,
    block_mask_from_device_tables,
    block_mask_from_tables,
    grids_from_tables,
)
from flexframe.masks.closed_form import (
    Interval,
    IntervalRelation,
    PiecewiseKey,
    at_most_block_tables,
    block_mask_from_grids,
    stack_block_tables,
)

block_sizes = st.tuples(st.integers(1, 9), st.integers(1, 9))


@given(mask_configs(), block_sizes)
def test_the_block_tables_classify_every_block_as_the_definition(config, block_size):
    name, params = config
    spec = get_mask(name, **params)
    assume(spec.relation is not None)
    rows, cols = spec.relation.block_table(*block_size)
    partial, full = grids_from_tables(torch.from_numpy(rows), torch.from_numpy(cols))
    want_partial, want_full = expected_block_grids(reference_dense(name, params), *block_size)
    assert torch.equal(partial, want_partial)
    assert torch.equal(full, want_full)


@given(prompt_masks(), block_sizes)
def test_the_stacked_prompt_tables_classify_every_block_of_every_prompt(case, block_size):
    # The rows of a batch have their own numbers of pieces; the padding pieces change nothing.
    family, ids, params, q_len = case
    spec = get_mask(family, frame_ids=ids, q_len=q_len, **params)
    rows, cols = stack_block_tables([r.block_table(*block_size) for r in spec.relations])
    assert rows.shape[0] == cols.shape[0] == ids.shape[0]
    partial, full = grids_from_tables(torch.from_numpy(rows), torch.from_numpy(cols))
    want = reference(ids, family, q_len, **params)
    for b in range(ids.shape[0]):
        want_partial, want_full = expected_block_grids(want[b], *block_size)
        assert torch.equal(partial[b], want_partial)
        assert torch.equal(full[b], want_full)


@st.composite
def step_keys(
    draw, length: int, cuts: list[int] | None = None, rising: bool = False
) -> tuple[PiecewiseKey, torch.Tensor]:
    """A slope-0 key on its own cuts, or on the ``cuts`` given (some repeated: empty segments;
    some at or past the length: segments no row is in), with its values per position written
    out; the values jump anywhere (bounds need no invariant). With ``rising``, some segments
    (drawn) have slope 1: ``offset + t`` on them."""
    if cuts is None:
        cuts = draw(st.lists(st.integers(0, length + 3), max_size=6))
    starts = torch.tensor(sorted([0, *cuts]), dtype=torch.int64)
    s = starts.numel()
    offsets = torch.tensor(draw(st.lists(st.integers(-3 - length, 12), min_size=s, max_size=s)),
                           dtype=torch.int64)  # fmt: skip
    segment = torch.searchsorted(starts, torch.arange(length), right=True) - 1
    if not rising:
        return PiecewiseKey(starts, offsets, 0, length), offsets[segment]
    slope = torch.tensor(draw(st.lists(st.integers(0, 1), min_size=s, max_size=s)))
    values = offsets[segment] + slope[segment] * torch.arange(length)
    return PiecewiseKey(starts, offsets, slope, length), values


@st.composite
def unions(draw):
    """A relation of two or three intervals on bounds of their own segments or of one shared
    segmentation (the bounds of frame and chunk masks share theirs), and its dense form written
    from the definition: ``visible(q, kv)`` iff ``lo_m(q) <= key(kv) <= hi_m(q)`` for an
    interval ``m``. Upper bounds may rise with the position on some segments (a prompt's text
    sees up to itself)."""
    q_len, kv_len = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    steps = draw(st.lists(st.integers(0, 1), min_size=kv_len - 1, max_size=kv_len - 1))
    key_values = torch.tensor([0, *steps], dtype=torch.int64).cumsum(0)  # rises by 0 or 1
    kv_key = PiecewiseKey(torch.arange(kv_len), key_values, 0, kv_len)
    shared = None
    if draw(st.booleans()):  # strictly ascending cuts inside the rows, or any
        cuts = st.lists(st.integers(1, q_len + 3), max_size=6, unique=True)
        shared = draw(cuts.filter(lambda c: 0 not in c) | st.lists(st.integers(0, q_len + 3)))
    intervals, dense = [], torch.zeros(q_len, kv_len, dtype=torch.bool)
    for _ in range(draw(st.integers(2, 3))):
        hi, hi_values = draw(step_keys(q_len, shared, rising=draw(st.booleans())))
        lo, lo_values = draw(step_keys(q_len, shared)) if draw(st.booleans()) else (None, None)
        intervals.append(Interval(hi=hi, lo=lo))
        inside = key_values[None, :] <= hi_values[:, None]
        if lo is not None:
            inside &= lo_values[:, None] <= key_values[None, :]
        dense |= inside
    first, *rest = intervals
    relation = IntervalRelation(kv_key, first.hi, first.lo, union=tuple(rest))
    return relation, dense


@given(unions(), block_sizes)
def test_a_union_on_any_segments_classifies_every_block_as_the_definition(case, block_size):
    # Both routes: the tables the kernel reads, and the torch route's BlockMask.
    relation, dense = case
    want_partial, want_full = expected_block_grids(dense, *block_size)
    rows, cols = relation.block_table(*block_size)
    partial, full = grids_from_tables(torch.from_numpy(rows), torch.from_numpy(cols))
    assert torch.equal(partial, want_partial) and torch.equal(full, want_full)
    grids = relation.block_grids(*block_size)
    assert torch.equal(grids[0], want_partial) and torch.equal(grids[1], want_full)
    bm = block_mask_from_grids(*grids, dense.shape, block_size, None)
    got_partial, got_full = block_mask_grids(bm)
    assert torch.equal(got_partial, want_partial) and torch.equal(got_full, want_full)


def test_a_union_refuses_a_lower_bound_that_rises():
    # A rising lower bound would shrink its interval along a piece: the first and last rows would
    # no longer decide a block.
    key = PiecewiseKey.position(4)
    with pytest.raises(ValueError, match="lower bounds of a union"):
        IntervalRelation(key, key, key, union=(Interval(hi=PiecewiseKey.constant(4, 0)),))


@pytest.mark.parametrize(
    ("slope", "match"),
    [(2, "slope must be 0 or 1"), (True, "slope must be 0 or 1"),
     (torch.tensor([0, 1]), r"shape \(1,\)")],
)  # fmt: skip
def test_a_key_refuses_a_slope_other_than_0_or_1(slope, match):
    with pytest.raises(ValueError, match=match):
        PiecewiseKey(torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64), slope, 3)


def test_a_key_refuses_a_slope_tensor_holding_other_values_when_it_is_made():
    with pytest.raises(ValueError, match=r"slope must hold 0s and 1s, got \[2\]"):
        PiecewiseKey(torch.tensor([0, 2]), torch.tensor([0, 0]), torch.tensor([1, 2]), 4)


def test_a_key_made_from_numpy_keeps_its_values_when_the_arrays_change_later():
    starts, offsets, slope = np.array([0, 2]), np.array([5, 0]), np.array([0, 1])
    key = PiecewiseKey.from_numpy(starts, offsets, slope, length=4)
    starts[1], offsets[0], slope[1] = 1, 9, 0
    assert key.evaluate(torch.arange(4)).tolist() == [5, 5, 2, 3]
    assert PiecewiseKey.from_numpy(starts, offsets, np.int64(1), 4).rises


def test_a_key_with_a_slope_per_segment_evaluates_and_bounds_its_blocks_as_written():
    # 0 1 2 | 7 7 7 | 3 4: rising, constant, rising (not monotone: its blocks' extremes by pieces).
    starts, offsets = torch.tensor([0, 3, 6]), torch.tensor([0, 7, -3])
    key = PiecewiseKey(starts, offsets, torch.tensor([1, 0, 1]), 8)
    assert key.evaluate(torch.arange(8)).tolist() == [0, 1, 2, 7, 7, 7, 3, 4]
    assert [t.tolist() for t in key.block_min_max(4)] == [[0, 3], [7, 7]]
    assert not key.monotone


def test_the_block_kernel_is_refused_off_cuda_with_the_route_to_take():
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=4)
    rows, cols = spec.relation.block_table(4, 4)
    assert not block_kernel_available("cpu")
    with pytest.raises(ValueError, match=r"device='cpu'.*build_block_mask"):
        block_mask_from_tables(rows, cols, (12, 12), (4, 4), None, "cpu")


def test_the_device_tables_are_refused_off_cuda_and_in_the_wrong_shape():
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=4)
    rows, cols = (torch.from_numpy(t)[None] for t in spec.relation.block_table(4, 4))
    with pytest.raises(ValueError, match=r"device='cpu'.*build_block_mask"):
        block_mask_from_device_tables(rows, cols, (12, 12), (4, 4), None)
    with pytest.raises(ValueError, match=r"rows must be \[B, Q_BLOCKS, P, K, 4\].*\(3, 1, 1, 4\)"):
        block_mask_from_device_tables(rows[0], cols, (12, 12), (4, 4), None)
    with pytest.raises(ValueError, match="cols must be a contiguous int64 tensor, got torch.int32"):
        block_mask_from_device_tables(rows, cols.int(), (12, 12), (4, 4), None)


layouts = st.lists(
    st.tuples(
        st.lists(st.integers(0, 5), max_size=3).map(tuple),
        st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.float32]),
    ),
    min_size=1,
    max_size=6,
)


@given(layouts, st.integers(0, 2**32 - 1))
def test_host_arrays_send_every_array_as_written_in_its_shape_and_dtype(layout, seed):
    # One buffer holds them all: an array that overlapped another would be overwritten by it.
    stage = HostArrays(layout, "cpu")
    rng = np.random.default_rng(seed)
    written = []
    for array, (shape, _) in zip(stage.arrays, layout, strict=True):
        values = rng.integers(0, 120, size=shape).astype(array.dtype)
        array[...] = values
        written.append(values)
    sent = stage.send()
    assert len(sent) == len(layout)
    with pytest.raises(RuntimeError, match="sends once"):
        stage.send()
    for array in stage.arrays:  # read-only once sent: a write would race the queued copy
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0
    for tensor, values, (shape, dtype) in zip(sent, written, layout, strict=True):
        assert tensor.dtype == dtype and tuple(tensor.shape) == shape and tensor.is_contiguous()
        assert tensor.data_ptr() % 16 == 0  # each array starts 16-byte aligned
        assert np.array_equal(tensor.numpy(), values)


@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4), st.booleans(), st.booleans()),
                min_size=1, max_size=4), st.integers(0, 2**32 - 1))  # fmt: skip
def test_arrays_to_device_keeps_each_arrays_values_shape_and_dtype(specs, seed):
    rng = np.random.default_rng(seed)
    arrays = []
    for rows, cols, wide, transposed in specs:
        a = rng.integers(-(2**31), 2**31, size=(rows, cols)).astype(np.int64 if wide else np.int32)
        arrays.append(a.T if transposed else a)  # a strided view, as the builder passes
    for tensor, a in zip(arrays_to_device(arrays, "cpu"), arrays, strict=True):
        assert tensor.dtype == torch.from_numpy(a).dtype
        assert np.array_equal(tensor.numpy(), a)


@given(prompt_masks(), block_sizes)
def test_the_kernel_route_sends_a_prompts_tables_and_mask_mod_as_its_definition(case, block_size):
    # On CUDA a prompt's block tables and its mask_mod's tensors go in one copy
    # (block_kernel.HostArrays) to the kernel. Here the same route runs on the CPU with the
    # launch replaced by the tables' meaning in torch (grids_from_tables): the BlockMask from
    # the tables as they arrived, and the mask_mod built from the tensors sent with them, must
    # both be the prompt's definition.
    import flexframe.masks.prompt as prompt

    def from_sent_tables(rows, cols, seq_lengths, bs, mod):
        partial, full = grids_from_tables(rows, cols)
        return block_mask_from_grids(partial, full, seq_lengths, bs, mod)

    family, ids, params, q_len = case
    spec = get_mask(family, frame_ids=ids, q_len=q_len, **params)
    bs = (block_size, block_size) if isinstance(block_size, int) else block_size
    assume(max(r.block_table(*bs)[0].shape[1] for r in spec.relations) <= 8)  # the kernel's
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prompt, "block_kernel_available", lambda device, num_blocks: True)
        patch.setattr(prompt, "block_mask_from_device_tables", from_sent_tables)
        got = spec.block_mask("cpu", block_size=bs)
    want = reference(ids, family, q_len, **params)
    b, q, kv = want.shape
    grid = torch.arange(b)[:, None, None], 0, torch.arange(q)[None, :, None], torch.arange(kv)
    assert torch.equal(got.mask_mod(*grid), want)  # the mask_mod read the tensors sent
    assert torch.equal(spec.mask_mod_for("cpu")(*grid), want)  # and is the spec's own
    for r in range(b):
        want_partial, want_full = expected_block_grids(want[r], *bs)
        for num, idx, want_grid in (
            (got.kv_num_blocks, got.kv_indices, want_partial),
            (got.full_kv_num_blocks, got.full_kv_indices, want_full),
        ):
            grid_r = torch.zeros_like(want_grid)
            for i in range(grid_r.shape[0]):
                grid_r[i, idx[r, 0, i, : int(num[r, 0, i])].long()] = True
            assert torch.equal(grid_r, want_grid)


@given(
    st.integers(1, 3),
    st.integers(1, 23),
    st.integers(1, 23),
    block_sizes,
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_the_at_most_tables_of_per_token_keys_classify_every_block(b, q, n, block_size, seed, ints):
    # Keys and bounds jump anywhere (kv <= hi needs no order of either), int32 as the prompt
    # masks hold them or int64.
    rng = np.random.default_rng(seed)
    kv = rng.integers(-6, 30, size=(b, n)).astype(np.int32 if ints else np.int64)
    hi = rng.integers(-6, 30, size=(b, q)).astype(np.int32 if ints else np.int64)
    rows, cols = at_most_block_tables(kv, hi, *block_size)
    partial, full = grids_from_tables(torch.from_numpy(rows), torch.from_numpy(cols))
    for r in range(b):
        dense = torch.from_numpy(kv[r][None, :] <= hi[r][:, None])  # [q, n]
        want_partial, want_full = expected_block_grids(dense, *block_size)
        assert torch.equal(partial[r], want_partial) and torch.equal(full[r], want_full)
