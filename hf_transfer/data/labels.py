"""Label sets and label ids: which names a data set's labels have, their order, and each row's id; or, for a
regression target, each row's number."""
from __future__ import annotations

import math

from hf_transfer.errors import HfTransferError

# Common names of a label column, found when --label_column is not given (every modality).
LABEL_COLUMNS = ("label", "labels", "sentiment", "class", "target", "category")
TASK_TYPES = ("auto", "classification", "regression")  # --task_type of the text recipes
_LISTED_LABELS = 10  # labels outside the set named in the error; beyond this only counted


class LabelMaps:
    """id2label/label2id from a `label_names` list, for the labelled data classes of every modality."""

    label_names: list[str]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}


def label_key(value) -> str:
    """A label value as its name: "positive", 3 -> "3"; surrounding spaces are not part of a label."""
    return str(value).strip()


def _missing(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sorted_names(values) -> list[str]:
    """Training values in order: numerically when all are numbers (2 before 10), else as text."""
    values = set(values)
    numeric = all(_is_number(v) for v in values)
    return list(dict.fromkeys(label_key(v) for v in sorted(values, key=float if numeric else label_key)))


def label_names(feature, train_values: list, class_names: list[str] | None) -> list[str]:
    """The label set in id order: declared names > the dataset's ClassLabel names > sorted training values."""
    from datasets import ClassLabel

    if class_names:
        names = [label_key(n) for n in class_names]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise HfTransferError(f"--class_names repeats {', '.join(repeated)}; name each label once, in id order")
        return names
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    return _sorted_names(v for v in train_values if not _missing(v))


def _to_ids(values: list, feature, names: list[str], class_names: list[str] | None) -> tuple[list[int], list[str]]:
    """Each value's id in `names` (-1 when outside it), and the values as names for error messages."""
    from datasets import ClassLabel

    label2id = {name: i for i, name in enumerate(names)}
    if isinstance(feature, ClassLabel):
        # ClassLabel ids are ids; but when the declared names are the dataset's own in another order, the user
        # means those names, so map by name rather than silently swap classes.
        if class_names and set(feature.names) == set(names) and list(feature.names) != names:
            remap = [label2id[n] for n in feature.names]
            return [remap[v] for v in values], [feature.names[v] for v in values]
        shown = [feature.names[v] if 0 <= v < len(feature.names) else str(v) for v in values]
        return [v if 0 <= v < len(names) else -1 for v in values], shown
    if class_names and str(getattr(feature, "dtype", "")).startswith(("int", "uint")):
        # Integer labels with declared names (SST-2's 0/1 with --class_names negative positive) are ids already.
        return [v if 0 <= v < len(names) else -1 for v in values], [label_key(v) for v in values]
    shown = [label_key(v) for v in values]
    return [label2id.get(s, -1) for s in shown], shown


def encode_labels(raw, column: str, class_names: list[str] | None, what: str = "row"):
    """Replace `column` with a ClassLabel column `labels` in every split; returns (data, label names).

    Names come from `class_names` (declared, in id order), else the dataset's ClassLabel, else the sorted
    training values. Errors, one line each: fewer than two labels, rows with no label, labels outside the set.
    """
    from datasets import ClassLabel, DatasetDict

    columns = {split: list(dataset[column]) for split, dataset in raw.items()}  # datasets 5 gives lazy Columns; read once
    for split, values in columns.items():
        missing = sum(_missing(v) for v in values)
        if missing:
            # The column is not named: audio has renamed it to `target` by now, which the user never wrote.
            raise HfTransferError(f"{missing} {what}s of the {split} split have no label; fill or remove them")
    feature = raw["train"].features[column]
    names = label_names(feature, columns["train"], class_names)
    if len(names) < 2:
        raise HfTransferError(
            f"need at least two labels, found {names} in the train split; add {what}s of another label "
            "or declare the label set with --class_names"
        )

    encoded = {}
    for split, dataset in raw.items():
        ids, shown = _to_ids(columns[split], feature, names, class_names)
        unknown = sorted({s for s, i in zip(shown, ids) if i < 0})
        if unknown:
            more = f" and {len(unknown) - _LISTED_LABELS} more" if len(unknown) > _LISTED_LABELS else ""
            raise HfTransferError(
                f"the {split} split has labels outside the label set {names}: {unknown[:_LISTED_LABELS]}{more}; "
                "declare every label with --class_names or fix the data"
            )
        # Added under a free name before the label column goes (a table of labels alone would have no rows left
        # to add to); a stray `labels` column would clash with the one made here, so the label column replaces it.
        staged = "labels" + "_" * (1 + max(len(c) for c in dataset.column_names))
        dataset = dataset.add_column(staged, ids)
        dataset = dataset.remove_columns([c for c in (column, "labels") if c in dataset.column_names])
        encoded[split] = dataset.rename_column(staged, "labels").cast_column("labels", ClassLabel(names=names))
    return DatasetDict(encoded), names





def looks_like_regression(feature, train_values: list) -> bool:
    """--task_type auto's rule: a regression target when every training label is a number and at least one has a
    fractional part (0.75, 3.5). Integer scores (ratings 1-10), text and a ClassLabel feature stay classes: a rating
    scale is as often a set of classes as a number."""
    from datasets import ClassLabel

    if isinstance(feature, ClassLabel):
        return False
    present = [v for v in train_values if not _missing(v)]
    numeric = bool(present) and all(_is_number(v) and math.isfinite(v) for v in present)
    return numeric and any(not float(v).is_integer() for v in present)


def _as_target(value) -> float | None:
    """A regression target as a float: a finite number, or text that reads as one ("3.5"); else None."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not _is_number(value) or not math.isfinite(value):
        return None
    return float(value)


def encode_targets(raw, column: str, what: str = "row"):
    """Replace `column` with a float32 column `labels` in every split: the regression targets.

    Errors, one line each: rows with no target, and the first row whose target is not a finite number (named by its
    position in the split, counting data rows from 1).
    """
    from datasets import DatasetDict, Value

    encoded = {}
    for split, dataset in raw.items():
        values = list(dataset[column])
        missing = sum(_missing(v) for v in values)
        if missing:
            raise HfTransferError(f"{missing} {what}s of the {split} split have no target value; fill or remove them")
        targets = [_as_target(v) for v in values]
        bad = next((i for i, t in enumerate(targets) if t is None), None)
        if bad is not None:
            raise HfTransferError(
                f"{what} {bad + 1} of the {split} split has the target {values[bad]!r} in '{column}', not a number; "
                "a regression target needs a finite number in every row: fix or remove it"
            )
        staged = "labels" + "_" * (1 + max(len(c) for c in dataset.column_names))  # as in encode_labels
        dataset = dataset.add_column(staged, targets)
        dataset = dataset.remove_columns([c for c in (column, "labels") if c in dataset.column_names])
        encoded[split] = dataset.rename_column(staged, "labels").cast_column("labels", Value("float32"))
    return DatasetDict(encoded)
