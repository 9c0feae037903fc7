"""flexframe: frame-level attention for video models, on FlexAttention.

The public surface, each name importable from ``flexframe``:

- masks by name: ``get_mask``, ``list_masks``, ``register_mask``, ``get_mask_entry``,
  ``MaskSpec``, the ``generate_*`` mask_mod factories and the BlockMask cache controls;
- fast/slow sampling: ``fast_slow_indices``, ``sample_fast_slow_frames``, the merges, presets;
- the decoder: ``FlexFrameDecoder``, ``DecoderConfig``, ``FramePositions``, and streaming
  inference with ``FrameKVCache`` (``streaming_rule`` says how a mask streams);
- the loss: ``create_autoregressive_reconstruction_module``,
  ``AutoregressiveReconstructionConfig``;
- pictures: ``visualize_mask``, ``plot_block_sparsity``, ``compare_masks``, ``mask_summary``,
  ``plot_frame_timeline`` (need matplotlib: ``pip install "flexframe[viz]"``);
- the seed design's classes: ``FrameLevelMaskGenerator``, ``VideoFrameSampler``.

Names load on first use, so ``import flexframe`` and ``import flexframe.masks`` cost torch and
NumPy only; matplotlib, YAML and the bundled data load when a picture, a config file or a clip
is asked for.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from flexframe._version import __version__ as __version__

_EXPORTS: dict[str, str] = {
    # masks
    "MaskEntry": "flexframe.masks",
    "MaskSpec": "flexframe.masks",
    "block_mask_cache_info": "flexframe.masks",
    "clear_block_mask_cache": "flexframe.masks",
    "create_frame_position_ids": "flexframe.masks",
    "generate_causal_frame_mask_mod": "flexframe.masks",
    "generate_chunk_causal_mask_mod": "flexframe.masks",
    "generate_fast_slow_mask_mod": "flexframe.masks",
    "generate_packed_causal_frame_mask_mod": "flexframe.masks",
    "generate_sliding_window_mask_mod": "flexframe.masks",
    "generate_teacher_forcing_mask_mod": "flexframe.masks",
    "generate_timestamp_causal_mask_mod": "flexframe.masks",
    "get_mask": "flexframe.masks",
    "get_mask_entry": "flexframe.masks",
    "list_masks": "flexframe.masks",
    "register_mask": "flexframe.masks",
    "set_block_mask_cache_size": "flexframe.masks",
    # sampling
    "FAST_SLOW_PRESETS": "flexframe.sampling",
    "FastSlowPreset": "flexframe.sampling",
    "fast_slow_indices": "flexframe.sampling",
    "get_fast_slow_preset": "flexframe.sampling",
    "merge_fast_slow_frames": "flexframe.sampling",
    "merge_fast_slow_indices": "flexframe.sampling",
    "merge_order": "flexframe.sampling",
    "preset_for_num_frames": "flexframe.sampling",
    "sample_fast_slow_frames": "flexframe.sampling",
    # the decoder
    "DecoderConfig": "flexframe.nn",
    "FlexFrameDecoder": "flexframe.nn",
    "FrameKVCache": "flexframe.nn",
    "FramePositions": "flexframe.nn",
    "streaming_rule": "flexframe.nn",
    # the loss
    "AutoregressiveReconstructionConfig": "flexframe.reconstruction",
    "create_autoregressive_reconstruction_module": "flexframe.reconstruction",
    # pictures
    "compare_masks": "flexframe.viz",
    "mask_summary": "flexframe.viz",
    "plot_block_sparsity": "flexframe.viz",
    "plot_frame_timeline": "flexframe.viz",
    "visualize_mask": "flexframe.viz",
    # the seed design's classes
    "FrameLevelMaskGenerator": "flexframe.compat",
    "VideoFrameSampler": "flexframe.compat",
}

__all__ = [
    "AutoregressiveReconstructionConfig",
    "DecoderConfig",
    "FAST_SLOW_PRESETS",
    "FastSlowPreset",
    "FlexFrameDecoder",
    "FrameKVCache",
    "FrameLevelMaskGenerator",
    "FramePositions",
    "MaskEntry",
    "MaskSpec",
    "VideoFrameSampler",
    "block_mask_cache_info",
    "clear_block_mask_cache",
    "compare_masks",
    "create_autoregressive_reconstruction_module",
    "create_frame_position_ids",
    "fast_slow_indices",
    "generate_causal_frame_mask_mod",
    "generate_chunk_causal_mask_mod",
    "generate_fast_slow_mask_mod",
    "generate_packed_causal_frame_mask_mod",
    "generate_sliding_window_mask_mod",
    "generate_teacher_forcing_mask_mod",
    "generate_timestamp_causal_mask_mod",
    "get_fast_slow_preset",
    "get_mask",
    "get_mask_entry",
    "list_masks",
    "mask_summary",
    "merge_fast_slow_frames",
    "merge_fast_slow_indices",
    "merge_order",
    "plot_block_sparsity",
    "plot_frame_timeline",
    "preset_for_num_frames",
    "register_mask",
    "sample_fast_slow_frames",
    "set_block_mask_cache_size",
    "streaming_rule",
    "visualize_mask",
]

if TYPE_CHECKING:
    from flexframe.compat import FrameLevelMaskGenerator, VideoFrameSampler
    from flexframe.masks import (
        MaskEntry,
        MaskSpec,
        block_mask_cache_info,
        clear_block_mask_cache,
        create_frame_position_ids,
        generate_causal_frame_mask_mod,
        generate_chunk_causal_mask_mod,
        generate_fast_slow_mask_mod,
        generate_packed_causal_frame_mask_mod,
        generate_sliding_window_mask_mod,
        generate_teacher_forcing_mask_mod,
        generate_timestamp_causal_mask_mod,
        get_mask,
        get_mask_entry,
        list_masks,
        register_mask,
        set_block_mask_cache_size,
    )
    from flexframe.nn import (
        DecoderConfig,
        FlexFrameDecoder,
        FrameKVCache,
        FramePositions,
        streaming_rule,
    )
    from flexframe.reconstruction import (
        AutoregressiveReconstructionConfig,
        create_autoregressive_reconstruction_module,
    )
    from flexframe.sampling import (
        FAST_SLOW_PRESETS,
        FastSlowPreset,
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flexframe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _register_jupyter_display() -> None:
    """Show a ``MaskSpec`` in Jupyter as its picture and summary, when IPython is running.

    The formatters are registered by the class's name, so nothing is imported until a spec is
    shown; the pictures then load ``flexframe.viz`` (matplotlib).
    """
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    if shell is None:
        return
    formatters = shell.display_formatter.formatters

    def png(spec: Any) -> bytes | None:
        from flexframe.viz import mask_to_png

        try:
            return mask_to_png(spec)
        except ValueError:  # too large to draw here (the summary says why): no picture
            return None

    def markdown(spec: Any) -> str:
        from flexframe.viz import mask_summary

        return "```\n" + mask_summary(spec) + "\n```"

    formatters["image/png"].for_type_by_name("flexframe.masks.spec", "MaskSpec", png)
    formatters["text/markdown"].for_type_by_name("flexframe.masks.spec", "MaskSpec", markdown)


_register_jupyter_display()
