"""The end of every recipe: evaluate, save, and tell the user what the run gave and what it cost."""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from hf_transfer.strategies import count_parameters


class RunClock:
    """Wall time since construction and the process's peak memory (GPU memory when training on a GPU)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    @staticmethod
    def process_seconds() -> float:
        """Seconds since this process started: the command's own time, imports and start-up included."""
        import psutil

        return time.time() - psutil.Process().create_time()

    @staticmethod
    def peak_memory() -> dict:
        # ru_maxrss is in KiB on Linux, bytes on macOS.
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        peak = {"peak_cpu_memory_gb": round(rss / 2**30, 3)}
        if torch.cuda.is_available():
            peak["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        return peak


def optimizer_parameter_count(trainer) -> int:
    """Parameters that trained: those the optimizer updates, less, under gradual unfreezing, the groups the
    schedule never reached in this run (they sit in the optimizer, frozen)."""
    from hf_transfer.trainer import GradualUnfreezing

    gradual = next((c for c in trainer.callback_handler.callbacks if isinstance(c, GradualUnfreezing)), None)
    if gradual is not None and gradual.groups:
        return sum(g.numel() for g in gradual.trained_groups())
    if trainer.optimizer is None:
        return count_parameters(trainer.model)[0]
    seen = {id(p): p.numel() for group in trainer.optimizer.param_groups for p in group["params"]}
    return sum(seen.values())


def finish(trainer, clock: RunClock, train_metrics: dict, eval_splits: dict, extra: dict | None = None,
           summary: Callable[[dict], list[str]] | None = None, card: Callable[[object, dict], None] | None = None) -> dict:
    """Evaluate every split in `eval_splits`, save model + processor + metrics.json, print a summary; return the metrics.

    `summary` gives the task's own lines (e.g. the gain over a frozen baseline); the generic part knows no task.
    `card(trainer, results)` completes the output folder on rank 0 once metrics.json is written (the model card).
    """
    results = {k if k.startswith("train_") else f"train_{k}": v for k, v in train_metrics.items()}
    for split, dataset in eval_splits.items():
        results.update(trainer.evaluate(dataset, metric_key_prefix=split))
    total = count_parameters(trainer.model)[1]
    results.update(
        {
            "trainable_parameters": optimizer_parameter_count(trainer),
            "total_parameters": total,
            "world_size": trainer.args.world_size,
            "global_step": trainer.state.global_step,
            "wall_time_s": round(clock.seconds(), 2),
            "process_wall_time_s": round(clock.process_seconds(), 2),
            **clock.peak_memory(),
        }
    )
    results.update(extra or {})
    trainer.save_model()
    if trainer.is_world_process_zero():
        out = Path(trainer.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "metrics.json.tmp"
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
        os.replace(tmp, out / "metrics.json")  # never a half-written metrics file
        # Learning curves for reports: every logged loss and evaluation, by step.
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        if card is not None:
            card(trainer, results)
        print_summary(results, out, summary(results) if summary else [])
    return results


_REPORTED = ("validation_", "test_", "baseline_", "perplexity_", "source_", "forgetting_")
_NOT_REPORTED = ("_runtime", "_per_second", "_preparation_time")


def print_summary(results: dict, output_dir: Path, task_lines: list[str] = ()) -> None:
    title = f"hf_transfer run summary: {results['task']}" if "task" in results else "hf_transfer run summary"
    lines = ["", "=" * 64, title]
    if "model_name_or_path" in results:
        lines.append(f"  {'model':<36} {results['model_name_or_path']}{' (from scratch)' if results.get('from_scratch') else ''}")
    if "strategy" in results:
        lines.append(f"  {'strategy':<36} {results['strategy']}")
    if "train_examples" in results:
        epochs = f", {results['epochs']:g} epochs" if "epochs" in results else ""
        lines.append(f"  {'training data':<36} {results['train_examples']:,} examples{epochs}, {results.get('global_step', 0)} steps")
    # Evaluation scores, and what the data checks left out of any split (training's skipped files too).
    shown = [k for k in results if (k.startswith(_REPORTED) or k.endswith("_skipped")) and not k.endswith(_NOT_REPORTED)]
    for key in sorted(shown):
        value = results[key]
        lines.append(f"  {key:<36} {value:.4f}" if isinstance(value, float) else f"  {key:<36} {value}")
    t, n = results["trainable_parameters"], results["total_parameters"]
    lines.append(f"  {'trainable / total parameters':<36} {t:,} / {n:,} ({100 * t / max(n, 1):.2f}%)")
    if "precision" in results:
        why = f" ({results['precision_reason']})" if results.get("precision_reason") else ""
        lines.append(f"  {'precision':<36} {results['precision']}{why}")
        lines.append(f"  {'torch threads / data-loader workers':<36} {results['torch_threads']} / {results['dataloader_workers']}")
    since_start = results.get("process_wall_time_s")
    started = f" ({since_start:.1f} s since the command started)" if since_start else ""
    lines.append(f"  {'wall time':<36} {results['wall_time_s']:.1f} s{started}")
    for key in ("peak_cpu_memory_gb", "peak_gpu_memory_gb"):
        if key in results:
            lines.append(f"  {key.replace('_', ' '):<36} {results[key]:.2f} GB")
    lines += shift_lines(results)
    lines += [f"  {line}" for line in task_lines]
    lines += [f"  saved to {output_dir}", "=" * 64]
    print("\n".join(lines), flush=True)


# The scores set beside the clean ones (the others stay in metrics.json): classification, then regression's.
_SHIFT_COMPARED = ("_accuracy", "_f1", "_loss", "_mse", "_mae", "_r2")


def shift_lines(results: dict) -> list[str]:
    """Each shifted validation copy's scores beside the clean validation's (--eval_shift): `shifted_validation_x` (or
    `shifted_<name>_validation_x`) against `validation_x`."""
    lines = [f"  {'eval shift (' + key[: -len('_eval_shift')] + ')':<36} {results[key]}"
             for key in sorted(results) if key.startswith("shifted") and key.endswith("_eval_shift")]
    for key in sorted(results):
        if not key.startswith("shifted_") or "_validation_" not in key or not key.endswith(_SHIFT_COMPARED):
            continue
        clean = "validation_" + key.split("_validation_", 1)[1]
        shifted, reference = results[key], results.get(clean)
        if isinstance(shifted, (int, float)) and isinstance(reference, (int, float)):
            copy = key.split("_validation_", 1)[0]
            lines.append(f"  {clean + ' (' + copy + ')':<36} {shifted:.4f} (clean {reference:.4f}, {shifted - reference:+.4f})")
    return lines

