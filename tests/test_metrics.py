"""Metrics against hand-computed values."""
import numpy as np
import pytest
from transformers import EvalPrediction

from hf_transfer.metrics.classification import compute_classification_metrics


def test_binary_metrics_match_hand_computation():
    labels = np.array([0, 0, 1, 1, 1])
    # Predictions 0, 1, 1, 1, 0 -> tp(1)=2 fp(1)=1 fn(1)=1; class 0: tp=1 fp=1 fn=1.
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 2.0], [1.0, 0.0]])
    m = compute_classification_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    assert m["accuracy"] == pytest.approx(3 / 5)
    p1, r1 = 2 / 3, 2 / 3
    p0, r0 = 1 / 2, 1 / 2
    assert m["precision"] == pytest.approx((p0 + p1) / 2)
    assert m["recall"] == pytest.approx((r0 + r1) / 2)
    assert m["f1"] == pytest.approx((2 * p0 * r0 / (p0 + r0) + 2 * p1 * r1 / (p1 + r1)) / 2)
    # AUC: P(score of a positive > score of a negative) over the 6 pairs, from softmax(logit1 - logit0).
    scores = logits[:, 1] - logits[:, 0]
    pairs = [(s1 > s0) + 0.5 * (s1 == s0) for s1 in scores[labels == 1] for s0 in scores[labels == 0]]
    assert m["roc_auc"] == pytest.approx(np.mean(pairs))


def test_multiclass_has_no_auc():
    logits = np.eye(3)[[0, 1, 2, 1]]
    m = compute_classification_metrics(EvalPrediction(predictions=logits, label_ids=np.array([0, 1, 2, 2])))
    assert m["accuracy"] == pytest.approx(0.75) and "roc_auc" not in m
