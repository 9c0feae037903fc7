"""The ablation's settings: one dataclass, read from YAML, overridden by command-line flags.

Every setting is a field of :class:`AblationConfig`, so a YAML file (``examples/ablation.yaml``)
and the ``flexframe ablate`` flags set the same things: the flag of ``num_clips_train`` is
``--num-clips-train``. A YAML file is a flat mapping of field names to values; an unknown key is
an error that names the closest field. Values are checked by type and range when the config is
built, so a typo fails before any training starts.

Example:
    >>> cfg = AblationConfig.from_dict({"steps": 50, "seeds": [0, 7]})
    >>> cfg.steps, cfg.seeds, cfg.num_frames
    (50, [0, 7], 32)
    >>> AblationConfig.from_dict({"stpes": 50})
    Traceback (most recent call last):
    ...
    ValueError: unknown ablation setting 'stpes' in the config. Did you mean 'steps' or ...
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from flexframe._checks import did_you_mean

__all__ = ["AblationConfig", "CONFIG_SECTIONS", "load_ablation_config"]

_PRESET_NAMES = ("auto", "short", "medium", "long")
_BACKENDS = ("auto", "flex", "sdpa")
_LOSS_TYPES = ("mse", "smooth_l1", "cosine")
_MERGE_STRATEGIES = ("concat", "interleave")


def _setting(default: Any, section: str, help: str, kind: str, **limits: Any) -> Any:
    """A dataclass field with what the config checker and the flag parser need to know."""
    meta = {"section": section, "help": help, "kind": kind, **limits}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class AblationConfig:
    """Every setting of the ablation: data, model, training and output.

    Build one with :meth:`from_dict` or :func:`load_ablation_config` (both check every value)
    and change it with :meth:`updated`. The defaults run all four configurations x 3 seeds on
    moving digits in a few minutes on a 2-core CPU.

    Example:
        >>> cfg = AblationConfig()
        >>> cfg.num_frames, cfg.image_size, cfg.patch_size, cfg.tokens_per_frame
        (32, 32, 8, 16)
        >>> cfg.updated(steps=20).steps
        20
    """

    # -- data --------------------------------------------------------------------------------
    videos: list[str] | None = _setting(
        None,
        "data",
        "video files, folders or globs to train on instead of moving digits",
        "paths",
    )
    num_frames: int = _setting(32, "data", "frames per clip T", "int", minimum=2)
    image_size: int = _setting(
        32, "data", "frame height and width in pixels (a multiple of patch_size)", "int", minimum=1
    )
    num_clips_train: int = _setting(256, "data", "moving-digit training clips", "int", minimum=1)
    num_clips_test: int = _setting(64, "data", "moving-digit held-out clips", "int", minimum=1)
    num_digits: int = _setting(2, "data", "digits per moving-digit clip", "int", minimum=1)
    data_seed: int = _setting(
        0, "data", "seed of the moving-digit clips (the same for every run)", "int", minimum=0
    )
    clips_per_video: int = _setting(
        8,
        "data",
        "clips cut from each video (evenly spaced windows of num_frames)",
        "int",
        minimum=1,
    )
    test_fraction: float = _setting(
        0.25,
        "data",
        "share of the videos held out for testing",
        "float",
        low=0.0,
        high=1.0,
        positive=True,
    )
    grayscale: bool = _setting(False, "data", "read videos as one luma channel", "bool")
    # -- model -------------------------------------------------------------------------------
    patch_size: int = _setting(8, "model", "pixels per patch side", "int", minimum=1)
    hidden_size: int = _setting(
        64, "model", "width of the stand-in LLM's hidden states", "int", minimum=1
    )
    encoder_depth: int = _setting(
        1, "model", "residual MLP blocks in the per-frame encoder", "int", minimum=0
    )
    predictor_dim: int = _setting(
        64, "model", "width of the reconstruction predictor", "int", minimum=1
    )
    predictor_depth: int = _setting(2, "model", "predictor layers", "int", minimum=1)
    predictor_heads: int = _setting(4, "model", "predictor attention heads", "int", minimum=1)
    fast_slow_preset: str = _setting(
        "auto",
        "model",
        "fast/slow preset: auto (from num_frames), short, medium or long",
        "choice",
        choices=_PRESET_NAMES,
    )
    num_fast: int | None = _setting(
        None, "model", "fast frames (overrides the preset)", "int?", minimum=1
    )
    num_slow: int | None = _setting(
        None, "model", "slow frames (overrides the preset)", "int?", minimum=1
    )
    fast_stride: int | None = _setting(
        None, "model", "frames between fast frames (overrides the preset)", "int?", minimum=1
    )
    slow_stride: int | None = _setting(
        None, "model", "frames between slow frames (overrides the preset)", "int?", minimum=1
    )
    merge_strategy: str = _setting(
        "concat",
        "model",
        "order of fast/slow frames: concat ([slow | fast]) or interleave",
        "choice",
        choices=_MERGE_STRATEGIES,
    )
    loss_type: str = _setting(
        "mse",
        "model",
        "training loss: mse, smooth_l1 or cosine (held-out errors are always MSE)",
        "choice",
        choices=_LOSS_TYPES,
    )
    attention_backend: str = _setting(
        "auto",
        "model",
        "auto (sdpa on the CPU, flex on a GPU), flex or sdpa",
        "choice",
        choices=_BACKENDS,
    )
    # -- training ----------------------------------------------------------------------------
    steps: int = _setting(150, "training", "optimizer steps per run", "int", minimum=1)
    batch_size: int = _setting(8, "training", "clips per step", "int", minimum=1)
    lr: float = _setting(3e-3, "training", "AdamW learning rate", "float", low=0.0, positive=True)
    weight_decay: float = _setting(0.0, "training", "AdamW weight decay", "float", low=0.0)
    warmup_steps: int = _setting(
        10,
        "training",
        "linear learning-rate warm-up steps (then cosine decay)",
        "int",
        minimum=0,
    )
    seeds: list[int] = _setting(
        [0, 1, 2],
        "training",
        "seeds of the runs: a count N (seeds 0..N-1) or a list",
        "seeds",
    )
    eval_batch_size: int = _setting(32, "training", "clips per held-out batch", "int", minimum=1)
    device: str = _setting("auto", "training", "auto (cuda if present), cpu or cuda[:i]", "device")
    parallel: str = _setting(
        "auto",
        "training",
        "under torchrun: fsdp (FSDP2 fully_shard), ddp, or auto (fsdp on GPUs, ddp on the CPU)",
        "choice",
        choices=("auto", "fsdp", "ddp"),
    )
    activation_checkpointing: bool = _setting(
        False, "training", "recompute the predictor's layers in the backward pass", "bool"
    )
    checkpoint_dir: str | None = _setting(
        None,
        "training",
        "save each run's training state here (torch.distributed.checkpoint) and resume from it; "
        "a resume with other settings (steps included), data or number of processes is refused",
        "path?",
    )
    checkpoint_every: int = _setting(
        50, "training", "steps between checkpoints (with checkpoint_dir)", "int", minimum=1
    )
    stop_after_step: int | None = _setting(
        None,
        "training",
        "stop a run that starts before this step there, as a killed run would (to test "
        "resuming); a run resumed at or past it goes on to the end",
        "int?",
        minimum=1,
    )
    # -- output ------------------------------------------------------------------------------
    out: str = _setting("runs/ablation", "output", "folder for results and pictures", "path")
    quiet: bool = _setting(False, "output", "no progress bars or per-run lines", "bool")

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _check_value(f, getattr(self, f.name)))
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size must be a multiple of patch_size, got image_size={self.image_size} "
                f"and patch_size={self.patch_size}"
            )
        self.fast_slow_settings()  # a preset without a fast/slow split fails here, not later
        if self.predictor_dim % self.predictor_heads:
            raise ValueError(
                f"predictor_dim must be divisible by predictor_heads, got predictor_dim="
                f"{self.predictor_dim} and predictor_heads={self.predictor_heads}"
            )

    def fast_slow_settings(self) -> dict[str, int]:
        """``num_fast``, ``num_slow``, ``fast_stride`` and ``slow_stride`` of the fast/slow runs.

        Each comes from its own setting when given, else from the preset (``auto``: the preset
        for ``num_frames``).

        Example:
            >>> AblationConfig(num_frames=32, num_fast=4).fast_slow_settings()
            {'num_fast': 4, 'num_slow': 8, 'fast_stride': 1, 'slow_stride': 4}
        """
        from flexframe.sampling import get_fast_slow_preset, preset_for_num_frames

        if self.fast_slow_preset == "auto":
            preset = preset_for_num_frames(self.num_frames)
        else:
            preset = get_fast_slow_preset(self.fast_slow_preset)
        values = {}
        for key in ("num_fast", "num_slow", "fast_stride", "slow_stride"):
            own = getattr(self, key)
            values[key] = own if own is not None else getattr(preset, key)
        missing = [k for k, v in values.items() if v is None]
        if missing:
            how = "num_frames=" + str(self.num_frames) if self.fast_slow_preset == "auto" else ""
            raise ValueError(
                f"the fast/slow preset {preset.name!r} ({how or 'chosen'}) has no fast/slow "
                f"split, so '+Fast-Slow' would equal 'Baseline': set {', '.join(missing)}, or "
                "fast_slow_preset to medium or long"
            )
        if values["num_fast"] < 2:
            # The final frame is the one target every configuration shares (the common metric);
            # a fast stream of one frame predicts nothing.
            raise ValueError(
                f"num_fast must be >= 2 so that the fast stream predicts the clip's final frame, "
                f"got num_fast={values['num_fast']}"
            )
        return values

    @property
    def tokens_per_frame(self) -> int:
        """Patches per frame: ``(image_size // patch_size) ** 2``."""
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "the config") -> AblationConfig:
        """A config from ``{field: value}``; unknown keys and bad values raise, naming them.

        Args:
            values: field names to values (a YAML file's mapping).
            source: what the values came from, for error messages (a file name).

        Example:
            >>> AblationConfig.from_dict({"seeds": 2, "videos": "clips/*.mp4"}).seeds
            [0, 1]
            >>> AblationConfig.from_dict({"steps": "many"})
            Traceback (most recent call last):
            ...
            TypeError: steps must be an int, got 'many' (str) in the config
        """
        if not isinstance(values, Mapping):
            raise TypeError(
                f"{source} must be a mapping of setting names to values, got "
                f"{type(values).__name__}"
            )
        known = {f.name: f for f in fields(cls)}
        for key in values:
            if key not in known:
                hint = did_you_mean(str(key), known)
                raise ValueError(
                    f"unknown ablation setting {key!r} in {source}.{hint} "
                    f"Settings: {', '.join(known)}"
                )
        checked = {}
        for key, value in values.items():
            try:
                checked[key] = _check_value(known[key], value)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{exc} in {source}") from None
        try:
            return cls(**checked)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc} in {source}") from None

    def updated(self, **changes: Any) -> AblationConfig:
        """A copy with ``changes`` applied and checked like :meth:`from_dict`.

        Example:
            >>> AblationConfig().updated(seeds=1, out="runs/x").seeds
            [0]
        """
        merged = {**self.to_dict(), **changes}
        return AblationConfig.from_dict(merged, source="the settings")

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain YAML/JSON values.

        Example:
            >>> AblationConfig().to_dict()["batch_size"]
            8
        """
        return dataclasses.asdict(self)


CONFIG_SECTIONS: tuple[str, ...] = ("data", "model", "training", "output")
"""The groups of settings, in the order ``--help`` and ``examples/ablation.yaml`` list them."""


def _check_value(f: dataclasses.Field, value: Any) -> Any:
    """``value`` checked (and normalized) for field ``f``; errors name the field and value."""
    meta, name = f.metadata, f.name
    kind = meta["kind"]
    if kind == "int?" and value is None:
        return None
    if kind in ("int", "int?"):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
        if value < meta["minimum"]:
            raise ValueError(f"{name} must be >= {meta['minimum']}, got {value}")
        return int(value)
    if kind == "float":
        # PyYAML reads "1e-3" (no dot) as a string: accept what float() reads, finite only.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise TypeError(f"{name} must be a number, got {value!r} (str)") from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
        value = float(value)
        low, high, positive = meta.get("low"), meta.get("high"), meta.get("positive", False)
        too_low = low is not None and (value <= low if positive else value < low)
        if not math.isfinite(value) or too_low or (high is not None and value >= high):
            bounds = f"{'>' if positive else '>='} {low}" + (f" and < {high}" if high else "")
            raise ValueError(f"{name} must be a finite number {bounds}, got {value}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be true or false, got {value!r}")
        return value
    if kind == "choice":
        choices = meta["choices"]
        if value not in choices:
            hint = did_you_mean(str(value), choices)
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}.{hint}")
        return value
    if kind == "seeds":
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            if value < 1:
                raise ValueError(f"seeds must be a count >= 1 or a list of seeds, got {value}")
            return list(range(int(value)))
        if not isinstance(value, (list, tuple)) or not value:
            raise TypeError(
                f"seeds must be a count >= 1 or a non-empty list of ints, got {value!r}"
            )
        out = []
        for i, s in enumerate(value):
            if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
                raise ValueError(f"seeds[{i}] must be an int >= 0, got {s!r}")
            out.append(int(s))
        if len(set(out)) != len(out):
            raise ValueError(f"seeds must be distinct, got {out}")
        return out
    if kind == "paths":
        if value is None:
            return None
        if isinstance(value, (str, os.PathLike)):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise TypeError(f"{name} must be a path, a glob or a list of them, got {value!r}")
        for i, v in enumerate(value):
            if not isinstance(v, (str, os.PathLike)) or not str(v):
                raise TypeError(f"{name}[{i}] must be a path or glob, got {v!r}")
        return [os.fspath(v) for v in value]
    if kind == "path?" and value is None:
        return None
    if kind in ("path", "path?"):
        if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
            raise TypeError(f"{name} must be a path, got {value!r}")
        return os.fspath(value)
    if kind == "device":
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string like 'cpu' or 'cuda:0', got {value!r}")
        if value != "auto":
            import torch

            try:
                torch.device(value)
            except RuntimeError:
                raise ValueError(
                    f"{name} must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {value!r}"
                ) from None
        return value
    raise AssertionError(f"unhandled setting kind {kind!r}")  # pragma: no cover


def load_ablation_config(path: str | os.PathLike) -> AblationConfig:
    """Read an :class:`AblationConfig` from a YAML file of ``setting: value`` lines.

    Raises:
        FileNotFoundError: no such file (the message names it).
        ValueError: the file is not YAML, not a mapping, or has an unknown setting (the message
            names the closest setting) or a bad value.

    Example:
        >>> _ = Path("ablation.yaml").write_text("steps: 30\\nseeds: [1, 2]\\n")
        >>> cfg = load_ablation_config("ablation.yaml")
        >>> cfg.steps, cfg.seeds
        (30, [1, 2])
    """
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise FileNotFoundError(f"config file '{path}' {what}")
    try:
        values = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"config file '{path}' is not valid YAML: {exc}") from None
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ValueError(
            f"config file '{path}' must hold a mapping of setting: value lines, got "
            f"{type(values).__name__}"
        )
    return AblationConfig.from_dict(values, source=f"config file '{path}'")
