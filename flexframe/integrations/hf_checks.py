"""Checks of what a frame-masked HuggingFace model is given: its padding mask and positions.

:func:`~flexframe.integrations.hf_masks.enable_frame_masks` builds the attention pattern
itself, so the model takes the 2-D padding mask ``[B, L]`` (1 = token, 0 = padding) or none;
anything else is refused with what it would have done. ``flexframe.integrations.hf_masks``
re-exports :func:`check_padding_mask`.

Example:
    >>> check_padding_mask(torch.tensor([[0, 1, 1]]), batch=1, length=3).tolist()
    [[0, 1, 1]]
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.attention.flex_attention import BlockMask

__all__ = ["check_padding_mask"]

_M_ROPE = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
"""The families whose video tokens are placed with M-RoPE ([3, B, L] positions)."""


def check_padding_mask(
    attention_mask: object, batch: int, length: int, backend: str = "sdpa"
) -> torch.Tensor | None:
    """The 2-D padding mask ``[batch, length]`` of 0/1 a frame-masked model takes, or None.

    Anything else is refused with what it would have done: a 4-D mask (eager adds it to the
    scores, so a bool one adds 0/1 and masks nothing; flex crashes on a tensor; and the model's
    M-RoPE positions are computed from the 2-D mask), a BlockMask, a 2-D ``[L, L]`` pattern
    (transformers reads every 2-D mask as padding) or a 2-D mask of other values than 0 and 1.

    Example:
        >>> check_padding_mask(torch.ones(3, 3).tril(), batch=1, length=3)
        Traceback (most recent call last):
        ...
        ValueError: attention_mask of shape (3, 3) is not the [batch, length] = [1, 3] ...
    """
    if attention_mask is None:
        return None
    why = (
        "enable_frame_masks builds the attention pattern itself: pass the 2-D padding mask "
        "(1 = token, 0 = padding) or none, and choose the pattern with enable_frame_masks(model, "
        "mask=...)"
    )
    if isinstance(attention_mask, BlockMask):
        raise TypeError(f"attention_mask is a BlockMask; {why}")
    if isinstance(attention_mask, Mapping):
        raise TypeError(
            "attention_mask is a mapping of prepared per-layer masks (what generate builds for a "
            "compilable cache such as a static one on a model it does not know is frame-masked: "
            f"enable the frame masks on the model generate is called on); {why}"
        )
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a tensor, got {type(attention_mask).__name__}")
    if attention_mask.dim() == 4:
        trap = {
            "eager": "eager attention adds a 4-D mask to the scores, so a bool mask would add 0/1 "
            "and mask nothing"
            if attention_mask.dtype == torch.bool
            else "eager attention adds it to the scores",
            "flex": "flex attention needs a BlockMask; a 4-D tensor is read as a score bias (a "
            "bool one has crashed the process)",
        }.get(backend, "sdpa reads it as the whole pattern")
        raise ValueError(
            f"attention_mask is a 4-D {attention_mask.dtype} tensor of shape "
            f"{tuple(attention_mask.shape)}: {trap}, and the model computes its positions "
            f"(M-RoPE) from a 2-D mask; {why}"
        )
    if attention_mask.dim() != 2 or tuple(attention_mask.shape) != (batch, length):
        looks = " (it looks like an [L, L] attention pattern)" if (
            attention_mask.dim() == 2 and attention_mask.shape[0] == attention_mask.shape[1]
        ) else ""  # fmt: skip
        raise ValueError(
            f"attention_mask of shape {tuple(attention_mask.shape)} is not the [batch, length] = "
            f"[{batch}, {length}] padding mask{looks}: transformers reads a 2-D mask as padding; "
            f"{why}"
        )
    values = attention_mask if attention_mask.dtype == torch.bool else attention_mask.detach()
    if values.dtype != torch.bool and not bool(((values == 0) | (values == 1)).all()):
        odd = values[(values != 0) & (values != 1)].flatten()[:3].tolist()
        raise ValueError(
            f"attention_mask holds {odd} besides 0 and 1: a 2-D mask is a padding mask (1 = "
            f"token, 0 = padding), not an additive bias; {why}"
        )
    return attention_mask


def _check_positions(position_ids: object, family: str, has_video: bool) -> None:
    if position_ids is None or family not in _M_ROPE or not has_video:
        return
    if isinstance(position_ids, torch.Tensor) and position_ids.dim() == 2:
        raise ValueError(
            f"position_ids of shape {tuple(position_ids.shape)} give the video tokens 1-D "
            f"positions, but {family} places them with M-RoPE ([3, B, L] from the model's "
            "get_rope_index): leave position_ids out and the model computes them"
        )
