"""Paired source/target text for sequence-to-sequence tasks: tables or aligned plain-text files, checked and tokenised.

Two layouts are read:
- a table (csv, tsv, json/jsonl, parquet, or a Hub dataset) with a source and a target column, found by
  name (source/target, input/output, text/summary, en/de, ...) or named with --source_column/--target_column;
  a Hub translation set's `translation` column ({"en": ..., "de": ...}) is split into one column per language;
- paired plain-text files, one sentence a line, aligned line by line (Multi30k: `train.en` + `train.de`):
  `--train_file train.en --train_target_file train.de`, and likewise for validation and test.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hf_transfer.data.io import (
    check_files,
    check_not_empty,
    pick_column,
    read_splits,
    require_columns,
)
from hf_transfer.data.splits import hold_out_validation, subsample
from hf_transfer.errors import HfTransferError

logger = logging.getLogger(__name__)

SOURCE_COLUMNS = ("source", "src", "input", "inputs", "input_text", "text", "document", "article", "dialogue", "question", "en")
TARGET_COLUMNS = ("target", "tgt", "output", "outputs", "target_text", "summary", "highlights", "answer", "de")
SPLITS = ("train", "validation", "test")


@dataclass
class Seq2SeqDataArgs:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id (or a local dataset script folder)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name (e.g. de-en)."})
    train_file: str | None = field(
        default=None,
        metadata={"help": "Training data: a csv, tsv, json, jsonl or parquet table, or with --train_target_file the "
                          "source side of paired plain-text files (one sentence a line)."},
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation data (same layout as --train_file)."})
    test_file: str | None = field(default=None, metadata={"help": "Test data, evaluated once after training (same layout)."})
    train_target_file: str | None = field(
        default=None,
        metadata={"help": "Target side of paired plain-text files, aligned line by line with --train_file "
                          "(Multi30k: --train_file train.en --train_target_file train.de)."},
    )
    validation_target_file: str | None = field(default=None, metadata={"help": "Target side of --validation_file."})
    test_target_file: str | None = field(default=None, metadata={"help": "Target side of --test_file."})
    source_column: str | None = field(
        default=None, metadata={"help": f"Source text column (default: the first of {', '.join(SOURCE_COLUMNS)})."}
    )
    target_column: str | None = field(
        default=None, metadata={"help": f"Target text column (default: the first of {', '.join(TARGET_COLUMNS)})."}
    )
    source_prefix: str | None = field(
        default=None,
        metadata={"help": "Text put before every source, e.g. 'translate English to German: ' (T5 checkpoints were "
                          "trained with such task prefixes)."},
    )
    max_source_length: int = field(default=128, metadata={"help": "Longer sources (prefix included) are truncated, and counted."})
    max_target_length: int = field(default=128, metadata={"help": "Longer targets are truncated, and counted."})
    pad_to_max_length: bool = field(
        default=False,
        metadata={"help": "Pad every source to --max_source_length and every target to --max_target_length (fixed "
                          "shapes: TPU, CUDA graphs); by default batches pad to their longest."},
    )
    validation_split_percentage: int = field(
        default=10, metadata={"help": "Without a validation split, hold out this share of train (at random)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a random subset of this size."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N pairs of each split."})
    drop_empty: bool = field(
        default=False,
        metadata={"help": "Drop pairs whose source or target is empty (counted); by default they are an error."},
    )

    def __post_init__(self) -> None:
        if self.dataset_name and self.train_file:
            raise HfTransferError("give either --dataset_name or --train_file, not both")
        if not self.dataset_name and not self.train_file:
            raise HfTransferError(
                "no data given: pass --train_file (a table with source/target columns, or paired text files with "
                "--train_target_file) or --dataset_name"
            )
        targets = self.target_files()
        if self.dataset_name and any(targets.values()):
            raise HfTransferError("--*_target_file pairs with --*_file, not with --dataset_name")
        for split in SPLITS:
            if targets[split] and not getattr(self, f"{split}_file"):
                raise HfTransferError(f"--{split}_target_file needs --{split}_file (the source side, aligned line by line)")
        if self.paired:
            for split in SPLITS:
                if getattr(self, f"{split}_file") and not targets[split]:
                    raise HfTransferError(
                        f"--{split}_file is read as the source side of paired text files (--train_target_file is given); "
                        f"give --{split}_target_file too"
                    )
            if self.source_column or self.target_column:
                raise HfTransferError("--source_column/--target_column name table columns; paired text files have none")
            for option in (*(f"{s}_file" for s in SPLITS), *(f"{s}_target_file" for s in SPLITS)):
                path = getattr(self, option)
                if path is not None and not Path(path).is_file():
                    raise HfTransferError(f"--{option} {path} does not exist")
        else:
            check_files({f"{s}_file": getattr(self, f"{s}_file") for s in SPLITS})
        if self.source_column and self.source_column == self.target_column:
            raise HfTransferError(f"--source_column and --target_column are both '{self.source_column}'; name two columns")
        for option in ("max_source_length", "max_target_length"):
            if getattr(self, option) < 2:
                raise HfTransferError(f"--{option} must be at least 2 (a token and the end of sequence), got {getattr(self, option)}")
        if not 0 < self.validation_split_percentage < 100:
            raise HfTransferError(f"--validation_split_percentage must be in 1..99, got {self.validation_split_percentage}")

    def target_files(self) -> dict[str, str | None]:
        return {split: getattr(self, f"{split}_target_file") for split in SPLITS}

    @property
    def paired(self) -> bool:
        return any(self.target_files().values())


@dataclass
class Seq2SeqData:
    datasets: object  # DatasetDict of tokenised splits (input_ids, attention_mask, labels)
    texts: dict  # split -> {"source": [...], "target": [...]}: the raw pairs of each evaluation split, in order
    source_column: str
    target_column: str
    truncated: dict  # split -> {"sources": n, "targets": n} cut at --max_source_length / --max_target_length
    dropped_empty: int


def read_paired_lines(source_path: str, target_path: str, split: str):
    """Two aligned plain-text files as a Dataset with `source` and `target` columns; misalignment is an error."""
    from datasets import Dataset

    sides = []
    for path in (source_path, target_path):
        try:
            text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is not part of line 1
        except UnicodeDecodeError as error:
            raise HfTransferError(f"cannot read {path}: it is not UTF-8 text ({error.reason}); save it as UTF-8") from error
        # Only "\n" ends a line: str.splitlines would also split at characters such as U+2028 inside a sentence.
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the newline that ends the last line
        sides.append([line.rstrip("\r") for line in lines])
    sources, targets = sides
    if len(sources) != len(targets):
        raise HfTransferError(
            f"the {split} files are not aligned: {source_path} has {len(sources)} lines but {target_path} has "
            f"{len(targets)}; paired files hold one sentence a line, line i of one translating line i of the other"
        )
    if not sources:
        raise HfTransferError(f"the {split} split is empty ({source_path} has no lines); give it at least one pair")
    return Dataset.from_dict({"source": sources, "target": targets})


def _split_translation_column(raw):
    """A Hub translation set's `translation` column ({"en": ..., "de": ...}) as one column per language."""
    from datasets import DatasetDict

    if "translation" not in raw["train"].column_names:
        return raw
    out = {}
    for split, dataset in raw.items():
        flat = dataset.flatten()
        languages = {c: c.split(".", 1)[1] for c in flat.column_names if c.startswith("translation.")}
        out[split] = flat.rename_columns({c: lang for c, lang in languages.items() if lang not in flat.column_names})
    return DatasetDict(out)


def load_raw_pairs(args: Seq2SeqDataArgs):
    """The raw splits as read (paired text files -> source/target columns), before any check."""
    from datasets import DatasetDict

    if args.paired:
        return DatasetDict({
            split: read_paired_lines(getattr(args, f"{split}_file"), getattr(args, f"{split}_target_file"), split)
            for split in SPLITS if getattr(args, f"{split}_file")
        })
    raw = read_splits(args.dataset_name, args.dataset_config_name, {s: getattr(args, f"{s}_file") for s in SPLITS})
    return _split_translation_column(raw)


def find_pair_columns(raw, args: Seq2SeqDataArgs) -> tuple[str, str]:
    """The source and target columns (named, or found by common names on train), present in every split."""
    columns = raw["train"].column_names
    # A named target is never taken for the source (`text` is a source name, and some tables' target).
    source = pick_column([c for c in columns if c != args.target_column] if args.source_column is None else columns,
                         args.source_column, SOURCE_COLUMNS, "source_column", "source")
    if args.target_column is None:
        rest = [c for c in columns if c != source]
        found = [c for name in TARGET_COLUMNS for c in rest if c.lower() == name]
        if not found:
            raise HfTransferError(
                f"no target column found among: {', '.join(columns)} (source: {source}); name it with --target_column"
            )
        target = found[0]
    else:
        target = pick_column(columns, args.target_column, TARGET_COLUMNS, "target_column", "target")
    require_columns(raw, [source, target])
    return source, target


def _as_text(value) -> str:
    return "" if value is None else str(value)


def check_empty_pairs(data, source: str, target: str, drop: bool):
    """Pairs with an empty source or target: an error naming the counts and the fix, or dropped (and counted)."""
    from datasets import DatasetDict

    kept, per_split, empty_sources, empty_targets = {}, {}, 0, 0
    for split, dataset in data.items():
        src_empty = [not _as_text(v).strip() for v in dataset[source]]
        tgt_empty = [not _as_text(v).strip() for v in dataset[target]]
        empty_sources += sum(src_empty)
        empty_targets += sum(tgt_empty)
        rows = [i for i, (s, t) in enumerate(zip(src_empty, tgt_empty)) if s or t]
        if rows:
            per_split[split] = (len(rows), rows[0] + 1)
        kept[split] = [i for i, (s, t) in enumerate(zip(src_empty, tgt_empty)) if not (s or t)]
    if not per_split:
        return data, 0
    # Rows are counted from 1 among the data rows: a jsonl file's line number, a csv's line number less its header.
    where = ", ".join(f"{split} {n}, the first at row {first}" for split, (n, first) in per_split.items())
    if not drop:
        raise HfTransferError(
            f"{empty_targets} pair(s) have an empty or missing target and {empty_sources} an empty or missing source "
            f"({where}); fill them in or pass --drop_empty true to drop them"
        )
    for split, keep in kept.items():
        if not keep:
            raise HfTransferError(f"every pair in the {split} split has an empty source or target; give it at least one full pair")
    dropped = sum(n for n, _ in per_split.values())
    logger.warning("dropped %d pairs with an empty source or target (%s)", dropped, where)
    return DatasetDict({s: d.select(kept[s]) if len(kept[s]) < len(d) else d for s, d in data.items()}), dropped


def tokenize_pairs(data, tokenizer, source: str, target: str, args: Seq2SeqDataArgs, strip_label_start: int | None = None):
    """Each split tokenised once (a cached `datasets.map`): input_ids, attention_mask, labels; truncations counted.

    A first pass without truncation measures each text (a batch with nothing too long is used as it is); the
    counts come back as columns, so a cached map still reports them. `strip_label_start` drops a leading
    token from the labels (an encoder-decoder built from BERT gets `[CLS] ... [SEP]` from its tokenizer, and
    `[CLS]` is already its decoder's start token: predicting it again would waste the first step).
    Padded label positions become -100 (ignored by the loss) when --pad_to_max_length pads here.
    """
    from datasets import DatasetDict

    prefix = args.source_prefix or ""
    padding = "max_length" if args.pad_to_max_length else False

    def encode(texts, max_length, side):
        measured = tokenizer(**{side: texts}, truncation=False)
        cut = [len(ids) > max_length for ids in measured["input_ids"]]
        if any(cut) or padding:
            return tokenizer(**{side: texts}, truncation=True, max_length=max_length, padding=padding), cut
        return measured, cut

    def tokenize(batch):
        sources = [prefix + _as_text(s) for s in batch[source]]
        targets = [_as_text(t) for t in batch[target]]
        inputs, src_cut = encode(sources, args.max_source_length, "text")
        labels, tgt_cut = encode(targets, args.max_target_length, "text_target")
        label_ids = []
        masks = labels.get("attention_mask") or [[1] * len(ids) for ids in labels["input_ids"]]
        for ids, mask in zip(labels["input_ids"], masks):
            ids = [i if m else -100 for i, m in zip(ids, mask)]
            if strip_label_start is not None and ids and ids[0] == strip_label_start:
                ids = ids[1:]
            label_ids.append(ids)
        return {
            "input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "labels": label_ids,
            "_source_cut": src_cut, "_target_cut": tgt_cut,
        }

    tokenised, truncated = {}, {}
    for split, dataset in data.items():
        mapped = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc=f"Tokenising {split}")
        truncated[split] = {"sources": int(sum(mapped["_source_cut"])), "targets": int(sum(mapped["_target_cut"]))}
        tokenised[split] = mapped.remove_columns(["_source_cut", "_target_cut"])
    cut = {s: n for s, n in truncated.items() if n["sources"] or n["targets"]}
    if cut:
        logger.warning(
            "truncated to --max_source_length %d / --max_target_length %d: %s (sources/targets); raise them to keep whole texts",
            args.max_source_length, args.max_target_length,
            ", ".join(f"{s} {n['sources']}/{n['targets']} of {len(data[s])}" for s, n in cut.items()),
        )
    return DatasetDict(tokenised), truncated


def load_seq2seq(args: Seq2SeqDataArgs, tokenizer, seed: int = 42, strip_label_start: int | None = None) -> Seq2SeqData:
    """Load, check and tokenise a sequence-to-sequence data set.

    Checks, each a one-line error: misaligned paired files, empty splits, missing source or target columns
    (listing the ones present), and empty sources or targets (unless --drop_empty).
    """
    raw = load_raw_pairs(args)
    check_not_empty(raw, what="pair")
    source, target = find_pair_columns(raw, args)
    data, dropped = check_empty_pairs(raw, source, target, args.drop_empty)
    data = hold_out_validation(data, args.validation_split_percentage, seed, stratify=False, what="pair")
    data = subsample(data, seed, args.max_train_samples, None, args.max_eval_samples)
    texts = {
        split: {"source": [_as_text(v) for v in ds[source]], "target": [_as_text(v) for v in ds[target]]}
        for split, ds in data.items() if split != "train"
    }
    tokenised, truncated = tokenize_pairs(data, tokenizer, source, target, args, strip_label_start)
    return Seq2SeqData(tokenised, texts, source, target, truncated, dropped)



