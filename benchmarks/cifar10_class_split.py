"""CIFAR-10 class-split transfer: a small ViT trained from scratch on classes 0-4, transferred to classes 5-9.

    nice -n 10 nohup python benchmarks/cifar10_class_split.py > outputs/cifar10_class_split.log 2>&1 &
    python benchmarks/cifar10_class_split.py --report_only   # after it ends: the report again, paths made project-relative

No pretrained ViT installs offline, so the transfer is made here: the source task is CIFAR-10's first five
classes (airplane, automobile, bird, cat, deer; 5,000 training images), the target task the other five (dog,
frog, horse, ship, truck), learnt from 10, 100 and 1,000 images per class. Arms, as recipes/compare.py lays them
out (its `arms`, its run layout and evidence.write_report, so the result is one compare report with the
learning curve): the same architecture from scratch on the target alone, frozen source features + logistic
regression (recipes/linear_probe.py), full fine-tuning, the bottom half frozen, and LoRA on q_proj/v_proj.
Every run goes through recipes/image_classification.py in its own process. Seeds 1 2 3 at 10 and 100 per class,
seed 1 at 1,000. The metric is accuracy on the 5,000 target test images, given to the runs as their validation
split and evaluated once, after training: nothing is selected on it (fixed budgets, no early stopping; the
probe's regularisation is cross-validated on the training features).

Resumable: every finished run is appended to benchmarks/results/cifar10_class_split/runs.jsonl, and a rerun skips
the runs already there (and the source model when its folder is complete). Images are read in place from
../shared/data/cifar10; the tables of paths, models and run folders go to outputs/cifar10_class_split.
One thread per run: on the shared 2-core machine two threads ran a training step 3-4x slower than one.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import paths

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by every run's process

CIFAR = paths.DATA / "cifar10"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SOURCE, TARGET = CLASSES[:5], CLASSES[5:]
WORK = paths.OUTPUTS / "cifar10_class_split"
RESULTS = paths.RESULTS / "cifar10_class_split"

# The small ViT: 32x32 input, 4x4 patches (64 + CLS tokens), 6 blocks of width 192, 3 heads, MLP 384; 1.8 M parameters.
SMALL_VIT = dict(image_size=32, patch_size=4, hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                 intermediate_size=384, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
# Crops of at least 60% of a 32x32 image: torchvision's default 8% would leave a few pixels.
COMMON = ["--disable_tqdm", "true", "--save_strategy", "no", "--report_to", "none", "--crop_scale", "0.6", "1.0",
          "--lr_scheduler_type", "cosine", "--warmup_steps", "0.1", "--weight_decay", "0.05",
          "--per_device_eval_batch_size", "256", "--dataloader_num_workers", "0"]
SOURCE_FLAGS = ["--num_train_epochs", "8", "--learning_rate", "1e-3", "--per_device_train_batch_size", "64",
                "--eval_strategy", "epoch", "--logging_steps", "50", "--seed", "0"]
# Per size: the same number of steps for every arm (epochs over the subset), batch 32.
EPOCHS = {10: 50, 100: 20, 1000: 5}
SEEDS = {10: [1, 2, 3], 100: [1, 2, 3], 1000: [1]}
# Learning rates: from scratch and LoRA take larger steps than fine-tuning a trained backbone.
STRATEGIES = [
    "full=--strategy full --learning_rate 3e-4",
    "freeze_bottom_half=--strategy freeze --freeze_bottom 3 --learning_rate 3e-4",
    "lora=--strategy lora --lora_r 8 --lora_alpha 16 --learning_rate 2e-3",
]
SCRATCH_LR = "1e-3"


def write_table(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"])
        writer.writerows(rows)
    tmp.replace(path)
    return path


def tables() -> dict[str, Path]:
    """Tables of absolute image paths (shuffled, so --max_eval_samples would take every class)."""
    def rows(split, classes):
        found = [(str(p), c) for c in classes for p in sorted((CIFAR / split / c).glob("*.jpg"))]
        random.Random(0).shuffle(found)
        return found

    source_test = rows("test", SOURCE)
    return {
        "source_train": write_table(WORK / "data" / "source_train.csv", rows("train", SOURCE)),
        "source_val": write_table(WORK / "data" / "source_val.csv", source_test[:1000]),
        "target_train": write_table(WORK / "data" / "target_train.csv", rows("train", TARGET)),
        "target_test": write_table(WORK / "data" / "target_test.csv", rows("test", TARGET)),
    }


def architecture() -> Path:
    """The small ViT's config and a 32x32 image processor, no weights: what --from_scratch builds from."""
    from transformers import ViTConfig, ViTImageProcessor

    folder = WORK / "small_vit"
    ViTConfig(**SMALL_VIT).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def run(module_path: str, argv: list[str], run_dir: Path) -> dict:
    from recipes.compare import run_recipe

    return run_recipe(module_path, argv, run_dir, launcher="")


def source_model(data: dict[str, Path], arch: Path) -> tuple[Path, dict]:
    """Train the small ViT on the source classes, then keep its backbone (no classifier) as the 'pretrained' model."""
    import torch
    from transformers import ViTForImageClassification, ViTModel

    out, backbone = WORK / "source", WORK / "source_backbone"
    if not (out / "metrics.json").is_file():
        start = time.time()
        run(str(paths.RECIPES / "image_classification.py"), [
            "--model_name_or_path", str(arch), "--from_scratch", "true", "--train_file", str(data["source_train"]),
            "--validation_file", str(data["source_val"]), "--output_dir", str(out), "--overwrite_output_dir", "true",
            *COMMON, *SOURCE_FLAGS], out)
        print(f"[source] trained in {time.time() - start:.0f} s", flush=True)
    metrics = json.loads((out / "metrics.json").read_text())
    if not (backbone / "model.safetensors").is_file():
        trained = ViTForImageClassification.from_pretrained(out)
        torch.manual_seed(0)  # the pooler (unused by the classifier) is random but fixed: the feature cache key stays put
        model = ViTModel(trained.config, add_pooling_layer=True)
        missing, unexpected = model.load_state_dict(trained.vit.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("pooler.") for k in missing), (missing, unexpected)
        model.config.id2label, model.config.label2id = {0: "LABEL_0", 1: "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
        model.save_pretrained(backbone)
        shutil.copyfile(out / "preprocessor_config.json", backbone / "preprocessor_config.json")
    return backbone, metrics


def relative(value):
    """Paths inside the project as relative ones (a results file is read on other machines); other values as they are."""
    if isinstance(value, dict):
        return {k: relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [relative(v) for v in value]
    if isinstance(value, str) and value.startswith(f"{paths.REPO}/"):
        return value[len(f"{paths.REPO}/"):]
    return value


def append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(relative(record)) + "\n")


def done_runs(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def report(records: list[dict]) -> Path | None:
    from hf_transfer.evidence.compare import Run, write_report

    records = [relative(r) for r in records]
    runs = [Run(r["arm"], r["seed"], r["metrics"], r.get("log_history", []), None, None, r["train_size"])
            for r in records if r["arm"] != "source"]
    if not runs:
        return None
    source = next((r["metrics"] for r in records if r["arm"] == "source"), {})
    settings = {
        "recipe": "image_classification",
        "source": f"small ViT (6 x 192, patch 4, 1.8 M parameters) from scratch on classes 0-4, "
                  f"{source.get('validation_accuracy', float('nan')):.4f} on 1,000 source test images",
        "target": "classes 5-9; metric on all 5,000 target test images (given as the validation split, scored once after training)",
        "train_sizes": f"{sorted(EPOCHS)} (per class)", "seeds": "1 2 3 at 10 and 100, 1 at 1000",
        "budget": ", ".join(f"{n}/class: {e} epochs" for n, e in EPOCHS.items()) + " at batch 32, cosine, 10% warm-up",
        "arms": f"scratch (lr {SCRATCH_LR}); frozen source features (mean over patches) + logistic regression; "
                + "; ".join(s.replace("=", ": ") for s in STRATEGIES),
        "runs": "one process each, one thread, nice 10, shared 2-core CPU",
    }
    return write_report(runs, RESULTS, "validation_accuracy", "Transfer report: CIFAR-10 classes 0-4 -> 5-9 (small ViT)",
                        settings, "fp32", size_unit="per class")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report_only", action="store_true", help="Rebuild the report from runs.jsonl; run nothing.")
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(EPOCHS), help="Target images per class to run.")
    parser.add_argument("--quick", action="store_true",
                        help="A smoke run of every step in minutes (256 source images, 1 epoch, 2 target epochs, 256 test "
                             "images) into outputs/cifar10_class_split_quick; its numbers mean nothing.")
    options = parser.parse_args()
    if options.quick:
        global WORK, RESULTS
        WORK = paths.OUTPUTS / "cifar10_class_split_quick"
        RESULTS = WORK / "results"
        SOURCE_FLAGS[SOURCE_FLAGS.index("--num_train_epochs") + 1] = "1"
        SOURCE_FLAGS.extend(["--max_train_samples", "256"])
        COMMON.extend(["--max_eval_samples", "256"])
        EPOCHS.update({size: 2 for size in EPOCHS})
        SEEDS.update({size: [1] for size in SEEDS})
        options.sizes = [10]
    results = RESULTS / "runs.jsonl"
    if options.report_only:  # after the benchmark has ended: it also rewrites runs.jsonl with project-relative paths
        records = [relative(r) for r in done_runs(results)]
        results.write_text("".join(json.dumps(r) + "\n" for r in records))
        print(report(records))
        return
    if not CIFAR.is_dir():
        sys.exit(f"{CIFAR} is missing: the benchmark reads CIFAR-10 in place (see data_cards/cifar10.md)")

    from hf_transfer.evidence.compare import SCRATCH
    from recipes import compare, image_classification, linear_probe

    RESULTS.mkdir(parents=True, exist_ok=True)
    data, arch = tables(), architecture()
    records = done_runs(results)
    if not any(r["arm"] == "source" for r in records):
        backbone, metrics = source_model(data, arch)
        record = {"arm": "source", "seed": 0, "train_size": None, "metrics": metrics,
                  "log_history": json.loads((WORK / "source" / "log_history.json").read_text())}
        append(results, record)
        records.append(record)
    backbone, _ = source_model(data, arch)

    args = compare.parse(["--recipe", "image_classification", "--strategies", *STRATEGIES])
    plan = compare.arms(args, image_classification.TASK)
    frozen = compare.frozen_arm(args)
    base = ["--model_name_or_path", str(backbone), "--train_file", str(data["target_train"]),
            "--validation_file", str(data["target_test"]), "--eval_strategy", "no", "--logging_steps", "20",
            "--per_device_train_batch_size", "32", "--learning_rate", SCRATCH_LR, *COMMON]
    for size in options.sizes:  # smallest first: an interrupted benchmark has its few-example end complete
        for arm, extra in plan.items():
            for seed in SEEDS[size]:
                if any(r["arm"] == arm and r["seed"] == seed and r["train_size"] == size for r in records):
                    continue
                run_dir = WORK / "runs" / f"size_{size}" / arm / f"seed_{seed}"
                argv = base + ["--max_train_samples_per_class", str(size), "--num_train_epochs", str(EPOCHS[size]),
                               "--seed", str(seed), "--output_dir", str(run_dir)]
                if arm == frozen:
                    module, argv = linear_probe, argv + ["--recipe", "image_classification", "--heads", "logistic_regression",
                                                         "--feature_cache_dir", str(WORK / "feature_cache")]
                else:
                    module, argv = image_classification, argv + extra + ["--overwrite_output_dir", "true"]
                    if arm == SCRATCH:
                        argv += ["--learning_rate", SCRATCH_LR]
                start = time.time()
                try:
                    metrics = run(module.__file__, argv, run_dir)
                except Exception as error:  # noqa: BLE001 - one failed run is logged; a rerun retries it
                    print(f"[class_split] {arm} size {size} seed {seed} FAILED: {error}", flush=True)
                    continue
                history_file = run_dir / "log_history.json"
                record = {"arm": arm, "seed": seed, "train_size": size, "metrics": metrics,
                          "log_history": json.loads(history_file.read_text()) if history_file.is_file() else []}
                append(results, record)
                records.append(record)
                print(f"[class_split] {arm} size {size} seed {seed}: accuracy {metrics.get('validation_accuracy', float('nan')):.4f} "
                      f"({time.time() - start:.0f} s)", flush=True)
        print(f"[class_split] report: {report(records)}", flush=True)


if __name__ == "__main__":
    main()
