"""Audio classification (keyword spotting, speaker or language ID) with a wav2vec2, HuBERT or WavLM encoder.

    accelerate launch recipes/audio_classification.py --train_dir clips/train --validation_dir clips/dev   # a folder per label
    accelerate launch recipes/audio_classification.py --config recipes/configs/audio_classification/wav2vec2_lora.yaml \
        --train_file clips.csv --label_column speaker                                                     # a table of paths
    accelerate launch recipes/audio_classification.py --model_name_or_path facebook/hubert-base-ls960 \
        --dataset_name <hub/dataset> --audio_column audio --label_column label --max_duration_seconds 1

From Python (a notebook): `from recipes.audio_classification import main; metrics = main([...])`.
The convolutional feature encoder stays frozen (--freeze_feature_encoder) under every strategy.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `hf_transfer` importable from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import AutoModelForAudioClassification, TrainingArguments, set_seed

from hf_transfer import StrategyArgs, TransferTrainer, parse_args
from hf_transfer.data.audio import AudioAugmentArgs, AudioCollator, AudioDataArgs, AudioLabelArgs, load_audio_classification
from hf_transfer.errors import run_cli
from hf_transfer.metrics import compute_classification_metrics
from hf_transfer.models import ModelArgs, load_pretrained
from hf_transfer.report import RunClock, finish
from hf_transfer.speech import (
    SpeechModelArgs, check_training_args, load_feature_extractor, load_speech_config, min_batch_samples, min_input_samples,
    prepare_speech_model,
)
from hf_transfer.training import check_resume, recipe_defaults

# The Hugging Face audio-classification example's settings (lr 3e-5, 10% warmup); clips decode in the collator,
# so the raw columns must reach it.
DEFAULTS = recipe_defaults(
    output_dir="outputs/audio_classification", model_name_or_path="facebook/wav2vec2-base", learning_rate=3e-5,
    num_train_epochs=5, warmup_steps=0.1, per_device_eval_batch_size=32, remove_unused_columns=False,
    max_duration_seconds=10.0,
)


ARGUMENTS = (ModelArgs, AudioDataArgs, AudioLabelArgs, AudioAugmentArgs, SpeechModelArgs, StrategyArgs, TrainingArguments)


def parse(argv: list[str] | None = None) -> tuple:
    return parse_args(ARGUMENTS, argv, DEFAULTS)


def main(argv: list[str] | None = None) -> dict:
    clock = RunClock()
    model_args, data_args, label_args, augment_args, speech_args, strategy, train_args = parse(argv)
    resume = check_resume(train_args)
    check_training_args(train_args)

    # Everything that can be wrong with the input is checked here, before any weights load or files are written.
    config = load_speech_config(model_args, speech_args)
    strategy.check_config(config)
    feature_extractor = load_feature_extractor(model_args, speech_args)
    data = load_audio_classification(
        data_args, label_args, feature_extractor.sampling_rate, min_input_samples(config), seed=train_args.seed
    )
    config.id2label, config.label2id = data.id2label, data.label2id

    set_seed(train_args.seed)  # the new head's initialisation (or a from-scratch model's) is part of the run
    model = load_pretrained(AutoModelForAudioClassification, model_args, config)
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
        processing_class=feature_extractor,
        data_collator=collator,
        compute_metrics=compute_classification_metrics,
    )
    train_result = trainer.train(resume_from_checkpoint=resume)

    extra = {
        "model_name_or_path": model_args.model_name_or_path,
        "from_scratch": model_args.from_scratch,
        "strategy": strategy.strategy,
        "label_names": data.label_names,
        **data.report,
    }
    eval_splits = {split: data.datasets[split] for split in ("validation", "test") if split in data.datasets}
    return finish(trainer, clock, train_result.metrics, eval_splits, extra)


if __name__ == "__main__":
    run_cli(main)
