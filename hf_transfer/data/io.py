"""Data sources: the file formats read, reading local files and Hub datasets into splits, and finding columns."""
from __future__ import annotations

import csv
import json
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
