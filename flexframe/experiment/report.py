"""The ablation's report: the Markdown tables and the loss-curve figure of an AblationResult.

Example:
    >>> from flexframe.experiment.stats import compare_paired
    >>> print(fmt_interval(compare_paired([-0.002, -0.003, -0.0025])))
    -0.0025 [-0.0037, -0.0013]
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from flexframe.experiment.configurations import LEAK_CONFIGURATIONS
from flexframe.experiment.stats import PairedComparison, student_t_quantile
from flexframe.masks.blocks import plural

if TYPE_CHECKING:
    from flexframe.experiment.results import AblationResult

__all__ = ["fmt_interval", "markdown_report", "plot_loss_curves"]

MIN_BLOCKS_PER_SIDE = 8
"""Block sparsity is shown when every mask spans at least this many 128-token blocks a side:
with fewer (1 to 4 at 128-512 tokens) the share of skipped blocks says nothing about what
FlexAttention saves on long videos."""


def fmt_interval(c: PairedComparison | None) -> str:
    """``"mean [low, high]"`` with three significant digits; ``"-"`` without a comparison."""
    if c is None:
        return "-"
    if c.low is None or c.high is None:
        return f"{c.mean:.3g} (one seed)"
    return f"{c.mean:.3g} [{c.low:.2g}, {c.high:.2g}]"


def _pm(row: dict[str, Any], key: str) -> str:
    if row["num_seeds"] == 1:
        return f"{row[f'{key}_mean']:.4g}"
    return f"{row[f'{key}_mean']:.4g} ± {row[f'{key}_std']:.2g}"


def _step_time(row: dict[str, Any]) -> str:
    """The median over seeds of each run's median step, and the range of those medians."""
    if row["num_seeds"] == 1:
        return f"{row['step_ms_median']:.0f}"
    return f"{row['step_ms_median']:.0f} ({row['step_ms_min']:.0f}-{row['step_ms_max']:.0f})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]


def markdown_report(result: AblationResult) -> str:
    """The results of ``result`` in Markdown: the table over configurations (mean ± std over
    seeds), the paired comparisons with their 95 % intervals and verdicts, the leaking rows
    beside their leak-free counterpart, and notes on what the numbers are."""
    from flexframe.experiment.results import BASELINE, MIN_SEEDS

    config, summary, comparisons = result.config, result.summary(), result.comparisons()
    honest = [row for row in summary if row["leak"] is None]
    leaking = [row for row in summary if row["leak"] is not None]
    show_blocks = all(row["num_blocks"] >= MIN_BLOCKS_PER_SIDE**2 for row in summary)
    header = ["Configuration", "Mask", "Frames", "Tokens"]
    header += ["Block sparsity"] if show_blocks else []
    header += ["Leak-free", "Train loss", "Held-out error", "Held-out copy error",
               "Held-out / copy", "Last-frame error", "Last-frame copy error",
               "Last-frame / copy", "Step (ms)"]  # fmt: skip
    rows = []
    for row in summary:
        leak = {True: "yes", False: "**no**", None: "n/a"}[row["leak_free"]]
        name = row["configuration"] + (" (leaks)" if row["leak"] else "")
        cells = [name, row["mask"], str(row["num_layout_frames"]), str(row["num_tokens"])]
        cells += [f"{row['block_sparsity']:.1f}%"] if show_blocks else []
        cells += [
            leak, _pm(row, "final_train_loss"), _pm(row, "test_error"),
            f"{row['copy_error']:.4g}", f"{row['test_error_vs_copy']:.2f}",
            _pm(row, "last_frame_error"), f"{row['last_frame_copy_error']:.4g}",
            f"{row['last_frame_error_vs_copy']:.2f}", _step_time(row),
        ]  # fmt: skip
        rows.append(cells)
    lines = _table(header, rows)

    lines += ["", "Paired over seeds (same initial weights and batch order per seed): mean "
              "difference [95 % t-interval] and verdict.", ""]  # fmt: skip
    pairs = []
    for row in honest:
        name = row["configuration"]
        vs_base = comparisons["last_frame_vs_baseline"].get(name)
        vs_copy = comparisons["held_out_vs_copy"].get(name)
        pairs.append([
            name,
            "(the reference)" if name == BASELINE else fmt_interval(vs_base),
            "" if name == BASELINE or vs_base is None else vs_base.verdict,
            fmt_interval(vs_copy),
            "" if vs_copy is None else vs_copy.verdict,
        ])  # fmt: skip
    lines += _table(["Configuration", "Last-frame error − Baseline's", "Verdict",
                     "Held-out error − own copy error", "Verdict"], pairs)  # fmt: skip

    if leaking:
        intro = (
            "The seed design's leaks, measured (rows that leak; not results): each beside the "
            "leak-free row it changes, on the same weights and batches; a lower error here is "
            "what the leak gives away, not skill."
        )
        lines += ["", intro, ""]
        by_name = {row["configuration"]: row for row in summary}
        compare_with = {c.name: c.compare_with for c in LEAK_CONFIGURATIONS}
        leak_rows = []
        for row in leaking:
            c = comparisons["leak_vs_leak_free"].get(row["configuration"])
            honest_row = by_name.get(compare_with.get(row["configuration"], ""))
            leak_rows.append([
                row["configuration"], row["leak"],
                {True: "yes", False: "**no**", None: "n/a"}[row["leak_free"]],
                _pm(row, "final_train_loss"), f"{row['test_error_vs_copy']:.3f}",
                (f"{honest_row['test_error_vs_copy']:.3f} ({honest_row['configuration']})"
                 if honest_row else "-"),
                fmt_interval(c), c.verdict if c else "",
            ])  # fmt: skip
        header = ["Leaking row", "What leaks", "Leak-free", "Train loss", "Held-out / copy",
                  "Leak-free row's", "Difference", "Verdict"]  # fmt: skip
        lines += _table(header, leak_rows)

    seeds = config.seeds
    notes = [
        "",
        f"Mean ± std over {plural(len(seeds), 'seed')} {seeds}; {result.data.description}; "
        f"{plural(config.steps, 'step')} of batch {config.batch_size} on {result.device} "
        f"({result.attention_backend} attention), stand-in LLM: {config.stand_in}.",
        "Errors are held-out MSEs of next-frame features. 'Held-out' is on the targets each "
        "configuration predicts (different frame sets: compare it with its own copy error), "
        "'Last-frame' on the clip's final frame, which every configuration predicts: compare "
        "configurations there. Copy errors are those of predicting 'next frame = this frame'; "
        "'/ copy' below 1 beats copying. "
        + ("Train loss: 1 = copying. " if _normalised(config) else "")
        + "Step: milliseconds of a training step, the median over seeds of each run's median "
        "(the first steps of a process pay its warm-up, which a median leaves out), and the "
        "range of the runs' medians.",
    ]
    if not show_blocks:
        tokens = sorted({row["num_tokens"] for row in summary})
        notes.append(
            f"Block sparsity is left out: at {', '.join(map(str, tokens))} tokens the masks "
            f"span at most {plural(max(-(-t // 128) for t in tokens), 'block')} of 128 a side, "
            "too few for the share FlexAttention skips to say anything (results.json keeps it)."
        )
    if 0 < min(row["num_seeds"] for row in summary) < MIN_SEEDS:
        notes.append(f"Fewer than {MIN_SEEDS} seeds: the intervals are wide; report results "
                     f"from at least {MIN_SEEDS}.")  # fmt: skip
    if result.planned_runs and len(result.runs) < result.planned_runs:
        notes.append(f"Stopped early: {len(result.runs)} of {result.planned_runs} runs "
                     "finished; the table holds those.")  # fmt: skip
    return "\n".join(lines + notes) + "\n"


def _normalised(config: Any) -> bool:
    return config.predict_residual and config.normalize_targets and config.loss_type == "mse"


def plot_loss_curves(result: AblationResult, path: str | Path | None = None) -> Any:
    """Training loss per step (mean over seeds, band: min to max over seeds) and the last-frame
    error of every configuration (each seed a dot, the bar its mean, the whisker its 95 %
    t-interval), with copying's error marked. Returns the matplotlib ``Figure`` (object API, no
    pyplot state); saved as a PNG when ``path`` is given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax, bars = fig.subplots(1, 2, width_ratios=(3, 2))
    summary = result.summary()
    for i, row in enumerate(summary):
        curves = torch.tensor([r.loss_curve for r in result.runs_of(row["configuration"])])
        steps = torch.arange(1, curves.shape[1] + 1)
        color = f"C{i}"
        # Configurations that differ only in the mask often overlap: dashes keep both visible.
        style = "-" if i % 2 == 0 else (0, (4, 3))
        ax.plot(steps, curves.mean(0), color=color, lw=1.3, ls=style, label=row["configuration"])
        if len(curves) > 1:
            ax.fill_between(steps, curves.min(0).values, curves.max(0).values, color=color,
                            alpha=0.2)  # fmt: skip
    if _normalised(result.config):
        ax.axhline(1.0, color="black", lw=0.8, ls=":", label="copying")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (own targets)")
    ax.set_title("training loss, mean over seeds (band: min to max)", fontsize=10)
    ax.legend(fontsize=8)
    x = torch.arange(len(summary)).float()
    tops = []
    for i, row in enumerate(summary):
        values = [r.last_frame_error for r in result.runs_of(row["configuration"])]
        mean = sum(values) / len(values)
        half = 0.0
        if len(values) > 1:
            sd = float(torch.tensor(values, dtype=torch.float64).std())
            half = student_t_quantile(0.975, len(values) - 1) * sd / len(values) ** 0.5
        bars.bar(i, mean, yerr=half, color=f"C{i}", alpha=0.7, capsize=4,
                 hatch="//" if row["leak"] else None)  # fmt: skip
        bars.scatter([i] * len(values), values, color="black", s=8, zorder=3)
        tops += [mean + half, max(values)]
    copies = [row["last_frame_copy_error"] for row in summary]
    bars.scatter(x, copies, marker="_", s=600, color="black", zorder=4, label="copying")
    bars.set_xticks(x.tolist(), [row["configuration"] for row in summary], fontsize=7,
                    rotation=20, ha="right")  # fmt: skip
    bars.set_ylabel("held-out MSE, final frame")
    bars.set_title("last-frame error: seeds (dots), mean, 95 % interval", fontsize=10)
    bars.set_ylim(0, 1.2 * max(copies + tops))
    bars.legend(fontsize=8, loc="upper center")
    if path is not None:
        fig.savefig(path, dpi=fig.dpi)
    return fig
