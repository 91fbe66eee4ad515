"""Task loaders: a recipe's `load` step, joining a model's config and processor to the checked data as a `TaskData`.

Each loader reads options by type from `Args`, checks everything that can be wrong before any weights
load, and returns what `run_task` needs. The data modules (`data/`) know nothing of models; the model
module knows nothing of data; this is where the two meet.
"""
from __future__ import annotations

from .errors import HfTransferError
from .task import Args, TaskData, mixed_precision


def load_text_classification_task(args: Args) -> TaskData:
    """Text classification: tokenizer and config of the checkpoint, labelled splits, per-batch padding."""
    from .data.text import TextDataArgs, load_text_classification, text_collator
    from .metrics import compute_classification_metrics
    from .models import load_config, load_tokenizer

    data_args = args[TextDataArgs]
    config = load_config(args.model)
    args.strategy.check_config(config)  # before the data is tokenised: an unknown architecture fails in a second
    tokenizer = load_tokenizer(args.model)
    ensure_pad_token(tokenizer, config)
    data = load_text_classification(data_args, tokenizer, seed=args.training.seed)
    config.id2label, config.label2id = data.id2label, data.label2id
    return TaskData(
        datasets=data.datasets,
        collator=text_collator(data_args, tokenizer, mixed_precision=mixed_precision(args.training)),
        processing_class=tokenizer,
        config=config,
        compute_metrics=compute_classification_metrics,
        report={"label_names": data.label_names, "dropped_empty_texts": data.dropped_empty},
        extra={"domains": data.domains},
    )


def ensure_pad_token(tokenizer, config) -> None:
    """Batches need a pad token. Causal checkpoints (GPT-2) have none: pad with the end-of-text token, as their own
    model cards do, and tell the model which id is padding (its classifier reads the last non-pad token)."""
    if tokenizer.pad_token is not None:
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = tokenizer.pad_token_id
        return
    if tokenizer.eos_token is None:
        raise HfTransferError("the tokenizer has neither a pad token nor an end-of-text token to pad with; "
                              "use a checkpoint whose tokenizer defines one")
    tokenizer.pad_token = tokenizer.eos_token
    config.pad_token_id = tokenizer.eos_token_id
    print(f"note: the tokenizer has no pad token; padding with its end-of-text token {tokenizer.eos_token!r}", flush=True)


def _speech_setup(args: Args, **config_overrides):
    """What both wav2vec2-family tasks load first: the checked training options, the config and the feature extractor."""
    from .speech import SpeechModelArgs, check_training_args, load_feature_extractor, load_speech_config

    check_training_args(args.training)
    speech_args = args[SpeechModelArgs]
    config = load_speech_config(args.model, speech_args, **config_overrides)
    args.strategy.check_config(config)
    return config, load_feature_extractor(args.model, speech_args)


def _audio_collator(args: Args, feature_extractor, config):
    from .data.audio import AudioAugmentArgs, AudioCollator, AudioDataArgs
    from .speech import min_batch_samples

    return AudioCollator(
        feature_extractor, max_seconds=args[AudioDataArgs].max_duration_seconds, augment=args[AudioAugmentArgs],
        min_samples=min_batch_samples(config), seed=args.training.seed,
    )


def load_audio_classification_task(args: Args) -> TaskData:
    """Audio classification: clips checked from their headers, decoded lazily in the collator."""
    from .data.audio import AudioDataArgs, AudioLabelArgs, load_audio_classification
    from .metrics import compute_classification_metrics
    from .speech import min_input_samples

    config, feature_extractor = _speech_setup(args)
    data = load_audio_classification(
        args[AudioDataArgs], args[AudioLabelArgs], feature_extractor.sampling_rate, min_input_samples(config),
        seed=args.training.seed,
    )
    config.id2label, config.label2id = data.id2label, data.label2id
    return TaskData(
        datasets=data.datasets,
        collator=_audio_collator(args, feature_extractor, config),
        processing_class=feature_extractor,
        config=config,
        compute_metrics=compute_classification_metrics,
        report={"label_names": data.label_names, **data.report},
    )


def load_ctc_task(args: Args) -> TaskData:
    """CTC speech recognition: normalised transcripts, a character vocabulary, WER/CER from greedy decoding."""
    from transformers import Wav2Vec2Processor

    from .ctc import TranscriptArgs, argmax_logits, check_ctc_head, ctc_metrics, load_speech_recognition
    from .data.audio import AudioDataArgs
    from .speech import min_input_samples

    # Mean CTC loss (per target character, then over the batch; the config's default sums) keeps the loss scale
    # independent of transcript length and batch size; zero_infinity zeroes the loss of a speed-perturbed clip
    # that ends up shorter than its transcript instead of letting it turn the gradients into NaN.
    config, feature_extractor = _speech_setup(args, ctc_loss_reduction="mean", ctc_zero_infinity=True)
    text_args = args[TranscriptArgs]
    data = load_speech_recognition(
        args[AudioDataArgs], text_args, config, feature_extractor.sampling_rate, min_input_samples(config),
        seed=args.training.seed, load_kwargs=args.model.load_kwargs(),
    )
    tokenizer = data.tokenizer
    check_ctc_head(config, tokenizer, args.model.model_name_or_path, tokenizer_given=bool(text_args.tokenizer_name_or_path))
    config.vocab_size, config.pad_token_id = len(tokenizer), tokenizer.pad_token_id
    return TaskData(
        datasets=data.datasets,
        collator=_audio_collator(args, feature_extractor, config),
        # Saved with the model: the feature extractor's settings and the vocabulary.
        processing_class=Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer),
        config=config,
        compute_metrics=ctc_metrics(tokenizer),
        preprocess_logits_for_metrics=argmax_logits,
        report={"vocabulary_size": len(tokenizer), **data.report},
    )


def prepare_speech_model(model, args: Args):
    """Freeze the convolutional feature encoder (when asked) before the strategy, so no strategy ever trains it."""
    from .speech import SpeechModelArgs, prepare_speech_model as prepare

    return prepare(model, args[SpeechModelArgs], args.strategy)


# Continued pretraining: gradual trains the (possibly new) masked-LM head alone first, so a random head's first
# gradients do not reach the encoder; feature_extraction would train nothing but that head, and a peft config is
# task-specific.
MASKED_LM_STRATEGIES = ("full", "lora", "freeze", "gradual")


def load_masked_lm_task(args: Args) -> TaskData:
    """Masked-LM continued pretraining: unlabelled text in blocks (or lines), masked on the fly; perplexity is the metric."""
    from .data.mlm import MaskedLMCollator, MaskedLMDataArgs, load_masked_lm_data
    from .models import load_config, load_tokenizer

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


def load_seq2seq_task(args: Args) -> TaskData:
    """Text to text (translation, summarisation): paired texts, a seq2seq checkpoint or a warm-started
    encoder-decoder, labels padded with -100, BLEU/chrF/ROUGE of generated text."""
    from transformers import DataCollatorForSeq2Seq

    from .data.seq2seq import Seq2SeqDataArgs, load_seq2seq
    from .metrics_generation import GenerationMetrics
    from .models import load_config, load_tokenizer
    from .seq2seq_models import (
        ENCODER_DECODER, EncoderDecoderArgs, check_generation_args, check_seq2seq_config, encoder_decoder_config,
        resolve_encoder_decoder, warn_missing_prefix,
    )

    data_args, train_args = args[Seq2SeqDataArgs], args.training
    check_generation_args(train_args, data_args.max_target_length)
    decoder = resolve_encoder_decoder(args.model, args[EncoderDecoderArgs])
    config = None if decoder else load_config(args.model)
    tokenizer = load_tokenizer(args.model)
    config = config or encoder_decoder_config(args.model, decoder, tokenizer)
    check_seq2seq_config(config, tokenizer, args.model.model_name_or_path)
    args.strategy.check_config(config)
    warn_missing_prefix(config, data_args.source_prefix)
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
    from .metrics_generation import KeepPredictions

    if data.extra.get("generation_metrics") is not None:
        trainer.add_callback(KeepPredictions(data.extra["generation_metrics"], data.extra["texts"]))
    return {}


def write_seq2seq_predictions(trainer, args: Args, results: dict) -> None:
    """After saving (rank 0): the validation/test predictions beside metrics.json (a `Task.after_save`)."""
    from .metrics_generation import KeepPredictions

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


# Models whose position embeddings fix the input size: an image processor of another size fails at the first step.
FIXED_SIZE_IMAGE_MODELS = ("vit", "deit", "vit_msn", "vit_mae")


def load_image_classification_task(args: Args) -> TaskData:
    """Image classification: the checkpoint's own image processor (size, normalisation), images checked up front and
    decoded, augmented and processed lazily in the collator."""
    from transformers import AutoImageProcessor

    from .data.image import (
        ImageAugmentArgs, ImageCollator, ImageDataArgs, check_training_args, load_image_classification, processor_output_size,
    )
    from .metrics import compute_classification_metrics
    from .models import load_config

    check_training_args(args.training)
    config = load_config(args.model)
    args.strategy.check_config(config)  # an architecture the layer map lacks fails now (or runs with --strategy full)
    try:
        processor = AutoImageProcessor.from_pretrained(args.model.model_name_or_path, **args.model.load_kwargs())
    except (OSError, ValueError) as error:
        raise HfTransferError(
            f"cannot load the image processor of '{args.model.model_name_or_path}': {str(error).strip().splitlines()[0]} "
            "(an image checkpoint has a preprocessor_config.json)"
        ) from error
    size, expected = processor_output_size(processor), getattr(config, "image_size", None)
    if config.model_type in FIXED_SIZE_IMAGE_MODELS and isinstance(expected, int) and size != (expected, expected):
        raise HfTransferError(
            f"the image processor gives {size[0]}x{size[1]} images but the model takes {expected}x{expected}; "
            "save the checkpoint with a processor of the model's size"
        )
    data = load_image_classification(args[ImageDataArgs], seed=args.training.seed)
    config.id2label, config.label2id = data.id2label, data.label2id
    return TaskData(
        datasets=data.datasets,
        collator=ImageCollator(processor, augment=args[ImageAugmentArgs], seed=args.training.seed),
        processing_class=processor,
        config=config,
        compute_metrics=compute_classification_metrics,
        report={"label_names": data.label_names, **data.report},
    )
