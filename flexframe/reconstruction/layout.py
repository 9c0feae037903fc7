"""`FrameLayout`: which original frames the video tokens follow, and each frame's target.

Without fast/slow sampling the layout is every frame in time order and frame t's target is
frame t+1. With it, the layout is the merged fast/slow sequence (``[slow | fast]`` or
interleaved), and each frame's target is the next frame *of its own stream*: the next slow frame
for a slow frame, the next fast frame for a fast frame. Short clips repeat frames (a stream may
read ``[0, 1, 1, 2]``): the target is then the next *later* frame of the stream, so every copy of
frame 1 predicts frame 2, and no frame is asked to predict itself. A frame has no target when no
later frame follows it in its stream (the last frames of each stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flexframe._checks import check_int
from flexframe.sampling import fast_slow_indices, merge_fast_slow_indices, merge_order


@dataclass(frozen=True)
class FrameLayout:
    """The frames of one clip as the LLM's video tokens must follow them.

    Attributes:
        num_frames: frames in the clip (T).
        frame_indices: ``[F]`` int64, the original frame index of each layout frame; these are
            the timestamps of the ``timestamp-causal`` mask.
        is_fast: ``[F]`` bool, which layout frames belong to the fast stream.
        next_index: ``[F]`` int64, the layout position of each frame's target, -1 for none.

    Example:
        >>> layout = FrameLayout.build(16, fast_slow={"num_fast": 4, "num_slow": 4,
        ...                                           "fast_stride": 1, "slow_stride": 4})
        >>> layout.frame_indices.tolist()
        [0, 4, 8, 12, 12, 13, 14, 15]
        >>> layout.next_index.tolist()
        [1, 2, 3, -1, 5, 6, 7, -1]
    """

    num_frames: int
    frame_indices: torch.Tensor
    is_fast: torch.Tensor
    next_index: torch.Tensor

    @property
    def timestamps(self) -> torch.Tensor:
        """``[F]``: the original frame index of each layout frame."""
        return self.frame_indices

    @property
    def target_mask(self) -> torch.Tensor:
        """``[F]`` bool: which layout frames have a next frame to predict."""
        return self.next_index >= 0

    def __len__(self) -> int:
        return self.frame_indices.numel()

    @property
    def in_time_order(self) -> bool:
        """True when the layout never puts a frame after a later one."""
        return bool((self.frame_indices[1:] >= self.frame_indices[:-1]).all())

    @staticmethod
    def build(
        num_frames: int, fast_slow: dict[str, int] | None = None, merge_strategy: str = "concat"
    ) -> FrameLayout:
        """The layout of a ``num_frames`` clip: all frames, or fast/slow with ``fast_slow``
        holding ``fast_stride``, ``slow_stride``, ``num_fast`` and ``num_slow``."""
        t = check_int("num_frames", num_frames, minimum=1)
        if fast_slow is None:
            frames = torch.arange(t)
            next_index = torch.arange(1, t + 1)
            next_index[-1] = -1
            return FrameLayout(t, frames, torch.zeros(t, dtype=torch.bool), next_index)
        fast_idx, slow_idx = fast_slow_indices(
            t, *(int(fast_slow[k]) for k in ("fast_stride", "slow_stride", "num_fast", "num_slow"))
        )
        frames = merge_fast_slow_indices(fast_idx, slow_idx, merge_strategy)
        is_fast, pos_in_stream = merge_order(fast_idx.numel(), slow_idx.numel(), merge_strategy)
        next_index = torch.full_like(frames, -1)
        for stream in (True, False):
            where = torch.nonzero(is_fast == stream).flatten()
            where = where[torch.argsort(pos_in_stream[where])]  # layout positions in stream order
            # Stream frames never decrease, so the next later frame is the first greater one.
            following = -1
            for k in range(where.numel() - 1, -1, -1):
                here = int(where[k])
                if k + 1 < where.numel() and frames[where[k + 1]] > frames[here]:
                    following = int(where[k + 1])
                next_index[here] = following
        return FrameLayout(t, frames, is_fast, next_index)
