"""Text classification data: Hub datasets or local csv/tsv/json/jsonl/parquet files, checked, labelled, tokenised."""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HfTransferError
from . import SAMPLES, LabelMaps

logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("text", "sentence", "review", "content", "document", "comment", "utterance", "body")
LABEL_COLUMNS = ("label", "labels", "sentiment", "class", "target", "category")
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


@dataclass
class TextDataArgs:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id (or a local dataset script folder)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "Local training file: csv, tsv, json, jsonl or parquet."})
    validation_file: str | None = field(default=None, metadata={"help": "Local validation file (same formats)."})
    test_file: str | None = field(default=None, metadata={"help": "Local test file, evaluated once after training."})
    source_eval_file: str | None = field(
        default=None,
        metadata={"help": "Labelled data of the source task (same labels), evaluated before and after training: forgetting."},
    )
    text_column: str | None = field(default=None, metadata={"help": f"Text column (default: the first of {', '.join(TEXT_COLUMNS)})."})
    text_pair_column: str | None = field(default=None, metadata={"help": "Second text column for sentence-pair tasks."})
    domain_column: str | None = field(
        default=None, metadata={"help": "Column naming each row's domain, kept for feature views and per-domain analyses."}
    )
    label_column: str | None = field(default=None, metadata={"help": f"Label column (default: the first of {', '.join(LABEL_COLUMNS)})."})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "The declared label set, in id order; labels outside it are an error."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer texts are truncated; batches pad to their longest."})
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every batch to --max_seq_length (fixed shapes: TPU, CUDA graphs)."}
    )
    validation_split_percentage: int = field(
        default=10, metadata={"help": "Without a validation split, hold out this share of train (stratified)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a random subset of this size."})
    max_train_samples_per_class: int | None = field(
        default=None, metadata={"help": "Train on a random subset with at most this many examples of each label (few-shot)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N examples."})

    def __post_init__(self) -> None:
        if self.dataset_name and self.train_file:
            raise HfTransferError("give either --dataset_name or --train_file, not both")
        if not self.dataset_name and not self.train_file:
            if self.validation_file or self.test_file or self.source_eval_file:
                raise HfTransferError("--validation_file/--test_file need --train_file (or --dataset_name)")
            # No data named: the embedded review sample (data_cards/embedded_reviews.md), so a bare run works offline.
            self.train_file = str(SAMPLES / "reviews_train.csv")
            self.validation_file = str(SAMPLES / "reviews_test.csv")
        check_files({o: getattr(self, o) for o in ("train_file", "validation_file", "test_file", "source_eval_file")})
        if self.max_train_samples is not None and self.max_train_samples_per_class is not None:
            raise HfTransferError("give --max_train_samples or --max_train_samples_per_class, not both")
        if not 0 < self.validation_split_percentage < 100:
            raise HfTransferError(f"--validation_split_percentage must be in 1..99, got {self.validation_split_percentage}")


def check_files(options: dict[str, str | None]) -> None:
    """Each given `--option path` exists and has a format the loader reads."""
    for option, path in options.items():
        if path is None:
            continue
        if not Path(path).is_file():
            raise HfTransferError(f"--{option} {path} does not exist")
        if Path(path).suffix.lower() not in _BUILDERS:
            raise HfTransferError(f"--{option} {path}: unsupported format; use {', '.join(_BUILDERS)}")


def text_collator(args: TextDataArgs, tokenizer, mixed_precision: bool):
    """Pads per batch to its longest text (multiples of 8 feed tensor cores), or to a fixed length when asked."""
    from transformers import DataCollatorWithPadding

    if args.pad_to_max_length:
        return DataCollatorWithPadding(tokenizer, padding="max_length", max_length=args.max_seq_length)
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if mixed_precision else None)


@dataclass
class TextClassificationData(LabelMaps):
    datasets: object  # DatasetDict of tokenised splits: train, validation, optionally test
    label_names: list[str]
    text_column: str
    label_column: str
    dropped_empty: int
    domains: dict = field(default_factory=dict)  # split -> each row's domain, when --domain_column is given


def read_file(path: str, split: str):
    from datasets import load_dataset

    suffix = Path(path).suffix.lower()
    kwargs = {}
    if suffix == ".tsv":
        # Quotes are text in TSV corpora such as GLUE: never treat them as field quoting.
        kwargs = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    try:
        return load_dataset(_BUILDERS[suffix], data_files=path, split="train", **kwargs)
    except Exception as error:  # datasets raises many types for unreadable files
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "corresponds to no data" in message or Path(path).stat().st_size == 0:
            raise HfTransferError(f"the {split} split is empty ({path} has no rows); give it at least one labelled row") from None
        raise HfTransferError(f"cannot read {path}: {message}") from None


def read_splits(dataset_name: str | None, dataset_config_name: str | None, files: dict[str, str | None]):
    """Raw splits as a DatasetDict (train, validation?, test?) from the Hub or local files, unprocessed."""
    from datasets import DatasetDict, load_dataset

    if dataset_name:
        try:
            raw = load_dataset(dataset_name, dataset_config_name)
        except Exception as error:
            raise HfTransferError(f"cannot load dataset '{dataset_name}': {str(error).strip().splitlines()[0]}") from None
        if "train" not in raw:
            raise HfTransferError(f"dataset '{dataset_name}' has no 'train' split (it has: {', '.join(raw)})")
        if "validation" not in raw and "valid" in raw:
            raw["validation"] = raw.pop("valid")
        return DatasetDict({k: v for k, v in raw.items() if k in ("train", "validation", "test")})
    return DatasetDict({split: read_file(path, split) for split, path in files.items() if path})


def load_raw(args: TextDataArgs):
    files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
    raw = read_splits(args.dataset_name, args.dataset_config_name, files)
    if args.source_eval_file:
        raw["source"] = read_file(args.source_eval_file, "source")
    return raw


def pick_column(columns: list[str], asked: str | None, candidates: tuple[str, ...], option: str, what: str) -> str:
    if asked is not None:
        if asked not in columns:
            raise HfTransferError(f"{what} column '{asked}' not found; the data has columns: {', '.join(columns)}")
        return asked
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    raise HfTransferError(f"no {what} column found among: {', '.join(columns)}; name it with --{option}")


def _label_key(value) -> str:
    return str(value).strip()


def _per_class_subset(dataset, per_class: int, seed: int):
    """A random subset with at most `per_class` rows of each label, in a shuffled order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.asarray(dataset["labels"])
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)])
    return dataset.select(rng.permutation(chosen).tolist())


def load_text_classification(args: TextDataArgs, tokenizer, seed: int = 42) -> TextClassificationData:
    """Load, check and tokenise a text classification data set.

    Checks, each a one-line error: missing columns (listing the ones present), empty splits, rows with no
    label, and labels outside the declared (or training) label set.
    """
    from datasets import ClassLabel, DatasetDict

    raw = load_raw(args)
    for split, dataset in raw.items():
        if len(dataset) == 0:
            raise HfTransferError(f"the {split} split is empty; give it at least one labelled row")
    columns = raw["train"].column_names
    text_col = pick_column(columns, args.text_column, TEXT_COLUMNS, "text_column", "text")
    label_col = pick_column(columns, args.label_column, LABEL_COLUMNS, "label_column", "label")
    pair_col = args.text_pair_column
    for split, dataset in raw.items():
        needed = [c for c in (text_col, label_col, pair_col, args.domain_column) if c]
        missing = [c for c in needed if c not in dataset.column_names]
        if missing:
            raise HfTransferError(
                f"the {split} split has no column {', '.join(missing)}; its columns are: {', '.join(dataset.column_names)}"
            )

    for split, dataset in raw.items():
        unlabelled = sum(v is None for v in dataset[label_col])
        if unlabelled:
            raise HfTransferError(f"{unlabelled} rows of the {split} split have no label in column '{label_col}'; fill or remove them")

    # Label names: declared > the dataset's ClassLabel names > the sorted values seen in train.
    feature = raw["train"].features[label_col]
    if args.class_names:
        names = [_label_key(n) for n in args.class_names]
    elif isinstance(feature, ClassLabel):
        names = list(feature.names)
    else:
        values = {v for v in raw["train"][label_col] if v is not None}
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        names = [_label_key(v) for v in sorted(values, key=float if numeric else str)]
    if len(names) < 2:
        raise HfTransferError(f"need at least two labels, found {names} in column '{label_col}'")
    label2id = {name: i for i, name in enumerate(names)}

    # Integer labels with declared names (SST-2's 0/1 with --class_names negative positive) are ids already.
    ids_given = isinstance(feature, ClassLabel) or (
        args.class_names is not None and feature.dtype.startswith(("int", "uint"))
    )

    def to_id(value):
        return value if ids_given else label2id.get(_label_key(value), -1)

    dropped = 0
    encoded = {}
    for split, dataset in raw.items():
        labels = dataset[label_col]
        ids = [to_id(v) for v in labels]
        unknown = sorted({_label_key(v) for v, i in zip(labels, ids) if i < 0 or i >= len(names)})
        if unknown:
            raise HfTransferError(
                f"the {split} split has labels outside the label set {names}: {unknown[:10]}; "
                "declare every label with --class_names or fix the data"
            )
        texts = dataset[text_col]
        keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        dropped += len(dataset) - len(keep)
        if not keep:
            raise HfTransferError(f"every text in the {split} split is empty")
        dataset = dataset.select(keep) if len(keep) < len(dataset) else dataset
        ids = [ids[i] for i in keep]
        dataset = dataset.remove_columns([label_col]).add_column("labels", ids)
        encoded[split] = dataset.cast_column("labels", ClassLabel(names=names))
    if dropped:
        logger.warning("dropped %d rows with empty text", dropped)
    data = DatasetDict(encoded)

    if "validation" not in data:
        held_out = data["train"].train_test_split(
            test_size=args.validation_split_percentage / 100, seed=seed, stratify_by_column="labels"
        )
        data["train"], data["validation"] = held_out["train"], held_out["test"]
    if args.max_train_samples is not None and args.max_train_samples < len(data["train"]):
        data["train"] = data["train"].shuffle(seed=seed).select(range(args.max_train_samples))
    if args.max_train_samples_per_class is not None:
        data["train"] = _per_class_subset(data["train"], args.max_train_samples_per_class, seed)
    if args.max_eval_samples is not None:
        for split in ("validation", "test", "source"):
            if split in data and args.max_eval_samples < len(data[split]):
                data[split] = data[split].select(range(args.max_eval_samples))

    def tokenize(batch):
        pair = batch[pair_col] if pair_col else None
        return tokenizer(batch[text_col], pair, truncation=True, max_length=args.max_seq_length)

    domains = {split: [str(v) for v in ds[args.domain_column]] for split, ds in data.items()} if args.domain_column else {}
    keep_columns = {"labels"}
    data = DatasetDict(
        {
            split: ds.map(
                tokenize,
                batched=True,
                remove_columns=[c for c in ds.column_names if c not in keep_columns],
                desc=f"Tokenising {split}",
            )
            for split, ds in data.items()
        }
    )
    return TextClassificationData(data, names, text_col, label_col, dropped, domains)
