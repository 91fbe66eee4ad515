"""Whisper in the audio-classification recipe: log-mel input, an optional shorter window, the encoder's position table.

Whisper's encoder takes log-mel features of a fixed length (30 s: 3000 frames, 1500 positions after the
stride-2 conv stem) and checks every input against its position table. Short clips (keyword spotting, 1 s
digits) padded to 30 s cost 30x the compute of the speech. `--whisper_window_seconds N` pads to N seconds
instead: the feature extractor pads to N s, `config.max_source_positions` becomes 50 * N and the encoder's
position table keeps its first 50 * N rows (the saved checkpoint is then consistent at that window).

What it costs in fidelity: the pretrained encoder always saw 30 s windows, mostly silence padding after the
speech; with a short window the attention sees no padding frames, so the pooled features differ from the
30 s ones and the first fine-tuning steps adapt to that. For classification after fine-tuning this is small
(see benchmarks/results/whisper_fsdd.md); for transcription keep 30 s (the decoder was trained on it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import HfTransferError

WHISPER_MODEL_TYPES = ("whisper",)
FRAMES_PER_SECOND = 100  # hop 160 at 16 kHz
POSITIONS_PER_SECOND = 50  # the conv stem halves the frames


@dataclass
class WhisperArgs:
    whisper_window_seconds: int | None = field(
        default=None,
        metadata={"help": "Whisper only: pad clips to this many seconds instead of the checkpoint's window (30 s). The "
                  "encoder's position table is cut to the window; clips longer than it are cut. See hf_transfer/whisper.py."},
    )

    def __post_init__(self) -> None:
        if self.whisper_window_seconds is not None and not 1 <= self.whisper_window_seconds <= 30:
            raise HfTransferError(f"--whisper_window_seconds must be a whole number of seconds in 1..30, got {self.whisper_window_seconds}")


def is_whisper(config) -> bool:
    return getattr(config, "model_type", None) in WHISPER_MODEL_TYPES


def window_positions(config, seconds: int | None) -> int:
    """Encoder positions of the window: the checkpoint's own, or 50 per second (never more than the table holds)."""
    if seconds is None:
        return config.max_source_positions
    positions = seconds * POSITIONS_PER_SECOND
    if positions > config.max_source_positions:
        raise HfTransferError(
            f"--whisper_window_seconds {seconds} needs {positions} encoder positions; this checkpoint has "
            f"{config.max_source_positions} ({config.max_source_positions // POSITIONS_PER_SECOND} s)"
        )
    return positions


def windowed_feature_extractor(feature_extractor, positions: int):
    """The Whisper feature extractor padding (and cutting) to `positions` encoder positions."""
    samples = positions * 2 * feature_extractor.hop_length
    if samples % feature_extractor.sampling_rate:
        raise HfTransferError("the Whisper window must be a whole number of seconds")
    feature_extractor.chunk_length = samples // feature_extractor.sampling_rate
    feature_extractor.n_samples = samples
    feature_extractor.nb_max_frames = samples // feature_extractor.hop_length
    return feature_extractor


def shorten_encoder(model, positions: int):
    """Keep the first `positions` rows of the encoder's position table and record the window in the config.

    The table is a fixed (sinusoidal, frozen) embedding; rows beyond the window are never read.
    """
    import torch
    from torch import nn

    encoder = model.get_encoder() if hasattr(model, "get_encoder") else model.encoder
    table = encoder.embed_positions
    if table.num_embeddings == positions:
        return model
    short = nn.Embedding(positions, table.embedding_dim)
    with torch.no_grad():
        short.weight.copy_(table.weight[:positions])
    short.weight.requires_grad_(table.weight.requires_grad)
    encoder.embed_positions = short
    encoder.max_source_positions = positions
    model.config.max_source_positions = positions
    return model


class WhisperCollator:
    """Decodes like the audio collator (same reading, resampling, augmentation), then log-mel features padded to the
    window: `input_features` (batch, mel bins, 2 * positions) and `labels`."""

    def __init__(self, audio_collator, feature_extractor) -> None:
        self.audio = audio_collator
        self.feature_extractor = feature_extractor

    @property
    def inputs_vary_per_epoch(self) -> str | bool:
        return self.audio.inputs_vary_per_epoch

    def __call__(self, rows: list[dict]) -> dict:
        from .data.audio import pad_labels

        waveforms = [self.audio.waveform(row) for row in rows]
        batch = self.feature_extractor(waveforms, sampling_rate=self.feature_extractor.sampling_rate, return_tensors="pt",
                                       padding="max_length", truncation=True)
        out = {"input_features": batch["input_features"]}
        if "labels" in rows[0]:
            out["labels"] = pad_labels([row["labels"] for row in rows])
        return out


def load_audio_task(args):
    """The audio-classification recipe's `load`: Whisper checkpoints here, everything else by the wav2vec2-family loader."""
    from .loaders import load_audio_classification_task
    from .models import load_config

    config = load_config(args.model)
    if not is_whisper(config):
        if args[WhisperArgs].whisper_window_seconds is not None:
            raise HfTransferError("--whisper_window_seconds applies to Whisper checkpoints only")
        return load_audio_classification_task(args)
    return _load_whisper_classification(args, config)


def _load_whisper_classification(args, config):
    from transformers import WhisperFeatureExtractor

    from .data.audio import AudioAugmentArgs, AudioCollator, AudioDataArgs, AudioLabelArgs, load_audio_classification
    from .metrics import compute_classification_metrics
    from .speech import check_training_args
    from .task import TaskData

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
    audio = AudioCollator(feature_extractor, max_seconds=data_args.max_duration_seconds, augment=args[AudioAugmentArgs],
                          seed=args.training.seed, long_training_clips=data.report.get("train_too_long_cut", 0))
    return TaskData(
        datasets=data.datasets,
        collator=WhisperCollator(audio, feature_extractor),
        processing_class=feature_extractor,
        config=config,
        compute_metrics=compute_classification_metrics,
        report={"label_names": data.label_names, "whisper_window_seconds": positions // POSITIONS_PER_SECOND, **data.report},
        extra={"whisper_positions": positions},
    )


def build_audio_model(args, data):
    """Load with the checkpoint's own position table (its shape must match), then cut it to the window."""
    import transformers

    from .models import load_pretrained

    if "whisper_positions" not in data.extra:
        return load_pretrained(transformers.AutoModelForAudioClassification, args.model, data.config)
    # The auto class: a concrete one has no from_config for --from_scratch; whisper maps to WhisperForAudioClassification.
    model = load_pretrained(transformers.AutoModelForAudioClassification, args.model, data.config)
    return shorten_encoder(model, data.extra["whisper_positions"])


def prepare_audio_model(model, args):
    """wav2vec2 family: freeze its conv feature encoder. Whisper: the same option freezes its conv stem (conv1, conv2);
    its position table is always frozen. Strategies only ever train what was trainable before them."""
    from .loaders import prepare_speech_model
    from .speech import SpeechModelArgs
    from .strategies import apply_strategy

    if not is_whisper(model.config):
        return prepare_speech_model(model, args)
    # The sinusoidal position table is frozen in transformers' Whisper and stays so under every strategy.
    model.encoder.embed_positions.requires_grad_(False)
    if args[SpeechModelArgs].freeze_feature_encoder:
        for conv in (model.encoder.conv1, model.encoder.conv2):
            conv.requires_grad_(False)
    return apply_strategy(model, args.strategy)


# ---- Speech recognition with Whisper: a sequence-to-sequence task (generation, WER/CER), beside the CTC recipe ----

def normalise_for_wer(text: str) -> str:
    """Lower case, punctuation removed, spaces collapsed: Whisper writes "Zero." where a transcript says "zero"."""
    import re

    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


class WhisperRecognitionMetrics:
    """WER/CER of generated text (predict_with_generate) against the transcripts, both normalised (normalise_for_wer)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, eval_pred) -> dict:
        import numpy as np

        from .ctc import character_error_rate, word_error_rate

        predictions, labels = eval_pred.predictions, eval_pred.label_ids
        predictions = np.where(predictions < 0, self.tokenizer.pad_token_id, predictions)
        labels = np.where(labels < 0, self.tokenizer.pad_token_id, labels)
        hyps = [normalise_for_wer(t) for t in self.tokenizer.batch_decode(predictions, skip_special_tokens=True)]
        refs = [normalise_for_wer(t) for t in self.tokenizer.batch_decode(labels, skip_special_tokens=True)]
        return {"wer": word_error_rate(refs, hyps), "cer": character_error_rate(refs, hyps)}


def load_whisper_recognition_task(args):
    """Whisper speech recognition: transcripts tokenised by the checkpoint's own tokenizer (its prefix tokens, the
    decoder's start token removed: the model prepends it when it shifts the labels), log-mel features in the
    checkpoint's window (30 s: the decoder was trained on it), WER/CER of generated text."""
    from datasets import DatasetDict
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperProcessor

    from .ctc import TEXT_COLUMNS, TranscriptArgs, normalize_transcript
    from .data.audio import AudioAugmentArgs, AudioCollator, AudioDataArgs, hold_out_and_subsample, load_audio_splits
    from .models import load_config
    from .speech import check_training_args
    from .task import TaskData

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
    raw = load_audio_splits(data_args, text_args.text_column, TEXT_COLUMNS, "text_column", "transcript", folders_give=None)
    splits = {}
    for split, dataset in raw.items():
        texts = list(dataset["target"])
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise HfTransferError(f"clips of the {split} split have no transcript; fill or remove them")
        texts = [normalize_transcript(t, text_args) for t in texts]
        start = config.decoder_start_token_id
        labels = [ids[1:] if ids and ids[0] == start else ids for ids in tokenizer(texts).input_ids]
        too_long = max(len(ids) for ids in labels)
        if too_long > config.max_target_positions:
            raise HfTransferError(f"a {split} transcript is {too_long} tokens; Whisper's decoder takes {config.max_target_positions}")
        splits[split] = dataset.remove_columns("target").add_column("text", texts).add_column("labels", labels)
    data = hold_out_and_subsample(DatasetDict(splits), data_args, args.training.seed, labelled=False)
    audio = AudioCollator(feature_extractor, max_seconds=positions // POSITIONS_PER_SECOND, augment=args[AudioAugmentArgs],
                          seed=args.training.seed)
    return TaskData(
        datasets=data,
        collator=WhisperCollator(audio, feature_extractor),
        processing_class=WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer),  # both saved with the model
        config=config,
        compute_metrics=WhisperRecognitionMetrics(tokenizer),
        report={"whisper_window_seconds": positions // POSITIONS_PER_SECOND},
        extra={"whisper_positions": positions},
    )


def build_recognition_model(args, data):
    import transformers

    from .models import load_pretrained

    model = load_pretrained(transformers.AutoModelForSpeechSeq2Seq, args.model, data.config)  # auto: --from_scratch needs from_config
    return shorten_encoder(model, data.extra["whisper_positions"])


def prepare_recognition_model(model, args):
    """The encoder's sinusoidal position table stays frozen (as in transformers' Whisper; the decoder's positions are
    learned and train); the conv stem follows --freeze_feature_encoder."""
    from .speech import SpeechModelArgs
    from .strategies import apply_strategy

    encoder = model.get_encoder()
    encoder.embed_positions.requires_grad_(False)
    if args[SpeechModelArgs].freeze_feature_encoder:
        for conv in (encoder.conv1, encoder.conv2):
            conv.requires_grad_(False)
    return apply_strategy(model, args.strategy)

