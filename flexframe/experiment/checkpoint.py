"""Checkpoints of ablation runs: where they live, what they remember, when they may resume.

Each (configuration, seed) run saves its training state (``torch.distributed.checkpoint``, via
:mod:`flexframe.distributed`) in its own folder, ``checkpoint_dir/<configuration>-seed<N>``,
and resumes from it when run again. The checkpoint holds the run's fingerprint: every setting
that shapes its training (all but :data:`NOT_IN_FINGERPRINT`), its configuration and seed, and
the data's checksum. A resume with any of them changed is refused, naming what differs. That
includes ``steps``: the learning rate follows a cosine over all ``steps``, so a longer run would
have taken other steps from the start. The time of the steps before the checkpoint is kept in it.

Example:
    >>> from flexframe.experiment.config import AblationConfig
    >>> from flexframe.experiment.configurations import ABLATION_CONFIGURATIONS
    >>> cfg = AblationConfig(checkpoint_dir="ck")
    >>> checkpoint_folder(cfg, ABLATION_CONFIGURATIONS[1], seed=2).as_posix()
    'ck/plus-frame-mask-seed2'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from flexframe._checks import resolve_device
from flexframe._vocab import FAST_SLOW_KEYS
from flexframe.experiment.config import AblationConfig
from flexframe.experiment.configurations import AblationConfiguration

__all__ = [
    "NOT_IN_FINGERPRINT",
    "check_resumable",
    "checkpoint_folder",
    "fingerprint",
    "latest_checkpoint",
    "save_run_checkpoint",
]

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

_RESOLVED = ("device", "attention_backend", "parallel", "fast_slow_preset", *FAST_SLOW_KEYS)


def checkpoint_folder(
    config: AblationConfig, configuration: AblationConfiguration, seed: int
) -> Path:
    """The folder of one run's checkpoints (``config.checkpoint_dir`` must be set)."""
    if config.checkpoint_dir is None:
        raise ValueError("checkpoint_folder needs config.checkpoint_dir, got None")
    return Path(config.checkpoint_dir) / f"{configuration.slug}-seed{seed}"


def latest_checkpoint(folder: Path | None) -> Path | None:
    """The checkpoint ``folder/latest`` names, or None when the run has none."""
    if folder is None or not (folder / "latest").is_file():
        return None
    return folder / (folder / "latest").read_text().strip()


def fingerprint(
    config: AblationConfig,
    configuration: AblationConfiguration,
    seed: int,
    data_checksum: str,
) -> dict[str, Any]:
    """What a run's training depends on: its settings (but :data:`NOT_IN_FINGERPRINT`), its
    configuration and seed, and the data's checksum.

    Example:
        >>> from flexframe.experiment.config import AblationConfig
        >>> from flexframe.experiment.configurations import ABLATION_CONFIGURATIONS
        >>> fp = fingerprint(AblationConfig(device="cpu"), ABLATION_CONFIGURATIONS[0], 0, "ab")
        >>> fp["attention_backend"], fp["parallel"], fp["num_fast"], "out" in fp
        ('sdpa', 'ddp', 8, False)
    """
    from flexframe.distributed import resolve_parallel
    from flexframe.nn.kernels import resolve_backend

    skip = (*NOT_IN_FINGERPRINT, *_RESOLVED)
    settings = {k: v for k, v in config.to_dict().items() if k not in skip}
    device = resolve_device(config.device)
    return {
        **settings,
        "device": device.type,
        "attention_backend": resolve_backend(config.attention_backend, device),
        "parallel": resolve_parallel(config.parallel, device),
        **config.fast_slow_settings(),
        "configuration": configuration.name,
        "seed": seed,
        "data_checksum": data_checksum,
    }


def check_resumable(checkpoint: Path, expected: dict[str, Any], world_size: int) -> None:
    """Raise ``ValueError`` unless ``checkpoint`` was saved by ``world_size`` processes with the
    fingerprint ``expected``; the message names every setting that differs. Reads files only,
    the same ones on every rank, so under torchrun every rank raises alike, before any
    collective."""
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
        f"{key}={saved.get(key, missing)!r} in the checkpoint, {expected.get(key, missing)!r} now"
        for key in dict.fromkeys([*expected, *saved])
        if saved.get(key, missing) != expected.get(key, missing)
    ]
    if differ:
        why = (
            " (steps counts: the learning rate decays over all steps)"
            if saved.get("steps") != expected.get("steps")
            else ""
        )
        raise ValueError(
            f"cannot resume the checkpoint in '{folder}': it was trained with other settings: "
            f"{'; '.join(differ)}{why}. Rerun with the checkpoint's settings, or {start_over}"
        )


def save_run_checkpoint(
    folder: Path,
    step: int,
    model: nn.Module,
    optimizer: Any,
    extra: dict[str, Any],
    env: Any,
) -> None:
    """A checkpoint in ``folder/step-NNNNNN``, then ``folder/latest`` naming it (rank 0, after
    every rank has written, so ``latest`` never names a half-written checkpoint)."""
    import torch.distributed as dist

    from flexframe.distributed import save_checkpoint

    name = f"step-{step:06d}"
    save_checkpoint(folder / name, model, optimizer, step, extra)
    if env.distributed:
        dist.barrier()
    if env.is_main:
        tmp = folder / "latest.tmp"
        tmp.write_text(name)
        tmp.replace(folder / "latest")
    if env.distributed:
        dist.barrier()
