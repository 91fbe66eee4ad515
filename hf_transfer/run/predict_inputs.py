"""What `predict` reads: a table, a folder of images or clips, or lines on stdin, checked against the model's kind
before any weights load (the column it predicts from, the one it scores against, the medium of the files).

Split from `run.predict` (the run of a prediction: the model, the loop, the scores and the file it writes) so that
each reads as a unit; columns are found by the names training finds them by (`hf_transfer.data`).
"""
from __future__ import annotations

import sys
from pathlib import Path

from hf_transfer.errors import HfTransferError


def read_rows(source: str) -> list[dict]:
    """The input rows as dicts (stdin: one text per non-empty line, column `text`)."""
    if source == "-":
        return [{"text": line.rstrip("\n")} for line in sys.stdin if line.strip()]
    from hf_transfer.data.io import read_file

    return read_file(source, "input").to_list()


def folder_rows(folder: str, kind, names: list[str] | None) -> list[dict]:
    """A folder's images or clips, searched recursively, as rows: `path`, and `label` (the subfolder) when every file
    sits in a subfolder and some subfolder is named after one of the model's classes (training's folder layout)."""
    from hf_transfer.data.media import is_media_file

    root, medium, other = Path(folder), *media_of(kind.modality)

    def files(of) -> list[Path]:
        return sorted(p for p in root.rglob("*") if is_media_file(p, of)
                      and not any(part.startswith(".") for part in p.relative_to(root).parts))

    found = files(medium)
    if not found:
        others = len(files(other))
        held = f"; it holds {others} {other.column} files, which {kind.a} does not take" if others else ""
        raise HfTransferError(f"--input {folder} has no {medium.column} files ({', '.join(medium.suffixes)}){held}")
    subfolders = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in found]
    labelled = None not in subfolders and bool(set(subfolders) & set(names or ()))
    return [{"path": str(p), **({"label": sub} if labelled else {})} for p, sub in zip(found, subfolders)]


def media_of(modality: str) -> tuple:
    """(the medium of `modality`, the other medium): what a folder or a table of paths holds, and what it should not."""
    from hf_transfer.data.audio import AUDIO
    from hf_transfer.data.image import IMAGE

    return (IMAGE, AUDIO) if modality == "image" else (AUDIO, IMAGE)


def find_column(columns: list[str], asked: str | None, candidates: tuple[str, ...], option: str, besides: str | None = None):
    """The column `--option` names (one line when the input lacks it), else the first of `candidates` present
    (case-insensitive, other than `besides`), else None."""
    if asked is not None:
        if asked not in columns:
            raise HfTransferError(f"--{option} {asked} is not in --input; its columns: {', '.join(columns)}")
        return asked
    lowered = {c.lower(): c for c in columns if c != besides}
    return next((lowered[name] for name in candidates if name in lowered), None)


def read_input(args, kind, names: list[str] | None) -> tuple[list[dict], str, str | None]:
    """(rows, the column predicted from, the column scored against or None), checked against what the model takes."""
    from hf_transfer.data.labels import LABEL_COLUMNS
    from hf_transfer.data.seq2seq import SOURCE_COLUMNS, TARGET_COLUMNS
    from hf_transfer.data.text import TEXT_COLUMNS
    from hf_transfer.data.transcripts import TEXT_COLUMNS as TRANSCRIPT_COLUMNS
    from hf_transfer.run.predictors import TEXT_TO_TEXT

    source = args.input
    if kind.modality == "text":
        if Path(source).is_dir():
            raise HfTransferError(f"--input {source} is a folder; {kind.a} reads a table with a text column or "
                                  "lines of text on stdin")
        rows = read_rows(source)
    else:
        medium = media_of(kind.modality)[0]
        if source == "-":
            raise HfTransferError(f"--input - (lines of text on stdin) is for text models; {kind.a} takes a table of "
                                  f"{medium.column} paths or a folder of {medium.content}: pass --input")
        rows = folder_rows(source, kind, names) if Path(source).is_dir() else read_rows(source)
    if not rows:
        raise HfTransferError(f"--input {source} has no rows to predict")
    columns = list(rows[0])
    if kind.modality == "text":
        option, what, candidates = "text_column", "text", SOURCE_COLUMNS if kind is TEXT_TO_TEXT else TEXT_COLUMNS
    else:
        option, what, candidates = "path_column", f"{medium.column} path", medium.columns
    column = find_column(columns, getattr(args, option), candidates, option)
    if column is None:
        raise HfTransferError(f"no {what} column found in --input; its columns: {', '.join(columns)}; name it with --{option}")
    if args.text_pair_column:
        find_column(columns, args.text_pair_column, (), "text_pair_column")
    if kind.modality != "text":
        check_medium(rows, column, kind)
    references = {"predicted_label": LABEL_COLUMNS, "generated_text": TARGET_COLUMNS, "transcript": TRANSCRIPT_COLUMNS}
    return rows, column, find_column(columns, args.label_column, references[kind.output], "label_column", besides=column)


def check_medium(rows: list[dict], column: str, kind) -> None:
    """A table whose every path is a file of the other medium (images given to an audio model) is a mismatch."""
    medium, other = media_of(kind.modality)
    suffixes = {Path(v).suffix.lower() for v in (row.get(column) for row in rows) if isinstance(v, str) and v.strip()}
    if suffixes and suffixes <= set(other.suffixes) and not suffixes & set(medium.suffixes):
        raise HfTransferError(f"--input's '{column}' column lists {other.column} files; {kind.a} takes "
                              f"{medium.column} ({', '.join(medium.suffixes)})")


def usable(value, modality: str) -> bool:
    """A text, or a media reference (a path, or the {bytes, path} of a Hub row), that is not empty."""
    if isinstance(value, dict) and modality != "text":
        return bool(value.get("bytes") or value.get("path"))
    return isinstance(value, str) and bool(value.strip())


def input_items(rows: list[dict], column: str, pair_column: str | None, modality: str, source: str):
    """(what the model reads of each usable row, by row index; why each other row is skipped): a text (or a text and
    its pair), or a media path, a relative one pointing next to the table."""
    from hf_transfer.data.media import resolve_media_path

    table_folder = Path(source).resolve().parent if Path(source).is_file() else None
    items, reasons = {}, {}
    for i, row in enumerate(rows):
        missing = next((c for c in (column, pair_column) if c and not usable(row.get(c), modality)), None)
        if missing is not None:
            reasons[i] = f"no {'text' if modality == 'text' else 'path'} in '{missing}'"
        elif modality != "text":
            items[i] = resolve_media_path(row[column], table_folder) if table_folder else row[column]
        else:
            items[i] = (row[column], row[pair_column]) if pair_column else row[column]
    return items, reasons
