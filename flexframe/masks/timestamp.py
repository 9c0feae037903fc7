"""The timestamp-causal mask: frames in any order, visibility by the time each frame shows.

This is the leak-free mask for fast/slow sequences: a merged ``[slow | fast]`` or interleaved
sequence is not in time order, so "earlier in the sequence" is not "earlier in time". Giving each
frame its original frame index as timestamp restores the right rule: a query sees a key iff the
key's frame was shown no later than the query's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flexframe._checks import check_choice, check_int, check_int_sequence
from flexframe._vocab import WITHIN_FRAME, WithinFrame
from flexframe.masks.closed_form import IntervalRelation
from flexframe.masks.piecewise import PiecewiseKey
from flexframe.masks.registry import register_mask
from flexframe.masks.spec import MaskMod, MaskSpec


def generate_timestamp_causal_mask_mod(
    frame_timestamps: torch.Tensor, num_patches_per_frame: int, within_frame: WithinFrame = "full"
) -> MaskMod:
    """A mask_mod: key visible iff its frame's timestamp is <= the query frame's.

    Args:
        frame_timestamps: ``[num_frames]`` int64 on the device flex_attention runs on.
        num_patches_per_frame: tokens per frame.
        within_frame: ``"full"``: tokens of equal timestamp all see each other; ``"causal"``:
            they see each other in token order only.

    Example:
        >>> mod = generate_timestamp_causal_mask_mod(torch.tensor([2, 0, 1]), 1)
        >>> [bool(mod(0, 0, torch.tensor(0), torch.tensor(k))) for k in range(3)]
        [True, True, True]
    """
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    check_choice("within_frame", within_frame, WITHIN_FRAME)
    ts = frame_timestamps
    if within_frame == "full":

        def timestamp_causal(b, h, q_idx, kv_idx):
            return ts[kv_idx // p] <= ts[q_idx // p]

    else:

        def timestamp_causal(b, h, q_idx, kv_idx):
            q_ts = ts[q_idx // p]
            kv_ts = ts[kv_idx // p]
            return (kv_ts < q_ts) | ((kv_ts == q_ts) & (kv_idx <= q_idx))

    return timestamp_causal


@register_mask("timestamp-causal")
def timestamp_causal_mask(
    timestamps: Sequence[int],
    num_patches_per_frame: int,
    within_frame: WithinFrame = "full",
    num_frames: int | None = None,
) -> MaskSpec:
    """A token sees a key iff the key's frame timestamp is <= its own frame's (any frame order).

    ``timestamps`` holds one integer per frame of the sequence, typically the original frame
    index of each sampled frame, in sequence order. It works for any order: ``[slow | fast]``
    concatenated, interleaved, or with a frame present twice (both copies share a timestamp and,
    with ``within_frame="full"``, see each other). With ``within_frame="causal"``, tokens of
    equal timestamp see each other in token order only: over a fast/slow sequence this is the
    token-level causal baseline laid out in time order. ``num_frames``, when given, is checked
    against ``len(timestamps)`` (a guard for configs that state the frame count separately).

    Example:
        >>> # slow frames shown at t=0 and t=2, then fast frames at t=1 and t=2
        >>> timestamp_causal_mask([0, 2, 1, 2], 1).to_dense().int().tolist()
        [[1, 0, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0], [1, 1, 1, 1]]
    """
    ts = check_int_sequence("timestamps", timestamps)
    p = check_int("num_patches_per_frame", num_patches_per_frame, minimum=1)
    if num_frames is not None:
        num_frames = check_int("num_frames", num_frames, minimum=1)
        if num_frames != len(ts):
            raise ValueError(
                f"timestamps must hold one value per frame: num_frames={num_frames} but "
                f"len(timestamps)={len(ts)} ({list(ts)!r})"
            )
    check_choice("within_frame", within_frame, WITHIN_FRAME)
    ts_t = torch.tensor(ts, dtype=torch.int64)
    num_frames = len(ts)
    n = num_frames * p
    # Ranks keep the closed-form keys small whatever the timestamps' range.
    rank = torch.unique(ts_t, return_inverse=True)[1]
    if within_frame == "full":
        key = PiecewiseKey.per_frame(rank, p)
    else:
        # key = rank * N + position orders tokens by (timestamp, position): exactly this mask.
        starts = torch.arange(num_frames, dtype=torch.int64) * p
        key = PiecewiseKey(starts, rank * n, 1, n)
    return MaskSpec(
        name="timestamp-causal",
        params={"timestamps": list(ts), "num_patches_per_frame": p, "within_frame": within_frame},
        q_len=n,
        kv_len=n,
        mod_factory=lambda device: generate_timestamp_causal_mask_mod(
            ts_t.to(device), p, within_frame
        ),
        num_patches_per_frame=p,
        description="keys whose frame timestamp is <= the query's (leak-free for fast/slow)",
        relation=IntervalRelation(kv_key=key, q_hi=key),
        frame_times=tuple(ts),
    )
