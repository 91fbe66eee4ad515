"""Domain-adaptive continued pretraining: masked-LM training of an encoder on unlabelled target-domain text.

    accelerate launch recipes/continued_pretraining.py --train_file reviews.jsonl --max_steps 500
    accelerate launch recipes/continued_pretraining.py --config recipes/configs/continued_pretraining/minilm_imdb.yaml

Reports held-out perplexity before and after. The output folder is a complete checkpoint (a LoRA run is
merged first) with its tokenizer, so every recipe loads it with `--model_name_or_path`.
"""
from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `hf_transfer` importable from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate.utils import extract_model_from_parallel as unwrap_model
from transformers import AutoModelForMaskedLM, TrainingArguments, set_seed

from hf_transfer import StrategyArgs, TransferTrainer, apply_strategy, parse_args
from hf_transfer.data.mlm import MaskedLMCollator, MaskedLMDataArgs, load_masked_lm_data
from hf_transfer.errors import HfTransferError, run_cli
from hf_transfer.models import ModelArgs, carry_over_base_weights, load_config, load_pretrained, load_tokenizer
from hf_transfer.report import RunClock, finish
from hf_transfer.training import check_resume, recipe_defaults

logger = logging.getLogger(__name__)

ARGUMENTS = (ModelArgs, MaskedLMDataArgs, StrategyArgs, TrainingArguments)
DEFAULTS = recipe_defaults(
    output_dir="outputs/continued_pretraining", learning_rate=5e-5, num_train_epochs=1, eval_strategy="no",
    logging_steps=50, save_steps=500,
    # The masking collator needs `special_tokens_mask` and (whole-word masking) `offset_mapping`, which the
    # Trainer would drop as columns the model does not take; the collator removes them itself.
    remove_unused_columns=False,
)


def parse(argv: list[str] | None = None) -> tuple:
    return parse_args(ARGUMENTS, argv, DEFAULTS)


def main(argv: list[str] | None = None) -> dict:
    clock = RunClock()
    model_args, data_args, strategy, train_args = parse(argv)
    resume = check_resume(train_args)
    if model_args.from_scratch:
        raise HfTransferError("--from_scratch makes no sense for continued pretraining: it continues from pretrained weights")
    # gradual trains the (possibly new) masked-LM head alone first, so a random head's first gradients do not
    # reach the encoder; feature_extraction would train nothing but that head, and a peft config is task-specific.
    if strategy.strategy not in ("full", "lora", "freeze", "gradual"):
        raise HfTransferError(f"--strategy {strategy.strategy} is not offered for continued pretraining; use full, freeze, gradual or lora")

    config = load_config(model_args)
    strategy.check_config(config)
    tokenizer = load_tokenizer(model_args)
    data = load_masked_lm_data(data_args, tokenizer, seed=train_args.seed)

    set_seed(train_args.seed)  # the new head's initialisation is part of the run
    model, missing_head = load_masked_lm(model_args, config)
    if missing_head:
        print(f"note: {model_args.model_name_or_path} has no masked-LM head; its transform layer starts random "
              "and its decoder is tied to the word embeddings", flush=True)
    model = apply_strategy(model, strategy)
    trainer = TransferTrainer(
        model=model,
        args=train_args,
        strategy=strategy,
        train_dataset=data.datasets["train"],
        eval_dataset=data.datasets["validation"],
        processing_class=tokenizer,
        data_collator=MaskedLMCollator(tokenizer, data_args, pad_to_multiple_of=8 if train_args.bf16 or train_args.fp16 else None),
    )
    before = trainer.evaluate(metric_key_prefix="before")
    train_result = trainer.train(resume_from_checkpoint=resume)
    if strategy.strategy == "lora":
        # A merged, plain checkpoint loads in every recipe; an adapter alone would need peft to load.
        trainer.model = trainer.model.merge_and_unload()
    after = trainer.evaluate(metric_key_prefix="validation")
    tokens_seen = data.train_tokens * trainer.state.epoch
    extra = {
        **after,
        "perplexity_before": math.exp(before["before_loss"]),
        "perplexity_after": math.exp(after["validation_loss"]),
        "train_tokens_per_second": tokens_seen / max(train_result.metrics["train_runtime"], 1e-9),
        "train_blocks": len(data.datasets["train"]),
        "dropped_empty_texts": data.dropped_empty,
        "mlm_head_was_missing": missing_head,
        "strategy": strategy.strategy,
    }
    results = finish(trainer, clock, train_result.metrics, {}, extra)
    if trainer.is_world_process_zero():
        carried = carry_over_base_weights(model_args, unwrap_model(trainer.model), train_args.output_dir)
        if carried:
            print(f"note: carried over unchanged from the original checkpoint (no masked-LM counterpart): {', '.join(carried)}", flush=True)
    return results


def load_masked_lm(model_args: ModelArgs, config):
    """The masked-LM model and whether the checkpoint lacked its MLM head (one line instead of a load report)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the missing head is reported once, in plain words, by the caller
    try:
        model = load_pretrained(AutoModelForMaskedLM, model_args, config, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    model, info = model
    prefixes = ("cls.", "lm_head.", "vocab_transform", "vocab_layer_norm", "vocab_projector")
    missing_head = any(key.startswith(prefixes) for key in info.get("missing_keys", []))
    return model, missing_head


if __name__ == "__main__":
    run_cli(main)
