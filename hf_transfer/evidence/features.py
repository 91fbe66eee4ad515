"""Frozen features: embed a data set once with the pretrained backbone (cached on disk), fit classical heads on them.

With under about a thousand labelled examples this is the first thing to try: one forward pass over the
data, then seconds per head. It is also the baseline every fine-tuning strategy has to beat.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from hf_transfer.errors import HfTransferError

logger = logging.getLogger(__name__)
HEADS = ("logistic_regression", "linear_svm", "mlp")  # classifiers, for class labels
REGRESSION_HEADS = ("ridge",)  # for a regression target (one number per example)
# Ridge's regularisation strengths, chosen among by leave-one-out cross-validation on the (standardised) training
# features: from barely regularised to nearly the training mean.
RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
PARALLEL_FIT_SIZE = 250_000  # feature values (rows x dimensions) from which logistic regression's CV folds run in parallel


@dataclass
class FeatureArgs:
    pooling: str = field(default="mean", metadata={"help": "How an example becomes one vector: 'mean' of the tokens (frames; an image's patches) or the first token ('cls', ViT's CLS token).", "choices": ("mean", "cls")})
    layer: int = field(default=-1, metadata={"help": "Hidden state to pool: -1 the last layer, 0 the embeddings, i the output of block i."})
    heads: list[str] | None = field(
        default=None,
        metadata={"help": f"Classical heads to fit: for class labels {', '.join(HEADS)} (default {HEADS[0]}); for a "
                  f"regression target {', '.join(REGRESSION_HEADS)} (the default)."},
    )
    feature_cache_dir: str = field(default="outputs/feature_cache", metadata={"help": "Where embedded features are cached (keyed by model, data and settings)."})
    k_folds: int | None = field(default=None, metadata={"help": "Also report k-fold cross-validation on the training set (mean and std)."})
    feature_views: bool = field(default=False, metadata={"help": "Write PCA and t-SNE scatter plots of the features, coloured by label."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.heads or ()) - set(HEADS + REGRESSION_HEADS))
        if unknown:
            raise HfTransferError(f"unknown head(s) {', '.join(unknown)}; choose from "
                                  f"{', '.join(HEADS + REGRESSION_HEADS)}")
        if self.k_folds is not None and self.k_folds < 2:
            raise HfTransferError(f"--k_folds must be at least 2, got {self.k_folds}")


# Columns that are not model inputs: the labels, and the audio collator's mark of training rows (random crop and
# augmentation), dropped so that features are of the examples as they are, the same on every call.
_NOT_INPUTS = ("labels", "augment")


def _length_order(dataset) -> np.ndarray:
    """Indices sorted by length: the `length` column (audio: samples), else the token count; else as they are."""
    if "length" in dataset.column_names:
        lengths = dataset["length"]
    elif "input_ids" in dataset.column_names:
        lengths = [len(ids) for ids in dataset["input_ids"]]
    else:
        return np.arange(len(dataset))
    return np.argsort(np.asarray(lengths), kind="stable")


def frame_mask(backbone, mask: torch.Tensor | None, frames: int) -> torch.Tensor | None:
    """The attention mask at the hidden states' resolution; None means every frame counts.

    A text mask is per token, as the hidden states. A speech model's mask is per input sample while its hidden
    states are per frame (wav2vec2: one per 320 samples): the model's own `_get_feature_vector_attention_mask`
    maps it, and a model without one is pooled over every frame.
    """
    if mask is None or mask.shape[1] == frames:
        return mask
    reduce = getattr(backbone, "_get_feature_vector_attention_mask", None)
    return reduce(frames, mask) if reduce is not None else None


@torch.inference_mode()
def embed(backbone, dataset, collator, batch_size: int = 64, pooling: str = "mean", layer: int = -1, device=None) -> np.ndarray:
    """One vector per example from a frozen encoder: the attention-masked mean of a layer's hidden states, or its first
    position (`cls`). Text (token ids), audio or images (files the collator decodes); rows come back in the dataset's
    order. For images 'mean' is over the patches, without the CLS token."""
    device = device or next(backbone.parameters()).device
    backbone.eval()
    # Sorting by length keeps padding (and so wasted compute) small; the original order is restored after.
    order = _length_order(dataset)
    columns = [c for c in dataset.column_names if c not in _NOT_INPUTS]
    loader = DataLoader(dataset.select_columns(columns).select(order), batch_size=batch_size, collate_fn=collator)
    # Audio whose feature extractor gives no attention mask (wav2vec2-base: group-normalised models take none) is
    # still pooled over its own samples only: the mask is rebuilt from the `length` column, for pooling alone.
    lengths = np.asarray(dataset["length"])[order] if "length" in dataset.column_names else None
    chunks, start = [], 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items() if k not in _NOT_INPUTS}
        rows = next(iter(batch.values())).shape[0]
        output = backbone(**batch, output_hidden_states=layer != -1)
        hidden = output.last_hidden_state if layer == -1 else output.hidden_states[layer]
        if hidden.dim() == 4:  # a convolutional image backbone (ResNet, ConvNeXt): channels x height x width, no tokens
            if pooling == "cls":
                raise HfTransferError(f"--pooling cls needs a model with a CLS token; {type(backbone).__name__} gives "
                                      "feature maps: use --pooling mean (the mean over the map)")
            pooled = hidden.flatten(2).mean(-1)
        elif pooling == "cls":
            pooled = hidden[:, 0]
        elif "pixel_values" in batch and batch.get("attention_mask") is None:
            # An image model's first position is its CLS token (ViT, DeiT): 'mean' is the mean over the patches alone,
            # so the two poolings are different views, not one mixed into the other.
            pooled = hidden[:, 1:].mean(1) if hidden.shape[1] > 1 else hidden[:, 0]
        else:
            mask = batch.get("attention_mask")
            if mask is None and lengths is not None and "input_values" in batch:
                samples = torch.arange(batch["input_values"].shape[1], device=device)
                mask = (samples[None, :] < torch.as_tensor(lengths[start:start + rows], device=device)[:, None]).long()
            mask = frame_mask(backbone, mask, hidden.shape[1])
            if mask is None:
                pooled = hidden.mean(1)
            else:
                mask = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        chunks.append(pooled.float().cpu().numpy())
        start += rows
    if not chunks:
        raise HfTransferError("nothing to embed: the split is empty")
    features = np.empty((len(order), chunks[0].shape[1]), dtype=np.float32)
    features[order] = np.concatenate(chunks)
    return features


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def model_fingerprint(model) -> str:
    """Hash of every parameter's name and bytes: any change of weights changes it (about 0.2 s for 100 MB)."""
    return _digest(*(n.encode() + p.detach().cpu().contiguous().numpy().tobytes() for n, p in model.state_dict().items()))


def _audio_reference(value) -> str:
    """A clip or image as the cache sees it: its path with the file's size and modification time (a clip rewritten in place
    changes the key without reading the audio), or the hash of its bytes."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return "bytes:" + _digest(value["bytes"])
        value = value.get("path")
    if not isinstance(value, str):
        return repr(value)
    try:
        stat = os.stat(value)
    except OSError:
        return value
    return f"{value}|{stat.st_size}|{stat.st_mtime_ns}"


def data_fingerprint(dataset) -> str:
    """Hash of the inputs themselves: token ids (so a change of data, tokenizer or max length changes it), or each
    clip's or image's reference (path, size and modification time, or its bytes) and a clip's length (which the rate
    and cut follow)."""
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids", "length") if c in dataset.column_names]
    parts = [json.dumps(dataset[c][:]).encode() for c in columns]
    # Files the collator decodes: each a path with its stamp, or its embedded bytes (audio keys are as they were).
    if "audio" in dataset.column_names:
        parts.append(json.dumps([_audio_reference(v) for v in dataset["audio"]]).encode())
    if "image" in dataset.column_names:
        parts.append(b"image" + json.dumps([_audio_reference(v) for v in dataset["image"]]).encode())
    return _digest(*parts)


def collator_fingerprint(collator) -> str:
    """What of a collator changes the features: an audio collator's feature extractor settings and cut; text
    collators only pad, which masked pooling does not see."""
    extractor = getattr(collator, "feature_extractor", None)
    if extractor is None:  # an image collator: its processor sets size, resampling and normalisation
        extractor = getattr(collator, "image_processor", None)
    if extractor is None or not hasattr(extractor, "to_dict"):
        return ""
    settings = {"feature_extractor": extractor.to_dict(), "max_seconds": getattr(collator, "max_seconds", None)}
    return _digest(json.dumps(settings, sort_keys=True, default=str).encode())


def cached_embed(backbone, dataset, collator, cache_dir: str | Path, pooling: str = "mean", layer: int = -1,
                 batch_size: int = 64, model_key: str | None = None) -> tuple[np.ndarray, bool]:
    """`embed`, computed once per (model, data, pooling, layer) and then read from `cache_dir`. Returns (features, hit)."""
    key_parts = {
        "model": model_key or model_fingerprint(backbone),
        "data": data_fingerprint(dataset),
        "collator": collator_fingerprint(collator),
        "pooling": pooling,
        "layer": layer,
    }
    key = _digest(json.dumps(key_parts, sort_keys=True).encode())[:32]
    path = Path(cache_dir) / f"{key}.npy"
    if path.is_file():
        return np.load(path), True
    features = embed(backbone, dataset, collator, batch_size=batch_size, pooling=pooling, layer=layer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, features)
    tmp.replace(path)  # a crash never leaves a truncated cache entry behind
    (path.with_suffix(".json")).write_text(json.dumps(key_parts, indent=1))
    return features, False


def heads_for(asked: list[str] | None, regression: bool) -> list[str]:
    """The heads to fit: those asked for, else the default (logistic regression for classes, ridge for a number); a
    classifier for a regression target, or ridge for classes, is an error."""
    allowed = REGRESSION_HEADS if regression else HEADS
    wrong = [name for name in asked or () if name not in allowed]
    if wrong:
        kind = "a regression target (a number per example)" if regression else "class labels"
        raise HfTransferError(f"head {wrong[0]} does not fit {kind}; choose from {', '.join(allowed)}")
    return list(asked or allowed[:1])


def fit_head(name: str, features: np.ndarray, labels: np.ndarray, seed: int = 42):
    """A scikit-learn classifier (or, `ridge`, a regressor) on standardised features, fitted."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if name == "ridge":
        # RidgeCV's default cross-validation is leave-one-out, computed in closed form: exact, and as cheap as one fit.
        return make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS)).fit(features, np.asarray(labels, np.float64))
    folds = min(5, int(np.unique(labels, return_counts=True)[1].min()))

    def logistic_regression():
        if folds < 2:  # cross-validating C needs a few examples of every label; with fewer, plain C=1
            return LogisticRegression(max_iter=2000, random_state=seed)
        # The regularisation strength is chosen by cross-validation on the training features (scikit-learn's
        # default grid: 10 values of C, 5 folds): on SST-2 (2,000 sentences) that was worth 2 points over C=1,
        # and on cached features it costs seconds.
        # The folds run in parallel processes only when the fit is big enough to repay starting them: a pool of
        # worker processes costs seconds (10 s for 8 examples on a busy 2-core machine, against 0.1 s serially).
        return LogisticRegressionCV(
            Cs=10, cv=folds, max_iter=2000, random_state=seed, n_jobs=-1 if features.size >= PARALLEL_FIT_SIZE else None,
            l1_ratios=(0.0,), scoring="accuracy", use_legacy_attributes=False,  # today's defaults, stated: no warnings
        )

    heads = {
        "logistic_regression": logistic_regression,
        "linear_svm": lambda: LinearSVC(C=0.1, max_iter=5000, random_state=seed),
        "mlp": lambda: MLPClassifier(hidden_layer_sizes=(256,), early_stopping=True, max_iter=300, random_state=seed),
    }
    return make_pipeline(StandardScaler(), heads[name]()).fit(features, labels)


def score_head(head, features: np.ndarray, labels: np.ndarray) -> dict:
    """Metrics of a fitted head; ROC AUC from probabilities, or from the SVM's decision function. A regressor: the
    regression scores (MSE, MAE, R², correlations)."""
    from sklearn.base import is_regressor

    from hf_transfer.metrics.classification import classification_scores
    from hf_transfer.metrics.regression import regression_scores

    if is_regressor(head):
        return regression_scores(labels, head.predict(features))
    if hasattr(head, "predict_proba"):
        scores = head.predict_proba(features)
    else:
        margin = head.decision_function(features)
        scores = np.stack([-margin, margin], 1) if margin.ndim == 1 else margin
    predictions = head.classes_[scores.argmax(-1)]
    probabilities = scores if hasattr(head, "predict_proba") else None
    result = classification_scores(labels, predictions, probabilities)
    if probabilities is None and scores.shape[1] == 2 and len(np.unique(labels)) == 2:
        from sklearn.metrics import roc_auc_score

        result["roc_auc"] = float(roc_auc_score(labels, scores[:, 1]))
    return result


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, held-out) index pairs: held-out parts are disjoint, cover every row, and keep label proportions."""
    from sklearn.model_selection import StratifiedKFold

    smallest = np.bincount(np.unique(labels, return_inverse=True)[1]).min()
    if smallest < k:
        raise HfTransferError(f"--k_folds {k} needs at least {k} examples of every label; the rarest has {smallest}")
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def shuffled_folds(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, held-out) index pairs of n rows in a seeded random order: for a regression target, which has no
    classes to stratify by."""
    from sklearn.model_selection import KFold

    if n < k:
        raise HfTransferError(f"--k_folds {k} needs at least {k} examples; there are {n}")
    return list(KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n)))


def cross_validate(features: np.ndarray, labels: np.ndarray, head_name: str, k: int, seed: int) -> dict:
    """Mean and standard deviation of each metric over k folds (stratified by label; shuffled for a regressor)."""
    folds = shuffled_folds(len(labels), k, seed) if head_name in REGRESSION_HEADS else stratified_folds(labels, k, seed)
    per_fold = []
    for train_idx, held_idx in folds:
        head = fit_head(head_name, features[train_idx], labels[train_idx], seed)
        per_fold.append(score_head(head, features[held_idx], labels[held_idx]))
    return {f"{m}_{stat}": float(fn([f[m] for f in per_fold])) for m in per_fold[0] for stat, fn in (("mean", np.mean), ("std", np.std))}


def frozen_baseline(backbone, train, evaluation, collator, seed: int = 42, regression: bool = False) -> dict:
    """Logistic regression (a regression target: ridge regression, with its chosen `ridge_alpha`) on frozen mean-pooled
    features: what transfer without fine-tuning gives."""
    train_x, eval_x = embed(backbone, train, collator), embed(backbone, evaluation, collator)
    head = fit_head(heads_for(None, regression)[0], train_x, np.asarray(train["labels"]), seed)
    scores = score_head(head, eval_x, np.asarray(evaluation["labels"]))
    return {**scores, "ridge_alpha": float(head[-1].alpha_)} if regression else scores


def plot_feature_views(features: np.ndarray, labels: np.ndarray, label_names: list[str], out_dir: str | Path,
                       domains: np.ndarray | None = None, seed: int = 42, max_points: int = 2000) -> list[Path]:
    """PCA and t-SNE scatter plots of the features, coloured by label (marker by domain when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(features))[:max_points]  # t-SNE is quadratic: a sample shows the structure
    x, y = features[keep], labels[keep]
    d = domains[keep] if domains is not None else None
    views = {
        "pca": PCA(n_components=2, random_state=seed).fit_transform(x),
        "tsne": TSNE(n_components=2, random_state=seed, perplexity=min(30, max(5, len(x) // 4)), init="pca").fit_transform(x),
    }
    paths = []
    for name, points in views.items():
        fig, ax = plt.subplots(figsize=(6, 5))
        markers = ["o", "^", "s", "D", "v", "P"]
        for domain_index, domain in enumerate(np.unique(d) if d is not None else [None]):
            for label in np.unique(y):
                where = (y == label) & ((d == domain) if d is not None else True)
                tag = label_names[label] + (f" / {domain}" if domain is not None else "")
                ax.scatter(points[where, 0], points[where, 1], s=8, alpha=0.6, label=tag,
                           marker=markers[domain_index % len(markers)], color=f"C{label}")
        ax.set_title(f"{name.upper()} of frozen features ({len(x)} examples)")
        ax.legend(markerscale=2, fontsize=8)
        fig.tight_layout()
        path = Path(out_dir) / f"features_{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
