"""The seed design's ablation: token vs frame masks, all frames vs fast/slow, one fair loop.

Four configurations train the same reconstruction setup and differ only in the predictor's mask
and the frames it sees (:data:`ABLATION_CONFIGURATIONS`)::

    Baseline      token-causal mask, all frames
    +Frame Mask   causal-frame mask, all frames
    +Fast-Slow    token-causal mask (over the fast/slow layout), fast/slow frames
    Full          timestamp-causal frame mask, fast/slow frames

What is held equal: for each seed every configuration starts from the same weights (the stand-in
LLM and the predictor are built right after ``torch.manual_seed(seed)``, and the mask and sampling
add no parameters), reads the same clips in the same batch order, and takes the same number of
steps with the same optimizer and schedule. ``init_checksum`` and ``batch_order_checksum`` in the
results let anyone check this.

The stand-in LLM (:class:`FrameEncoder`) turns each frame's patches into hidden states without
mixing frames, so all temporal modelling (and any leak of the future) is the predictor's.

Metrics on the held-out clips, all mean squared errors of the frozen tower's features:

- ``test_error``: on every target the configuration itself predicts (its training objective).
  Configurations predict different frame sets (all 47 transitions vs the fast/slow streams'), so
  this column compares a configuration with its own copy baseline, not with the others.
- ``last_frame_error``: on the clip's final frame ``T - 1`` only, predicted from the frames before
  it. Every configuration predicts it (the fast stream always ends at ``T - 1``), so this is the
  one number that compares all four on the same task.
- ``copy_error`` and ``last_frame_copy_error``: the trivial predictor "next frame = this frame"
  on the same targets; a ratio below 1 means the model beats copying.

Checkpoints (``checkpoint_dir``): each (configuration, seed) run saves its training state in its
own folder and resumes from it when run again. The checkpoint holds the run's fingerprint: every
setting that shapes its training (all but :data:`NOT_IN_FINGERPRINT`: where files go, how often
checkpoints are taken, the simulated kill, the held-out batch size, quiet, and the list of seeds
of which the run's own seed is part), its configuration and seed, and the data's checksum. A
resume with any of them changed is refused, naming what differs. That includes ``steps``: the
learning rate follows a cosine over all ``steps``, so a longer run would have taken other steps
from the start. The training time of the steps before the checkpoint is kept in it and added.

Example:
    >>> [c.name for c in ABLATION_CONFIGURATIONS]
    ['Baseline', '+Frame Mask', '+Fast-Slow', 'Full']
    >>> enc = FrameEncoder(patch_size=4, channels=1, hidden_size=16, tokens_per_frame=4)
    >>> enc(torch.rand(2, 3, 1, 8, 8)).shape          # [B, F, C, H, W] -> [B, F * P, hidden]
    torch.Size([2, 12, 16])
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flexframe.experiment.config import AblationConfig

__all__ = [
    "ABLATION_CONFIGURATIONS",
    "AblationConfiguration",
    "AblationData",
    "AblationResult",
    "FrameEncoder",
    "NOT_IN_FINGERPRINT",
    "RunStopped",
    "TrainStep",
    "build_models",
    "check_ablation_setup",
    "leak_free",
    "load_ablation_data",
    "run_ablation",
    "mask_label",
]

Log = Callable[[str], None]


@dataclass(frozen=True)
class AblationConfiguration:
    """One row of the ablation: a name and the two switches of the reconstruction module.

    Example:
        >>> ABLATION_CONFIGURATIONS[3]
        AblationConfiguration(name='Full', use_frame_causal_mask=True, use_fast_slow_frames=True)
    """

    name: str
    use_frame_causal_mask: bool
    use_fast_slow_frames: bool


ABLATION_CONFIGURATIONS: tuple[AblationConfiguration, ...] = (
    AblationConfiguration("Baseline", False, False),
    AblationConfiguration("+Frame Mask", True, False),
    AblationConfiguration("+Fast-Slow", False, True),
    AblationConfiguration("Full", True, True),
)
"""The seed design's four configurations, in table order."""


# -- the stand-in LLM --------------------------------------------------------------------------
def patchify(frames: Tensor, patch_size: int) -> Tensor:
    """``[B, F, C, H, W]`` -> ``[B, F, P, C * patch_size**2]``, patches in row-major order.

    Example:
        >>> patchify(torch.arange(16).view(1, 1, 1, 4, 4), 2)[0, 0].tolist()
        [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    """
    b, f, c, h, w = frames.shape
    p = patch_size
    x = frames.reshape(b, f, c, h // p, p, w // p, p)
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, f, (h // p) * (w // p), c * p * p)


class FrameEncoder(nn.Module):
    """A small per-frame encoder standing in for the LLM: patches -> hidden states.

    Each patch goes through a linear embedding plus a learned position of the patch within its
    frame, then ``depth`` residual MLP blocks applied token by token. Nothing here mixes tokens of
    different frames, so what a hidden state knows about time comes only from the predictor's
    attention (and its mask).

    Args:
        patch_size: pixels per patch side.
        channels: image channels ``C``.
        hidden_size: width of the hidden states.
        tokens_per_frame: patches per frame ``P``.
        depth: residual MLP blocks after the embedding.

    Example:
        >>> enc = FrameEncoder(patch_size=2, channels=3, hidden_size=8, tokens_per_frame=4)
        >>> enc(torch.rand(1, 5, 3, 4, 4)).shape
        torch.Size([1, 20, 8])
    """

    def __init__(
        self,
        patch_size: int,
        channels: int,
        hidden_size: int,
        tokens_per_frame: int,
        depth: int = 1,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tokens_per_frame = tokens_per_frame
        self.embed = nn.Linear(channels * patch_size**2, hidden_size)
        self.patch_position = nn.Parameter(torch.randn(tokens_per_frame, hidden_size) * 0.02)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(hidden_size),
                nn.Linear(hidden_size, 2 * hidden_size),
                nn.GELU(),
                nn.Linear(2 * hidden_size, hidden_size),
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, frames: Tensor) -> Tensor:
        """``[B, F, C, H, W]`` frames -> ``[B, F * P, hidden_size]`` hidden states."""
        patches = patchify(frames, self.patch_size)  # [B, F, P, C * p * p]
        if patches.shape[2] != self.tokens_per_frame:
            raise ValueError(
                f"frames of {tuple(frames.shape[-2:])} pixels give {patches.shape[2]} patches of "
                f"{self.patch_size}, but this encoder was built for {self.tokens_per_frame}"
            )
        x = self.embed(patches) + self.patch_position
        for block in self.blocks:
            x = x + block(x)
        return self.norm(x).flatten(1, 2)


# -- data --------------------------------------------------------------------------------------
@dataclass
class AblationData:
    """The clips every run trains and tests on, and where they came from.

    Attributes:
        train: ``[N, T, C, H, W]`` float32 training clips in [0, 1].
        test: ``[M, T, C, H, W]`` float32 held-out clips.
        source: ``"moving-digits"`` or ``"videos"``.
        description: one line saying what was loaded.
        videos_used: video files that gave clips (empty for moving digits).
        videos_skipped: ``(file, reason)`` for each video left out.
    """

    train: Tensor
    test: Tensor
    source: str
    description: str
    videos_used: list[str] = field(default_factory=list)
    videos_skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def channels(self) -> int:
        """Image channels ``C``."""
        return int(self.train.shape[2])

    def checksum(self) -> str:
        """sha256 (first 16 hex digits) of the train and test clips' bytes."""
        return _sha(self.train, self.test)


def _window_starts(num_available: int, num_frames: int, max_windows: int) -> list[int]:
    """Evenly spaced starts of up to ``max_windows`` windows of ``num_frames`` frames."""
    span = num_available - num_frames
    count = min(max_windows, span + 1)
    if count == 1:
        return [0]
    return [round(k * span / (count - 1)) for k in range(count)]


def _read_windows(
    path: Path, starts: Sequence[int], num_frames: int, config: AblationConfig
) -> Tensor:
    from flexframe.data import read_video_frames

    indices = [s + t for s in starts for t in range(num_frames)]
    frames = read_video_frames(path, indices, size=config.image_size, grayscale=config.grayscale)
    return frames.view(len(starts), num_frames, *frames.shape[1:])


def _load_videos(config: AblationConfig, log: Log) -> AblationData:
    from flexframe.data import VideoClips, VideoReadError

    t = config.num_frames
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Probing only (frame counts, unreadable and too-short files); the clips are read below.
        probe = VideoClips(config.videos, num_frames=t, size=config.image_size, name="videos")
    for w in caught:  # skips are logged from probe.skipped below; anything else goes on
        if not str(w.message).startswith("skipping video"):
            warnings.warn(w.message, w.category, stacklevel=2)
    skipped = list(probe.skipped)
    files = list(zip(probe.paths, probe.frame_counts, strict=True))
    if len(files) == 1:
        # One video: train on its beginning and test on its end, never on the same frames.
        path, count = files[0]
        cut = round(count * (1.0 - config.test_fraction))
        if cut < t or count - cut < t:
            raise ValueError(
                f"videos: only one usable video ('{path}', {count} frames), and a held-out part "
                f"needs num_frames={t} frames on each side of the split at test_fraction="
                f"{config.test_fraction}: give at least {2 * t} frames, more videos, or a "
                "smaller num_frames"
            )
        plan = [(path, 0, cut, "train"), (path, cut, count, "test")]
    else:
        num_test = min(len(files) - 1, max(1, round(config.test_fraction * len(files))))
        plan = [
            (path, 0, count, "train" if i < len(files) - num_test else "test")
            for i, (path, count) in enumerate(files)
        ]
    clips: dict[str, list[Tensor]] = {"train": [], "test": []}
    used: list[str] = []
    for path, lo, hi, split in plan:
        starts = [lo + s for s in _window_starts(hi - lo, t, config.clips_per_video)]
        try:
            clips[split].append(_read_windows(path, starts, t, config))
        except (VideoReadError, IndexError) as exc:
            # The container's frame count can promise frames a damaged file cannot decode.
            skipped.append((str(path), f"unreadable: {getattr(exc, 'reason', exc)}"))
            continue
        if str(path) not in used:
            used.append(str(path))
    for name, reason in skipped:
        log(f"skipped video {name}: {reason}")
    for split in ("train", "test"):
        if not clips[split]:
            raise ValueError(
                f"videos: no {split} clips left after skipping unreadable files "
                f"({len(used)} usable of {len(used) + len(skipped)}); give more videos"
            )
    train, test = torch.cat(clips["train"]), torch.cat(clips["test"])
    description = (
        f"{len(used)} of {len(used) + len(skipped)} video(s) used "
        f"({len(skipped)} skipped): {len(train)} train and {len(test)} held-out clips of "
        f"{t} frames at {config.image_size}x{config.image_size}"
    )
    return AblationData(train, test, "videos", description, used, skipped)


def load_ablation_data(config: AblationConfig, log: Log | None = None) -> AblationData:
    """The training and held-out clips of ``config``: moving digits, or its ``videos``.

    Moving digits: ``num_clips_train`` clips from the train split (seed ``data_seed``) and
    ``num_clips_test`` from the test split (seed ``data_seed + 1``), which draws other images.

    Videos (``config.videos``: files, folders or globs): each file of at least ``num_frames``
    frames gives up to ``clips_per_video`` evenly spaced windows of ``num_frames`` consecutive
    frames, center-cropped and resized to ``image_size``; only frames up to the last window's
    end are decoded. The last ``test_fraction`` of the files (at least one) are held out; a single
    video is split in time instead (train on its beginning, test on its end). Unreadable and
    too-short files are logged by name and skipped.

    Raises:
        FileNotFoundError: a videos entry matches no file.
        ValueError: no usable video, or too few to hold any out.

    Example:
        >>> data = load_ablation_data(AblationConfig(num_clips_train=3, num_clips_test=2,
        ...                                          num_frames=32, image_size=16))
        >>> data.train.shape, data.test.shape, data.source
        (torch.Size([3, 32, 1, 16, 16]), torch.Size([2, 32, 1, 16, 16]), 'moving-digits')
    """
    log = log or _stderr
    if config.videos is not None:
        return _load_videos(config, log)
    from flexframe.data import make_moving_digits

    digit_size = min(12, config.image_size // 2)
    common = dict(
        num_frames=config.num_frames,
        image_size=config.image_size,
        num_digits=config.num_digits,
        digit_size=digit_size,
    )
    train = make_moving_digits(config.num_clips_train, seed=config.data_seed, **common)
    test = make_moving_digits(
        config.num_clips_test, seed=config.data_seed + 1, split="test", **common
    )
    description = (
        f"moving digits: {len(train)} train and {len(test)} held-out clips of "
        f"{config.num_frames} frames at {config.image_size}x{config.image_size}"
    )
    return AblationData(train, test, "moving-digits", description)


# -- models ------------------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> the first CUDA GPU if there is one, else the CPU.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but torch sees no CUDA GPU; use device='auto'")
    return resolved


def resolve_backend(backend: str, device: torch.device) -> str:
    """The attention backend a run uses: ``"auto"`` -> flex on a GPU, sdpa on the CPU.

    Unlike the decoder's own ``"auto"``, this also evaluates with sdpa on the CPU: flex there
    would compile a CPU kernel for a few held-out batches.

    Example:
        >>> resolve_backend("auto", torch.device("cpu"))
        'sdpa'
    """
    if backend == "auto":
        return "flex" if device.type == "cuda" else "sdpa"
    if backend == "flex" and device.type == "cpu":
        raise ValueError(
            "attention_backend='flex' cannot train on the CPU (FlexAttention has no CPU backward "
            "pass); use 'auto' or 'sdpa'"
        )
    return backend


def module_config(
    config: AblationConfig, configuration: AblationConfiguration, channels: int, backend: str
) -> dict[str, Any]:
    """The ``config`` dict for ``create_autoregressive_reconstruction_module`` of one run.

    Only the two switches depend on ``configuration``; everything else is shared.

    Example:
        >>> cfg = module_config(AblationConfig(), ABLATION_CONFIGURATIONS[0], 1, "sdpa")
        >>> cfg["embedding_dim"], cfg["use_frame_causal_mask"], cfg["num_fast"]
        (64, False, 8)
    """
    return {
        "embedding_dim": config.patch_size**2 * channels,
        "patch_size": config.patch_size,
        "loss_weight": 1.0,
        "use_frame_causal_mask": configuration.use_frame_causal_mask,
        "use_fast_slow_frames": configuration.use_fast_slow_frames,
        **config.fast_slow_settings(),
        "merge_strategy": config.merge_strategy,
        "predictor_depth": config.predictor_depth,
        "predictor_heads": config.predictor_heads,
        "predictor_dim": config.predictor_dim,
        "attention_backend": backend,
        "loss_type": config.loss_type,
        "activation_checkpointing": config.activation_checkpointing,
    }


def build_models(
    config: AblationConfig,
    configuration: AblationConfiguration,
    seed: int,
    channels: int = 1,
    device: torch.device | str = "cpu",
    backend: str = "sdpa",
) -> tuple[FrameEncoder, nn.Module]:
    """The stand-in LLM and the reconstruction module of one run, seeded with ``seed``.

    Both are built right after ``torch.manual_seed(seed)``, encoder first, so two configurations
    with the same seed start from the same weights.

    Example:
        >>> cfg = AblationConfig(hidden_size=16, predictor_dim=16)
        >>> enc, _ = build_models(cfg, ABLATION_CONFIGURATIONS[0], seed=0)
        >>> enc2, _ = build_models(cfg, ABLATION_CONFIGURATIONS[3], seed=0)
        >>> torch.equal(enc.embed.weight, enc2.embed.weight)
        True
    """
    from flexframe.reconstruction import create_autoregressive_reconstruction_module

    torch.manual_seed(seed)
    encoder = FrameEncoder(
        config.patch_size,
        channels,
        config.hidden_size,
        config.tokens_per_frame,
        config.encoder_depth,
    )
    module = create_autoregressive_reconstruction_module(
        vision_tower="pixels",
        hidden_size=config.hidden_size,
        config=module_config(config, configuration, channels, backend),
    )
    return encoder.to(device), module.to(device)


def _target_frames(layout: Any) -> Tensor:
    """``[F]`` the original frame each layout frame's prediction targets, -1 where none."""
    frames, nxt = layout.frame_indices.cpu(), layout.next_index.cpu()
    return torch.where(nxt >= 0, frames[nxt.clamp(min=0)], torch.full_like(frames, -1))


def mask_label(spec: Any) -> str:
    """The mask's name, with how tokens see each other within a frame when the mask says.

    Example:
        >>> from flexframe import get_mask
        >>> mask_label(get_mask("timestamp-causal", timestamps=[0, 1], num_patches_per_frame=2,
        ...                     within_frame="causal"))
        'timestamp-causal (token-causal within a frame)'
    """
    within = dict(spec.params).get("within_frame")
    if within is None or within == "full":
        return spec.name
    return f"{spec.name} (token-{within} within a frame)"


def leak_free(
    spec: Any, frame_indices: Tensor, target_frames: Tensor, tokens_per_frame: int
) -> bool | None:
    """Whether no prediction can see its target: no query token of a layout frame whose target
    is frame ``g`` may attend to a token of a frame at or after ``g``.

    Checked on the dense mask, so it is skipped (``None``) above 8192 tokens, or when the mask
    is not ``[F * P, F * P]``.

    Args:
        spec: the predictor's mask, ``[F * P, F * P]``.
        frame_indices: ``[F]`` the original frame of each layout frame.
        target_frames: ``[F]`` the original frame each layout frame predicts, -1 for none.
        tokens_per_frame: ``P``.

    Example:
        >>> from flexframe import get_mask
        >>> frames, targets = torch.tensor([0, 2, 1, 2]), torch.tensor([2, -1, 2, -1])
        >>> leak_free(get_mask("timestamp-causal", timestamps=[0, 2, 1, 2],
        ...                    num_patches_per_frame=1), frames, targets, 1)
        True
        >>> leak_free(get_mask("token-causal", seq_len=4), frames, targets, 1)  # 1 sees 2
        False
    """
    f, p = len(frame_indices), tokens_per_frame
    if spec.q_len != f * p or spec.kv_len != f * p or f * p > 8192:
        return None
    visible = spec.to_dense().view(f, p, f, p).any(dim=3).any(dim=1)  # [F, F] frame sees frame
    frames, targets = frame_indices.cpu(), target_frames.cpu()
    sees_target = visible & (frames[None, :] >= targets[:, None]) & (targets[:, None] >= 0)
    return not bool(sees_target.any())


def _sha(*tensors: Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _init_checksum(*modules: nn.Module) -> str:
    digest = hashlib.sha256()
    for m in modules:
        for name, value in m.state_dict().items():
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _batch_order(num_clips: int, steps: int, batch_size: int, seed: int) -> Tensor:
    """``[steps, batch_size]`` clip indices: the global batches of ``flexframe.distributed``
    (epochs of seeded permutations), the same for every configuration of a seed."""
    from itertools import islice

    from flexframe.distributed import global_batches

    batches = islice(global_batches(num_clips, batch_size, seed), steps)
    return torch.tensor(list(batches), dtype=torch.int64).view(steps, batch_size)


def _lr_factor(step: int, warmup: int, steps: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine down to 10%


# -- one run -----------------------------------------------------------------------------------
@dataclass
class _Eval:
    test_error: float
    copy_error: float
    last_frame_error: float
    last_frame_copy_error: float


def _evaluate(
    model: nn.Module,
    clips: Tensor,
    layout: Any,
    targets_of: Tensor,
    config: AblationConfig,
    device: torch.device,
) -> _Eval:
    """Sums of squared errors over every held-out clip, divided once at the end.

    Under torchrun every rank evaluates all held-out clips (they are few): each rank then runs
    the same number of forward passes, which FSDP's collectives need, and gets the same numbers.
    """
    t = clips.shape[1]
    last = (targets_of == t - 1).to(device)  # [F] the positions that predict frame T - 1
    sums = torch.zeros(4, dtype=torch.float64)
    counts = torch.zeros(2, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(clips), config.eval_batch_size):
            video = clips[lo : lo + config.eval_batch_size].to(device)
            _, out = model(video, return_outputs=True)
            m = out.target_mask
            pred, tgt, feat = out.predictions.double(), out.targets.double(), out.features.double()
            sums[0] += (pred[m] - tgt[m]).pow(2).sum().cpu()
            sums[1] += (feat[m] - tgt[m]).pow(2).sum().cpu()
            counts[0] += tgt[m].numel()
            sums[2] += (pred[:, last] - tgt[:, last]).pow(2).sum().cpu()
            sums[3] += (feat[:, last] - tgt[:, last]).pow(2).sum().cpu()
            counts[1] += tgt[:, last].numel()
    own, last_frame = (sums[:2] / counts[0]).tolist(), (sums[2:] / counts[1]).tolist()
    return _Eval(own[0], own[1], last_frame[0], last_frame[1])


class TrainStep(nn.Module):
    """The stand-in LLM and the reconstruction module as one module whose ``forward`` is the
    loss, so that DDP and FSDP2 see (and synchronise) every trainable parameter in one call.

    Example:
        >>> cfg = AblationConfig(hidden_size=16, predictor_dim=16, image_size=16)
        >>> step = TrainStep(*build_models(cfg, ABLATION_CONFIGURATIONS[1], seed=0))
        >>> step(torch.rand(2, 32, 1, 16, 16)).shape  # [B, T, C, H, W] -> the loss
        torch.Size([])
    """

    def __init__(self, encoder: FrameEncoder, module: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.module = module

    def forward(self, video: Tensor, return_outputs: bool = False) -> Any:
        """The loss on ``video`` ``[B, T, C, H, W]`` (and the outputs if asked)."""
        layout = self.module.frame_layout(num_frames=video.shape[1])
        hidden = self.encoder(video[:, layout.frame_indices.to(video.device)])  # [B, F*P, D]
        return self.module.compute_autoregressive_loss(
            hidden_states=hidden, video_frames=video, return_outputs=return_outputs
        )


class RunStopped(Exception):
    """Raised when ``stop_after_step`` ends a run early (its checkpoint lets it resume).

    Attributes:
        step: the steps the run had taken.
        folder: its checkpoint folder, or None without ``checkpoint_dir``.
    """

    def __init__(self, message: str, step: int = 0, folder: Path | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.folder = folder


NOT_IN_FINGERPRINT: tuple[str, ...] = (
    "seeds",
    "eval_batch_size",
    "checkpoint_dir",
    "checkpoint_every",
    "stop_after_step",
    "out",
    "quiet",
    "videos",
    "activation_checkpointing",
)
"""Settings a run may resume with changed: they do not shape its training. ``seeds`` is the list
of runs (each run's own seed is in its fingerprint); ``eval_batch_size`` only batches the
held-out evaluation, which runs after the last step; ``videos`` names the files, whose clips the
data checksum covers; ``activation_checkpointing`` recomputes, with the same arithmetic. The
device, attention backend, parallel mode and fast/slow numbers enter the fingerprint as what they
resolve to (``auto`` on a CPU is ``sdpa``, a preset is its four numbers), so spelling the same
run another way resumes it."""

_RESOLVED_IN_FINGERPRINT = (
    "device", "attention_backend", "parallel", "fast_slow_preset",
    "num_fast", "num_slow", "fast_stride", "slow_stride",
)  # fmt: skip


def _checkpoint_folder(
    config: AblationConfig, configuration: AblationConfiguration, seed: int
) -> Path:
    slug = configuration.name.lower().replace("+", "plus-").replace(" ", "-")
    return Path(config.checkpoint_dir) / f"{slug}-seed{seed}"


def _latest_checkpoint(folder: Path | None) -> Path | None:
    """The checkpoint ``folder/latest`` names, or None when the run has none."""
    if folder is None or not (folder / "latest").is_file():
        return None
    return folder / (folder / "latest").read_text().strip()


def _resolve_parallel(parallel: str, device: torch.device) -> str:
    """``"auto"`` -> FSDP2 on GPUs, DDP on the CPU."""
    if parallel == "auto":
        return "fsdp" if device.type == "cuda" else "ddp"
    return parallel


def _fingerprint(
    config: AblationConfig,
    configuration: AblationConfiguration,
    seed: int,
    data_checksum: str,
) -> dict[str, Any]:
    """What a run's training depends on: its settings (but :data:`NOT_IN_FINGERPRINT`), its
    configuration and seed, and the data's checksum."""
    skip = (*NOT_IN_FINGERPRINT, *_RESOLVED_IN_FINGERPRINT)
    settings = {k: v for k, v in config.to_dict().items() if k not in skip}
    device = resolve_device(config.device)
    return {
        **settings,
        "device": device.type,
        "attention_backend": resolve_backend(config.attention_backend, device),
        "parallel": _resolve_parallel(config.parallel, device),
        **config.fast_slow_settings(),
        "configuration": configuration.name,
        "seed": seed,
        "data_checksum": data_checksum,
    }


def _check_resumable(checkpoint: Path, fingerprint: dict[str, Any], world_size: int) -> None:
    """Raise ``ValueError`` unless ``checkpoint`` was saved by ``world_size`` processes with
    ``fingerprint``; the message names every setting that differs. Reads files only, the same
    ones on every rank, so under torchrun every rank raises alike, before any collective."""
    from flexframe.distributed import read_checkpoint_info

    info = read_checkpoint_info(checkpoint, world_size=world_size)
    folder = checkpoint.parent
    start_over = f"start over with another checkpoint_dir (or delete '{folder}')"
    saved = info["extra"].get("fingerprint")
    if saved is None:
        raise ValueError(
            f"the checkpoint '{checkpoint}' does not record the settings it was trained with "
            f"(an older flexframe wrote it), so resuming it cannot be checked; {start_over}"
        )
    missing = object()
    differ = [
        f"{key}={saved.get(key, missing)!r} in the checkpoint, {fingerprint.get(key, missing)!r}"
        " now"
        for key in dict.fromkeys([*fingerprint, *saved])
        if saved.get(key, missing) != fingerprint.get(key, missing)
    ]
    if differ:
        why = (
            " (steps counts: the learning rate decays over all steps)"
            if saved.get("steps") != fingerprint.get("steps")
            else ""
        )
        raise ValueError(
            f"cannot resume the checkpoint in '{folder}': it was trained with other settings: "
            f"{'; '.join(differ)}{why}. Rerun with the checkpoint's settings, or {start_over}"
        )


def check_ablation_setup(
    config: AblationConfig,
    data: AblationData,
    world_size: int = 1,
    configurations: Sequence[AblationConfiguration] = ABLATION_CONFIGURATIONS,
) -> None:
    """Check what :func:`run_ablation` would refuse, without training: the global batch splits
    over ``world_size`` processes, and every checkpoint it would resume (``checkpoint_dir``)
    was saved by as many processes, with the same settings and data.

    Raises:
        ValueError: the first problem, named (the setting, its value, the checkpoint folder).

    Example:
        >>> cfg = AblationConfig(num_clips_train=2, num_clips_test=1, batch_size=3)
        >>> check_ablation_setup(cfg, load_ablation_data(cfg), world_size=2)
        Traceback (most recent call last):
        ...
        ValueError: batch_size=3 does not split over 2 processes; choose a multiple of the ...
    """
    _check_batch_split(config, world_size)
    if config.checkpoint_dir is None:
        return
    checksum = data.checksum()
    for seed in config.seeds:
        for configuration in configurations:
            latest = _latest_checkpoint(_checkpoint_folder(config, configuration, seed))
            if latest is not None:
                fingerprint = _fingerprint(config, configuration, seed, checksum)
                _check_resumable(latest, fingerprint, world_size)


def _check_batch_split(config: AblationConfig, world_size: int) -> None:
    if config.batch_size % world_size:
        raise ValueError(
            f"batch_size={config.batch_size} does not split over {world_size} processes; "
            "choose a multiple of the number of processes"
        )


def _run_one(
    config: AblationConfig,
    configuration: AblationConfiguration,
    seed: int,
    data: AblationData,
    env: Any,
    backend: str,
    show_progress: bool,
    keep_state: bool = False,
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from flexframe import viz
    from flexframe.distributed import (
        all_reduce_mean,
        load_checkpoint,
        rank_slice,
        save_checkpoint,
        wrap_model,
    )

    device = env.device
    t = config.num_frames
    encoder, module = build_models(config, configuration, seed, data.channels, device, backend)
    init_checksum = _init_checksum(encoder, module)
    layout = module.frame_layout(num_frames=t)
    spec = module.mask_spec(num_frames=t, tokens_per_frame=config.tokens_per_frame)
    targets_of = _target_frames(layout)
    if not bool((targets_of == t - 1).any()):
        raise ValueError(
            f"{configuration.name}: no layout frame predicts the final frame {t - 1} "
            f"(layout frames {layout.frame_indices.tolist()}), so the common last-frame metric "
            "is undefined"
        )
    parallel = _resolve_parallel(config.parallel, device)
    model = wrap_model(TrainStep(encoder, module), env, parallel)
    params = [p for p in model.parameters() if p.requires_grad]
    num_parameters = sum(
        p.numel() for m in (encoder, module) for p in m.parameters() if p.requires_grad
    )
    # One global batch a step; each rank takes its contiguous share, so W processes make the
    # update one process makes over the whole batch.
    order = _batch_order(len(data.train), config.steps, config.batch_size, seed)
    fingerprint = _fingerprint(config, configuration, seed, data.checksum())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, config.warmup_steps, config.steps)
    )
    losses: list[float] = []
    rows_seen: list[list[int]] = []  # this rank's clips, step by step
    start_step = 0
    earlier_seconds = 0.0  # training time of the steps before the checkpoint resumed
    folder = _checkpoint_folder(config, configuration, seed) if config.checkpoint_dir else None
    latest = _latest_checkpoint(folder)
    if latest is not None:
        _check_resumable(latest, fingerprint, env.world_size)  # before any collective
        state = load_checkpoint(latest, model, optimizer)
        start_step = state["step"]
        losses = list(state["extra"]["losses"])
        schedule.load_state_dict(state["extra"]["schedule"])
        earlier_seconds = float(state["extra"]["train_seconds"])
    # A simulated kill stops a run that started before its step; a run resumed at or past it
    # (the same command run again) goes on to the end.
    stop_at = config.stop_after_step
    if stop_at is not None and start_step >= stop_at:
        stop_at = None
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        desc=f"{configuration.name} (seed {seed})",
        disable=not show_progress,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    model.train()
    start = time.perf_counter()
    for step in range(start_step, config.steps):
        rows = rank_slice(order[step].tolist(), env)
        rows_seen.append(rows)
        video = data.train[rows].to(device, non_blocking=True)  # [B / W, T, C, H, W]
        loss = model(video)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(all_reduce_mean(loss.detach(), env))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(
                f"{configuration.name} (seed {seed}): the loss became {losses[-1]} at step "
                f"{step}; lower lr (now {config.lr})"
            )
        bar.update(1)
        if step % 10 == 0 or step == config.steps - 1:
            bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
        done = step + 1
        stopping = done == stop_at and done < config.steps
        if folder is not None and (done % config.checkpoint_every == 0 or stopping):
            extra = {
                "losses": list(losses),
                "schedule": schedule.state_dict(),
                "train_seconds": earlier_seconds + time.perf_counter() - start,
                "fingerprint": fingerprint,
            }
            _save(folder, done, model, optimizer, extra, env, save_checkpoint)
        if stopping:
            bar.close()
            where = (
                f"; its checkpoint is in {folder}"
                if folder is not None
                else "; without checkpoint_dir nothing was saved"
            )
            raise RunStopped(
                f"{configuration.name} (seed {seed}) stopped after step {done} as asked "
                f"(stop_after_step={stop_at}){where}",
                step=done,
                folder=folder,
            )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = earlier_seconds + time.perf_counter() - start
    bar.close()
    scores = _evaluate(model, data.test, layout, targets_of, config, device)
    no_leak = leak_free(spec, layout.frame_indices, targets_of, config.tokens_per_frame)
    tail = max(1, config.steps // 10)
    run = {
        "configuration": configuration.name,
        "seed": seed,
        "mask": mask_label(spec),
        "num_layout_frames": len(layout.frame_indices),
        "num_tokens": spec.q_len,
        "block_sparsity": 100.0 * viz.block_sparsity(spec, 128).skipped_share,
        "leak_free": no_leak,
        "num_parameters": num_parameters,
        "final_train_loss": statistics.fmean(losses[-tail:]),
        "test_error": scores.test_error,
        "copy_error": scores.copy_error,
        "last_frame_error": scores.last_frame_error,
        "last_frame_copy_error": scores.last_frame_copy_error,
        "train_seconds": train_seconds,
        "init_checksum": init_checksum,
        "batch_order_checksum": _sha(order),
        "layout_frame_indices": layout.frame_indices.tolist(),
        "loss_curve": losses,
        "world_size": env.world_size,
        "parallel": parallel if env.distributed else "none",
        "resumed_from_step": start_step,
        "_rows_seen": rows_seen,
        "_order": order.tolist(),
        "_spec": spec,
    }
    if keep_state:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        run["_state"] = get_model_state_dict(model, options=options)
    return run


def _save(folder, done, model, optimizer, extra, env, save_checkpoint) -> None:
    """A checkpoint in ``folder/step-NNNNNN``, then ``folder/latest`` naming it (rank 0, after
    every rank has written, so ``latest`` never names a half-written checkpoint)."""
    import torch.distributed as dist

    name = f"step-{done:06d}"
    save_checkpoint(folder / name, model, optimizer, done, extra)
    if env.distributed:
        dist.barrier()
    if env.is_main:
        tmp = folder / "latest.tmp"
        tmp.write_text(name)
        tmp.replace(folder / "latest")
    if env.distributed:
        dist.barrier()


# -- the whole ablation ------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass
class AblationResult:
    """What :func:`run_ablation` measured: one record per run and one summary per configuration.

    Attributes:
        config: the settings it ran with.
        data: the clips (and videos used or skipped).
        device: where it ran.
        attention_backend: the attention backend the runs used.
        runs: one dict per (configuration, seed), in run order.
        masks: each configuration's predictor mask (a ``MaskSpec``), for pictures.
    """

    config: AblationConfig
    data: AblationData
    device: str
    attention_backend: str
    runs: list[dict[str, Any]]
    masks: dict[str, Any]
    total_seconds: float = 0.0

    def summary(self) -> list[dict[str, Any]]:
        """One row per configuration: means and spreads over seeds (the table's numbers)."""
        rows = []
        for configuration in ABLATION_CONFIGURATIONS:
            runs = [r for r in self.runs if r["configuration"] == configuration.name]
            if not runs:
                continue
            first = runs[0]
            row: dict[str, Any] = {
                k: first[k]
                for k in (
                    "configuration",
                    "mask",
                    "num_layout_frames",
                    "num_tokens",
                    "block_sparsity",
                    "leak_free",
                    "num_parameters",
                    "copy_error",
                    "last_frame_copy_error",
                )
            }
            row["num_seeds"] = len(runs)
            for key in ("final_train_loss", "test_error", "last_frame_error", "train_seconds"):
                mean, std = _mean_std([r[key] for r in runs])
                row[f"{key}_mean"], row[f"{key}_std"] = mean, std
            row["test_error_vs_copy"] = row["test_error_mean"] / row["copy_error"]
            row["last_frame_error_vs_copy"] = (
                row["last_frame_error_mean"] / row["last_frame_copy_error"]
            )
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready values (``results.json``)."""
        return {
            "config": self.config.to_dict(),
            "device": self.device,
            "attention_backend": self.attention_backend,
            "torch_version": torch.__version__,
            "total_seconds": self.total_seconds,
            "data": {
                "source": self.data.source,
                "description": self.data.description,
                "num_train_clips": len(self.data.train),
                "num_test_clips": len(self.data.test),
                "clip_shape": list(self.data.train.shape[1:]),
                "checksum": self.data.checksum(),
                "videos_used": self.data.videos_used,
                "videos_skipped": [{"path": p, "reason": r} for p, r in self.data.videos_skipped],
            },
            "metrics": {
                "test_error": "held-out MSE on the targets the configuration predicts",
                "copy_error": "MSE of 'next frame = this frame' on the same targets",
                "last_frame_error": "held-out MSE on the clip's final frame T-1 (all configs)",
                "last_frame_copy_error": "copy baseline on the final frame",
                "block_sparsity": "percent of 128x128 blocks of the predictor mask skipped",
                "leak_free": "no prediction's query sees a frame at or after its target",
            },
            "summary": self.summary(),
            "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in self.runs],
        }

    def markdown(self) -> str:
        """The results table in Markdown (``results.md``), one row per configuration."""
        seeds = self.config.seeds
        header = (
            "| Configuration | Mask | Frames | Tokens | Block sparsity | Leak-free | "
            "Final train loss | Held-out error | Copy baseline | vs copy | Last-frame error | "
            "Copy baseline | vs copy | Train time (s) |"
        )
        lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
        for row in self.summary():
            leak = {True: "yes", False: "**no**", None: "n/a"}[row["leak_free"]]
            lines.append(
                f"| {row['configuration']} | {row['mask']} | {row['num_layout_frames']} | "
                f"{row['num_tokens']} | {row['block_sparsity']:.1f}% | {leak} | "
                f"{_pm(row, 'final_train_loss')} | {_pm(row, 'test_error')} | "
                f"{row['copy_error']:.4g} | {row['test_error_vs_copy']:.2f} | "
                f"{_pm(row, 'last_frame_error')} | {row['last_frame_copy_error']:.4g} | "
                f"{row['last_frame_error_vs_copy']:.2f} | "
                f"{row['train_seconds_mean']:.1f} |"
            )
        notes = [
            "",
            f"Mean ± std over {len(seeds)} seed(s) {seeds}; {self.data.description}; "
            f"{self.config.steps} steps of batch {self.config.batch_size} on {self.device} "
            f"({self.attention_backend} attention).",
            "Errors are held-out MSEs of next-frame features. 'Held-out error' is on the targets "
            "each configuration predicts (different frame sets), 'Last-frame error' on the clip's "
            "final frame, which every configuration predicts: compare configurations there. "
            "'vs copy' divides by the error of predicting 'next frame = this frame'.",
        ]
        return "\n".join(lines + notes) + "\n"

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write ``results.json``, ``results.md``, ``loss_curves.png`` and ``masks.png``.

        Returns:
            ``{kind: path}`` of the files written.
        """
        from flexframe import viz

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": out / "results.json",
            "markdown": out / "results.md",
            "loss_curves": out / "loss_curves.png",
            "masks": out / "masks.png",
        }
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        paths["markdown"].write_text(self.markdown())
        plot_loss_curves(self, paths["loss_curves"])
        q_len = max(spec.q_len for spec in self.masks.values())
        viz.compare_masks(
            {f"{name}: {mask_label(spec)}": spec for name, spec in self.masks.items()},
            title=f"predictor masks for a {self.config.num_frames}-frame clip "
            f"({self.config.tokens_per_frame} tokens per frame)",
            path=paths["masks"],
            max_elements=max(512, min(q_len, 1024)),
        )
        return paths


def _pm(row: dict[str, Any], key: str) -> str:
    if row["num_seeds"] == 1:
        return f"{row[f'{key}_mean']:.4g}"
    return f"{row[f'{key}_mean']:.4g} ± {row[f'{key}_std']:.2g}"


def plot_loss_curves(result: AblationResult, path: str | Path) -> Any:
    """Training loss per step (mean over seeds, band = min..max) and held-out errors.

    Returns the matplotlib ``Figure`` (object API, no pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax, bars = fig.subplots(1, 2, width_ratios=(3, 2))
    summary = result.summary()
    for i, row in enumerate(summary):
        curves = torch.tensor(
            [r["loss_curve"] for r in result.runs if r["configuration"] == row["configuration"]]
        )
        steps = torch.arange(1, curves.shape[1] + 1)
        color = f"C{i}"
        # Configurations that differ only in the mask often overlap: dashes keep both visible.
        style = "-" if i % 2 == 0 else (0, (4, 3))
        ax.plot(steps, curves.mean(0), color=color, lw=1.3, ls=style, label=row["configuration"])
        if len(curves) > 1:
            ax.fill_between(
                steps, curves.min(0).values, curves.max(0).values, color=color, alpha=0.2
            )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (own targets)")
    ax.set_title("training loss, mean over seeds (band: min to max)", fontsize=10)
    ax.legend(fontsize=8)
    x = torch.arange(len(summary)).float()
    means = [row["last_frame_error_mean"] for row in summary]
    stds = [row["last_frame_error_std"] for row in summary]
    bars.bar(x, means, yerr=stds, color=[f"C{i}" for i in range(len(summary))], capsize=4)
    copies = [row["last_frame_copy_error"] for row in summary]
    bars.scatter(x, copies, marker="_", s=600, color="black", zorder=3, label="copy baseline")
    bars.set_xticks(x.tolist(), [row["configuration"] for row in summary], fontsize=8)
    bars.set_ylabel("held-out MSE, final frame")
    bars.set_title("last-frame error (mean ± std over seeds)", fontsize=10)
    bars.set_ylim(0, 1.25 * max(copies + [m + s for m, s in zip(means, stds, strict=True)]))
    bars.legend(fontsize=8, loc="upper center", ncols=1)
    fig.savefig(path, dpi=fig.dpi)
    return fig


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_ablation(
    config: AblationConfig,
    *,
    data: AblationData | None = None,
    log: Log | None = None,
    progress: bool | None = None,
    configurations: Sequence[AblationConfiguration] = ABLATION_CONFIGURATIONS,
    keep_state: bool = False,
) -> AblationResult:
    """Train and test every configuration of :data:`ABLATION_CONFIGURATIONS` for every seed.

    Under ``torchrun`` it joins the process group (NCCL on GPUs, gloo on the CPU), splits every
    global batch across the ranks, wraps the model with FSDP2 or DDP (``config.parallel``) and
    averages the logged losses; only rank 0 logs and draws progress bars. Without torchrun it
    runs in one process.

    Args:
        config: the settings.
        data: the clips, if already loaded (:func:`load_ablation_data`); loaded from ``config``
            otherwise.
        log: receives one line per event (data loaded, each run finished); stderr by default;
            ``config.quiet`` silences the per-run lines.
        progress: show a tqdm bar per run; default: when stderr is a terminal and not quiet.
        configurations: which rows to run (default: all four).
        keep_state: keep each run's final full state dict in ``run["_state"]`` (for tests).

    Returns:
        An :class:`AblationResult`; call ``.save(config.out)`` for the files and ``.markdown()``
        for the table.

    Raises:
        RunStopped: when ``config.stop_after_step`` ends a run that started before that step
            (a run resumed at or past it goes on to the end).
        ValueError: what :func:`check_ablation_setup` refuses (the batch does not split over
            the processes; a checkpoint to resume was saved with other settings, data or number
            of processes), before any training.
    """
    from flexframe.distributed import DistributedEnv, init_distributed

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    _check_batch_split(config, world_size)  # before joining the process group
    if world_size > 1:
        env = init_distributed("cpu" if config.device == "cpu" else None)
    else:
        env = DistributedEnv.single(resolve_device(config.device))
    log = log or _stderr
    if not env.is_main:
        log = _silent  # one writer: rank 0
    if progress is None:
        progress = sys.stderr.isatty() and not config.quiet
    progress = progress and env.is_main
    device = env.device
    backend = resolve_backend(config.attention_backend, device)
    started = time.perf_counter()
    data = load_ablation_data(config, log) if data is None else data
    check_ablation_setup(config, data, env.world_size, configurations)
    log(f"data: {data.description}")
    where = f"{env.world_size} processes" if env.distributed else str(device)
    log(
        f"running {len(configurations)} configurations x {len(config.seeds)} seed(s), "
        f"{config.steps} steps each, on {where} ({backend} attention)"
    )
    runs: list[dict[str, Any]] = []
    masks: dict[str, Any] = {}
    for seed in config.seeds:
        for configuration in configurations:
            run = _run_one(config, configuration, seed, data, env, backend, progress, keep_state)
            runs.append(run)
            masks.setdefault(configuration.name, run["_spec"])
            if not config.quiet:
                log(
                    f"  {configuration.name:<12} seed {seed}: train loss "
                    f"{run['final_train_loss']:.4g}, held-out {run['test_error']:.4g} "
                    f"(copy {run['copy_error']:.4g}), last frame {run['last_frame_error']:.4g}, "
                    f"{run['train_seconds']:.1f} s"
                )
    return AblationResult(config, data, where, backend, runs, masks, time.perf_counter() - started)


def _silent(message: str) -> None:
    """Ranks other than 0 say nothing."""
