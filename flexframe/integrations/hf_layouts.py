"""Where the frames of a HuggingFace video LLM's prompt are: one layout adapter per family.

An adapter reads a model's own inputs (``input_ids``, ``attention_mask`` and the family's video
inputs) and gives the prompt's :class:`PromptVideos`: the per-token frame ids of
``flexframe.masks.prompt`` (``TEXT``, ``PAD``, frame number) and, for each video, the positions
of its tokens frame by frame. A *frame* is what the LLM sees as one step of time:

- Qwen2-VL, Qwen2.5-VL: a temporal patch (``temporal_patch_size`` raw frames, 2 by default),
  ``(h / 2) * (w / 2)`` tokens after the 2x2 spatial merge; a video's tokens are contiguous and
  their number comes from ``video_grid_thw``, never from a division;
- Qwen3-VL: the same, with a timestamp text (``<t=... seconds>``) between the frames;
- LLaVA-OneVision: one raw frame, ``ceil(side / 2) ** 2`` tokens after its 2x2 pooling
  (729 -> 196 for SigLIP-384/14), then one newline token after the video (read as text);
- SmolVLM: frames are images, each one run of image tokens after its ``Frame from mm:ss`` text;
  every image of a prompt is read as a frame of the row's one video.

Images, markers (``<vision_start>``), newlines and timestamps are text. Padding comes from the
2-D ``attention_mask`` (0 = padding). Inside ``generate`` the videos arrive encoded; with beams
or several return sequences each prompt, and its videos, come several times
(:func:`expanded_grid` gives Qwen's copies their grid).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flexframe.masks.prompt import PAD, TEXT

SUPPORTED_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision", "smolvlm")
"""``config.model_type`` of the families with a layout adapter."""


_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
PROCESSOR_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "qwen2_vl": (_CLIP_MEAN, _CLIP_STD),
    "qwen2_5_vl": (_CLIP_MEAN, _CLIP_STD),
    "qwen3_vl": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "llava_onevision": (_CLIP_MEAN, _CLIP_STD),
    "smolvlm": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
"""Each family's processor defaults ``(image_mean, image_std)``: raw frames in ``[0, 1]`` become
``(frame - mean) / std`` before the vision tower."""


@dataclass(frozen=True)
class VideoTokens:
    """One video of a prompt as the LLM sees it.

    Attributes:
        row: the batch row that holds it.
        positions: ``[F, P]`` int64, the sequence position of each token, frame by frame.
        raw_frames_per_frame: raw video frames in one LLM frame (Qwen's temporal patch: 2).
        index: the video's index in the model's video inputs (row-major order).
    """

    row: int
    positions: torch.Tensor
    raw_frames_per_frame: int
    index: int

    @property
    def num_frames(self) -> int:
        """``F``: the LLM's frames of this video."""
        return int(self.positions.shape[0])

    @property
    def tokens_per_frame(self) -> int:
        """``P``: the LLM's tokens in each frame."""
        return int(self.positions.shape[1])


@dataclass(frozen=True)
class PromptVideos:
    """A prompt's frame ids ``[B, L]`` (``TEXT``/``PAD``/frame number) and its videos."""

    frame_ids: torch.Tensor
    videos: tuple[VideoTokens, ...]


def family_of(model: Any) -> str:
    """The layout family of ``model`` (its ``config.model_type``), refused when unsupported.

    Example:
        >>> family_of(nn.Linear(1, 1))
        Traceback (most recent call last):
        ...
        TypeError: flexframe has no frame layout for Linear (model_type None); supported: ...
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_FAMILIES:
        raise TypeError(
            f"flexframe has no frame layout for {type(model).__name__} (model_type "
            f"{model_type!r}); supported: {', '.join(SUPPORTED_FAMILIES)}"
        )
    return str(model_type)


def base_model(model: Any) -> Any:
    """The multimodal base model (``XxxModel``) of a ``XxxForConditionalGeneration`` or itself."""
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module) and _text_attr(inner) is not None:
        return inner
    return model


def _text_attr(module: nn.Module) -> str | None:
    for name in ("language_model", "text_model"):
        if isinstance(getattr(module, name, None), nn.Module):
            return name
    return None


def text_decoder(model: Any) -> Any:
    """The text decoder (``language_model`` / ``text_model``) whose attention the masks replace."""
    base = base_model(model)
    name = _text_attr(base)
    if name is None:
        raise TypeError(f"{type(model).__name__} has no language_model or text_model")
    return getattr(base, name)


def _config_id(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise TypeError(f"{type(config).__name__} has none of {names}")


def _mark_padding(ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is not None:
        ids[attention_mask.to(ids.device) == 0] = PAD
    return ids


def _video_tokens_in_order(input_ids: torch.Tensor, token: int, real: torch.Tensor) -> torch.Tensor:
    """``[N, 2]`` (row, position) of every video placeholder token, in row-major order (the
    order in which the model scatters its video features)."""
    return torch.nonzero((input_ids == token) & real)


def _describe(frames: int, tokens: int, extra: int) -> str:
    return f"{frames} frames x {tokens} tokens" + (f" + {extra}" if extra else "")


def _assign(
    ids: torch.Tensor,
    where: torch.Tensor,
    sizes: list[tuple[int, int, int]],
    what: str,
) -> tuple[VideoTokens, ...]:
    """Give each video ``(frames, tokens_per_frame, extra_text_tokens)`` its placeholder tokens,
    in order; their total must be the number of placeholders."""
    want = sum(f * p + extra for f, p, extra in sizes)
    if want != where.shape[0]:
        raise ValueError(
            f"input_ids hold {where.shape[0]} video tokens but {what} describe {want} "
            f"({'; '.join(_describe(f, p, e) for f, p, e in sizes)})"
        )
    videos, at = [], 0
    for index, (f, p, extra) in enumerate(sizes):
        chunk = where[at : at + f * p + extra]
        at += f * p + extra
        rows = chunk[:, 0].unique()
        if rows.numel() != 1:
            raise ValueError(f"video {index} spans batch rows {rows.tolist()}; check {what}")
        row, positions = int(rows[0]), chunk[: f * p, 1]
        ids[row, positions] = torch.arange(f, device=ids.device).repeat_interleave(p)
        videos.append(VideoTokens(row, positions.view(f, p).cpu(), 1, index))
    return tuple(videos)


GRID_TAG = "_flexframe_grid_thw"
"""The attribute under which :func:`tag_video_grids` leaves ``grid_thw`` on a Qwen vision
tower's output: ``generate`` encodes the videos before the first forward and passes the features
(``mm_encoder_outputs``) without ``video_grid_thw``."""


def _encoded(inputs: Mapping[str, Any], modality: str) -> Any:
    encoded = inputs.get("mm_encoder_outputs")
    return encoded.get(modality) if isinstance(encoded, Mapping) else None


def tag_video_grids(model: Any) -> Any:
    """Keep ``grid_thw`` on the outputs of a Qwen model's vision tower (see ``GRID_TAG``);
    returns the hook's handle (``.remove()``), or None for other families."""
    if family_of(model) not in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        return None

    def tag(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        if grid is not None and not isinstance(output, torch.Tensor):
            object.__setattr__(output, GRID_TAG, grid)

    return base_model(model).visual.register_forward_hook(tag, with_kwargs=True)


def _qwen(model: Any, input_ids: torch.Tensor, real: torch.Tensor, inputs: Mapping[str, Any]):
    config = model.config
    token = _config_id(config, "video_token_id", "video_token_index")
    vision = config.vision_config
    merge, temporal = int(vision.spatial_merge_size), int(vision.temporal_patch_size)
    where = _video_tokens_in_order(input_ids, token, real)
    grid = inputs.get("video_grid_thw")
    if grid is None:  # generate (transformers >= 5.2x) encodes the videos first; see GRID_TAG
        encoded = getattr(_encoded(inputs, "video"), GRID_TAG, None)
        if encoded is not None:
            grid = expanded_grid(encoded, where, input_ids.shape[0], merge)
    ids = torch.full_like(input_ids, TEXT)
    if grid is None:
        if where.shape[0]:
            raise ValueError(
                f"input_ids hold {where.shape[0]} video tokens but no video_grid_thw was given"
            )
        return ids, ()
    sizes = [(int(t), int(h) * int(w) // merge**2, 0) for t, h, w in grid.tolist()]
    videos = _assign(ids, where, sizes, "video_grid_thw (t * h * w / spatial_merge_size**2)")
    return ids, tuple(VideoTokens(v.row, v.positions, temporal, v.index) for v in videos)


def expanded_grid(grid: torch.Tensor, where: torch.Tensor, rows: int, merge: int) -> torch.Tensor:
    """The ``video_grid_thw`` of the videos of ``rows`` rows that ``generate`` expanded.

    With ``num_beams`` or ``num_return_sequences`` > 1, ``generate`` repeats each prompt ``e``
    times (``repeat_interleave`` of the rows) and the encoded videos of each prompt with it, but
    the grid the tower was given (``grid``, ``[N, 3]``) stays that of the ``N`` videos of the
    prompts as given. This gives each repeated row its prompt's videos again, in the order of
    the placeholders (``where``: ``[tokens, 2]`` (row, position)), as transformers groups them:
    a prompt's videos are the next grid rows whose tokens add up to the prompt's video tokens.

    Example:
        >>> grid = torch.tensor([[2, 4, 4], [1, 4, 4]])  # prompt 0: 8 tokens, prompt 1: 4
        >>> rows = torch.tensor([0] * 8 + [1] * 8 + [2] * 4 + [3] * 4)  # each prompt twice
        >>> expanded_grid(grid, torch.stack([rows, rows * 0], 1), rows=4, merge=2).tolist()
        [[2, 4, 4], [2, 4, 4], [1, 4, 4], [1, 4, 4]]
    """
    sizes = (grid.prod(-1) // merge**2).tolist()
    total, given = int(where.shape[0]), sum(sizes)
    if total == given:
        return grid
    counts = torch.bincount(where[:, 0].cpu(), minlength=rows).tolist()
    e = total // given if given and total % given == 0 else 0
    repeated = bool(e) and rows % e == 0
    if not repeated or any(counts[r] != counts[r - r % e] for r in range(rows)):
        raise ValueError(
            f"input_ids hold {total} video tokens ({counts} a row) but the encoded videos' "
            f"video_grid_thw {grid.tolist()} describe {given}, not a whole number of copies of "
            "each prompt's videos"
        )
    out, at = [], 0
    for prompt in range(rows // e):
        want, start = counts[prompt * e], at
        while want > 0 and at < len(sizes):
            want -= sizes[at]
            at += 1
        if want:
            raise ValueError(
                f"prompt {prompt} holds {counts[prompt * e]} video tokens but the next videos of "
                f"video_grid_thw {grid.tolist()} do not add up to them"
            )
        out += [grid[start:at]] * e
    return torch.cat(out)


def llava_onevision_tokens_per_frame(config: Any) -> int:
    """Tokens of one frame after LLaVA-OneVision's 2x2 pooling: ``ceil(side / 2) ** 2``.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> llava_onevision_tokens_per_frame(NS(vision_config=NS(image_size=384, patch_size=14)))
        196
    """
    side = int(config.vision_config.image_size) // int(config.vision_config.patch_size)
    return math.ceil(side / 2) ** 2


def _llava_onevision(model, input_ids, real, inputs):
    config = model.config
    token = _config_id(config, "video_token_id", "video_token_index")
    where = _video_tokens_in_order(input_ids, token, real)
    videos_in = inputs.get("pixel_values_videos")
    ids = torch.full_like(input_ids, TEXT)
    p = llava_onevision_tokens_per_frame(config)
    encoded = _encoded(inputs, "video")
    if videos_in is None and encoded is not None:  # encoded by generate: [videos, F * P + 1, D]
        features = encoded.pooler_output
        count, tokens = int(features.shape[0]), int(features.shape[1])
        if (tokens - 1) % p:
            raise ValueError(
                f"the encoded videos hold {tokens} tokens each, not frames of {p} tokens and a "
                "newline"
            )
        sizes = [((tokens - 1) // p, p, 1)] * count
        return ids, _assign(ids, where, sizes, "the encoded videos (frames x tokens + newline)")
    if videos_in is None:
        if where.shape[0]:
            raise ValueError(
                f"input_ids hold {where.shape[0]} video tokens but no pixel_values_videos"
            )
        return ids, ()
    if videos_in.dim() != 5:
        raise ValueError(
            "pixel_values_videos must be [videos, frames, C, H, W], got shape "
            f"{tuple(videos_in.shape)}"
        )
    sizes = [(int(videos_in.shape[1]), p, 1)] * int(videos_in.shape[0])  # + the newline token
    return ids, _assign(ids, where, sizes, "pixel_values_videos (frames x pooled tokens + newline)")


def _smolvlm(model, input_ids, real, inputs):
    token = _config_id(model.config, "image_token_id")
    ids = torch.full_like(input_ids, TEXT)
    is_image = ((input_ids == token) & real).cpu()
    videos = []
    for row in range(input_ids.shape[0]):
        flags = is_image[row]
        starts = torch.nonzero(flags & ~torch.cat([flags.new_zeros(1), flags[:-1]])).flatten()
        ends = torch.nonzero(flags & ~torch.cat([flags[1:], flags.new_zeros(1)])).flatten()
        if starts.numel() == 0:
            continue
        lengths = (ends - starts + 1).unique()
        if lengths.numel() != 1:
            raise ValueError(
                f"row {row}: the image token runs (frames) have different lengths "
                f"{(ends - starts + 1).tolist()}; SmolVLM frames are one image each"
            )
        p = int(lengths[0])
        positions = starts[:, None] + torch.arange(p)[None]
        ids[row, positions.flatten().to(ids.device)] = (
            torch.arange(starts.numel()).repeat_interleave(p).to(ids.device)
        )
        videos.append(VideoTokens(row, positions, 1, len(videos)))
    return ids, tuple(videos)


_READERS: dict[str, Callable[..., tuple[torch.Tensor, tuple[VideoTokens, ...]]]] = {
    "qwen2_vl": _qwen,
    "qwen2_5_vl": _qwen,
    "qwen3_vl": _qwen,
    "llava_onevision": _llava_onevision,
    "smolvlm": _smolvlm,
}


def read_prompt(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **inputs
) -> PromptVideos:
    """The frame ids and videos of a prompt, read the way ``model`` reads its inputs.

    Args:
        model: a supported HuggingFace video LLM (``ForConditionalGeneration`` or base model).
        input_ids: ``[B, L]`` token ids.
        attention_mask: ``[B, L]`` padding mask (1 = token, 0 = padding), or None.
        **inputs: the family's video inputs (``video_grid_thw``, ``pixel_values_videos``, ...);
            others are ignored.

    Example:
        >>> from flexframe.integrations.transformers import tiny_model
        >>> model, inputs = tiny_model("qwen2_vl")
        >>> read_prompt(model, **inputs).frame_ids.tolist()
        [[-1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, -1, -1, -1, -1]]
    """
    family = family_of(model)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else None
        raise ValueError(f"input_ids must be [B, L], got shape {shape}")
    real = torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask is not None:
        real = attention_mask.to(input_ids.device) != 0
    ids, videos = _READERS[family](model, input_ids, real, inputs)
    return PromptVideos(_mark_padding(ids, attention_mask).cpu(), videos)
