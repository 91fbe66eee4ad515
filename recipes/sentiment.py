"""Text classification (sentiment by default) with any transfer strategy.

    accelerate launch recipes/sentiment.py                                   # offline demo: MiniLM on the embedded reviews
    accelerate launch recipes/sentiment.py --config recipes/configs/sentiment/minilm_lora.yaml
    accelerate launch recipes/sentiment.py --model_name_or_path roberta-base --dataset_name imdb --strategy gradual

From Python (a notebook): `from recipes.sentiment import main; metrics = main(["--strategy", "lora"])`.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `hf_transfer` importable from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import AutoModel, AutoModelForSequenceClassification, TrainingArguments, set_seed

from hf_transfer import StrategyArgs, TransferTrainer, apply_strategy, parse_args
from hf_transfer.data.text import TextDataArgs, load_text_classification, text_collator
from hf_transfer.errors import run_cli
from hf_transfer.features import BaselineArgs, frozen_baseline
from hf_transfer.metrics import compute_classification_metrics
from hf_transfer.models import ModelArgs, load_config, load_pretrained, load_tokenizer
from hf_transfer.report import RunClock, finish
from hf_transfer.training import check_resume, recipe_defaults

# Tuned for the embedded default (320 short reviews): 5 epochs at 1e-4 take under a minute on 2 CPU cores.
DEFAULTS = recipe_defaults(output_dir="outputs/sentiment", learning_rate=1e-4, num_train_epochs=5)


ARGUMENTS = (ModelArgs, TextDataArgs, StrategyArgs, BaselineArgs, TrainingArguments)


def parse(argv: list[str] | None = None) -> tuple:
    return parse_args(ARGUMENTS, argv, DEFAULTS)


def main(argv: list[str] | None = None) -> dict:
    clock = RunClock()
    model_args, data_args, strategy, baseline_args, train_args = parse(argv)
    resume = check_resume(train_args)

    # Everything that can be wrong with the input is checked here, before any weights load or files are written.
    config = load_config(model_args)
    strategy.check_config(config)
    tokenizer = load_tokenizer(model_args)
    data = load_text_classification(data_args, tokenizer, seed=train_args.seed)
    config.id2label, config.label2id = data.id2label, data.label2id

    set_seed(train_args.seed)  # the new head's initialisation (or a from-scratch model's) is part of the run
    model = load_pretrained(AutoModelForSequenceClassification, model_args, config)
    model = apply_strategy(model, strategy)
    collator = text_collator(data_args, tokenizer, mixed_precision=train_args.bf16 or train_args.fp16)
    trainer = TransferTrainer(
        model=model,
        args=train_args,
        strategy=strategy,
        train_dataset=data.datasets["train"],
        eval_dataset=data.datasets["validation"],
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_classification_metrics,
    )
    source = data.datasets.get("source")
    source_before = trainer.evaluate(source, metric_key_prefix="source_before") if source is not None else {}
    train_result = trainer.train(resume_from_checkpoint=resume)

    extra = {
        "model_name_or_path": model_args.model_name_or_path,
        "strategy": strategy.strategy,
        "label_names": data.label_names,
        "dropped_empty_texts": data.dropped_empty,
        "from_scratch": model_args.from_scratch,
        **{k: v for k, v in source_before.items() if k.endswith(("_accuracy", "_f1", "_loss"))},
    }
    if baseline_args.frozen_baseline and trainer.is_world_process_zero():
        backbone = load_pretrained(AutoModel, model_args, load_config(model_args)).to(train_args.device)
        scores = frozen_baseline(backbone, data.datasets["train"], data.datasets["validation"], collator, train_args.seed)
        extra.update({f"baseline_{k}": v for k, v in scores.items()})
    eval_splits = {split: data.datasets[split] for split in ("validation", "test", "source") if split in data.datasets}
    return finish(trainer, clock, train_result.metrics, eval_splits, extra)


if __name__ == "__main__":
    run_cli(main)
