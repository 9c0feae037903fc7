"""flexframe: frame-level attention masks for video models, on FlexAttention.

The public surface, in the order data flows: masks by name (``get_mask``, ``list_masks``,
``register_mask``, ``MaskSpec``) and the seed-compatible ``FrameLevelMaskGenerator``.
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

__version__ = "0.1.0"

__all__ = [
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
