"""`AutoregressiveReconstructionConfig`: the loss's settings, from a dict, a YAML file or itself.

Keys of the seed design (``embedding_dim``, ``loss_weight``, ``use_frame_causal_mask``,
``use_fast_slow_frames``, ``fast_stride``, ``slow_stride``, ``num_fast``, ``num_slow``) keep their
meaning; the rest are flexframe's. Unknown keys are an error that suggests the closest known key.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from flexframe._checks import check_int, close_matches, did_you_mean
from flexframe.masks import list_masks
from flexframe.sampling import FAST_SLOW_PRESETS, get_fast_slow_preset

LOSS_TYPES = ("mse", "smooth_l1", "cosine")
MERGE_STRATEGIES = ("concat", "interleave")
_FAST_SLOW_KEYS = ("fast_stride", "slow_stride", "num_fast", "num_slow")
_FAST_SLOW_DEFAULTS = {"fast_stride": 1, "slow_stride": 4, "num_fast": 8, "num_slow": 8}


def _check_number(key: str, value: Any) -> None:
    """A real, finite number (not a bool, not a string, not nan or inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")


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

    Example:
        >>> cfg = AutoregressiveReconstructionConfig.from_any({"preset": "medium"})
        >>> cfg.use_fast_slow_frames, cfg.num_fast, cfg.slow_stride
        (True, 8, 4)
    """

    embedding_dim: int = 1152
    loss_weight: float = 0.1
    use_frame_causal_mask: bool = True
    use_fast_slow_frames: bool | None = None
    fast_stride: int | None = None
    slow_stride: int | None = None
    num_fast: int | None = None
    num_slow: int | None = None
    preset: str | None = None
    merge_strategy: str = "concat"
    mask: str | None = None
    window_size: int | None = None
    predictor_dim: int = 256
    predictor_depth: int = 2
    predictor_heads: int = 4
    predictor_kv_heads: int | None = None
    mlp_ratio: float = 4.0
    loss_type: str = "mse"
    normalize_targets: bool = False
    attention_backend: str = "auto"
    activation_checkpointing: bool = False
    patch_size: int = 14

    def __post_init__(self) -> None:
        self.embedding_dim = check_int("embedding_dim", self.embedding_dim, minimum=1)
        _check_number("loss_weight", self.loss_weight)
        if self.loss_weight < 0:
            raise ValueError(f"loss_weight must be >= 0, got {self.loss_weight}")
        for key in ("use_frame_causal_mask", "normalize_targets", "activation_checkpointing"):
            _check_bool(key, getattr(self, key))
        if self.use_fast_slow_frames is not None:
            _check_bool("use_fast_slow_frames", self.use_fast_slow_frames)
        self._apply_preset()
        for key in _FAST_SLOW_KEYS:
            setattr(self, key, check_int(key, getattr(self, key), minimum=1))
        _check_choice("merge_strategy", self.merge_strategy, MERGE_STRATEGIES)
        _check_choice("loss_type", self.loss_type, LOSS_TYPES)
        _check_choice("attention_backend", self.attention_backend, ("auto", "flex", "sdpa"))
        if self.mask is not None:
            _check_choice("mask", self.mask, list_masks())
        if self.window_size is not None:
            self.window_size = check_int("window_size", self.window_size, minimum=0)
        if self.mask == "sliding-window" and self.window_size is None:
            raise ValueError("mask='sliding-window' needs window_size (frames back), got None")
        for key in ("predictor_dim", "predictor_depth", "predictor_heads", "patch_size"):
            setattr(self, key, check_int(key, getattr(self, key), minimum=1))
        if self.predictor_kv_heads is not None:
            self.predictor_kv_heads = check_int(
                "predictor_kv_heads", self.predictor_kv_heads, minimum=1
            )
        _check_number("mlp_ratio", self.mlp_ratio)
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        # The predictor's heads: checked here so that the message names the config keys.
        dim, heads = self.predictor_dim, self.predictor_heads
        if dim % heads or (dim // heads) % 4:
            raise ValueError(
                f"predictor_dim / predictor_heads must be a whole head size that is a multiple "
                f"of 4 (frame+patch rotary positions), got predictor_dim={dim}, "
                f"predictor_heads={heads}"
            )
        if self.predictor_kv_heads is not None and heads % self.predictor_kv_heads:
            raise ValueError(
                f"predictor_kv_heads must divide predictor_heads, got "
                f"predictor_kv_heads={self.predictor_kv_heads}, predictor_heads={heads}"
            )

    def _apply_preset(self) -> None:
        if self.preset is not None:
            _check_choice("preset", self.preset, tuple(FAST_SLOW_PRESETS))
            preset = get_fast_slow_preset(self.preset)
            wanted = {"use_fast_slow_frames": preset.use_fast_slow_frames}
            if preset.use_fast_slow_frames:
                wanted.update(preset.sampler_kwargs())
            else:
                given = [k for k in _FAST_SLOW_KEYS if getattr(self, k) is not None]
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
        for key, default in _FAST_SLOW_DEFAULTS.items():
            if getattr(self, key) is None:
                setattr(self, key, default)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AutoregressiveReconstructionConfig:
        """Build from a mapping; an unknown key raises ``KeyError`` suggesting the closest one.

        Example:
            >>> AutoregressiveReconstructionConfig.from_dict({"embeding_dim": 8})
            Traceback (most recent call last):
            ...
            KeyError: "unknown config key 'embeding_dim'. Did you mean 'embedding_dim'? ..."
        """
        if not isinstance(values, Mapping):
            raise TypeError(f"config must be a mapping, got {type(values).__name__}")
        known = [f.name for f in fields(cls)]
        for key in values:
            if key not in known:
                hits = close_matches(str(key), known)
                hint = f" Did you mean {hits[0]!r}?" if hits else ""
                raise KeyError(f"unknown config key {key!r}.{hint} Known keys: {', '.join(known)}")
        return cls(**dict(values))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> AutoregressiveReconstructionConfig:
        """Build from a YAML file whose top level is a mapping of config keys."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {str(path)!r}")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, Mapping):
            raise ValueError(f"config file {str(path)!r} must hold a mapping of keys to values")
        return cls.from_dict(values)

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

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (presets already resolved)."""
        return dataclasses.asdict(self)


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, got {value!r}")


def _check_choice(name: str, value: object, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}."
            f"{did_you_mean(str(value), choices)}"
        )
