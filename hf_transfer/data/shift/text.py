"""Text conditions: pure functions of (string; strength in (0, 1]; numpy Generator), written here (no library in the
install does them): typos (swapped, dropped, inserted letters and keyboard neighbours), casing, punctuation,
whitespace and word dropout. A text never comes out empty: a change that would leave nothing is not made.
"""
from __future__ import annotations

import re

import numpy as np

from hf_transfer.data.shift.transform import Transform, registry

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    """Each letter's neighbours on a QWERTY keyboard: left and right, and the keys touching it in the rows above and
    below (rows are staggered by about half a key)."""
    position = {c: (r, i) for r, row in enumerate(_ROWS) for i, c in enumerate(row)}
    neighbours = {}
    for c, (r, i) in position.items():
        near = []
        for other, (r2, i2) in position.items():
            if other == c:
                continue
            if (r2 == r and abs(i2 - i) == 1) or (r2 == r - 1 and i2 in (i, i + 1)) or (r2 == r + 1 and i2 in (i - 1, i)):
                near.append(other)
        neighbours[c] = "".join(sorted(near))
    return neighbours


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()
TYPO_KINDS = ("swap", "drop", "insert", "keyboard")


def _neighbour(letter: str, rng: np.random.Generator) -> str:
    near = KEYBOARD_NEIGHBOURS.get(letter.lower())
    if not near:
        return letter
    new = near[int(rng.integers(len(near)))]
    return new.upper() if letter.isupper() else new


def _typo_rate(strength: float) -> float:
    return 0.15 * strength  # the share of letters hit: up to about one in seven


def typos(text: str, strength: float, rng: np.random.Generator, kinds: tuple[str, ...] = TYPO_KINDS) -> str:
    """Walk the letters; each is hit with probability rate and gets one of `kinds` (drawn uniformly): swapped with the
    next letter, dropped, doubled by a neighbouring key pressed with it, or replaced by a neighbouring key."""
    rate = _typo_rate(strength)
    chars, out, i = list(text), [], 0
    while i < len(chars):
        c = chars[i]
        if not c.isalpha() or rng.random() >= rate:
            out.append(c)
            i += 1
            continue
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "swap" and i + 1 < len(chars) and chars[i + 1].isalpha():
            out += [chars[i + 1], c]
            i += 2
            continue
        if kind == "insert":
            out += [c, _neighbour(c, rng)] if rng.random() < 0.5 else [_neighbour(c, rng), c]
        elif kind == "keyboard":
            out.append(_neighbour(c, rng))
        elif kind != "drop":
            out.append(c)  # a swap at a word's last letter: nothing to swap with
        i += 1
    return _kept("".join(out), text)


def _kept(new: str, old: str) -> str:
    return new if new.strip() else old


def casing(text: str, strength: float, rng: np.random.Generator) -> str:
    def recase(match):
        if rng.random() >= strength:
            return match.group(0)
        word = match.group(0)
        return (word.upper(), word.lower(), word.capitalize())[int(rng.integers(3))]

    return re.sub(r"\w+", recase, text)


_PUNCTUATION = re.compile(r"[^\w\s]")


def punctuation(text: str, strength: float, rng: np.random.Generator) -> str:
    # Each mark is dropped (two in three) or repeated ("!!"), with probability `strength`.
    def change(match):
        if rng.random() >= strength:
            return match.group(0)
        return "" if rng.random() < 2 / 3 else match.group(0) * 2

    return _kept(_PUNCTUATION.sub(change, text), text)


def _whitespace_rate(strength: float) -> float:
    return 0.3 * strength


def whitespace(text: str, strength: float, rng: np.random.Generator) -> str:
    # Each space is dropped (words run together) or doubled, each with half the rate.
    rate = _whitespace_rate(strength)

    def change(match):
        u = rng.random()
        if u < rate / 2:
            return ""
        return match.group(0) * 2 if u < rate else match.group(0)

    return _kept(re.sub(r" ", change, text), text)


def _dropout_rate(strength: float) -> float:
    return 0.3 * strength


def word_dropout(text: str, strength: float, rng: np.random.Generator) -> str:
    words = text.split(" ")
    kept = [w for w in words if rng.random() >= _dropout_rate(strength)]
    return _kept(" ".join(kept), text)


def _typo(kinds: tuple[str, ...]):
    return lambda text, strength, rng: typos(text, strength, rng, kinds)


_LETTERS = lambda s: f"{_typo_rate(s):.1%} of letters"  # noqa: E731 - one line of docs per transform

TRANSFORMS = registry(
    Transform("typos", "text", _typo(TYPO_KINDS), _LETTERS,
              "typing errors: swapped, dropped, inserted letters and keyboard neighbours"),
    Transform("char_swap", "text", _typo(("swap",)), _LETTERS, "two letters swapped"),
    Transform("char_drop", "text", _typo(("drop",)), _LETTERS, "letters dropped"),
    Transform("char_insert", "text", _typo(("insert",)), _LETTERS, "a neighbouring key pressed too"),
    Transform("keyboard", "text", _typo(("keyboard",)), _LETTERS, "a neighbouring key pressed instead"),
    Transform("casing", "text", casing, lambda s: f"{s:.0%} of words re-cased", "words in UPPER, lower or Title case at random"),
    Transform("punctuation", "text", punctuation, lambda s: f"{s:.0%} of marks dropped or doubled",
              "missing or doubled punctuation"),
    Transform("whitespace", "text", whitespace, lambda s: f"{_whitespace_rate(s):.0%} of spaces dropped or doubled",
              "words run together or spread apart"),
    Transform("word_dropout", "text", word_dropout, lambda s: f"{_dropout_rate(s):.0%} of words dropped", "missing words"),
)
