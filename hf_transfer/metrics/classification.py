"""Classification metrics computed with scikit-learn, so they work with no Hub access.

`evaluate.load("accuracy")` fetches its script from the Hub (it fails offline) and `import evaluate`
costs seconds; the metrics it would give wrap these same scikit-learn functions.
"""
from __future__ import annotations

import numpy as np
from scipy.special import softmax
from sklearn.metrics import (
    accuracy_score,
    precision_recall_fscore_support,
    roc_auc_score,
)


def classification_scores(labels: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray | None = None) -> dict:
    """accuracy, macro precision/recall/F1, and ROC AUC for binary tasks (when both classes occur)."""
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, average="macro", zero_division=0)
    scores = {"accuracy": float(accuracy_score(labels, predictions)), "f1": float(f1), "precision": float(precision), "recall": float(recall)}
    if probabilities is not None and probabilities.shape[1] == 2 and len(np.unique(labels)) == 2:
        scores["roc_auc"] = float(roc_auc_score(labels, probabilities[:, 1]))
    return scores


def compute_classification_metrics(eval_prediction) -> dict:
    """`compute_metrics` for the Trainer: logits in, scores out."""
    logits = eval_prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    labels = eval_prediction.label_ids
    return classification_scores(labels, logits.argmax(-1), softmax(logits.astype(np.float64), axis=-1))



