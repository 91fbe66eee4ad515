"""Domain-adaptive continued pretraining: masked-LM training of an encoder on unlabelled target-domain text.

    accelerate launch recipes/continued_pretraining.py --train_file reviews.jsonl --max_steps 500
    accelerate launch recipes/continued_pretraining.py --config recipes/configs/continued_pretraining/minilm_imdb.yaml

Reports held-out perplexity before and after. A checkpoint without a masked-LM head (a sentence-embedding model)
gets a new one, which trains alone for the first steps (`--mlm_head_warmup_steps`, default auto) before the encoder
joins. The output folder is a complete checkpoint (a LoRA run is merged first) with its tokenizer, so every recipe
loads it with `--model_name_or_path`.
"""
import math

from hf_transfer.cli import run_cli
from hf_transfer.data.mlm import MaskedLMDataArgs
from hf_transfer.models.loading import carry_over_base_weights, load_masked_lm
from hf_transfer.run.task import Task
from hf_transfer.tasks.masked_lm import (
    MaskedLMHeadArgs,
    build_masked_lm_trainer,
    head_warmup_card_notes,
    head_warmup_report,
    head_warmup_summary,
    load_masked_lm_task,
)


def before_train(trainer, args, data) -> dict:
    data.extra["before"] = trainer.evaluate(metric_key_prefix="before")
    return {"perplexity_before": math.exp(data.extra["before"]["before_loss"])}


def after_train(trainer, args, data, train_metrics) -> dict:
    if args.strategy.strategy == "lora":
        # A merged, plain checkpoint loads in every recipe; an adapter alone would need peft to load.
        trainer.model = trainer.model.merge_and_unload()
    after = trainer.evaluate(metric_key_prefix="validation")
    tokens_seen = data.extra["train_tokens"] * trainer.state.epoch
    return {
        **after,
        "perplexity_after": math.exp(after["validation_loss"]),
        "train_tokens_per_second": tokens_seen / max(train_metrics["train_runtime"], 1e-9),
        "mlm_head_was_missing": data.extra["mlm_head_was_missing"],
        **head_warmup_report(trainer),
    }


def after_save(trainer, args, results) -> None:
    from accelerate.utils import extract_model_from_parallel

    carried = carry_over_base_weights(args.model, extract_model_from_parallel(trainer.model), args.training.output_dir)
    if carried:
        print(f"note: carried over unchanged from the original checkpoint (no masked-LM counterpart): {', '.join(carried)}", flush=True)


TASK = Task(
    name="continued pretraining (masked LM)",
    arguments=(MaskedLMDataArgs, MaskedLMHeadArgs),
    load=load_masked_lm_task,
    build_model=load_masked_lm,
    build_trainer=build_masked_lm_trainer,
    defaults={
        "output_dir": "outputs/continued_pretraining", "learning_rate": 5e-5, "num_train_epochs": 1, "eval_strategy": "no",
        "logging_steps": 50, "save_steps": 500,
        # The masking collator needs `special_tokens_mask` and (whole-word masking) `offset_mapping`, which the
        # Trainer would drop as columns the model does not take; the collator removes them itself.
        "remove_unused_columns": False,
    },
    before_train=before_train,
    after_train=after_train,
    after_save=after_save,
    summary=head_warmup_summary,
    card_notes=head_warmup_card_notes,
    metric="perplexity_after",
    labelled=False,
    pipeline_tag="fill-mask",  # the saved model is a masked LM (the model card's task)
)
main = TASK.main

if __name__ == "__main__":
    run_cli(main)
