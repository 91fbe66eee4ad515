"""Sentence pairs for contrastive few-shot training (SetFit's first phase): labelled rows paired as similar (same label)
or dissimilar (different labels), and the collator that batches both sides of every pair.

A pair is two row indices into the tokenised training split and a target similarity (1 similar, 0 dissimilar); the
rows themselves stay in that split, so the pair set costs three numbers a pair whatever the texts' length.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from hf_transfer.errors import HfTransferError

SIMILAR, DISSIMILAR = 1.0, 0.0
# Columns of a pair dataset: the first and second row of each pair, and its target similarity.
FIRST, SECOND, SIMILARITY = "first", "second", "similarity"
PAIR_COLUMNS = (FIRST, SECOND, SIMILARITY)
SECOND_PREFIX = "second_"  # batch keys of the second sides' inputs (second_input_ids, ...)


def check_pairable(labels, label_names: list[str] | None = None) -> None:
    """Refuse a training set that cannot give both kinds of pair: a label with one example has no similar partner,
    and a set with one label has no dissimilar one."""
    counts = Counter(int(label) for label in labels)
    name = (lambda label: label_names[label]) if label_names else str
    if len(counts) < 2:
        only = name(next(iter(counts))) if counts else "none"
        raise HfTransferError(f"contrastive pairs need examples of at least two labels; the training data has one "
                              f"({only}): add examples of the other labels or drop --contrastive_pairs_per_example")
    single = sorted(name(label) for label, n in counts.items() if n == 1)
    if single:
        raise HfTransferError(f"label(s) {', '.join(single)} have a single training example, so no similar pair can be "
                              "built for them; give every label at least two examples (--max_train_samples_per_class 2 "
                              "or more) or drop --contrastive_pairs_per_example")


def contrastive_pairs(labels, pairs_per_example: int, seed: int,
                      label_names: list[str] | None = None) -> list[tuple[int, int, float]]:
    """(first row, second row, similarity) for every pair, in a shuffled order: each row anchors `pairs_per_example`
    pairs, half with other rows of its label (similar) and half with rows of any other label (dissimilar).

    Balanced by construction (as many similar as dissimilar pairs, and as many pairs per row, whatever the class
    sizes) and a function of (labels, pairs_per_example, seed) alone. A row's partners of each kind are a shuffled
    list of its candidates, taken in turn and started again when they run out, so no partner repeats before every
    candidate has been used once. Several labels work alike: a row's dissimilar candidates are the rows of all the
    other labels.
    """
    if pairs_per_example < 2 or pairs_per_example % 2:
        raise HfTransferError(f"--contrastive_pairs_per_example must be an even number of at least 2 (half similar, half "
                              f"dissimilar pairs), got {pairs_per_example}")
    labels = np.asarray([int(label) for label in labels])
    check_pairable(labels, label_names)
    rng = np.random.default_rng(seed)
    half = pairs_per_example // 2
    rows = np.arange(len(labels))
    pairs: list[tuple[int, int, float]] = []
    for anchor in rows:
        same = rows[(labels == labels[anchor]) & (rows != anchor)]
        other = rows[labels != labels[anchor]]
        for candidates, similarity in ((same, SIMILAR), (other, DISSIMILAR)):
            partners = np.resize(rng.permutation(candidates), half)  # a cycle through the shuffled candidates
            pairs += [(int(anchor), int(partner), similarity) for partner in partners]
    order = rng.permutation(len(pairs))
    return [pairs[i] for i in order]


def pair_dataset(pairs: list[tuple[int, int, float]]):
    """The pairs as a `datasets.Dataset` with the columns `first`, `second` and `similarity`."""
    from datasets import Dataset

    first, second, similarity = zip(*pairs) if pairs else ((), (), ())
    return Dataset.from_dict({FIRST: list(first), SECOND: list(second), SIMILARITY: [float(s) for s in similarity]})


class PairCollator:
    """A batch of pairs as two padded batches, the first sides under the model's input names and the second sides
    under `second_<name>`, with a `similarity` tensor. Each side is padded to its own longest row, as SetFit pads its
    two columns (one batch padded to the longest of both sides cost 8-10% more tokens on SST-2 and CR). Rows that are
    not pairs (evaluation) are padded as they are.
    """

    def __init__(self, padding_collator, rows) -> None:
        self.pad = padding_collator
        # The tokenised rows without their labels (a pair's target is its similarity), by index.
        self.rows = [{k: v for k, v in row.items() if k != "labels"} for row in rows.to_list()]

    def __call__(self, features: list[dict]):
        import torch

        if FIRST not in features[0]:
            return self.pad(features)
        batch = dict(self.pad([self.rows[int(f[FIRST])] for f in features]))
        second = self.pad([self.rows[int(f[SECOND])] for f in features])
        batch.update({SECOND_PREFIX + key: value for key, value in second.items()})
        batch[SIMILARITY] = torch.tensor([float(f[SIMILARITY]) for f in features], dtype=torch.float32)
        return batch
