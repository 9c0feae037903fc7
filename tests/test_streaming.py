"""Streaming inference with the frame KV cache: what the cache attends to is what training saw.

The references are written here from the issue's definitions (a frame rule per mask, a dense
mask from the cache's slot table, torch's Triton kernel's bound-check rule) and share no code
with ``flexframe.nn.streaming``. The equivalence runs use the sdpa backend (fast on the CPU)
under hypothesis; the flex backend runs four fixed shapes, shared by its tests (each new shape
compiles once, ~10 s on this CPU), at head dim 32 (the CPU flex kernel is refused below it).
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import block_mask_grids, expand_block_mask
from torch._dynamo.utils import counters
from torch.nn.attention.flex_attention import create_mask

from flexframe import FlexFrameDecoder, FramePositions, get_mask
from flexframe.masks import MaskSpec
from flexframe.nn import Attention, DecoderConfig, FrameKVCache, KernelPolicy, streaming_rule

DIM, HEADS = 16, 4


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest.py)


# -- references, from the words ------------------------------------------------------------
def sees(name: str, params: dict, fq: int, fk: int) -> bool:
    """Whether a query of frame ``fq`` may see frame ``fk`` under the training mask."""
    if name == "causal-frame":
        return fk <= fq
    if name == "sliding-window":
        # f' <= f and (f - f' <= window_size or f' < sink_frames)
        return fk <= fq and (fq - fk <= params["window_size"] or fk < params.get("sink_frames", 0))
    # chunk-causal: c' <= c and (no window, c - c' <= window_size, or c' < sink_chunks)
    cq, ck = fq // params["frames_per_chunk"], fk // params["frames_per_chunk"]
    w = params.get("window_size")
    return ck <= cq and (w is None or cq - ck <= w or ck < params.get("sink_chunks", 0))


def step_dense(name: str, params: dict, slot_frames: list[int], f0: int, c: int, p: int):
    """``[c * P, slots * P]``: query token i (frame f0 + i // P) sees key token j iff slot j // P
    holds a frame (>= 0) the mask lets the query's frame see (decided per frame, then spread
    over each frame's P tokens)."""
    frames = torch.tensor(
        [[fk >= 0 and sees(name, params, f0 + r, fk) for fk in slot_frames] for r in range(c)],
        dtype=torch.bool,
    )
    return frames.repeat_interleave(p, 0).repeat_interleave(p, 1)


def expected_grids(dense: torch.Tensor, q_block: int, kv_block: int):
    """(partial, full) block grids of a dense mask: a block is partial iff some but not all of
    its pairs are visible; a block holding padding (past the lengths) is never full, as in
    torch's create_block_mask, except where both block sizes divide 128: then it is full when
    none of its real pairs is hidden (torch's Triton kernel then checks the key bound in every
    block, or no block holds padding; the CPU kernel bounds every block)."""
    nq, nk = -(-dense.shape[0] // q_block), -(-dense.shape[1] // kv_block)
    seen = torch.zeros(nq * q_block, nk * kv_block, dtype=torch.bool)
    hidden = torch.zeros_like(seen)
    seen[: dense.shape[0], : dense.shape[1]] = dense
    hidden[: dense.shape[0], : dense.shape[1]] = ~dense
    if 128 % q_block or 128 % kv_block:  # padding counts as hidden
        hidden[dense.shape[0] :] = True
        hidden[:, dense.shape[1] :] = True
    any_seen = seen.view(nq, q_block, nk, kv_block).any(3).any(1)
    full = ~hidden.view(nq, q_block, nk, kv_block).any(3).any(1)
    return any_seen & ~full, full


def triton_attended(block_mask) -> torch.Tensor:
    """``[q_len, KV_BLOCKS * kv_block]`` bool: the keys torch's Triton flex kernel lets into each
    query's softmax, positions past ``kv_len`` included, by its rule (``IS_DIVISIBLE`` in
    torch/_inductor/kernel/flex/flex_attention.py): when both lengths are multiples of 128 it
    checks no bound, so a full block admits every position it covers and a partial block those
    its mask_mod allows; otherwise it masks the keys past ``kv_len`` in every block."""
    q_len, kv_len = block_mask.seq_lengths
    q_bs, kv_bs = block_mask.BLOCK_SIZE
    partial, full = block_mask_grids(block_mask)
    q = torch.arange(q_len)[:, None]
    k = torch.arange(partial.shape[1] * kv_bs)[None, :]
    mod = torch.as_tensor(block_mask.mask_mod(0, 0, q, k)).expand(q_len, k.shape[1])

    def expand(grid):
        return grid.repeat_interleave(q_bs, 0).repeat_interleave(kv_bs, 1)[:q_len]

    attended = expand(full) | (expand(partial) & mod)
    if q_len % 128 or kv_len % 128:
        attended[:, kv_len:] = False
    return attended


def decoder(
    backend: str = "sdpa", depth: int = 2, kv_heads: int = 2, seed: int = 0, dim: int = DIM, **kw
):
    torch.manual_seed(seed)
    return FlexFrameDecoder(
        dim=dim, depth=depth, num_heads=HEADS, num_kv_heads=kv_heads, attention_backend=backend,
        **kw,
    ).eval()  # fmt: skip


@st.composite
def stream_configs(draw, max_frames: int = 18):
    """A streamable mask over ``F`` frames and the step size of its run."""
    name = draw(st.sampled_from(["causal-frame", "sliding-window", "chunk-causal"]))
    f = draw(st.integers(1, max_frames))
    p = draw(st.integers(1, 5))
    params: dict = {"num_frames": f, "num_patches_per_frame": p}
    if name == "causal-frame":
        step = draw(st.integers(1, 3))
    elif name == "sliding-window":
        params["window_size"] = draw(st.integers(0, 3))
        sinks = draw(st.integers(0, min(2, f)))
        if sinks:
            params["sink_frames"] = sinks
        step = draw(st.integers(1, 3))
    else:
        fpc = draw(st.integers(1, 3))
        params["frames_per_chunk"] = fpc
        if draw(st.booleans()):
            params["window_size"] = draw(st.integers(0, 2))
        sinks = draw(st.integers(0, min(2, -(-f // fpc))))
        if sinks:
            params["sink_chunks"] = sinks
        step = fpc * draw(st.integers(1, 2))
    return name, params, step


def stream(
    dec, spec: MaskSpec, x: torch.Tensor, step: int, sizes: list[int] | None = None, **cache_kw
) -> torch.Tensor:
    """Run ``x`` ``[B, F * P, dim]`` (F may pass the mask's frames) through a cache built for
    ``spec``, ``step`` frames at a time (or steps of ``sizes``); the outputs concatenated."""
    p = spec.num_patches_per_frame
    frames = x.shape[1] // p
    cache = FrameKVCache.for_mask(spec, dec, x.shape[0], chunk_frames=step, **cache_kw)
    outs, f = [], 0
    with torch.no_grad():
        for n in sizes or [min(step, frames - f) for f in range(0, frames, step)]:
            outs.append(dec(x[:, f * p : (f + n) * p], cache=cache))
            f += n
    assert f == frames
    return torch.cat(outs, dim=1)


# -- streaming equals the full forward -------------------------------------------------------------
@given(
    config=stream_configs(),
    depth=st.integers(1, 3),
    kv_heads=st.sampled_from([1, 2, 4]),
    batch=st.integers(1, 2),
    extra_frames=st.one_of(st.none(), st.integers(0, 5)),
)
def test_a_chunk_by_chunk_run_equals_the_full_forward_under_the_same_mask(
    config, depth, kv_heads, batch, extra_frames
):
    name, params, step = config
    spec = get_mask(name, **params)
    dec = decoder(depth=depth, kv_heads=kv_heads)
    x = torch.randn(batch, spec.q_len, DIM)
    with torch.no_grad():
        full = dec(x, spec)
    # max_frames at or past the mask's frames: a linear layout of its own size, or a ring that
    # stops appending there; the outputs are the same.
    limit = None if extra_frames is None else params["num_frames"] + extra_frames
    out = stream(dec, spec, x, step, max_frames=limit)
    torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)


@given(config=stream_configs(), data=st.data())
@settings(max_examples=40)
def test_steps_of_mixed_sizes_in_one_run_equal_the_full_forward(config, data):
    name, params, step = config
    fpc = params.get("frames_per_chunk", 1)
    frames, sizes = params["num_frames"], []
    while sum(sizes) < frames:  # whole chunks, up to chunk_frames; the last may be shorter
        c = data.draw(st.integers(1, step // fpc), label="chunks") * fpc
        sizes.append(min(c, frames - sum(sizes)))
    spec = get_mask(name, **params)
    dec = decoder()
    x = torch.randn(1, spec.q_len, DIM)
    with torch.no_grad():
        full = dec(x, spec)
    torch.testing.assert_close(stream(dec, spec, x, step, sizes), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, params, step",
    [
        ("sliding-window", {"window_size": 1, "sink_frames": 1}, 1),
        ("sliding-window", {"window_size": 2}, 3),
        ("chunk-causal", {"frames_per_chunk": 2, "window_size": 1, "sink_chunks": 1}, 4),
    ],
)
def test_a_window_streams_past_the_masks_frames_as_the_longer_mask_says(name, params, step):
    short = get_mask(name, num_frames=10, num_patches_per_frame=2, **params)
    long = get_mask(name, num_frames=30, num_patches_per_frame=2, **params)
    dec = decoder()
    x = torch.randn(1, long.q_len, DIM)
    cache = FrameKVCache.for_mask(short, dec, chunk_frames=step)
    assert cache.is_ring and cache.max_frames is None and cache.capacity_frames < 10
    with torch.no_grad():
        full = dec(x, long)
    torch.testing.assert_close(stream(dec, short, x, step), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, params, step",
    [
        ("sliding-window", {"window_size": 1, "sink_frames": 1}, 1),  # ring of 2 after 1 sink
        ("sliding-window", {"window_size": 2}, 3),  # ring of 5, chunks of 3 wrap around it
        ("chunk-causal", {"frames_per_chunk": 2, "window_size": 1, "sink_chunks": 1}, 2),
    ],
)
def test_a_long_run_wraps_the_ring_many_times_and_still_equals_the_full_forward(name, params, step):
    spec = get_mask(name, num_frames=40, num_patches_per_frame=3, **params)
    dec = decoder(depth=2)
    x = torch.randn(1, spec.q_len, DIM)
    cache = FrameKVCache.for_mask(spec, dec, chunk_frames=step)
    ring = cache.capacity_frames - streaming_rule(spec).sink_frames
    assert cache.is_ring and 40 > 5 * ring  # memory: a few frames, whatever the length
    with torch.no_grad():
        full = dec(x, spec)
    torch.testing.assert_close(stream(dec, spec, x, step), full, rtol=1e-5, atol=1e-5)


def test_after_reset_the_cache_streams_another_video_as_if_new():
    spec = get_mask("sliding-window", num_frames=7, num_patches_per_frame=2, window_size=1)
    dec = decoder()
    first, second = torch.randn(2, 1, 14, DIM)
    cache = FrameKVCache.for_mask(spec, dec)
    with torch.no_grad():
        for f in range(7):
            dec(first[:, 2 * f : 2 * f + 2], cache=cache)
        cache.reset()
        assert cache.frames == 0 and set(cache.slot_frames.tolist()) == {-1}
        steps = [dec(second[:, 2 * f : 2 * f + 2], cache=cache) for f in range(7)]
        full = dec(second, spec)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_a_lone_attention_streams_like_its_full_forward():
    spec = get_mask("sliding-window", num_frames=9, num_patches_per_frame=4, window_size=2)
    torch.manual_seed(1)
    attn = Attention(DecoderConfig(dim=DIM, depth=1, num_heads=HEADS, num_kv_heads=2))
    attn = attn.eval()
    x = torch.randn(2, spec.q_len, DIM)
    pos = FramePositions.from_mask(spec)
    cache = FrameKVCache.for_mask(spec, attn, batch_size=2)
    with torch.no_grad():
        full = attn(x, x, spec, pos, pos)
        steps = [attn(x[:, 4 * f : 4 * f + 4], cache=cache) for f in range(9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_a_cross_attention_decoder_streams_with_its_memory():
    spec = get_mask("causal-frame", num_frames=6, num_patches_per_frame=2)
    dec = decoder(cross_attention=True)
    x, memory = torch.randn(1, 12, DIM), torch.randn(1, 5, DIM)
    cache = FrameKVCache.for_mask(spec, dec)
    with torch.no_grad():
        full = dec(x, spec, memory, get_mask("full", seq_len=12, kv_len=5))
        chunk_mask = get_mask("full", seq_len=4, kv_len=5)
        steps = [
            dec(x[:, 4 * k : 4 * k + 4], None, memory, chunk_mask, cache=cache) for k in range(3)
        ]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_cached_keys_are_rotated_at_their_absolute_frame_time():
    p, frames = 2, 7
    spec = get_mask("sliding-window", num_frames=frames, num_patches_per_frame=p, window_size=1)
    dec = decoder(depth=1)
    x = torch.randn(1, frames * p, DIM)
    cache = FrameKVCache.for_mask(spec, dec)
    with torch.no_grad():
        for f in range(frames):
            dec(x[:, f * p : (f + 1) * p], cache=cache)
        # What layer 0 keeps of frame f is its keys rotated at time f, wherever the ring put it.
        layer = dec.layers[0]
        keys, _ = layer.self_attn.project_kv(
            layer.norm_self(x), FramePositions.for_frames(frames, p)
        )
    slots = cache.slot_frames.tolist()
    assert sorted(slots) == [frames - 2, frames - 1]
    for slot, f in enumerate(slots):
        cached = cache.keys(0)[:, :, slot * p : (slot + 1) * p]
        torch.testing.assert_close(cached, keys[:, :, f * p : (f + 1) * p])


# -- denoising passes and teacher forcing ----------------------------------------------------------
@given(
    config=stream_configs(max_frames=12),
    passes=st.lists(st.integers(0, 3), min_size=12, max_size=12),
)
@settings(max_examples=30)
def test_reading_steps_leave_the_cache_as_appending_alone_would(config, passes):
    name, params, step = config
    spec = get_mask(name, **params)
    p = spec.num_patches_per_frame
    dec = decoder(depth=2)
    frames = spec.q_len // p
    x = torch.randn(1, spec.q_len, DIM)
    expected = stream(dec, spec, x, step)
    cache = FrameKVCache.for_mask(spec, dec, chunk_frames=step)
    outs = []
    with torch.no_grad():
        for k, f in enumerate(range(0, frames, step)):
            chunk = x[:, f * p : (f + min(step, frames - f)) * p]
            for _ in range(passes[k]):  # denoising passes at other inputs, nothing written
                dec(torch.randn_like(chunk), cache=cache, append=False)
                assert cache.frames == f
            read = dec(chunk, cache=cache, append=False)
            outs.append(dec(chunk, cache=cache))
            torch.testing.assert_close(read, outs[-1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat(outs, 1), expected, rtol=1e-5, atol=1e-5)


@given(
    f=st.integers(1, 9),
    p=st.integers(1, 4),
    fpc=st.integers(1, 3),
    window=st.one_of(st.none(), st.integers(0, 2)),
    sinks=st.integers(0, 2),
)
@settings(max_examples=40)
def test_teacher_forcing_noisy_rows_equal_a_reading_step_against_the_cached_clean_chunks(
    f, p, fpc, window, sinks
):
    num_chunks = -(-f // fpc)
    sinks = min(sinks, num_chunks)
    params = {"num_frames": f, "num_patches_per_frame": p, "frames_per_chunk": fpc}
    if window is not None:
        params["window_size"] = window
    if sinks:
        params["sink_chunks"] = sinks
    spec = get_mask("teacher-forcing", **params)
    dec = decoder(depth=2)
    clean, noisy = torch.randn(2, 1, f * p, DIM)
    with torch.no_grad():
        full = dec(torch.cat([clean, noisy], 1), spec)
    cache = FrameKVCache.for_mask(spec, dec)
    noisy_out, clean_out = [], []
    with torch.no_grad():
        for start in range(0, f, fpc):
            rows = slice(start * p, min(start + fpc, f) * p)
            noisy_out.append(dec(noisy[:, rows], cache=cache, append=False))
            clean_out.append(dec(clean[:, rows], cache=cache))
    torch.testing.assert_close(torch.cat(noisy_out, 1), full[:, f * p :], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat(clean_out, 1), full[:, : f * p], rtol=1e-5, atol=1e-5)


# -- the cache's layout and the step's mask, against the slot table --------------------------------
@st.composite
def step_plans(draw):
    name, params, step = draw(stream_configs(max_frames=14))
    frames = params["num_frames"]
    fpc = params.get("frames_per_chunk", 1)
    plan, f = [], 0
    while f < frames:  # each chunk: a few reading steps of some size, then an appending one
        for _ in range(draw(st.integers(0, 2))):
            plan.append((min(frames - f, draw(st.integers(1, step // fpc)) * fpc), False))
        c = min(frames - f, draw(st.integers(1, step // fpc)) * fpc)
        plan.append((c, True))
        f += c
    block = (draw(st.sampled_from([1, 2, 3, 4, 8])), draw(st.sampled_from([1, 2, 3, 5, 8])))
    return name, params, step, plan, block


@given(step_plans())
@settings(max_examples=40)
def test_the_step_block_mask_is_exact_against_the_dense_mask_from_the_slot_table(plan_config):
    name, params, step, plan, block = plan_config
    spec = get_mask(name, **params)
    p = spec.num_patches_per_frame
    # A flex decoder: its cache steps attend over every slot (no kernel runs in this test).
    cache = FrameKVCache.for_mask(spec, decoder("flex"), chunk_frames=step, block_size=block)
    for c, append in plan:
        f0 = cache.frames
        with cache.begin(c, append=append) as st_:
            slots = cache.slot_frames.tolist()
            ref = step_dense(name, params, slots, f0, c, p)
            block_mask = st_.mask.block_mask()
            assert (st_.mask.q_len, st_.mask.kv_len) == tuple(ref.shape)
            partial, full = block_mask_grids(block_mask)
            expected = expected_grids(ref, *block)
            assert torch.equal(partial, expected[0]) and torch.equal(full, expected[1])
            # The mask_mod reads the cache's table: inside partial blocks it is the reference.
            mod_dense = create_mask(block_mask.mask_mod, 1, 1, *ref.shape, device="cpu")[0, 0]
            assert torch.equal(mod_dense, ref)
            assert torch.equal(expand_block_mask(block_mask, mod_dense), ref)
            assert torch.equal(st_.mask.dense(), ref)
            attended = triton_attended(block_mask)
            assert torch.equal(attended[:, : ref.shape[1]], ref)
            assert not attended[:, ref.shape[1] :].any()
        assert cache.frames == f0 + (c if append else 0)


@pytest.mark.parametrize("block", [128, 64, (128, 64), 256, (128, 256), (256, 128), 96, 384])
@pytest.mark.parametrize(
    "name, params, chunk_frames, p",
    [
        # the reviewer's case: 128-token frames, a 3-frame cache of 384 keys, 1- and 2-frame steps
        ("sliding-window", {"window_size": 0, "sink_frames": 1}, 2, 128),
        ("chunk-causal", {"frames_per_chunk": 2, "window_size": 1, "sink_chunks": 1}, 2, 64),
        ("sliding-window", {"window_size": 1}, 2, 192),  # 576 keys: the kernel checks bounds
    ],
)
def test_no_key_past_the_cache_enters_the_triton_kernels_softmax(
    name, params, chunk_frames, p, block
):
    # Lengths that are multiples of 128: torch's Triton kernel then checks no bound, so a full
    # block holding padding would let the keys past the buffer into the softmax.
    spec = get_mask(name, num_frames=40, num_patches_per_frame=p, **params)
    cache = FrameKVCache.for_mask(
        spec, decoder("flex"), chunk_frames=chunk_frames, block_size=block
    )
    fpc = params.get("frames_per_chunk", 1)
    for c in [fpc, chunk_frames] * 4:
        for append in (False, True):
            f0 = cache.frames
            with cache.begin(c, append=append) as step:
                ref = step_dense(name, params, cache.slot_frames.tolist(), f0, c, p)
                attended = triton_attended(step.mask.block_mask())
            assert torch.equal(attended[:, : ref.shape[1]], ref)
            assert not attended[:, ref.shape[1] :].any(), (c, append, f0)


@given(step_plans())
@settings(max_examples=60)
def test_the_cache_holds_every_frame_a_later_query_may_see(plan_config):
    name, params, step, plan, _ = plan_config
    spec = get_mask(name, **params)
    cache = FrameKVCache.for_mask(spec, decoder(), chunk_frames=step)
    capacity = cache.capacity_frames
    for c, append in plan:
        with cache.begin(c, append=append):
            slots = [f for f in cache.slot_frames.tolist() if f >= 0]
            assert len(slots) == len(set(slots))
            for fq in range(cache.frames, cache.frames + c):
                needed = {fk for fk in range(fq + 1) if sees(name, params, fq, fk)}
                assert needed <= set(slots), (fq, needed - set(slots))
    assert cache.capacity_frames == capacity


def test_the_ring_holds_the_sinks_plus_the_window_plus_one_chunk():
    dec = decoder()
    sliding = get_mask(
        "sliding-window", num_frames=50, num_patches_per_frame=2, window_size=4, sink_frames=2
    )
    assert FrameKVCache.for_mask(sliding, dec, chunk_frames=3).capacity_frames == 2 + 4 + 3
    # chunk-causal's window counts chunks: 2 chunks of 3 frames back, and 1 sink chunk of 3.
    chunks = get_mask(
        "chunk-causal",
        num_frames=50,
        num_patches_per_frame=2,
        frames_per_chunk=3,
        window_size=2,
        sink_chunks=1,
    )
    cache = FrameKVCache.for_mask(chunks, dec)
    assert (cache.capacity_frames, cache.is_ring, cache.max_frames) == (3 + 2 * 3 + 3, True, None)
    causal = get_mask("causal-frame", num_frames=8, num_patches_per_frame=2)
    assert FrameKVCache.for_mask(causal, dec).capacity_frames == 8  # the mask's frames
    linear = FrameKVCache.for_mask(causal, dec, max_frames=20)
    assert (linear.capacity_frames, linear.is_ring) == (20, False)
    assert linear.keys(1).shape == (1, 2, 20 * 2, DIM // HEADS)  # [B, H_kv, capacity, head_dim]


def test_a_window_longer_than_the_mask_holds_the_masks_frames_unless_asked_for_more():
    dec = decoder()
    spec = get_mask("sliding-window", num_frames=21, num_patches_per_frame=2, window_size=1000)
    cache = FrameKVCache.for_mask(spec, dec)
    assert (cache.capacity_frames, cache.is_ring, cache.max_frames) == (21, False, 21)
    x = torch.randn(1, spec.q_len, DIM)
    with torch.no_grad():
        full = dec(x, spec)
        torch.testing.assert_close(stream(dec, spec, x, 1), full, rtol=1e-5, atol=1e-5)
        for _ in range(21):
            dec(torch.randn(1, 2, DIM), cache=cache)
        with pytest.raises(ValueError, match=r"frames 21..21 would go past max_frames=21"):
            dec(torch.randn(1, 2, DIM), cache=cache)
    # Asked for: a ring of the window plus one chunk (1000 + 1 slots).
    asked = FrameKVCache.for_mask(spec, dec, max_frames=5000)
    assert (asked.capacity_frames, asked.is_ring, asked.max_frames) == (1001, True, 5000)
    # A ring exactly the mask's frames streams for good: a rolling 21-frame context (6 chunks of
    # 3 back, and the chunk itself), as Self-Forcing runs it.
    rolling = get_mask(
        "chunk-causal", num_frames=21, num_patches_per_frame=2, frames_per_chunk=3, window_size=6
    )
    cache = FrameKVCache.for_mask(rolling, dec)
    assert (cache.capacity_frames, cache.is_ring, cache.max_frames) == (21, True, None)


def test_teacher_forcing_steps_one_chunk_at_a_time():
    # Two noisy chunks in one reading step would see each other, which teacher-forcing forbids.
    dec = decoder()
    spec = get_mask("teacher-forcing", num_frames=4, num_patches_per_frame=2, frames_per_chunk=1)
    with pytest.raises(ValueError, match=r"steps one chunk at a time.*got chunk_frames=2"):
        FrameKVCache.for_mask(spec, dec, chunk_frames=2)
    windowed = get_mask(
        "teacher-forcing", num_frames=8, num_patches_per_frame=2, frames_per_chunk=2, window_size=1
    )
    with pytest.raises(ValueError, match=r"frames_per_chunk=2\), got chunk_frames=4"):
        FrameKVCache.for_mask(windowed, dec, chunk_frames=4)
    # Without a window the layout is linear and chunk_frames bounds no step: the step is refused.
    cache = FrameKVCache.for_mask(spec, dec)
    with torch.no_grad():
        for append in (False, True):
            with pytest.raises(ValueError, match="got a step of 2 frames"):
                dec(torch.randn(1, 4, DIM), cache=cache, append=append)
    assert cache.frames == 0 and set(cache.slot_frames.tolist()) == {-1}


# -- flex: equal to the full forward, one compiled kernel for every step ----------------------------
FLEX_DIM = (
    128  # 4 heads of 32: the CPU flex kernel's smallest head dim (nn.kernels.CPU_MIN_HEAD_DIM)
)
FLEX_P = 40  # 3-frame chunks of 120 tokens, a 6-frame cache of 240: both blocks padded
SLIDING = get_mask(
    "sliding-window", num_frames=15, num_patches_per_frame=FLEX_P, window_size=2, sink_frames=1
)


def flex_and_sdpa(seed: int = 0) -> tuple[FlexFrameDecoder, FlexFrameDecoder]:
    flex = decoder("flex", seed=seed, dim=FLEX_DIM)
    sdpa = decoder("sdpa", seed=seed, dim=FLEX_DIM)
    sdpa.load_state_dict(flex.state_dict())
    return flex, sdpa


def test_flex_streaming_equals_the_full_forward():
    flex, sdpa = flex_and_sdpa()
    x = torch.randn(1, SLIDING.q_len, FLEX_DIM)
    with torch.no_grad():
        full = sdpa(x, SLIDING)
    torch.testing.assert_close(stream(flex, SLIDING, x, 3), full, rtol=1e-5, atol=1e-5)


def test_no_step_compiles_again_after_the_first_steps():
    flex, _ = flex_and_sdpa()
    cache = FrameKVCache.for_mask(SLIDING, flex, chunk_frames=3, max_frames=40)
    chunk = lambda: torch.randn(1, 3 * FLEX_P, FLEX_DIM)  # noqa: E731
    with torch.no_grad():
        for _ in range(2):
            flex(chunk(), cache=cache)
        before = counters["stats"]["unique_graphs"]
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(9):  # the ring of 5 wraps five times; reading steps too
                flex(chunk(), cache=cache, append=False)
                flex(chunk(), cache=cache)
            # A new cache of the same setting runs the same compiled kernel.
            again = FrameKVCache.for_mask(SLIDING, flex, chunk_frames=3)
            flex(chunk(), cache=again)
    assert counters["stats"]["unique_graphs"] == before
    assert cache.frames == 33


def test_two_caches_of_other_settings_stream_with_flex_in_one_process():
    # Interleaved: the sliding-window setting above, and chunk-causal with a window and sinks,
    # 37-token frames in 4-frame steps (148 queries, 296 keys), over blocks of 256 (padded
    # blocks stay partial).
    chunks = get_mask(
        "chunk-causal", num_frames=12, num_patches_per_frame=37, frames_per_chunk=2,
        window_size=1, sink_chunks=1,
    )  # fmt: skip
    flex, sdpa = flex_and_sdpa(seed=5)
    runs = [(SLIDING, 3, {}), (chunks, 4, {"block_size": 256})]
    inputs = [torch.randn(1, spec.q_len, FLEX_DIM) for spec, _, _ in runs]
    caches = [FrameKVCache.for_mask(spec, flex, chunk_frames=c, **kw) for spec, c, kw in runs]
    outs: list[list[torch.Tensor]] = [[], []]
    with torch.no_grad():
        for k in range(3):
            for i, (spec, c, _) in enumerate(runs):
                p = spec.num_patches_per_frame
                outs[i].append(flex(inputs[i][:, k * c * p : (k + 1) * c * p], cache=caches[i]))
        for i, (spec, c, _) in enumerate(runs):
            full = sdpa(inputs[i], spec)[:, : 3 * c * spec.num_patches_per_frame]
            torch.testing.assert_close(torch.cat(outs[i], 1), full, rtol=1e-5, atol=1e-5)


def test_in_the_rings_steady_state_every_block_is_full_with_blocks_of_128():
    # The padded last blocks too (120 of 128 query rows, 104 of 128 keys): with block sizes
    # that divide 128 the kernels bound them by the lengths (see triton_attended).
    spec = get_mask(
        "chunk-causal", num_frames=12, num_patches_per_frame=FLEX_P, frames_per_chunk=3,
        window_size=1, sink_chunks=1,
    )  # fmt: skip
    cache = FrameKVCache.for_mask(spec, decoder("flex", dim=FLEX_DIM))
    for _ in range(3):
        cache.begin(3).finish()
    with cache.begin(3) as step:
        block_mask = step.mask.block_mask()
    assert block_mask.kv_num_blocks.sum() == 0 and block_mask.full_kv_num_blocks.sum() == 3


def test_flex_linear_cache_past_the_masks_frames_equals_the_full_forward():
    # causal-frame with 24-token frames and max_frames=7 over a 5-frame mask: 24 queries against
    # 168 keys a step, over blocks of 64.
    spec = get_mask("causal-frame", num_frames=5, num_patches_per_frame=24)
    longer = get_mask("causal-frame", num_frames=7, num_patches_per_frame=24)
    flex, sdpa = flex_and_sdpa(seed=7)
    x = torch.randn(1, longer.q_len, FLEX_DIM)
    with torch.no_grad():
        full = sdpa(x, longer)
    out = stream(flex, spec, x, 1, max_frames=7, block_size=64)
    torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)


def test_many_cache_settings_in_one_process_never_fall_back_to_the_eager_kernel():
    # dynamo recompiles a compiled function at most recompile_limit (8) times, then runs it
    # eagerly: torch's unfused flex kernel, which warns (an error under pytest). Nine settings
    # (frames of 1..9 tokens), through a policy compiling with dynamo's eager backend (the same
    # guards and limit, no inductor: cheap).
    policy = KernelPolicy(compile=functools.partial(torch.compile, backend="eager"))
    flex = decoder("flex", depth=1, dim=FLEX_DIM, kernels=policy)
    sdpa = decoder("sdpa", depth=1, dim=FLEX_DIM)
    sdpa.load_state_dict(flex.state_dict())
    for p in range(1, 10):
        spec = get_mask("sliding-window", num_frames=3, num_patches_per_frame=p, window_size=1)
        x = torch.randn(1, spec.q_len, FLEX_DIM)
        with torch.no_grad():
            full = sdpa(x, spec)
        torch.testing.assert_close(stream(flex, spec, x, 1), full, rtol=1e-5, atol=1e-5)


# -- refusals and bad input -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mask, why",
    [
        (
            get_mask("fast-slow", num_fast_frames=2, num_slow_frames=2, num_patches_per_frame=2),
            "slow frames see",
        ),
        (
            get_mask("timestamp-causal", timestamps=[0, 4, 2], num_patches_per_frame=2),
            "out-of-order",
        ),
        (
            get_mask(
                "timestamp-causal",
                timestamps=[0, 1, 2],
                num_patches_per_frame=2,
                within_frame="causal",
            ),
            "token order",
        ),
        (
            get_mask("packed-causal-frame", frames_per_video=[2, 3], num_patches_per_frame=2),
            "several videos",
        ),
        (get_mask("token-causal", seq_len=8), "no frames"),
        (get_mask("full", seq_len=8), "later frames"),
        (
            get_mask("causal-frame", num_frames=4, num_patches_per_frame=2)
            & get_mask("token-causal", seq_len=8),
            "combined",
        ),
        (
            MaskSpec(
                "causal-frame",
                {"num_frames": 2, "num_patches_per_frame": 2},
                4,
                4,
                lambda d: lambda b, h, q, k: q >= k,
                2,
            ),
            "not built by flexframe's registry",
        ),
        (
            get_mask("causal-frame", num_frames=4, num_patches_per_frame=2).block_mask("cpu"),
            "bare BlockMask",
        ),
    ],
)
def test_masks_without_a_streaming_form_are_refused_with_the_reason(mask, why):
    with pytest.raises(ValueError, match="no streaming form|not built by") as err:
        FrameKVCache.for_mask(mask, decoder())
    assert why in str(err.value)


def test_timestamp_causal_in_time_order_streams_as_causal_frame():
    spec = get_mask("timestamp-causal", timestamps=[0, 1, 2, 3], num_patches_per_frame=3)
    dec = decoder()
    x = torch.randn(1, 12, DIM)
    with torch.no_grad():
        full = dec(x, spec)
    torch.testing.assert_close(stream(dec, spec, x, 1), full, rtol=1e-5, atol=1e-5)


PARAMS = {"num_frames": 10, "num_patches_per_frame": 3, "window_size": 1}


def bad_input_setup():
    spec = get_mask("sliding-window", **PARAMS)
    dec = decoder()
    return spec, dec, FrameKVCache.for_mask(spec, dec, batch_size=2, chunk_frames=2)


@pytest.mark.parametrize(
    "make_input, match",
    [
        (
            lambda: torch.randn(2, 7, DIM),
            r"7 tokens, not a whole number of frames of num_patches_per_frame=3",
        ),
        (lambda: torch.randn(2, 9, DIM), r"holds 3 frames, more than this cache's chunk_frames=2"),
        (lambda: torch.randn(1, 6, DIM), r"batch size 1 but this cache holds 2"),
        (
            lambda: torch.randn(2, 6, DIM, device="meta"),
            r"on meta but the cache's buffers are on cpu",
        ),
    ],
)
def test_a_bad_chunk_gets_an_error_naming_it(make_input, match):
    _, dec, cache = bad_input_setup()
    with torch.no_grad(), pytest.raises(ValueError, match=match):
        dec(make_input(), cache=cache)
    assert cache.frames == 0


def test_a_chunk_of_another_dtype_than_the_cache_is_refused():
    spec, dec, _ = bad_input_setup()
    cache = FrameKVCache.for_mask(spec, dec, batch_size=2, dtype=torch.float64)
    with (
        torch.no_grad(),
        pytest.raises(
            TypeError, match="x_chunk is torch.float32 but the cache holds torch.float64"
        ),
    ):
        dec(torch.randn(2, 3, DIM), cache=cache)


def test_a_cache_used_with_another_mask_or_another_decoder_is_refused():
    spec, dec, cache = bad_input_setup()
    other = get_mask("sliding-window", num_frames=10, num_patches_per_frame=3, window_size=2)
    x = torch.randn(2, 3, DIM)
    with torch.no_grad():
        with pytest.raises(
            ValueError, match=r"this cache streams sliding-window\(.*window_size=1.*window_size=2"
        ):
            dec(x, other, cache=cache)
        with pytest.raises(ValueError, match="built for another FlexFrameDecoder"):
            decoder(seed=1)(x, cache=cache)
        # The same rule over other frames, or other patches, is another mask.
        for params in ({"num_frames": 12}, {"num_patches_per_frame": 1, "num_frames": 30}):
            longer = get_mask("sliding-window", **{**PARAMS, **params})
            with pytest.raises(ValueError, match=r"this cache streams sliding-window\(num_frames"):
                dec(x, longer, cache=cache)
        with pytest.raises(ValueError, match="bare BlockMask has no streaming form"):
            dec(x, spec.block_mask("cpu"), cache=cache)
        dec(x, spec, cache=cache)  # its own mask is fine, given in any form
        dec(x, "sliding-window", mask_params={**PARAMS, "sink_frames": 0}, cache=cache)
    assert cache.frames == 2


def test_appending_past_max_frames_is_refused_and_the_chunk_larger_than_the_cache_too():
    spec = get_mask("causal-frame", num_frames=4, num_patches_per_frame=2)
    dec = decoder()
    cache = FrameKVCache.for_mask(spec, dec)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"frames 0..4 would go past max_frames=4"):
            dec(torch.randn(1, 10, DIM), cache=cache)
        dec(torch.randn(1, 8, DIM), cache=cache)
        with pytest.raises(ValueError, match=r"appending frames 4..4 would go past max_frames=4"):
            dec(torch.randn(1, 2, DIM), cache=cache)
    assert cache.frames == 4


def test_nothing_follows_a_partial_last_chunk():
    spec = get_mask("chunk-causal", num_frames=8, num_patches_per_frame=1, frames_per_chunk=3)
    dec = decoder()
    cache = FrameKVCache.for_mask(spec, dec)
    with torch.no_grad():
        dec(torch.randn(1, 3, DIM), cache=cache)
        dec(torch.randn(1, 2, DIM), cache=cache)  # frames 3, 4 of chunk 1: a shorter last chunk
        with pytest.raises(ValueError, match=r"frames 3..4 were appended as a partial last chunk"):
            dec(torch.randn(1, 1, DIM), cache=cache)


def test_the_cache_path_refuses_autograd_and_explicit_positions():
    spec, dec, cache = bad_input_setup()
    x = torch.randn(2, 3, DIM)
    with pytest.raises(RuntimeError, match=r"inference only: call it under torch.no_grad\(\)"):
        dec(x, cache=cache)
    assert cache.frames == 0 and cache.slot_frames.tolist() == [-1, -1, -1]
    with torch.no_grad(), pytest.raises(ValueError, match="positions come from the cache"):
        dec(x, cache=cache, positions=FramePositions.for_frames(1, 3))


def test_bad_cache_settings_are_named():
    spec = get_mask(
        "chunk-causal", num_frames=9, num_patches_per_frame=2, frames_per_chunk=3, window_size=1
    )
    dec = decoder()
    with pytest.raises(
        ValueError,
        match="chunk_frames must be a multiple of frames_per_chunk=3.*got chunk_frames=4",
    ):
        FrameKVCache.for_mask(spec, dec, chunk_frames=4)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        FrameKVCache.for_mask(spec, dec, batch_size=0)
    with pytest.raises(TypeError, match="FlexFrameDecoder or an Attention, got Linear"):
        FrameKVCache.for_mask(spec, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="append is for a step with a cache"):
        dec(torch.randn(1, 18, DIM), spec, append=False)


def test_cuda_graphs_are_refused_off_a_gpu_and_off_flex_naming_why():
    spec = get_mask("causal-frame", num_frames=4, num_patches_per_frame=2)
    with pytest.raises(ValueError, match=r"cuda_graphs=True needs a CUDA device, got device='cpu'"):
        FrameKVCache.for_mask(spec, decoder("flex"), cuda_graphs=True)
    with pytest.raises(ValueError, match=r"attention_backend='sdpa'.*leave cuda_graphs off"):
        FrameKVCache.for_mask(spec, decoder(), cuda_graphs=True)
    with pytest.raises(TypeError, match="cuda_graphs must be true or false, got 'yes'"):
        FrameKVCache.for_mask(spec, decoder(), cuda_graphs="yes")
    assert FrameKVCache.for_mask(spec, decoder()).graphs is None


class _Recorder:
    """A stand-in for a CUDA graph recording: counts recordings, replays by running again."""

    def __init__(self) -> None:
        self.recorded: list[tuple] = []

    def __call__(self, run, q, keep):
        self.recorded.append(keep)
        return run


def _graph_steps(spec, steps: int, max_graphs: int = 64, layers: int = 2):
    """``steps`` appending steps through StepGraphs with real step BlockMasks, ``layers``
    calls a step as a decoder makes them; returns the StepGraphs and the stand-in recorder."""
    from flexframe.nn import StepGraphs

    recorder = _Recorder()
    graphs = StepGraphs("cpu", max_graphs=max_graphs, record=recorder)
    cache = FrameKVCache.for_mask(spec, decoder(depth=layers))
    q = torch.zeros(1, HEADS, spec.num_patches_per_frame, DIM // HEADS)
    with torch.no_grad():
        for _ in range(steps):
            with cache.begin(1) as step:
                block_mask = step.mask.block_mask()
                for layer in range(layers):
                    k, v = cache.keys(layer), cache.values(layer)
                    out = graphs.attend(lambda query: query + 1, q, k, v, block_mask)
                    assert torch.equal(out, q + 1)  # what the call computes, replayed or not
    return graphs, recorder


def test_cuda_graphs_record_a_repeated_step_once_a_layer_and_never_a_step_seen_once():
    # A ring of 3 slots repeats its step mask from step 2 on (steps 0-1 fill it): seen again at
    # step 3, recorded there once a layer, replayed at steps 4-29.
    ring = get_mask("sliding-window", num_frames=40, num_patches_per_frame=4, window_size=2)
    graphs, recorder = _graph_steps(ring, 30)
    assert graphs.recorded == len(recorder.recorded) == 2
    assert graphs.replays == 2 * 26
    # A linear cache's step mask grows with every frame: each is seen once, nothing is
    # recorded (a freed mask's id() handed to the next must not pass for a second sight).
    linear = get_mask("causal-frame", num_frames=40, num_patches_per_frame=4)
    graphs, recorder = _graph_steps(linear, 40)
    assert graphs.recorded == 0 and graphs.replays == 0 and not recorder.recorded


def test_cuda_graphs_stop_recording_when_full_and_keep_inference_mode_apart():
    ring = get_mask("sliding-window", num_frames=40, num_patches_per_frame=4, window_size=2)
    graphs, recorder = _graph_steps(ring, 30, max_graphs=1)
    assert graphs.recorded == 1 and len(graphs) == 1  # the second layer runs as usual
    assert graphs.replays == 26
    from flexframe.nn import StepGraphs

    graphs = StepGraphs("cpu", record=_Recorder())
    q, k = torch.zeros(1, 2, 4, 8), torch.zeros(1, 2, 8, 8)
    block_mask = ring.block_mask()
    for mode in (torch.no_grad, torch.inference_mode, torch.no_grad, torch.inference_mode):
        with mode():
            graphs.attend(lambda query: query, q, k, k, block_mask)
    assert graphs.recorded == 2  # one for each mode, each on its second sight
