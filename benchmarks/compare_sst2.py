"""The example transfer report: SST-2 with MiniLM-L6 at 16, 64 and 1,000 labelled sentences per class.

    python benchmarks/compare_sst2.py [--sizes 16 64 1000]

For each size, recipes/compare.py runs scratch, frozen features + logistic regression, full fine-tuning,
LoRA and gradual unfreezing on the same subset, seeds and budget, and writes its report (report.md and
PNG plots) to benchmarks/results/compare_sst2/<size>_per_class/. Dev accuracy on all 872 dev sentences.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import paths

SST2 = paths.DATA / "sst2"

# size per class -> (epochs, seeds): fewer examples get more epochs and more seeds (their spread is larger).
SETTINGS = {16: (6, [1, 2, 3, 4, 5]), 64: (4, [1, 2, 3]), 1000: (1, [1])}
BATCH = 16
# LoRA on every linear layer at rank 16: the setting that matched full fine-tuning in benchmarks/sst2_strategies.py.
LORA = "lora=--strategy lora --lora_target_modules all-linear --lora_r 16 --lora_alpha 32 --learning_rate 1e-3"


def gradual(size: int, epochs: int) -> str:
    """Gradual unfreezing by steps, with all 8 groups (embeddings, 6 blocks, head) training by mid-run: by epoch,
    a 1-6 epoch budget would leave most groups frozen throughout."""
    steps = math.ceil(2 * size / BATCH) * epochs
    return f"gradual=--strategy gradual --unfreeze_unit step --unfreeze_every {max(1, steps // 16)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=paths.RESULTS / "compare_sst2")
    args = parser.parse_args()
    if not (SST2 / "train.tsv").is_file():
        sys.exit(f"skipped: SST-2 not found at {SST2}")
    for size in args.sizes:
        epochs, seeds = SETTINGS.get(size, (2, [1]))
        recipe_args = (
            f"--train_file {SST2 / 'train.tsv'} --validation_file {SST2 / 'dev.tsv'} --class_names negative positive "
            f"--max_train_samples_per_class {size} --num_train_epochs {epochs} --learning_rate 1e-4 "
            f"--per_device_train_batch_size {BATCH} --max_seq_length 64 --save_strategy no --disable_tqdm true"
        )
        run_dir = paths.OUTPUTS / "bench_compare" / f"{size}_per_class"
        subprocess.run([sys.executable, str(paths.RECIPES / "compare.py"), "--strategies", "full", LORA, gradual(size, epochs),
                        "--seeds", *map(str, seeds), "--recipe_args", recipe_args, "--output_dir", str(run_dir),
                        "--feature_cache_dir", str(paths.OUTPUTS / "feature_cache")],
                       check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        # Commit only the report and its plots, not the runs' weights.
        target = args.out / f"{size}_per_class"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("report.md", "learning_curves.png", "metric_vs_trainable_parameters.png", "metric_vs_time.png"):
            (target / name).write_bytes((run_dir / name).read_bytes())


if __name__ == "__main__":
    main()
