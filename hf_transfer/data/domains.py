"""Two domains in one run: a labelled source set and an unlabelled target set, checked against each other, and batches
that hold both in a fixed proportion. Also a reader for review folders in the Amazon multi-domain format.

The source follows the sentiment recipe's rules exactly (same options, columns found by the same names, labels,
held-out validation: `text.py`'s functions). The target must have the source's text column; its labels, when it has
them, are encoded with the source's label names and used only to score (`target` split), never in training. Without
target data, a stand-in made from the source's training texts (the synthetic shift's, hf_transfer/tasks) takes its place.
"""
from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hf_transfer.data.io import check_files, check_not_empty, read_file, read_splits
from hf_transfer.data.labels import encode_labels, label_key
from hf_transfer.data.splits import hold_out_validation, subsample
from hf_transfer.data.text import (
    TextDataArgs,
    drop_empty_texts,
    find_columns,
    task_type_of,
    tokenize_splits,
)
from hf_transfer.errors import HfTransferError

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the label of a target row in a training batch: the task loss skips it
# A labelled target's labels beside its rows in the training stream, for self-training's log of how many pseudo-labels
# are right: a batch key of its own that the objective takes before the model sees the batch, never `labels`.
TARGET_TRUTH = "target_truth"
# The training batch's target rows again, masked for the masked-LM objective (`DomainBatchCollator`'s `masking`):
# their input ids, attention mask and labels (-100 where nothing is predicted), one row per target row.
MASKED_TARGET = ("masked_target_input_ids", "masked_target_attention_mask", "masked_target_labels")
REVIEW_SUFFIX = ".review"
_REVIEW_TEXT = re.compile(r"<review_text>\s*(.*?)\s*</review_text>", re.DOTALL)


def is_review_folder(path: str | None) -> bool:
    """A folder of `<label>.review` files (Blitzer et al.'s Amazon format: books/positive.review, ...)."""
    return bool(path) and Path(path).is_dir() and any(Path(path).glob(f"*{REVIEW_SUFFIX}"))


def read_reviews(path: str | Path) -> list[str]:
    """The review texts of one `.review` file. The format is pseudo-XML, not XML (unescaped `&` and `<` occur), so the
    text is taken with a regular expression and its HTML entities (`&quot;`, `&#8217;`) decoded."""
    raw = Path(path).read_text(encoding="utf-8", errors="replace")
    return [html.unescape(text) for text in _REVIEW_TEXT.findall(raw)]


def read_review_folder(folder: str | Path, split: str = "train"):
    """A folder of `<label>.review` files as a Dataset with columns text, label (the file's stem) and domain (the
    folder's name), files in name order. Read in place: nothing is written."""
    from datasets import Dataset

    texts, labels = [], []
    for path in sorted(Path(folder).glob(f"*{REVIEW_SUFFIX}")):
        reviews = read_reviews(path)
        texts += reviews
        labels += [path.stem] * len(reviews)
    if not texts:
        raise HfTransferError(f"the {split} split is empty: no <review_text> records in the .review files of {folder}")
    return Dataset.from_dict({"text": texts, "label": labels, "domain": [Path(folder).name] * len(texts)})


def read_table(path: str, split: str):
    """A data file (csv, tsv, json, jsonl, parquet) or a review folder as a Dataset."""
    return read_review_folder(path, split) if is_review_folder(path) else read_file(path, split)


@dataclass
class DomainDataArgs(TextDataArgs):
    """The source set takes every option of the sentiment recipe (a file may also be a folder of .review files); the
    target set is named with the options below (or, when none is, the task makes a stand-in: --synthetic_shift)."""

    target_file: str | None = field(
        default=None,
        metadata={"help": "Text of the target domain (labels optional, used only to score): csv, tsv, json, jsonl, "
                  "parquet, or a folder of <label>.review files. It must have the source's text column. Without it (and "
                  "--target_dataset_name), --synthetic_shift makes a stand-in target from the source (docs/shift.md)."},
    )
    target_dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset of the target domain (instead of --target_file)."})
    target_dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration name."})
    target_split: str = field(default="train", metadata={"help": "The split of --target_dataset_name to adapt to."})
    target_eval_file: str | None = field(
        default=None,
        metadata={"help": "Labelled target data to score on (default: the target set itself, when it has labels: the "
                  "transductive protocol of the domain-adaptation literature). Never used in training."},
    )
    max_target_samples: int | None = field(default=None, metadata={"help": "Use a random subset of the target set of this size."})

    def __post_init__(self) -> None:
        # TextDataArgs' own checks, less its embedded default (a domain-adaptation run names both domains) and with
        # review folders allowed wherever a file is.
        if self.dataset_name and self.train_file:
            raise HfTransferError("give either --dataset_name or --train_file, not both")
        if not self.dataset_name and not self.train_file:
            raise HfTransferError("name the labelled source data: --train_file (or --dataset_name)")
        if self.target_file and self.target_dataset_name:
            raise HfTransferError("name the target domain's data with --target_file or --target_dataset_name, not both")
        options = ("train_file", "validation_file", "test_file", "source_eval_file", "target_file", "target_eval_file")
        check_files({o: getattr(self, o) for o in options if not is_review_folder(getattr(self, o))})
        if self.max_train_samples is not None and self.max_train_samples_per_class is not None:
            raise HfTransferError("give --max_train_samples or --max_train_samples_per_class, not both")
        if not 0 < self.validation_split_percentage < 100:
            raise HfTransferError(f"--validation_split_percentage must be in 1..99, got {self.validation_split_percentage}")
        if self.max_target_samples is not None and self.max_target_samples < 1:
            raise HfTransferError(f"--max_target_samples must be at least 1, got {self.max_target_samples}")
        if self.task_type == "regression":
            raise HfTransferError("domain adaptation trains classifiers: --task_type regression is offered by the "
                                  "sentiment recipe only")

    @property
    def has_target(self) -> bool:
        """Whether target data are named (else the task must make a stand-in target)."""
        return bool(self.target_file or self.target_dataset_name)


@dataclass
class DomainData:
    datasets: object  # DatasetDict: train (source, tokenised), validation, test?, target? (labelled target, to score)
    target: object  # the tokenised target rows of the training stream (model inputs only)
    label_names: list[str]
    report: dict


def _read_source(args: DomainDataArgs):
    from datasets import DatasetDict

    if args.dataset_name:
        return read_splits(args.dataset_name, args.dataset_config_name, {})
    files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
    return DatasetDict({split: read_table(path, split) for split, path in files.items() if path})


def _read_target(args: DomainDataArgs):
    if args.target_file:
        try:
            return read_table(args.target_file, "target")
        except HfTransferError as error:
            if "is empty" not in str(error):
                raise
            # read_file's own message asks for labelled rows, which the target does not need.
            raise HfTransferError(f"the target set is empty ({args.target_file} has no rows); give the target domain at "
                                  "least one text") from error
    from datasets import load_dataset

    try:
        return load_dataset(args.target_dataset_name, args.target_dataset_config_name, split=args.target_split)
    except Exception as error:  # datasets and the Hub client raise many types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HfTransferError(f"cannot load target dataset '{args.target_dataset_name}' ({args.target_split}): {first}") from error


def _drop_duplicate_texts(dataset, text_column: str):
    """Exact repeats of a text (the Amazon files hold some) would land on both sides of a held-out split."""
    seen, keep = set(), []
    for i, text in enumerate(dataset[text_column]):
        if text not in seen:
            seen.add(text)
            keep.append(i)
    return (dataset.select(keep) if len(keep) < len(dataset) else dataset), len(dataset) - len(keep)


def _labelled(dataset, column: str | None) -> bool:
    """Whether `column` exists and holds a label on every row (a column left empty means unlabelled)."""
    if column is None or column not in dataset.column_names:
        return False
    values = list(dataset[column])
    missing = sum(v is None or (isinstance(v, str) and not v.strip()) for v in values)
    if missing == len(values):
        return False
    if missing:
        raise HfTransferError(f"{missing} of the target's {len(values)} rows have no label in '{column}'; label every "
                              "row (they only score the run) or drop the column")
    return True


SMALL_TARGET = 100  # target texts below which adapting and scoring are both unreliable: a warning
SHARED_WITH_SOURCE = 0.5  # a target whose texts are more than this share the source's training texts is refused


def _target_name(args: DomainDataArgs) -> str:
    return args.target_file or f"{args.target_dataset_name} ({args.target_split})"


def check_target_is_another_domain(source_texts, target_texts, name: str) -> None:
    """Refuse a target that is (mostly) the source's own training data: adapting to it is a no-op and its "target"
    score is a training score."""
    source = {t.strip() for t in source_texts}
    target = [t.strip() for t in target_texts]
    shared = sum(t in source for t in target)
    if target and shared > SHARED_WITH_SOURCE * len(target):
        raise HfTransferError(f"the target set {name} is the source's training data ({shared} of its {len(target)} texts "
                              "are source training texts); give unlabelled text of the domain to adapt to")


def encode_target_labels(scored, column: str, names: list[str], name: str, ids: bool):
    """The target's labels (used only to score) as the source's label ids, matched by name; integers are ids only
    when the source's were (declared with --class_names). A target label outside the source's set is an error naming
    the file: mapping it anyway (star ratings 1-5 onto a two-class id) would score nonsense."""
    from datasets import ClassLabel

    feature, values = scored.features[column], list(scored[column])
    if isinstance(feature, ClassLabel):
        shown = [feature.int2str(v) for v in values]
    elif ids:
        shown = [names[v] if isinstance(v, int) and 0 <= v < len(names) else label_key(v) for v in values]
    else:
        shown = [label_key(v) for v in values]
    label2id = {n: i for i, n in enumerate(names)}
    unknown = sorted({s for s in shown if s not in label2id})
    if unknown:
        raise HfTransferError(f"the target labels in {name} are outside the source's label set {names}: {unknown[:10]}; "
                              "score the target with labels named as the source's, or drop its label column")
    labels = [label2id[s] for s in shown]
    return scored.remove_columns([c for c in (column, "labels") if c in scored.column_names]).add_column(
        "labels", labels).cast_column("labels", ClassLabel(names=names))


def load_domains(args: DomainDataArgs, tokenizer, seed: int, paired: int, keep_text: bool = False,
                 stand_in_target: Callable[[list[str]], list[str]] | None = None, truth: bool = False) -> DomainData:
    """Read and check both domains, tokenise them, and give every source training row `paired` target rows.

    `keep_text`: the source's splits and the scored target keep their text column beside the token ids (the synthetic
    shift transforms texts: hf_transfer/tasks/shift.py); the target rows of the training stream never do.
    `stand_in_target`: when no target data are named, the function that makes the target's texts from the source's
    training texts, in order (it checks them itself); its rows have no labels, so nothing scores the target unless
    --target_eval_file is given.
    `truth`: when the target rows carry labels (and so are the scored set), the stream keeps them as `TARGET_TRUTH`,
    for logging only (self-training's pseudo-label accuracy).

    Errors, one line each: an empty target set, source without labels (or rows without one), a target without the
    source's text column, target labels outside the source's label set, and the sentiment recipe's own checks.
    """
    from datasets import Dataset, DatasetDict

    raw = _read_source(args)
    check_not_empty(raw, what="labelled row")
    columns = find_columns(raw, args)  # the text and label columns, by name or found as the sentiment recipe finds them
    if task_type_of(args, raw) == "regression":
        raise HfTransferError(f"the '{columns.label}' column holds fractional numbers, a regression target, and domain "
                              "adaptation trains classifiers: pass --task_type classification to treat them as classes")
    data, names = encode_labels(raw, columns.label, args.class_names)
    data, dropped = drop_empty_texts(data, columns.text)
    duplicates = 0
    if "validation" not in data:
        data["train"], duplicates = _drop_duplicate_texts(data["train"], columns.text)
    data = hold_out_validation(data, args.validation_split_percentage, seed)
    data = subsample(data, seed, args.max_train_samples, args.max_train_samples_per_class, args.max_eval_samples)

    if args.has_target:
        target = _read_target(args)
    elif stand_in_target is not None:
        target = Dataset.from_dict({columns.text: stand_in_target(list(data["train"][columns.text]))})
    else:
        raise HfTransferError("name the target domain's data: --target_file or --target_dataset_name")
    if len(target) == 0:
        raise HfTransferError("the target set is empty; give the target domain at least one text")
    if columns.text not in target.column_names:
        raise HfTransferError(
            f"the target data has no '{columns.text}' column, the source's text column; its columns: "
            f"{', '.join(target.column_names)}. Give both domains the same text column"
        )
    if args.max_target_samples is not None and args.max_target_samples < len(target):
        target = target.shuffle(seed=seed).select(range(args.max_target_samples))
    kept, target_dropped = drop_empty_texts(DatasetDict({"target": target}), columns.text)
    target = kept["target"]
    if args.has_target:
        check_target_is_another_domain(raw["train"][columns.text], target[columns.text], _target_name(args))
    if len(target) < SMALL_TARGET:
        logger.warning("the target set has only %d texts: too few to adapt to or to score reliably (aim for %d or more)",
                       len(target), SMALL_TARGET)
    scored = None
    if args.target_eval_file:
        scored = read_table(args.target_eval_file, "target evaluation")
        if not _labelled(scored, columns.label):
            raise HfTransferError(f"--target_eval_file {args.target_eval_file} has no labels in '{columns.label}' "
                                  "(the source's label column); it is only for scoring")
    elif _labelled(target, columns.label):
        scored = target
    truth_ids = None
    if scored is not None:
        if columns.text not in scored.column_names:
            raise HfTransferError(f"--target_eval_file has no '{columns.text}' column, the source's text column")
        source_ids = bool(args.class_names) and str(getattr(raw["train"].features[columns.label], "dtype", "")).startswith(("int", "uint"))
        target_is_scored = scored is target
        scored = encode_target_labels(scored, columns.label, names, args.target_eval_file or _target_name(args), source_ids)
        if truth and target_is_scored:  # the stream's rows, in its order
            truth_ids = list(scored["labels"])
        if args.max_eval_samples is not None and args.max_eval_samples < len(scored):
            scored = scored.select(range(args.max_eval_samples))
    stream = target.select_columns([columns.text])  # never the target's labels as `labels` (truth: a key of its own)

    data = tokenize_splits(data, tokenizer, columns, args.max_seq_length, keep_text)
    tokenised = tokenize_splits(DatasetDict({"stream": stream}), tokenizer, columns, args.max_seq_length)
    if truth_ids is not None:
        tokenised["stream"] = tokenised["stream"].add_column(TARGET_TRUTH, truth_ids)
    if scored is not None:
        data["target"] = tokenize_splits(DatasetDict({"target": scored.select_columns([columns.text, "labels"])}),
                                         tokenizer, columns, args.max_seq_length, keep_text)["target"]
    if paired:
        data["train"] = data["train"].add_column("target_index", pair_rows(len(data["train"]), len(stream), paired, seed))
    report = {
        "label_names": names, "text_column": columns.text, "source_train_rows": len(data["train"]),
        "target_rows": len(stream), "target_scored_rows": len(scored) if scored is not None else 0,
        "dropped_empty_texts": dropped + target_dropped, "source_duplicates_dropped": duplicates,
    }
    return DomainData(data, tokenised["stream"], names, report)


def pair_rows(n_source: int, n_target: int, per_row: int, seed: int) -> list[list[int]]:
    """The target rows each source row brings into its batch: a seeded permutation of the target, cycled, so every
    target row is used before any repeats and the proportion in every batch is exactly `per_row` target rows per
    source row (target rows beyond n_source * per_row are scored but not seen in training)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n_target)
    return [[int(order[(i * per_row + k) % n_target]) for k in range(per_row)] for i in range(n_source)]


def with_domain(dataset, domain: int):
    """`dataset` with a `domain` column (every row `domain`), so that evaluation batches say which domain they are."""
    return dataset.add_column("domain", [domain] * len(dataset))


class DomainBatchCollator:
    """One padded batch of both domains: the source rows first, then the target rows each source row brings
    (`target_index`), with label -100 (the task loss skips them) and a `domain` tensor (0 source, 1 target).

    Evaluation rows (no `target_index`) keep their own `domain` column. Both domains are padded together, so the
    model runs once per step on all rows (under DDP one forward per backward, as DDP expects). Target rows that carry
    their true label (`TARGET_TRUTH`, for logging) give it as a batch key of that name, -100 on source rows. With
    `masking` (a `RowKeyedMasking`), the target rows also come masked under the `MASKED_TARGET` keys, their masks keyed
    by each row's index in the target.
    """

    def __init__(self, padding_collator, target, masking=None) -> None:
        self.pad = padding_collator
        self.target_rows = target.to_list()  # random access by index, without a datasets lookup per row
        self.masking = masking

    def __call__(self, features: list[dict]):
        import torch

        rows, domains, targets, truth = [], [], [], []
        for feature in features:
            feature = dict(feature)
            targets += feature.pop("target_index", None) or []
            domains.append(int(feature.pop("domain", 0)))
            rows.append(feature)
        for index in targets:
            row = {**self.target_rows[int(index)], "labels": IGNORE_INDEX}
            if TARGET_TRUTH in row:
                truth.append(int(row.pop(TARGET_TRUTH)))
            rows.append(row)
            domains.append(1)
        batch = self.pad(rows)
        batch["domain"] = torch.tensor(domains, dtype=torch.long)
        if truth:
            batch[TARGET_TRUTH] = torch.tensor([IGNORE_INDEX] * len(features) + truth, dtype=torch.long)
        if self.masking is not None and targets:
            masked = self.masking([{"input_ids": self.target_rows[int(i)]["input_ids"]} for i in targets],
                                  [int(i) for i in targets])
            batch.update(zip(MASKED_TARGET, (masked["input_ids"], masked["attention_mask"], masked["labels"])))
        return batch


__all__ = ["DomainBatchCollator", "DomainData", "DomainDataArgs", "IGNORE_INDEX", "MASKED_TARGET", "TARGET_TRUTH", "load_domains",
           "pair_rows", "read_review_folder", "read_reviews", "with_domain"]



