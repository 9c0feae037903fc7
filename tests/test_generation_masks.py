"""The masks of autoregressive video generation: what each guarantees, against brute force.

chunk-causal, sliding-window with sink frames, and teacher forcing (``[clean | noisy]``); their
dense masks and BlockMasks against the written definitions are in ``test_masks.py`` (the shared
strategies draw them too). Here: the leak properties, the special cases the definitions promise,
and the errors.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import generation_params, reference_dense

from flexframe import get_mask


@st.composite
def generation_configs(draw, name: str, max_frames: int = 9):
    return generation_params(draw, max_frames, draw(st.integers(1, 6))) | {"_name": name}


def spec_and_params(config: dict):
    params = {k: v for k, v in config.items() if k != "_name"}
    return get_mask(config["_name"], **params), params


def token_chunks(params: dict, tokens: int) -> torch.Tensor:
    """The chunk of every token of one half, from the definition: chunk(f) = f // fpc."""
    frame = torch.arange(tokens) // params["num_patches_per_frame"]
    return frame // params["frames_per_chunk"]


@given(generation_configs("teacher-forcing"))
def test_no_noisy_token_sees_its_own_clean_chunk(config):
    spec, params = spec_and_params(config)
    half = spec.q_len // 2
    chunks = token_chunks(params, half)
    noisy_sees_clean = spec.to_dense()[half:, :half]
    assert not (noisy_sees_clean & (chunks[None, :] >= chunks[:, None])).any()


@given(generation_configs("teacher-forcing"))
def test_no_clean_token_sees_a_noisy_token(config):
    spec, _ = spec_and_params(config)
    half = spec.q_len // 2
    assert not spec.to_dense()[:half, half:].any()


@given(generation_configs("teacher-forcing"))
def test_a_noisy_token_sees_its_own_noisy_chunk_whole_and_no_other(config):
    spec, params = spec_and_params(config)
    half = spec.q_len // 2
    chunks = token_chunks(params, half)
    assert torch.equal(spec.to_dense()[half:, half:], chunks[:, None] == chunks[None, :])


@given(generation_configs("teacher-forcing"))
def test_the_clean_half_of_teacher_forcing_is_chunk_causal(config):
    spec, params = spec_and_params(config)
    half = spec.q_len // 2
    assert torch.equal(spec.to_dense()[:half, :half], reference_dense("chunk-causal", params))


@given(generation_configs("chunk-causal"))
def test_no_chunk_sees_a_later_chunk_and_every_chunk_sees_itself_whole(config):
    spec, params = spec_and_params(config)
    chunks = token_chunks(params, spec.q_len)
    dense = spec.to_dense()
    assert not (dense & (chunks[None, :] > chunks[:, None])).any()
    assert dense[chunks[:, None] == chunks[None, :]].all()


@given(st.integers(1, 9), st.integers(1, 6))
def test_chunk_causal_of_one_frame_chunks_without_a_window_is_causal_frame(frames, p):
    chunk = get_mask("chunk-causal", num_frames=frames, num_patches_per_frame=p, frames_per_chunk=1)
    frame = get_mask("causal-frame", num_frames=frames, num_patches_per_frame=p)
    assert torch.equal(chunk.to_dense(), frame.to_dense())
    for attr in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
        assert torch.equal(
            getattr(chunk.block_mask("cpu", 4), attr), getattr(frame.block_mask("cpu", 4), attr)
        )


@given(st.integers(1, 12), st.integers(1, 5), st.integers(0, 12), st.data())
def test_sink_frames_stay_visible_to_every_later_frame_and_nothing_else_changes(f, p, w, data):
    sinks = data.draw(st.integers(0, f), label="sink_frames")
    plain = get_mask("sliding-window", num_frames=f, num_patches_per_frame=p, window_size=w)
    with_sinks = get_mask(
        "sliding-window", num_frames=f, num_patches_per_frame=p, window_size=w, sink_frames=sinks
    )
    frame = torch.arange(f * p) // p
    added = with_sinks.to_dense() & ~plain.to_dense()
    assert not (plain.to_dense() & ~with_sinks.to_dense()).any()  # sinks only add
    # What they add is exactly the sink frames, to every query frame at or after them.
    want = (frame[None, :] < sinks) & (frame[None, :] <= frame[:, None]) & ~plain.to_dense()
    assert torch.equal(added, want)


def test_sink_frames_zero_is_the_plain_window():
    a = get_mask("sliding-window", num_frames=6, num_patches_per_frame=2, window_size=1)
    b = get_mask(
        "sliding-window", num_frames=6, num_patches_per_frame=2, window_size=1, sink_frames=0
    )
    assert a.params == b.params and a.cache_key == b.cache_key
    assert torch.equal(a.to_dense(), b.to_dense())


def block_classes_from_definition(tokens: int, half: int, p: int, fpc: int, teacher: bool, bs: int):
    """``(partial, full)`` block grids from the definitions, at the level of token classes.

    A token's class is (half, chunk) (one half for chunk-causal). Whether a query may see a key
    depends on their classes alone, so a block attends somewhere iff some pair of the classes in
    it is allowed, and is full iff every pair is and no padding lies in it: O(blocks x classes),
    without the N x N mask (17 GB here) or torch's builder (which needs it on the CPU).
    """
    token = torch.arange(tokens)
    noisy, chunk = token // half, (token % half) // p // fpc
    num_chunks = int(chunk.max()) + 1
    cls = noisy * num_chunks + chunk  # [N]
    c = torch.arange(2 * num_chunks)
    cn, cc = c // num_chunks, c % num_chunks  # class -> (noisy, chunk)
    if teacher:  # clean: chunk-causal among clean; noisy: own noisy chunk, earlier clean chunks
        clean_q = (cn[:, None] == 0) & (cn[None, :] == 0) & (cc[None, :] <= cc[:, None])
        noisy_q = (cn[:, None] == 1) & (
            ((cn[None, :] == 1) & (cc[None, :] == cc[:, None]))
            | ((cn[None, :] == 0) & (cc[None, :] < cc[:, None]))
        )
        allowed = clean_q | noisy_q
    else:
        allowed = cc[None, :] <= cc[:, None]
    n_blocks = -(-tokens // bs)
    present = torch.zeros(n_blocks, 2 * num_chunks)
    present[token // bs, cls] = 1.0  # [blocks, classes]: which classes each block holds
    some = present @ allowed.float() @ present.T > 0
    some_masked = present @ (~allowed).float() @ present.T > 0
    whole = torch.arange(n_blocks) * bs + bs <= tokens  # no padding in the block
    full = some & ~some_masked & whole[:, None] & whole[None, :]
    return some & ~full, full


def grids_of(block_mask) -> tuple[torch.Tensor, torch.Tensor]:
    n_q, n_kv = block_mask.kv_indices.shape[-2], block_mask.kv_indices.shape[-1]
    grids = []
    for count, index in ((block_mask.kv_num_blocks, block_mask.kv_indices),
                         (block_mask.full_kv_num_blocks, block_mask.full_kv_indices)):  # fmt: skip
        grid = torch.zeros(n_q, n_kv, dtype=torch.bool)
        for i in range(n_q):
            row = index[0, 0, i, : int(count[0, 0, i])]
            assert torch.equal(row, row.sort().values), "kv indices in ascending order"
            grid[i, row.long()] = True
        grids.append(grid)
    return grids[0], grids[1]


def test_the_causvid_setting_builds_in_closed_form_equal_to_the_definition():
    # 21 latent frames of 1,560 tokens (Wan 2.1 at 480x832), chunks of 3: 32,760 tokens, 65,520
    # for teacher forcing; partial blocks at every chunk edge (4,680 tokens is no multiple of 128)
    for name, teacher in (("chunk-causal", False), ("teacher-forcing", True)):
        spec = get_mask(name, num_frames=21, num_patches_per_frame=1560, frames_per_chunk=3)
        got = spec.block_mask("cpu", 128, builder="closed-form")
        half = 21 * 1560
        want = block_classes_from_definition(spec.q_len, half, 1560, 3, teacher, 128)
        partial, full = grids_of(got)
        assert torch.equal(partial, want[0]) and torch.equal(full, want[1]), name
        assert int(want[0].sum()) > 0 and int(want[1].sum()) > 0  # both kinds occur
        assert got.seq_lengths == (spec.q_len, spec.kv_len)


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("chunk-causal", {"frames_per_chunk": 0}, "frames_per_chunk must be >= 1, got 0"),
        ("chunk-causal", {"frames_per_chunk": 2.0}, r"frames_per_chunk must be an int, got 2.0"),
        ("chunk-causal", {"frames_per_chunk": 2, "window_size": -1},
         "window_size must be >= 0, got -1"),
        ("chunk-causal", {"frames_per_chunk": 2, "window_size": 1.5},
         "window_size must be an int, got 1.5"),
        ("chunk-causal", {"frames_per_chunk": 2, "window_size": 1, "sink_chunks": 5},
         r"sink_chunks must be <= the number of chunks, got sink_chunks=5 for 4 chunk\(s\)"),
        ("teacher-forcing", {"frames_per_chunk": 0}, "frames_per_chunk must be >= 1, got 0"),
        ("teacher-forcing", {"frames_per_chunk": 3, "sink_chunks": 4},
         r"sink_chunks must be <= the number of chunks, got sink_chunks=4 for 3 chunk\(s\)"),
        ("teacher-forcing", {"sink_chunks": -1}, "sink_chunks must be >= 0, got -1"),
        ("teacher-forcing", {"window_size": True}, r"window_size must be an int, got True"),
        ("sliding-window", {"window_size": 1, "sink_frames": 8},
         "sink_frames must be <= num_frames, got sink_frames=8 and num_frames=7"),
        ("sliding-window", {"window_size": 1, "sink_frames": -2}, "sink_frames must be >= 0"),
        ("sliding-window", {"window_size": -1}, "window_size must be >= 0, got -1"),
    ],
)  # fmt: skip
def test_bad_parameters_name_the_parameter_and_the_value(name, params, match):
    base = {"num_frames": 7, "num_patches_per_frame": 2}
    with pytest.raises((ValueError, TypeError), match=match):
        get_mask(name, **base, **params)
