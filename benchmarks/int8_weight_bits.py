"""int8 export: weights in 8 bits against 7 (`reduce_range`, the export's choice) on the CPU at hand.

    python benchmarks/int8_weight_bits.py                 # 2 seeds, about 8 minutes on 2 cores

Without VNNI instructions (AVX2, AVX-512 without VNNI) onnxruntime's uint8 x int8 products go through 16-bit sums that
saturate when the weights span the full 8-bit range; 7-bit weights avoid it at half a bit of resolution. Per seed:
the sentiment recipe (its own process, as serving_sst2.py runs it) fine-tunes MiniLM-L6 on 2,000 SST-2 training
sentences for 1 epoch in the machine's default precision; `recipes/export.py` writes the fp32 ONNX file;
onnxruntime's dynamic quantisation (per channel, as the export does) writes it at 8 and at 7 bits; each file scores the 872 dev sentences. Figures: dev accuracy, agreement with the fp32
ONNX file's labels, and the largest and mean |logit - fp32 logit|. Trained models are kept in --work_dir and reused.
Results: benchmarks/results/int8_weight_bits.json (with the CPU's description and headline figures).
"""
from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import paths

SST2 = paths.DATA / "sst2"
RESULTS = paths.RESULTS / "int8_weight_bits.json"


def dev_logits(path: Path, tokenizer, texts: list[str]):
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    batches = []
    for start in range(0, len(texts), 32):
        encoded = tokenizer(texts[start:start + 32], padding=True, return_tensors="np")
        batches.append(session.run(["logits"], {name: encoded[name] for name in names})[0])
    return np.concatenate(batches)


def measure(model: Path, texts: list[str], labels, folder: Path) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoTokenizer

    from recipes import export

    export.main(["--model", str(model), "--output_dir", str(folder / "onnx"), "--report", "false"])
    fp32_file = folder / "onnx" / "model.onnx"
    tokenizer = AutoTokenizer.from_pretrained(folder / "onnx")
    reference = dev_logits(fp32_file, tokenizer, texts)
    row = {"fp32_accuracy": float((reference.argmax(1) == labels).mean())}
    for bits in (8, 7):
        quantized = folder / f"model_int8_{bits}bit.onnx"
        quantize_dynamic(str(fp32_file), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=bits == 7)
        logits = dev_logits(quantized, tokenizer, texts)
        difference = abs(logits - reference)
        row[f"{bits}bit"] = {"accuracy": float((logits.argmax(1) == labels).mean()),
                             "agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
                             "max_abs_logit_difference": float(difference.max()),
                             "mean_abs_logit_difference": float(difference.mean())}
    return row


def headline(runs: dict) -> list[dict]:
    def paired(field: str, scale: float) -> tuple[float, float | None, int]:
        changes = [scale * (run["7bit"][field] - run["8bit"][field]) for run in runs.values()]
        return statistics.fmean(changes), (statistics.stdev(changes) if len(changes) > 1 else None), len(changes)

    found = []
    for figure, field, scale, unit in (("int8_7bit_accuracy_change", "accuracy", 100, "points"),
                                       ("int8_7bit_agreement_change", "agreement", 100, "points")):
        value, spread, n = paired(field, scale)
        found.append({"id": figure, "claim": f"int8 export, weights in 7 bits minus 8 bits: SST-2 dev {field} "
                      "(MiniLM-L6, 2,000 training sentences, per seed)", "value": value, "reference": 0.0, "unit": unit,
                      "spread": spread, "seeds": n})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43])
    parser.add_argument("--work_dir", default=None, help="trained models (default: a folder under the temp dir)")
    args = parser.parse_args()
    if not (SST2 / "dev.tsv").is_file():
        raise SystemExit(f"SST-2 is not at {SST2} (see ../shared/data/README.md)")
    import numpy as np
    from cpu_precision import cpu_description
    from serving_sst2 import train

    work = Path(args.work_dir or Path(tempfile.gettempdir()) / "int8_weight_bits")
    work.mkdir(parents=True, exist_ok=True)
    with open(SST2 / "dev.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    texts, labels = [r["sentence"] for r in rows], np.array([int(r["label"]) for r in rows])
    runs = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            model, _ = train(work, {"train": 2000}, seed)
            runs[f"seed_{seed}"] = measure(model, texts, labels, Path(tmp))
        print(f"seed {seed}: {runs[f'seed_{seed}']}", flush=True)
    results = {"benchmark": "int8_weight_bits", "cpu": cpu_description(), "date": time.strftime("%Y-%m-%d"),
               "dev_sentences": len(texts), "runs": runs, "headline": headline(runs)}
    paths.write_results(RESULTS, results)
    paths.print_headline(results)


if __name__ == "__main__":
    main()
