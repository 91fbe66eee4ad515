"""The text-to-text task: paired text tokenised for a seq2seq model, generation metrics, and the predictions kept.
"""
from __future__ import annotations

from hf_transfer.run.task import Args, TaskData, mixed_precision


def load_seq2seq_task(args: Args) -> TaskData:
    """Text to text (translation, summarisation): paired texts, a seq2seq checkpoint or a warm-started
    encoder-decoder, labels padded with -100, BLEU/chrF/ROUGE of generated text."""
    from transformers import DataCollatorForSeq2Seq

    from hf_transfer.data.seq2seq import Seq2SeqDataArgs, load_seq2seq
    from hf_transfer.metrics.generation import GenerationMetrics
    from hf_transfer.models.loading import load_config, load_tokenizer
    from hf_transfer.models.seq2seq import (
        ENCODER_DECODER,
        EncoderDecoderArgs,
        check_generation_args,
        check_seq2seq_config,
        encoder_decoder_config,
        fit_lengths_to_positions,
        resolve_encoder_decoder,
        warn_missing_prefix,
        warn_prefix_without_t5,
    )

    data_args, train_args = args[Seq2SeqDataArgs], args.training
    check_generation_args(train_args, data_args.max_target_length)
    decoder = resolve_encoder_decoder(args.model, args[EncoderDecoderArgs])
    config = None if decoder else load_config(args.model)
    tokenizer = load_tokenizer(args.model)
    config = config or encoder_decoder_config(args.model, decoder, tokenizer)
    check_seq2seq_config(config, tokenizer, args.model.model_name_or_path)
    data_args.max_source_length, data_args.max_target_length = fit_lengths_to_positions(
        config, data_args.max_source_length, data_args.max_target_length)
    args.strategy.check_config(config)
    warn_missing_prefix(config, data_args.source_prefix)
    warn_prefix_without_t5(config, data_args.source_prefix)
    # A BERT tokenizer starts every target with [CLS], the warm-started decoder's start token: not a label.
    strip = config.decoder_start_token_id if config.model_type == ENCODER_DECODER else None
    data = load_seq2seq(data_args, tokenizer, seed=train_args.seed, strip_label_start=strip)
    metrics = GenerationMetrics(tokenizer) if train_args.predict_with_generate else None
    pad_multiple = 8 if mixed_precision(train_args) and not data_args.pad_to_max_length else None
    return TaskData(
        datasets=data.datasets,
        collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, pad_to_multiple_of=pad_multiple),
        processing_class=tokenizer,
        config=config,
        compute_metrics=metrics,
        report={
            # Not named source_*: those keys are the source task's scores (forgetting) in reports.
            "pair_columns": [data.source_column, data.target_column], "prefix": data_args.source_prefix,
            "truncated": data.truncated, "dropped_empty_pairs": data.dropped_empty,
            "predict_with_generate": train_args.predict_with_generate,
            "generation_max_length": train_args.generation_max_length,
            "generation_num_beams": train_args.generation_num_beams,
        },
        extra={"texts": data.texts, "generation_metrics": metrics, "decoder_name_or_path": decoder},
    )


def keep_seq2seq_predictions(trainer, args: Args, data: TaskData) -> dict:
    """Before training: keep each final evaluation's generated text (a `Task.before_train`; records nothing)."""
    from hf_transfer.metrics.generation import KeepPredictions

    if data.extra.get("generation_metrics") is not None:
        trainer.add_callback(KeepPredictions(data.extra["generation_metrics"], data.extra["texts"]))
    return {}


def write_seq2seq_predictions(trainer, args: Args, results: dict) -> None:
    """After saving (rank 0): the validation/test predictions beside metrics.json (a `Task.after_save`)."""
    from hf_transfer.metrics.generation import KeepPredictions

    keeper = next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, KeepPredictions)), None)
    written = keeper.write(trainer.args.output_dir) if keeper else []
    if written:
        print(f"generated predictions: {', '.join(written)} in {trainer.args.output_dir}", flush=True)


def seq2seq_summary(results: dict) -> list[str]:
    """Summary lines of a seq2seq run: what was cut at the length limits."""
    cut = {s: n for s, n in (results.get("truncated") or {}).items() if n["sources"] or n["targets"]}
    if not cut:
        return []
    return ["truncated sources/targets: " + ", ".join(f"{s} {n['sources']}/{n['targets']}" for s, n in cut.items())]
