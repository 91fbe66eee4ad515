"""Regression metrics from scikit-learn and scipy: errors (MSE, RMSE, MAE, in the target's units) and agreement (R²,
Pearson and Spearman correlation), for a model that predicts one number per example."""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

# Every score a regression run reports, in the order reports show them; the first three are errors (lower is better).
SCORES = ("mse", "rmse", "mae", "r2", "pearson", "spearman")
LOWER_IS_BETTER = ("mse", "rmse", "mae")


def _correlation(function, targets: np.ndarray, predictions: np.ndarray) -> float:
    """A correlation, or NaN where none is defined: fewer than two rows, or targets or predictions all equal (an
    untrained head can predict one value for every row)."""
    if len(targets) < 2 or np.ptp(targets) == 0 or np.ptp(predictions) == 0:
        return math.nan
    with warnings.catch_warnings():  # nearly constant inputs warn, yet still have a correlation
        warnings.simplefilter("ignore")
        return float(function(targets, predictions)[0])  # (statistic, p-value) in every scipy release


def regression_scores(targets, predictions) -> dict[str, float]:
    """mse, rmse, mae, r2, pearson, spearman of `predictions` against `targets` (NaN where a score is undefined)."""
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    mse = float(mean_squared_error(targets, predictions))
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(mean_absolute_error(targets, predictions)),
        "r2": float(r2_score(targets, predictions)) if len(targets) > 1 else math.nan,
        "pearson": _correlation(pearsonr, targets, predictions),
        "spearman": _correlation(spearmanr, targets, predictions),
    }


def compute_regression_metrics(eval_prediction) -> dict[str, float]:
    """`compute_metrics` for the Trainer: the head's single output per row is the prediction."""
    predictions = eval_prediction.predictions
    predictions = predictions[0] if isinstance(predictions, tuple) else predictions
    return regression_scores(eval_prediction.label_ids, predictions)
