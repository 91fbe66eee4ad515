"""Prediction with a recipe's output folder: new inputs in, the inputs out with their predictions.

The folder is what any recipe saved: a text, image or audio classifier, a text-to-text model, a CTC or Whisper speech
recogniser; a full model, a merged one, or a LoRA adapter beside the trained model's config. Its kind comes from its
config (`run.predictors` reads it, loads each kind and batches its inputs). The input is a table (csv, tsv, json,
jsonl, parquet) with a text column, or with a path column for images and clips (relative paths point next to the
table); a folder of images or clips, searched recursively (files in subfolders named after the model's classes take
the subfolder as their label, as in training's folder layout); or lines of text on standard input (text models).

The output keeps every input column and adds, for a classifier, `predicted_label`, `score` (its probability) and,
with `--top_k`, the top classes with their probabilities (a regression model: `predicted_value`, its raw output);
`generated_text` for a text-to-text model; `transcript` for a recogniser. A label, reference or transcript column,
when the input has one, is scored as the runs score it: accuracy, MAE, BLEU/chrF/ROUGE, WER/CER. Rows without text
or with an unusable file are kept, marked in a `skipped` column with the reason, and counted. Batches run on a GPU
when there is one, else in the precision training would pick here (bf16 where the CPU computes it natively).
"""
from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

from hf_transfer.errors import HfTransferError
# read_rows is imported from here too (sharing.export reads its tables with it).
from hf_transfer.run.predict_inputs import input_items, read_input, read_rows  # noqa: F401

TABLES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
DEFAULT_MAX_SEQ_LENGTH = 512


@dataclass
class PredictArgs:
    model: str = field(metadata={"help": "An output folder of a recipe (full, merged or LoRA adapter): a text, image or "
                                 "audio classifier, a text-to-text model or a speech recogniser."})
    input: str = field(
        default="-",
        metadata={"help": "A table (csv, tsv, json, jsonl, parquet), a folder of images or clips, or - for lines of text "
                  "on stdin."},
    )
    output: str | None = field(
        default=None,
        metadata={"help": "Where the predictions go, in the format its suffix names (default: <input>_predictions "
                  "beside the input, in its format, jsonl for a folder; jsonl on stdout for stdin)."},
    )
    text_column: str | None = field(default=None, metadata={"help": "The text column (default: found as training finds it)."})
    text_pair_column: str | None = field(default=None, metadata={"help": "A second text column, for sentence-pair models."})
    path_column: str | None = field(
        default=None, metadata={"help": "Images and clips: the column of their paths (default: found as training finds it)."}
    )
    label_column: str | None = field(
        default=None,
        metadata={"help": "Score the predictions against this column: labels, reference texts or transcripts (default: "
                  "found as training finds it, when present)."},
    )
    top_k: int = field(default=1, metadata={"help": "Classifiers: also write the top K classes with their probabilities (K > 1)."})
    batch_size: int = field(default=32, metadata={"help": "Rows per batch."})
    max_seq_length: int | None = field(
        default=None,
        metadata={"help": f"Longer texts are truncated to this many tokens (default {DEFAULT_MAX_SEQ_LENGTH}; "
                  "text-to-text: the run's --max_source_length)."},
    )
    source_prefix: str | None = field(
        default=None, metadata={"help": "Text to text: put this before every source (default: the run's --source_prefix)."}
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Text to text and Whisper: generate at most this many tokens (default: the saved generation config)."},
    )

    def __post_init__(self) -> None:
        for option in ("top_k", "batch_size", "max_seq_length", "max_new_tokens"):
            if getattr(self, option) is not None and getattr(self, option) < 1:
                raise HfTransferError(f"--{option} must be at least 1, got {getattr(self, option)}")
        if self.input != "-" and not Path(self.input).exists():
            raise HfTransferError(f"--input {self.input} does not exist; give a table, a folder of images or clips, "
                                  "or - for stdin")
        if Path(self.input).is_file() and Path(self.input).suffix.lower() not in TABLES:
            raise HfTransferError(f"--input {self.input}: not a table this reads ({', '.join(TABLES)})")
        if self.output is not None and Path(self.output).suffix.lower() not in TABLES:
            raise HfTransferError(f"--output {self.output}: name a file ending in one of {', '.join(TABLES)}")


def classifier_config(folder: str):
    """The config of a text-classification output folder (read before any weights load); one line for anything else."""
    from transformers import AutoConfig

    from hf_transfer.models.onnx_classifier import config_folder

    path = config_folder(folder)  # an .onnx file of an export folder: the config beside it
    if not (path / "config.json").is_file():
        raise HfTransferError(f"--model {folder} is not a model folder (no config.json); give an output folder of a recipe")
    config = AutoConfig.from_pretrained(path)
    architectures = config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise HfTransferError(f"--model {folder} holds a {', '.join(architectures) or config.model_type} model; predict "
                              "takes text classifiers (the sentiment and domain-adaptation recipes' folders)")
    return config


def load_classifier(folder: str):
    """(model, tokenizer) of a text-classification output folder, ready for inference."""
    from transformers import AutoTokenizer

    from hf_transfer.models.onnx_classifier import OnnxClassifier, onnx_model_file
    from hf_transfer.run.predictors import TEXT_CLASSIFIER, load_model

    path, config = Path(folder), classifier_config(folder)
    exported = onnx_model_file(path)
    try:
        if exported is not None:  # an export folder or one of its .onnx files (hf_transfer.sharing.export)
            return OnnxClassifier(exported, config), AutoTokenizer.from_pretrained(exported.parent)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise HfTransferError(f"cannot load the model in {folder}: {str(error).strip().splitlines()[0]}") from error
    return load_model(folder, TEXT_CLASSIFIER, config), tokenizer  # full, merged or LoRA adapter folders alike


def check_options(args: PredictArgs, kind, regression: bool) -> None:
    """Options meant for another kind of model are an error, as in the recipes."""
    from hf_transfer.run.predictors import SEQ2SEQ_RECOGNISER, TEXT_CLASSIFIER, TEXT_TO_TEXT

    applies = {
        "top_k": (args.top_k > 1, kind.output == "predicted_label" and not regression),
        "text_pair_column": (args.text_pair_column is not None, kind is TEXT_CLASSIFIER),
        "max_seq_length": (args.max_seq_length is not None, kind.modality == "text"),
        "path_column": (args.path_column is not None, kind.modality != "text"),
        "source_prefix": (args.source_prefix is not None, kind is TEXT_TO_TEXT),
        "max_new_tokens": (args.max_new_tokens is not None, kind in (TEXT_TO_TEXT, SEQ2SEQ_RECOGNISER)),
    }
    for option, (given, applicable) in applies.items():
        if given and not applicable:
            model = "a regression model" if regression else kind.a
            raise HfTransferError(f"--{option} does not apply to {args.model}, {model}; leave it out")


def load_predictor(args: PredictArgs, kind, config, device: str, bf16: bool):
    from hf_transfer.run import predictors

    if kind is predictors.TEXT_CLASSIFIER:
        model, tokenizer = load_classifier(args.model)
        return predictors.TextPredictor(model, tokenizer, device, bf16, args.max_seq_length or DEFAULT_MAX_SEQ_LENGTH)
    model = predictors.load_model(args.model, kind, config)
    if kind is predictors.TEXT_TO_TEXT:
        return predictors.text_to_text_predictor(args.model, model, device, bf16, args.max_seq_length, args.source_prefix,
                                                 args.max_new_tokens, DEFAULT_MAX_SEQ_LENGTH)
    return predictors.media_predictor(args.model, kind, model, device, bf16, args.max_new_tokens)


def prediction_columns(result, kind, regression: bool, names: list[str] | None, top_k: int) -> dict:
    """The columns one input's result adds: the label, its probability (and the top K); the value; or the text."""
    if kind.output != "predicted_label":
        return {kind.output: result}
    if regression:
        values = [round(v, 6) for v in result.tolist()]
        return {"predicted_value": values[0] if len(values) == 1 else values}
    top = result.softmax(-1).topk(min(top_k, len(names)))
    ranked = [(names[j], round(v, 6)) for j, v in zip(top.indices.tolist(), top.values.tolist())]
    columns = {"predicted_label": ranked[0][0], "score": ranked[0][1]}
    if top_k > 1:
        columns["top_k"] = [{"label": label, "score": score} for label, score in ranked]
    return columns


def score(rows: list[dict], reference: str, kind, regression: bool, names: list[str] | None, folder: str) -> dict:
    """The predicted rows with a reference scored as the runs score them: accuracy (integer labels are ids, as in
    training), MAE, BLEU/chrF/ROUGE of generated text, WER/CER of transcripts (CTC: references normalised as the run
    normalised its own; Whisper: both sides normalised as its metric does)."""
    from hf_transfer.data.labels import label_key
    from hf_transfer.run.outputs import run_options

    output = "predicted_value" if regression else kind.output
    scored = [row for row in rows if row.get(output) is not None and row.get(reference) is not None
              and str(row[reference]).strip()]  # a label 0 counts; an empty cell does not
    if regression:
        from hf_transfer.metrics.regression import regression_scores

        pairs = [(target, row[output]) for row in scored if (target := as_number(row[reference])) is not None]
        return {"labelled": len(pairs), "mae": regression_scores(*zip(*pairs))["mae"]} if pairs else {}
    if not scored:
        return {}
    if kind.output == "predicted_label":
        as_name = {str(i): name for i, name in enumerate(names)}
        right = sum(as_name.get(label_key(row[reference]), label_key(row[reference])) == row[output] for row in scored)
        return {"labelled": len(scored), "accuracy": right / len(scored)}
    predictions, references = [row[output] for row in scored], [str(row[reference]) for row in scored]
    if kind.output == "generated_text":
        from hf_transfer.metrics.generation import generation_scores

        return {"labelled": len(scored), **generation_scores(predictions, references)}
    from hf_transfer.metrics.speech import character_error_rate, normalise_for_wer, word_error_rate
    from hf_transfer.run.predictors import CTC_RECOGNISER

    if kind is CTC_RECOGNISER:  # references normalised as the run normalised its transcripts (run.json)
        from hf_transfer.data.transcripts import TranscriptArgs, normalize_transcript

        options = run_options(folder)
        text_args = TranscriptArgs(**{f.name: options[f.name] for f in fields(TranscriptArgs) if f.name in options})
        references = [normalize_transcript(t, text_args) for t in references]
    else:
        predictions, references = [normalise_for_wer(t) for t in predictions], [normalise_for_wer(t) for t in references]
    return {"labelled": len(scored), "wer": word_error_rate(references, predictions),
            "cer": character_error_rate(references, predictions)}


def write_rows(rows: list[dict], destination: str | None) -> None:
    if destination is None:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    path = Path(destination)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")  # never a half-written predictions file
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        columns = list(dict.fromkeys(key for row in rows for key in row))
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, columns, delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()} for row in rows)
    elif suffix == ".parquet":
        from datasets import Dataset

        Dataset.from_list(rows).to_parquet(str(tmp))
    else:
        tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    tmp.replace(path)


def default_output(source: str) -> str | None:
    if source == "-":
        return None
    path = Path(source)
    if path.is_dir():  # beside the folder (resolved: "." has no name)
        return str(path.resolve().with_name(f"{path.resolve().name}_predictions.jsonl"))
    return str(path.with_name(f"{path.stem}_predictions{path.suffix}"))


def summary_line(result: dict, reasons: dict[int, str], output: str | None) -> str:
    line = f"predicted {result['predicted']} of {result['rows']} rows"
    if reasons:
        counts = Counter(reason.split(" (")[0] for reason in reasons.values())  # "cannot be decoded (details)" as one
        line += f" ({len(reasons)} skipped, marked in column 'skipped': {', '.join(f'{n} {r}' for r, n in counts.items())})"
    n = result.get("labelled")
    if "accuracy" in result:
        line += f"; accuracy on the {n} labelled rows: {result['accuracy']:.4f}"
    elif "mae" in result:
        line += f"; MAE on the {n} labelled rows: {result['mae']:.4f}"
    elif "bleu" in result:
        line += f"; BLEU {result['bleu']:.2f}, chrF {result['chrf']:.2f} on the {n} rows with a reference"
    elif "wer" in result:
        line += f"; WER {result['wer']:.4f}, CER {result['cer']:.4f} on the {n} rows with a transcript"
    return line + (f"; written to {output}" if output else "")


def predict(args: PredictArgs) -> dict:
    """Predict every row of `args.input` with the model in `args.model`; returns counts and, where the input has
    labels, references or transcripts, their scores. Every input check comes before the weights load."""
    import torch
    from tqdm.auto import tqdm

    from hf_transfer.run.launch import automatic_precision, native_bf16
    from hf_transfer.run.predictors import TEXT_CLASSIFIER, Skipped, find_kind

    kind, config = find_kind(args.model)
    if kind is TEXT_CLASSIFIER:
        config = classifier_config(args.model)
    regression = getattr(config, "problem_type", None) == "regression"
    check_options(args, kind, regression)
    names = [config.id2label[i] for i in range(config.num_labels)] if kind.output == "predicted_label" else None
    rows, column, reference = read_input(args, kind, None if regression else names)
    written = ["predicted_value"] if regression else ["predicted_label", "score"] if kind.output == "predicted_label" \
        else [kind.output]
    taken = [c for c in (*written, "top_k", "skipped") if c in rows[0]]
    if taken:  # never overwrite an input column (a reference transcript named "transcript", an earlier prediction)
        raise HfTransferError(f"--input already has a column '{taken[0]}', which predict writes; rename that column")
    items, reasons = input_items(rows, column, args.text_pair_column, kind.modality, args.input)
    device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    bf16 = automatic_precision() and native_bf16() is not None and device == "cpu"
    predictor = load_predictor(args, kind, config, device, bf16)
    for row in rows:
        row.update(dict.fromkeys(written))
    order = list(items)
    for start in tqdm(range(0, len(order), args.batch_size), desc="predicting", disable=len(order) <= args.batch_size):
        batch = order[start:start + args.batch_size]
        for i, result in zip(batch, predictor.run([items[i] for i in batch])):
            if isinstance(result, Skipped):
                reasons[i] = result.reason
            else:
                rows[i].update(prediction_columns(result, kind, regression, names, args.top_k))
    if reasons:
        for i, row in enumerate(rows):
            row["skipped"] = reasons.get(i, "")
    result = {"rows": len(rows), "predicted": len(rows) - len(reasons), "skipped": len(reasons)}
    if reference is not None:
        result.update(score(rows, reference, kind, regression, names, args.model))
    output = args.output or default_output(args.input)
    write_rows(rows, output)
    print(summary_line(result, reasons, output), file=sys.stderr if output is None else sys.stdout, flush=True)
    return result


def as_number(value) -> float | None:
    """A regression label as a number ("3.5" too), or None for one that is not (that row is not scored)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
