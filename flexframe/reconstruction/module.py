"""The autoregressive next-frame reconstruction loss for video LLMs.

From the LLM's hidden states of the video tokens, a small frame-causal predictor (a
``FlexFrameDecoder``) predicts the frozen vision tower's features of the next frame; the loss,
times ``loss_weight``, is added to the language-model loss.

Leak-free by construction:

- the predictor has no cross-attention to the sequence it predicts (the seed design's
  ``tgt=x, memory=x`` let every frame read the future);
- with fast/slow frames the mask is ``timestamp-causal`` over the merged sequence, so a fast
  frame never sees a slow frame from later in time;
- each frame's target is the next frame of its own stream (``FrameLayout``), so at the slow/fast
  boundary of ``[slow | fast]`` the last slow frame is not asked to predict the first fast one;
- targets come from a frozen copy of the tower, run without grad, or are given detached
  (``compute_loss_from_features``: a video LLM's own video features);
- the tokens per frame are never inferred by a division: a clip whose frame count does not
  match the hidden states' is refused, naming both counts. Without ``tokens_per_frame`` (call
  argument or config key) the hidden states must hold one token per tower patch of each layout
  frame, the one reading that needs no guess; on a HuggingFace model
  (``flexframe.integrations.transformers.reconstruction_from_model``) the frames come from the
  model's own layout.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flexframe._checks import check_int, check_weights_dtype
from flexframe.masks import MaskSpec, get_mask, get_mask_entry
from flexframe.nn import DecoderConfig, FlexFrameDecoder, FramePositions
from flexframe.reconstruction.config import AutoregressiveReconstructionConfig
from flexframe.reconstruction.layout import FrameLayout
from flexframe.reconstruction.towers import check_video_frames, make_tower

# Masks whose visibility follows time on a layout in time order (all frames, no fast/slow).
_CAUSAL_IN_ORDER = {"causal-frame", "sliding-window", "token-causal", "packed-causal-frame"}


@dataclass
class ReconstructionOutputs:
    """Per-frame results of one loss computation (F = layout frames, P = tokens per frame).

    Attributes:
        predictions: ``[B, F, P, E]`` the predictor's guess of each frame's target.
        targets: ``[B, F, P, E]`` the tower's features of each frame's next frame (zeros where
            there is none).
        features: ``[B, F, P, E]`` the tower's features of each layout frame itself; the
            trivial "next frame = this frame" predictor's error is computed against these.
        target_mask: ``[B, F]`` bool, which frames have a target.
        timestamps: ``[F]`` the original frame index of each layout frame.
        is_fast: ``[F]`` bool, fast-stream frames.
        mask_name: the predictor's mask.
    """

    predictions: torch.Tensor
    targets: torch.Tensor
    features: torch.Tensor
    target_mask: torch.Tensor
    timestamps: torch.Tensor
    is_fast: torch.Tensor
    mask_name: str


class AutoregressiveReconstructionModule(nn.Module):
    """Predicts the next frame's vision features from an LLM's video hidden states.

    Build it with :func:`create_autoregressive_reconstruction_module`.
    """

    def __init__(
        self,
        vision_tower: nn.Module | str | None,
        hidden_size: int,
        config: AutoregressiveReconstructionConfig,
    ) -> None:
        super().__init__()
        self.config = config
        self.hidden_size = hidden_size
        self.tower = None if vision_tower is None else make_tower(vision_tower, config.patch_size)
        self.input_proj = nn.Linear(hidden_size, config.predictor_dim)
        self.predictor = FlexFrameDecoder(
            DecoderConfig(
                dim=config.predictor_dim,
                depth=config.predictor_depth,
                num_heads=config.predictor_heads,
                num_kv_heads=config.predictor_kv_heads,
                mlp_ratio=config.mlp_ratio,
                attention_backend=config.attention_backend,
                activation_checkpointing=config.activation_checkpointing,
            )
        )
        self.output_proj = nn.Linear(config.predictor_dim, config.embedding_dim)
        # Built once per clip length (and tokens per frame), not at every training step.
        self._layouts: dict[int, FrameLayout] = {}
        self._specs: dict[tuple[int, int], tuple[MaskSpec, FramePositions]] = {}
        self._warned: set[str] = set()

    # -- layout and mask ----------------------------------------------------------------------
    def frame_layout(self, num_frames: int) -> FrameLayout:
        """Which original frames, in which order, the LLM's video tokens must follow.

        With fast/slow frames the layout is not in time order (``[slow | fast]`` puts fast
        frame 8 after slow frame 14). The predictor copes (its mask is ``timestamp-causal``), but
        the hidden states it reads come from the LLM: an LLM that attends token-causally over
        this layout lets a fast frame's hidden state see later slow frames, its own target
        among them. Give the LLM's attention over the video tokens :meth:`llm_mask`.

        Example:
            >>> module = create_autoregressive_reconstruction_module("pixels", 32, {
            ...     "embedding_dim": 48, "patch_size": 4, "predictor_dim": 32,
            ...     "use_fast_slow_frames": True, "num_fast": 3, "num_slow": 2})
            >>> module.frame_layout(16).frame_indices.tolist()
            [8, 12, 13, 14, 15]
        """
        layout = self._layouts.get(num_frames)
        if layout is None:
            cfg = self.config
            layout = FrameLayout.build(num_frames, cfg.fast_slow(), cfg.merge_strategy)
            self._layouts[num_frames] = layout
        return layout

    def llm_mask(self, num_frames: int, tokens_per_frame: int) -> MaskSpec:
        """The mask the LLM's attention over the video tokens needs for a leak-free loss.

        ``timestamp-causal`` over :meth:`frame_layout`'s timestamps, token-causal inside a
        timestamp (as an LLM is): a video token sees the tokens of every frame shown no later
        than its own, wherever the layout puts them. On a layout in time order (no fast/slow)
        this is exactly the LLM's usual token-causal mask. Text tokens around the video are the
        LLM's own business; combine this mask into the LLM's mask over its video positions.

        Example:
            >>> module = create_autoregressive_reconstruction_module("pixels", 32, {
            ...     "embedding_dim": 48, "patch_size": 4, "predictor_dim": 32,
            ...     "use_fast_slow_frames": True, "num_fast": 4, "num_slow": 4, "slow_stride": 2})
            >>> module.frame_layout(8).frame_indices.tolist()  # [slow | fast]
            [0, 2, 4, 6, 4, 5, 6, 7]
            >>> mask = module.llm_mask(num_frames=8, tokens_per_frame=1).to_dense()
            >>> mask[4].int().tolist()  # fast frame 4 sees slow 0, 2, 4 and itself, not slow 6
            [1, 1, 1, 0, 1, 0, 0, 0]
        """
        layout = self.frame_layout(num_frames)
        p = check_int("tokens_per_frame", tokens_per_frame, minimum=1)
        return get_mask(
            "timestamp-causal",
            timestamps=layout.frame_indices.tolist(),
            num_patches_per_frame=p,
            within_frame="causal",
        )

    @property
    def mask_name(self) -> str:
        """The predictor's mask: the config's ``mask``, else the default for the settings."""
        cfg = self.config
        if cfg.mask is not None:
            return cfg.mask
        if cfg.use_fast_slow_frames:
            return "timestamp-causal"
        return "causal-frame" if cfg.use_frame_causal_mask else "token-causal"

    def mask_spec(self, num_frames: int, tokens_per_frame: int) -> MaskSpec:
        """The predictor's mask for a clip of ``num_frames`` frames (built once per shape).

        Example:
            >>> module = create_autoregressive_reconstruction_module("pixels", 32, {
            ...     "embedding_dim": 48, "patch_size": 4, "predictor_dim": 32})
            >>> module.mask_spec(num_frames=3, tokens_per_frame=2)
            MaskSpec(causal-frame: num_frames=3, num_patches_per_frame=2; q_len=6, kv_len=6)
        """
        return self._mask_and_positions(num_frames, tokens_per_frame)[0]

    def _mask_and_positions(
        self, num_frames: int, tokens_per_frame: int
    ) -> tuple[MaskSpec, FramePositions]:
        cached = self._specs.get((num_frames, tokens_per_frame))
        if cached is not None:
            return cached
        layout = self.frame_layout(num_frames)
        f, p = len(layout), tokens_per_frame
        is_fast = layout.is_fast
        available: dict[str, Any] = {
            "num_frames": f,
            "num_patches_per_frame": p,
            "seq_len": f * p,
            "timestamps": layout.frame_indices.tolist(),
            "within_frame": "full" if self.config.use_frame_causal_mask else "causal",
            "frames_per_video": [f],
            "num_fast_frames": int(is_fast.sum()),
            "num_slow_frames": int((~is_fast).sum()),
        }
        if self.config.window_size is not None:
            available["window_size"] = self.config.window_size
        name = self.mask_name
        if name == "fast-slow" and not (
            self.config.use_fast_slow_frames and self.config.merge_strategy == "concat"
        ):
            raise ValueError(
                "mask='fast-slow' describes the [slow | fast] layout: it needs "
                "use_fast_slow_frames=True and merge_strategy='concat'"
            )
        entry = get_mask_entry(name)
        params = {k: available[k] for k in entry.parameter_names if k in available}
        self._warn_if_leaky(name, layout)
        spec = get_mask(name, **params)
        positions = FramePositions.for_frames(f, p, layout.frame_indices)
        self._specs[(num_frames, tokens_per_frame)] = (spec, positions)
        return spec, positions

    def _warn_if_leaky(self, name: str, layout: FrameLayout) -> None:
        if name == "timestamp-causal" or (name in _CAUSAL_IN_ORDER and layout.in_time_order):
            return
        if name in self._warned:
            return
        self._warned.add(name)
        if name in _CAUSAL_IN_ORDER or name in ("fast-slow", "full"):
            why = (
                "it lets a frame see frames shown later in time"
                if name != "fast-slow"
                else "fast frames see slow frames shown later in time"
            )
            warnings.warn(
                f"mask {name!r} leaks the future for next-frame prediction on this layout: "
                f"{why}. Use 'timestamp-causal' for a leak-free predictor.",
                UserWarning,
                stacklevel=4,
            )
        else:
            warnings.warn(
                f"mask {name!r} is not a built-in causal mask: flexframe cannot vouch that it "
                "keeps the future out of next-frame prediction.",
                UserWarning,
                stacklevel=4,
            )

    # -- the loss ---------------------------------------------------------------------------
    def compute_autoregressive_loss(
        self,
        hidden_states: torch.Tensor,
        video_frames: torch.Tensor,
        visual_token_mask: torch.Tensor | None = None,
        return_outputs: bool = False,
        *,
        tokens_per_frame: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ReconstructionOutputs]:
        """The weighted next-frame reconstruction loss.

        Args:
            hidden_states: ``[B, L, hidden_size]`` LLM hidden states. The video tokens are all
                of them, or those selected by ``visual_token_mask``; they follow
                ``frame_layout(T)`` frame by frame, P tokens a frame.
            video_frames: ``[B, T, C, H, W]`` float frames in ``[0, 1]`` (the targets are
                computed from them). Integer (0-255) video is refused; float frames outside
                ``[0, 1]`` get a warning.
            visual_token_mask: ``[B, L]`` bool, which hidden states are video tokens (the same
                number in every row).
            return_outputs: also return :class:`ReconstructionOutputs`.
            tokens_per_frame: P, the LLM's tokens in one frame (default: the config's
                ``tokens_per_frame``). Given, the hidden states must hold exactly the layout's
                frames of P tokens (the tower's patches are pooled to P), and a clip of another
                frame count is refused naming both counts. Not given, P is the tower's patches a
                frame, and hidden states of another token count are refused: P is never
                inferred by a division (hidden states of 8 frames of 8 tokens and a 16-frame
                clip would read as 16 frames of 4, each frame split in two, and leak).

        Returns:
            The scalar loss (times ``loss_weight``), or ``(loss, outputs)``.
        """
        p = self._tokens_per_frame(tokens_per_frame)
        video_tokens, video = self._check_inputs(hidden_states, video_frames, visual_token_mask)
        t = video.shape[1]
        layout = self._checked_layout(t)
        num_layout, n = len(layout), video_tokens.shape[1]
        if p is not None and n != num_layout * p:
            counted = f"{n / p:g}" if n % p else str(n // p)
            raise ValueError(
                f"video_frames hold {t} frames (a layout of {num_layout} frames) but the "
                f"hidden states hold {counted} frames of {p} tokens ({n} video tokens); give "
                "the clip whose frames the hidden states follow"
            )
        frame_idx = layout.frame_indices.to(video.device)
        frames = video.index_select(1, frame_idx)  # [B, F, C, H, W]
        patches = self._tower_features(frames)  # [B * F, P_tower, E]
        if p is None:
            p = patches.shape[1]
            if n != num_layout * p:
                raise ValueError(
                    f"hidden_states hold {n} video tokens but video_frames hold {t} frames (a "
                    f"layout of {num_layout} frames) of {p} tower patches each, {num_layout * p} "
                    "tokens: without tokens_per_frame the hidden states' frame count is not "
                    f"known (dividing {n} tokens by {num_layout} frames would guess it, and "
                    "split or merge frames silently). Pass tokens_per_frame (the LLM's tokens in "
                    "one frame: a call argument or the config key) and the two frame counts are "
                    "compared; with it the tower's patches are pooled to that many tokens"
                )
        features = self._pooled(patches, frames.shape[0], num_layout, p)  # [B, F, P, E]
        return self._loss_from_features(video_tokens, features, layout, return_outputs)

    def _tokens_per_frame(self, given: int | None) -> int | None:
        configured = self.config.tokens_per_frame
        if given is None:
            return configured
        p = check_int("tokens_per_frame", given, minimum=1)
        if configured is not None and configured != p:
            raise ValueError(
                f"tokens_per_frame={p} but the config says tokens_per_frame={configured}; give "
                "one of them"
            )
        return p

    forward = compute_autoregressive_loss

    def compute_loss_from_features(
        self,
        video_tokens: torch.Tensor,
        features: torch.Tensor,
        num_frames: int | None = None,
        return_outputs: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, ReconstructionOutputs]:
        """The loss from the video tokens' hidden states and the features of the same frames.

        For targets the model computed itself (a video LLM's own ``video_embeds``): frame
        ``i``'s target is ``features[:, next_index[i]]``, no tower runs.

        Args:
            video_tokens: ``[B, F * P, hidden_size]`` the LLM's hidden states of the video
                tokens, in layout order.
            features: ``[B, F, P, E]`` each layout frame's own features (detached here).
            num_frames: the clip length T that ``frame_layout(T)`` lays out in F frames;
                default F (every frame, in time order). Needed with fast/slow frames.
            return_outputs: also return :class:`ReconstructionOutputs`.

        Example:
            >>> module = create_autoregressive_reconstruction_module(None, 32, {
            ...     "embedding_dim": 8, "predictor_dim": 32})
            >>> loss = module.compute_loss_from_features(torch.randn(2, 3 * 4, 32),
            ...                                          torch.randn(2, 3, 4, 8))
            >>> loss.shape
            torch.Size([])
        """
        if not isinstance(features, torch.Tensor) or features.dim() != 4:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else None
            raise ValueError(f"features must be [B, F, P, E], got shape {shape}")
        b, f, p, e = features.shape
        if e != self.config.embedding_dim:
            raise ValueError(
                f"the features are {e} wide but embedding_dim is {self.config.embedding_dim}; "
                f"set embedding_dim to {e}"
            )
        configured = self.config.tokens_per_frame
        if configured is not None and configured != p:
            raise ValueError(
                f"the features hold {p} tokens a frame but the config says "
                f"tokens_per_frame={configured}; drop the key or give features of that many"
            )
        self._check_hidden(video_tokens)
        if tuple(video_tokens.shape[:2]) != (b, f * p):
            raise ValueError(
                f"video_tokens must be [B, F * P, {self.hidden_size}] = [{b}, {f * p}, ...] for "
                f"features of {f} frames of {p} tokens, got {tuple(video_tokens.shape)}"
            )
        t = f if num_frames is None else check_int("num_frames", num_frames, minimum=1)
        layout = self._checked_layout(t)
        if len(layout) != f:
            raise ValueError(
                f"frame_layout({t}) has {len(layout)} frames but the features hold {f}; give "
                "num_frames, the clip length the layout was sampled from"
            )
        feats = features.detach()
        if self.config.normalize_targets:
            feats = F.layer_norm(feats.float(), feats.shape[-1:]).to(feats.dtype)
        return self._loss_from_features(video_tokens, feats, layout, return_outputs)

    def _checked_layout(self, t: int) -> FrameLayout:
        layout = self.frame_layout(t)
        if not bool(layout.target_mask.any()):
            raise ValueError(
                f"a clip of {t} frame(s) gives no frame a next frame to predict (layout "
                f"frames {layout.frame_indices.tolist()}); use clips of at least 2 frames"
            )
        return layout

    def _loss_from_features(
        self,
        video_tokens: torch.Tensor,
        features: torch.Tensor,
        layout: FrameLayout,
        return_outputs: bool,
    ) -> torch.Tensor | tuple[torch.Tensor, ReconstructionOutputs]:
        """Predict each layout frame's next frame from ``video_tokens`` ``[B, F * P, D]`` and
        score it against ``features`` ``[B, F, P, E]`` taken at ``layout.next_index``."""
        b, num_layout, p = features.shape[:3]
        device = video_tokens.device
        next_index = layout.next_index.to(features.device)
        keep = layout.target_mask.to(features.device)[None, :, None, None].to(features.dtype)
        targets = features[:, next_index.clamp(min=0)] * keep
        target_mask = layout.target_mask.to(device)[None].expand(b, -1)

        spec, positions = self._mask_and_positions(layout.num_frames, p)
        x = self.input_proj(video_tokens)
        x = self.predictor(x, spec, positions=positions)
        predictions = self.output_proj(x).view(b, num_layout, p, -1)

        targets = targets.to(device)
        loss = self._loss(predictions[target_mask].float(), targets[target_mask].float())
        loss = loss * self.config.loss_weight
        if not return_outputs:
            return loss
        outputs = ReconstructionOutputs(
            predictions=predictions,
            targets=targets,
            features=features.to(device),
            target_mask=target_mask,
            timestamps=layout.frame_indices.clone(),
            is_fast=layout.is_fast.clone(),
            mask_name=spec.name,
        )
        return loss, outputs

    def _check_hidden(self, hidden_states: torch.Tensor) -> None:
        if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() != 3:
            shape = tuple(hidden_states.shape) if isinstance(hidden_states, torch.Tensor) else None
            raise ValueError(f"hidden_states must be [B, L, {self.hidden_size}], got {shape}")
        if hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(
                f"hidden_states have width {hidden_states.shape[-1]} but the module was built "
                f"with hidden_size={self.hidden_size}"
            )
        check_weights_dtype("hidden_states", hidden_states, self.input_proj.weight, "module",
                            verb="are", called="the hidden states")  # fmt: skip

    def _check_inputs(
        self,
        hidden_states: torch.Tensor,
        video_frames: torch.Tensor,
        visual_token_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(video_frames, torch.Tensor) or video_frames.dim() != 5:
            shape = tuple(video_frames.shape) if isinstance(video_frames, torch.Tensor) else None
            raise ValueError(f"video_frames must be [B, T, C, H, W], got shape {shape}")
        check_video_frames(video_frames)
        self._check_hidden(hidden_states)
        if hidden_states.shape[0] != video_frames.shape[0]:
            raise ValueError(
                f"hidden_states hold {hidden_states.shape[0]} sequences but video_frames hold "
                f"{video_frames.shape[0]} clips"
            )
        if visual_token_mask is None:
            return hidden_states, video_frames
        if (
            visual_token_mask.dtype != torch.bool
            or visual_token_mask.shape != hidden_states.shape[:2]
        ):
            raise ValueError(
                f"visual_token_mask must be a bool tensor of shape {tuple(hidden_states.shape[:2])}"
                f", got {visual_token_mask.dtype} of shape {tuple(visual_token_mask.shape)}"
            )
        counts = visual_token_mask.sum(dim=1)
        if not bool((counts == counts[0]).all()):
            raise ValueError(
                f"visual_token_mask selects a different number of tokens in each row: "
                f"{counts.tolist()}; every clip needs the same number of video tokens"
            )
        b = hidden_states.shape[0]
        selected = hidden_states[visual_token_mask]
        return selected.view(b, int(counts[0]), hidden_states.shape[-1]), video_frames

    def _tower_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Tower features of ``[B, F, C, H, W]`` frames: ``[B * F, P_tower, E]``."""
        if self.tower is None:
            raise ValueError(
                "this module has no vision tower (built with vision_tower=None): give the "
                "targets with compute_loss_from_features"
            )
        feats = self.tower(frames.flatten(0, 1))  # [B*F, P_tower, E]
        if feats.shape[-1] != self.config.embedding_dim:
            raise ValueError(
                f"the vision tower's features are {feats.shape[-1]} wide but embedding_dim is "
                f"{self.config.embedding_dim}; set embedding_dim to {feats.shape[-1]}"
            )
        return feats

    def _pooled(self, feats: torch.Tensor, b: int, f: int, tokens_per_frame: int) -> torch.Tensor:
        """``[B * F, P_tower, E]`` tower features pooled to P tokens: ``[B, F, P, E]``."""
        feats = pool_tokens(feats, tokens_per_frame)
        if self.config.normalize_targets:
            feats = F.layer_norm(feats.float(), feats.shape[-1:]).to(feats.dtype)
        return feats.view(b, f, tokens_per_frame, -1)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kind = self.config.loss_type
        if kind == "mse":
            return F.mse_loss(pred, target)
        if kind == "smooth_l1":
            return F.smooth_l1_loss(pred, target)
        return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()

    def train(self, mode: bool = True) -> AutoregressiveReconstructionModule:
        super().train(mode)
        if self.tower is not None:
            self.tower.train(False)
        return self


def pool_tokens(features: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Average-pool ``[N, P_tower, E]`` patch features to ``[N, P, E]``.

    Square grids pool over 2-D windows (``16x16 -> 8x8``); otherwise runs of ``P_tower / P``
    consecutive patches are averaged. A count that does not divide is an error.

    Example:
        >>> pool_tokens(torch.arange(16.).view(1, 16, 1), 4).flatten().tolist()
        [2.5, 4.5, 10.5, 12.5]
    """
    n, pt, e = features.shape
    p = tokens_per_frame
    if pt == p:
        return features
    if p > pt or pt % p:
        raise ValueError(
            f"the LLM has {p} tokens per frame but the vision tower gives {pt} patches per "
            f"frame; the targets can be pooled only when {p} divides {pt}"
        )
    side_t, side = math.isqrt(pt), math.isqrt(p)
    if side_t * side_t == pt and side * side == p and side_t % side == 0:
        k = side_t // side
        grid = features.transpose(1, 2).reshape(n, e, side_t, side_t)
        return F.avg_pool2d(grid, k).reshape(n, e, p).transpose(1, 2)
    return features.view(n, p, pt // p, e).mean(dim=2)


def create_autoregressive_reconstruction_module(
    vision_tower: nn.Module | str | None,
    hidden_size: int,
    config: AutoregressiveReconstructionConfig | Mapping[str, Any] | str | os.PathLike,
) -> AutoregressiveReconstructionModule:
    """Build the next-frame reconstruction loss for an LLM of width ``hidden_size``.

    Args:
        vision_tower: the encoder whose features are the targets (any ``nn.Module`` returning
            ``[N, P, E]`` or an object with ``last_hidden_state``; a frozen copy is kept),
            ``"pixels"`` for normalised pixel patches of ``config.patch_size``, or ``None`` for
            a module that is given its targets (``compute_loss_from_features``; a HuggingFace
            model's own features: ``flexframe.integrations.transformers``).
        hidden_size: width of the LLM's hidden states.
        config: a dict, a YAML file path, or an :class:`AutoregressiveReconstructionConfig`.

    Example:
        >>> import torch
        >>> from flexframe import create_autoregressive_reconstruction_module
        >>> module = create_autoregressive_reconstruction_module("pixels", hidden_size=32, config={
        ...     "embedding_dim": 48, "patch_size": 4, "predictor_dim": 32, "loss_weight": 0.1})
        >>> video = torch.rand(2, 3, 3, 8, 8)      # [B, T, C, H, W]: 3 frames of 2x2 patches
        >>> h = torch.randn(2, 3 * 4, 32)          # [B, L, hidden]: 4 tokens a frame
        >>> loss = module.compute_autoregressive_loss(hidden_states=h, video_frames=video)
        >>> loss.shape, loss.item() > 0
        (torch.Size([]), True)
    """
    hidden_size = check_int("hidden_size", hidden_size, minimum=1)
    cfg = AutoregressiveReconstructionConfig.from_any(config)
    return AutoregressiveReconstructionModule(vision_tower, hidden_size, cfg)
