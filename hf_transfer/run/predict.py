"""Prediction with a trained text classifier: an output folder and new rows in, the rows out with their predictions.

The folder is what the sentiment or domain-adaptation recipe saved: a full model, a merged one, or a LoRA adapter
beside the trained model's config. The input is a table (csv, tsv, json, jsonl, parquet) or lines of text on
standard input; the output keeps every input column and adds `predicted_label`, `score` (its probability) and, with
`--top_k`, the top classes with their probabilities. Rows without text are kept, marked in a `skipped` column and
counted; a label column, when the input has one, is scored. Batches run in the precision training would pick here
(bf16 where the hardware computes it natively).
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hf_transfer.errors import HfTransferError

TABLES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


@dataclass
class PredictArgs:
    model: str = field(metadata={"help": "An output folder of a text-classification recipe (full, merged or LoRA adapter)."})
    input: str = field(default="-", metadata={"help": "A table (csv, tsv, json, jsonl, parquet), or - for lines of text on stdin."})
    output: str | None = field(
        default=None,
        metadata={"help": "Where the predictions go, in the format its suffix names (default: <input>_predictions "
                  "beside the input, in its format; jsonl on stdout for stdin)."},
    )
    text_column: str | None = field(default=None, metadata={"help": "The text column (default: found as training finds it)."})
    text_pair_column: str | None = field(default=None, metadata={"help": "A second text column, for sentence-pair models."})
    label_column: str | None = field(
        default=None, metadata={"help": "Score the predictions against this column (default: a label column, when present)."}
    )
    top_k: int = field(default=1, metadata={"help": "Also write the top K classes with their probabilities (K > 1)."})
    batch_size: int = field(default=32, metadata={"help": "Rows per batch."})
    max_seq_length: int = field(default=512, metadata={"help": "Longer texts are truncated to this many tokens."})

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise HfTransferError(f"--top_k must be at least 1, got {self.top_k}")
        if self.batch_size < 1:
            raise HfTransferError(f"--batch_size must be at least 1, got {self.batch_size}")
        if self.input != "-" and not Path(self.input).is_file():
            raise HfTransferError(f"--input {self.input} does not exist; give a table file or - for stdin")
        if self.input != "-" and Path(self.input).suffix.lower() not in TABLES:
            raise HfTransferError(f"--input {self.input}: not a table this reads ({', '.join(TABLES)})")
        if self.output is not None and Path(self.output).suffix.lower() not in TABLES:
            raise HfTransferError(f"--output {self.output}: name a file ending in one of {', '.join(TABLES)}")


def classifier_config(folder: str):
    """The config of a text-classification output folder (read before any weights load); one line for anything else."""
    from transformers import AutoConfig

    path = Path(folder)
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
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path, config = Path(folder), classifier_config(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if (path / "adapter_config.json").is_file():
            from peft import PeftConfig, PeftModel

            base = PeftConfig.from_pretrained(path).base_model_name_or_path
            model = AutoModelForSequenceClassification.from_pretrained(base, config=config)
            model = PeftModel.from_pretrained(model, path).merge_and_unload()
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise HfTransferError(f"cannot load the model in {folder}: {str(error).strip().splitlines()[0]}") from error
    return model.eval(), tokenizer


def read_rows(source: str) -> list[dict]:
    """The input rows as dicts (stdin: one text per non-empty line, column `text`)."""
    if source == "-":
        return [{"text": line.rstrip("\n")} for line in sys.stdin if line.strip()]
    from hf_transfer.data.io import read_file

    return read_file(source, "input").to_list()


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
    return str(path.with_name(f"{path.stem}_predictions{path.suffix}"))


def predict(args: PredictArgs) -> dict:
    """Predict every row of `args.input` with the classifier in `args.model`; returns counts and, with labels, accuracy."""
    import torch

    from hf_transfer.data.labels import LABEL_COLUMNS, label_key
    from hf_transfer.data.text import TEXT_COLUMNS
    from hf_transfer.run.launch import automatic_precision, native_bf16

    classifier_config(args.model)  # a wrong folder is told before the input is read
    rows = read_rows(args.input)
    if not rows:
        raise HfTransferError(f"--input {args.input} has no rows to predict")
    columns = list(rows[0])
    text = args.text_column or next((c for c in TEXT_COLUMNS if c in columns), None)
    if text is None or text not in columns:
        raise HfTransferError(f"no text column {'named ' + repr(text) if text else 'found'} in --input; its columns: "
                              f"{', '.join(columns)}; name it with --text_column")
    if args.text_pair_column and args.text_pair_column not in columns:
        raise HfTransferError(f"--text_pair_column {args.text_pair_column} is not in --input; its columns: {', '.join(columns)}")
    label = args.label_column or next((c for c in LABEL_COLUMNS if c in columns), None)
    if args.label_column and args.label_column not in columns:
        raise HfTransferError(f"--label_column {args.label_column} is not in --input; its columns: {', '.join(columns)}")

    model, tokenizer = load_classifier(args.model)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    readable = [i for i, row in enumerate(rows) if isinstance(row.get(text), str) and row[text].strip()]
    bf16 = automatic_precision() and native_bf16() is not None and not torch.cuda.is_available()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    for row in rows:
        row.update(predicted_label=None, score=None)
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(readable), args.batch_size), desc="predicting", disable=len(readable) <= args.batch_size):
        batch = readable[start:start + args.batch_size]
        texts = [rows[i][text] for i in batch]
        pairs = [rows[i][args.text_pair_column] for i in batch] if args.text_pair_column else None
        inputs = tokenizer(texts, pairs, truncation=True, max_length=args.max_seq_length, padding=True, return_tensors="pt").to(device)
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            probabilities = model(**inputs).logits.float().softmax(-1).cpu()
        top = probabilities.topk(min(args.top_k, len(names)), dim=-1)
        for i, values, ids in zip(batch, top.values.tolist(), top.indices.tolist()):
            rows[i]["predicted_label"], rows[i]["score"] = names[ids[0]], round(values[0], 6)
            if args.top_k > 1:
                rows[i]["top_k"] = [{"label": names[j], "score": round(v, 6)} for j, v in zip(ids, values)]
    skipped = len(rows) - len(readable)
    if skipped:
        kept = set(readable)
        for i, row in enumerate(rows):
            row["skipped"] = "" if i in kept else f"no text in '{text}'"
    result = {"rows": len(rows), "predicted": len(readable), "skipped": skipped}
    if label is not None:
        scored = [row for row in rows if row["predicted_label"] is not None and row.get(label) is not None]
        if scored:
            as_name = {str(i): name for i, name in enumerate(names)}  # integer labels are ids, as in training
            truth = [as_name.get(label_key(row[label]), label_key(row[label])) for row in scored]
            result.update(labelled=len(scored), accuracy=sum(t == row["predicted_label"] for t, row in zip(truth, scored)) / len(scored))
    output = args.output or default_output(args.input)
    write_rows(rows, output)
    summary = f"predicted {result['predicted']} of {result['rows']} rows"
    summary += f" ({skipped} without text, marked in column 'skipped')" if skipped else ""
    summary += f"; accuracy on the {result['labelled']} labelled rows: {result['accuracy']:.4f}" if "accuracy" in result else ""
    print(summary + (f"; written to {output}" if output else ""), file=sys.stderr if output is None else sys.stdout, flush=True)
    return result
