"""Data sources: the file formats read, reading local files and Hub datasets into splits, and finding columns."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from hf_transfer.errors import HfTransferError

# File suffix -> the `datasets` builder that reads it.
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}
SPLITS = ("train", "validation", "test")


def check_files(options: dict[str, str | None]) -> None:
    """Each given `--option path` exists and has a format the loader reads."""
    for option, path in options.items():
        if path is None:
            continue
        if not Path(path).is_file():
            raise HfTransferError(f"--{option} {path} does not exist")
        if Path(path).suffix.lower() not in FILE_BUILDERS:
            raise HfTransferError(f"--{option} {path}: unsupported format; use {', '.join(FILE_BUILDERS)}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


_JSONL_FIX = 'each line must be one JSON object such as {"text": "...", "label": "..."}: fix or remove that line'


def _bad_json_line(path: str) -> str | None:
    """Where a JSON or JSON-lines file stops parsing, and the fix ("line 3 is not valid JSON (...); ..."), or None.

    Called only after `datasets` failed, so the extra read costs nothing on the good path; the scan stops at
    the first bad line. A .json file may hold one document or JSON lines (`datasets` reads both).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return f"it is not UTF-8 text ({_first_line(error)}); save it as UTF-8"
    if Path(path).suffix.lower() == ".json":
        try:
            json.loads(text)
            return None
        except json.JSONDecodeError as whole:
            first = next((line for line in text.splitlines() if line.strip()), "")
            try:
                json.loads(first)
            except json.JSONDecodeError:
                # Not JSON lines either: one document, broken where the decoder says.
                return f"line {whole.lineno} is not valid JSON ({whole.msg}); fix it, or write one JSON object per line"
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines are skipped by the JSON-lines reader
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            return f"line {number} is not valid JSON ({error.msg}); {_JSONL_FIX}"
        if not isinstance(row, dict):
            return f"line {number} is a JSON {type(row).__name__}, not an object; {_JSONL_FIX}"
    return None


def read_file(path: str, split: str):
    """One local file as a `datasets.Dataset`; an unreadable or empty file is a one-line error naming it."""
    from datasets import load_dataset

    suffix = Path(path).suffix.lower()
    kwargs = {}
    if suffix == ".tsv":
        # Quotes are text in TSV corpora such as GLUE: never treat them as field quoting.
        kwargs = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    try:
        return load_dataset(FILE_BUILDERS[suffix], data_files=path, split="train", **kwargs)
    except Exception as error:  # datasets raises many types (ValueError, ArrowInvalid, DatasetGenerationError) for bad files
        message = _first_line(error)
        if "corresponds to no data" in message or Path(path).stat().st_size == 0:
            raise HfTransferError(f"the {split} split is empty ({path} has no rows); give it at least one labelled row") from error
        if suffix in (".json", ".jsonl"):
            where = _bad_json_line(path)
            if where:
                raise HfTransferError(f"cannot read {path}: {where}") from error
        cause = error.__cause__ or error.__context__  # DatasetGenerationError hides the parser's message here
        detail = f"{message} ({_first_line(cause)})" if cause is not None and "error occurred" in message else message
        raise HfTransferError(f"cannot read {path}: {detail}") from error


def read_splits(dataset_name: str | None, dataset_config_name: str | None, files: dict[str, str | None]):
    """Raw splits as a DatasetDict (train, validation?, test?) from the Hub or local files, unprocessed."""
    from datasets import DatasetDict, load_dataset

    if dataset_name:
        try:
            raw = load_dataset(dataset_name, dataset_config_name)
        except Exception as error:  # datasets and the Hub client raise many types
            raise HfTransferError(f"cannot load dataset '{dataset_name}': {_first_line(error)}") from error
        if "train" not in raw:
            raise HfTransferError(f"dataset '{dataset_name}' has no 'train' split (it has: {', '.join(raw)})")
        if "validation" not in raw and "valid" in raw:
            raw["validation"] = raw.pop("valid")
        return DatasetDict({k: v for k, v in raw.items() if k in SPLITS})
    return DatasetDict({split: read_file(path, split) for split, path in files.items() if path})


def check_not_empty(data, what: str = "row") -> None:
    """Every split has at least one row (a Hub split or a header-only file can be empty)."""
    for split, dataset in data.items():
        if len(dataset) == 0:
            raise HfTransferError(f"the {split} split is empty; give it at least one {what}")


def pick_column(columns: list[str], asked: str | None, candidates: tuple[str, ...], option: str, what: str) -> str:
    """The column named with `--option`, else the first of `candidates` present (case-insensitive)."""
    if asked is not None:
        if asked not in columns:
            raise HfTransferError(f"{what} column '{asked}' not found; the data has columns: {', '.join(columns)}")
        return asked
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    raise HfTransferError(f"no {what} column found among: {', '.join(columns)}; name it with --{option}")


def require_columns(data, needed: list[str | None]) -> None:
    """Every split has every needed column (columns are found on train; the other splits must match it)."""
    needed = [c for c in needed if c]
    for split, dataset in data.items():
        missing = [c for c in needed if c not in dataset.column_names]
        if missing:
            raise HfTransferError(
                f"the {split} split has no column {', '.join(missing)}; its columns are: {', '.join(dataset.column_names)}"
            )


# --- media referenced by rows (audio clips, images): a path, or the bytes a Hub dataset embeds ---
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


def check_media_sources(args, noun: str) -> None:
    """The source options of a media task (a Hub dataset, or per split a table `--<split>_file` or a folder per label
    `--<split>_dir`): empty values unset, contradictions and missing paths one line each. `noun`: "clips", "images"."""
    for split in SPLITS:  # an empty value (`--validation_file ""`) unsets a path a config file gave
        for kind in ("file", "dir"):
            if getattr(args, f"{split}_{kind}") == "":
                setattr(args, f"{split}_{kind}", None)
    local = [o for o in ("train_file", "train_dir") if getattr(args, o)]
    if args.dataset_name and local:
        raise HfTransferError(f"give either --dataset_name or --{local[0]}, not both")
    if len(local) > 1:
        raise HfTransferError("give either --train_file or --train_dir, not both")
    for split in SPLITS:
        file, folder = getattr(args, f"{split}_file"), getattr(args, f"{split}_dir")
        if file and folder:
            raise HfTransferError(f"give either --{split}_file or --{split}_dir, not both")
        if (file or folder) and args.dataset_name:
            raise HfTransferError(f"--{split}_{'file' if file else 'dir'} cannot be combined with --dataset_name")
        check_files({f"{split}_file": file})
        if folder and not Path(folder).is_dir():
            raise HfTransferError(f"--{split}_dir {folder} does not exist (a folder with one subfolder of {noun} per label)")
    if (args.validation_file or args.validation_dir or args.test_file or args.test_dir) and not local:
        raise HfTransferError("--validation_*/--test_* need --train_file or --train_dir")


def media_splits(raw: dict, args, *, media: str, feature: type, media_columns: tuple[str, ...], target: str | None,
                 target_columns: tuple[str, ...], target_option: str, target_what: str, folders_give: str | None):
    """Each raw split of a media task (audio clips, images) as two columns: `media` (a path, or a typed Hub feature's
    {bytes, path}, left undecoded: the collator decodes) and `target` (the label or transcript).

    The media column is `--<media>_column`, else the first column of the `feature` type (datasets' Audio, Image), else
    the first of `media_columns`; `target`/`target_columns`/`target_option`/`target_what` name the target column as in
    `pick_column`, and a folder-per-label split gives it as `folders_give`. Relative paths in a table point next to
    the table, wherever the command runs from."""
    from datasets import DatasetDict

    prepared = {}
    for split, dataset in raw.items():
        asked = getattr(args, f"{media}_column")
        typed = [name for name, kind in dataset.features.items() if isinstance(kind, feature)]
        media_col = typed[0] if asked is None and typed else pick_column(
            dataset.column_names, asked, media_columns, f"{media}_column", media)
        target_col = folders_give if getattr(args, f"{split}_dir", None) else target
        target_col = pick_column(dataset.column_names, target_col, target_columns, target_option, target_what)
        dataset = dataset.select_columns([media_col, target_col])
        if isinstance(dataset.features[media_col], feature):
            dataset = dataset.cast_column(media_col, feature(decode=False))
        elif getattr(args, f"{split}_file", None):
            dataset = _resolve_paths(dataset, media_col, getattr(args, f"{split}_file"))
        renames = {media_col: media, target_col: "target"}
        prepared[split] = dataset.rename_columns({k: v for k, v in renames.items() if k != v})
    return DatasetDict(prepared)


def _resolve_paths(dataset, column: str, table: str):
    base = Path(table).resolve().parent

    def resolve(value):
        if not isinstance(value, str) or not value:
            return value
        path = Path(value).expanduser()
        # normpath: "tables/../images/a.png" is logged as the file's own path when it is skipped.
        return os.path.normpath(path if path.is_absolute() else base / path)

    return dataset.remove_columns(column).add_column(column, [resolve(v) for v in dataset[column]])



