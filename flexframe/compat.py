"""The seed design's classes: thin fronts over the registry and the sampler functions.

``FrameLevelMaskGenerator`` and ``VideoFrameSampler`` keep the seed design's method names; each
method forwards to the one implementation (a registry mask, a ``flexframe.sampling`` function),
never a second one. Import them from ``flexframe``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from flexframe._vocab import (
    DEFAULT_FAST_STRIDE,
    DEFAULT_NUM_FAST,
    DEFAULT_NUM_SLOW,
    DEFAULT_SLOW_STRIDE,
)
from flexframe.masks import create_frame_position_ids, get_mask
from flexframe.sampling import (
    merge_fast_slow_frames,
    merge_fast_slow_indices,
    sample_fast_slow_frames,
)

__all__ = ["FrameLevelMaskGenerator", "VideoFrameSampler"]


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
    ) -> Tensor:
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
    ) -> Tensor:
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
    ) -> Tensor:
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
        """Draw ``mask`` (dense tensor, MaskSpec or BlockMask) and save it as a PNG: at ``path``,
        or, as the seed design does, under the title (``"My Frame Mask"`` ->
        ``my_frame_mask.png``); see :func:`flexframe.viz.visualize_mask`. Returns the figure."""
        from flexframe.viz import filename_for_title, visualize_mask

        return visualize_mask(mask, title, path or filename_for_title(title), **kwargs)

    def create_frame_position_ids(
        self, num_frames: int, num_patches_per_frame: int, device: torch.device | str | None = None
    ) -> Tensor:
        """See :func:`flexframe.create_frame_position_ids`."""
        return create_frame_position_ids(num_frames, num_patches_per_frame, device)


class VideoFrameSampler:
    """Seed-compatible, stateless front over ``flexframe.sampling``.

    Every method forwards to the module function of the same name (``merge_fast_slow_timestamps``
    to :func:`flexframe.merge_fast_slow_indices`), so there is one implementation.

    Example:
        >>> sampler = VideoFrameSampler()
        >>> video = torch.arange(16.0).view(1, 16, 1, 1, 1)  # pixel value = frame number
        >>> fast, slow, fast_idx, slow_idx = sampler.sample_fast_slow_frames(
        ...     video, return_indices=True
        ... )
        >>> fast.shape, slow.shape
        (torch.Size([1, 8, 1, 1, 1]), torch.Size([1, 8, 1, 1, 1]))
        >>> sampler.merge_fast_slow_frames(fast, slow).shape
        torch.Size([1, 16, 1, 1, 1])
        >>> sampler.merge_fast_slow_timestamps(fast_idx, slow_idx).tolist()
        [0, 2, 4, 6, 8, 10, 12, 14, 8, 9, 10, 11, 12, 13, 14, 15]
    """

    def sample_fast_slow_frames(
        self,
        video_frames: Tensor,
        fast_stride: int = DEFAULT_FAST_STRIDE,
        slow_stride: int = DEFAULT_SLOW_STRIDE,
        num_fast: int = DEFAULT_NUM_FAST,
        num_slow: int = DEFAULT_NUM_SLOW,
        return_indices: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor, Tensor]:
        """Gather fast and slow frames of ``[B, T, C, H, W]``; see
        :func:`flexframe.sample_fast_slow_frames`."""
        return sample_fast_slow_frames(
            video_frames, fast_stride, slow_stride, num_fast, num_slow, return_indices
        )

    def merge_fast_slow_frames(
        self, fast: Tensor, slow: Tensor, merge_strategy: str = "concat"
    ) -> Tensor:
        """Merge ``[B, F, C, H, W]`` and ``[B, S, C, H, W]``; see
        :func:`flexframe.merge_fast_slow_frames`."""
        return merge_fast_slow_frames(fast, slow, merge_strategy)

    def merge_fast_slow_timestamps(
        self, fast_idx: Tensor, slow_idx: Tensor, merge_strategy: str = "concat"
    ) -> Tensor:
        """Timestamps ``[F + S]`` of the merged frames; see
        :func:`flexframe.merge_fast_slow_indices`."""
        return merge_fast_slow_indices(fast_idx, slow_idx, merge_strategy)
