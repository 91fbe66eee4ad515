"""The cached frozen prefix on ViT: the CIFAR-10 class-split transfer with the bottom half of the source ViT frozen.

    python benchmarks/cifar10_class_split.py     # first: builds the source ViT and the data tables (outputs/)
    python benchmarks/prefix_cache_vit.py        # then: freeze vs freeze + --cache_frozen_prefix, same everything else

Two arms through `recipes/image_classification.py`, one process, the same data, seed and batches: 100 target images
per class (500), 10 epochs, batch 32, the source ViT's embeddings and bottom 3 of 6 blocks frozen, augmentation off
(an augmented image is a new input every epoch, which the cache refuses), scored once on 1,000 target test images.
"cached" starts from an empty cache. The time is the wall time of the recipe's `main` (load, train, score).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import paths

ARMS = {
    "freeze": ["--strategy", "freeze", "--freeze_bottom", "3"],
    "cached": ["--strategy", "freeze", "--freeze_bottom", "3", "--cache_frozen_prefix"],
}


def main() -> None:
    import cifar10_class_split as split
    import torch

    from recipes import image_classification

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--results", type=Path, default=paths.RESULTS / "prefix_cache_vit.json")
    args = parser.parse_args()
    backbone = split.WORK / "source_backbone"
    if not (backbone / "model.safetensors").is_file():
        sys.exit("run benchmarks/cifar10_class_split.py first: it trains the source ViT this benchmark starts from")
    torch.set_num_threads(1)
    data = split.tables()
    out = split.WORK / "prefix_cache_vit"
    results = {}
    for name, flags in ARMS.items():
        argv = ["--model_name_or_path", str(backbone), "--train_file", str(data["target_train"]),
                "--validation_file", str(data["target_test"]), "--max_eval_samples", "1000",
                "--max_train_samples_per_class", str(args.per_class), "--num_train_epochs", str(args.epochs),
                "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "256", "--learning_rate", "3e-4",
                "--random_resized_crop", "false", "--horizontal_flip", "false", "--eval_strategy", "no",
                "--save_strategy", "no", "--logging_steps", "50", "--disable_tqdm", "true", "--seed", "1",
                "--dataloader_num_workers", "0", "--output_dir", str(out / name), "--overwrite_output_dir", "true",
                *flags]
        start = time.perf_counter()
        metrics = image_classification.main(argv)
        results[name] = {"wall_s": round(time.perf_counter() - start, 2), "train_s": metrics.get("train_runtime"),
                         "validation_accuracy": metrics.get("validation_accuracy"), "flags": " ".join(flags)}
        print(name, results[name], flush=True)
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, 2 CPU cores, torch {torch.__version__} with 1 thread, no GPU; shared with other jobs",
        "setting": {"per_class": args.per_class, "epochs": args.epochs, "model": "the class-split source ViT (6 blocks x 192)",
                    "frozen": "embeddings + bottom 3 of 6 blocks", "augmentation": "off", "scored": "1,000 target test images"},
        "arms": results,
        "cached_to_freeze_train": round(results["cached"]["train_s"] / results["freeze"]["train_s"], 3)
        if results["cached"]["train_s"] and results["freeze"]["train_s"] else None,
    }
    args.results.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
