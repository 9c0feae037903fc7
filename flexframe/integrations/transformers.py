"""Frame masks and the reconstruction loss inside HuggingFace video LLMs (``flexframe[hf]``).

Three lines turn a model's text decoder to frame-level attention::

    from flexframe.integrations.transformers import enable_frame_masks
    handle = enable_frame_masks(model, "causal-frame")     # or "sliding-window", ...
    out = model(**inputs); tokens = model.generate(**inputs)   # unchanged calls
    handle.remove()                                        # the stock model again

and :func:`reconstruction_from_model` builds the next-frame reconstruction loss on the model's
own frames. The pieces:

- :mod:`~flexframe.integrations.hf_layouts`: one layout adapter per family (where the frames of a
  prompt are);
- :mod:`~flexframe.integrations.hf_masks`: :func:`enable_frame_masks`, the hooks and the
  registered flex attention function;
- :mod:`~flexframe.integrations.hf_loss`: the loss on a model;
- :mod:`~flexframe.integrations.hf_tiny`: tiny random-weight models for tests and docs.

Tested with transformers 5.17 and 5.24.

Example:
    >>> from flexframe.integrations.transformers import enable_frame_masks, tiny_model
    >>> model, inputs = tiny_model("llava_onevision")
    >>> handle = enable_frame_masks(model, "sliding-window", window_size=1, backend="sdpa")
    >>> model(**inputs).logits.shape
    torch.Size([1, 15, 128])
    >>> handle.remove()
"""

from __future__ import annotations

from flexframe.integrations.hf_layouts import (
    SUPPORTED_FAMILIES,
    PromptVideos,
    VideoTokens,
    family_of,
    read_prompt,
    text_decoder,
)
from flexframe.integrations.hf_loss import ModelReconstruction, reconstruction_from_model
from flexframe.integrations.hf_masks import (
    FLEX_ATTENTION,
    FRAME_MASKS,
    HF_BACKENDS,
    FrameMaskHandle,
    check_padding_mask,
    enable_frame_masks,
    flexframe_flex_attention,
    prompt_attention_mask,
)
from flexframe.integrations.hf_tiny import TinyInputs, qwen_patchify, tiny_model

__all__ = [
    "FLEX_ATTENTION",
    "FRAME_MASKS",
    "HF_BACKENDS",
    "SUPPORTED_FAMILIES",
    "FrameMaskHandle",
    "ModelReconstruction",
    "PromptVideos",
    "TinyInputs",
    "VideoTokens",
    "check_padding_mask",
    "enable_frame_masks",
    "family_of",
    "flexframe_flex_attention",
    "prompt_attention_mask",
    "qwen_patchify",
    "read_prompt",
    "reconstruction_from_model",
    "text_decoder",
    "tiny_model",
]
