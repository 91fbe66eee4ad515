"""Does a warm start transfer to translation? Multi30k English -> German with a MiniLM -> MiniLM encoder-decoder.

    python benchmarks/multi30k_warm_start.py                       # 1,000 pairs x 3 seeds, then all 29,000 x 1 seed
    python benchmarks/multi30k_warm_start.py --sizes 1000 --seeds 1 --epochs 10

No T5 weights install here, so the pretrained model is the embedded MiniLM-L6 on both sides of an
EncoderDecoderModel (Rothe et al. 2020: every weight but the decoder's cross-attention comes from the
checkpoint). Arms, all through recipes/text_to_text.py with the same data, seeds and budget:
- warm_start: both stacks from MiniLM, everything trained;
- warm_start_frozen_encoder: the same with the encoder frozen (`--strategy feature_extraction` on an encoder-decoder);
- scratch: the same architecture randomly initialised (`--from_scratch`).
BLEU and chrF on test_2016_flickr (1,000 pairs); validation is reported on the first 200 val pairs. Each finished run is appended to the results file at once, and
runs already there are skipped, so an interrupted benchmark continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import paths

DATA = paths.DATA / "multi30k"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARMS = {
    "warm_start": [],
    "warm_start_frozen_encoder": ["--strategy", "feature_extraction"],
    "scratch": ["--from_scratch", "true"],
}


def validation_subset(folder: Path, pairs: int) -> tuple[Path, Path]:
    """The first `pairs` lines of val.en/val.de, written under the (git-ignored) output folder: generating for all
    1,014 validation sentences costs about five CPU minutes per run, and validation is only reported here (no model
    selection: every run trains for the same fixed number of epochs). The test set is scored whole."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for language in ("en", "de"):
        lines = (DATA / f"val.{language}").read_text(encoding="utf-8").splitlines()[:pairs]
        path = folder / f"val{pairs}.{language}"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


VALIDATION_PAIRS = 200


def flags(size: int | None, epochs: float, seed: int, out: Path) -> list[str]:
    val_en, val_de = validation_subset(out.parents[2] / "validation", VALIDATION_PAIRS)
    base = [
        "--encoder_decoder_from", "embedded",
        "--train_file", str(DATA / "train.en"), "--train_target_file", str(DATA / "train.de"),
        "--validation_file", str(val_en), "--validation_target_file", str(val_de),
        "--test_file", str(DATA / "test_2016_flickr.en"), "--test_target_file", str(DATA / "test_2016_flickr.de"),
        "--max_source_length", "64", "--max_target_length", "64", "--generation_max_length", "48",
        "--learning_rate", "2e-4", "--warmup_steps", "0.05", "--num_train_epochs", str(epochs),
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64", "--generation_num_beams", "1",
        "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "50", "--disable_tqdm", "true",
        "--seed", str(seed), "--output_dir", str(out), "--overwrite_output_dir", "true",
    ]
    return base + (["--max_train_samples", str(size)] if size else [])


def summarise(runs: list[dict]) -> dict:
    table: dict = {}
    for run in runs:
        cell = table.setdefault(str(run["size"]), {}).setdefault(run["arm"], {"bleu": [], "chrf": [], "seeds": []})
        cell["bleu"].append(run["test_bleu"])
        cell["chrf"].append(run["test_chrf"])
        cell["seeds"].append(run["seed"])
    for arms in table.values():
        for cell in arms.values():
            for metric in ("bleu", "chrf"):
                values = cell[metric]
                cell[f"{metric}_mean"] = statistics.fmean(values)
                cell[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 29000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds at sizes under 29,000")
    parser.add_argument("--epochs", type=float, default=4, help="epochs at 1,000 pairs; the full set gets --full_epochs")
    parser.add_argument("--full_epochs", type=float, default=1)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--out", type=Path, default=paths.OUTPUTS / "bench_multi30k")
    parser.add_argument("--results", type=Path, default=paths.RESULTS / "multi30k_warm_start.json")
    args = parser.parse_args()
    if not (DATA / "train.en").is_file():
        raise SystemExit(f"skipped: {DATA} not found (see ../shared/data/README.md)")

    from recipes import text_to_text

    state = json.loads(args.results.read_text()) if args.results.is_file() else {"runs": []}
    done = {(r["arm"], r["size"], r["seed"]) for r in state["runs"]}
    # The comparison the benchmark exists for (warm start against scratch) comes first for every seed, so that an
    # interrupted run still answers it; the frozen-encoder arm follows.
    plan = []
    for size in args.sizes:
        full = size >= 29000
        seeds = args.seeds[:1] if full else args.seeds
        main_arms = [a for a in args.arms if a != "warm_start_frozen_encoder"]
        plan += [(size, seed, arm) for seed in seeds for arm in main_arms]
        if "warm_start_frozen_encoder" in args.arms and not full:
            plan += [(size, seed, "warm_start_frozen_encoder") for seed in seeds]
    for size, seed, arm in plan:
        if (arm, size, seed) in done:
            continue
        full = size >= 29000
        out = args.out / f"{size}" / arm / f"seed_{seed}"
        started = time.perf_counter()
        metrics = text_to_text.main(flags(None if full else size, args.full_epochs if full else args.epochs, seed, out)
                                    + ARMS[arm])
        state["runs"].append({
            "arm": arm, "size": size, "seed": seed, "epochs": metrics.get("epochs"),
            "wall_time_s": round(time.perf_counter() - started, 1),
            **{k: metrics[k] for k in ("test_bleu", "test_chrf", "validation_bleu", "validation_chrf", "train_loss",
                                       "trainable_parameters", "total_parameters", "global_step") if k in metrics},
        })
        state["machine"] = f"{platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
        state["date"] = time.strftime("%Y-%m-%d")
        state["settings"] = " ".join(flags(size, args.epochs, seed, out)).replace(str(paths.REPO.parent), "..").replace(str(paths.REPO) + "/", "")
        state["summary"] = summarise(state["runs"])
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(state, indent=1))
        print(f"[multi30k] {size} pairs, {arm}, seed {seed}: BLEU {metrics.get('test_bleu', float('nan')):.2f} "
              f"chrF {metrics.get('test_chrf', float('nan')):.2f} ({state['runs'][-1]['wall_time_s']:.0f} s)", flush=True)
    print(json.dumps(state.get("summary", {}), indent=1))


if __name__ == "__main__":
    main()
