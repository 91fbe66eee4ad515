"""Evidence that transfer helped: aggregate runs of several strategies into a report with a table and plots.

Pure functions over finished runs (their metrics and learning curves); `recipes/compare.py` produces the
runs. Spread is the standard deviation over seeds (and folds), so a difference smaller than it is noise.
"""
from __future__ import annotations

import json
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path

SCRATCH = "scratch"


@dataclass
class Run:
    arm: str
    seed: int
    metrics: dict
    log_history: list = field(default_factory=list)
    output_dir: str | None = None
    fold: int | None = None

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
    flag_negative_transfer(rows)
    return rows


def flag_negative_transfer(rows: list[ArmSummary]) -> None:
    """Mark arms worse than training from scratch by more than the two arms' spreads together."""
    scratch = next((r for r in rows if r.arm == SCRATCH), None)
    if scratch is None:
        return
    for row in rows:
        if row is not scratch:
            row.negative_transfer = row.mean < scratch.mean - (row.std + scratch.std)


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
    header = ["strategy", f"{metric} (mean ± std)", "runs", "wall time (s)", "peak memory (GB)", "trainable params",
              "total params", "size on disk (MB)"] + (["forgetting"] if has_forgetting else []) + ["note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        note = "**negative transfer** (worse than scratch beyond the spread)" if r.negative_transfer else ""
        if r.arm == SCRATCH:
            note = "no transfer (random initialisation)"
        cells = [r.arm, f"{100 * r.mean:.2f} ± {100 * r.std:.2f}", str(r.n), _fmt(r.wall_time_s, ".1f"),
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

    curves = learning_curves(runs, metric)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, (epochs, values) in curves.items():
        ax.plot(epochs, [100 * v for v in values], marker="o", label=arm, color=colours.get(arm))
    for row in rows:  # arms without a curve (frozen features + a classical head) as a level line
        if row.arm not in curves:
            ax.axhline(100 * row.mean, linestyle="--", color=colours[row.arm], label=f"{row.arm} (no training curve)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric} (%)")
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
            ax.errorbar(x, 100 * row.mean, yerr=100 * row.std, fmt="o", capsize=4, color=colours[row.arm], label=row.arm)
            ax.annotate(row.arm, (x, 100 * row.mean), textcoords="offset points", xytext=(6, 4), fontsize=8)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
        ax.set_title(f"{metric} against {x_label}")
        fig.tight_layout()
        paths.append(out_dir / name)
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def write_report(runs: list[Run], out_dir: str | Path, metric: str = "validation_accuracy", title: str = "Transfer report",
                 settings: dict | None = None, precision: str | None = None) -> Path:
    """report.md (table, flags, plots, environment) and runs.json in `out_dir`; returns the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(runs, metric)
    plots = plot_report(runs, rows, metric, out)
    env = environment(precision)
    negative = [r.arm for r in rows if r.negative_transfer]
    scratch = next((r for r in rows if r.arm == SCRATCH), None)
    best = max(rows, key=lambda r: r.mean)
    lines = [f"# {title}", ""]
    if settings:
        lines += ["Settings: " + ", ".join(f"`{k}` = {v}" for k, v in settings.items()), ""]
    lines += [markdown_table(rows, metric), ""]
    if scratch:
        lines.append(f"Best: **{best.arm}** at {100 * best.mean:.2f}, {100 * (best.mean - scratch.mean):+.2f} points over training from scratch.")
    lines.append("Negative transfer (worse than scratch by more than the spread): " + (", ".join(negative) if negative else "none") + ".")
    if any(r.forgetting is not None for r in rows):
        lines.append("Forgetting = source-task accuracy before minus after fine-tuning, in points (positive: forgot).")
    lines += ["", "Spread is the standard deviation over seeds (and folds); with one run it is 0 and says nothing.", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    lines += ["", "## Environment", "", *(f"- {k}: {v}" for k, v in env.items()), ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "runs.json").write_text(json.dumps(
        [{"arm": r.arm, "seed": r.seed, "fold": r.fold, "output_dir": r.output_dir, "metrics": r.metrics} for r in runs],
        indent=1, default=str))
    return out / "report.md"
