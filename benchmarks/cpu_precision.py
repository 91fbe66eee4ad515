"""bf16 against fp32 on this CPU: the sentiment recipe's training time and accuracy, the demo, and step times.

    python benchmarks/cpu_precision.py                      # every part (about an hour on 2 cores)
    python benchmarks/cpu_precision.py --parts demo steps   # some parts; finished runs are kept and skipped
    OMP_NUM_THREADS=1 python benchmarks/cpu_precision.py --parts cached &   # parts can run side by side

Parts (every run is the sentiment recipe in its own process, `python recipes/sentiment.py ...`, with the threads
OMP_NUM_THREADS gives (the machine's default without it); precision set explicitly with --bf16 true/false):
- sst2: 8,000 SST-2 training sentences, 1 epoch, MiniLM-L6 (the embedded default), seeds 1-3; full fine-tuning and
  freeze-bottom-4, fp32 and bf16. Train time (`train_runtime`: trainer.train() alone) and dev accuracy.
- cached: the same data for 10 epochs, one seed, no evaluation during training: fp32 freeze-bottom-4 against fp32 and
  bf16 freeze-bottom-4 with the cached frozen prefix.
- demo: `make run`'s command (the embedded reviews, recipe defaults), fp32 against bf16, seeds 42-44 (42 is the
  recipe's default).
- profile: the recipe's training loop under cProfile (demo data, 40 steps, bf16): milliseconds per step in the
  forward, backward, optimizer step, gradient clipping, zero_grad, batch fetching and collation, and logging.
- steps: one training step (forward, backward, AdamW) of a ViT-base image classifier (batch 8, 224 px), a
  Whisper-tiny encoder audio classifier (batch 8, 30 s log-mel windows) and a MiniLM-L6-sized text classifier (batch 8,
  64 tokens) on random weights, fp32 against bf16 autocast, the median of 5 steps after 2 warm-up steps. On a CPU
  without native bfloat16 (no AVX512-BF16 or AMX) the rows are kept apart, named "(bf16 emulated)", with the CPU's
  description: there the recipes default to fp32, and these rows say what asking for bf16 costs.
Results: benchmarks/results/cpu_precision.json, with the issue's headline figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paths

SST2 = paths.DATA / "sst2"
RESULTS = paths.RESULTS / "cpu_precision.json"
STRATEGIES = {"full": ["--strategy", "full"], "freeze4": ["--strategy", "freeze", "--freeze_bottom", "4"]}


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}


def save(results: dict) -> None:
    if RESULTS.exists():  # parts may run in separate processes at once: keep what the others wrote
        results["runs"] = {**json.loads(RESULTS.read_text())["runs"], **results["runs"]}
    results["headline"] = headline(results)
    tmp = RESULTS.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True))
    os.replace(tmp, RESULTS)


def recipe(argv: list[str], out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_MIXED_PRECISION"}
    env["HF_HUB_OFFLINE"] = "1"
    command = [sys.executable, str(paths.RECIPES / "sentiment.py"), *argv, "--output_dir", str(out),
               "--disable_tqdm", "true", "--overwrite_output_dir"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["command_s"] = round(time.perf_counter() - started, 1)
    return {k: metrics.get(k) for k in ("train_runtime", "validation_accuracy", "precision", "torch_threads",
                                         "wall_time_s", "command_s", "train_examples", "global_step", "strategy")}


def sst2_argv(seed: int, epochs: int, extra: list[str]) -> list[str]:
    return ["--train_file", str(SST2 / "train.tsv"), "--validation_file", str(SST2 / "dev.tsv"),
            "--class_names", "negative", "positive", "--max_train_samples", "8000", "--num_train_epochs", str(epochs),
            "--per_device_train_batch_size", "32", "--learning_rate", "5e-5", "--max_seq_length", "64",
            "--seed", str(seed), "--save_strategy", "no", "--frozen_baseline", "false", "--logging_steps", "50", *extra]


def run_part(results: dict, key: str, argv: list[str], work: Path) -> None:
    if key in results["runs"]:
        return
    print(f"{time.strftime('%H:%M:%S')} {key}", flush=True)
    results["runs"][key] = recipe(argv, work / key.replace("/", "_"))
    print(f"    {results['runs'][key]}", flush=True)
    save(results)


def part_sst2(results: dict, work: Path, seeds: list[int]) -> None:
    for seed in seeds:
        for strategy, flags in STRATEGIES.items():
            for precision in ("fp32", "bf16"):
                bf16 = ["--bf16", "true" if precision == "bf16" else "false"]
                run_part(results, f"sst2/{strategy}/{precision}/{seed}", sst2_argv(seed, 1, flags + bf16), work)


def part_cached(results: dict, work: Path) -> None:
    no_eval = ["--eval_strategy", "no"]
    arms = {"freeze4/fp32": STRATEGIES["freeze4"] + ["--bf16", "false"],
            "cached/fp32": STRATEGIES["freeze4"] + ["--cache_frozen_prefix", "--bf16", "false"],
            "cached/bf16": STRATEGIES["freeze4"] + ["--cache_frozen_prefix", "--bf16", "true"]}
    for arm, flags in arms.items():
        run_part(results, f"cached/{arm}/1", sst2_argv(1, 10, flags + no_eval), work)


def part_demo(results: dict, work: Path) -> None:
    for seed in (42, 43, 44):
        for precision in ("fp32", "bf16"):
            run_part(results, f"demo/{precision}/{seed}", ["--seed", str(seed), "--bf16", "true" if precision == "bf16" else "false"], work)


def step_time(model, batch: dict, bf16: bool, steps: int = 5, warmup: int = 2) -> float:
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    times = []
    for i in range(warmup + steps):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def cpu_description() -> str:
    """The CPU's vector extensions that decide bf16's speed (steps measured on another machine than the rest)."""
    from hf_transfer.run.launch import _cpu_flags

    wide = sorted(f for f in _cpu_flags() if f.startswith(("avx", "amx")))
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'CPU'} with {' '.join(wide) or 'no AVX'}"


def part_steps(results: dict) -> None:
    import torch
    import transformers as T

    torch.manual_seed(0)
    models = {
        "minilm_l6_text_batch8_len64": (
            lambda: T.BertForSequenceClassification(T.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                                                 intermediate_size=1536, num_labels=2)),
            lambda: {"input_ids": torch.randint(0, 30522, (8, 64)), "attention_mask": torch.ones(8, 64, dtype=torch.long),
                     "labels": torch.randint(0, 2, (8,))}),
        "vit_base_224_batch8": (
            lambda: T.ViTForImageClassification(T.ViTConfig(num_labels=10)),
            lambda: {"pixel_values": torch.randn(8, 3, 224, 224), "labels": torch.randint(0, 10, (8,))}),
        "whisper_tiny_encoder_30s_batch8": (
            lambda: T.WhisperForAudioClassification(T.WhisperConfig(d_model=384, encoder_layers=4, encoder_attention_heads=6,
                                                                    decoder_layers=4, decoder_attention_heads=6,
                                                                    num_mel_bins=80, num_labels=10)),
            lambda: {"input_features": torch.randn(8, 80, 3000), "labels": torch.randint(0, 10, (8,))}),
    }
    from hf_transfer.run.launch import native_bf16

    emulated = native_bf16() is None
    for name, (build, batch) in models.items():
        key = f"steps/{name}" + (" (bf16 emulated)" if emulated else "")
        if key in results["runs"]:
            continue
        print(f"{time.strftime('%H:%M:%S')} {key}", flush=True)
        row = {"cpu": cpu_description(), "date": time.strftime("%Y-%m-%d")} if emulated else {}
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            row[f"{precision}_step_s"] = round(step_time(build(), batch(), precision == "bf16"), 3)
        row["bf16_over_fp32"] = round(row["bf16_step_s"] / row["fp32_step_s"], 3)
        row["torch_threads"] = torch.get_num_threads()
        results["runs"][key] = row
        print(f"    {row}", flush=True)
        save(results)


# Where a training step's time goes, by the functions that own each part (cumulative seconds, cProfile).
PROFILE_PARTS = {
    "forward": ("trainer.py", "compute_loss"),
    "backward": ("autograd/__init__.py", "backward"),
    "optimizer_step": ("optimizer.py", "step"),  # accelerate's optimizer wrapper: the AdamW update and its bookkeeping
    "gradient_clipping": ("trainer.py", "_clip_grad_norm"),
    "zero_grad": ("module.py", "zero_grad"),
    "batch_fetch_and_collate": ("_utils/fetch.py", "fetch"),
    "logging": ("trainer.py", "_maybe_log_save_evaluate"),
}


def part_profile(results: dict, work: Path) -> None:
    """The recipe's training loop under cProfile (the embedded demo data, 40 steps, bf16, no evaluation or saving):
    seconds per step in each part, and what is left for everything else."""
    import cProfile
    import pstats

    if "profile/demo_bf16_40_steps" in results["runs"]:
        return
    print(f"{time.strftime('%H:%M:%S')} profile", flush=True)
    from recipes.sentiment import main as sentiment

    argv = ["--output_dir", str(work / "profile"), "--max_steps", "40", "--bf16", "true", "--frozen_baseline", "false",
            "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true", "--logging_steps", "10"]
    profiler = cProfile.Profile()
    profiler.runcall(sentiment, argv)
    stats = pstats.Stats(profiler).stats
    cumulative = {}
    for (path, _, name), (_, _, _, cum, _) in stats.items():
        for part, (suffix, function) in PROFILE_PARTS.items():
            if name == function and path.endswith(suffix) and ("accelerate" in path) == (part == "optimizer_step"):
                cumulative[part] = max(cumulative.get(part, 0.0), cum)
    loop = max(cum for (path, _, name), (_, _, _, cum, _) in stats.items() if name == "_inner_training_loop")
    row = {f"{part}_ms_per_step": round(1000 * s / 40, 1) for part, s in cumulative.items()}
    row["training_loop_ms_per_step"] = round(1000 * loop / 40, 1)
    row["other_ms_per_step"] = round(row["training_loop_ms_per_step"] - sum(v for k, v in row.items() if k != "training_loop_ms_per_step"), 1)
    results["runs"]["profile/demo_bf16_40_steps"] = row
    print(f"    {row}", flush=True)
    save(results)


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def headline(results: dict) -> list[dict]:
    runs = results["runs"]

    def paired(prefix_a: str, prefix_b: str, field: str) -> list[tuple[float, float]]:
        pairs = []
        for key, a in runs.items():
            if key.startswith(prefix_a + "/"):
                b = runs.get(prefix_b + "/" + key.rsplit("/", 1)[1])
                if b is not None and a.get(field) is not None and b.get(field) is not None:
                    pairs.append((a[field], b[field]))
        return pairs

    lines = []
    time_pairs = paired("sst2/full/bf16", "sst2/full/fp32", "train_runtime")
    ratio, spread = _mean_sd([a / b for a, b in time_pairs])
    lines.append({"id": "bf16_time_ratio_full", "claim": "bf16 over fp32 train time, full fine-tuning, SST-2 8,000 x 1 epoch, MiniLM-L6 (same seeds)",
                  "value": ratio, "reference": 0.65, "unit": "ratio", "spread": spread, "seeds": len(time_pairs)})
    acc_pairs = paired("sst2/full/bf16", "sst2/full/fp32", "validation_accuracy")
    change, spread = _mean_sd([100 * (a - b) for a, b in acc_pairs])
    fp32_sd = _mean_sd([100 * b for _, b in acc_pairs])[1]
    lines.append({"id": "bf16_accuracy_change", "claim": "bf16 minus fp32 dev accuracy, full fine-tuning (per-seed differences; fp32's own seed spread is "
                  f"{fp32_sd if fp32_sd is None else round(fp32_sd, 2)} points)",
                  "value": change, "reference": 0.0, "unit": "points", "spread": spread, "seeds": len(acc_pairs)})
    cached, freeze = runs.get("cached/cached/bf16/1"), runs.get("cached/freeze4/fp32/1")
    lines.append({"id": "bf16_cached_prefix_ratio", "claim": "bf16 + cached frozen prefix over fp32 freeze-bottom-4 train time, SST-2 8,000 x 10 epochs",
                  "value": cached["train_runtime"] / freeze["train_runtime"] if cached and freeze else None,
                  "reference": 0.3, "unit": "ratio", "spread": None, "seeds": 1 if cached and freeze else 0})
    demo = paired("demo/bf16", "demo/fp32", "train_runtime")
    ratio, spread = _mean_sd([a / b for a, b in demo])
    lines.append({"id": "demo_time_ratio", "claim": "make run's training time, bf16 (the new default here) over fp32",
                  "value": ratio, "reference": 1.0, "unit": "ratio", "spread": spread, "seeds": len(demo)})
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = ["steps", "demo", "sst2", "cached", "profile"]
    parser.add_argument("--parts", nargs="+", default=parts, choices=parts)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    args = parser.parse_args()
    if ({"sst2", "cached"} & set(args.parts)) and not (SST2 / "train.tsv").is_file():
        raise SystemExit(f"SST-2 is not at {SST2} (see ../shared/data/README.md)")
    results = load()
    import torch

    from hf_transfer.run.launch import native_bf16

    if args.parts != ["steps"] or native_bf16() is not None:  # emulated-bf16 step rows describe their own CPU
        results["machine"] = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for part in args.parts:
            if part == "steps":
                part_steps(results)
            elif part == "demo":
                part_demo(results, work)
            elif part == "sst2":
                part_sst2(results, work, args.seeds)
            elif part == "profile":
                part_profile(results, work)
            else:
                part_cached(results, work)
    save(results)
    print(json.dumps(results["headline"], indent=1))


if __name__ == "__main__":
    main()
