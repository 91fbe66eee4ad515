"""Frozen features: embed a data set with the pretrained backbone and fit a classical head (the baseline transfer must beat)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from .metrics import classification_scores


@dataclass
class BaselineArgs:
    frozen_baseline: bool = field(
        default=True,
        metadata={"help": "Also fit logistic regression on the pretrained model's frozen mean-pooled features and "
                  "report it as baseline_* beside the fine-tuned result (costs one pass over the data)."},
    )


@torch.inference_mode()
def embed(backbone, dataset, collator, batch_size: int = 64, pooling: str = "mean", device=None) -> np.ndarray:
    """One vector per example from a frozen encoder: the attention-masked mean of the last hidden states, or [CLS]."""
    device = device or next(backbone.parameters()).device
    backbone.eval()
    # Sorting by length keeps padding (and so wasted compute) small; the original order is restored after.
    order = np.argsort([len(ids) for ids in dataset["input_ids"]], kind="stable")
    columns = [c for c in dataset.column_names if c != "labels"]
    loader = DataLoader(dataset.select_columns(columns).select(order), batch_size=batch_size, collate_fn=collator)
    chunks = []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        hidden = backbone(**batch).last_hidden_state
        if pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        chunks.append(pooled.float().cpu().numpy())
    features = np.empty((len(order), chunks[0].shape[1]), dtype=np.float32)
    features[order] = np.concatenate(chunks)
    return features


def fit_logistic_regression(train_x: np.ndarray, train_y: np.ndarray, seed: int = 42):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)).fit(train_x, train_y)


def frozen_baseline(backbone, train, evaluation, collator, seed: int = 42) -> dict:
    """Accuracy etc. of logistic regression on frozen mean-pooled features: what transfer without fine-tuning gives."""
    train_x, eval_x = embed(backbone, train, collator), embed(backbone, evaluation, collator)
    head = fit_logistic_regression(train_x, np.asarray(train["labels"]), seed)
    probabilities = head.predict_proba(eval_x)
    predictions = head.classes_[probabilities.argmax(-1)]
    return classification_scores(np.asarray(evaluation["labels"]), predictions, probabilities)
