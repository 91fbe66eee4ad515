"""Choosing a method or a weight without target labels: criteria that read the source's labels and the target's text
only, so that a user without target labels can rank runs, and a benchmark with them can say how far each
criterion's choice falls from the choice the target labels would make.

- Source validation accuracy: the Trainer's own score of the source's held-out rows (nothing here).
- Target prediction entropy: the mean entropy of the model's predicted class distributions on target rows (lower:
  more confident on the target; the minimal-entropy criterion of Morerio et al. 2018). A model can be confidently
  wrong, so it rewards collapse as much as adaptation; read it beside the others.
- Importance-weighted validation risk (IWV, Sugiyama et al. 2007): the source validation rows' losses, each weighted
  by how target-like the row is, the density ratio p_target(x) / p_source(x) estimated with a domain classifier on the
  model's own features; and its deep-embedded-validation form (DEV, You et al. 2019), the same mean with a control
  variate that lowers its variance. Both estimate the target risk under the assumption that only p(x) differs.
"""
from __future__ import annotations

import numpy as np
from scipy.special import log_softmax


def prediction_entropy(logits: np.ndarray) -> float:
    """The mean entropy (nats) of softmax(logits) over the rows."""
    log_p = log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    return float(-(np.exp(log_p) * log_p).sum(-1).mean())


def row_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's cross-entropy."""
    log_p = log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    return -log_p[np.arange(len(labels)), np.asarray(labels)]


def density_ratio(source: np.ndarray, target: np.ndarray, seed: int = 42, folds: int = 2) -> np.ndarray:
    """p_target(x) / p_source(x) at each source row, from a domain classifier (logistic regression on standardised
    features): (n_source / n_target) p(target | x) / p(source | x). Cross-fitted: each source row's probability comes
    from a classifier that did not see it. Probabilities are clipped to [0.001, 0.999]."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([source, target])
    y = np.concatenate([np.zeros(len(source), dtype=int), np.ones(len(target), dtype=int)])
    p_target = np.empty(len(x))
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
        p_target[held] = classifier.fit(x[train], y[train]).predict_proba(x[held])[:, 1]
    p = np.clip(p_target[: len(source)], 1e-3, 1 - 1e-3)
    return len(source) / len(target) * p / (1 - p)


def importance_weighted_risk(losses: np.ndarray, weights: np.ndarray) -> float:
    """IWV: the mean of weight x loss."""
    return float(np.mean(np.asarray(weights) * np.asarray(losses)))


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
    """DEV (You et al. 2019): mean(w l) + eta mean(w) - eta, eta = -Cov(w l, w) / Var(w) (the weights' mean is 1 in
    expectation, so the control variate leaves the estimate unbiased and lowers its variance)."""
    weighted, weights = np.asarray(weights) * np.asarray(losses), np.asarray(weights)
    variance = np.var(weights, ddof=1)
    eta = 0.0 if variance == 0 else -np.cov(weighted, weights, ddof=1)[0, 1] / variance
    return float(weighted.mean() + eta * weights.mean() - eta)


def label_free_scores(validation: tuple[np.ndarray, np.ndarray, np.ndarray], target: tuple[np.ndarray, np.ndarray],
                      seed: int = 42) -> dict:
    """The criteria from the source validation rows' (features, logits, labels) and the target rows' (features,
    logits): `target_prediction_entropy`, `iwv_risk`, `dev_risk` (lower is better for all three)."""
    features, logits, labels = validation
    target_features, target_logits = target
    weights = density_ratio(features, target_features, seed)
    losses = row_losses(logits, labels)
    return {"target_prediction_entropy": round(prediction_entropy(target_logits), 6),
            "iwv_risk": round(importance_weighted_risk(losses, weights), 6),
            "dev_risk": round(dev_risk(losses, weights), 6)}
