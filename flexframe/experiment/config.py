"""The ablation's settings: one dataclass, read from YAML, overridden by command-line flags.

Every setting is a field of :class:`AblationConfig`, made with flexframe's one config mechanism
(:mod:`flexframe._config`), so a YAML file (``examples/ablation.yaml``) and the
``flexframe ablate`` flags set the same things: the flag of ``num_clips_train`` is
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
    ValueError: unknown setting 'stpes' in the config. Did you mean 'steps' ...
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flexframe._checks import check_rotary_heads
from flexframe._config import check_settings, from_mapping, read_yaml, setting
from flexframe._vocab import (
    ATTENTION_BACKENDS,
    FAST_SLOW_KEYS,
    LOSS_TYPES,
    MERGE_STRATEGIES,
    PARALLEL_MODES,
    PRESET_NAMES,
)

__all__ = ["AblationConfig", "CONFIG_SECTIONS", "STAND_INS", "PRECISIONS", "load_ablation_config"]

CONFIG_SECTIONS: tuple[str, ...] = ("data", "model", "training", "output")
"""The groups of settings, in the order ``--help`` and ``examples/ablation.yaml`` list them."""

STAND_INS: tuple[str, ...] = ("per-frame", "transformer")
"""The stand-in LLMs: a per-patch MLP that mixes no tokens, or a small token-causal transformer
over the video tokens (under the reconstruction module's ``llm_mask``)."""

PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")
"""How the runs compute: ``auto`` is bfloat16 autocast on CUDA and float32 on the CPU."""


def _data(default: Any, help: str, kind: str, **limits: Any) -> Any:
    return setting(default, help, kind, section="data", **limits)


def _model(default: Any, help: str, kind: str, **limits: Any) -> Any:
    return setting(default, help, kind, section="model", **limits)


def _training(default: Any, help: str, kind: str, **limits: Any) -> Any:
    return setting(default, help, kind, section="training", **limits)


def _output(default: Any, help: str, kind: str, **limits: Any) -> Any:
    return setting(default, help, kind, section="output", **limits)


@dataclass
class AblationConfig:
    """Every setting of the ablation: data, model, training and output.

    Build one with :meth:`from_dict` or :func:`load_ablation_config` (both check every value)
    and change it with :meth:`updated`. The defaults run the four configurations x 5 seeds on
    moving digits in a few minutes on a 2-core CPU.

    Example:
        >>> cfg = AblationConfig()
        >>> cfg.num_frames, cfg.image_size, cfg.patch_size, cfg.tokens_per_frame
        (32, 32, 8, 16)
        >>> cfg.updated(steps=20).steps
        20
    """

    # -- data --------------------------------------------------------------------------------
    videos: list[str] | None = _data(
        None, "video files, folders or globs to train on instead of moving digits", "paths?"
    )
    num_frames: int = _data(32, "frames per clip T", "int", minimum=2)
    image_size: int = _data(
        32, "frame height and width in pixels (a multiple of patch_size)", "int", minimum=1
    )
    num_clips_train: int = _data(256, "moving-digit training clips", "int", minimum=1)
    num_clips_test: int = _data(64, "moving-digit held-out clips", "int", minimum=1)
    num_digits: int = _data(2, "digits per moving-digit clip", "int", minimum=1)
    data_seed: int = _data(
        0, "seed of the moving-digit clips (the same for every run)", "int", minimum=0
    )
    clips_per_video: int = _data(
        32, "clips cut from each video (evenly spaced windows of num_frames)", "int", minimum=1
    )
    test_fraction: float = _data(
        0.25, "share of the videos held out for testing", "float", low=0.0, high=1.0,
        strict_low=True,
    )  # fmt: skip
    grayscale: bool = _data(False, "read videos as one luma channel", "bool")
    augment: bool = _data(
        True, "show each training clip flipped, transposed or time-reversed at random (one "
        "draw per seed: the same for every configuration); few videos are learnt by heart "
        "without it", "bool",
    )  # fmt: skip
    # -- model -------------------------------------------------------------------------------
    patch_size: int = _model(8, "pixels per patch side", "int", minimum=1)
    stand_in: str = _model(
        "per-frame", "the stand-in LLM: per-frame (an MLP per patch, mixes no tokens) or "
        "transformer (token-causal attention over the video tokens, under the module's "
        "llm_mask)", "choice", choices=STAND_INS,
    )  # fmt: skip
    hidden_size: int = _model(64, "width of the stand-in LLM's hidden states", "int", minimum=1)
    encoder_depth: int = _model(
        1, "the stand-in's depth: MLP blocks (per-frame) or transformer layers", "int", minimum=0
    )
    encoder_heads: int = _model(4, "attention heads of the transformer stand-in", "int", minimum=1)
    predictor_dim: int = _model(64, "width of the reconstruction predictor", "int", minimum=1)
    predictor_depth: int = _model(2, "predictor layers", "int", minimum=1)
    predictor_heads: int = _model(4, "predictor attention heads", "int", minimum=1)
    fast_slow_preset: str = _model(
        "auto", "fast/slow preset: auto (from num_frames), short, medium or long", "choice",
        choices=("auto", *PRESET_NAMES),
    )  # fmt: skip
    num_fast: int | None = _model(None, "fast frames (overrides the preset)", "int?", minimum=1)
    num_slow: int | None = _model(None, "slow frames (overrides the preset)", "int?", minimum=1)
    fast_stride: int | None = _model(
        None, "frames between fast frames (overrides the preset)", "int?", minimum=1
    )
    slow_stride: int | None = _model(
        None, "frames between slow frames (overrides the preset)", "int?", minimum=1
    )
    merge_strategy: str = _model(
        "concat", "order of fast/slow frames: concat ([slow | fast]) or interleave", "choice",
        choices=MERGE_STRATEGIES,
    )  # fmt: skip
    predict_residual: bool = _model(
        True, "predict the change from each frame's own features (an output of 0 is copying "
        "the frame); false: the next frame's features from scratch", "bool",
    )  # fmt: skip
    normalize_targets: bool = _model(
        True, "scale the prediction to unit root mean square over the training clips (the "
        "training loss then reads 1 for copying)", "bool",
    )  # fmt: skip
    motion_scale: str = _model(
        "auto", "with normalize_targets, also scale each clip's predicted change by the size of "
        "the change it saw last (the frame minus its stream's previous one), so a still clip "
        "stays near copying and a fast one may move far: on, off, or auto (on for videos, off "
        "for moving digits)", "choice", choices=("auto", "on", "off"),
    )  # fmt: skip
    loss_type: str = _model(
        "mse", "training loss: mse, smooth_l1 or cosine (held-out errors are always MSE)",
        "choice", choices=LOSS_TYPES,
    )  # fmt: skip
    attention_backend: str = _model(
        "auto", "auto (flex on CUDA, sdpa on the CPU), flex or sdpa", "choice",
        choices=ATTENTION_BACKENDS,
    )  # fmt: skip
    # -- training ----------------------------------------------------------------------------
    steps: int = _training(150, "optimizer steps per run", "int", minimum=1)
    batch_size: int = _training(6, "clips per step", "int", minimum=1)
    lr: float = _training(3e-3, "AdamW learning rate", "float", low=0.0, strict_low=True)
    weight_decay: float = _training(0.0, "AdamW weight decay", "float", low=0.0)
    warmup_steps: int = _training(
        10, "linear learning-rate warm-up steps (then cosine decay)", "int", minimum=0
    )
    seeds: list[int] = _training(
        [0, 1, 2, 3, 4], "seeds of the runs: a count N (seeds 0..N-1) or a list", "seeds"
    )
    leak_rows: bool = _training(
        False, "also run the seed design's leaking variants of Full, labelled as leaking",
        "bool",
    )  # fmt: skip
    eval_batch_size: int = _training(32, "clips per held-out batch", "int", minimum=1)
    device: str = _training("auto", "auto (cuda if present), cpu or cuda[:i]", "device")
    precision: str = _training(
        "auto", "auto (bfloat16 autocast on CUDA, float32 on the CPU), float32 or bfloat16",
        "choice", choices=PRECISIONS,
    )  # fmt: skip
    parallel: str = _training(
        "auto",
        "under torchrun: fsdp (FSDP2 fully_shard), ddp, or auto (fsdp on GPUs, ddp on the CPU)",
        "choice",
        choices=PARALLEL_MODES,
    )
    activation_checkpointing: bool = _training(
        False, "recompute the predictor's layers in the backward pass", "bool"
    )
    checkpoint_dir: str | None = _training(
        None,
        "save each run's training state here (torch.distributed.checkpoint) and resume from it; "
        "a resume with other settings (steps included), data or number of processes is refused",
        "path?",
    )
    checkpoint_every: int = _training(
        50, "steps between checkpoints (with checkpoint_dir)", "int", minimum=1
    )
    stop_after_step: int | None = _training(
        None,
        "stop a run that starts before this step there, as a killed run would (to test "
        "resuming); a run resumed at or past it goes on to the end",
        "int?",
        minimum=1,
    )
    # -- output ------------------------------------------------------------------------------
    out: str = _output("runs/ablation", "folder for results and pictures", "path")
    quiet: bool = _output(False, "no progress bars or per-run lines", "bool")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size must be a multiple of patch_size, got image_size={self.image_size} "
                f"and patch_size={self.patch_size}"
            )
        self.fast_slow_settings()  # a preset without a fast/slow split fails here, not later
        if self.stand_in == "transformer":
            if self.encoder_depth < 1:
                raise ValueError(
                    "stand_in='transformer' needs encoder_depth >= 1 (its layers), got "
                    f"encoder_depth={self.encoder_depth}"
                )
            check_rotary_heads("hidden_size", self.hidden_size, "encoder_heads", self.encoder_heads)
        check_rotary_heads("predictor_dim", self.predictor_dim, "predictor_heads",
                           self.predictor_heads)  # fmt: skip

    def fast_slow_settings(self) -> dict[str, int]:
        """``num_fast``, ``num_slow``, ``fast_stride`` and ``slow_stride`` of the fast/slow runs.

        Each comes from its own setting when given, else from the preset (``auto``: the preset
        for ``num_frames``).

        Example:
            >>> AblationConfig(num_frames=32, num_fast=4).fast_slow_settings()
            {'fast_stride': 1, 'slow_stride': 4, 'num_fast': 4, 'num_slow': 8}
        """
        from flexframe.sampling import get_fast_slow_preset, preset_for_num_frames

        if self.fast_slow_preset == "auto":
            preset = preset_for_num_frames(self.num_frames)
        else:
            preset = get_fast_slow_preset(self.fast_slow_preset)
        values = {}
        for key in FAST_SLOW_KEYS:
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

    def autocast_dtype(self, device: Any) -> Any:
        """The dtype the runs autocast to on ``device`` (a ``torch.device``), or None for
        float32: ``precision='auto'`` is bfloat16 on CUDA, float32 elsewhere.

        Example:
            >>> import torch
            >>> AblationConfig().autocast_dtype(torch.device("cpu")) is None
            True
        """
        import torch

        if self.precision == "bfloat16" or (self.precision == "auto" and device.type == "cuda"):
            return torch.bfloat16
        return None

    @property
    def uses_motion_scale(self) -> bool:
        """Whether runs scale the predicted change by the last one (``motion_scale``; ``auto``:
        for videos), which needs ``predict_residual`` and ``normalize_targets``.

        Example:
            >>> cfg = AblationConfig()
            >>> cfg.uses_motion_scale, cfg.updated(videos=["a.mp4"]).uses_motion_scale
            (False, True)
        """
        wanted = self.motion_scale == "on" or (self.motion_scale == "auto" and bool(self.videos))
        return wanted and self.predict_residual and self.normalize_targets

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
        return from_mapping(cls, values, source=source)

    def updated(self, **changes: Any) -> AblationConfig:
        """A copy with ``changes`` applied and checked like :meth:`from_dict`.

        Example:
            >>> AblationConfig().updated(seeds=1, out="runs/x").seeds
            [0]
        """
        return AblationConfig.from_dict({**self.to_dict(), **changes}, source="the settings")

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain YAML/JSON values.

        Example:
            >>> AblationConfig().to_dict()["batch_size"]
            6
        """
        return dataclasses.asdict(self)


def load_ablation_config(path: str | os.PathLike) -> AblationConfig:
    """Read an :class:`AblationConfig` from a YAML file of ``setting: value`` lines.

    Raises:
        FileNotFoundError: no such file (the message names it).
        ValueError: the file is not YAML, not a mapping, or has an unknown setting (the message
            names the closest setting) or a bad value.

    Example:
        >>> from pathlib import Path
        >>> _ = Path("ablation.yaml").write_text("steps: 30\\nseeds: [1, 2]\\n")
        >>> cfg = load_ablation_config("ablation.yaml")
        >>> cfg.steps, cfg.seeds
        (30, [1, 2])
    """
    return from_mapping(AblationConfig, read_yaml(path), source=f"config file '{path}'")
