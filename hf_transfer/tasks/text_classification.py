"""The text-classification task's `load` step: tokenizer, label set and tokenised splits, checked against the model.
"""
from __future__ import annotations

from hf_transfer.errors import HfTransferError
from hf_transfer.run.task import Args, TaskData, mixed_precision


def load_text_classification_task(args: Args) -> TaskData:
    """Text classification: tokenizer and config of the checkpoint, labelled splits, per-batch padding."""
    from hf_transfer.data.text import (
        TextDataArgs,
        load_text_classification,
        text_collator,
    )
    from hf_transfer.metrics.classification import compute_classification_metrics
    from hf_transfer.models.loading import load_config, load_tokenizer

    data_args = args[TextDataArgs]
    config = load_config(args.model)
    args.strategy.check_config(config)  # before the data is tokenised: an unknown architecture fails in a second
    tokenizer = load_tokenizer(args.model)
    ensure_pad_token(tokenizer, config)
    data = load_text_classification(data_args, tokenizer, seed=args.training.seed)
    config.id2label, config.label2id = data.id2label, data.label2id
    return TaskData(
        datasets=data.datasets,
        collator=text_collator(data_args, tokenizer, mixed_precision=mixed_precision(args.training)),
        processing_class=tokenizer,
        config=config,
        compute_metrics=compute_classification_metrics,
        report={"label_names": data.label_names, "dropped_empty_texts": data.dropped_empty},
        extra={"domains": data.domains},
    )


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
