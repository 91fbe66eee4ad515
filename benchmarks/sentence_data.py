"""The sentence data sets the benchmarks share, read in place from ../shared/data: SST-2, CR, MPQA and TREC as
(text, label) rows, the fixed CR held-out split, and JSON Lines files of rows that the recipes read.

CR and MPQA come as one file per polarity with no official split. CR's held-out set is drawn once (stratified, seed 0,
20% of each label: 754 sentences) and every benchmark that scores CR scores on it, so their numbers are comparable.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import paths

POLARITY = ("negative", "positive")
SENTENCES = paths.DATA / "sentence_tasks"
CR_HELD_OUT = 0.2  # share of each CR label held out, once, with seed 0


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    """`rows` as {"text", "label"} lines, written whole (a temporary file renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows))
    os.replace(tmp, path)
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def sst2(split: str) -> list[tuple[str, str]]:
    """SST-2's `train` (67,349) or `dev` (872) sentences. GLUE's tsv has no quoting: quotes are text."""
    with open(paths.DATA / "sst2" / f"{split}.tsv", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [(row[0], POLARITY[int(row[1])]) for row in rows]


def _polarity_lines(stem: str) -> dict[str, list[str]]:
    return {label: [line.strip() for line in (SENTENCES / f"{stem}.{suffix}").read_text().splitlines() if line.strip()]
            for label, suffix in (("positive", "pos"), ("negative", "neg"))}


def cr_split() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """CR's (pool, held-out): the 3,771 non-empty sentences split once, stratified with seed 0, 20% of each label held out."""
    import numpy as np

    rng = np.random.default_rng(0)
    pool, held_out = [], []
    for label, lines in _polarity_lines("custrev").items():
        order = rng.permutation(len(lines))
        cut = round(CR_HELD_OUT * len(lines))
        held_out += [(lines[i], label) for i in order[:cut]]
        pool += [(lines[i], label) for i in order[cut:]]
    return pool, held_out


def mpqa() -> list[tuple[str, str]]:
    """MPQA's 10,606 opinion phrases (mostly 1-3 words), positive then negative."""
    return [(line, label) for label, lines in _polarity_lines("mpqa").items() for line in lines]


def trec(split: str) -> list[tuple[str, str]]:
    """TREC's `train` (5,452) or `test` (500) questions with their coarse type (ABBR, DESC, ENTY, HUM, LOC, NUM).
    TREC.train is Latin-1, not UTF-8."""
    rows = []
    for line in (SENTENCES / f"TREC.{split}").read_text(encoding="latin-1").splitlines():
        if line.strip():
            label, question = line.split(" ", 1)
            rows.append((question.strip(), label.split(":")[0]))
    return rows
