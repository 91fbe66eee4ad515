"""Speech recognition (CTC) with a wav2vec2, HuBERT or WavLM encoder: a character vocabulary, greedy decoding, WER/CER.

    accelerate launch recipes/speech_recognition.py --train_file train.csv --validation_file dev.csv   # columns: path, text
    accelerate launch recipes/speech_recognition.py --config recipes/configs/speech_recognition/wav2vec2_full.yaml \
        --dataset_name hf-internal-testing/librispeech_asr_dummy --dataset_config_name clean --train_split_name validation
    accelerate launch recipes/speech_recognition.py --model_name_or_path facebook/wav2vec2-base-960h \
        --tokenizer_name_or_path facebook/wav2vec2-base-960h --text_case upper --train_file train.csv  # keep its CTC head

From Python (a notebook): `from recipes.speech_recognition import main; metrics = main([...])`.
The vocabulary is built from the training transcripts and saved with the processor in --output_dir.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `hf_transfer` importable from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import AutoModelForCTC, TrainingArguments, Wav2Vec2Processor, set_seed

from hf_transfer import StrategyArgs, TransferTrainer, parse_args
from hf_transfer.ctc import TranscriptArgs, argmax_logits, check_ctc_head, ctc_metrics, load_speech_recognition
from hf_transfer.data.audio import AudioAugmentArgs, AudioCollator, AudioDataArgs
from hf_transfer.errors import run_cli
from hf_transfer.models import ModelArgs, load_pretrained
from hf_transfer.report import RunClock, finish
from hf_transfer.speech import (
    SpeechModelArgs, check_training_args, load_feature_extractor, load_speech_config, min_batch_samples, min_input_samples,
    prepare_speech_model,
)
from hf_transfer.training import check_resume, recipe_defaults

# The Hugging Face CTC example's choices: clips over 20 s skipped (a cut would lose transcribed words),
# length-grouped batches (little padding, and greedy decoding sees few padded frames).
DEFAULTS = recipe_defaults(
    output_dir="outputs/speech_recognition", model_name_or_path="facebook/wav2vec2-base", learning_rate=1e-4,
    num_train_epochs=30, warmup_steps=0.1, per_device_eval_batch_size=32, remove_unused_columns=False,
    max_duration_seconds=20.0, long_audio="skip", train_sampling_strategy="group_by_length",
)


ARGUMENTS = (ModelArgs, AudioDataArgs, TranscriptArgs, AudioAugmentArgs, SpeechModelArgs, StrategyArgs, TrainingArguments)


def parse(argv: list[str] | None = None) -> tuple:
    return parse_args(ARGUMENTS, argv, DEFAULTS)


def main(argv: list[str] | None = None) -> dict:
    clock = RunClock()
    model_args, data_args, text_args, augment_args, speech_args, strategy, train_args = parse(argv)
    resume = check_resume(train_args)
    check_training_args(train_args)

    # Everything that can be wrong with the input is checked here, before any weights load or files are written.
    # Mean CTC loss (per target character, then over the batch; the config's default sums) keeps the loss scale
    # independent of transcript length and batch size; zero_infinity zeroes the loss of a speed-perturbed clip
    # that ends up shorter than its transcript instead of letting it turn the gradients into NaN.
    config = load_speech_config(model_args, speech_args, ctc_loss_reduction="mean", ctc_zero_infinity=True)
    strategy.check_config(config)
    feature_extractor = load_feature_extractor(model_args, speech_args)
    data = load_speech_recognition(
        data_args, text_args, config, feature_extractor.sampling_rate, min_input_samples(config),
        seed=train_args.seed, load_kwargs=model_args.load_kwargs(),
    )
    tokenizer = data.tokenizer
    check_ctc_head(config, tokenizer, model_args.model_name_or_path, tokenizer_given=bool(text_args.tokenizer_name_or_path))
    config.vocab_size, config.pad_token_id = len(tokenizer), tokenizer.pad_token_id
    processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    set_seed(train_args.seed)  # the new head's initialisation (or a from-scratch model's) is part of the run
    model = load_pretrained(AutoModelForCTC, model_args, config)
    model = prepare_speech_model(model, speech_args, strategy)
    collator = AudioCollator(
        feature_extractor, max_seconds=data_args.max_duration_seconds, augment=augment_args,
        min_samples=min_batch_samples(config), seed=train_args.seed,
    )
    trainer = TransferTrainer(
        model=model,
        args=train_args,
        strategy=strategy,
        train_dataset=data.datasets["train"],
        eval_dataset=data.datasets["validation"],
        processing_class=processor,  # saved with the model: feature extractor settings and the vocabulary
        data_collator=collator,
        compute_metrics=ctc_metrics(tokenizer),
        preprocess_logits_for_metrics=argmax_logits,
    )
    train_result = trainer.train(resume_from_checkpoint=resume)

    extra = {
        "model_name_or_path": model_args.model_name_or_path,
        "from_scratch": model_args.from_scratch,
        "strategy": strategy.strategy,
        "vocabulary_size": len(tokenizer),
        **data.report,
    }
    eval_splits = {split: data.datasets[split] for split in ("validation", "test") if split in data.datasets}
    return finish(trainer, clock, train_result.metrics, eval_splits, extra)


if __name__ == "__main__":
    run_cli(main)
