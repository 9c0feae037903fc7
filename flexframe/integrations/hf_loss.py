"""The next-frame reconstruction loss on a HuggingFace video LLM's own frames.

:func:`reconstruction_from_model` builds the loss for a model: the predictor reads the text
decoder's final hidden states of each video's tokens, frame by frame as the family's layout
adapter places them (a Qwen2-VL frame is a temporal patch of 2 raw frames), and predicts the
features of the next frame:

- ``targets="model"`` (default): the features the model computed for its own video tokens in the
  same forward (Qwen's merged ``video_embeds``, LLaVA-OneVision's pooled projections, SmolVLM's
  connector output), detached; no second tower pass and no copy of the tower;
- ``targets="tower"``: a frozen copy of the model's vision encoder run on the raw frames
  (``[videos, T, C, H, W]`` in ``[0, 1]``, normalised with the family processor's mean and std),
  for targets that stay fixed while the model's tower trains: Qwen's vision tower (patches and
  ``grid_thw``), LLaVA-OneVision's tower, projector and 2x2 pooling, SmolVLM's vision model and
  connector (one frame an image, as its video processor gives them). Raw frames whose count
  does not make the model's frames (``ceil(T / temporal_patch_size)`` for Qwen) are refused,
  naming both.

With fast/slow frames the model must be given the layout's frames in layout order
(``loss.frame_layout(num_frames).frame_indices``) and its attention the layout's timestamps:
``enable_frame_masks(model, "causal-frame", reconstruction=loss, num_frames=T)``. A layout out
of time order whose hidden states came from a forward without that fold gets a ``UserWarning``:
its fast frames' hidden states saw later slow frames, their targets among them.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flexframe._checks import check_choice, check_int
from flexframe.integrations.hf_layouts import (
    PROCESSOR_NORMALIZATION,
    base_model,
    family_of,
    llava_onevision_tokens_per_frame,
    read_prompt,
    text_decoder,
)
from flexframe.integrations.hf_masks import MARK
from flexframe.integrations.hf_tiny import qwen_patchify
from flexframe.reconstruction import (
    AutoregressiveReconstructionConfig,
    AutoregressiveReconstructionModule,
    ReconstructionOutputs,
)
from flexframe.reconstruction.towers import FrozenClipTower, check_video_frames


class _Normalize(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 1, -1, 1, 1), persistent=False)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return (clips - self.mean.to(clips)) / self.std.to(clips)


class QwenVideoEncoder(nn.Module):
    """A Qwen2-VL / 2.5-VL / 3-VL vision tower as a clip encoder: ``[N, T, C, H, W]`` in
    ``[0, 1]`` -> the merged features ``[N, ceil(T / temporal), (H / p / m) * (W / p / m), E]``
    (the model's ``video_embeds``, frame by frame)."""

    def __init__(self, visual: nn.Module, vision_config: Any, mean, std) -> None:
        super().__init__()
        self.visual: nn.Module = visual
        self.normalize = _Normalize(mean, std)
        self.patch = int(vision_config.patch_size)
        self.merge = int(vision_config.spatial_merge_size)
        self.temporal = int(vision_config.temporal_patch_size)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n, t, _, h, w = clips.shape
        side = self.patch * self.merge
        if h % side or w % side:
            raise ValueError(
                f"frames of {h}x{w} pixels are not a multiple of patch_size * spatial_merge_size"
                f" = {side}; resize them as the processor does"
            )
        frames = -(-t // self.temporal)
        clips = self.normalize(clips)
        pixels = torch.cat([qwen_patchify(c, self.patch, self.merge, self.temporal) for c in clips])
        grid = torch.tensor([[frames, h // self.patch, w // self.patch]] * n, device=clips.device)
        out = self.visual(pixels.to(_dtype(self.visual)), grid_thw=grid)
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        return feats.view(n, frames, -1, feats.shape[-1])


class LlavaOnevisionVideoEncoder(nn.Module):
    """LLaVA-OneVision's vision tower, projector and 2x2 pooling as a clip encoder:
    ``[N, T, C, H, W]`` -> ``[N, T, ceil(side / 2) ** 2, D]`` (729 -> 196 tokens a frame)."""

    def __init__(self, base: Any, config: Any, mean, std) -> None:
        super().__init__()
        self.vision_tower: nn.Module = base.vision_tower
        self.projector: nn.Module = base.multi_modal_projector
        self.normalize = _Normalize(mean, std)
        self.layer = config.vision_feature_layer
        self.strategy = config.vision_feature_select_strategy
        self.side = int(config.vision_config.image_size) // int(config.vision_config.patch_size)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n, t = clips.shape[:2]
        frames = self.normalize(clips).flatten(0, 1).to(_dtype(self.vision_tower))
        states = self.vision_tower(
            frames, output_hidden_states=True, return_dict=True
        ).hidden_states
        layers = [self.layer] if isinstance(self.layer, int) else list(self.layer)
        selected = torch.cat([states[i] for i in layers], dim=-1)
        if self.strategy == "default":
            selected = selected[:, 1:]
        x = self.projector(selected)  # [N * T, side * side, D]
        grid = x.view(n * t, self.side, self.side, -1).permute(0, 3, 1, 2)
        size = [math.ceil(self.side / 2)] * 2
        pooled = F.interpolate(grid, size=size, mode="bilinear").permute(0, 2, 3, 1)
        return pooled.reshape(n, t, -1, x.shape[-1])


class SmolVLMVideoEncoder(nn.Module):
    """SmolVLM's vision model and connector (pixel shuffle and projection) as a clip encoder:
    ``[N, T, C, H, W]`` -> ``[N, T, P, D]``, each frame one image (as SmolVLM's video processor
    gives them, unsplit). Unlike the model's ``get_image_features`` it keeps frames whose pixels
    are all zero after normalisation (the model drops those as padding images)."""

    def __init__(self, base: Any, config: Any, mean, std) -> None:
        super().__init__()
        self.vision_model: nn.Module = base.vision_model
        self.connector: nn.Module = base.connector
        self.normalize = _Normalize(mean, std)
        self.patch = int(config.vision_config.patch_size)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        n, t, _, h, w = clips.shape
        if h % self.patch or w % self.patch:
            raise ValueError(
                f"frames of {h}x{w} pixels are not a multiple of patch_size = {self.patch}; "
                "resize them as the processor does"
            )
        frames = self.normalize(clips).flatten(0, 1).to(_dtype(self.vision_model))
        patches = torch.ones(
            n * t, h // self.patch, w // self.patch, dtype=torch.bool, device=frames.device
        )
        states = self.vision_model(
            pixel_values=frames, patch_attention_mask=patches, return_dict=True
        ).last_hidden_state
        feats = self.connector(states)  # [N * T, P, D]
        return feats.reshape(n, t, -1, feats.shape[-1])


def _dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


class ModelReconstruction(nn.Module):
    """The reconstruction loss bound to a HuggingFace video LLM (see the module docstring).

    Build it with :func:`reconstruction_from_model` (or :meth:`from_model`); it is an
    ``nn.Module`` whose parameters (the predictor's) train with the model's. Call it after the
    model's forward with the same inputs: ``loss = recon(inputs)``.

    Attributes:
        module: the :class:`~flexframe.reconstruction.AutoregressiveReconstructionModule`
            (predictor, masks, layout).
        family: the model's family.
        targets: ``"model"`` or ``"tower"``.
    """

    def __init__(
        self,
        model: Any,
        module: AutoregressiveReconstructionModule,
        targets: str,
        tower: FrozenClipTower | None,
    ) -> None:
        super().__init__()
        self.family = family_of(model)
        self.module, self.targets = module, targets
        self.tower: FrozenClipTower | None = tower
        self._model = [model]  # not a submodule: its parameters are the model's own
        self._captured: dict[str, Any] = {}
        decoder = text_decoder(model)
        self._hooks = [
            base_model(model).register_forward_pre_hook(lambda *_: self._captured.clear()),
            decoder.register_forward_hook(self._keep_hidden),
        ]
        if targets == "model":
            self._hooks.append(self._feature_source().register_forward_hook(self._keep_features))

    @classmethod
    def from_model(cls, model: Any, config: Any = None, **options: Any) -> ModelReconstruction:
        """The loss for ``model``: :func:`reconstruction_from_model` under the class's name.

        Example:
            >>> from flexframe.integrations.transformers import tiny_model
            >>> model, inputs = tiny_model("llava_onevision")
            >>> ModelReconstruction.from_model(model, {"predictor_dim": 32}).family
            'llava_onevision'
        """
        return reconstruction_from_model(model, config, **options)

    @property
    def model(self) -> Any:
        """The model the loss reads."""
        return self._model[0]

    def frame_layout(self, num_frames: int):  # noqa: ANN201
        """``module.frame_layout``: the frames, in order, that the model's videos must hold."""
        return self.module.frame_layout(num_frames)

    def remove_hooks(self) -> None:
        """Stop reading the model's forwards (the loss cannot be computed afterwards)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    # -- what the model's forward leaves -------------------------------------------------------
    def _feature_source(self) -> nn.Module:
        base = base_model(self.model)
        name = {"llava_onevision": "multi_modal_projector", "smolvlm": "connector"}.get(
            self.family, "visual"
        )
        return getattr(base, name)

    def _keep_hidden(self, module: nn.Module, args: tuple, output: Any) -> None:
        hidden = getattr(output, "last_hidden_state", None)
        self._captured["hidden"] = output[0] if hidden is None else hidden
        handle = module.__dict__.get(MARK)  # the frame masks this forward ran under, if any
        if handle is not None and handle.active:
            self._captured["mask"] = (handle.mask, handle.params.get("timestamps"))

    def _keep_features(self, module: nn.Module, args: tuple, output: Any) -> None:
        feats = getattr(output, "pooler_output", output)
        if isinstance(feats, (tuple, list)):
            feats = torch.cat(list(feats))
        if self.family == "llava_onevision":
            feats = base_model(self.model).apply_pooling(feats)
        self._captured.setdefault("features", []).append(feats.detach())

    # -- the loss --------------------------------------------------------------------------------
    def forward(
        self,
        inputs: Mapping[str, Any],
        video: torch.Tensor | None = None,
        *,
        num_frames: int | None = None,
        return_outputs: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ReconstructionOutputs]:
        """The loss of the model's latest forward on ``inputs``.

        Args:
            inputs: what the model was called with (``input_ids``, ``attention_mask`` and the
                video inputs: they say where each video's frames are).
            video: ``[videos, T, C, H, W]`` raw frames in ``[0, 1]``: needed for
                ``targets="tower"``; with ``targets="model"`` only checked against the model's
                frames.
            num_frames: with fast/slow frames, the clip length the layout was sampled from (in
                the model's frames).
            return_outputs: also return the per-frame :class:`ReconstructionOutputs`.
        """
        hidden = self._captured.pop("hidden", None)
        features = self._captured.pop("features", None)
        mask = self._captured.pop("mask", None)
        if hidden is None:
            raise RuntimeError("run the model's forward on these inputs before the loss")
        prompt = read_prompt(self.model, **inputs)
        if tuple(hidden.shape[:2]) != tuple(prompt.frame_ids.shape):
            raise ValueError(
                f"the model's latest forward saw {tuple(hidden.shape[:2])} tokens but inputs hold "
                f"{tuple(prompt.frame_ids.shape)}: call the loss with the inputs of that forward"
            )
        videos = prompt.videos
        if not videos:
            raise ValueError("the inputs hold no video tokens: nothing to reconstruct")
        shapes = {(v.num_frames, v.tokens_per_frame) for v in videos}
        if len(shapes) != 1:
            raise ValueError(
                f"the videos have different frame layouts {sorted(shapes)} (frames, tokens); "
                "batch videos of one size"
            )
        f, p = shapes.pop()
        if video is not None:
            self._check_raw(video, videos)
        t = f if num_frames is None else check_int("num_frames", num_frames, minimum=1)
        layout = self.module.frame_layout(t)
        if len(layout) == f:  # else the loss below refuses the frame count
            self._check_fold(layout, mask)
        tokens = torch.stack(
            [hidden[v.row, v.positions.flatten().to(hidden.device)] for v in videos]
        )
        if self.targets == "tower":
            if video is None:
                raise ValueError("targets='tower' needs the raw frames: recon(inputs, video=...)")
            assert self.tower is not None
            feats = self.tower(video)
        else:
            feats = self._model_features(features, videos, f, p)
        if tuple(feats.shape[1:3]) != (f, p):
            raise ValueError(
                f"the targets hold {tuple(feats.shape[1:3])} (frames, tokens) per video but the "
                f"hidden states {(f, p)}"
            )
        return self.module.compute_loss_from_features(
            tokens, feats.to(tokens.device), num_frames=num_frames, return_outputs=return_outputs
        )

    def _check_fold(self, layout: Any, mask: tuple[str, Any] | None) -> None:
        """Warn when a layout out of time order met an LLM mask that does not follow time."""
        if layout.in_time_order:
            return
        times = layout.frame_indices.tolist()
        if mask is not None and mask == ("prompt-timestamp-causal", times):
            return
        ran = "stock attention" if mask is None else f"the frame mask {mask[0]!r}"
        warnings.warn(
            f"the fast/slow layout {times} is out of time order, but the model's latest forward "
            f"ran under {ran}, not timestamp-causal over the layout: a frame's hidden state has "
            "seen frames shown later, its own target among them, and the loss rewards that "
            "leak. Fold the layout into the prompt mask: enable_frame_masks(model, "
            f"'causal-frame', reconstruction=recon, num_frames={layout.num_frames})",
            UserWarning,
            stacklevel=3,
        )

    def _check_raw(self, video: torch.Tensor, videos: tuple) -> None:
        if not isinstance(video, torch.Tensor) or video.dim() != 5:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else None
            raise ValueError(f"video must be [videos, T, C, H, W], got shape {shape}")
        check_video_frames(video, "video")
        if video.shape[0] != len(videos):
            raise ValueError(
                f"video holds {video.shape[0]} clips but the inputs {len(videos)} videos"
            )
        per = videos[0].raw_frames_per_frame
        t, f = video.shape[1], videos[0].num_frames
        if -(-t // per) != f:
            made = f" ({-(-t // per)} frames of {per} raw frames)" if per > 1 else ""
            raise ValueError(
                f"video holds {t} raw frames{made} but the model's hidden states hold {f} "
                f"frames per video: give the raw frames the model saw"
            )

    def _model_features(self, features: list | None, videos: tuple, f: int, p: int) -> torch.Tensor:
        if not features:
            raise RuntimeError(
                "the model computed no video features in its latest forward (were its video "
                "inputs given?)"
            )
        total = sum(v.num_frames * v.tokens_per_frame for v in videos)
        feats = features[-1]
        feats = feats.reshape(-1, feats.shape[-1])  # LLaVA-OV, SmolVLM: [frames, P, D]
        if feats.shape[0] != total:
            raise ValueError(
                f"the model's latest video features hold {feats.shape[0]} tokens but its videos "
                f"{total}; images and videos in one forward are not told apart"
            )
        return feats.view(len(videos), f, p, -1)


def reconstruction_from_model(
    model: Any,
    config: AutoregressiveReconstructionConfig
    | Mapping[str, Any]
    | str
    | os.PathLike
    | None = None,
    *,
    targets: str = "model",
    image_mean: tuple[float, ...] | None = None,
    image_std: tuple[float, ...] | None = None,
) -> ModelReconstruction:
    """The next-frame reconstruction loss for a HuggingFace video LLM, on its own frames.

    Args:
        model: a supported video LLM (``SUPPORTED_FAMILIES``).
        config: the loss's settings (a dict, YAML path or config); ``embedding_dim`` is set to
            the width of the model's video features, and must not say otherwise.
        targets: ``"model"`` (the model's own video features, no tower copy) or ``"tower"`` (a
            frozen copy of its vision encoder on the raw frames; every supported family).
        image_mean, image_std: the normalisation of raw ``[0, 1]`` frames for the tower;
            default the family processor's (``PROCESSOR_NORMALIZATION``).

    Example:
        >>> from flexframe.integrations.transformers import tiny_model
        >>> model, inputs = tiny_model("qwen2_vl")
        >>> recon = reconstruction_from_model(model, {"predictor_dim": 32})
        >>> _ = model(**inputs)
        >>> loss = recon(inputs, video=inputs.video)
        >>> loss.shape
        torch.Size([])
    """
    family = family_of(model)
    check_choice("targets", targets, ("model", "tower"))
    base = base_model(model)
    settings = dict(AutoregressiveReconstructionConfig.from_any(config or {}).to_dict())
    width = _feature_width(model, family)
    given = (config or {}).get("embedding_dim") if isinstance(config, Mapping) else None
    if isinstance(config, AutoregressiveReconstructionConfig) and config.embedding_dim != (
        AutoregressiveReconstructionConfig().embedding_dim
    ):
        given = config.embedding_dim
    if given is not None and given != width:
        raise ValueError(
            f"embedding_dim={given} but the model's video features are {width} wide; leave "
            "embedding_dim out"
        )
    settings["embedding_dim"] = width
    cfg = AutoregressiveReconstructionConfig.from_any(settings)
    hidden = check_int("hidden_size", int(text_decoder(model).config.hidden_size), minimum=1)
    module = AutoregressiveReconstructionModule(None, hidden, cfg)
    tower = None
    if targets == "tower":
        mean, std = PROCESSOR_NORMALIZATION[family]
        mean, std = image_mean or mean, image_std or std
        if family == "llava_onevision":
            tower = FrozenClipTower(LlavaOnevisionVideoEncoder(base, model.config, mean, std))
        elif family == "smolvlm":
            tower = FrozenClipTower(SmolVLMVideoEncoder(base, model.config, mean, std))
        elif family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
            vision = model.config.vision_config
            encoder = QwenVideoEncoder(base.visual, vision, mean, std)
            tower = FrozenClipTower(encoder, int(vision.temporal_patch_size))
        else:  # a family with a layout adapter but no tower adapter
            raise ValueError(f"targets='tower' is not available for {family}; use targets='model'")
    return ModelReconstruction(model, module, targets, tower)


def _feature_width(model: Any, family: str) -> int:
    config = model.config
    if family in ("llava_onevision", "smolvlm"):
        return int(config.text_config.hidden_size)
    vision = config.vision_config
    return int(getattr(vision, "out_hidden_size", None) or vision.hidden_size)


__all__ = [
    "PROCESSOR_NORMALIZATION",
    "LlavaOnevisionVideoEncoder",
    "ModelReconstruction",
    "QwenVideoEncoder",
    "SmolVLMVideoEncoder",
    "llava_onevision_tokens_per_frame",
    "reconstruction_from_model",
]
