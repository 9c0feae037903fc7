"""Frame-level masks: causal-frame, sliding-window (with sink frames), fast-slow, packed videos.

Frames are laid out one after another, ``num_patches_per_frame`` tokens each, so the frame of a
token is ``frame(i) = i // num_patches_per_frame``. Each family has a ``generate_*`` factory that
returns a plain ``mask_mod(b, h, q_idx, kv_idx)`` (True = may attend), and a registered factory
that returns a :class:`MaskSpec` with the same mask_mod and its closed-form block structure.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flexframe._checks import check_int, check_int_sequence
from flexframe.masks.closed_form import Interval, IntervalRelation
from flexframe.masks.piecewise import PiecewiseKey
from flexframe.masks.registry import register_mask
from flexframe.masks.spec import MaskMod, MaskSpec


def create_frame_position_ids(
    num_frames: int, num_patches_per_frame: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """The frame index of every token: ``[num_frames * num_patches_per_frame]`` int64.

    Example:
        >>> create_frame_position_ids(3, 2).tolist()
        [0, 0, 1, 1, 2, 2]
    """
    f = check_int("num_frames", num_frames, minimum=1)
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    return torch.arange(f, device=device).repeat_interleave(p)


def generate_causal_frame_mask_mod(num_patches_per_frame: int) -> MaskMod:
    """A mask_mod letting a token see every token of its own frame and of earlier frames.

    Example:
        >>> mod = generate_causal_frame_mask_mod(2)
        >>> bool(mod(0, 0, torch.tensor(2), torch.tensor(3)))  # frame 1 sees all of frame 1
        True
    """
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)

    def causal_frame(b, h, q_idx, kv_idx):
        return kv_idx // p <= q_idx // p

    return causal_frame


def generate_sliding_window_mask_mod(
    num_patches_per_frame: int, window_size: int, sink_frames: int = 0
) -> MaskMod:
    """A mask_mod letting frame ``f`` see frames ``f - window_size .. f`` and the first
    ``sink_frames`` frames up to ``f``, nothing else.

    Example:
        >>> mod = generate_sliding_window_mask_mod(1, window_size=1)
        >>> [bool(mod(0, 0, torch.tensor(3), torch.tensor(k))) for k in range(5)]
        [False, False, True, True, False]
        >>> mod = generate_sliding_window_mask_mod(1, window_size=1, sink_frames=1)
        >>> [bool(mod(0, 0, torch.tensor(3), torch.tensor(k))) for k in range(5)]
        [True, False, True, True, False]
    """
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    w = check_int("window_size", window_size, minimum=0)
    s = check_int("sink_frames", sink_frames, minimum=0)
    if s == 0:

        def sliding_window(b, h, q_idx, kv_idx):
            q_frame = q_idx // p
            kv_frame = kv_idx // p
            return (kv_frame <= q_frame) & (q_frame - kv_frame <= w)

        return sliding_window

    def sliding_window_with_sinks(b, h, q_idx, kv_idx):
        q_frame = q_idx // p
        kv_frame = kv_idx // p
        return (kv_frame <= q_frame) & ((q_frame - kv_frame <= w) | (kv_frame < s))

    return sliding_window_with_sinks


def generate_fast_slow_mask_mod(num_slow_frames: int, num_patches_per_frame: int) -> MaskMod:
    """A mask_mod for ``[slow | fast]``: every query sees all slow frames; fast frames also see
    the fast frames up to their own. Leaks the future: see :func:`fast_slow_mask`.

    Example:
        >>> mod = generate_fast_slow_mask_mod(num_slow_frames=2, num_patches_per_frame=1)
        >>> [bool(mod(0, 0, torch.tensor(0), torch.tensor(k))) for k in range(4)]
        [True, True, False, False]
    """
    s = check_int("num_slow_frames", num_slow_frames, minimum=1)
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)

    def fast_slow(b, h, q_idx, kv_idx):
        kv_frame = kv_idx // p
        return (kv_frame < s) | (kv_frame <= q_idx // p)

    return fast_slow


def generate_packed_causal_frame_mask_mod(
    video_start_of_frame: torch.Tensor, num_patches_per_frame: int
) -> MaskMod:
    """A mask_mod for packed videos: frame-causal inside a video, nothing across videos.

    Args:
        video_start_of_frame: ``[num_frames]`` int64, the first frame of the video each frame
            belongs to (videos are contiguous, so "same video and not later" is
            ``start[f_q] <= f_kv <= f_q``). Must be on the device flex_attention runs on.
        num_patches_per_frame: tokens per frame.

    Example:
        >>> mod = generate_packed_causal_frame_mask_mod(torch.tensor([0, 0, 2]), 1)
        >>> [bool(mod(0, 0, torch.tensor(2), torch.tensor(k))) for k in range(3)]
        [False, False, True]
    """
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    start = video_start_of_frame

    def packed_causal_frame(b, h, q_idx, kv_idx):
        q_frame = q_idx // p
        kv_frame = kv_idx // p
        return (kv_frame <= q_frame) & (kv_frame >= start[q_frame])

    return packed_causal_frame


def _frame_key(num_frames: int, p: int, values: torch.Tensor | None = None) -> PiecewiseKey:
    frames = torch.arange(num_frames, dtype=torch.int64)
    return PiecewiseKey.per_frame(frames if values is None else values, p)


@register_mask("causal-frame")
def causal_frame_mask(num_frames: int, num_patches_per_frame: int) -> MaskSpec:
    """A token sees every token of its own frame and of all earlier frames, nothing later.

    For 3 frames of 3 patches, rows of frame 1 see columns 0-2, rows of frame 2 see 0-5 and rows
    of frame 3 see 0-8: within a frame there is no order, across frames time runs forward.

    Example:
        >>> causal_frame_mask(3, 1).to_dense().int().tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    f = check_int("num_frames", num_frames, minimum=1)
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    key = _frame_key(f, p)
    return MaskSpec(
        name="causal-frame",
        params={"num_frames": f, "num_patches_per_frame": p},
        q_len=f * p,
        kv_len=f * p,
        mod_factory=lambda device: generate_causal_frame_mask_mod(p),
        num_patches_per_frame=p,
        description="own frame and all earlier frames",
        relation=IntervalRelation(kv_key=key, q_hi=key),
    )


@register_mask("sliding-window")
def sliding_window_mask(
    num_frames: int, num_patches_per_frame: int, window_size: int, sink_frames: int = 0
) -> MaskSpec:
    """As causal-frame, but frame f sees only frames f - window_size .. f, and the sink frames.

    ``window_size`` counts frames back from the current one: 0 gives one block per frame (each
    frame sees only itself), ``num_frames - 1`` or more is causal-frame. The first
    ``sink_frames`` frames stay visible to every later frame, inside the window or not
    (attention sinks, as StreamingLLM keeps its first tokens and Self-Forcing's long rollouts keep
    their first frames): frame ``f`` sees ``f'`` iff ``f' <= f`` and (``f - f' <= window_size``
    or ``f' < sink_frames``). With ``sink_frames=0`` (the default) it is the plain window.

    Example:
        >>> sliding_window_mask(3, 1, window_size=0).to_dense().int().tolist()
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
        >>> sliding_window_mask(4, 1, window_size=0, sink_frames=1).to_dense().int().tolist()
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]]
    """
    f = check_int("num_frames", num_frames, minimum=1)
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    w = check_int("window_size", window_size, minimum=0)
    s = check_int("sink_frames", sink_frames, minimum=0)
    if s > f:
        raise ValueError(
            f"sink_frames must be <= num_frames, got sink_frames={s} and num_frames={f}"
        )
    frames = torch.arange(f, dtype=torch.int64)
    key = PiecewiseKey.per_frame(frames, p)
    # The window [f - w, f] (two-sided: the rows' intervals of consecutive frames overlap, and
    # kv_key is the frame index, so the closed form's "any visible" test is exact), and the sink
    # frames [0, min(s - 1, f)] as a second interval.
    sinks = () if s == 0 else (Interval(hi=PiecewiseKey.per_frame(frames.clamp(max=s - 1), p)),)
    params = {"num_frames": f, "num_patches_per_frame": p, "window_size": w}
    if s:
        params["sink_frames"] = s
    return MaskSpec(
        name="sliding-window",
        params=params,
        q_len=f * p,
        kv_len=f * p,
        mod_factory=lambda device: generate_sliding_window_mask_mod(p, w, s),
        num_patches_per_frame=p,
        description=f"own frame and the {w} frame(s) before it"
        + (f", and the first {s} frame(s)" if s else ""),
        relation=IntervalRelation(
            kv_key=key, q_hi=key, q_lo=PiecewiseKey.per_frame(frames - w, p), union=sinks
        ),
    )


@register_mask("fast-slow")
def fast_slow_mask(
    num_fast_frames: int, num_slow_frames: int, num_patches_per_frame: int
) -> MaskSpec:
    """The seed design's ``[slow | fast]`` mask; it leaks the future for next-frame prediction.

    The sequence is ``num_slow_frames`` slow frames followed by ``num_fast_frames`` fast frames.
    Slow frames see all slow frames; fast frames see all slow frames and the fast frames up to
    their own (frame-causal among fast); slow frames see no fast frame.

    **Warning: this mask leaks the future.** Slow frames are spread over the whole clip and fast
    frames are its most recent stretch, so a fast frame sees slow frames that lie *later in time*
    than itself, and every slow frame sees all later slow frames. For next-frame prediction use
    ``timestamp-causal`` with the merged timestamps instead (``flexframe.sampling`` gives them);
    this mask is kept for reproducing the seed design and for ablations.

    Example:
        >>> fast_slow_mask(num_fast_frames=2, num_slow_frames=2, num_patches_per_frame=1
        ...                ).to_dense().int().tolist()
        [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    """
    nf = check_int("num_fast_frames", num_fast_frames, minimum=1)
    ns = check_int("num_slow_frames", num_slow_frames, minimum=1)
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    frames = torch.arange(nf + ns, dtype=torch.int64)
    # visible <=> kv_frame < S or kv_frame <= q_frame  <=>  kv_frame <= max(q_frame, S - 1)
    return MaskSpec(
        name="fast-slow",
        params={"num_fast_frames": nf, "num_slow_frames": ns, "num_patches_per_frame": p},
        q_len=(nf + ns) * p,
        kv_len=(nf + ns) * p,
        mod_factory=lambda device: generate_fast_slow_mask_mod(ns, p),
        num_patches_per_frame=p,
        description="[slow | fast]: all slow frames + causal fast frames (leaks the future)",
        relation=IntervalRelation(
            kv_key=PiecewiseKey.per_frame(frames, p),
            q_hi=PiecewiseKey.per_frame(frames.clamp(min=ns - 1), p),
        ),
    )


@register_mask("packed-causal-frame")
def packed_causal_frame_mask(
    frames_per_video: Sequence[int], num_patches_per_frame: int
) -> MaskSpec:
    """Several videos packed into one sequence: frame-causal inside each, nothing across.

    ``frames_per_video`` lists each video's frame count in sequence order, e.g. ``[3, 5]`` packs
    a 3-frame and a 5-frame video into 8 frames.

    Example:
        >>> packed_causal_frame_mask([2, 1], 1).to_dense().int().tolist()
        [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    """
    counts = check_int_sequence("frames_per_video", frames_per_video, minimum=1)
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    counts_t = torch.tensor(counts, dtype=torch.int64)
    first_frame = torch.cumsum(counts_t, 0) - counts_t
    video_start = torch.repeat_interleave(first_frame, counts_t)  # [num_frames]
    num_frames = int(counts_t.sum())
    frames = torch.arange(num_frames, dtype=torch.int64)
    key = PiecewiseKey.per_frame(frames, p)
    # Two-sided: row intervals [start(f), f] of consecutive frames overlap within a video and
    # touch across a video boundary (start(f + 1) = f + 1), so "any visible" is exact.
    return MaskSpec(
        name="packed-causal-frame",
        params={"frames_per_video": list(counts), "num_patches_per_frame": p},
        q_len=num_frames * p,
        kv_len=num_frames * p,
        mod_factory=lambda device: generate_packed_causal_frame_mask_mod(video_start.to(device), p),
        num_patches_per_frame=p,
        description=f"{len(counts)} packed videos, frame-causal inside each",
        relation=IntervalRelation(
            kv_key=key, q_hi=key, q_lo=PiecewiseKey.per_frame(video_start, p)
        ),
        frame_times=tuple((frames - video_start).tolist()),  # frame index inside its video
    )
