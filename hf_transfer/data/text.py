"""Text classification data: Hub datasets or local csv/tsv/json/jsonl/parquet files, checked, labelled, tokenised."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from hf_transfer.data import SAMPLES
from hf_transfer.data.io import (
    check_files,
    check_not_empty,
    pick_column,
    read_file,
    read_splits,
    require_columns,
)
from hf_transfer.data.labels import (
    LABEL_COLUMNS,
    TASK_TYPES,
    LabelMaps,
    encode_labels,
    encode_targets,
    looks_like_regression,
)
from hf_transfer.data.splits import hold_out_validation, subsample
from hf_transfer.errors import HfTransferError

# Re-exported for modules that read files through text.py (mlm, recipes); new code imports them from .io.
__all__ = [
    "LABEL_COLUMNS", "TEXT_COLUMNS", "TextClassificationData", "TextDataArgs", "check_files", "load_raw",
    "load_text_classification", "pick_column", "read_file", "read_splits", "task_type_of", "text_collator",
]

logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("text", "sentence", "review", "content", "document", "comment", "utterance", "body")


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
    task_type: str = field(
        default="auto",
        metadata={"help": "classification (class labels), regression (one number per text: MSE loss, MAE/R^2/Spearman) or "
                  "auto: regression when the label column holds numbers with a fractional part, else classes. Integer "
                  "scores (ratings 1-10) stay classes: pass regression to predict them as numbers.",
                  "choices": TASK_TYPES},
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
    train_sample_seed: int | None = field(
        default=None,
        metadata={"help": "Seed of the random training subset (--max_train_samples, --max_train_samples_per_class), so "
                  "that which examples are drawn varies apart from training's --seed (compare's --few_shot_draws). "
                  "Default: --seed."},
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
            self.validation_file = str(SAMPLES / "reviews_validation.csv")
        check_files({o: getattr(self, o) for o in ("train_file", "validation_file", "test_file", "source_eval_file")})
        if self.max_train_samples is not None and self.max_train_samples_per_class is not None:
            raise HfTransferError("give --max_train_samples or --max_train_samples_per_class, not both")
        if not 0 < self.validation_split_percentage < 100:
            raise HfTransferError(f"--validation_split_percentage must be in 1..99, got {self.validation_split_percentage}")
        if self.task_type == "regression":
            check_regression_options(self, "--task_type regression")


def check_regression_options(args: TextDataArgs, why: str) -> None:
    """Options that only make sense for classes, refused for a regression target (`why` says how it became one)."""
    if args.max_train_samples_per_class is not None:
        raise HfTransferError(f"--max_train_samples_per_class samples each class, and a regression target ({why}) has "
                              "none: use --max_train_samples")
    if args.class_names:
        raise HfTransferError(f"--class_names declares classes, and a regression target ({why}) has none: drop it, or "
                              "pass --task_type classification")


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
    task_type: str = "classification"  # or "regression": `labels` holds float32 targets and label_names is empty


def load_raw(args: TextDataArgs):
    """The raw splits (train, validation?, test?, source?) as read, before any check."""
    files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
    raw = read_splits(args.dataset_name, args.dataset_config_name, files)
    if args.source_eval_file:
        raw["source"] = read_file(args.source_eval_file, "source")
    return raw


@dataclass
class _Columns:
    text: str
    label: str
    pair: str | None
    domain: str | None


def find_columns(raw, args: TextDataArgs) -> _Columns:
    """The text and label columns (named, or found by common names on train), present in every split."""
    columns = raw["train"].column_names
    found = _Columns(
        text=pick_column(columns, args.text_column, TEXT_COLUMNS, "text_column", "text"),
        label=pick_column(columns, args.label_column, LABEL_COLUMNS, "label_column", "label"),
        pair=args.text_pair_column,
        domain=args.domain_column,
    )
    require_columns(raw, [found.text, found.label, found.pair, found.domain])
    return found


def task_type_of(args: TextDataArgs, raw=None) -> str:
    """"classification" or "regression": --task_type, else (auto) what the training labels look like; declared
    --class_names are classes. Reads the data when the labels decide and `raw` (the splits as read) is not given."""
    if args.task_type != "auto":
        return args.task_type
    if args.class_names:
        return "classification"
    raw = load_raw(args) if raw is None else raw
    label = find_columns(raw, args).label
    numbers = looks_like_regression(raw["train"].features[label], list(raw["train"][label]))
    return "regression" if numbers else "classification"


def drop_empty_texts(data, text_column: str):
    """Rows whose text is missing or blank, dropped with a logged count; a split left with none is an error."""
    from datasets import DatasetDict

    kept, dropped = {}, 0
    for split, dataset in data.items():
        keep = [i for i, t in enumerate(dataset[text_column]) if isinstance(t, str) and t.strip()]
        if not keep:
            raise HfTransferError(f"every text in the {split} split is empty; give it at least one row with text")
        dropped += len(dataset) - len(keep)
        kept[split] = dataset.select(keep) if len(keep) < len(dataset) else dataset
    if dropped:
        logger.warning("dropped %d rows with empty text", dropped)
    return DatasetDict(kept), dropped


def tokenize_splits(data, tokenizer, columns: _Columns, max_length: int, keep_text: bool = False):
    """Each split tokenised once (a cached `datasets.map`), keeping only the model inputs and `labels` (and, with
    `keep_text`, the text columns: --synthetic_shift transforms texts per batch, hf_transfer/tasks/shift.py)."""
    from datasets import DatasetDict

    def tokenize(batch):
        pair = batch[columns.pair] if columns.pair else None
        return tokenizer(batch[columns.text], pair, truncation=True, max_length=max_length)

    kept = {"labels", *((columns.text, columns.pair) if keep_text else ())}
    return DatasetDict({
        split: ds.map(
            tokenize, batched=True, remove_columns=[c for c in ds.column_names if c not in kept], desc=f"Tokenising {split}"
        )
        for split, ds in data.items()
    })


def load_text_classification(args: TextDataArgs, tokenizer, seed: int = 42, keep_text: bool = False) -> TextClassificationData:
    """Load, check and tokenise a text classification data set.

    Checks, each a one-line error: missing columns (listing the ones present), empty splits, rows with no
    label, and labels outside the declared (or training) label set; for a regression target (--task_type, or a
    label column of fractional numbers), a target that is not a number and options meant for classes.
    """
    raw = load_raw(args)
    check_not_empty(raw, what="labelled row")
    columns = find_columns(raw, args)
    task_type = task_type_of(args, raw)
    if task_type == "regression":
        check_regression_options(args, f"the '{columns.label}' column holds fractional numbers" if args.task_type == "auto"
                                 else "--task_type regression")
        data, names = encode_targets(raw, columns.label), []
    else:
        data, names = encode_labels(raw, columns.label, args.class_names)
    data, dropped = drop_empty_texts(data, columns.text)
    # Stratifying by a continuous target would make a class of every value: a regression hold-out is random.
    data = hold_out_validation(data, args.validation_split_percentage, seed, stratify=task_type == "classification")
    sample_seed = seed if args.train_sample_seed is None else args.train_sample_seed
    data = subsample(data, sample_seed, args.max_train_samples, args.max_train_samples_per_class, args.max_eval_samples)
    domains = {split: [str(v) for v in ds[columns.domain]] for split, ds in data.items()} if columns.domain else {}
    data = tokenize_splits(data, tokenizer, columns, args.max_seq_length, keep_text)
    return TextClassificationData(data, names, columns.text, columns.label, dropped, domains, task_type)



