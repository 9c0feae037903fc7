"""Hypothesis strategies and brute-force reference masks, written independently of flexframe.

The references loop over (query, key) pairs and apply each mask's definition as the issue states
it, in plain Python; they share no code with the library.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

BLOCK_MASK_TENSORS = (
    "kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
    "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices",
)  # fmt: skip
"""The index tensors of a torch ``BlockMask``: two masks are equal when all of these are."""


def reference_dense(name: str, params: dict) -> torch.Tensor:
    """``[N, N]`` bool, True = may attend, straight from each mask's written definition."""
    if name in ("token-causal", "full"):
        n = params["seq_len"]
        frame_of = list(range(n))
    elif name == "fast-slow":
        p = params["num_patches_per_frame"]
        n = (params["num_fast_frames"] + params["num_slow_frames"]) * p
    elif name == "packed-causal-frame":
        p = params["num_patches_per_frame"]
        n = sum(params["frames_per_video"]) * p
    elif name == "timestamp-causal":
        p = params["num_patches_per_frame"]
        n = len(params["timestamps"]) * p
    elif name == "teacher-forcing":
        p = params["num_patches_per_frame"]
        n = 2 * params["num_frames"] * p
    else:
        p = params["num_patches_per_frame"]
        n = params["num_frames"] * p
    if name not in ("token-causal", "full"):
        frame_of = [i // p for i in range(n)]

    def window_allows(cq: int, ck: int) -> bool:
        w, sinks = params.get("window_size"), params.get("sink_chunks", 0)
        return w is None or cq - ck <= w or ck < sinks

    def chunk_sees(fq: int, fk: int) -> bool:
        # chunk(f) = f // frames_per_chunk; c' <= c and (no window, c - c' <= w, or c' < sinks)
        cq, ck = fq // params["frames_per_chunk"], fk // params["frames_per_chunk"]
        return ck <= cq and window_allows(cq, ck)

    def visible(q: int, k: int) -> bool:
        fq, fk = frame_of[q], frame_of[k]
        if name == "full":
            return True
        if name == "token-causal":
            return k <= q
        if name == "causal-frame":
            return fk <= fq
        if name == "sliding-window":
            # f' <= f and (f - f' <= window_size or f' < sink_frames)
            sinks = params.get("sink_frames", 0)
            return fk <= fq and (fq - fk <= params["window_size"] or fk < sinks)
        if name == "chunk-causal":
            return chunk_sees(fq, fk)
        if name == "teacher-forcing":
            half = params["num_frames"]
            q_noisy, k_noisy = fq >= half, fk >= half
            fq, fk = fq % half, fk % half  # the frame each token shows (noisy f is f noised)
            cq, ck = fq // params["frames_per_chunk"], fk // params["frames_per_chunk"]
            if not q_noisy:  # clean: the clean chunks chunk-causal allows, never a noisy token
                return not k_noisy and chunk_sees(fq, fk)
            if k_noisy:  # noisy: the noisy tokens of its own chunk
                return ck == cq
            return ck < cq and window_allows(cq, ck)  # earlier clean chunks, window and sinks
        if name == "fast-slow":
            s = params["num_slow_frames"]
            q_is_slow, k_is_slow = fq < s, fk < s
            if q_is_slow:
                return k_is_slow  # slow sees all slow, no fast
            return k_is_slow or fk <= fq  # fast sees all slow + fast up to its own
        if name == "packed-causal-frame":
            video_of = []
            for v, count in enumerate(params["frames_per_video"]):
                video_of += [v] * count
            return video_of[fq] == video_of[fk] and fk <= fq
        if name == "timestamp-causal":
            ts = params["timestamps"]
            if params.get("within_frame", "full") == "full":
                return ts[fk] <= ts[fq]
            return ts[fk] < ts[fq] or (ts[fk] == ts[fq] and k <= q)
        raise AssertionError(name)

    out = torch.zeros(n, n, dtype=torch.bool)
    for q in range(n):
        for k in range(n):
            out[q, k] = visible(q, k)
    return out


@st.composite
def mask_configs(draw, max_frames: int = 6, max_patches: int = 7) -> tuple[str, dict]:
    """A registered mask name with valid parameters, small enough for the O(N^2) references."""
    name = draw(
        st.sampled_from(
            [
                "causal-frame",
                "sliding-window",
                "fast-slow",
                "timestamp-causal",
                "packed-causal-frame",
                "token-causal",
                "full",
                "chunk-causal",
                "teacher-forcing",
            ]
        )
    )
    p = draw(st.integers(1, max_patches))
    if name == "causal-frame":
        return name, {"num_frames": draw(st.integers(1, max_frames)), "num_patches_per_frame": p}
    if name == "sliding-window":
        f = draw(st.integers(1, max_frames))
        params = {"num_frames": f, "num_patches_per_frame": p,
                  "window_size": draw(st.integers(0, max_frames))}  # fmt: skip
        sinks = draw(st.integers(0, f))
        if sinks:
            params["sink_frames"] = sinks
        return name, params
    if name in ("chunk-causal", "teacher-forcing"):
        return name, generation_params(draw, max_frames, p)
    if name == "fast-slow":
        return name, {
            "num_fast_frames": draw(st.integers(1, max_frames // 2)),
            "num_slow_frames": draw(st.integers(1, max_frames // 2)),
            "num_patches_per_frame": p,
        }
    if name == "timestamp-causal":
        ts = draw(st.lists(st.integers(0, 6), min_size=1, max_size=max_frames))
        within = draw(st.sampled_from(["full", "causal"]))
        return name, {"timestamps": ts, "num_patches_per_frame": p, "within_frame": within}
    if name == "packed-causal-frame":
        videos = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
        return name, {"frames_per_video": videos, "num_patches_per_frame": p}
    return name, {"seq_len": draw(st.integers(1, max_frames * max_patches))}


def generation_params(draw, max_frames: int, p: int) -> dict:
    """chunk-causal / teacher-forcing parameters: frames, chunks, an optional window, sinks."""
    f = draw(st.integers(1, max_frames))
    fpc = draw(st.integers(1, f + 1))
    num_chunks = -(-f // fpc)
    params = {"num_frames": f, "num_patches_per_frame": p, "frames_per_chunk": fpc}
    if draw(st.booleans()):
        params["window_size"] = draw(st.integers(0, num_chunks))
    sinks = draw(st.integers(0, num_chunks))
    if sinks:
        params["sink_chunks"] = sinks
    return params


def expected_block_grids(
    dense: torch.Tensor, q_block: int, kv_block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial, full) block grids from a dense mask, padding with "masked" as torch does."""
    nq = -(-dense.shape[0] // q_block)
    nk = -(-dense.shape[1] // kv_block)
    padded = torch.zeros(nq * q_block, nk * kv_block, dtype=torch.bool)
    padded[: dense.shape[0], : dense.shape[1]] = dense
    blocks = padded.view(nq, q_block, nk, kv_block)
    full = blocks.all(dim=3).all(dim=1)
    partial = blocks.any(dim=3).any(dim=1) & ~full
    return partial, full


def block_mask_grids(block_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial, full) ``[nq, nk]`` bool grids read from a BlockMask's kv tensors."""
    nq, nk = block_mask.kv_indices.shape[-2:]

    def grid(num, idx):
        out = torch.zeros(nq, nk, dtype=torch.bool)
        for i in range(nq):
            out[i, idx[0, 0, i, : int(num[0, 0, i])].long()] = True
        return out

    return (
        grid(block_mask.kv_num_blocks.cpu(), block_mask.kv_indices.cpu()),
        grid(block_mask.full_kv_num_blocks.cpu(), block_mask.full_kv_indices.cpu()),
    )


def expand_block_mask(block_mask, mask_mod_dense: torch.Tensor) -> torch.Tensor:
    """The dense mask a kernel computes from a BlockMask: full blocks whole, the mask_mod's values
    (``mask_mod_dense``, ``[q_len, kv_len]``) inside partial blocks, nothing elsewhere."""
    partial, full = block_mask_grids(block_mask)
    q_bs, kv_bs = block_mask.BLOCK_SIZE
    q_len, kv_len = mask_mod_dense.shape

    def expand(grid):
        return grid.repeat_interleave(q_bs, 0).repeat_interleave(kv_bs, 1)[:q_len, :kv_len]

    return expand(full) | (expand(partial) & mask_mod_dense)
