"""What the ablation measured: one :class:`RunResult` per run, and the comparisons over them.

Metrics on the held-out clips, all mean squared errors of the frozen tower's features:

- ``test_error``: on every target the configuration itself predicts (its training objective).
  Configurations predict different frame sets (all transitions vs the fast/slow streams'), so
  this column compares a configuration with its own copy baseline, not with the others.
- ``last_frame_error``: on the clip's final frame ``T - 1`` only, predicted from the frames before
  it. Every configuration predicts it (the fast stream always ends at ``T - 1``), so this is the
  one number that compares all of them on the same task.
- ``copy_error`` and ``last_frame_copy_error``: the trivial predictor "next frame = this frame"
  on the same targets; a ratio below 1 means the model beats copying.

The comparisons (:meth:`AblationResult.comparisons`) pair the runs of one seed, which share
their initial weights and batch order, and give each mean difference a 95 % t-interval over the
seeds and a verdict (:mod:`flexframe.experiment.stats`).

Example:
    >>> run = RunResult(configuration="Baseline", seed=0, mask="token-causal",
    ...                 test_error=0.5, copy_error=1.0)
    >>> run.to_dict()["test_error"], run.test_error / run.copy_error
    (0.5, 0.5)
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flexframe.experiment.config import AblationConfig
from flexframe.experiment.configurations import LEAK_CONFIGURATIONS, mask_label
from flexframe.experiment.data import AblationData
from flexframe.experiment.stats import PairedComparison, compare_paired

__all__ = ["AblationResult", "RunResult", "BASELINE", "MIN_SEEDS"]

BASELINE = "Baseline"
"""The row every other leak-free row is compared with."""

MIN_SEEDS = 5
"""Seeds a reported result should have; with fewer the table says so."""

METRICS: dict[str, str] = {
    "test_error": "held-out MSE on the targets the configuration predicts",
    "copy_error": "MSE of 'next frame = this frame' on the same targets",
    "last_frame_error": "held-out MSE on the clip's final frame T-1 (all configurations)",
    "last_frame_copy_error": "copy baseline on the final frame",
    "final_train_loss": "training loss over the last tenth of the steps (1 = copying, with "
    "predict_residual, normalize_targets and mse)",
    "step_ms": "median wall time of a training step (the first steps pay the warm-up)",
    "block_sparsity": "percent of 128x128 blocks of the predictor mask skipped",
    "leak_free": "no prediction can reach a frame at or after its target (brute force over "
    "every mask it reads through, closed over layers)",
}


@dataclass
class RunResult:
    """One (configuration, seed) run: what it was, how it trained, and its held-out errors.

    Attributes:
        configuration, seed: the row and the seed.
        mask: the predictor's mask (:func:`~flexframe.experiment.configurations.mask_label`).
        leak: what leaks, for a row that reproduces the seed design; None otherwise.
        num_layout_frames, num_tokens: frames and tokens of the predictor's sequence.
        block_sparsity: percent of the mask's 128x128 blocks that FlexAttention skips.
        num_blocks: blocks of that grid.
        leak_free: the brute-force leak check (None above its size limit).
        num_parameters: trainable parameters (stand-in LLM and reconstruction module).
        target_scale: what one unit of the model's output is worth at each layout position
            (``normalize_targets``).
        final_train_loss: mean training loss over the last tenth of the steps.
        test_error, copy_error, last_frame_error, last_frame_copy_error: held-out MSEs (see the
            module docstring).
        train_seconds: training time: the sum of ``step_seconds``.
        step_seconds: wall time of each step (those before a resume included); the first steps
            of a process pay its warm-up, so the table reports the median step.
        init_checksum, batch_order_checksum: what makes runs of one seed comparable.
        layout_frame_indices: the original frame of each layout frame.
        loss_curve: the training loss of every step.
        world_size, parallel: processes and the data-parallel strategy (``"none"`` alone).
        resumed_from_step: the step its checkpoint resumed at (0: a fresh run).
    """

    configuration: str
    seed: int
    mask: str
    leak: str | None = None
    num_layout_frames: int = 0
    num_tokens: int = 0
    block_sparsity: float = 0.0
    num_blocks: int = 0
    leak_free: bool | None = None
    num_parameters: int = 0
    target_scale: list[float] | float = 1.0
    final_train_loss: float = float("nan")
    test_error: float = float("nan")
    copy_error: float = float("nan")
    last_frame_error: float = float("nan")
    last_frame_copy_error: float = float("nan")
    train_seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)
    init_checksum: str = ""
    batch_order_checksum: str = ""
    layout_frame_indices: list[int] = field(default_factory=list)
    loss_curve: list[float] = field(default_factory=list)
    world_size: int = 1
    parallel: str = "none"
    resumed_from_step: int = 0

    @property
    def step_ms(self) -> float:
        """Median wall time of a step in milliseconds (robust to the warm-up's first steps)."""
        return 1000.0 * statistics.median(self.step_seconds) if self.step_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready values, and ``step_ms``."""
        return {**dataclasses.asdict(self), "step_ms": self.step_ms}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _vs_copy(run: RunResult) -> float:
    return run.test_error / run.copy_error


def _paired(
    runs: list[RunResult], others: list[RunResult], value: Callable[[RunResult], float]
) -> PairedComparison | None:
    """``value(run) - value(other)`` over the seeds both have, compared; None without pairs."""
    by_seed = {r.seed: r for r in others}
    pairs = [(r, by_seed[r.seed]) for r in runs if r.seed in by_seed]
    if not pairs:
        return None
    return compare_paired([value(a) - value(b) for a, b in pairs])


@dataclass
class AblationResult:
    """What :func:`~flexframe.experiment.train.run_ablation` measured.

    Attributes:
        config: the settings it ran with.
        data: the clips (and videos used or skipped).
        device: where it ran.
        attention_backend: the attention backend the runs used.
        runs: one :class:`RunResult` per (configuration, seed), in run order.
        masks: each configuration's predictor mask (a ``MaskSpec``), for pictures.
        total_seconds: wall time of the whole ablation.
        planned_runs: the runs it set out to do (more than ``len(runs)`` when it was stopped).
    """

    config: AblationConfig
    data: AblationData
    device: str
    attention_backend: str
    runs: list[RunResult] = field(default_factory=list)
    masks: dict[str, Any] = field(default_factory=dict)
    total_seconds: float = 0.0
    planned_runs: int = 0

    def configurations(self) -> list[str]:
        """The configurations that have runs, in run order."""
        return list(dict.fromkeys(r.configuration for r in self.runs))

    def runs_of(self, configuration: str) -> list[RunResult]:
        """The runs of one configuration, in seed order."""
        return sorted((r for r in self.runs if r.configuration == configuration),
                      key=lambda r: r.seed)  # fmt: skip

    def summary(self) -> list[dict[str, Any]]:
        """One row per configuration: means and spreads over seeds (the table's numbers)."""
        rows = []
        for name in self.configurations():
            runs = self.runs_of(name)
            first = runs[0]
            row: dict[str, Any] = {
                k: getattr(first, k)
                for k in ("configuration", "mask", "leak", "num_layout_frames", "num_tokens",
                          "block_sparsity", "num_blocks", "num_parameters", "copy_error",
                          "last_frame_copy_error")
            }  # fmt: skip
            checks = {r.leak_free for r in runs}
            row["leak_free"] = checks.pop() if len(checks) == 1 else None
            row["num_seeds"], row["seeds"] = len(runs), [r.seed for r in runs]
            for key in ("final_train_loss", "test_error", "last_frame_error", "train_seconds",
                        "step_ms"):  # fmt: skip
                mean, std = _mean_std([getattr(r, key) for r in runs])
                row[f"{key}_mean"], row[f"{key}_std"] = mean, std
            steps = [r.step_ms for r in runs]
            row["step_ms_median"] = statistics.median(steps)
            row["step_ms_min"], row["step_ms_max"] = min(steps), max(steps)
            row["test_error_vs_copy"] = row["test_error_mean"] / row["copy_error"]
            row["last_frame_error_vs_copy"] = (
                row["last_frame_error_mean"] / row["last_frame_copy_error"]
            )
            rows.append(row)
        return rows

    def comparisons(self) -> dict[str, dict[str, PairedComparison]]:
        """Paired comparisons over seeds, each ``{configuration: PairedComparison}``:

        - ``last_frame_vs_baseline``: last-frame error minus Baseline's, for every other
          leak-free configuration;
        - ``held_out_vs_copy`` and ``last_frame_vs_copy``: the error minus the configuration's
          own copy baseline (on the same targets), for every configuration;
        - ``leak_vs_leak_free``: a leaking row's held-out error over its copy error minus the
          same ratio of the leak-free row it puts the seed design back into (Full), on the
          seeds both ran (a ratio, because the next-position row predicts other targets).
        """
        leaking = {c.name: c.compare_with for c in LEAK_CONFIGURATIONS}
        baseline = self.runs_of(BASELINE)
        out: dict[str, dict[str, PairedComparison]] = {
            "last_frame_vs_baseline": {},
            "held_out_vs_copy": {},
            "last_frame_vs_copy": {},
            "leak_vs_leak_free": {},
        }
        for name in self.configurations():
            runs = self.runs_of(name)
            found = {
                "held_out_vs_copy": compare_paired([r.test_error - r.copy_error for r in runs]),
                "last_frame_vs_copy": compare_paired(
                    [r.last_frame_error - r.last_frame_copy_error for r in runs]
                ),
                "last_frame_vs_baseline": (
                    _paired(runs, baseline, lambda r: r.last_frame_error)
                    if name != BASELINE and name not in leaking
                    else None
                ),
                "leak_vs_leak_free": (
                    _paired(runs, self.runs_of(leaking[name] or ""), _vs_copy)
                    if name in leaking
                    else None
                ),
            }
            for kind, comparison in found.items():
                if comparison is not None:
                    out[kind][name] = comparison
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready values (``results.json``)."""
        return {
            "config": self.config.to_dict(),
            "device": self.device,
            "attention_backend": self.attention_backend,
            "torch_version": torch.__version__,
            "total_seconds": self.total_seconds,
            "finished_runs": len(self.runs),
            "planned_runs": self.planned_runs or len(self.runs),
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
            "metrics": METRICS,
            "summary": self.summary(),
            "comparisons": {
                kind: {name: dataclasses.asdict(c) for name, c in found.items()}
                for kind, found in self.comparisons().items()
            },
            "runs": [r.to_dict() for r in self.runs],
        }

    def markdown(self) -> str:
        """The results in Markdown (``results.md``): the table, the paired comparisons, the
        leaking rows and the notes (:func:`flexframe.experiment.report.markdown_report`)."""
        from flexframe.experiment.report import markdown_report

        return markdown_report(self)

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write ``results.json``, ``results.md``, ``loss_curves.png`` and ``masks.png``.

        Returns:
            ``{kind: path}`` of the files written.
        """
        import flexframe.viz as viz
        from flexframe.experiment.report import plot_loss_curves

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
