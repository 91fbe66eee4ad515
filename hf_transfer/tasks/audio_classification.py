"""The audio-classification task: wav2vec2, HuBERT and WavLM encoders, and Whisper's encoder in a shorter window.
"""
from __future__ import annotations

from hf_transfer.errors import HfTransferError
from hf_transfer.models.whisper import (
    POSITIONS_PER_SECOND,
    WhisperArgs,
    is_whisper,
    shorten_encoder,
    window_positions,
    windowed_feature_extractor,
)
from hf_transfer.run.task import Args, TaskData
from hf_transfer.tasks.shift import shift_plan, with_shift


def speech_setup(args: Args, **config_overrides):
    """What both wav2vec2-family tasks load first: the checked training options, the config and the feature extractor."""
    from hf_transfer.models.speech import (
        SpeechModelArgs,
        check_training_args,
        load_feature_extractor,
        load_speech_config,
    )

    check_training_args(args.training)
    speech_args = args[SpeechModelArgs]
    config = load_speech_config(args.model, speech_args, **config_overrides)
    args.strategy.check_config(config)
    return config, load_feature_extractor(args.model, speech_args)


def audio_collator(args: Args, feature_extractor, config, epoch, shift=None):
    """The wav2vec2-family collator; `epoch`: the run's `TrainingEpoch` (the task registers it as a callback)."""
    from hf_transfer.data.audio import AudioAugmentArgs, AudioCollator, AudioDataArgs
    from hf_transfer.models.speech import min_batch_samples

    return AudioCollator(
        feature_extractor, max_seconds=args[AudioDataArgs].max_duration_seconds, augment=args[AudioAugmentArgs],
        min_samples=min_batch_samples(config), seed=args.training.seed, shift=shift, epoch=epoch,
    )


def decode_clip(args: Args, sampling_rate: int):
    """row -> its clip as the collator reads an evaluation row (for the shift preview)."""
    from hf_transfer.data.audio import AudioDataArgs
    from hf_transfer.data.audio_io import read_audio

    return lambda row: read_audio(row["audio"], sampling_rate, max_seconds=args[AudioDataArgs].max_duration_seconds)


def load_audio_classification_task(args: Args) -> TaskData:
    """Audio classification: clips checked from their headers, decoded lazily in the collator."""
    from hf_transfer.data.audio import (
        AudioDataArgs,
        AudioLabelArgs,
        load_audio_classification,
    )
    from hf_transfer.data.randomness import TrainingEpoch
    from hf_transfer.metrics.classification import compute_classification_metrics
    from hf_transfer.models.speech import min_input_samples

    config, feature_extractor = speech_setup(args)
    data = load_audio_classification(
        args[AudioDataArgs], args[AudioLabelArgs], feature_extractor.sampling_rate, min_input_samples(config),
        seed=args.training.seed,
    )
    config.id2label, config.label2id = data.id2label, data.label2id
    epoch = TrainingEpoch()  # keys each training clip's speed, noise and shift draws (hf_transfer/data/randomness.py)
    shift = shift_plan(args, epoch)  # --synthetic_shift, --eval_shift (hf_transfer/data/shift); None without them
    task_data = TaskData(
        datasets=data.datasets,
        collator=audio_collator(args, feature_extractor, config, epoch, shift),
        processing_class=feature_extractor,
        config=config,
        compute_metrics=compute_classification_metrics,
        report={"label_names": data.label_names, **data.report},
        callbacks=[epoch],
    )
    rate = feature_extractor.sampling_rate
    return with_shift(task_data, shift, decode=decode_clip(args, rate), sampling_rate=rate)


def load_audio_task(args):
    """The audio-classification recipe's `load`: Whisper checkpoints here, everything else by the wav2vec2-family loader."""
    from hf_transfer.models.loading import load_config

    config = load_config(args.model)
    if not is_whisper(config):
        if args[WhisperArgs].whisper_window_seconds is not None:
            raise HfTransferError("--whisper_window_seconds applies to Whisper checkpoints only")
        return load_audio_classification_task(args)
    return _load_whisper_classification(args, config)


def _load_whisper_classification(args, config):
    from transformers import WhisperFeatureExtractor

    from hf_transfer.data.audio import (
        AudioAugmentArgs,
        AudioCollator,
        AudioDataArgs,
        AudioLabelArgs,
        WhisperCollator,
        load_audio_classification,
    )
    from hf_transfer.data.randomness import TrainingEpoch
    from hf_transfer.metrics.classification import compute_classification_metrics
    from hf_transfer.models.speech import check_training_args
    from hf_transfer.run.task import TaskData

    check_training_args(args.training)
    args.strategy.check_config(config)
    positions = window_positions(config, args[WhisperArgs].whisper_window_seconds)
    try:
        feature_extractor = WhisperFeatureExtractor.from_pretrained(args.model.model_name_or_path, **args.model.load_kwargs())
    except (OSError, ValueError) as error:
        raise HfTransferError(f"cannot load the Whisper feature extractor of '{args.model.model_name_or_path}': "
                              f"{str(error).strip().splitlines()[0]}") from error
    windowed_feature_extractor(feature_extractor, positions)
    data_args = args[AudioDataArgs]
    data = load_audio_classification(data_args, args[AudioLabelArgs], feature_extractor.sampling_rate, 1, seed=args.training.seed)
    config.id2label, config.label2id = data.id2label, data.label2id
    epoch = TrainingEpoch()
    shift = shift_plan(args, epoch)
    audio = AudioCollator(feature_extractor, max_seconds=data_args.max_duration_seconds, augment=args[AudioAugmentArgs],
                          seed=args.training.seed, long_training_clips=data.report.get("train_too_long_cut", 0), shift=shift,
                          epoch=epoch)
    task_data = TaskData(
        datasets=data.datasets,
        collator=WhisperCollator(audio, feature_extractor),
        processing_class=feature_extractor,
        config=config,
        compute_metrics=compute_classification_metrics,
        report={"label_names": data.label_names, "whisper_window_seconds": positions // POSITIONS_PER_SECOND, **data.report},
        extra={"whisper_positions": positions},
        callbacks=[epoch],
    )
    rate = feature_extractor.sampling_rate
    return with_shift(task_data, shift, decode=decode_clip(args, rate), sampling_rate=rate)


def build_audio_model(args, data):
    """Load with the checkpoint's own position table (its shape must match), then cut it to the window."""
    import transformers

    from hf_transfer.models.loading import load_pretrained

    if "whisper_positions" not in data.extra:
        return load_pretrained(transformers.AutoModelForAudioClassification, args.model, data.config)
    # The auto class: a concrete one has no from_config for --from_scratch; whisper maps to WhisperForAudioClassification.
    model = load_pretrained(transformers.AutoModelForAudioClassification, args.model, data.config)
    return shorten_encoder(model, data.extra["whisper_positions"])


def prepare_audio_model(model, args):
    """wav2vec2 family: freeze its conv feature encoder. Whisper: the same option freezes its conv stem (conv1, conv2);
    its position table is always frozen. Strategies only ever train what was trainable before them."""
    if not is_whisper(model.config):
        return prepare_speech_model(model, args)
    return prepare_whisper_model(model, args)


def prepare_whisper_model(model, args: Args):
    """Any Whisper model (a classifier, or the whole encoder-decoder): the encoder's sinusoidal position table stays
    frozen, as in transformers' Whisper, under every strategy (the decoder's positions are learned and train);
    --freeze_feature_encoder freezes the conv stem (conv1, conv2). Then the strategy."""
    from hf_transfer.models.speech import SpeechModelArgs
    from hf_transfer.strategies import apply_strategy

    encoder = model.get_encoder()
    encoder.embed_positions.requires_grad_(False)
    if args[SpeechModelArgs].freeze_feature_encoder:
        for conv in (encoder.conv1, encoder.conv2):
            conv.requires_grad_(False)
    return apply_strategy(model, args.strategy)


def prepare_speech_model(model, args: Args):
    """Freeze the convolutional feature encoder (when asked) before the strategy, so no strategy ever trains it."""
    from hf_transfer.models.speech import SpeechModelArgs
    from hf_transfer.models.speech import prepare_speech_model as prepare

    return prepare(model, args[SpeechModelArgs], args.strategy)
