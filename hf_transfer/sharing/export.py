"""Export for CPU serving: a text-classification output folder to ONNX, and the deployment report.

`export` turns a sentiment or domain-adaptation output folder (a full model, a merged one, or a LoRA adapter, merged
first) into a folder that alone is enough to serve: `model.onnx` (fp32, dynamic batch and sequence axes), with
`--quantize int8` also `model_quantized.onnx` (onnxruntime's dynamic quantisation: int8 weights in 7 bits, activations
quantised at run time), the config and the tokenizer. torch's exporter writes the graph (the dynamo one: the
TorchScript one, still in torch 2.11, traced transformers 5's attention mask into constants and gave different
logits); the export is checked against the PyTorch model before anything is written.

The deployment report (`deployment.json`, `deployment.md` in the export folder, and a "Deployment" section in the model
folder's card) gives, for PyTorch fp32 and each ONNX file: size on disk, CPU latency at batch 1 (p50, p95) and
throughput at --batch_size at each thread count, and the accuracy (regression: RMSE) of each on validation data next
to PyTorch's, with how often the export predicts PyTorch's class. Timing excludes tokenisation and follows a warm-up.
Serve with `recipes/predict.py --model <export folder or .onnx file>` (docs/serving.md).
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from hf_transfer.errors import HfTransferError
from hf_transfer.models.onnx_classifier import (
    EXPORTED_MODEL,
    ONNX_EXTRA,
    OnnxClassifier,
    onnx_model_file,
)

QUANTIZED_MODEL = "model_quantized.onnx"
QUANTIZATIONS = ("int8",)
REPORT_JSON, REPORT_MD = "deployment.json", "deployment.md"
CARD_SECTION = "## Deployment"
# Two sentences of different lengths trace the graph; the check batch (three rows, padded per batch) differs in both
# axes, so a dimension the exporter fixed by mistake shows up as an error rather than in production.
EXAMPLE_TEXTS = ("an example sentence, long enough to show the exporter a padded row", "a short one")
CHECK_TEXTS = ("the battery died by noon, but support replaced it at once and it has worked since", "fine", "not bad at all")
EXAMPLE_LENGTH = 16
FP32_TOLERANCE = 1e-4  # of the largest |logit|: the exported graph computes the same operations in fp32
EXTERNAL_DATA_BYTES = 1_800_000_000  # an ONNX protobuf holds at most 2 GB; larger weights go to a .data file beside it


@dataclass
class ExportArgs:
    model: str = field(metadata={"help": "A text-classification output folder (full, merged or LoRA adapter: merged first)."})
    output_dir: str | None = field(default=None, metadata={"help": "The export folder (default: <model>/onnx)."})
    quantize: str | None = field(
        default=None,
        metadata={"help": "Also write a quantised copy: int8 (onnxruntime dynamic quantisation) -> model_quantized.onnx."},
    )
    report: bool = field(
        default=True, metadata={"help": "Measure and write the deployment report (--report false: export only)."}
    )
    validation_file: str | None = field(
        default=None,
        metadata={"help": "Labelled rows to score each model on (default: the run's validation file, from run.json)."},
    )
    text_column: str | None = field(default=None, metadata={"help": "Its text column (default: the run's, else found by name)."})
    text_pair_column: str | None = field(default=None, metadata={"help": "Its second text column (default: the run's)."})
    label_column: str | None = field(
        default=None, metadata={"help": "Its label column (default: the run's, else found by name)."}
    )
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Longer texts are truncated (default: the run's, else 128)."}
    )
    threads: list[int] | None = field(default=None, metadata={"help": "CPU thread counts to time at (default: 1 and all cores)."})
    batch_size: int = field(default=32, metadata={"help": "Rows per batch for the throughput figure and the scoring."})
    latency_samples: int = field(
        default=200, metadata={"help": "Texts timed one at a time (batch 1) per model and thread count."}
    )
    timing_rows: int = field(default=1024, metadata={"help": "Texts timed in batches of --batch_size (the first N)."})
    repeats: int = field(default=3, metadata={"help": "Throughput passes per model and thread count (the median is reported)."})
    warmup: int = field(default=5, metadata={"help": "Untimed calls before timing each model."})

    def __post_init__(self) -> None:
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise HfTransferError(f"--quantize {self.quantize}: unknown; choose {', '.join(QUANTIZATIONS)} or leave it out")
        for option in ("batch_size", "latency_samples", "timing_rows", "repeats"):
            if getattr(self, option) < 1:
                raise HfTransferError(f"--{option} must be at least 1, got {getattr(self, option)}")
        if self.warmup < 0:
            raise HfTransferError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.threads is not None and (not self.threads or min(self.threads) < 1):
            raise HfTransferError(f"--threads takes thread counts of 1 or more, got {self.threads}")
        if self.max_seq_length is not None and self.max_seq_length < 2:
            raise HfTransferError(f"--max_seq_length must be at least 2, got {self.max_seq_length}")
        if self.validation_file is not None:
            from hf_transfer.data.io import check_files

            check_files({"validation_file": self.validation_file})


def require_export_tools() -> None:
    """torch's dynamo exporter needs onnx and onnxscript; the check and the quantisation need onnxruntime."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise HfTransferError(f"the ONNX export needs {', '.join(missing)}, not installed: {ONNX_EXTRA}")


def check_source(folder: str) -> None:
    """`folder` is a text classifier's output folder, not an export or another kind of model; one line otherwise."""
    from hf_transfer.run.predict import classifier_config

    path = Path(folder)
    if onnx_model_file(path) is not None:
        raise HfTransferError(f"--model {folder} is already an ONNX export; give the trained model's output folder")
    if (path / "config.json").is_file():
        architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
        if architectures and not any(name.endswith("ForSequenceClassification") for name in architectures):
            raise HfTransferError(f"--model {folder} holds a {', '.join(architectures)} model; export takes text "
                                  "classifiers (the sentiment and domain-adaptation recipes' folders)")
    classifier_config(folder)  # not a model folder, or no architecture recorded: predict's one line


def export_folder(args: ExportArgs) -> Path:
    """Where the export goes; an existing folder must be empty or an earlier export (it is replaced)."""
    out = Path(args.output_dir) if args.output_dir else Path(args.model) / "onnx"
    if out.resolve() == Path(args.model).resolve():
        raise HfTransferError("--output_dir must not be the model folder itself; the export is a folder of its own")
    if out.exists() and not out.is_dir():
        raise HfTransferError(f"--output_dir {out} is a file; name a folder")
    if out.is_dir() and any(out.iterdir()) and not ((out / REPORT_JSON).is_file() or onnx_model_file(out) is not None):
        raise HfTransferError(f"--output_dir {out} holds other files; choose an empty folder or an earlier export")
    return out


# --- the data the report scores and times -------------------------------------------------------------------------


@dataclass
class ReportData:
    texts: list[str]
    pairs: list[str] | None
    labels: list | None  # class ids, or floats for a regression head; None: timing only
    source: str  # where the texts came from, for the report
    note: str | None = None  # why there is no score, when there is none


def is_regression(config) -> bool:
    return config.problem_type == "regression" or config.num_labels == 1


def label_values(values: list, config, source: str) -> list:
    """Labels as the model's class ids (integer labels are ids, names are looked up, as predict scores them), or floats."""
    from hf_transfer.data.labels import label_key

    if is_regression(config):
        try:
            return [float(v) for v in values]
        except (TypeError, ValueError) as error:
            raise HfTransferError(f"{source}: a regression model needs numeric labels ({error})") from error
    names = [label_key(config.id2label[i]) for i in range(config.num_labels)]
    ids = {**{name: i for i, name in enumerate(names)}, **{str(i): i for i in range(len(names))}}
    unknown = sorted({label_key(v) for v in values} - set(ids))
    if unknown:
        raise HfTransferError(f"{source}: labels {', '.join(unknown[:5])} are not the model's ({', '.join(names)}); "
                              "give --validation_file with the labels the model was trained on")
    return [ids[label_key(v)] for v in values]


def report_data(args: ExportArgs, config) -> ReportData:
    """The validation rows (asked for, or the run's) with their labels; without any, the embedded reviews, timing only."""
    from hf_transfer.data import SAMPLES
    from hf_transfer.data.io import pick_column
    from hf_transfer.data.labels import LABEL_COLUMNS
    from hf_transfer.data.text import TEXT_COLUMNS
    from hf_transfer.run.predict_inputs import read_rows
    from hf_transfer.run.outputs import run_options

    run = run_options(args.model)
    source, note = args.validation_file, None
    if source is None:
        recorded = run.get("validation_file")
        if recorded and Path(recorded).is_file():
            source = recorded
        else:
            note = (f"no accuracy: the run's validation file {recorded} is not on this machine" if recorded else
                    "no accuracy: the run recorded no validation file (held out of its training data, or a Hub dataset)")
            note += "; give --validation_file to score the exports"
    if source is None:
        rows = read_rows(str(SAMPLES / "reviews_validation.csv"))
        return ReportData([r["text"] for r in rows], None, None, "the embedded review sample (timing only)", note)
    rows = read_rows(source)
    columns = list(rows[0]) if rows else []
    if not rows:
        raise HfTransferError(f"--validation_file {source} has no rows")
    text = pick_column(columns, args.text_column or run.get("text_column"), TEXT_COLUMNS, "text_column", "text")
    pair = args.text_pair_column or run.get("text_pair_column")
    if pair is not None and pair not in columns:
        raise HfTransferError(f"text pair column '{pair}' not found in {source}; its columns: {', '.join(columns)}")
    label = pick_column(columns, args.label_column or run.get("label_column"), LABEL_COLUMNS, "label_column", "label")
    keep = [r for r in rows if all(isinstance(r.get(c), str) and r[c].strip() for c in (text, pair) if c)
            and r.get(label) not in (None, "")]
    if not keep:
        raise HfTransferError(f"{source} has no row with both a text and a label")
    return ReportData([r[text] for r in keep], [r[pair] for r in keep] if pair else None,
                      label_values([r[label] for r in keep], config, source), f"{source} ({len(keep)} rows)")


# --- export ----------------------------------------------------------------------------------------------------------


def export_onnx(model, tokenizer, path: Path, external_data: bool) -> None:
    """torch's dynamo exporter, batch and sequence axes dynamic; the inputs are what the tokenizer gives."""
    import warnings

    import torch
    from torch.export import Dim

    example = tokenizer(list(EXAMPLE_TEXTS), padding="max_length", truncation=True, max_length=EXAMPLE_LENGTH,
                        return_tensors="pt")
    names = list(example)
    batch, sequence = Dim("batch"), Dim("sequence")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on renamed axes and deprecated pytree classes
        torch.onnx.export(model, (), str(path), kwargs=dict(example), input_names=names, output_names=["logits"],
                          dynamic_shapes={name: {0: batch, 1: sequence} for name in names}, dynamo=True,
                          external_data=external_data, verbose=False)


def quantize_int8(source: Path, target: Path, external_data: bool) -> None:
    """Dynamic quantisation: weights of MatMul, Gemm and Gather (the embeddings) to int8 per channel, activations at run
    time."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic advises (on the root logger) its pre-processing step first; on the dynamo exporter's graph that
    # step's symbolic shape inference fails, and without it the result was the same (MiniLM-L6: same outputs, speed).
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)
    try:
        # One scale per output channel, not per tensor: on the SST-2 MiniLM model per-tensor scales lost 1.4 points of
        # dev accuracy (agreement with fp32 95%), per-channel ones none (97%), at the same size and speed.
        # Weights in 7 bits (reduce_range): x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply uint8
        # activations by int8 weights with 16-bit intermediate sums that saturate at full range; the file is served
        # on CPUs the export never sees. On an AVX2 CPU the tests' model drifted 0.135 from fp32 at 8 bits, 0.001 at 7.
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         use_external_data_format=external_data)
    finally:
        root.setLevel(level)


def logits(model, batch):
    import torch

    with torch.inference_mode():
        return model(**batch).logits.float()


def check_export(model, onnx: OnnxClassifier, tokenizer, max_length: int) -> dict:
    """The export's logits on a batch shaped unlike the traced one, against PyTorch's; fp32 must match."""
    batch = tokenizer(list(CHECK_TEXTS), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    expected, got = logits(model, batch), logits(onnx, batch)
    difference = float((expected - got).abs().max())
    return {"max_abs_difference": difference, "scale": float(expected.abs().max()),
            "same_class": bool((expected.argmax(-1) == got.argmax(-1)).all())}


# --- measurement -----------------------------------------------------------------------------------------------------


def all_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_counts(args: ExportArgs) -> list[int]:
    return sorted(set(args.threads or [1, all_cores()]))


@dataclass
class Served:
    """One way of serving the model: PyTorch fp32, or an ONNX file under onnxruntime."""

    key: str  # pytorch_fp32, onnx_fp32, onnx_int8
    name: str
    files: list[Path]  # the weights on disk (for a LoRA folder: the merged model as save_pretrained writes it)
    onnx: Path | None = None  # None: the PyTorch model

    def runner(self, model, config, threads: int):
        """Something to call with a tokenised batch, computing on `threads` CPU threads."""
        import torch

        if self.onnx is None:
            torch.set_num_threads(threads)
            return model
        return OnnxClassifier(self.onnx, config, threads=threads)

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, linear between the nearest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def measure(served: list[Served], model, config, tokenizer, data: ReportData, args: ExportArgs, max_length: int) -> dict:
    """Latency (batch 1) and throughput (batch --batch_size) of each model at each thread count, on pre-tokenised texts.
    Throughput passes alternate between the models, so a busy moment of the machine does not fall on one alone."""
    def tokenised(rows: range) -> dict:
        texts = [data.texts[i] for i in rows]
        pairs = [data.pairs[i] for i in rows] if data.pairs else None
        return tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")

    n = len(data.texts)
    singles = [tokenised(range(i, i + 1)) for i in range(min(args.latency_samples, n))]
    rows = min(args.timing_rows, n)
    batches = [tokenised(range(i, min(i + args.batch_size, rows))) for i in range(0, rows, args.batch_size)]
    results: dict = {s.key: {"latency_ms": {}, "throughput": {}} for s in served}
    for threads in thread_counts(args):
        runners = {s.key: s.runner(model, config, threads) for s in served}
        for s in served:
            runner = runners[s.key]
            for i in range(args.warmup):
                logits(runner, singles[i % len(singles)])
            logits(runner, batches[0])
            times = []
            for single in singles:
                started = time.perf_counter()
                logits(runner, single)
                times.append(1000 * (time.perf_counter() - started))
            results[s.key]["latency_ms"][str(threads)] = {"p50": percentile(times, 50), "p95": percentile(times, 95)}
        passes: dict[str, list[float]] = {s.key: [] for s in served}
        for _ in range(args.repeats):
            for s in served:
                started = time.perf_counter()
                for batch in batches:
                    logits(runners[s.key], batch)
                passes[s.key].append(rows / (time.perf_counter() - started))
        for s in served:
            results[s.key]["throughput"][str(threads)] = {"rows_per_s": statistics.median(passes[s.key]), "passes": passes[s.key]}
    return results


def score(served: list[Served], model, config, tokenizer, data: ReportData, args: ExportArgs, max_length: int) -> dict:
    """Each model's predictions on every validation row: accuracy (RMSE for regression), and against PyTorch's."""
    import torch

    threads = max(thread_counts(args))
    outputs = {}
    for s in served:
        runner = s.runner(model, config, threads)
        parts = []
        for start in range(0, len(data.texts), args.batch_size):
            end = min(start + args.batch_size, len(data.texts))
            batch = tokenizer(data.texts[start:end], data.pairs[start:end] if data.pairs else None, padding=True,
                              truncation=True, max_length=max_length, return_tensors="pt")
            parts.append(logits(runner, batch))
        outputs[s.key] = torch.cat(parts)
    reference = outputs[served[0].key]
    truth = torch.tensor(data.labels)
    scores = {}
    for s in served:
        out = outputs[s.key]
        entry = {"max_logit_difference": float((out - reference).abs().max())}
        if is_regression(config):
            entry["rmse"] = float(((out[:, 0] - truth) ** 2).mean().sqrt())
        else:
            entry["accuracy"] = float((out.argmax(-1) == truth).float().mean())
            entry["agreement"] = float((out.argmax(-1) == reference.argmax(-1)).float().mean())
        scores[s.key] = entry
    return scores


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("hf-transfer-toolkit", "torch", "transformers", "onnx", "onnxscript", "onnxruntime"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def machine() -> dict:
    processor = platform.processor()
    try:
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        processor = names[0] if names else processor
    except OSError:
        pass
    return {"platform": platform.platform(), "processor": processor, "cores": all_cores()}


# --- the report ------------------------------------------------------------------------------------------------------


def counted(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def markdown(report: dict) -> str:
    """The report as a markdown section: one row per model (deployment.md and the card's Deployment section)."""
    timing, models = report["timing"], report["models"]
    threads = timing["threads"]
    metric = report["validation"].get("metric")
    header = ["model", "file", "size (MB)", "size vs PyTorch"]
    header += [f"batch 1 p50 / p95 (ms), {counted(t, 'thread')}" for t in threads]
    header += [f"batch {timing['batch_size']} (rows/s), {counted(t, 'thread')}" for t in threads]
    if metric:
        header += [metric, "agreement with PyTorch" if metric == "accuracy" else "max |difference| from PyTorch"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for m in models:
        cells = [m["name"], " + ".join(f"`{f}`" for f in m["files"]), f"{m['bytes'] / 1e6:.1f}", f"{m['size_ratio']:.2f}x"]
        cells += [f"{m['latency_ms'][str(t)]['p50']:.1f} / {m['latency_ms'][str(t)]['p95']:.1f}" for t in threads]
        cells += [f"{m['throughput'][str(t)]['rows_per_s']:.1f}" for t in threads]
        if metric == "accuracy":
            cells += [f"{100 * m['accuracy']:.2f}%", f"{100 * m['agreement']:.2f}%"]
        elif metric:
            cells += [f"{m['rmse']:.4f}", f"{m['max_logit_difference']:.2g}"]
        lines.append("| " + " | ".join(cells) + " |")
    validation = report["validation"]
    scored = (f"Scored on {validation['source']}." if metric else f"Not scored: {validation['note']}.")
    notes = [
        f"{report['parameters']:,} parameters. Exported to `{report['export_folder']}`; serve it with "
        "`python recipes/predict.py --model <that folder, or one of its .onnx files>`.",
        f"CPU: {report['machine']['processor'] or report['machine']['platform']}, {report['machine']['cores']} cores; "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if k != "hf-transfer-toolkit") + ".",
        f"Timing excludes tokenisation (texts tokenised beforehand) and follows {counted(timing['warmup'], 'warm-up call')}: "
        f"latency over {counted(timing['latency_samples'], 'text')} one at a time, throughput over "
        f"{counted(timing['timing_rows'], 'text')} in batches of {timing['batch_size']}, each padded to its longest, the "
        f"median of {counted(timing['repeats'], 'pass', 'passes')} alternating between the models. Texts: {timing['texts']}. "
        "PyTorch runs in fp32.",
        scored + (" Agreement: the share of rows where the export predicts PyTorch's class." if metric == "accuracy" else ""),
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def update_card(folder: Path, section: str) -> bool:
    """Put the Deployment section in the model folder's card (README.md), replacing an earlier one; False: no card."""
    card = folder / "README.md"
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8")
    block = f"{CARD_SECTION}\n\n{section}"
    pattern = re.compile(rf"^{re.escape(CARD_SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + block
    card.write_text(text, encoding="utf-8")
    return True


def pytorch_files(model, folder: Path, scratch: Path) -> list[Path]:
    """The PyTorch model's weight files: the folder's own, or (an adapter folder) the merged model saved to `scratch`."""
    own = sorted(p for p in folder.glob("*.safetensors") if not p.name.startswith("adapter_model"))
    if own:
        return own
    scratch.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(scratch)
    return sorted(scratch.glob("*.safetensors"))


def export(args: ExportArgs) -> dict:
    """Export the classifier in `args.model` to ONNX (and int8), check it, and write the deployment report."""
    from hf_transfer.run.predict import classifier_config, load_classifier
    from hf_transfer.run.outputs import run_options

    require_export_tools()
    check_source(args.model)
    out = export_folder(args)
    config = classifier_config(args.model)
    data = report_data(args, config) if args.report else None  # bad validation data is told before anything is written
    max_length = args.max_seq_length or run_options(args.model).get("max_seq_length") or 128

    model, tokenizer = load_classifier(args.model)
    model.float().to("cpu")
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weights_bytes > EXTERNAL_DATA_BYTES
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        export_onnx(model, tokenizer, partial / EXPORTED_MODEL, external)
        checks = {"onnx_fp32": check_export(model, OnnxClassifier(partial / EXPORTED_MODEL, config), tokenizer, max_length)}
        fp32 = checks["onnx_fp32"]
        if fp32["max_abs_difference"] > FP32_TOLERANCE * max(1.0, fp32["scale"]):
            raise HfTransferError(f"the ONNX export's logits differ from PyTorch's by {fp32['max_abs_difference']:.3g} "
                                  f"(tolerance {FP32_TOLERANCE:g} of the largest); this architecture does not export "
                                  "cleanly with torch.onnx; nothing was written")
        if args.quantize == "int8":
            quantize_int8(partial / EXPORTED_MODEL, partial / QUANTIZED_MODEL, external)
            checks["onnx_int8"] = check_export(model, OnnxClassifier(partial / QUANTIZED_MODEL, config), tokenizer, max_length)
        model.config.save_pretrained(partial)
        tokenizer.save_pretrained(partial)

        report = None
        if args.report:
            served = [Served("pytorch_fp32", "PyTorch fp32", pytorch_files(model, Path(args.model), partial / ".pytorch"))]
            served.append(Served("onnx_fp32", "ONNX fp32", onnx_files(partial / EXPORTED_MODEL), partial / EXPORTED_MODEL))
            if args.quantize == "int8":
                served.append(Served("onnx_int8", "ONNX int8", onnx_files(partial / QUANTIZED_MODEL), partial / QUANTIZED_MODEL))
            report = build_report(args, served, model, config, tokenizer, data, max_length, checks, out)
            shutil.rmtree(partial / ".pytorch", ignore_errors=True)
            (partial / REPORT_JSON).write_text(json.dumps(report, indent=1) + "\n")
            (partial / REPORT_MD).write_text(f"# Deployment report\n\n{markdown(report)}", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)  # an earlier export (export_folder checked), replaced whole
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)

    files = sorted(p.name for p in out.iterdir())
    carded = update_card(Path(args.model), markdown(report)) if report else False
    print(f"exported to {out}: {', '.join(files)}", flush=True)
    if report:
        print(markdown(report), flush=True)
        if not carded:
            print(f"note: {args.model} has no README.md; the report is in {out / REPORT_MD}", flush=True)
    return {"output_dir": str(out), "files": files, "checks": checks, "report": report}


def onnx_files(path: Path) -> list[Path]:
    """An ONNX file and, for weights over 2 GB, its external data file beside it."""
    return [path, *path.parent.glob(path.name + ".data")]


def build_report(args, served, model, config, tokenizer, data: ReportData, max_length: int, checks: dict, out: Path) -> dict:
    import torch

    threads = torch.get_num_threads()  # measuring sets torch's threads for each count; the caller's come back after
    try:
        timing = measure(served, model, config, tokenizer, data, args, max_length)
        scores = score(served, model, config, tokenizer, data, args, max_length) if data.labels is not None else {}
    finally:
        torch.set_num_threads(threads)
    base = served[0].bytes
    models = []
    for s in served:
        entry = {"key": s.key, "name": s.name, "files": [f.name for f in s.files], "bytes": s.bytes, "size_ratio": s.bytes / base,
                 **timing[s.key], **scores.get(s.key, {})}
        if s.key in checks:
            entry["check"] = checks[s.key]
        models.append(entry)
    validation = ({"source": data.source, "rows": len(data.texts), "metric": "rmse" if is_regression(config) else "accuracy"}
                  if data.labels is not None else {"note": data.note})
    return {
        # The export folder as the model folder's card names it: relative when it sits inside (the default, onnx).
        "model_folder": str(args.model), "export_folder": os.path.relpath(out, args.model) if out.resolve().is_relative_to(
            Path(args.model).resolve()) else str(out),
        "parameters": sum(p.numel() for p in model.parameters()),
        "validation": validation,
        "timing": {"threads": thread_counts(args), "batch_size": args.batch_size,
                   "latency_samples": min(args.latency_samples, len(data.texts)),
                   "timing_rows": min(args.timing_rows, len(data.texts)), "repeats": args.repeats, "warmup": args.warmup,
                   "max_seq_length": max_length, "tokenization": "excluded", "texts": data.source},
        "models": models,
        "machine": machine(), "versions": versions(), "date": time.strftime("%Y-%m-%d"),
    }
