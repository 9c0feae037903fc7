"""flexframe: frame-level attention masks for video models, on FlexAttention.

The public surface: masks by name (``get_mask``, ``list_masks``, ``register_mask``,
``MaskSpec``) with the seed-compatible ``FrameLevelMaskGenerator``, and fast/slow frame sampling
(``fast_slow_indices``, ``VideoFrameSampler``, presets).
"""

from flexframe.masks import (
    FrameLevelMaskGenerator,
    MaskEntry,
    MaskSpec,
    block_mask_cache_info,
    clear_block_mask_cache,
    create_frame_position_ids,
    get_mask,
    get_mask_entry,
    list_masks,
    register_mask,
    set_block_mask_cache_size,
)
from flexframe.nn import FlexFrameDecoder, FramePositions
from flexframe.reconstruction import (
    AutoregressiveReconstructionConfig,
    create_autoregressive_reconstruction_module,
)
from flexframe.sampling import (
    FAST_SLOW_PRESETS,
    FastSlowPreset,
    VideoFrameSampler,
    fast_slow_indices,
    get_fast_slow_preset,
    merge_fast_slow_frames,
    merge_fast_slow_indices,
    merge_order,
    preset_for_num_frames,
    sample_fast_slow_frames,
)
from flexframe.viz import (
    compare_masks,
    mask_summary,
    plot_block_sparsity,
    plot_frame_timeline,
    visualize_mask,
)

__version__ = "0.1.0"

__all__ = [
    "compare_masks",
    "mask_summary",
    "plot_block_sparsity",
    "plot_frame_timeline",
    "visualize_mask",
    "AutoregressiveReconstructionConfig",
    "create_autoregressive_reconstruction_module",
    "FAST_SLOW_PRESETS",
    "FastSlowPreset",
    "VideoFrameSampler",
    "fast_slow_indices",
    "get_fast_slow_preset",
    "merge_fast_slow_frames",
    "merge_fast_slow_indices",
    "merge_order",
    "preset_for_num_frames",
    "sample_fast_slow_frames",
    "FlexFrameDecoder",
    "FramePositions",
    "FrameLevelMaskGenerator",
    "MaskEntry",
    "MaskSpec",
    "block_mask_cache_info",
    "clear_block_mask_cache",
    "create_frame_position_ids",
    "get_mask",
    "get_mask_entry",
    "list_masks",
    "register_mask",
    "set_block_mask_cache_size",
]
