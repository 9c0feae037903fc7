"""Tiny random-weight video LLMs of each supported family, with a prompt, for tests and docs.

``tiny_model("qwen2_vl")`` builds a two-layer model from a config (nothing is downloaded) and
inputs as the family's processor would give them: ``text | video | text`` per row, the video's
pixels laid out the family's way, optional left or right padding. Tests, the README and the
examples run on these in seconds on a CPU.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from flexframe._checks import check_choice, check_int
from flexframe.integrations.hf_layouts import (
    PROCESSOR_NORMALIZATION,
    SUPPORTED_FAMILIES,
    llava_onevision_tokens_per_frame,
)

# Token ids of the tiny vocabulary (128 tokens): text uses 1..63.
VIDEO, IMAGE, START, END, NEWLINE = 101, 100, 102, 103, 104
_TEXT_IDS = range(1, 64)


def _text_config(size: int, **extra: Any) -> dict[str, Any]:
    return {
        "vocab_size": 128,
        "hidden_size": 4 * size,
        "intermediate_size": 8 * size,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        **extra,
    }


def _qwen_vision(family: str, width: int) -> dict[str, Any]:
    common = {"depth": 1, "num_heads": 2, "patch_size": 2, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "in_channels": 3}  # fmt: skip
    if family == "qwen2_vl":
        return {**common, "embed_dim": 16, "hidden_size": width}
    if family == "qwen2_5_vl":
        return {**common, "hidden_size": 16, "intermediate_size": 32, "out_hidden_size": width,
                "window_size": 8, "fullatt_block_indexes": [0]}  # fmt: skip
    return {**common, "hidden_size": 16, "intermediate_size": 32, "out_hidden_size": width,
            "num_position_embeddings": 16, "deepstack_visual_indexes": [0]}  # fmt: skip


def _config(family: str, head_dim: int = 8):
    import transformers

    half = head_dim // 2  # M-RoPE sections: temporal, height, width, summing to head_dim / 2
    sections = [half // 4, half // 4, half - 2 * (half // 4)]
    mrope = {"rope_type": "default", "mrope_section": sections, "rope_theta": 10000.0}
    ids: dict[str, Any] = {"image_token_id": IMAGE, "video_token_id": VIDEO}
    if family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        cls = {
            "qwen2_vl": transformers.Qwen2VLConfig,
            "qwen2_5_vl": transformers.Qwen2_5_VLConfig,
            "qwen3_vl": transformers.Qwen3VLConfig,
        }[family]
        text = _text_config(head_dim, rope_parameters=mrope)
        if family == "qwen3_vl":
            text["head_dim"] = head_dim
            text["rope_parameters"] = {**mrope, "mrope_interleaved": True}
        return cls(
            text_config=text,
            vision_config=_qwen_vision(family, 4 * head_dim),
            vision_start_token_id=START,
            vision_end_token_id=END,
            **ids,
        )
    if family == "llava_onevision":
        return transformers.LlavaOnevisionConfig(
            text_config={"model_type": "qwen2", **_text_config(head_dim)},
            vision_config={"model_type": "siglip_vision_model", "hidden_size": 16,
                           "intermediate_size": 32, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "image_size": 8, "patch_size": 2},
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            image_grid_pinpoints=[[8, 8]],
            **ids,
        )  # fmt: skip
    return transformers.SmolVLMConfig(
        text_config={"model_type": "llama", **_text_config(head_dim, head_dim=head_dim)},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 8, "patch_size": 2},
        scale_factor=2,
        image_token_id=IMAGE,
    )  # fmt: skip


def _model_class(family: str):
    import transformers

    return {
        "qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
        "qwen3_vl": transformers.Qwen3VLForConditionalGeneration,
        "llava_onevision": transformers.LlavaOnevisionForConditionalGeneration,
        "smolvlm": transformers.SmolVLMForConditionalGeneration,
    }[family]


def qwen_patchify(video: torch.Tensor, patch: int, merge: int, temporal: int) -> torch.Tensor:
    """``[T, C, H, W]`` pixels -> Qwen's flattened patches ``[t * h * w, C * temporal * patch**2]``
    (the order of the Qwen2-VL video processor; an odd T repeats the last frame, as it does).

    Example:
        >>> qwen_patchify(torch.rand(4, 3, 8, 8), patch=2, merge=2, temporal=2).shape
        torch.Size([32, 24])
    """
    if pad := -video.shape[0] % temporal:
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    t, c, h, w = video.shape
    gt, gh, gw = t // temporal, h // patch, w // patch
    patches = video.reshape(gt, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(gt * gh * gw, c * temporal * patch * patch)


def _tokens(count: int, gen: torch.Generator) -> list[int]:
    return torch.randint(_TEXT_IDS.start, _TEXT_IDS.stop, (count,), generator=gen).tolist()


def tiny_model(
    family: str = "qwen2_vl",
    *,
    batch: int = 1,
    frames: int = 2,
    text: tuple[int, int] = (3, 3),
    padding: str = "none",
    attn_implementation: str = "sdpa",
    seed: int = 0,
    head_dim: int = 8,
) -> tuple[nn.Module, TinyInputs]:
    """A two-layer random-weight model of ``family`` and a batch of ``text | video | text``.

    Args:
        family: one of ``SUPPORTED_FAMILIES``.
        batch: rows; row ``b`` has ``b`` more text tokens before its video than row 0, so the
            rows differ in length and ``padding`` pads them.
        frames: the LLM's frames per video (Qwen: temporal patches, 2 raw frames each).
        text: text tokens before and after the video in row 0.
        padding: ``"none"`` (only with ``batch=1``), ``"left"`` or ``"right"``.
        attn_implementation: the model's attention (``"sdpa"`` or ``"eager"``).
        seed: the weights' and the inputs' seed.
        head_dim: the text decoder's head size (4 heads, 2 key/value heads); FlexAttention needs
            at least 16 on a GPU and 32 on the CPU (flexframe refuses less there: torch's CPU
            kernel is wrong below it).

    Returns:
        ``(model, inputs)``: the model in eval mode and a dict of inputs for ``model(**inputs)``
        whose ``video`` attribute holds the raw clips ``[videos, T, 3, 8, 8]`` in ``[0, 1]``
        that the pixels were made from (normalised with ``PROCESSOR_NORMALIZATION``, laid out
        as the family's processor does; the reconstruction loss takes the raw clips).

    Example:
        >>> model, inputs = tiny_model("qwen2_vl")
        >>> model(**inputs).logits.shape, inputs.video.shape
        (torch.Size([1, 16, 128]), torch.Size([1, 4, 3, 8, 8]))
    """
    check_choice("family", family, SUPPORTED_FAMILIES)
    check_choice("padding", padding, ("none", "left", "right"))
    b, f = check_int("batch", batch, minimum=1), check_int("frames", frames, minimum=1)
    if padding == "none" and b > 1:
        raise ValueError("rows of different lengths need padding='left' or 'right'")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    config = _config(family, check_int("head_dim", head_dim, minimum=4))
    model = _model_class(family)._from_config(config, attn_implementation=attn_implementation)
    model = model.eval()
    temporal = 2 if family.startswith("qwen") else 1
    video = torch.rand(b, f * temporal, 3, 8, 8, generator=gen)
    rows = []
    p = 4  # every tiny family: 4 tokens a frame
    for r in range(b):
        before, after = _tokens(text[0] + r, gen), _tokens(text[1], gen)
        if family == "qwen3_vl":
            body = []
            for k in range(f):
                body += [60 + k % 4, START] + [VIDEO] * p + [END]  # "<t=k>" then the frame
        elif family.startswith("qwen"):
            body = [START] + [VIDEO] * (f * p) + [END]
        elif family == "llava_onevision":
            body = [VIDEO] * (f * p + 1)
        else:
            body = []
            for k in range(f):
                body += [60 + k % 4, START] + [IMAGE] * p + [END]  # "Frame from 00:0k" + image
        rows.append(before + body + after)
    length = max(len(r) for r in rows)
    input_ids = torch.zeros(b, length, dtype=torch.long)
    attention_mask = torch.zeros(b, length, dtype=torch.long)
    for r, row in enumerate(rows):
        at = length - len(row) if padding == "left" else 0
        input_ids[r, at : at + len(row)] = torch.tensor(row)
        attention_mask[r, at : at + len(row)] = 1
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    mean, std = (torch.tensor(v).view(1, 1, 3, 1, 1) for v in PROCESSOR_NORMALIZATION[family])
    pixels = (video - mean) / std  # as the family's processor normalises
    if family.startswith("qwen"):
        inputs["pixel_values_videos"] = torch.cat([qwen_patchify(v, 2, 2, 2) for v in pixels])
        inputs["video_grid_thw"] = torch.tensor([[f, 4, 4]] * b)
        if "mm_token_type_ids" in inspect.signature(model.forward).parameters:
            inputs["mm_token_type_ids"] = (input_ids == VIDEO).int() * 2
    elif family == "llava_onevision":
        assert llava_onevision_tokens_per_frame(model.config) == p
        inputs["pixel_values_videos"] = pixels
        inputs["image_sizes_videos"] = torch.tensor([[8, 8]] * b)
    else:
        inputs["pixel_values"] = pixels
        inputs["pixel_attention_mask"] = torch.ones(b, f, 8, 8, dtype=torch.bool)
    return model, TinyInputs(inputs, video=video)


class TinyInputs(dict):
    """A model's inputs (a dict) with the raw clips they were made from as ``.video``."""

    def __init__(self, inputs: dict[str, Any], video: torch.Tensor) -> None:
        super().__init__(inputs)
        self.video = video
