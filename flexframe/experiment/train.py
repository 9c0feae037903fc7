"""The ablation's training: one flat loop per (configuration, seed), and the whole table.

:func:`train_run` trains one (configuration, seed) of a checked setup
(:func:`~flexframe.experiment.prepare.prepare_ablation`) and scores it; :func:`run_ablation`
runs them all.

What is held equal: for each seed every configuration starts from the same weights (built right
after ``torch.manual_seed(seed)``; the mask and sampling add no parameters), reads the same
clips in the same batch order, and takes the same number of steps with the same optimizer and
schedule. ``init_checksum`` and ``batch_order_checksum`` in the results let anyone check this.

Example:
    >>> [round(lr_factor(s, warmup=2, steps=6), 3) for s in range(6)]
    [0.5, 1.0, 1.0, 0.868, 0.55, 0.232]
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from flexframe.experiment.checkpoint import (
    check_resumable,
    checkpoint_folder,
    fingerprint,
    latest_checkpoint,
    save_run_checkpoint,
)
from flexframe.experiment.config import AblationConfig
from flexframe.experiment.configurations import (
    AblationConfiguration,
    leak_free,
    mask_label,
)
from flexframe.experiment.data import (
    batch_order,
    clip_views,
    tensor_checksum,
    transform_clips,
    weights_checksum,
)
from flexframe.experiment.models import TrainStep, build_train_step
from flexframe.experiment.objective import evaluate
from flexframe.experiment.prepare import AblationSetup, prepare_ablation
from flexframe.experiment.results import AblationResult, RunResult
from flexframe.masks.blocks import plural

__all__ = [
    "AblationInterrupted",
    "RunStopped",
    "run_ablation",
    "train_run",
]

Log = Callable[[str], None]

SCALE_CLIPS = 512
"""Training clips ``normalize_targets`` measures the change over (the first ones): enough for a
root mean square, and a fixed cost however many clips there are."""


class RunStopped(Exception):
    """Raised when ``stop_after_step`` ends a run early (its checkpoint lets it resume).

    Attributes:
        step: the steps the run had taken.
        folder: its checkpoint folder, or None without ``checkpoint_dir``.
        result: the runs finished before it (set by :func:`run_ablation`).
    """

    def __init__(self, message: str, step: int = 0, folder: Path | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.folder = folder
        self.result: AblationResult | None = None


class AblationInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_ablation`; ``result`` holds the runs that had finished."""

    def __init__(self, result: AblationResult) -> None:
        super().__init__(f"interrupted after {len(result.runs)} finished run(s)")
        self.result = result


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """The learning rate's factor at ``step``: linear warm-up, then cosine down to 10 %.

    Example:
        >>> [round(lr_factor(s, warmup=2, steps=6), 3) for s in range(6)]
        [0.5, 1.0, 1.0, 0.868, 0.55, 0.232]
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def _progress_bar(show: bool, total: int, initial: int, desc: str) -> Any:
    """A tqdm bar on stderr when ``show`` and tqdm is installed (the ``cli`` extra), else none."""
    if not show:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, initial=initial, desc=desc, leave=False, file=sys.stderr,
                dynamic_ncols=True)  # fmt: skip


def train_run(
    setup: AblationSetup,
    configuration: AblationConfiguration,
    seed: int,
    env: Any = None,
    *,
    progress: bool = False,
) -> tuple[RunResult, TrainStep]:
    """Train one (configuration, seed) of ``setup`` and score it on the held-out clips.

    Resumes from the run's checkpoint when ``checkpoint_dir`` holds one; saves every
    ``checkpoint_every`` steps.

    Args:
        setup: from :func:`~flexframe.experiment.prepare.prepare_ablation`.
        configuration: the row.
        seed: the seed of the weights and of the batch order.
        env: where this process stands (``flexframe.distributed.DistributedEnv``); one process
            on ``setup.device`` by default.
        progress: draw a progress bar (tqdm, when installed).

    Returns:
        The :class:`RunResult` and the trained :class:`TrainStep` (under FSDP2 its parameters
        are this rank's shards; ``get_model_state_dict(step, options=StateDictOptions(
        full_state_dict=True))`` gathers them).

    Raises:
        RunStopped: ``stop_after_step`` ended the run (it resumes from its checkpoint).
        FloatingPointError: the loss became inf or nan.
    """
    from flexframe.distributed import (
        DistributedEnv,
        all_reduce_mean,
        load_checkpoint,
        rank_slice,
        resolve_parallel,
        wrap_model,
    )
    from flexframe.masks import BlockSparsity

    config, data = setup.config, setup.data
    env = DistributedEnv.single(setup.device) if env is None else env
    device, t, p = env.device, config.num_frames, config.tokens_per_frame
    autocast = config.autocast_dtype(device)
    step_module = build_train_step(config, configuration, seed, data.channels, device,
                                   setup.backend)  # fmt: skip
    init_checksum = weights_checksum(step_module)
    if config.normalize_targets:  # deterministic from the data: the same for every seed
        step_module.objective = step_module.objective.fitted(
            step_module, data.train[:SCALE_CLIPS], config.eval_batch_size, device, autocast
        )
    model = wrap_model(step_module, env, resolve_parallel(config.parallel, device))
    optimizer = torch.optim.AdamW(
        [q for q in model.parameters() if q.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, config.steps)
    )
    # One global batch a step; each rank takes its contiguous share, so W processes make the
    # update one process makes over the whole batch.
    order = batch_order(len(data.train), config.steps, config.batch_size, seed)
    views = clip_views(config.steps, config.batch_size, seed, config.augment)
    expected = fingerprint(config, configuration, seed, data.checksum())
    folder = checkpoint_folder(config, configuration, seed) if config.checkpoint_dir else None
    losses: list[float] = []
    step_seconds: list[float] = []  # wall time of each step, the loss's all-reduce included
    start_step = 0
    latest = latest_checkpoint(folder)
    if latest is not None:
        check_resumable(latest, expected, env.world_size)  # before any collective
        state = load_checkpoint(latest, model, optimizer)
        start_step = state["step"]
        losses = list(state["extra"]["losses"])
        step_seconds = list(state["extra"]["step_seconds"])
        schedule.load_state_dict(state["extra"]["schedule"])
    # A simulated kill stops a run that started before its step; a run resumed at or past it
    # (the same command run again) goes on to the end.
    stop_at = config.stop_after_step
    if stop_at is not None and start_step >= stop_at:
        stop_at = None
    bar = _progress_bar(progress, config.steps, start_step, f"{configuration.name} (seed {seed})")
    model.train()
    for step in range(start_step, config.steps):
        started = time.perf_counter()
        share = rank_slice(list(range(config.batch_size)), env)  # this rank's places
        video = transform_clips(data.train[order[step, share]], views[step, share])
        video = video.to(device, non_blocking=True)
        with torch.autocast(device.type, autocast or torch.float32, enabled=autocast is not None):
            loss = model(video)  # [B / W, T, C, H, W] -> the loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(all_reduce_mean(loss.detach(), env))  # waits for the step to finish
        step_seconds.append(time.perf_counter() - started)
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
            extra = {"losses": losses, "step_seconds": step_seconds, "fingerprint": expected,
                     "schedule": schedule.state_dict()}  # fmt: skip
            save_run_checkpoint(folder, done, model, optimizer, extra, env)
        if stopping:
            bar.close()
            where = f"its checkpoint is in {folder}" if folder else "without checkpoint_dir"
            raise RunStopped(
                f"{configuration.name} (seed {seed}) stopped after step {done} as asked "
                f"(stop_after_step={stop_at}); "
                + (where if folder else f"{where} nothing was saved"),
                step=done,
                folder=folder,
            )
    bar.close()
    layout = step_module.module.frame_layout(num_frames=t)
    scores = evaluate(
        model, step_module.objective, data.test, layout, config.eval_batch_size, device, autocast
    )
    spec = step_module.module.mask_spec(num_frames=t, tokens_per_frame=p)
    result = RunResult(
        configuration=configuration.name,
        seed=seed,
        mask=mask_label(spec) + (" + memory=x (full)" if configuration.memory_is_input else ""),
        leak=configuration.leak,
        num_layout_frames=len(layout.frame_indices),
        num_tokens=spec.q_len,
        block_sparsity=100.0 * BlockSparsity.of(spec, 128).skipped_share,
        num_blocks=BlockSparsity.of(spec, 128).total,
        leak_free=leak_free(
            step_module.read_masks(t, p),
            layout.frame_indices,
            step_module.objective.target_frames(layout),
            p,
        ),  # fmt: skip
        num_parameters=sum(q.numel() for q in step_module.parameters() if q.requires_grad),
        target_scale=list(scale)
        if isinstance(scale := step_module.objective.scale, tuple)
        else scale,
        final_train_loss=statistics.fmean(losses[-max(1, config.steps // 10) :]),
        test_error=scores.test_error,
        copy_error=scores.copy_error,
        last_frame_error=scores.last_frame_error,
        last_frame_copy_error=scores.last_frame_copy_error,
        train_seconds=math.fsum(step_seconds),
        step_seconds=step_seconds,
        init_checksum=init_checksum,
        batch_order_checksum=tensor_checksum(order, views),
        layout_frame_indices=layout.frame_indices.tolist(),
        loss_curve=losses,
        world_size=env.world_size,
        parallel=resolve_parallel(config.parallel, device) if env.distributed else "none",
        resumed_from_step=start_step,
    )
    return result, step_module


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _silent(message: str) -> None:
    """Ranks other than 0 say nothing."""


def run_ablation(
    setup: AblationSetup | AblationConfig,
    *,
    log: Log | None = None,
    progress: bool | None = None,
) -> AblationResult:
    """Train and test every configuration of ``setup`` for every seed.

    Under ``torchrun`` it joins the process group (NCCL on GPUs, gloo on the CPU), splits every
    global batch across the ranks, wraps the model with FSDP2 or DDP (``config.parallel``) and
    averages the logged losses; only rank 0 logs and draws progress bars.

    Args:
        setup: from :func:`~flexframe.experiment.prepare.prepare_ablation`, or a config to
            prepare here.
        log: receives one line per event (each run finished); stderr by default;
            ``config.quiet`` silences the per-run lines.
        progress: show a progress bar per run; default: when stderr is a terminal and not quiet.

    Returns:
        An :class:`AblationResult`; ``.save(config.out)`` writes the files and ``.markdown()``
        gives the table.

    Raises:
        RunStopped: ``config.stop_after_step`` ended a run; ``.result`` holds the finished runs.
        AblationInterrupted: Ctrl-C; ``.result`` holds the finished runs.
        ValueError: what ``prepare_ablation`` refuses, before any training.
    """
    from flexframe.distributed import DistributedEnv, init_distributed

    log = log or _stderr
    if isinstance(setup, AblationConfig):
        setup = prepare_ablation(setup, log=log)
    config = setup.config
    if setup.world_size > 1:
        env = init_distributed("cpu" if setup.device.type == "cpu" else None)
    else:
        env = DistributedEnv.single(setup.device)
    if not env.is_main:
        log = _silent  # one writer: rank 0
    if progress is None:
        progress = sys.stderr.isatty() and not config.quiet
    where = f"{env.world_size} processes" if env.distributed else str(env.device)
    started = time.perf_counter()
    log(f"data: {setup.data.description}")
    log(
        f"running {len(setup.configurations)} configurations x {len(config.seeds)} seed(s), "
        f"{plural(config.steps, 'step')} each, on {where} ({setup.backend} attention)"
    )
    result = AblationResult(config, setup.data, where, setup.backend,
                            planned_runs=len(setup.configurations) * len(config.seeds))  # fmt: skip
    try:
        for seed in config.seeds:
            for configuration in setup.configurations:
                run, step = train_run(setup, configuration, seed, env,
                                      progress=progress and env.is_main)  # fmt: skip
                result.runs.append(run)
                result.total_seconds = time.perf_counter() - started
                spec = step.module.mask_spec(config.num_frames, config.tokens_per_frame)
                result.masks.setdefault(configuration.name, spec)
                if not config.quiet:
                    log(
                        f"  {configuration.name:<12} seed {seed}: train loss "
                        f"{run.final_train_loss:.4g}, held-out {run.test_error:.4g} "
                        f"(copy {run.copy_error:.4g}), last frame {run.last_frame_error:.4g} "
                        f"(copy {run.last_frame_copy_error:.4g}), {run.train_seconds:.1f} s"
                    )
    except RunStopped as stopped:
        stopped.result = result
        raise
    except KeyboardInterrupt:
        raise AblationInterrupted(result) from None
    result.total_seconds = time.perf_counter() - started
    return result
