"""How far apart the two domains are, as the classifier sees them: proxy A-distance and a feature view by domain.

Features are the classification layer's input (as the objectives use them), computed in evaluation mode with the
model's objectives' contexts on (per-domain normalisation maps target rows), in plain index order: no data loader,
so no random number is drawn and training is the same with or without diagnostics.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hf_transfer.adaptation.objectives import DOMAIN, FeatureTap
from hf_transfer.trainer import model_objectives


@torch.inference_mode()
def features_and_logits(model, dataset, collator, domain: int, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The classification layer's input (one feature vector per row) and the model's logits, for the rows of
    `dataset` (model inputs; other columns are ignored), rows in order."""
    import contextlib

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs = [c for c in dataset.column_names if c in ("input_ids", "attention_mask", "token_type_ids")]
    rows = dataset.select_columns(inputs)
    tap, features, logits = FeatureTap(), [], []
    try:
        for start in range(0, len(rows), batch_size):
            batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            batch = {k: v.to(device) for k, v in batch.items() if k in inputs}
            taken = {DOMAIN: torch.full((len(batch["input_ids"]),), domain, dtype=torch.long)}
            with contextlib.ExitStack() as stack:
                stack.enter_context(tap.attached(model))
                for objective in model_objectives(model).values():
                    stack.enter_context(objective.during_forward(model, batch, taken))
                output = model(**batch)
            features.append(tap.take().float().cpu().numpy())
            logits.append(output.logits.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(features), np.concatenate(logits)


def domain_features(model, dataset, collator, domain: int, batch_size: int = 64) -> np.ndarray:
    """One feature vector per row of `dataset` (the classification layer's input), rows in order."""
    return features_and_logits(model, dataset, collator, domain, batch_size)[0]


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 42) -> float:
    """2 (1 - 2 err) (Ben-David et al. 2007), err the held-out error of a linear classifier telling the domains apart
    (logistic regression on standardised features, 2-fold stratified): 0 for indistinguishable domains, 2 for
    perfectly separable ones."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([source, target])
    y = np.concatenate([np.zeros(len(source), dtype=int), np.ones(len(target), dtype=int)])
    errors = []
    for train, held in StratifiedKFold(2, shuffle=True, random_state=seed).split(x, y):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)).fit(x[train], y[train])
        errors.append(float((classifier.predict(x[held]) != y[held]).mean()))
    # A classifier worse than chance still separates the domains (flip its answers): the distance uses the error of
    # the better of the two, which keeps it in 0..2 (duplicated rows across domains can push held-out error past 0.5).
    error = float(np.mean(errors))
    return 2.0 * (1.0 - 2.0 * min(error, 1.0 - error))


def plot_domain_views(views: dict[str, tuple[np.ndarray, np.ndarray]], out: Path, domain_names=("source", "target")) -> Path:
    """domain_features.png: a PCA of the features per panel (e.g. before / after adaptation), coloured by domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    fig, axes = plt.subplots(1, len(views), figsize=(5.5 * len(views), 4.8), squeeze=False)
    for ax, (title, (source, target)) in zip(axes[0], views.items()):
        points = PCA(n_components=2, random_state=0).fit_transform(np.concatenate([source, target]))
        ax.scatter(*points[: len(source)].T, s=7, alpha=0.5, color="C0", label=f"{domain_names[0]} ({len(source)})")
        ax.scatter(*points[len(source):].T, s=7, alpha=0.5, color="C3", label=f"{domain_names[1]} ({len(target)})")
        ax.set_title(f"{title}: PCA of the classifier's input features")
        ax.legend(markerscale=2, fontsize=8)
    fig.tight_layout()
    path = Path(out) / "domain_features.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path



