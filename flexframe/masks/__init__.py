"""Masks: definitions (one module per family), the registry, the spec and its builders.

Importing this package registers the built-in masks.
"""

from flexframe.masks import frame, timestamp, token  # noqa: F401  (registers the built-ins)
from flexframe.masks.closed_form import IntervalRelation, PiecewiseKey
from flexframe.masks.generator import FrameLevelMaskGenerator, create_frame_position_ids
from flexframe.masks.registry import (
    REGISTRY,
    MaskEntry,
    MaskParameter,
    MaskRegistry,
    get_mask,
    get_mask_entry,
    list_masks,
    register_mask,
)
from flexframe.masks.spec import (
    MaskSpec,
    block_mask_cache_info,
    clear_block_mask_cache,
    set_block_mask_cache_size,
)

__all__ = [
    "REGISTRY",
    "FrameLevelMaskGenerator",
    "IntervalRelation",
    "MaskEntry",
    "MaskParameter",
    "MaskRegistry",
    "MaskSpec",
    "PiecewiseKey",
    "block_mask_cache_info",
    "clear_block_mask_cache",
    "create_frame_position_ids",
    "get_mask",
    "get_mask_entry",
    "list_masks",
    "register_mask",
    "set_block_mask_cache_size",
]
