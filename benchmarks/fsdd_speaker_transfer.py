"""FSDD speaker transfer: a small wav2vec2 trained on five speakers, adapted to a held-out one, vs training from scratch.

    python benchmarks/fsdd_speaker_transfer.py                        # held-out george and theo, k = 1 5 20, seeds 0 1
    python benchmarks/fsdd_speaker_transfer.py --held_out lucas --seeds 0 --shots 5 --stages source adapt

No pretrained speech model installs offline, so transfer is measured across speakers on real recordings
(FSDD, ../shared/data/fsdd: 6 speakers x 10 digits x 50 takes, 8 kHz; official split: take 0-4 test, 5-49 train).
Every run goes through the recipes (`main([...])`), so the numbers are the recipes' own. Stages:

  throughput  every clip through the audio collator: decode, resample 8 -> 16 kHz, featurise, pad (clips/s),
              and the up-front header check (files/s)
  source      the small wav2vec2 from scratch on the five other speakers' train takes; its accuracy on the
              held-out speaker's test takes is the zero-shot number
  adapt       k labelled takes per digit of the held-out speaker: fine-tune the source model (feature encoder
              frozen, the recipe's default) vs the same architecture from scratch (everything trained), same steps
  ctc         the CTC recipe on the same recordings (transcripts "zero".."nine"), from scratch vs initialised from
              the source model's encoder: WER/CER on the source speakers' and the held-out speaker's test takes

Results go to benchmarks/results/fsdd_speaker_transfer.json after every run, so a partial run leaves numbers.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import paths

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FSDD = paths.DATA / "fsdd" / "recordings"
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]

# Small wav2vec2 layout: 4 conv layers (stride 320: 50 frames/s at 16 kHz, as wav2vec2), 3 blocks of width 96; 0.36 M parameters.
SMALL_WAV2VEC2 = dict(
    conv_dim=(64, 64, 64, 64), conv_kernel=(10, 8, 8, 4), conv_stride=(5, 4, 4, 4), hidden_size=96, num_hidden_layers=3,
    num_attention_heads=4, intermediate_size=192, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=8,
    classifier_proj_size=64, layerdrop=0.0, mask_time_prob=0.05,
)
COMMON = ["--disable_tqdm", "true", "--save_strategy", "no", "--eval_strategy", "no", "--logging_steps", "50",
          "--report_to", "none", "--max_duration_seconds", "1.5"]


def clips(speakers, takes) -> list[dict]:
    rows = []
    for path in sorted(FSDD.glob("*.wav")):
        digit, speaker, take = path.stem.split("_")
        if speaker in speakers and int(take) in takes:
            rows.append({"path": str(path), "digit": int(digit), "text": DIGIT_WORDS[int(digit)], "speaker": speaker, "take": int(take)})
    return rows


def write_manifest(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def scratch_checkpoint(folder: Path) -> Path:
    """Config + feature extractor only: the recipes' --from_scratch builds the random model from them."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor

    Wav2Vec2Config(**SMALL_WAV2VEC2).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(folder)
    return folder


class Results:
    """The JSON file, rewritten after every run (atomically), keyed by stage."""

    def __init__(self, path: Path, settings: dict, invocation: dict):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}
        self.data["settings"] = settings
        self.data.setdefault("invocations", []).append(invocation)  # each run's options, e.g. a later extra stage

    def put(self, *keys_and_value) -> None:
        *keys, value = keys_and_value
        node = self.data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        os.replace(tmp, self.path)


def run_recipe(recipe, argv: list[str], log) -> dict:
    """One in-process recipe run; its console output goes to the log file, its metrics come back."""
    started = time.process_time()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        metrics = recipe.main(argv)
    metrics["process_cpu_s"] = round(time.process_time() - started, 1)
    return metrics


def keep(metrics: dict, *keys) -> dict:
    return {k: (round(metrics[k], 4) if isinstance(metrics[k], float) else metrics[k]) for k in keys if k in metrics}


def stage_throughput(results: Results, args) -> None:
    import numpy as np
    from datasets import Dataset
    from transformers import Wav2Vec2FeatureExtractor

    from hf_transfer.data.audio import AudioCollator, AudioDataArgs, check_audio

    rows = clips(SPEAKERS, range(50))
    dataset = Dataset.from_dict({"audio": [r["path"] for r in rows], "labels": [r["digit"] for r in rows]})
    start = time.perf_counter()
    checked, counts = check_audio(dataset, "all", AudioDataArgs(), 16000, min_samples=400)
    header_s = time.perf_counter() - start
    collator = AudioCollator(Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True))
    batches = [checked.select(range(i, min(i + 32, len(checked)))) for i in range(0, len(checked), 32)]
    start, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        collator(list(batch))
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    audio_s = float(np.sum(checked["length"])) / 16000
    results.put("throughput", {
        "clips": len(checked), "bad_or_skipped": dict(counts), "audio_seconds": round(audio_s, 1),
        "header_check_files_per_s": round(len(checked) / header_s),
        # Wall-clock rates depend on what else runs on the shared CPU; per CPU-second they do not.
        "collate_clips_per_s": round(len(checked) / seconds, 1), "collate_cpu_s": round(cpu_s, 2),
        "collate_clips_per_cpu_s": round(len(checked) / cpu_s), "collate_audio_seconds_per_cpu_s": round(audio_s / cpu_s),
        "batch_size": 32,
        "what": "soundfile decode (8 kHz PCM16 WAV) + mono + torchaudio resample to 16 kHz + Wav2Vec2FeatureExtractor "
                "normalisation + padding with attention mask, one process, torch threads = " + str(args.threads),
    })


def write_split_manifests(root: Path, held_out: str) -> tuple[str, str, str]:
    """Source speakers' train and test takes, and the held-out speaker's test takes, as tables of paths."""
    source_speakers = [s for s in SPEAKERS if s != held_out]
    return (write_manifest(root / "source_train.csv", clips(source_speakers, range(5, 50))),
            write_manifest(root / "source_test.csv", clips(source_speakers, range(5))),
            write_manifest(root / "target_test.csv", clips([held_out], range(5))))


def stage_source(results: Results, args, held_out: str, log) -> Path:
    from recipes import audio_classification

    root = args.out / held_out
    source_speakers = [s for s in SPEAKERS if s != held_out]
    train, source_test, target_test = write_split_manifests(root, held_out)
    out = root / "source_model"
    metrics = run_recipe(audio_classification, [
        "--model_name_or_path", str(args.scratch), "--from_scratch", "true", "--freeze_feature_encoder", "false",
        "--train_file", train, "--validation_file", source_test, "--test_file", target_test, "--label_column", "digit",
        "--output_dir", str(out), "--num_train_epochs", str(args.source_epochs), "--learning_rate", "1e-3",
        "--warmup_steps", "0.1", "--per_device_train_batch_size", "32", "--train_sampling_strategy", "group_by_length",
        "--speed_factors", "0.9", "1.0", "1.1", "--seed", "0", *COMMON,
    ], log)
    results.put("source", held_out, {
        "source_speakers": source_speakers, "epochs": args.source_epochs,
        "source_test_accuracy": round(metrics["validation_accuracy"], 4),
        "held_out_zero_shot_accuracy": round(metrics["test_accuracy"], 4),
        **keep(metrics, "train_clips", "global_step", "train_runtime", "process_cpu_s", "train_loss", "total_parameters"),
    })
    return out


def few_shot(held_out: str, shots: int, seed: int) -> list[dict]:
    pool = clips([held_out], range(5, 50))
    rng = random.Random(f"{held_out}-{shots}-{seed}")
    chosen = []
    for digit in range(10):
        chosen += rng.sample([r for r in pool if r["digit"] == digit], shots)
    return chosen


ADAPTATIONS = {
    # name: (flags, learning rate, steps as a multiple of --adapt_steps); the feature encoder is frozen for
    # transfer (the recipe's default) and trained from scratch. scratch_4x_steps asks whether scratch only lacks compute.
    "transfer_full": (["--strategy", "full"], "3e-4", 1),
    "transfer_head_only": (["--strategy", "feature_extraction"], "1e-3", 1),
    "scratch": (["--from_scratch", "true", "--freeze_feature_encoder", "false"], "1e-3", 1),
    "scratch_4x_steps": (["--from_scratch", "true", "--freeze_feature_encoder", "false"], "1e-3", 4),
}


def stage_adapt(results: Results, args, held_out: str, source_model: Path, log) -> None:
    from recipes import audio_classification

    root = args.out / held_out
    target_test = write_split_manifests(root, held_out)[2]
    for shots in args.shots:
        for seed in args.seeds:
            train = write_manifest(root / f"shots{shots}_seed{seed}.csv", few_shot(held_out, shots, seed))
            for name in args.adaptations:
                flags, lr, steps = ADAPTATIONS[name]
                model = args.scratch if name.startswith("scratch") else source_model
                out = root / f"adapt_{name}_k{shots}_s{seed}"
                metrics = run_recipe(audio_classification, [
                    "--model_name_or_path", str(model), "--train_file", train, "--validation_file", target_test,
                    "--label_column", "digit", "--class_names", *map(str, range(10)), "--output_dir", str(out),
                    "--max_steps", str(args.adapt_steps * steps), "--per_device_train_batch_size", "10", "--learning_rate", lr,
                    "--warmup_steps", "0.1", "--seed", str(seed), *flags, *COMMON,
                ], log)
                results.put("adapt", held_out, f"k{shots}", f"seed{seed}", name, {
                    "accuracy": round(metrics["validation_accuracy"], 4), "learning_rate": float(lr),
                    **keep(metrics, "train_clips", "global_step", "trainable_parameters", "process_cpu_s"),
                })


def stage_ctc(results: Results, args, held_out: str, source_model: Path, log) -> None:
    from recipes import speech_recognition

    root = args.out / held_out
    write_split_manifests(root, held_out)
    runs = {"ctc_scratch": ["--model_name_or_path", str(args.scratch), "--from_scratch", "true", "--freeze_feature_encoder", "false"],
            "ctc_from_source_encoder": ["--model_name_or_path", str(source_model)]}
    for name in args.ctc_runs:
        flags = runs[name]
        metrics = run_recipe(speech_recognition, [
            *flags, "--train_file", str(root / "source_train.csv"), "--validation_file", str(root / "source_test.csv"),
            "--test_file", str(root / "target_test.csv"), "--text_column", "text", "--output_dir", str(root / name),
            "--num_train_epochs", str(args.ctc_epochs), "--learning_rate", str(args.ctc_learning_rate), "--warmup_steps", "0.1",
            "--per_device_train_batch_size", "16", "--seed", "0", *COMMON,
        ], log)
        results.put("ctc", held_out, name, {
            "source_speakers_wer": round(metrics["validation_wer"], 4), "source_speakers_cer": round(metrics["validation_cer"], 4),
            "held_out_wer": round(metrics["test_wer"], 4), "held_out_cer": round(metrics["test_cer"], 4),
            "epochs": args.ctc_epochs, "learning_rate": args.ctc_learning_rate, "batch_size": 16, **keep(metrics, "train_clips", "global_step", "process_cpu_s", "train_loss", "vocabulary_size"),
        })


def summary_table(data: dict) -> str:
    """Mean accuracy over seeds (and held-out speakers) per k and condition, as a markdown table."""
    adapt = data.get("adapt", {})
    conditions = sorted({c for sp in adapt.values() for k in sp.values() for s in k.values() for c in s})
    shots = sorted({int(k[1:]) for sp in adapt.values() for k in sp})
    lines = ["| held-out speaker | clips per digit | zero-shot | " + " | ".join(conditions) + " |",
             "|---|---|---|" + "---|" * len(conditions)]
    for speaker, per_k in sorted(adapt.items()):
        zero = data.get("source", {}).get(speaker, {}).get("held_out_zero_shot_accuracy")
        for k in shots:
            seeds = per_k.get(f"k{k}", {})
            cells = []
            for c in conditions:
                values = [s[c]["accuracy"] for s in seeds.values() if c in s]
                cells.append(f"{sum(values) / len(values):.3f} (n={len(values)})" if values else "-")
            lines.append(f"| {speaker} | {k} | {zero if zero is not None else '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(data: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    adapt = data.get("adapt", {})
    if not adapt:
        return False
    fig, axes = plt.subplots(1, len(adapt), figsize=(5 * len(adapt), 4), squeeze=False)
    for ax, (speaker, per_k) in zip(axes[0], sorted(adapt.items())):
        shots = sorted(int(k[1:]) for k in per_k)
        conditions = sorted({c for s in per_k.values() for seed in s.values() for c in seed})
        for c in conditions:
            means = []
            for k in shots:
                values = [seed[c]["accuracy"] for seed in per_k[f"k{k}"].values() if c in seed]
                means.append(sum(values) / len(values) if values else float("nan"))
            ax.plot(shots, means, marker="o", label=c)
        zero = data.get("source", {}).get(speaker, {}).get("held_out_zero_shot_accuracy")
        if zero is not None:
            ax.axhline(zero, linestyle="--", color="grey", label="zero-shot (source model)")
        ax.set(xscale="log", xticks=shots, xticklabels=shots, ylim=(0, 1), xlabel="labelled clips per digit (held-out speaker)",
               ylabel="accuracy on held-out speaker's test takes", title=f"held out: {speaker}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held_out", nargs="+", default=["george", "theo"], choices=SPEAKERS)
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5, 20])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--adaptations", nargs="+", default=["transfer_full", "transfer_head_only", "scratch"], choices=list(ADAPTATIONS))
    parser.add_argument("--stages", nargs="+", default=["throughput", "source", "adapt", "ctc"], choices=["throughput", "source", "adapt", "ctc"])
    parser.add_argument("--ctc_held_out", nargs="*", default=None, help="held-out speakers for the CTC stage (default: the first)")
    parser.add_argument("--source_epochs", type=int, default=12)
    parser.add_argument("--adapt_steps", type=int, default=150)
    parser.add_argument("--ctc_epochs", type=int, default=10)
    parser.add_argument("--ctc_learning_rate", type=float, default=2e-3)
    parser.add_argument("--ctc_runs", nargs="+", default=["ctc_scratch", "ctc_from_source_encoder"],
                        choices=["ctc_scratch", "ctc_from_source_encoder"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: the CPU is shared with other jobs)")
    parser.add_argument("--out", type=Path, default=paths.OUTPUTS / "bench_fsdd")
    parser.add_argument("--results", type=Path, default=paths.RESULTS / "fsdd_speaker_transfer.json")
    args = parser.parse_args()
    if not FSDD.is_dir():
        sys.exit(f"skipped: FSDD not found at {FSDD} (see ../shared/data/README.md)")

    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.scratch = scratch_checkpoint(args.out / "scratch_config")
    settings = {"model": SMALL_WAV2VEC2, "feature_extractor": "Wav2Vec2FeatureExtractor, 16 kHz, attention mask",
                "data": str(FSDD), "torch_threads": args.threads,
                "machine": f"{os.cpu_count()}-core CPU ({platform.machine()}), shared with other jobs: compare CPU seconds, not wall time"}
    invocation = {"date": time.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv[1:],
                  **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    results = Results(args.results, settings, invocation)
    log = open(args.out / "runs.log", "a")
    if "throughput" in args.stages:
        stage_throughput(results, args)
        print("throughput:", json.dumps(results.data["throughput"]), flush=True)
    for held_out in args.held_out:
        source_model = args.out / held_out / "source_model"
        if "source" in args.stages:
            source_model = stage_source(results, args, held_out, log)
            print("source:", held_out, json.dumps(results.data["source"][held_out]), flush=True)
        if "adapt" in args.stages:
            stage_adapt(results, args, held_out, source_model, log)
            print(summary_table(results.data), flush=True)
        if "ctc" in args.stages and held_out in (args.ctc_held_out if args.ctc_held_out is not None else args.held_out[:1]):
            stage_ctc(results, args, held_out, source_model, log)
            print("ctc:", held_out, json.dumps(results.data["ctc"][held_out]), flush=True)
    results.put("table", summary_table(results.data))
    if plot(results.data, args.results.with_suffix(".png")):
        print("plot:", args.results.with_suffix(".png"))
    print(results.data["table"])


if __name__ == "__main__":
    main()
