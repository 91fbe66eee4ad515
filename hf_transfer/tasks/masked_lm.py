"""The masked-LM task (continued pretraining on unlabelled text): its `load` step and the strategies it allows.
"""
from __future__ import annotations

from hf_transfer.errors import HfTransferError
from hf_transfer.run.task import Args, TaskData, mixed_precision

# Continued pretraining: gradual trains the (possibly new) masked-LM head alone first, so a random head's first
# gradients do not reach the encoder; feature_extraction would train nothing but that head, and a peft config is
# task-specific.
MASKED_LM_STRATEGIES = ("full", "lora", "freeze", "gradual")


def load_masked_lm_task(args: Args) -> TaskData:
    """Masked-LM continued pretraining: unlabelled text in blocks (or lines), masked on the fly; perplexity is the metric."""
    from hf_transfer.data.mlm import (
        MaskedLMCollator,
        MaskedLMDataArgs,
        load_masked_lm_data,
    )
    from hf_transfer.models.loading import load_config, load_tokenizer

    if args.model.from_scratch:
        raise HfTransferError("--from_scratch makes no sense for continued pretraining: it continues from pretrained weights")
    if args.strategy.strategy not in MASKED_LM_STRATEGIES:
        raise HfTransferError(
            f"--strategy {args.strategy.strategy} is not offered for continued pretraining; use {', '.join(MASKED_LM_STRATEGIES)}"
        )
    data_args = args[MaskedLMDataArgs]
    config = load_config(args.model)
    args.strategy.check_config(config)
    tokenizer = load_tokenizer(args.model)
    data = load_masked_lm_data(data_args, tokenizer, seed=args.training.seed)
    return TaskData(
        datasets=data.datasets,
        collator=MaskedLMCollator(tokenizer, data_args, pad_to_multiple_of=8 if mixed_precision(args.training) else None),
        processing_class=tokenizer,
        config=config,
        report={"train_blocks": len(data.datasets["train"]), "dropped_empty_texts": data.dropped_empty},
        eval_splits=(),  # perplexity before and after is measured by the recipe's own hooks
        extra={"train_tokens": data.train_tokens},
    )
