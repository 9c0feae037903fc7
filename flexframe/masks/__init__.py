"""Masks: definitions (one module per family), the registry, the spec and its builders.

Importing this package registers the built-in masks. Each family's ``generate_*`` factory returns
a plain ``mask_mod(b, h, q_idx, kv_idx)`` (True = may attend), as attention-gym's do; the
registered masks (``get_mask``) wrap the same mask_mods with their lengths and closed forms.
"""

from flexframe.masks import chunk, frame, prompt, timestamp, token  # noqa: F401  (registers them)
from flexframe.masks.blocks import (
    BlockSparsity,
    block_grids,
    dense_from_block_mask,
    grids_from_block_mask,
)
from flexframe.masks.cache import (
    block_mask_cache_info,
    clear_block_mask_cache,
    set_block_mask_cache_size,
)
from flexframe.masks.chunk import generate_chunk_causal_mask_mod, generate_teacher_forcing_mask_mod
from flexframe.masks.closed_form import Interval, IntervalRelation
from flexframe.masks.frame import (
    create_frame_position_ids,
    generate_causal_frame_mask_mod,
    generate_fast_slow_mask_mod,
    generate_packed_causal_frame_mask_mod,
    generate_sliding_window_mask_mod,
)
from flexframe.masks.piecewise import PiecewiseKey
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
from flexframe.masks.spec import MAX_DENSE_BYTES, MaskSpec
from flexframe.masks.timestamp import generate_timestamp_causal_mask_mod
from flexframe.masks.token import causal_mask_mod, full_mask_mod

__all__ = [
    "MAX_DENSE_BYTES",
    "REGISTRY",
    "BlockSparsity",
    "Interval",
    "IntervalRelation",
    "MaskEntry",
    "MaskParameter",
    "MaskRegistry",
    "MaskSpec",
    "PiecewiseKey",
    "block_grids",
    "block_mask_cache_info",
    "causal_mask_mod",
    "clear_block_mask_cache",
    "create_frame_position_ids",
    "dense_from_block_mask",
    "full_mask_mod",
    "generate_causal_frame_mask_mod",
    "generate_chunk_causal_mask_mod",
    "generate_fast_slow_mask_mod",
    "generate_packed_causal_frame_mask_mod",
    "generate_sliding_window_mask_mod",
    "generate_teacher_forcing_mask_mod",
    "generate_timestamp_causal_mask_mod",
    "get_mask",
    "get_mask_entry",
    "grids_from_block_mask",
    "list_masks",
    "register_mask",
    "set_block_mask_cache_size",
]
