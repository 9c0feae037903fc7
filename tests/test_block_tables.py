"""The block tables that the CUDA block kernel reads, held to the brute-force definitions.

The kernel itself runs on CUDA only (``tests/test_cuda.py`` checks its tensors against torch's
``create_block_mask`` there); what it reads, :meth:`IntervalRelation.block_table`, is built on
the host and is checked here through :func:`grids_from_tables`, the tables' meaning in torch.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import expected_block_grids, mask_configs, reference_dense
from test_hf_prompt_masks import prompt_masks, reference

from flexframe import get_mask
from flexframe.masks.block_kernel import (
    block_kernel_available,
    block_mask_from_tables,
    grids_from_tables,
)
from flexframe.masks.closed_form import stack_block_tables

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


def test_the_block_kernel_is_refused_off_cuda_with_the_route_to_take():
    spec = get_mask("causal-frame", num_frames=3, num_patches_per_frame=4)
    rows, cols = spec.relation.block_table(4, 4)
    assert not block_kernel_available("cpu")
    with pytest.raises(ValueError, match=r"device='cpu'.*build_block_mask"):
        block_mask_from_tables(rows, cols, (12, 12), (4, 4), None, "cpu")
