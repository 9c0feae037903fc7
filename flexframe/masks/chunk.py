"""Masks of autoregressive video generation: chunk-causal and teacher forcing.

Autoregressive video generators and world models (CausVid, Self-Forcing, MAGI-1, diffusion
forcing) generate a video chunk by chunk: a chunk of ``frames_per_chunk`` latent frames is
denoised as a whole, bidirectionally, attending to the chunks before it. Frames are laid out in
order, ``num_patches_per_frame`` tokens each; ``frame(i) = i // P`` and
``chunk(f) = f // frames_per_chunk`` (the last chunk may be shorter).

- ``chunk-causal``: a query in chunk ``c`` sees a key in chunk ``c'`` iff ``c' <= c`` and
  (``window_size is None`` or ``c - c' <= window_size`` or ``c' < sink_chunks``). All tokens of a
  chunk see each other. With ``frames_per_chunk=1`` and no window it is ``causal-frame``.
- ``teacher-forcing``: the ``[clean | noisy]`` training sequence of autoregressive video
  diffusion: ``num_frames`` clean frames, then the same frames noised. Clean tokens attend as in
  ``chunk-causal`` among the clean frames; a noisy token of chunk ``c`` sees the noisy tokens of
  its own chunk and the clean chunks ``c' < c`` the window and sinks allow, never its own clean
  chunk (that would hand it the answer) and nothing later. No clean token sees a noisy one.

Published settings these reproduce: CausVid (Yin et al., 2025) and Self-Forcing (Huang et al.,
2025) train Wan 2.1 with chunks of 3 latent frames over 21 latent frames (1,560 tokens a frame
at 480x832): ``chunk-causal(21, 1560, 3)`` and ``teacher-forcing(21, 1560, 3)`` (CausVid's
teacher-forcing and diffusion-forcing training mask). Self-Forcing's long rollouts attend with a
local window of latent frames (``local_attn_size``) and LongLive keeps the first chunk as a
frame sink: ``chunk-causal(..., window_size=W, sink_chunks=1)``, or ``sliding-window`` with
``sink_frames`` at frame granularity.
"""

from __future__ import annotations

import torch

from flexframe._checks import check_int
from flexframe.masks.closed_form import Interval, IntervalRelation
from flexframe.masks.piecewise import PiecewiseKey
from flexframe.masks.registry import register_mask
from flexframe.masks.spec import MaskMod, MaskSpec


def _chunk_params(
    num_frames: int,
    num_patches_per_frame: int,
    frames_per_chunk: int,
    window_size: int | None,
    sink_chunks: int,
) -> tuple[int, int, int, int | None, int, int]:
    f = check_int("num_frames", num_frames, minimum=1)
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    fpc = check_int("frames_per_chunk", frames_per_chunk, minimum=1)
    w = None if window_size is None else check_int("window_size", window_size, minimum=0)
    s = check_int("sink_chunks", sink_chunks, minimum=0)
    num_chunks = -(-f // fpc)
    if s > num_chunks:
        raise ValueError(
            f"sink_chunks must be <= the number of chunks, got sink_chunks={s} for "
            f"{num_chunks} chunk(s) (num_frames={f}, frames_per_chunk={fpc})"
        )
    return f, p, fpc, w, s, num_chunks


def _allowed(q_chunk: torch.Tensor, kv_chunk: torch.Tensor, w: int | None, s: int) -> torch.Tensor:
    """The window and sink rule between an earlier-or-equal chunk and a query's chunk."""
    if w is None:
        return q_chunk >= 0  # everything (a tensor, so that it combines with & like the others)
    return (q_chunk - kv_chunk <= w) | (kv_chunk < s)


def generate_chunk_causal_mask_mod(
    num_patches_per_frame: int,
    frames_per_chunk: int,
    window_size: int | None = None,
    sink_chunks: int = 0,
) -> MaskMod:
    """A mask_mod: chunk ``c`` sees chunks ``c' <= c`` within the window, and the sink chunks.

    Example:
        >>> mod = generate_chunk_causal_mask_mod(1, frames_per_chunk=2)
        >>> [bool(mod(0, 0, torch.tensor(2), torch.tensor(k))) for k in range(5)]
        [True, True, True, True, False]
    """
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    tokens = p * check_int("frames_per_chunk", frames_per_chunk, minimum=1)
    w = None if window_size is None else check_int("window_size", window_size, minimum=0)
    s = check_int("sink_chunks", sink_chunks, minimum=0)

    def chunk_causal(b, h, q_idx, kv_idx):
        q_chunk = q_idx // tokens
        kv_chunk = kv_idx // tokens
        return (kv_chunk <= q_chunk) & _allowed(q_chunk, kv_chunk, w, s)

    return chunk_causal


def generate_teacher_forcing_mask_mod(
    num_frames: int,
    num_patches_per_frame: int,
    frames_per_chunk: int = 1,
    window_size: int | None = None,
    sink_chunks: int = 0,
) -> MaskMod:
    """A mask_mod over ``[clean | noisy]``: see :func:`teacher_forcing_mask`.

    Example:
        >>> mod = generate_teacher_forcing_mask_mod(2, 1)  # [clean 0, clean 1, noisy 0, noisy 1]
        >>> [bool(mod(0, 0, torch.tensor(3), torch.tensor(k))) for k in range(4)]
        [True, False, False, True]
    """
    half = check_int("num_frames", num_frames, minimum=1) * check_int(
        "num_patches_per_frame", num_patches_per_frame, minimum=1
    )
    tokens = num_patches_per_frame * check_int("frames_per_chunk", frames_per_chunk, minimum=1)
    w = None if window_size is None else check_int("window_size", window_size, minimum=0)
    s = check_int("sink_chunks", sink_chunks, minimum=0)

    def teacher_forcing(b, h, q_idx, kv_idx):
        q_noisy = q_idx >= half
        kv_noisy = kv_idx >= half
        q_chunk = (q_idx - q_noisy * half) // tokens
        kv_chunk = (kv_idx - kv_noisy * half) // tokens
        allowed = _allowed(q_chunk, kv_chunk, w, s)
        clean_query = ~kv_noisy & (kv_chunk <= q_chunk) & allowed
        noisy_query = (kv_noisy & (kv_chunk == q_chunk)) | (
            ~kv_noisy & (kv_chunk < q_chunk) & allowed
        )
        return torch.where(q_noisy, noisy_query, clean_query)

    return teacher_forcing


def _per_frame(values: torch.Tensor, p: int) -> PiecewiseKey:
    return PiecewiseKey.per_frame(values.to(torch.int64), p)


@register_mask("chunk-causal")
def chunk_causal_mask(
    num_frames: int,
    num_patches_per_frame: int,
    frames_per_chunk: int,
    window_size: int | None = None,
    sink_chunks: int = 0,
) -> MaskSpec:
    """Chunks of frames see themselves whole and the chunks before them (window and sinks).

    Frames are grouped into chunks of ``frames_per_chunk`` (the last may be shorter). A query in
    chunk ``c`` sees a key in chunk ``c'`` iff ``c' <= c`` and (``window_size is None`` or
    ``c - c' <= window_size`` or ``c' < sink_chunks``). The block-causal mask of CausVid and
    Self-Forcing (chunks of 3 latent frames); ``frames_per_chunk=1`` without a window is
    ``causal-frame``.

    Example:
        >>> chunk_causal_mask(4, 1, frames_per_chunk=2).to_dense().int().tolist()
        [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
        >>> chunk_causal_mask(3, 1, 1, window_size=0, sink_chunks=1).to_dense().int().tolist()
        [[1, 0, 0], [1, 1, 0], [1, 0, 1]]
    """
    f, p, fpc, w, s, _ = _chunk_params(
        num_frames, num_patches_per_frame, frames_per_chunk, window_size, sink_chunks
    )
    chunk = torch.arange(f) // fpc
    key = _per_frame(chunk, p)
    lo = None if w is None else _per_frame(chunk - w, p)
    # The window [c - w, c] (consecutive chunks' intervals overlap: the one-interval test is
    # exact), and the sink chunks [0, min(s - 1, c)] as a second interval.
    sinks = () if w is None or s == 0 else (Interval(hi=_per_frame(chunk.clamp(max=s - 1), p)),)
    params: dict[str, object] = {
        "num_frames": f,
        "num_patches_per_frame": p,
        "frames_per_chunk": fpc,
    }
    if w is not None:
        params["window_size"] = w
    if s:
        params["sink_chunks"] = s
    window = "all earlier chunks" if w is None else f"the {w} chunk(s) before it"
    return MaskSpec(
        name="chunk-causal",
        params=params,
        q_len=f * p,
        kv_len=f * p,
        mod_factory=lambda device: generate_chunk_causal_mask_mod(p, fpc, w, s),
        num_patches_per_frame=p,
        description=f"chunks of {fpc} frame(s): own chunk whole and {window}"
        + (f", and the first {s} chunk(s)" if s and w is not None else ""),
        relation=IntervalRelation(kv_key=key, q_hi=key, q_lo=lo, union=sinks),
    )


@register_mask("teacher-forcing")
def teacher_forcing_mask(
    num_frames: int,
    num_patches_per_frame: int,
    frames_per_chunk: int = 1,
    window_size: int | None = None,
    sink_chunks: int = 0,
) -> MaskSpec:
    """The ``[clean | noisy]`` training mask of autoregressive video diffusion.

    The sequence holds ``num_frames`` clean frames followed by the same ``num_frames`` frames
    noised, so ``q_len = kv_len = 2 * num_frames * num_patches_per_frame``. A clean token in
    chunk ``c`` sees the clean chunks ``chunk-causal`` allows. A noisy token in chunk ``c`` sees
    the noisy tokens of its own chunk and the clean chunks ``c' < c`` that the window and sinks
    allow (``c - c' <= window_size`` or ``c' < sink_chunks``), never its own clean chunk or
    anything later. Noisy tokens are never seen by clean ones. The noisy half has the frame times
    of the clean half (noisy frame ``f`` is frame ``f`` noised), so rotary positions agree with
    generation, where the noisy chunk runs at its frames' times against the cached clean ones.

    Example:
        >>> teacher_forcing_mask(2, 1).to_dense().int().tolist()  # [c0, c1, n0, n1]
        [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]
    """
    f, p, fpc, w, s, num_chunks = _chunk_params(
        num_frames, num_patches_per_frame, frames_per_chunk, window_size, sink_chunks
    )
    chunk = torch.arange(f) // fpc
    both = torch.cat([chunk, chunk])
    noisy = torch.cat([torch.zeros(f, dtype=torch.bool), torch.ones(f, dtype=torch.bool)])
    # Keys: clean chunk c -> c, noisy chunk c -> num_chunks + c (rising by at most 1).
    kv_key = _per_frame(both + noisy * num_chunks, p)
    nothing_lo, nothing_hi = torch.ones_like(both), torch.zeros_like(both)  # lo > hi: empty
    # Interval 1: clean rows their window [c - w, c]; noisy rows their own noisy chunk.
    own_lo = torch.where(noisy, num_chunks + both, both - (w if w is not None else num_chunks))
    own_hi = torch.where(noisy, num_chunks + both, both)
    # Interval 2: noisy rows the clean chunks before theirs, within the window.
    prev_lo = torch.where(noisy, both - (w if w is not None else num_chunks), nothing_lo)
    prev_hi = torch.where(noisy, both - 1, nothing_hi - 1)
    intervals = [Interval(hi=_per_frame(prev_hi, p), lo=_per_frame(prev_lo, p))]
    if w is not None and s:  # interval 3: the sink chunks, up to the chunk itself (clean) or
        # up to the chunk before (noisy)
        sink_hi = torch.where(noisy, (both - 1).clamp(max=s - 1), both.clamp(max=s - 1))
        intervals.append(Interval(hi=_per_frame(sink_hi, p)))
    params: dict[str, object] = {
        "num_frames": f,
        "num_patches_per_frame": p,
        "frames_per_chunk": fpc,
    }
    if w is not None:
        params["window_size"] = w
    if s:
        params["sink_chunks"] = s
    return MaskSpec(
        name="teacher-forcing",
        params=params,
        q_len=2 * f * p,
        kv_len=2 * f * p,
        mod_factory=lambda device: generate_teacher_forcing_mask_mod(f, p, fpc, w, s),
        num_patches_per_frame=p,
        description=f"[clean | noisy] chunks of {fpc} frame(s): noisy chunks see earlier clean "
        "chunks and themselves, never their own clean chunk",
        relation=IntervalRelation(
            kv_key=kv_key,
            q_hi=_per_frame(own_hi, p),
            q_lo=_per_frame(own_lo, p),
            union=tuple(intervals),
        ),
        frame_times=tuple(range(f)) * 2,
    )
