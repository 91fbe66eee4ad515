"""Evidence that transfer helped: aggregate runs of several strategies into a report with a table and plots.

Pure functions over finished runs (their metrics and learning curves); `recipes/compare.py` produces the
runs. Spread is the standard deviation over seeds (and folds), so a difference smaller than it is noise.

The direction of "better" follows the metric: accuracy, F1 and the like are higher-is-better; a metric
whose name has a `wer`, `cer`, `loss`, `perplexity` part or a regression error (`mse`, `rmse`, `mae`) is
lower-is-better, and "best" and "negative transfer" flip with it. Runs made at several training-set sizes
(`Run.train_size`, compare's --train_sizes) add the transfer learning curve: the metric against the number of
labelled examples.
"""
from __future__ import annotations

import json
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hf_transfer.errors import HfTransferError

SCRATCH = "scratch"
LOWER_IS_BETTER = ("wer", "cer", "loss", "perplexity", "mse", "rmse", "mae")
# Not fractions: shown as they are, not in percent (regression errors are in the target's units, R² and correlations
# run from -1 to 1).
UNSCALED = ("loss", "perplexity", "mse", "rmse", "mae", "r2", "pearson", "spearman")


def _parts(metric: str) -> set[str]:
    return set(metric.lower().replace("-", "_").split("_"))


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of `metric` are better (error rates, losses, perplexity), by the parts of its name."""
    return bool(_parts(metric) & set(LOWER_IS_BETTER))


def scale(metric: str) -> float:
    """100 for fractions (accuracy, F1, WER: shown in percent, differences in points), 1 for losses, perplexity and
    regression scores."""
    return 1.0 if _parts(metric) & set(UNSCALED) else 100.0


def report_metric(task_metric: str, task_type: str | None = None) -> str:
    """The metric a report compares unless told otherwise: the recipe's own, or validation MAE for a regression run."""
    return "validation_mae" if task_type == "regression" else task_metric


def _unit(metric: str) -> str:
    return f"{metric} (%)" if scale(metric) == 100 else metric


def train_examples(metrics: dict) -> int | None:
    """How many labelled examples a run trained on, when it recorded it."""
    for key in ("train_examples", "train_clips"):
        if isinstance(metrics.get(key), (int, float)):
            return int(metrics[key])
    return None


@dataclass
class Run:
    arm: str
    seed: int
    metrics: dict
    log_history: list = field(default_factory=list)
    output_dir: str | None = None
    fold: int | None = None
    train_size: int | None = None  # the size asked for (per class or in all: see compare's --train_sizes)
    variant: str | None = None  # the data variant (compare's --variants: e.g. a domain pair)
    draw: int | None = None  # the training subset drawn (compare's --few_shot_draws: its --train_sample_seed)

    def size_on_disk_mb(self) -> float | None:
        """Saved weights (safetensors at the top of the output folder; checkpoints excluded)."""
        if not self.output_dir:
            return None
        files = list(Path(self.output_dir).glob("*.safetensors"))
        return sum(f.stat().st_size for f in files) / 2**20 if files else None


@dataclass
class ArmSummary:
    arm: str
    n: int
    mean: float
    std: float
    wall_time_s: float
    peak_memory_gb: float | None
    trainable_parameters: int | None
    total_parameters: int | None
    size_mb: float | None
    forgetting: float | None = None
    negative_transfer: bool = False


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summarise(runs: list[Run], metric: str) -> list[ArmSummary]:
    """One row per arm, in the order arms first appear."""
    arms = list(dict.fromkeys(r.arm for r in runs))
    rows = []
    for arm in arms:
        mine = [r for r in runs if r.arm == arm and metric in r.metrics]
        if not mine:
            continue
        scores = [r.metrics[metric] for r in mine]
        memory = [r.metrics.get("peak_gpu_memory_gb", r.metrics.get("peak_cpu_memory_gb")) for r in mine]
        rows.append(ArmSummary(
            arm=arm, n=len(scores), mean=statistics.fmean(scores), std=statistics.stdev(scores) if len(scores) > 1 else 0.0,
            wall_time_s=_mean(r.metrics.get("wall_time_s") for r in mine),
            peak_memory_gb=max((m for m in memory if m is not None), default=None),
            trainable_parameters=mine[0].metrics.get("trainable_parameters"),
            total_parameters=mine[0].metrics.get("total_parameters"),
            size_mb=_mean(r.size_on_disk_mb() for r in mine),
            forgetting=_mean(r.metrics.get("forgetting_accuracy") for r in mine),
        ))
    flag_negative_transfer(rows, lower_is_better(metric))
    return rows


def flag_negative_transfer(rows: list[ArmSummary], lower_better: bool = False) -> None:
    """Mark arms worse than training from scratch by more than the two arms' spreads together.

    Worse is lower for accuracy-like metrics and higher for error rates, losses and perplexity (`lower_better`).
    """
    scratch = next((r for r in rows if r.arm == SCRATCH), None)
    if scratch is None:
        return
    for row in rows:
        if row is not scratch:
            margin = row.std + scratch.std
            row.negative_transfer = (row.mean > scratch.mean + margin) if lower_better else (row.mean < scratch.mean - margin)


def best_row(rows: list[ArmSummary], metric: str) -> ArmSummary:
    """The arm with the best mean: the lowest for a lower-is-better metric, else the highest."""
    return (min if lower_is_better(metric) else max)(rows, key=lambda r: r.mean)


def environment(precision: str | None = None) -> dict:
    """Versions, device and precision, so a report says what produced it."""
    import importlib.metadata as md

    import torch

    versions = {}
    for package in ("torch", "transformers", "datasets", "peft", "accelerate", "scikit-learn"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
    import os

    return {"python": platform.python_version(), **versions, "device": device, "cpu_cores": os.cpu_count(),
            "precision": precision or "fp32", "platform": platform.platform()}


def _fmt(value, spec: str, missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def markdown_table(rows: list[ArmSummary], metric: str) -> str:
    has_forgetting = any(r.forgetting is not None for r in rows)
    k = scale(metric)
    header = ["strategy", f"{metric} (mean ± std{', %' if k == 100 else ''})", "runs", "wall time (s)", "peak memory (GB)", "trainable params",
              "total params", "size on disk (MB)"] + (["forgetting"] if has_forgetting else []) + ["note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        note = "**negative transfer** (worse than scratch beyond the spread)" if r.negative_transfer else ""
        if r.arm == SCRATCH:
            note = "no transfer (random initialisation)"
        cells = [r.arm, f"{k * r.mean:.2f} ± {k * r.std:.2f}", str(r.n), _fmt(r.wall_time_s, ".1f"),
                 _fmt(r.peak_memory_gb, ".2f"), _fmt(r.trainable_parameters, ","), _fmt(r.total_parameters, ","),
                 _fmt(r.size_mb, ".1f")] + ([_fmt(r.forgetting and 100 * r.forgetting, "+.2f")] if has_forgetting else []) + [note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def learning_curves(runs: list[Run], metric: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per arm: (epochs, mean of `eval_<metric>` over seeds at each epoch), from the Trainer's log history."""
    key = "eval_" + metric.split("_", 1)[1] if metric.startswith("validation_") else f"eval_{metric}"
    curves = {}
    for arm in dict.fromkeys(r.arm for r in runs):
        points: dict[float, list[float]] = {}
        for run in (r for r in runs if r.arm == arm):
            for entry in run.log_history:
                if key in entry and "epoch" in entry:
                    points.setdefault(round(entry["epoch"], 3), []).append(entry[key])
        if points:
            epochs = sorted(points)
            curves[arm] = (epochs, [statistics.fmean(points[e]) for e in epochs])
    return curves


def plot_report(runs: list[Run], rows: list[ArmSummary], metric: str, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    colours = {row.arm: f"C{i}" for i, row in enumerate(rows)}
    k = scale(metric)

    curves = learning_curves(runs, metric)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, (epochs, values) in curves.items():
        ax.plot(epochs, [k * v for v in values], marker="o", label=arm, color=colours.get(arm))
    for row in rows:  # arms without a curve (frozen features + a classical head) as a level line
        if row.arm not in curves:
            ax.axhline(k * row.mean, linestyle="--", color=colours[row.arm], label=f"{row.arm} (no training curve)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(_unit(metric))
    ax.set_title("Learning curves (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "learning_curves.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    for x_key, x_label, name, log in (("trainable_parameters", "trainable parameters", "metric_vs_trainable_parameters.png", True),
                                      ("wall_time_s", "wall time per run (s)", "metric_vs_time.png", False)):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for row in rows:
            x = getattr(row, x_key)
            if x is None or (log and x <= 0):
                continue
            ax.errorbar(x, k * row.mean, yerr=k * row.std, fmt="o", capsize=4, color=colours[row.arm], label=row.arm)
            ax.annotate(row.arm, (x, k * row.mean), textcoords="offset points", xytext=(6, 4), fontsize=8)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(_unit(metric))
        ax.grid(alpha=0.3)
        ax.set_title(f"{metric} against {x_label}")
        fig.tight_layout()
        paths.append(out_dir / name)
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def summarise_by_size(runs: list[Run], metric: str) -> dict[int, list[ArmSummary]]:
    """`summarise` at each training-set size (runs with a `train_size`), smallest first; empty without sizes."""
    sizes = sorted({r.train_size for r in runs if r.train_size is not None})
    return {size: summarise([r for r in runs if r.train_size == size], metric) for size in sizes}


def size_examples(runs: list[Run]) -> dict[int, int | None]:
    """Size asked -> labelled examples the runs at that size actually trained on (the median of those that say)."""
    counts: dict[int, int | None] = {}
    for size in sorted({r.train_size for r in runs if r.train_size is not None}):
        found = [n for n in (train_examples(r.metrics) for r in runs if r.train_size == size) if n is not None]
        counts[size] = int(statistics.median(found)) if found else None
    return counts


def _size_heading(size: int, examples: int | None, unit: str) -> str:
    if unit == "in all":
        return f"{size} examples" + ("" if examples in (None, size) else f" ({examples} used)")
    return f"{size} {unit}" + ("" if examples is None else f" ({examples} examples)")


def size_table(by_size: dict[int, list[ArmSummary]], metric: str, examples: dict[int, int | None], unit: str = "per class") -> str:
    """Rows arms, columns training-set sizes, cells mean ± std over seeds; the best arm per size in bold, † negative transfer."""
    k = scale(metric)
    arms = list(dict.fromkeys(row.arm for rows in by_size.values() for row in rows))
    header = ["strategy"] + [_size_heading(size, examples.get(size), unit) for size in by_size]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = {size: best_row(rows, metric).arm for size, rows in by_size.items() if rows}
    for arm in arms:
        cells = [arm]
        for size, rows in by_size.items():
            row = next((r for r in rows if r.arm == arm), None)
            if row is None:
                cells.append("—")
                continue
            cell = f"{k * row.mean:.2f} ± {k * row.std:.2f}"
            cell = f"**{cell}**" if best.get(size) == arm else cell
            cells.append(cell + (" †" if row.negative_transfer else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_train_size_curve(runs: list[Run], metric: str, out_dir: Path, unit: str = "per class") -> Path:
    """learning_curve_by_train_size.png: the metric against labelled training examples (log x), one line per arm,
    the mean over seeds with a band of ± one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_size = summarise_by_size(runs, metric)
    examples = size_examples(runs)
    counted = all(n is not None for n in examples.values())
    x_of = {size: (examples[size] if counted else size) for size in by_size}
    k = scale(metric)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    arms = list(dict.fromkeys(row.arm for rows in by_size.values() for row in rows))
    for i, arm in enumerate(arms):
        points = [(x_of[size], row) for size, rows in by_size.items() for row in rows if row.arm == arm]
        xs = np.array([x for x, _ in points], dtype=float)
        means = np.array([k * row.mean for _, row in points])
        stds = np.array([k * row.std for _, row in points])
        ax.plot(xs, means, marker="o", color=f"C{i}", label=arm)
        ax.fill_between(xs, means - stds, means + stds, color=f"C{i}", alpha=0.2, linewidth=0)
        if len(xs) == 1:  # a band needs two points: one size shows its spread as an error bar
            ax.errorbar(xs, means, yerr=stds, fmt="none", capsize=4, color=f"C{i}")
    ax.set_xscale("log")
    ax.minorticks_off()  # ticks at the sizes run, in plain numbers
    ax.set_xticks([x_of[size] for size in by_size])
    ax.set_xticklabels([f"{x_of[size]}" + (f"\n({size} {unit})" if counted and unit != "in all" else "") for size in by_size])
    if counted:
        ax.set_xlabel("labelled training examples (log scale)")
    else:
        ax.set_xlabel(f"training examples {unit} (as asked; log scale)")
    ax.set_ylabel(_unit(metric) + (" — lower is better" if lower_is_better(metric) else ""))
    ax.set_title("Transfer learning curve (mean ± std over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "learning_curve_by_train_size.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def variant_table(runs: list[Run], metric: str, beside: str | None = None) -> str:
    """Rows arms, columns data variants (compare's --variants, e.g. domain pairs) and their mean: each cell the mean ±
    std over seeds, `beside`'s mean in brackets (domain adaptation: target accuracy, source validation beside it).
    The mean column averages the variants where the arm has every variant; the best arm per column in bold."""
    k = scale(metric)
    variants = list(dict.fromkeys(r.variant for r in runs if r.variant is not None))
    arms = list(dict.fromkeys(r.arm for r in runs if metric in r.metrics))

    def values(arm, variant, key):
        return [r.metrics[key] for r in runs if r.arm == arm and r.variant == variant and key in r.metrics]

    means = {(a, v): statistics.fmean(values(a, v, metric)) for a in arms for v in variants if values(a, v, metric)}
    for arm in arms:
        if all((arm, v) in means for v in variants):
            means[(arm, "mean")] = statistics.fmean(means[(arm, v)] for v in variants)
    pick = min if lower_is_better(metric) else max
    best = {v: pick((a for a in arms if (a, v) in means), key=lambda a: means[(a, v)], default=None) for v in [*variants, "mean"]}
    header = ["arm", *variants, f"mean over {len(variants)}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        cells = [arm]
        for variant in [*variants, "mean"]:
            if (arm, variant) not in means:
                cells.append("—")
                continue
            scores = values(arm, variant, metric) if variant != "mean" else []
            cell = f"{k * means[(arm, variant)]:.2f}" + (f" ± {k * statistics.stdev(scores):.2f}" if len(scores) > 1 else "")
            side = values(arm, variant, beside) if beside and variant != "mean" else []
            cell += f" ({k * statistics.fmean(side):.1f})" if side else ""
            cells.append(f"**{cell}**" if best[variant] == arm else cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict_lines(rows: list[ArmSummary], metric: str) -> list[str]:
    """Best arm against scratch, and the arms with negative transfer."""
    k, lower = scale(metric), lower_is_better(metric)
    scratch = next((r for r in rows if r.arm == SCRATCH), None)
    negative = [r.arm for r in rows if r.negative_transfer]
    lines = []
    if scratch and rows:
        best = best_row(rows, metric)
        difference = f"{k * (best.mean - scratch.mean):+.2f}{' points' if k == 100 else ''}"
        lines.append(f"Best: **{best.arm}** at {k * best.mean:.2f}, {difference} against training from scratch"
                     + (" (lower is better)." if lower else "."))
    lines.append(f"Negative transfer ({'higher' if lower else 'lower'} than scratch by more than the spread): "
                 + (", ".join(negative) if negative else "none") + ".")
    return lines


def write_report(runs: list[Run], out_dir: str | Path, metric: str = "validation_accuracy", title: str = "Transfer report",
                 settings: dict | None = None, precision: str | None = None, size_unit: str = "per class") -> Path:
    """report.md (tables, flags, plots, environment) and runs.json in `out_dir`; returns the report's path.

    Runs with a `train_size` add the metric-by-size table and `learning_curve_by_train_size.png`, a detail
    table per size, and the per-run plots (epochs, parameters, time) of the largest size. `size_unit` says how
    sizes count: "per class" or "in all".
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_size = summarise_by_size(runs, metric)
    examples = size_examples(runs)
    main_runs = [r for r in runs if r.train_size == max(by_size)] if by_size else runs
    rows = summarise(main_runs, metric)
    if not rows:
        raise HfTransferError(f"no run reported the metric {metric}; pass --metric with one that they report (see a run's metrics.json)")
    plots = plot_report(main_runs, rows, metric, out)
    env = environment(precision)
    lines = [f"# {title}", ""]
    if settings:
        lines += ["Settings: " + ", ".join(f"`{k}` = {v}" for k, v in settings.items()), ""]
    if lower_is_better(metric):
        lines += [f"Lower {metric} is better.", ""]
    if by_size:
        curve = plot_train_size_curve(runs, metric, out, size_unit)
        lines += [f"## {metric} by training-set size", "", size_table(by_size, metric, examples, size_unit), "",
                  "Mean ± std over seeds; the best arm at each size in bold; † negative transfer at that size "
                  "(worse than scratch by more than the two spreads).", "", f"![{curve.stem}]({curve.name})", ""]
        for size, size_rows in by_size.items():
            lines += [f"## At {_size_heading(size, examples.get(size), size_unit)}", "", markdown_table(size_rows, metric), ""]
            lines += _verdict_lines(size_rows, metric) + [""]
    else:
        lines += [markdown_table(rows, metric), ""]
        lines += _verdict_lines(rows, metric)
    if any(r.variant is not None for r in runs):
        beside = "validation_accuracy" if metric != "validation_accuracy" and any("validation_accuracy" in r.metrics for r in runs) else None
        lines += ["", f"## {metric} by variant", "", variant_table(runs, metric, beside), "",
                  "Mean ± std over seeds" + (f"; {beside} in brackets" if beside else "") + "; the best arm per column in "
                  "bold. The tables above pool every variant.", ""]
    if any(r.forgetting is not None for r in rows):
        lines.append("Forgetting = source-task accuracy before minus after fine-tuning, in points (positive: forgot).")
    lines += ["", "Spread is the standard deviation over seeds (and folds, or few-shot draws); with one run it is 0 and "
              "says nothing.", ""]
    if by_size:
        lines += [f"Plots below: the runs at the largest size ({_size_heading(max(by_size), examples.get(max(by_size)), size_unit)}).", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    lines += ["", "## Environment", "", *(f"- {k}: {v}" for k, v in env.items()), ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "runs.json").write_text(json.dumps(
        [{"arm": r.arm, "seed": r.seed, "fold": r.fold, "train_size": r.train_size, "variant": r.variant, "draw": r.draw,
          "output_dir": r.output_dir,
          "metrics": r.metrics} for r in runs],
        indent=1, default=str))
    return out / "report.md"



