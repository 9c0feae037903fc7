"""Check an ablation once, before any training: :func:`prepare_ablation`.

Everything a run would refuse is checked here and nowhere else (the command line calls it for
its one-line usage errors, :func:`~flexframe.experiment.train.run_ablation` takes what it
returns): the device exists and the attention backend can train on it, the global batch splits
over the processes and is no larger than the training clips, the data loads, and every
checkpoint a run would resume was saved by as many processes with the same settings and data.

Example:
    >>> from flexframe.experiment import AblationConfig
    >>> prepare_ablation(AblationConfig(num_clips_train=4, num_clips_test=2, batch_size=8,
    ...                                 device="cpu"))
    Traceback (most recent call last):
    ...
    ValueError: batch_size=8 is more than the 4 training clips (moving digits: ...); ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from flexframe._checks import resolve_device
from flexframe.experiment.checkpoint import (
    check_resumable,
    checkpoint_folder,
    fingerprint,
    latest_checkpoint,
)
from flexframe.experiment.config import AblationConfig
from flexframe.experiment.configurations import AblationConfiguration, configurations_for
from flexframe.experiment.data import AblationData, load_ablation_data

__all__ = ["AblationSetup", "prepare_ablation"]

Log = Callable[[str], None]


@dataclass
class AblationSetup:
    """A checked ablation, ready to train: what :func:`prepare_ablation` returns.

    Attributes:
        config: the settings.
        data: the clips.
        device: where a single process trains (under torchrun each rank takes its own GPU).
        backend: the attention backend the runs use (``"auto"`` resolved).
        world_size: the processes it was checked for.
        configurations: the rows to run.
    """

    config: AblationConfig
    data: AblationData
    device: torch.device
    backend: str
    world_size: int
    configurations: tuple[AblationConfiguration, ...]


def prepare_ablation(
    config: AblationConfig,
    *,
    data: AblationData | None = None,
    configurations: Sequence[AblationConfiguration] | None = None,
    world_size: int | None = None,
    log: Log | None = None,
    videos_name: str = "videos",
) -> AblationSetup:
    """Check what ``run_ablation`` would refuse, and load the data, once, without training.

    Checks: the device exists and the backend can train on it; the global batch splits over
    ``world_size`` processes (default: torchrun's ``WORLD_SIZE``) and is no larger than the
    training clips; every checkpoint it would resume was saved by as many processes, with the
    same settings and data.

    Args:
        config: the settings.
        data: the clips, if already loaded; else loaded from ``config``.
        configurations: the rows to run; default: the config's (the four, then the leaking
            rows with ``leak_rows``).
        world_size: processes that will train.
        log: receives one line per skipped video.
        videos_name: what error messages call the videos setting (``--videos`` for the flag).

    Raises:
        ValueError, FileNotFoundError: the first problem, named (the setting, its value, the
            file or checkpoint folder).
    """
    from flexframe.nn.kernels import resolve_backend

    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    device = resolve_device(config.device)
    backend = resolve_backend(config.attention_backend, device)
    if backend == "flex" and device.type == "cpu":
        raise ValueError(
            "attention_backend='flex' cannot train on the CPU (FlexAttention has no CPU backward "
            "pass); use 'auto' or 'sdpa'"
        )
    if config.batch_size % world_size:
        raise ValueError(
            f"batch_size={config.batch_size} does not split over {world_size} processes; "
            "choose a multiple of the number of processes"
        )
    data = load_ablation_data(config, log, videos_name=videos_name) if data is None else data
    if config.batch_size > len(data.train):
        raise ValueError(
            f"batch_size={config.batch_size} is more than the {len(data.train)} training clips "
            f"({data.description}); a batch would repeat clips: choose a batch_size of at most "
            f"{len(data.train)}, or more clips"
        )
    rows = configurations_for(config) if configurations is None else tuple(configurations)
    setup = AblationSetup(config, data, device, backend, world_size, rows)
    if config.checkpoint_dir is not None:
        checksum = data.checksum()
        for seed in config.seeds:
            for configuration in setup.configurations:
                latest = latest_checkpoint(checkpoint_folder(config, configuration, seed))
                if latest is not None:
                    expected = fingerprint(config, configuration, seed, checksum)
                    check_resumable(latest, expected, world_size)
    return setup
