"""Cached feature extraction against the Trainer: frozen MiniLM-L6 + a linear head on SST-2, end to end.

    python benchmarks/cached_features.py [--train_samples 2000] [--epochs 10]

Both paths train the same model family, a linear head on mean-pooled features of the frozen encoder:
- cached: embed train and dev once (the feature cache; embedding time included), fit logistic regression;
- Trainer: a frozen encoder + mean pooling + nn.Linear trained with the Trainer for --epochs epochs,
  recomputing the frozen forward pass every epoch, as a feature-extraction fine-tune does.
Reports wall time of each, the speed-up, and dev accuracy of each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import paths

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SST2 = paths.DATA / "sst2"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


class FrozenEncoderLinearHead(nn.Module):
    def __init__(self, encoder, num_labels: int):
        super().__init__()
        self.encoder = encoder.requires_grad_(False)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        with torch.no_grad():
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        logits = self.head(pooled)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--results", type=Path, default=paths.RESULTS / "cached_features.json")
    args = parser.parse_args()
    if not (SST2 / "train.tsv").is_file():
        sys.exit(f"skipped: SST-2 not found at {SST2}")

    from transformers import (
        AutoModel,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        logging,
    )

    from hf_transfer.data.text import TextDataArgs, load_text_classification
    from hf_transfer.evidence.features import cached_embed, fit_head, score_head
    from hf_transfer.metrics.classification import compute_classification_metrics
    from hf_transfer.models.loading import default_model_path

    logging.set_verbosity_error()
    path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = load_text_classification(TextDataArgs(
        train_file=str(SST2 / "train.tsv"), validation_file=str(SST2 / "dev.tsv"), class_names=["negative", "positive"],
        max_train_samples=args.train_samples, max_seq_length=64), tokenizer, seed=0).datasets
    collator = DataCollatorWithPadding(tokenizer)

    # Cached path: a fresh cache, so the embedding time is in the measurement.
    start = time.perf_counter()
    encoder = AutoModel.from_pretrained(path)
    with tempfile.TemporaryDirectory() as cache:
        train_x, _ = cached_embed(encoder, data["train"], collator, cache)
        dev_x, _ = cached_embed(encoder, data["validation"], collator, cache)
    embedded = time.perf_counter() - start
    head = fit_head("logistic_regression", train_x, np.asarray(data["train"]["labels"]))
    cached_scores = score_head(head, dev_x, np.asarray(data["validation"]["labels"]))
    cached_seconds = time.perf_counter() - start

    # Trainer path.
    start = time.perf_counter()
    torch.manual_seed(0)
    model = FrozenEncoderLinearHead(AutoModel.from_pretrained(path), 2)
    trainer = Trainer(model=model, args=TrainingArguments(
        output_dir=tempfile.mkdtemp(), num_train_epochs=args.epochs, per_device_train_batch_size=32, learning_rate=1e-2,
        per_device_eval_batch_size=64, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
        logging_strategy="no", dataloader_pin_memory=False, remove_unused_columns=False),
        train_dataset=data["train"], data_collator=collator, compute_metrics=compute_classification_metrics)
    trainer.train()
    trainer_scores = trainer.evaluate(data["validation"])
    trainer_seconds = time.perf_counter() - start

    results = {
        "machine": f"{platform.node()}, CPU {os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}",
        "train_samples": len(data["train"]), "dev_samples": len(data["validation"]), "trainer_epochs": args.epochs,
        "cached": {"seconds": round(cached_seconds, 1), "embed_seconds": round(embedded, 1), "accuracy": cached_scores["accuracy"]},
        "trainer": {"seconds": round(trainer_seconds, 1), "accuracy": trainer_scores["eval_accuracy"]},
    }
    results["speedup"] = round(trainer_seconds / cached_seconds, 2)
    results["accuracy_difference_points"] = round(100 * (cached_scores["accuracy"] - trainer_scores["eval_accuracy"]), 2)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
