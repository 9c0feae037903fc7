"""`AutoregressiveReconstructionConfig`: the loss's settings, from a dict, a YAML file or itself.

Keys of the seed design (``embedding_dim``, ``loss_weight``, ``use_frame_causal_mask``,
``use_fast_slow_frames``, ``fast_stride``, ``slow_stride``, ``num_fast``, ``num_slow``) keep their
meaning; the rest are flexframe's. Unknown keys are an error that suggests the closest known key.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flexframe._checks import check_choice, check_rotary_heads
from flexframe._config import check_settings, from_mapping, read_yaml, setting
from flexframe._vocab import (
    ATTENTION_BACKENDS,
    FAST_SLOW_DEFAULTS,
    FAST_SLOW_KEYS,
    LOSS_TYPES,
    MERGE_STRATEGIES,
    PRESET_NAMES,
)
from flexframe.masks import list_masks
from flexframe.masks.prompt import PROMPT_MASKS
from flexframe.sampling import get_fast_slow_preset


@dataclass
class AutoregressiveReconstructionConfig:
    """Settings of the autoregressive next-frame reconstruction loss.

    Attributes:
        embedding_dim: width E of the vision tower's features (the targets).
        loss_weight: factor on the loss before it is added to the language-model loss.
        use_frame_causal_mask: frame-level causal mask (True) or the token-causal baseline.
        use_fast_slow_frames: sample fast and slow frames (``flexframe.sampling``) instead of
            using every frame; the predictor then uses ``timestamp-causal`` over the merged
            sequence. ``None`` means: as the preset says, else False.
        fast_stride, slow_stride, num_fast, num_slow: the sampler's settings (``None``: from the
            preset, else 1, 4, 8, 8).
        preset: ``"short"``, ``"medium"`` or ``"long"`` (the seed design's tuning table) instead
            of spelling the four numbers out. A preset and an explicit, different value of one
            of its numbers is an error.
        merge_strategy: ``"concat"`` (``[slow | fast]``) or ``"interleave"``.
        mask: any registry mask name, overriding the default choice. Masks that do not follow
            timestamps leak the future over a fast/slow sequence; that is logged as a warning.
        window_size: frames back for ``mask="sliding-window"``.
        predictor_dim, predictor_depth, predictor_heads, predictor_kv_heads, mlp_ratio: the
            predictor, a small ``FlexFrameDecoder``.
        loss_type: ``"mse"``, ``"smooth_l1"`` or ``"cosine"``.
        normalize_targets: normalise each target patch over its E features (mean 0, var 1).
        attention_backend: ``"auto"``, ``"flex"`` or ``"sdpa"``.
        activation_checkpointing: recompute the predictor's layers in the backward pass.
        patch_size: patch size of the built-in ``"pixels"`` tower.
        tokens_per_frame: the LLM's tokens in one frame (P), for
            ``compute_autoregressive_loss``: the hidden states must hold the layout's frames of
            P tokens (the tower's patches pooled to P). ``None``: one token per tower patch.
            Never inferred by a division.

    Example:
        >>> cfg = AutoregressiveReconstructionConfig.from_any({"preset": "medium"})
        >>> cfg.use_fast_slow_frames, cfg.num_fast, cfg.slow_stride
        (True, 8, 4)
    """

    embedding_dim: int = setting(1152, "width of the tower's features", "int", minimum=1)
    loss_weight: float = setting(0.1, "factor on the loss", "float", low=0.0)
    use_frame_causal_mask: bool = setting(True, "frame-causal (or token-causal) mask", "bool")
    use_fast_slow_frames: bool | None = setting(None, "fast/slow frames", "bool?")
    fast_stride: int | None = setting(None, "frames between fast frames", "int?", minimum=1)
    slow_stride: int | None = setting(None, "frames between slow frames", "int?", minimum=1)
    num_fast: int | None = setting(None, "fast frames", "int?", minimum=1)
    num_slow: int | None = setting(None, "slow frames", "int?", minimum=1)
    preset: str | None = setting(None, "fast/slow preset", "str?")
    merge_strategy: str = setting("concat", "fast/slow order", "choice", choices=MERGE_STRATEGIES)
    mask: str | None = setting(None, "a registry mask name", "str?")
    window_size: int | None = setting(None, "frames back (sliding-window)", "int?", minimum=0)
    predictor_dim: int = setting(256, "predictor width", "int", minimum=1)
    predictor_depth: int = setting(2, "predictor layers", "int", minimum=1)
    predictor_heads: int = setting(4, "predictor heads", "int", minimum=1)
    predictor_kv_heads: int | None = setting(None, "predictor key/value heads", "int?", minimum=1)
    mlp_ratio: float = setting(4.0, "MLP width over dim", "float", low=0.0, strict_low=True)
    loss_type: str = setting("mse", "training loss", "choice", choices=LOSS_TYPES)
    normalize_targets: bool = setting(False, "normalise each target patch", "bool")
    attention_backend: str = setting(
        "auto", "auto, flex or sdpa", "choice", choices=ATTENTION_BACKENDS
    )
    activation_checkpointing: bool = setting(False, "recompute the predictor's layers", "bool")
    patch_size: int = setting(14, "patch size of the pixels tower", "int", minimum=1)
    tokens_per_frame: int | None = setting(None, "the LLM's tokens in one frame", "int?", minimum=1)

    def __post_init__(self) -> None:
        check_settings(self)
        self._apply_preset()
        if self.mask is not None:  # the predictor's mask: a clip's, not a prompt's
            check_choice("mask", self.mask, [m for m in list_masks() if m not in PROMPT_MASKS])
        if self.mask == "sliding-window" and self.window_size is None:
            raise ValueError("mask='sliding-window' needs window_size (frames back), got None")
        # The predictor's heads: checked here so that the message names the config keys.
        heads = self.predictor_heads
        check_rotary_heads("predictor_dim", self.predictor_dim, "predictor_heads", heads)
        if self.predictor_kv_heads is not None and heads % self.predictor_kv_heads:
            raise ValueError(
                f"predictor_kv_heads must divide predictor_heads, got "
                f"predictor_kv_heads={self.predictor_kv_heads}, predictor_heads={heads}"
            )

    def _apply_preset(self) -> None:
        if self.preset is not None:
            check_choice("preset", self.preset, PRESET_NAMES)
            preset = get_fast_slow_preset(self.preset)
            wanted: dict[str, Any] = {"use_fast_slow_frames": preset.use_fast_slow_frames}
            if preset.use_fast_slow_frames:
                wanted.update(preset.sampler_kwargs() or {})
            else:
                given = [k for k in FAST_SLOW_KEYS if getattr(self, k) is not None]
                if given:
                    raise ValueError(
                        f"preset {self.preset!r} uses all frames (no fast/slow sampling), so "
                        f"{given[0]}={getattr(self, given[0])!r} would be ignored; drop it or "
                        "choose a fast/slow preset"
                    )
            for key, value in wanted.items():
                given = getattr(self, key)
                if given is not None and given != value:
                    raise ValueError(
                        f"preset {self.preset!r} sets {key}={value!r} but the config also sets "
                        f"{key}={given!r}; drop one of them"
                    )
                setattr(self, key, value)
        if self.use_fast_slow_frames is None:
            self.use_fast_slow_frames = False
        for key, default in FAST_SLOW_DEFAULTS.items():
            if getattr(self, key) is None:
                setattr(self, key, default)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AutoregressiveReconstructionConfig:
        """Build from a mapping; an unknown key raises ``ValueError`` naming the closest one.

        Example:
            >>> AutoregressiveReconstructionConfig.from_dict({"embeding_dim": 8})
            Traceback (most recent call last):
            ...
            ValueError: unknown setting 'embeding_dim' in the config. Did you mean ...
        """
        return from_mapping(cls, values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> AutoregressiveReconstructionConfig:
        """Build from a YAML file whose top level is a mapping of config keys."""
        return from_mapping(cls, read_yaml(path), source=f"config file '{path}'")

    @classmethod
    def from_any(
        cls, config: AutoregressiveReconstructionConfig | Mapping[str, Any] | str | os.PathLike
    ) -> AutoregressiveReconstructionConfig:
        """A config from a config object, a dict, or a YAML file path."""
        if isinstance(config, cls):
            return dataclasses.replace(config)
        if isinstance(config, Mapping):
            return cls.from_dict(config)
        if isinstance(config, (str, os.PathLike)):
            return cls.from_yaml(config)
        raise TypeError(
            "config must be a dict, a YAML file path or an AutoregressiveReconstructionConfig, "
            f"got {type(config).__name__}"
        )

    def fast_slow(self) -> dict[str, int] | None:
        """The sampler's four numbers (``FAST_SLOW_KEYS``) when fast/slow frames are on, else
        ``None``.

        Example:
            >>> AutoregressiveReconstructionConfig(preset="medium").fast_slow()
            {'fast_stride': 1, 'slow_stride': 4, 'num_fast': 8, 'num_slow': 8}
        """
        if not self.use_fast_slow_frames:
            return None
        return {key: getattr(self, key) for key in FAST_SLOW_KEYS}

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (presets already resolved)."""
        return dataclasses.asdict(self)
