"""The seed design's API: `FrameLevelMaskGenerator` and `create_frame_position_ids`.

A thin front over the registry: each method returns the dense mask of the registry mask of the
same name, never a second implementation.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from flexframe._checks import check_int
from flexframe.masks.registry import get_mask


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


class FrameLevelMaskGenerator:
    """Dense frame-level masks by the seed design's method names (True = may attend).

    ``nn.TransformerDecoder`` wants the opposite convention (True = masked): pass ``~mask``.

    Example:
        >>> gen = FrameLevelMaskGenerator()
        >>> gen.create_causal_frame_mask(num_frames=2, num_patches_per_frame=2).int().tolist()
        [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    """

    def create_causal_frame_mask(
        self, num_frames: int, num_patches_per_frame: int, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``[N, N]`` bool mask of ``causal-frame``, N = num_frames * num_patches_per_frame."""
        spec = get_mask(
            "causal-frame", num_frames=num_frames, num_patches_per_frame=num_patches_per_frame
        )
        return spec.to_dense(device)

    def create_sliding_window_frame_mask(
        self,
        num_frames: int,
        num_patches_per_frame: int,
        window_size: int,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """``[N, N]`` bool mask of ``sliding-window``: frame f sees frames f-window_size .. f."""
        spec = get_mask(
            "sliding-window",
            num_frames=num_frames,
            num_patches_per_frame=num_patches_per_frame,
            window_size=window_size,
        )
        return spec.to_dense(device)

    def create_fast_slow_frame_mask(
        self,
        num_fast_frames: int,
        num_slow_frames: int,
        num_patches_per_frame: int,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """``[N, N]`` bool mask of ``fast-slow`` (``[slow | fast]``; leaks the future, see
        :func:`flexframe.masks.frame.fast_slow_mask`)."""
        spec = get_mask(
            "fast-slow",
            num_fast_frames=num_fast_frames,
            num_slow_frames=num_slow_frames,
            num_patches_per_frame=num_patches_per_frame,
        )
        return spec.to_dense(device)

    def visualize_mask(
        self,
        mask: Any,
        title: str = "My Frame Mask",
        path: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> Any:
        """Draw ``mask`` (dense tensor, MaskSpec or BlockMask) and save it as a PNG named after
        the title (``"My Frame Mask"`` -> ``my_frame_mask.png``); see
        :func:`flexframe.viz.visualize_mask`. Returns the matplotlib figure."""
        from flexframe.viz import visualize_mask

        return visualize_mask(mask, title, path, **kwargs)

    def create_frame_position_ids(
        self, num_frames: int, num_patches_per_frame: int, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """See :func:`create_frame_position_ids`."""
        return create_frame_position_ids(num_frames, num_patches_per_frame, device)
