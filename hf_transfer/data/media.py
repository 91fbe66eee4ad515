"""Media data (audio clips, images) as both tasks read it: source options, label folders, splits, the bad-file report.

Rows of a media data set are references, not decoded media: a path, or the {bytes, path} a Hub dataset embeds. The
collator of each medium decodes them per batch; this module only finds, checks and splits them. What differs between
media (their column, file suffixes, nouns in messages) is a `Medium`; each media data module declares its own.
"""
from __future__ import annotations

import io
import logging
import os
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, ClassVar

from hf_transfer.data.io import (
    SPLITS,
    check_files,
    check_not_empty,
    pick_column,
    read_file,
)
from hf_transfer.data.labels import LABEL_COLUMNS, LabelMaps, encode_labels
from hf_transfer.data.splits import hold_out_validation, subsample
from hf_transfer.errors import HfTransferError

logger = logging.getLogger(__name__)
_LISTED_PATHS = 20  # skipped files named one per log line; beyond this only counted


@dataclass(frozen=True)
class Medium:
    """One kind of media file, as the shared code names, finds and reports it."""

    column: str  # "audio": the rows' column, and the word in --audio_column, --on_bad_audio, "audio files"
    item: str  # "clip": one row, in messages ("clips" for several)
    content: str  # "audio": what a split holds, in "the train split has no usable audio"
    feature: str  # the `datasets` feature type of a Hub column of this medium ("Audio")
    columns: tuple[str, ...]  # column names tried, in order, when --<column>_column is not given
    suffixes: tuple[str, ...]  # what counts as a file of this medium in a label folder (lower case)


# ---------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------

@dataclass
class MediaDataArgs:
    """The source, hold-out and subset options of a media task. A subclass sets `medium` and redeclares the fields
    whose help names its medium (a redeclared field keeps its place in --help)."""

    medium: ClassVar[Medium]

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id (or a local dataset folder)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    train_file: str | None = field(
        default=None,
        metadata={"help": "Local table (csv, tsv, json, jsonl, parquet) of media paths; relative paths resolve against "
                  "the table's folder."},
    )
    validation_file: str | None = field(default=None, metadata={"help": "Local validation table (same formats)."})
    test_file: str | None = field(default=None, metadata={"help": "Local test table, evaluated once after training."})
    train_dir: str | None = field(default=None, metadata={"help": "Local folder with one subfolder of files per label."})
    validation_dir: str | None = field(default=None, metadata={"help": "Validation folder, one subfolder per label."})
    test_dir: str | None = field(default=None, metadata={"help": "Test folder, one subfolder per label."})
    validation_split_percentage: int = field(
        default=10, metadata={"help": "Without a validation split, hold out this share of train (stratified by label)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a random subset of this size."})
    max_train_samples_per_class: int | None = field(
        default=None, metadata={"help": "Train on a random subset with at most this many files of each label (few-shot)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N files of each split."})

    def __post_init__(self) -> None:
        self._check_sources()
        if not 0 < self.validation_split_percentage < 100:
            raise HfTransferError(f"--validation_split_percentage must be in 1..99, got {self.validation_split_percentage}")
        if self.max_train_samples is not None and self.max_train_samples_per_class is not None:
            raise HfTransferError("give --max_train_samples or --max_train_samples_per_class, not both")

    def _check_sources(self) -> None:
        """A Hub dataset, or per split a table `--<split>_file` or a folder per label `--<split>_dir`: empty values
        unset, contradictions and missing paths one line each."""
        for split in SPLITS:  # an empty value (`--validation_file ""`) unsets a path a config file gave
            for kind in ("file", "dir"):
                if getattr(self, f"{split}_{kind}") == "":
                    setattr(self, f"{split}_{kind}", None)
        local = [o for o in ("train_file", "train_dir") if getattr(self, o)]
        if self.dataset_name and local:
            raise HfTransferError(f"give either --dataset_name or --{local[0]}, not both")
        if len(local) > 1:
            raise HfTransferError("give either --train_file or --train_dir, not both")
        for split in SPLITS:
            file, folder = getattr(self, f"{split}_file"), getattr(self, f"{split}_dir")
            if file and folder:
                raise HfTransferError(f"give either --{split}_file or --{split}_dir, not both")
            if (file or folder) and self.dataset_name:
                raise HfTransferError(f"--{split}_{'file' if file else 'dir'} cannot be combined with --dataset_name")
            check_files({f"{split}_file": file})
            if folder and not Path(folder).is_dir():
                raise HfTransferError(
                    f"--{split}_dir {folder} does not exist (a folder with one subfolder of {self.medium.item}s per label)"
                )
        if (self.validation_file or self.validation_dir or self.test_file or self.test_dir) and not local:
            raise HfTransferError("--validation_*/--test_* need --train_file or --train_dir")

    def require_source(self) -> None:
        """Checked at load time, not on parse, so a config file can hold the run and the data come as flags."""
        if not (self.dataset_name or self.train_file or self.train_dir):
            raise HfTransferError(f"no training data: pass --dataset_name, --train_file (a table of {self.medium.column} "
                                  "paths) or --train_dir (a folder per label)")

    def hub_split_names(self) -> dict[str, str]:
        """Which split of a Hub dataset is train, validation and test (a subclass with --*_split_name options reads them)."""
        return {split: split for split in SPLITS}


# ---------------------------------------------------------------------------------------------------------
# A row's media value: a path, or the bytes a Hub dataset embeds
# ---------------------------------------------------------------------------------------------------------

def open_target(source):
    """What a decoder (soundfile, Pillow) opens for a row's media value: a path, or the bytes a Hub dataset embeds."""
    if isinstance(source, dict):
        if source.get("bytes"):
            return io.BytesIO(source["bytes"])
        source = source.get("path")
    return source


def describe(source) -> str:
    """The row's media as a user recognises it in a log line: its path."""
    if isinstance(source, dict):
        return str(source.get("path") or "<embedded bytes>")
    return str(source)


# ---------------------------------------------------------------------------------------------------------
# Sources: a Hub dataset, tables of paths, folders per label
# ---------------------------------------------------------------------------------------------------------

def _load_hub(args: MediaDataArgs) -> dict:
    from datasets import get_dataset_split_names, load_dataset

    names = args.hub_split_names()
    try:
        available = get_dataset_split_names(args.dataset_name, args.dataset_config_name)
        if names["validation"] == "validation" and "validation" not in available and "valid" in available:
            names["validation"] = "valid"  # the other common spelling, taken only when nothing else was asked for
        if names["train"] not in available:
            hint = "; name it with --train_split_name" if "train_split_name" in {f.name for f in fields(args)} else ""
            raise HfTransferError(
                f"dataset '{args.dataset_name}' has no '{names['train']}' split (it has: {', '.join(available)}){hint}"
            )
        # Split by split, so a corpus with hundreds of hours in other splits is not downloaded for nothing.
        return {split: load_dataset(args.dataset_name, args.dataset_config_name, split=name)
                for split, name in names.items() if name in available}
    except HfTransferError:
        raise
    except Exception as error:  # datasets and the Hub client raise many types
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HfTransferError(f"cannot load dataset '{args.dataset_name}': {message}") from error


def is_media_file(path: Path, medium: Medium) -> bool:
    """A file of this medium by its suffix. Hidden files are not data: macOS's "._x.wav" resource forks carry a media
    suffix but no media."""
    return path.is_file() and path.suffix.lower() in medium.suffixes and not path.name.startswith(".")


def scan_label_folders(root: str, split: str, medium: Medium):
    """A folder holding one subfolder per label as a Dataset: `<medium.column>` (each file's path) and `label`."""
    from datasets import Dataset

    paths, labels = [], []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(p for p in folder.rglob("*") if is_media_file(p, medium)):
            paths.append(str(file))
            labels.append(folder.name)
    if not paths:
        loose = sum(1 for p in Path(root).iterdir() if is_media_file(p, medium))
        hint = f" ({loose} {medium.column} files lie directly in it: put them in a subfolder named after their label)" if loose else ""
        raise HfTransferError(
            f"the {split} split is empty: {root} has no label subfolders with {medium.column} files{hint}; "
            f"{medium.column} files end in {', '.join(medium.suffixes)}"
        )
    return Dataset.from_dict({medium.column: paths, "label": labels})


def load_media_splits(args: MediaDataArgs, target: str | None, target_columns: tuple[str, ...], target_option: str,
                      target_what: str, folders_give: str | None):
    """The raw splits as a DatasetDict with two columns: `<medium.column>` and `target` (the label or transcript).

    `target`/`target_columns`/`target_option`/`target_what` name the target column as in `io.pick_column`;
    `folders_give` is the column a folder-per-label source provides (None: folders are not a source of this target).
    """
    args.require_source()
    medium = args.medium
    if args.dataset_name:
        raw = _load_hub(args)
    else:
        raw = {}
        for split in SPLITS:
            file, folder = getattr(args, f"{split}_file"), getattr(args, f"{split}_dir")
            if folder:
                if folders_give is None:
                    raise HfTransferError(f"--{split}_dir gives labels from folder names, not {target_what}s; "
                                          f"use --{split}_file with a {target_what} column")
                raw[split] = scan_label_folders(folder, split, medium)
            elif file:
                raw[split] = read_file(file, split)
    check_not_empty(raw, what=medium.item)
    return _media_and_target(raw, args, target, target_columns, target_option, target_what, folders_give)


def _media_and_target(raw: dict, args: MediaDataArgs, target: str | None, target_columns: tuple[str, ...],
                      target_option: str, target_what: str, folders_give: str | None):
    """Each raw split as its media column (a path, or a typed Hub feature's {bytes, path}, left undecoded: the collator
    decodes) and `target`.

    The media column is `--<column>_column`, else the first column of the medium's `datasets` feature type, else the
    first of `medium.columns`. Relative paths in a table point next to the table, wherever the command runs from."""
    import datasets

    medium = args.medium
    feature = getattr(datasets, medium.feature)
    prepared = {}
    for split, dataset in raw.items():
        asked = getattr(args, f"{medium.column}_column")
        typed = [name for name, kind in dataset.features.items() if isinstance(kind, feature)]
        media_col = typed[0] if asked is None and typed else pick_column(
            dataset.column_names, asked, medium.columns, f"{medium.column}_column", medium.column)
        target_col = folders_give if getattr(args, f"{split}_dir", None) else target
        target_col = pick_column(dataset.column_names, target_col, target_columns, target_option, target_what)
        dataset = dataset.select_columns([media_col, target_col])
        if isinstance(dataset.features[media_col], feature):
            dataset = dataset.cast_column(media_col, feature(decode=False))
        elif getattr(args, f"{split}_file", None):
            dataset = _resolve_paths(dataset, media_col, getattr(args, f"{split}_file"))
        renames = {media_col: medium.column, target_col: "target"}
        prepared[split] = dataset.rename_columns({k: v for k, v in renames.items() if k != v})
    return datasets.DatasetDict(prepared)


def resolve_media_path(value, base: Path):
    """A table's media path as a path to open: a relative one points into `base`, the table's (resolved) folder."""
    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser()
    # normpath: "tables/../images/a.png" is logged as the file's own path when it is skipped.
    return os.path.normpath(path if path.is_absolute() else base / path)


def _resolve_paths(dataset, column: str, table: str):
    base = Path(table).resolve().parent
    return dataset.remove_columns(column).add_column(column, [resolve_media_path(v, base) for v in dataset[column]])


def hold_out_and_subsample(data, args: MediaDataArgs, seed: int, stratify: bool = True):
    """A validation split from train when none is given (stratified by label when `stratify`), then the --max_* subsets."""
    data = hold_out_validation(data, args.validation_split_percentage, seed, stratify=stratify, what=args.medium.item)
    return subsample(data, seed, args.max_train_samples, args.max_train_samples_per_class, args.max_eval_samples,
                     eval_splits=("validation", "test"))


@dataclass
class LabelledMedia(LabelMaps):
    datasets: object  # DatasetDict: the media column, labels, what the medium's check adds (+ augment in train)
    label_names: list[str]
    report: dict  # files kept and skipped per split


def load_labelled_splits(args: MediaDataArgs, label_column: str | None, class_names: list[str] | None, seed: int):
    """A media classification data set before its files are checked: labelled splits (column `labels`), the held-out
    validation split and the --max_* subsets, so a large data set is never checked whole for a small subset.
    Returns (data, label names)."""
    raw = load_media_splits(args, label_column, LABEL_COLUMNS, "label_column", "label", folders_give="label")
    data, names = encode_labels(raw, "target", class_names, what=args.medium.item)
    return hold_out_and_subsample(data, args, seed), names


# ---------------------------------------------------------------------------------------------------------
# The up-front check: bad files reported once, before training
# ---------------------------------------------------------------------------------------------------------

def report_bad_files(bad: list[tuple[str, str]], split: str, medium: Medium, policy: str) -> None:
    """`bad` holds (path, reason) of the unusable files of a split: an error naming them (`policy` 'error'), else a
    warning with the count and the paths, so nothing fails mid-epoch either way."""
    if not bad:
        return
    option = f"--on_bad_{medium.column}"
    listing = "; ".join(f"{path}: {reason}" for path, reason in bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    if policy == "error":
        raise HfTransferError(f"{len(bad)} unusable {medium.column} file(s) in the {split} split: {listing}; "
                              f"fix or remove them, or pass {option} skip")
    logger.warning("skipped %d unusable %s file(s) in the %s split (%s skip):", len(bad), medium.column, split, option)
    for path, reason in bad[:_LISTED_PATHS]:
        logger.warning("  skipped %s: %s", path, reason)
    if len(bad) > _LISTED_PATHS:
        logger.warning("  ... and %d more", len(bad) - _LISTED_PATHS)


def nothing_usable_error(split: str, medium: Medium, total: int, bad: list[tuple[str, str]], other: Counter | None = None):
    """The error for a split whose every file was skipped: the reasons counted (`other`: skips that are not bad files,
    such as clips too short), one example."""
    reasons = Counter(reason.split(" (")[0] for _, reason in bad)  # "truncated (details)" counts as "truncated"
    reasons.update(other or {})
    example = f" (e.g. {bad[0][0]}: {bad[0][1]})" if bad else ""
    return HfTransferError(f"the {split} split has no usable {medium.content}: all {total} {medium.item}s were skipped "
                           f"({', '.join(f'{n} {r}' for r, n in reasons.items())}){example}")


def check_every_split(data, check: Callable):
    """`check(dataset, split)` -> (checked dataset, report entries) on every split; returns (DatasetDict, report).

    The Trainer hands one collator every split: an `augment` column in the training split is how the collator tells
    training rows (cropped, augmented) from evaluation rows, and `row_number` keys each row's random draws
    (hf_transfer.data.randomness). `hf_transfer.evidence.features.embed` drops the flag, so frozen features are of the
    media as they are.
    """
    from datasets import DatasetDict

    from hf_transfer.data.randomness import flag_training_rows

    checked, report = {}, {}
    for split, dataset in data.items():
        checked[split], entries = check(dataset, split)
        report.update(entries)
    checked["train"] = flag_training_rows(checked["train"])
    return DatasetDict(checked), report
