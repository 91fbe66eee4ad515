"""Feature extraction with classical heads: embed once with the frozen encoder (cached), then fit scikit-learn heads.

    python recipes/linear_probe.py                                   # embedded MiniLM + review sample
    python recipes/linear_probe.py --train_file train.csv --heads logistic_regression linear_svm mlp --k_folds 5
    python recipes/linear_probe.py --recipe audio_classification --model_name_or_path facebook/wav2vec2-base \
        --train_dir clips/train --validation_dir clips/dev
    python recipes/linear_probe.py --recipe image_classification --train_dir images/train --validation_dir images/val \
        --pooling cls --feature_views true          # ViT: the CLS token, or (default) the mean over the patches

The first thing to try with under about a thousand labelled examples: one forward pass, seconds per head. A
regression target (the sentiment recipe's --task_type regression, or fractional labels) fits ridge regression.
`--recipe NAME` (default sentiment) picks the task: its data and model flags and its defaults, and its own
`load` reads and checks the data, so one flag set drives both the recipe and this probe (training flags
other than --output_dir, --seed and --per_device_eval_batch_size are accepted and unused). The recipe's
task must be labelled (class labels: sentiment, audio_classification, image_classification). Images are embedded
as evaluation images (no crop or flip), so cached features are the same on every call.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hf_transfer.cli import load_config_file, run_cli
from hf_transfer.errors import HfTransferError
from hf_transfer.evidence.features import (
    FeatureArgs,
    cached_embed,
    cross_validate,
    fit_head,
    heads_for,
    plot_feature_views,
    score_head,
)
from hf_transfer.run.finish import RunClock
from hf_transfer.run.task import Args, Task
from recipes import load_recipe

DEFAULT_RECIPE = "sentiment"


@dataclass
class ProbeRecipeArgs:
    recipe: str = field(
        default=DEFAULT_RECIPE,
        metadata={"help": "The task recipe whose data, model flags and defaults to use: a labelled one (sentiment, "
                  "audio_classification, image_classification)."},
    )


def recipe_name(argv: list[str] | None) -> str:
    """`--recipe NAME` (or `--recipe=NAME`) from the flags, else from the --config file, else sentiment."""
    argv = list(argv or [])
    name, config = None, None
    for i, arg in enumerate(argv):
        if arg == "--recipe" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--recipe="):
            name = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
    if name is None and config is not None:
        name = load_config_file(config).get("recipe")
    return name or DEFAULT_RECIPE


def probe_task(name: str) -> Task:
    """The recipe's Task with FeatureArgs (and --recipe) added: its arguments, defaults and `load`, a probe's output folder."""
    task = load_recipe(name).TASK
    if not task.labelled:
        raise HfTransferError(
            f"linear_probe fits classifiers on class labels, and the {task.name} recipe has none; "
            "use a labelled recipe (sentiment, audio_classification, image_classification)"
        )
    return dataclasses.replace(
        task, arguments=(*task.arguments, FeatureArgs, ProbeRecipeArgs),
        defaults={**task.defaults, "output_dir": "outputs/linear_probe"},
    )


def parse(argv: list[str] | None = None) -> tuple[Task, Args]:
    """The probe's Task for the named recipe and the parsed options (looked up by type: `args[FeatureArgs]`)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    task = probe_task(recipe_name(argv))
    return task, task.parse(argv)


def main(argv: list[str] | None = None) -> dict:
    from transformers import AutoModel

    from hf_transfer.models.loading import load_pretrained

    clock = RunClock()
    task, args = parse(argv)
    feature_args, train_args = args[FeatureArgs], args.training
    data = task.load(args)  # the recipe's own checks and preparation: tokenised text, or clips checked from their headers
    regression = data.report.get("task_type") == "regression"
    heads = heads_for(feature_args.heads, regression)
    if regression and feature_args.feature_views:
        raise HfTransferError("--feature_views colours the features by class, and a regression target has none; drop it")
    backbone = load_pretrained(AutoModel, args.model, data.config).to(train_args.device)
    label_names = list(data.report.get("label_names") or [data.config.id2label[i] for i in sorted(data.config.id2label)])

    embed_start = time.perf_counter()
    features, hits = {}, {}
    for split in ("train", "validation", "test", "source"):
        if split in data.datasets:
            features[split], hits[split] = cached_embed(
                backbone, data.datasets[split], data.collator, feature_args.feature_cache_dir, feature_args.pooling,
                feature_args.layer, batch_size=train_args.per_device_eval_batch_size)
    embed_seconds = time.perf_counter() - embed_start
    labels = {split: np.asarray(data.datasets[split]["labels"]) for split in features}

    results: dict = {
        "task": task.name, "recipe": args[ProbeRecipeArgs].recipe,
        "task_type": "regression" if regression else "classification",
        "model_name_or_path": args.model.model_name_or_path, "pooling": feature_args.pooling, "layer": feature_args.layer,
        "embed_seconds": round(embed_seconds, 2), "feature_cache_hit": all(hits.values()),
        "feature_cache_hits": hits,
        "train_examples": len(labels["train"]), "feature_dim": int(features["train"].shape[1]),
        # A linear head's weights: one output for two classes (logistic regression / SVM) or a number, else one per class.
        "trainable_parameters": (features["train"].shape[1] + 1) * (1 if regression or len(label_names) == 2
                                                                    else len(label_names)),
        "total_parameters": sum(p.numel() for p in backbone.parameters()),
    }
    for head_name in heads:
        fit_start = time.perf_counter()
        head = fit_head(head_name, features["train"], labels["train"], train_args.seed)
        results[f"{head_name}_fit_seconds"] = round(time.perf_counter() - fit_start, 3)
        if head_name == "ridge":  # the regularisation leave-one-out chose: at an end of the grid, the grid is too short
            results["ridge_alpha"] = float(head[-1].alpha_)
        for split in ("validation", "test", "source"):
            if split in features:
                results.update({f"{split}_{head_name}_{k}": v for k, v in score_head(head, features[split], labels[split]).items()})
        if feature_args.k_folds:
            cv = cross_validate(features["train"], labels["train"], head_name, feature_args.k_folds, train_args.seed)
            results.update({f"cv{feature_args.k_folds}_{head_name}_{k}": v for k, v in cv.items()})
    first = heads[0]
    for split in ("validation", "test"):  # the first head's scores under the common names (validation_accuracy, ...)
        prefix = f"{split}_{first}_"
        results.update({f"{split}_{k[len(prefix):]}": v for k, v in list(results.items()) if k.startswith(prefix)})

    out = Path(train_args.output_dir)
    if train_args.process_index == 0:
        out.mkdir(parents=True, exist_ok=True)
        if feature_args.feature_views:
            domains = data.extra.get("domains", {}).get("train")
            paths = plot_feature_views(features["train"], labels["train"], label_names, out,
                                       np.asarray(domains) if domains else None, seed=train_args.seed)
            results["feature_views"] = [str(p) for p in paths]
        results.update({"wall_time_s": round(clock.seconds(), 2), **clock.peak_memory()})
        tmp = out / "metrics.json.tmp"
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
        os.replace(tmp, out / "metrics.json")
        print_probe_summary(results, heads)
    return results


def print_probe_summary(results: dict, heads: list[str]) -> None:
    lines = ["", "=" * 64, f"frozen features + classical heads: {results.get('task', '')}",
             f"  embedding: {results['embed_seconds']:.1f} s ({'from cache' if results['feature_cache_hit'] else 'computed, now cached'}), "
             f"{results['train_examples']} train examples, dim {results['feature_dim']}"]
    score = "mae" if results.get("task_type") == "regression" else "accuracy"
    for head in heads:
        line = f"  {head:<22} validation {score} {results.get(f'validation_{head}_{score}', float('nan')):.4f}"
        cv = [k for k in results if k.startswith("cv") and k.endswith(f"_{head}_{score}_mean")]
        if cv:
            line += f"   cv {results[cv[0]]:.4f} ± {results[cv[0].replace('_mean', '_std')]:.4f}"
        lines.append(line + f"   fit {results[f'{head}_fit_seconds']:.2f} s")
    lines += [f"  wall time {results['wall_time_s']:.1f} s", "=" * 64]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    run_cli(main)
