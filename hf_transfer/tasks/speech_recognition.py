"""Speech recognition tasks: CTC on a wav2vec2-family encoder (a character vocabulary, greedy decoding) and Whisper
(sequence to sequence, generated text); both scored by WER/CER.
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
from hf_transfer.tasks.audio_classification import (
    audio_collator,
    prepare_whisper_model,
    speech_setup,
)


def check_ctc_head(config, tokenizer, model_name: str, tokenizer_given: bool) -> None:
    """A fine-tuned CTC checkpoint's lm_head is tied to its vocabulary: keep that vocabulary or start from a base model."""
    if not any(name.endswith("ForCTC") for name in (config.architectures or [])):
        return
    if not tokenizer_given:
        raise HfTransferError(
            f"'{model_name}' already has a CTC head tied to its own vocabulary: pass --tokenizer_name_or_path {model_name} "
            "to keep it, or start from a base checkpoint (e.g. facebook/wav2vec2-base) to learn a new one"
        )
    if config.vocab_size != len(tokenizer):
        raise HfTransferError(
            f"the tokenizer has {len(tokenizer)} tokens but the CTC head of '{model_name}' has {config.vocab_size} outputs; "
            "use the checkpoint's own tokenizer"
        )


def load_ctc_task(args: Args) -> TaskData:
    """CTC speech recognition: normalised transcripts, a character vocabulary, WER/CER from greedy decoding."""
    from transformers import Wav2Vec2Processor

    from hf_transfer.data.audio import AudioDataArgs
    from hf_transfer.data.randomness import TrainingEpoch
    from hf_transfer.data.transcripts import TranscriptArgs, load_speech_recognition
    from hf_transfer.metrics.speech import argmax_logits, ctc_metrics
    from hf_transfer.models.speech import min_input_samples

    # Mean CTC loss (per target character, then over the batch; the config's default sums) keeps the loss scale
    # independent of transcript length and batch size; zero_infinity zeroes the loss of a speed-perturbed clip
    # that ends up shorter than its transcript instead of letting it turn the gradients into NaN.
    config, feature_extractor = speech_setup(args, ctc_loss_reduction="mean", ctc_zero_infinity=True)
    text_args = args[TranscriptArgs]
    data = load_speech_recognition(
        args[AudioDataArgs], text_args, config, feature_extractor.sampling_rate, min_input_samples(config),
        seed=args.training.seed, load_kwargs=args.model.load_kwargs(),
    )
    tokenizer = data.tokenizer
    check_ctc_head(config, tokenizer, args.model.model_name_or_path, tokenizer_given=bool(text_args.tokenizer_name_or_path))
    config.vocab_size, config.pad_token_id = len(tokenizer), tokenizer.pad_token_id
    epoch = TrainingEpoch()  # keys each training clip's speed and noise draws (hf_transfer/data/randomness.py)
    return TaskData(
        datasets=data.datasets,
        collator=audio_collator(args, feature_extractor, config, epoch),
        # Saved with the model: the feature extractor's settings and the vocabulary.
        processing_class=Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer),
        config=config,
        compute_metrics=ctc_metrics(tokenizer),
        preprocess_logits_for_metrics=argmax_logits,
        report={"vocabulary_size": len(tokenizer), **data.report},
        callbacks=[epoch],
    )


def load_whisper_recognition_task(args):
    """Whisper speech recognition: transcripts tokenised by the checkpoint's own tokenizer (its prefix tokens, the
    decoder's start token removed: the model prepends it when it shifts the labels), log-mel features in the
    checkpoint's window (30 s: the decoder was trained on it), WER/CER of generated text."""
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperProcessor

    from hf_transfer.data.audio import (
        AudioAugmentArgs,
        AudioCollator,
        AudioDataArgs,
        WhisperCollator,
        check_splits,
    )
    from hf_transfer.data.randomness import TrainingEpoch
    from hf_transfer.data.transcripts import TranscriptArgs, load_transcribed_splits
    from hf_transfer.metrics.speech import WhisperRecognitionMetrics
    from hf_transfer.models.loading import load_config
    from hf_transfer.models.speech import check_training_args
    from hf_transfer.run.task import TaskData

    check_training_args(args.training)
    config = load_config(args.model)
    if not is_whisper(config):
        raise HfTransferError(f"model type '{config.model_type}' is not Whisper; for wav2vec2, HuBERT or WavLM use "
                              "recipes/speech_recognition.py (CTC)")
    args.strategy.check_config(config)
    if not args.training.predict_with_generate:
        raise HfTransferError("Whisper recognition is scored on generated text: pass --predict_with_generate true")
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model.model_name_or_path, **args.model.load_kwargs())
        feature_extractor = WhisperFeatureExtractor.from_pretrained(args.model.model_name_or_path, **args.model.load_kwargs())
    except (OSError, ValueError) as error:
        raise HfTransferError(f"cannot load the Whisper tokenizer/feature extractor of '{args.model.model_name_or_path}': "
                              f"{str(error).strip().splitlines()[0]}") from error
    data_args, text_args = args[AudioDataArgs], args[TranscriptArgs]
    positions = window_positions(config, args[WhisperArgs].whisper_window_seconds)
    windowed_feature_extractor(feature_extractor, positions)
    window = positions // POSITIONS_PER_SECOND
    if data_args.long_audio == "cut":
        raise HfTransferError("--long_audio cut would cut transcribed speech away from its transcript; use --long_audio skip")
    if data_args.max_duration_seconds is None or data_args.max_duration_seconds > window:
        data_args.max_duration_seconds = window  # the encoder hears `window` seconds: a longer clip would lose its end
    data = load_transcribed_splits(data_args, text_args, args.training.seed)
    # Every clip checked as the CTC recipe checks it (unreadable and over-long clips skipped and counted), and the
    # training split marked for --speed_factors / --noise_snr_db.
    data, audio_report = check_splits(data, data_args, feature_extractor.sampling_rate, 1)
    start = config.decoder_start_token_id
    for split, dataset in data.items():
        labels = [ids[1:] if ids and ids[0] == start else ids for ids in tokenizer(list(dataset["text"])).input_ids]
        longest = max(len(ids) for ids in labels)
        if longest > config.max_target_positions:
            raise HfTransferError(f"a {split} transcript is {longest} tokens; Whisper's decoder takes {config.max_target_positions}")
        data[split] = dataset.add_column("labels", labels)
    epoch = TrainingEpoch()
    audio = AudioCollator(feature_extractor, max_seconds=window, augment=args[AudioAugmentArgs], seed=args.training.seed,
                          epoch=epoch)
    return TaskData(
        datasets=data,
        collator=WhisperCollator(audio, feature_extractor),
        processing_class=WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer),  # both saved with the model
        config=config,
        compute_metrics=WhisperRecognitionMetrics(tokenizer),
        report={"whisper_window_seconds": window, **audio_report},
        extra={"whisper_positions": positions},
        callbacks=[epoch],
    )


def build_recognition_model(args, data):
    import transformers

    from hf_transfer.models.loading import load_pretrained

    model = load_pretrained(transformers.AutoModelForSpeechSeq2Seq, args.model, data.config)  # auto: --from_scratch needs from_config
    return shorten_encoder(model, data.extra["whisper_positions"])


# The recognition recipe's prepare step: the encoder-decoder is prepared as every Whisper model is.
prepare_recognition_model = prepare_whisper_model
