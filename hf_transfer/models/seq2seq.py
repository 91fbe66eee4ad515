"""Seq2seq models and their generation settings: a seq2seq checkpoint (T5, BART...) or an encoder-decoder warm-started.

Warm starting (Rothe, Narayan & Severyn 2020, "Leveraging Pre-trained Checkpoints for Sequence Generation
Tasks"): `EncoderDecoderModel.from_encoder_decoder_pretrained(encoder, decoder)` takes the encoder's
weights as they are and the decoder's into a causal copy with new cross-attention (and, for a checkpoint
without one, a new LM-head transform). With a BERT-style checkpoint on both sides this is bert2bert; here
it is what runs offline with the embedded MiniLM. `--from_scratch` builds the same architecture from its
config with random weights: the no-transfer baseline.

Everything a model needs from its tokenizer is checked here before any weights load.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from hf_transfer.errors import HfTransferError
from hf_transfer.models.loading import ModelArgs, load_config, load_pretrained

logger = logging.getLogger(__name__)

ENCODER_DECODER = "encoder-decoder"
# T5-family configs in transformers 5 carry no `decoder_start_token_id` default (a saved checkpoint's
# config.json has it); by T5's convention decoding starts from the pad token.
STARTS_FROM_PAD = ("t5", "mt5", "umt5", "longt5", "byt5")
EMBEDDED = "embedded"  # --encoder_decoder_from embedded: the embedded MiniLM-L6 (a BERT) on both sides


@dataclass
class EncoderDecoderArgs:
    encoder_decoder_from: str | None = field(
        default=None,
        metadata={"help": "Warm-start an encoder-decoder with this checkpoint as both encoder and decoder (bert2bert, "
                          f"Rothe et al. 2020), in place of --model_name_or_path; '{EMBEDDED}' is the embedded "
                          "MiniLM-L6 (runs offline). With --from_scratch the same architecture starts random."},
    )
    decoder_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Warm-start an encoder-decoder with --model_name_or_path as the encoder and this checkpoint as "
                          "the decoder (both must share the encoder's tokenizer)."},
    )

    def __post_init__(self) -> None:
        if self.encoder_decoder_from and self.decoder_name_or_path:
            raise HfTransferError(
                "give --encoder_decoder_from (one checkpoint for both halves) or --decoder_name_or_path (with "
                "--model_name_or_path as the encoder), not both"
            )

    @property
    def warm_start(self) -> bool:
        return bool(self.encoder_decoder_from or self.decoder_name_or_path)


def resolve_encoder_decoder(model: ModelArgs, args: EncoderDecoderArgs) -> str | None:
    """The decoder checkpoint of a warm start (None without one); `--encoder_decoder_from` also becomes the encoder,
    in `model.model_name_or_path`, so everything after reads one place."""
    if args.encoder_decoder_from:
        source = args.encoder_decoder_from
        path = None if source == EMBEDDED else source  # ModelArgs' default is the embedded model
        model.model_name_or_path = ModelArgs(**{**vars(model), "model_name_or_path": path}).model_name_or_path
        return model.model_name_or_path
    if args.decoder_name_or_path:
        return ModelArgs(**{**vars(model), "model_name_or_path": args.decoder_name_or_path}).model_name_or_path
    return None


def check_generation_args(train_args, max_target_length: int) -> None:
    """Generation options that contradict each other or the task, checked before anything loads.

    Generation stops at --generation_max_length, which defaults to --max_target_length here: transformers'
    own default (20 tokens) would cut most translations short and score them as such.
    """
    from hf_transfer.metrics.generation import GENERATION_METRICS

    for option in ("generation_num_beams", "generation_max_length"):
        value = getattr(train_args, option)
        if value is not None and value < 1:
            raise HfTransferError(f"--{option} must be at least 1, got {value}")
    best = (train_args.metric_for_best_model or "").removeprefix("eval_")
    if not train_args.predict_with_generate:
        if best in GENERATION_METRICS:
            raise HfTransferError(
                f"--metric_for_best_model {train_args.metric_for_best_model} scores generated text: it needs "
                "--predict_with_generate true (or choose loss)"
            )
        logger.warning("--predict_with_generate is off: evaluation reports the loss only (no BLEU, chrF, ROUGE or predictions files)")
    if train_args.generation_max_length is None:
        train_args.generation_max_length = max_target_length


def warn_missing_prefix(config, source_prefix: str | None) -> None:
    """T5 checkpoints were trained with task prefixes ("translate English to German: "); one line says so when none is given."""
    model_type = config.encoder.model_type if config.model_type == ENCODER_DECODER else config.model_type
    if model_type in STARTS_FROM_PAD and source_prefix is None:
        logger.warning(
            "a T5 model and no --source_prefix; T5 checkpoints expect a task prefix such as "
            "'translate English to German: ' (pass --source_prefix '' to go without one)"
        )


def warn_prefix_without_t5(config, source_prefix: str | None) -> None:
    """A task prefix is a T5 convention; other models (BART, Marian, a warm-started encoder-decoder) never saw one."""
    model_type = config.encoder.model_type if config.model_type == ENCODER_DECODER else config.model_type
    if source_prefix and model_type not in STARTS_FROM_PAD:
        logger.warning("--source_prefix %r is a T5 convention; a %s model was not trained with task prefixes and reads "
                       "it as part of every source (drop it unless you mean to)", source_prefix, model_type)


def fit_lengths_to_positions(config, max_source_length: int, max_target_length: int) -> tuple[int, int]:
    """The source and target length limits cut to the model's position tables, with a warning when that cuts them:
    longer inputs would fail at the first training step. Models with relative positions (T5) have no such table."""
    encoder, decoder = (config.encoder, config.decoder) if config.model_type == ENCODER_DECODER else (config, config)
    fitted = []
    for option, length, part in (("max_source_length", max_source_length, encoder), ("max_target_length", max_target_length, decoder)):
        positions = getattr(part, "max_position_embeddings", None)
        if positions is not None and length > positions:
            logger.warning("--%s %d exceeds the %s model's %d positions: texts are cut at %d tokens instead",
                           option, length, part.model_type, positions, positions)
            length = positions
        fitted.append(length)
    return fitted[0], fitted[1]


def is_seq2seq_config(config) -> bool:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    return config.model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES


def encoder_decoder_config(model: ModelArgs, decoder_name_or_path: str, tokenizer):
    """The `EncoderDecoderConfig` of a warm start, read from the two checkpoints' configs (no weights) and the tokenizer."""
    from transformers import EncoderDecoderConfig

    encoder = load_config(model)
    decoder = load_config(ModelArgs(**{**vars(model), "model_name_or_path": decoder_name_or_path}))  # config only
    for role, config in (("encoder", encoder), ("decoder", decoder)):
        if is_seq2seq_config(config) or getattr(config, "is_encoder_decoder", False):
            raise HfTransferError(
                f"the {role} checkpoint is already an encoder-decoder ('{config.model_type}'); pass it alone as "
                "--model_name_or_path, without --encoder_decoder_from or --decoder_name_or_path"
            )
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    if start is None:
        raise HfTransferError(
            "the tokenizer has neither a CLS nor a BOS token to start decoding with; warm-start from checkpoints "
            "whose tokenizer has one (a BERT-style [CLS] or a <s>)"
        )
    end = tokenizer.sep_token_id if tokenizer.eos_token_id is None else tokenizer.eos_token_id
    if end is None:
        raise HfTransferError("the tokenizer has neither an EOS nor a SEP token to end decoding with; the decoder could never stop")
    if len(tokenizer) > decoder.vocab_size:
        raise HfTransferError(
            f"the tokenizer has {len(tokenizer)} tokens but the decoder's vocabulary only {decoder.vocab_size}; "
            "warm-start the decoder from a checkpoint that shares the encoder's tokenizer"
        )
    config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    # Set afterwards: passed to from_encoder_decoder_configs, `decoder_start_token_id` came out None here.
    config.decoder_start_token_id = start
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = end
    config.vocab_size = decoder.vocab_size  # the LM head's size: what the loss reshapes the logits to
    return config


def check_seq2seq_config(config, tokenizer, model_name_or_path: str) -> None:
    """What a seq2seq model needs from its config and tokenizer, checked before any weights load."""
    if tokenizer.pad_token_id is None:
        raise HfTransferError(
            f"the tokenizer of '{model_name_or_path}' has no pad token; batches of sources and targets of different "
            "lengths need one: use a tokenizer that defines it"
        )
    if config.model_type == ENCODER_DECODER:
        if config.decoder_start_token_id is None or config.pad_token_id is None:
            raise HfTransferError(
                f"the encoder-decoder '{model_name_or_path}' has no decoder_start_token_id or pad_token_id in its "
                "config; set them to its tokenizer's [CLS]/<s> and pad ids"
            )
        return
    if not is_seq2seq_config(config):
        raise HfTransferError(
            f"'{model_name_or_path}' is a '{config.model_type}', not a sequence-to-sequence model; pass "
            f"--encoder_decoder_from {model_name_or_path} to warm-start an encoder-decoder from it"
        )
    if getattr(config, "decoder_start_token_id", None) is None:
        if config.model_type not in STARTS_FROM_PAD:
            raise HfTransferError(
                f"'{model_name_or_path}' has no decoder_start_token_id in its config; set it in config.json "
                "(the token decoding starts from)"
            )
        config.decoder_start_token_id = config.pad_token_id
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise HfTransferError(
            f"the tokenizer has {len(tokenizer)} tokens but '{model_name_or_path}' only {vocab} embeddings; "
            "use the checkpoint's own tokenizer"
        )


def set_generation_tokens(model, tokenizer) -> None:
    """Start, end and pad tokens in the model's generation config (a warm-started model has none of them)."""
    config, generation = model.config, model.generation_config
    generation.decoder_start_token_id = config.decoder_start_token_id
    generation.pad_token_id = config.pad_token_id if config.pad_token_id is not None else tokenizer.pad_token_id
    if generation.eos_token_id is None:
        candidates = (getattr(config, "eos_token_id", None), tokenizer.eos_token_id, tokenizer.sep_token_id)
        generation.eos_token_id = next((c for c in candidates if c is not None), None)
    if config.model_type == ENCODER_DECODER and generation.bos_token_id is None:
        generation.bos_token_id = config.decoder_start_token_id


NEW_IN_WARM_START = "crossattention"  # BERT-family decoders' cross-attention: absent from an encoder checkpoint


def declare_new_modules_in_head(model, marker: str = NEW_IN_WARM_START) -> None:
    """Put a warm start's new modules (the decoder's cross-attention, randomly initialised) in the layer map's head.

    In the architecture's map the cross-attention sits inside each decoder block, so `freeze` would leave a
    bottom block's random cross-attention frozen, LoRA would adapt a random projection it never trains, and peft
    would not save it. As part of the head (the new part, like a classifier) it trains under every strategy, gets
    the head's LR under layer-wise decay, trains first under gradual unfreezing, and goes to peft's
    `modules_to_save`, so an adapter saved from a warm start carries it. The model declares this through the layer
    map's `transfer_layer_groups` protocol; a checkpoint saved after training reloads as a plain model whose
    cross-attention is then pretrained, and mapped where the architecture puts it.
    """
    from dataclasses import replace

    from hf_transfer.layers import (
        architecture_groups,  # layer_groups would call this declaration again
    )

    def transfer_layer_groups():
        groups = architecture_groups(model)
        new = {id(p) for name, p in model.named_parameters() if f".{marker}." in f".{name}."}
        moved = tuple((n, p) for g in groups[:-1] for n, p in g.named_parameters if id(p) in new)
        kept = [replace(g, named_parameters=tuple((n, p) for n, p in g.named_parameters if id(p) not in new)) for g in groups[:-1]]
        return [*kept, replace(groups[-1], named_parameters=groups[-1].named_parameters + moved)]

    model.transfer_layer_groups = transfer_layer_groups


def build_seq2seq_model(args, data):
    """The model of a seq2seq task (a `Task.build_model`): a warm-started or random encoder-decoder, or a checkpoint.

    Warm-start load reports (the cross-attention is new by design) are summed up in one line instead.
    """
    import warnings

    from transformers import AutoModelForSeq2SeqLM, EncoderDecoderModel
    from transformers.utils import logging as hf_logging

    decoder = data.extra.get("decoder_name_or_path")
    tokenizer = data.processing_class
    if decoder is None:
        model = load_pretrained(AutoModelForSeq2SeqLM, args.model, data.config)
    elif args.model.from_scratch:
        model = EncoderDecoderModel(config=data.config)
    else:
        load = {**args.model.load_kwargs(), "use_safetensors": args.model.use_safetensors or None}
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(
                args.model.model_name_or_path, decoder,
                encoder_config=data.config.encoder, decoder_config=data.config.decoder,
                **{f"encoder_{k}": v for k, v in load.items()}, **{f"decoder_{k}": v for k, v in load.items()},
            )
        except OSError as error:
            raise HfTransferError(f"cannot load the encoder or decoder weights: {str(error).strip().splitlines()[0]}") from error
        finally:
            hf_logging.set_verbosity(verbosity)
        for key in ("decoder_start_token_id", "pad_token_id", "eos_token_id", "vocab_size"):
            setattr(model.config, key, getattr(data.config, key))
        new = sum(p.numel() for n, p in model.decoder.named_parameters() if NEW_IN_WARM_START in n)
        if new:
            declare_new_modules_in_head(model)
        print(f"note: warm-started encoder-decoder from {args.model.model_name_or_path} -> {decoder}; the decoder's "
              f"cross-attention ({new:,} parameters) starts random and trains with the head under every strategy", flush=True)
    if decoder is not None:
        # EncoderDecoderModel warns at every loss it computes that transformers 4.12 changed how (a FutureWarning
        # about old checkpoints): noise for a model built now.
        warnings.filterwarnings("ignore", message="Version v4.12.0 introduces a better way", category=FutureWarning)
    set_generation_tokens(model, tokenizer)
    # Saved with the model: generation as this run evaluated it (the checkpoint's own default is often 20 tokens).
    model.generation_config.max_length = args.training.generation_max_length
    model.generation_config.num_beams = args.training.generation_num_beams
    return model



