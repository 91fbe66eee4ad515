"""Contrastive few-shot training (SetFit: Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts") for
text classification with a handful of labelled examples: its options and its maths. The trainer that runs it is in
hf_transfer/contrastive_trainer.py; the pairs are data (hf_transfer/data/pairs.py).

One run, two phases:
1. Every training step reads a batch of sentence pairs built from the labelled rows, embeds both sides and pulls
   same-label pairs together and different-label pairs apart (`pair_loss`). What trains is what the strategy leaves
   trainable (full, freeze, LoRA on the body), less the classification layer, which no pair loss reaches.
2. A closing step embeds the labelled rows with the tuned body, fits logistic regression on them (scikit-learn, C = 1,
   SetFit's default head) and writes it into the classification layer. Softmax regression on x is a linear layer on
   x (`linear_from_logistic`), so the saved model predicts what the fitted regression predicts, and
   `pipeline("text-classification")` loads it as any classifier.

This module imports nothing heavier than torch, so recipes declare the options without loading the Trainer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from hf_transfer.errors import HfTransferError

LOSSES = ("cosine", "contrastive")
POOLINGS = ("mean", "cls")
MEAN_POOLING_TYPES = ("bert", "roberta")  # blocks laid out as BertLayer, a dense + tanh head layer before the classifier
CONTRASTIVE_MARGIN = 0.5  # the contrastive loss's margin on the cosine distance (sentence-transformers' default)
# Bias of a label the training rows never show: the fitted regression cannot predict it, and neither may the model.
ABSENT_LABEL_BIAS = -1e4


@dataclass
class ContrastiveArgs:
    contrastive_pairs_per_example: int = field(
        default=0,
        metadata={"help": "Contrastive few-shot (SetFit): tune the body on this many sentence pairs per labelled example "
                  "(half with its own label, half with others; even; 0 = off), then set the classifier from logistic "
                  "regression on the tuned embeddings. The Trainer's options drive the pair phase "
                  "(--per_device_train_batch_size counts pairs). SetFit's setting: 40 pairs, --learning_rate 2e-5, "
                  "--num_train_epochs 1, batches of 16 (recipes/configs/sentiment/contrastive_fewshot.yaml)."},
    )
    contrastive_loss: str = field(
        default="cosine",
        metadata={"help": "cosine: squared error between a pair's cosine similarity and 1 (same label) or 0 (SetFit's "
                  f"default). contrastive: the margin loss on the cosine distance (margin {CONTRASTIVE_MARGIN}).",
                  "choices": LOSSES},
    )
    contrastive_pooling: str = field(
        default="mean",
        metadata={"help": "The sentence embedding that pairs train and the classifier reads. mean (BERT, RoBERTa): the "
                  "mean of the tokens, as sentence-embedding models are trained, handed to the classifier by a pooling "
                  "block added on top (built, not trained), so that the saved model stays a stock classifier. cls: the "
                  "model's own head input (BERT's pooler over [CLS]), far lower with sentence-embedding models "
                  "(docs/few_shot.md).",
                  "choices": POOLINGS},
    )

    def __post_init__(self) -> None:
        n = self.contrastive_pairs_per_example
        if n < 0 or n % 2:
            raise HfTransferError(f"--contrastive_pairs_per_example must be 0 (off) or an even number (half similar, half "
                                  f"dissimilar pairs), got {n}")
        if self.contrastive_loss not in LOSSES:
            raise HfTransferError(f"unknown --contrastive_loss '{self.contrastive_loss}'; choose one of {', '.join(LOSSES)}")
        if self.contrastive_pooling not in POOLINGS:
            raise HfTransferError(f"unknown --contrastive_pooling '{self.contrastive_pooling}'; choose one of {', '.join(POOLINGS)}")
        if not n and (self.contrastive_loss != "cosine" or self.contrastive_pooling != "mean"):
            raise HfTransferError("--contrastive_loss and --contrastive_pooling apply to the contrastive phase: give "
                                  "--contrastive_pairs_per_example")

    @property
    def enabled(self) -> bool:
        return self.contrastive_pairs_per_example > 0

    def check_config(self, config) -> None:
        """Refuse mean pooling on an architecture whose pooling block the trainer cannot build (before weights load)."""
        model_type = getattr(config, "model_type", None)
        if self.contrastive_pooling == "mean" and model_type not in MEAN_POOLING_TYPES:
            raise HfTransferError(f"--contrastive_pooling mean builds its pooling block for {', '.join(MEAN_POOLING_TYPES)} "
                                  f"models, not '{model_type}'; use --contrastive_pooling cls")

    def check(self, strategy, train_args, merge_lora: bool = False) -> None:
        """The combinations the contrastive phase refuses, before anything loads."""
        if self.contrastive_pooling == "mean" and strategy.strategy in ("lora", "peft") and not merge_lora:
            raise HfTransferError(f"--contrastive_pooling mean adds a pooling block to the model, which a {strategy.strategy} "
                                  "adapter does not carry: add --merge_lora (a full model is saved) or use --contrastive_pooling cls")
        if strategy.strategy == "gradual":
            raise HfTransferError("--strategy gradual trains the head first, and the contrastive phase trains no head (the "
                                  "classifier is fitted after it); use full, freeze or lora with --contrastive_pairs_per_example")
        if strategy.cache_frozen_prefix:
            raise HfTransferError("--cache_frozen_prefix stores each training row's prefix, and contrastive batches hold "
                                  "pairs of rows; drop it with --contrastive_pairs_per_example")
        if str(getattr(train_args.train_sampling_strategy, "value", train_args.train_sampling_strategy)) == "group_by_length":
            raise HfTransferError("--train_sampling_strategy group_by_length groups rows, and contrastive batches hold pairs; "
                                  "use random (the default) with --contrastive_pairs_per_example")


# --- the maths, as plain functions (tests check them against independent computations) ---

def pair_loss(first: torch.Tensor, second: torch.Tensor, similarity: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """The mean loss over pairs of embeddings. cosine: (cos(a, b) - y)^2 (sentence-transformers' CosineSimilarityLoss);
    contrastive: (y d^2 + (1 - y) max(0, margin - d)^2) / 2 with d = 1 - cos(a, b) (its ContrastiveLoss)."""
    cosine = F.cosine_similarity(first.float(), second.float(), dim=-1)
    similarity = similarity.to(cosine)
    if kind == "cosine":
        return F.mse_loss(cosine, similarity)
    if kind == "contrastive":
        distance = 1 - cosine
        return 0.5 * (similarity * distance.pow(2) + (1 - similarity) * F.relu(CONTRASTIVE_MARGIN - distance).pow(2)).mean()
    raise ValueError(kind)


def fit_logistic_head(features: np.ndarray, labels: np.ndarray, seed: int):
    """SetFit's default head: scikit-learn's logistic regression (L2, C = 1) on the raw embeddings."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(features, labels)


def linear_from_logistic(head, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight [num_labels x d], bias [num_labels]) of the linear layer whose softmax equals `head`'s probabilities.

    Several labels: the regression's own rows. Two: scikit-learn keeps one row w (the log-odds of the second label),
    split as -w/2 and +w/2, whose softmax is sigmoid(w x + b). A label the training rows never show gets no weight and
    a bias of ABSENT_LABEL_BIAS."""
    coef, intercept = np.asarray(head.coef_, dtype=np.float64), np.asarray(head.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:
        coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
    weight = np.zeros((num_labels, coef.shape[1]))
    bias = np.full(num_labels, ABSENT_LABEL_BIAS)
    classes = np.asarray(head.classes_, dtype=int)
    weight[classes], bias[classes] = coef, intercept
    return weight, bias


def contrastive_lines(results: dict) -> list[str]:
    """The run summary's line for a contrastive run."""
    if not results.get("contrastive_pairs"):
        return []
    return [f"contrastive phase: {results['contrastive_pairs']:,} pairs ({results['contrastive_loss']} loss), then the "
            "classifier fitted as logistic regression on the tuned embeddings"]
