"""Held-out validation and subsets: a validation split cut from train when none is given, and the --max_* subsets."""
from __future__ import annotations

import logging
import math
from collections import Counter

from hf_transfer.errors import HfTransferError

logger = logging.getLogger(__name__)


def _why_not_stratified(dataset, n_train: int, n_test: int, what: str) -> str | None:
    """Why `dataset` cannot be split stratified by `labels` into these sizes, or None when it can.

    The same conditions `datasets`' stratified split checks (it raises a ValueError with a traceback's worth
    of context), tested here first so the fallback can say why.
    """
    from datasets import ClassLabel

    feature = dataset.features.get("labels")
    if not isinstance(feature, ClassLabel):
        return "the data has no ClassLabel 'labels' column"
    counts = Counter(list(dataset["labels"]))
    rarest, fewest = min(counts.items(), key=lambda item: item[1])
    if fewest < 2:
        return f"label '{feature.int2str(rarest)}' has only {fewest} {what}"
    if n_test < len(counts):
        return f"the held-out share ({n_test} {what}s) is smaller than the number of labels ({len(counts)})"
    if n_train < len(counts):
        return f"the {what}s left for training ({n_train}) are fewer than the labels ({len(counts)})"
    return None


def warn_rare_labels(train, what: str = "row") -> None:
    """One line naming the labels with a single training example: a class the model sees once is barely learnt, and a
    given validation split hides that (with none, the hold-out's stratification says so)."""
    from datasets import ClassLabel

    feature = train.features.get("labels")
    if not isinstance(feature, ClassLabel):
        return
    single = sorted(feature.int2str(label) for label, n in Counter(list(train["labels"])).items() if n == 1)
    if single:
        logger.warning("label(s) with a single training %s: %s; the model sees each once an epoch: add examples",
                       what, ", ".join(single[:10]) + (f" and {len(single) - 10} more" if len(single) > 10 else ""))


def hold_out_validation(data, percentage: int, seed: int, stratify: bool = True, what: str = "row"):
    """`data` with a validation split: `percentage`% of train held out, stratified by `labels` when asked.

    A split that already has validation is returned as it is. When a label is too rare to stratify, the
    hold-out is random instead, with a warning saying why (a few-row file is a valid smoke test).
    """
    if "validation" in data:
        warn_rare_labels(data["train"], what)
        return data
    train = data["train"]
    # `datasets` rounds the held-out share up and the rest down; at least one row must be left on each side.
    n_test = math.ceil(len(train) * percentage / 100)
    n_train = len(train) - n_test
    if n_test < 1 or n_train < 1:
        raise HfTransferError(
            f"the train split has {len(train)} {what}(s), too few to hold out {percentage}% as validation; "
            f"give a validation split (--validation_file) or more training {what}s"
        )
    reason = _why_not_stratified(train, n_train, n_test, what) if stratify else None
    if reason:
        logger.warning("validation split held out at random, not stratified by label: %s", reason)
    held_out = train.train_test_split(
        test_size=n_test, seed=seed, stratify_by_column="labels" if stratify and not reason else None
    )
    data["train"], data["validation"] = held_out["train"], held_out["test"]
    return data


def per_class_subset(dataset, per_class: int, seed: int):
    """A random subset with at most `per_class` rows of each label, in a shuffled order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.asarray(list(dataset["labels"]))
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)])
    return dataset.select(rng.permutation(chosen).tolist())


def _check_at_least_one(**limits: int | None) -> None:
    for option, value in limits.items():
        if value is not None and value < 1:
            raise HfTransferError(f"--{option} must be at least 1, got {value}")


def subsample(
    data,
    seed: int,
    max_train_samples: int | None = None,
    max_train_samples_per_class: int | None = None,
    max_eval_samples: int | None = None,
    eval_splits: tuple[str, ...] = ("validation", "test", "source"),
):
    """The --max_* subsets: train a random subset (of N rows, or of at most N per label), each eval split its first N."""
    _check_at_least_one(
        max_train_samples=max_train_samples, max_train_samples_per_class=max_train_samples_per_class,
        max_eval_samples=max_eval_samples,
    )
    if max_train_samples is not None and max_train_samples_per_class is not None:
        raise HfTransferError("give --max_train_samples or --max_train_samples_per_class, not both")
    if max_train_samples is not None and max_train_samples < len(data["train"]):
        data["train"] = data["train"].shuffle(seed=seed).select(range(max_train_samples))
    if max_train_samples_per_class is not None:
        if "labels" not in data["train"].column_names:
            raise HfTransferError("--max_train_samples_per_class needs labelled data; use --max_train_samples")
        data["train"] = per_class_subset(data["train"], max_train_samples_per_class, seed)
    if max_eval_samples is not None:
        # The first N, not a random N: the same rows whatever the seed, so runs compare on one set.
        for split in eval_splits:
            if split in data and max_eval_samples < len(data[split]):
                data[split] = data[split].select(range(max_eval_samples))
    return data



