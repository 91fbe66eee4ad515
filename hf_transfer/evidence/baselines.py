"""Evidence inside one run: the frozen-features baseline beside the fine-tuned model, and forgetting of a source task."""
from __future__ import annotations

from dataclasses import dataclass, field


def evaluate_source_before(trainer, args, data) -> dict:
    """Score the source task (`--source_eval_file`) before training, so forgetting can be measured after it."""
    source = data.datasets.get("source")
    if source is None:
        return {}
    scores = trainer.evaluate(source, metric_key_prefix="source_before")
    data.extra["source_before"] = {k: v for k, v in scores.items() if k.endswith(("_accuracy", "_f1", "_mae", "_loss"))}
    return data.extra["source_before"]


def source_after(trainer, data) -> dict:
    """Score the source task again after training; forgetting = accuracy before minus after (positive: forgot)."""
    source = data.datasets.get("source")
    if source is None:
        return {}
    scores = {k: v for k, v in trainer.evaluate(source, metric_key_prefix="source").items()
              if k.endswith(("_accuracy", "_f1", "_mae", "_loss"))}
    before = data.extra.get("source_before", {})
    if "source_before_accuracy" in before and "source_accuracy" in scores:
        scores["forgetting_accuracy"] = before["source_before_accuracy"] - scores["source_accuracy"]
    return scores


def frozen_baseline_after(trainer, args, data) -> dict:
    """Logistic regression (ridge regression for a regression target) on the pretrained backbone's frozen features,
    scored on the validation split.

    The backbone is loaded afresh from the checkpoint, so the baseline is what transfer without any
    fine-tuning gives, whatever the strategy did to the trained model. Every rank computes it (the same
    numbers): on rank 0 alone, the other ranks would wait in the next collective and, on large data, time out.
    """
    import torch
    from transformers import AutoModel

    from hf_transfer.evidence.features import frozen_baseline
    from hf_transfer.models.loading import load_config, load_pretrained
    from hf_transfer.run.launch import precision

    backbone = load_pretrained(AutoModel, args.model, load_config(args.model)).to(args.training.device)
    # The same precision as the run's own evaluation; the pooled features are kept in float32 for the head.
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision(args.training))
    with torch.autocast(args.training.device.type, dtype=half or torch.float32, enabled=half is not None):
        scores = frozen_baseline(backbone, data.datasets["train"], data.datasets["validation"], data.collator,
                                 args.training.seed, regression=data.report.get("task_type") == "regression")
    return {f"baseline_{k}": v for k, v in scores.items()}


def forgetting_lines(results: dict) -> list[str]:
    if "forgetting_accuracy" not in results:
        return []
    return [f"forgetting of the source task: {100 * results['forgetting_accuracy']:+.1f} accuracy points (positive: forgot)"]


def baseline_lines(results: dict) -> list[str]:
    if "validation_mae" in results and "baseline_mae" in results:
        gain = results["baseline_mae"] - results["validation_mae"]
        return [f"transfer vs frozen backbone + ridge regression: MAE {results['validation_mae']:.4g} vs "
                f"{results['baseline_mae']:.4g} ({gain:+.4g} in the target's units; positive: fine-tuning helped)"]
    if "validation_accuracy" not in results or "baseline_accuracy" not in results:
        return []
    gain = 100 * (results["validation_accuracy"] - results["baseline_accuracy"])
    return [f"transfer vs frozen backbone + logistic regression: {gain:+.1f} accuracy points"]


@dataclass
class BaselineArgs:
    frozen_baseline: bool = field(
        default=True,
        metadata={"help": "Also fit logistic regression (ridge regression for a regression target) on the pretrained "
                  "model's frozen mean-pooled features and report it as baseline_* beside the fine-tuned result (costs "
                  "one pass over the data)."},
    )
