"""The text-classification task's `load` step: tokenizer, label set and tokenised splits, checked against the model.
"""
from __future__ import annotations

from hf_transfer.errors import HfTransferError
from hf_transfer.run.task import Args, TaskData, mixed_precision
from hf_transfer.tasks.shift import shift_plan, with_text_shift


def load_text_classification_task(args: Args) -> TaskData:
    """Text classification (or regression: one number per text): tokenizer and config of the checkpoint, labelled
    splits, per-batch padding."""
    import numpy as np

    from hf_transfer.data.text import (
        TextDataArgs,
        load_text_classification,
        text_collator,
    )
    from hf_transfer.metrics.classification import compute_classification_metrics
    from hf_transfer.metrics.regression import compute_regression_metrics
    from hf_transfer.models.loading import load_config, load_tokenizer

    data_args = args[TextDataArgs]
    contrastive = contrastive_options(args)  # its refusals come before anything loads
    config = load_config(args.model)
    args.strategy.check_config(config)  # before the data is tokenised: an unknown architecture fails in a second
    if contrastive is not None:
        contrastive.check_config(config)
    tokenizer = load_tokenizer(args.model)
    ensure_pad_token(tokenizer, config)
    shift = shift_plan(args)  # --synthetic_shift, --eval_shift (hf_transfer/data/shift): the texts are kept for it
    data = load_text_classification(data_args, tokenizer, seed=args.training.seed, keep_text=shift is not None)
    regression = data.task_type == "regression"
    check_best_model_metric(args.training, data.task_type)
    if regression:
        # One output. transformers 5 counts a head's outputs by id2label, so the map cannot be empty: its one entry is
        # named after the target column, which is what a pipeline's output then says ({"label": "rating", ...}).
        config.id2label, config.label2id = {0: data.label_column}, {data.label_column: 0}
        config.problem_type = "regression"
    else:
        config.id2label, config.label2id = data.id2label, data.label2id
        if config.problem_type == "regression":  # a regression checkpoint fine-tuned into a classifier
            config.problem_type = None
    report = {"task_type": data.task_type, "dropped_empty_texts": data.dropped_empty}
    if regression:
        report.update(target_column=data.label_column, train_target_mean=float(np.mean(data.datasets["train"]["labels"])))
    else:
        report.update(label_names=data.label_names)
    extra = {"domains": data.domains}
    if contrastive is not None:
        extra["pairs"] = contrastive_pair_set(contrastive, data, args.training.seed)
        report.update(contrastive_pairs=len(extra["pairs"]), contrastive_loss=contrastive.contrastive_loss)
    task_data = TaskData(
        datasets=data.datasets,
        collator=text_collator(data_args, tokenizer, mixed_precision=mixed_precision(args.training)),
        processing_class=tokenizer,
        config=config,
        compute_metrics=compute_regression_metrics if regression else compute_classification_metrics,
        report=report,
        extra=extra,
    )
    texts = [data.text_column, *([data_args.text_pair_column] if data_args.text_pair_column else [])]
    return with_text_shift(task_data, shift, args, tokenizer, texts, data_args.max_seq_length)


def build_text_classifier(args: Args, data: TaskData):
    """The checkpoint with a sequence-classification head. A regression head that starts afresh starts at the training
    targets' mean: its output bias at zero would spend the first hundred or so steps learning the targets' offset
    (IMDb ratings average 5.6) before it learns anything from the text."""
    from transformers import AutoModelForSequenceClassification

    from hf_transfer.models.loading import load_pretrained, loading_notes, note

    model, info = load_pretrained(AutoModelForSequenceClassification, args.model, data.config, output_loading_info=True)
    for line in loading_notes(model, info):
        note(line)
    mean = data.report.get("train_target_mean")
    if mean is not None and start_output_at(model, set(info.get("missing_keys", ())), mean):
        note(f"the new regression head starts at the training targets' mean, {mean:.4g}")
    return model


def start_output_at(model, new_weights: set[str], value: float) -> bool:
    """Set the bias of the model's single-output layer (its last Linear with one output) to `value`, if that bias is
    new (not from the checkpoint); whether it was set."""
    import torch

    outputs = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1]
    if not outputs:
        return False
    name, layer = outputs[-1]
    if layer.bias is None or f"{name}.bias" not in new_weights:
        return False
    with torch.no_grad():
        layer.bias.fill_(value)
    return True


def check_best_model_metric(train_args, task_type: str) -> None:
    """--metric_for_best_model against what the run reports. The Trainer takes every name but `*loss` as higher-is-
    better: for a regression error (mse, rmse, mae) that would keep the worst checkpoint, so the direction is set."""
    from hf_transfer.metrics.regression import LOWER_IS_BETTER, SCORES

    best = (train_args.metric_for_best_model or "").removeprefix("eval_")
    if task_type == "regression" and best and best != "loss" and best not in SCORES:
        raise HfTransferError(f"--metric_for_best_model {best}: a regression run reports loss, {', '.join(SCORES)}; "
                              "choose one of those")
    if task_type == "classification" and best in SCORES:
        raise HfTransferError(f"--metric_for_best_model {best} scores a regression; this run classifies (give "
                              "--task_type regression for a numeric target, or choose accuracy, f1 or loss)")
    if best in LOWER_IS_BETTER and train_args.greater_is_better:
        train_args.greater_is_better = False
        print(f"note: --metric_for_best_model {best} is an error: the best checkpoint is the one where it is lowest",
              flush=True)


def ensure_pad_token(tokenizer, config) -> None:
    """Batches need a pad token. Causal checkpoints (GPT-2) have none: pad with the end-of-text token, as their own
    model cards do, and tell the model which id is padding (its classifier reads the last non-pad token)."""
    if tokenizer.pad_token is not None:
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tokenizer.pad_token_id
        return
    if tokenizer.eos_token is None:
        raise HfTransferError("the tokenizer has neither a pad token nor an end-of-text token to pad with; "
                              "use a checkpoint whose tokenizer defines one")
    tokenizer.pad_token = tokenizer.eos_token
    config.pad_token_id = tokenizer.eos_token_id
    print(f"note: the tokenizer has no pad token; padding with its end-of-text token {tokenizer.eos_token!r}", flush=True)


# --- contrastive few-shot (SetFit's two phases, hf_transfer/contrastive.py): options of recipes that declare them ---

def contrastive_options(args: Args):
    """The recipe's ContrastiveArgs when --contrastive_pairs_per_example is on (checked against the strategy and the
    Trainer's options), else None."""
    from hf_transfer.contrastive import ContrastiveArgs

    options = args.get(ContrastiveArgs)
    if options is None or not options.enabled:
        return None
    options.check(args.strategy, args.training, merge_lora=any(getattr(i, "merge_lora", False) for i in args))
    return options


def contrastive_pair_set(options, data, seed: int):
    """The pair dataset of the labelled training rows (a one-line error for a label with a single example)."""
    from hf_transfer.data.pairs import contrastive_pairs, pair_dataset

    if data.task_type != "classification":
        raise HfTransferError("contrastive pairs are built from class labels, and this run's target is a number; drop "
                              "--contrastive_pairs_per_example or pass --task_type classification")
    labels = data.datasets["train"]["labels"]
    return pair_dataset(contrastive_pairs(labels, options.contrastive_pairs_per_example, seed, data.label_names))


def prepare_text_model(model, args: Args):
    """The strategy, then (contrastive runs) the classification layer frozen: it is fitted after the pair phase."""
    from hf_transfer.contrastive_trainer import prepare_contrastive_model
    from hf_transfer.strategies import apply_strategy

    model = apply_strategy(model, args.strategy)
    options = contrastive_options(args)
    return prepare_contrastive_model(model, options.contrastive_pooling) if options is not None else model


def build_text_trainer(args: Args, data: TaskData, kwargs: dict):
    """A TransferTrainer, or for a contrastive run a ContrastiveTrainer over the pair set (the labelled rows fit its head)."""
    from hf_transfer.trainer import TransferTrainer

    options = contrastive_options(args)
    if options is None:
        return TransferTrainer(**kwargs)
    from hf_transfer.contrastive_trainer import ContrastiveTrainer
    from hf_transfer.data.pairs import PairCollator

    return ContrastiveTrainer(**{**kwargs, "train_dataset": data.extra["pairs"],
                                 "data_collator": PairCollator(kwargs["data_collator"], data.datasets["train"])},
                              labelled=data.datasets["train"], loss=options.contrastive_loss,
                              pooling=options.contrastive_pooling)


def contrastive_card_notes(args: Args, results: dict) -> dict[str, list[str]]:
    """The model card's line on how a contrastive run made the model."""
    options = contrastive_options(args)
    if options is None:
        return {}
    return {"model": [
        f"Trained in two phases (SetFit's method): the body was tuned on {results.get('contrastive_pairs', 0):,} sentence "
        f"pairs built from the labelled examples ({options.contrastive_pairs_per_example} per example, half of the same "
        f"label, {options.contrastive_loss} loss on the embedding the classifier reads), then the classification layer "
        "was set from logistic regression fitted on the tuned embeddings. It loads and predicts as any classifier."
        + (" Its last block is a pooling block added by the run (built, not trained): it averages the tokens into the "
           "first position, so the classifier reads the mean of the tokens, the embedding the body was tuned for."
           if options.contrastive_pooling == "mean" else "")]}
