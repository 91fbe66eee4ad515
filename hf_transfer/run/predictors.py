"""The models `predict` runs: which kind an output folder holds, how that kind loads, and what it makes of a batch.

Split from `run.predict`, which owns the inputs, the predictions file and the scores, so that each model kind's
loading and batching (text, images, clips; classifiers, generation, CTC) sits in one place and reads as a unit.

The kind comes from the folder's `config.json` (`architectures`, looked up in transformers' auto-class tables).
A full or merged folder loads as it is; a LoRA adapter folder loads its base (named by the adapter), the run's
config over it, then the adapter, merged. Inputs reach the model as training's evaluation fed them: the data layer's
readers and collators (decoding, mono, resampling to the processor's rate, the processor's own size and
normalisation), so a prediction is what the run's evaluation would have computed.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from hf_transfer.errors import HfTransferError
from hf_transfer.run.outputs import run_options


@dataclass(frozen=True)
class Kind:
    """A kind of model predict takes: its inputs, what it writes, and how transformers loads and lists it."""

    name: str  # in messages: "image classifier"
    modality: str  # what one input is: "text", "image" or "audio"
    output: str  # the column it writes: predicted_label, generated_text or transcript
    auto_class: str  # the transformers auto class that loads it
    mapping: str  # transformers' table of the architectures that auto class builds

    @property
    def a(self) -> str:
        """The name with its article, for messages: "an image classifier"."""
        return f"{'an' if self.name[0] in 'aeiou' else 'a'} {self.name}"


TEXT_CLASSIFIER = Kind("text classifier", "text", "predicted_label", "AutoModelForSequenceClassification",
                       "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES")
IMAGE_CLASSIFIER = Kind("image classifier", "image", "predicted_label", "AutoModelForImageClassification",
                        "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES")
AUDIO_CLASSIFIER = Kind("audio classifier", "audio", "predicted_label", "AutoModelForAudioClassification",
                        "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES")
TEXT_TO_TEXT = Kind("text-to-text model", "text", "generated_text", "AutoModelForSeq2SeqLM",
                    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES")
CTC_RECOGNISER = Kind("CTC speech recogniser", "audio", "transcript", "AutoModelForCTC", "MODEL_FOR_CTC_MAPPING_NAMES")
SEQ2SEQ_RECOGNISER = Kind("Whisper speech recogniser", "audio", "transcript", "AutoModelForSpeechSeq2Seq",
                          "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES")
KINDS = (TEXT_CLASSIFIER, IMAGE_CLASSIFIER, AUDIO_CLASSIFIER, TEXT_TO_TEXT, CTC_RECOGNISER, SEQ2SEQ_RECOGNISER)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def find_kind(folder: str):
    """(Kind, config) of an output folder, read before any weights load; one line for anything predict cannot run."""
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto

    from hf_transfer.models.onnx_classifier import config_folder

    path = config_folder(folder)  # an .onnx file of an export folder: the config beside it
    if not (path / "config.json").is_file():
        raise HfTransferError(f"--model {folder} is not a model folder (no config.json); give an output folder of a recipe")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as error:
        raise HfTransferError(f"--model {folder}: cannot read its config.json ({first_line(error)})") from error
    architectures = config.architectures or []
    for kind in KINDS:
        built = {n for v in getattr(modeling_auto, kind.mapping).values() for n in ((v,) if isinstance(v, str) else v)}
        if any(name in built for name in architectures):
            return kind, config
    raise HfTransferError(f"--model {folder} holds a {', '.join(architectures) or config.model_type} model; predict takes "
                          f"{', '.join(k.name + 's' for k in KINDS)} (the recipes' output folders)")


def load_model(folder: str, kind: Kind, config):
    """The model of a full, merged or LoRA adapter folder, in eval mode."""
    import transformers

    auto_class, path = getattr(transformers, kind.auto_class), Path(folder)
    try:
        if (path / "adapter_config.json").is_file():
            model = merged_adapter(path, auto_class, config)
        else:
            model = auto_class.from_pretrained(path)
    except HfTransferError:
        raise
    except (OSError, ValueError) as error:
        raise HfTransferError(f"cannot load the model in {folder}: {first_line(error)}") from error
    return model.eval()


def merged_adapter(path: Path, auto_class, config):
    """The base the adapter names with the run's config over it (labels, head sizes, vocabulary), then the adapter,
    merged; the run's generation settings when it saved them."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoConfig, GenerationConfig

    from hf_transfer.models.whisper import is_whisper, shorten_encoder

    if run_options(path).get("from_scratch"):
        raise HfTransferError(f"--model {path} is a LoRA adapter over random weights (--from_scratch), which were not "
                              "saved; retrain with --merge_lora true to predict with it")
    base = PeftConfig.from_pretrained(path).base_model_name_or_path
    if not base and config.model_type == "encoder-decoder":
        model = warm_started_base(path, config)
    elif not base:
        raise HfTransferError(f"--model {path}: adapter_config.json names no base model (base_model_name_or_path)")
    elif is_whisper(config):
        # The run cut the encoder's position table to its window: load the base's whole table, then cut it alike.
        window, config = config.max_source_positions, copy.deepcopy(config)
        config.max_source_positions = AutoConfig.from_pretrained(base).max_source_positions
        model = shorten_encoder(auto_class.from_pretrained(base, config=config), window)
    else:
        model = auto_class.from_pretrained(base, config=config)
    model = PeftModel.from_pretrained(model, path).merge_and_unload()
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model


def warm_started_base(path: Path, config):
    """The base of a warm-started encoder-decoder's adapter, which peft does not name: the run's encoder and decoder
    checkpoints (run.json) joined as the run joined them. The new cross-attention is in the adapter (trained whole)."""
    from transformers import EncoderDecoderModel

    from hf_transfer.models.loading import ModelArgs
    from hf_transfer.models.seq2seq import EncoderDecoderArgs, resolve_encoder_decoder

    options = run_options(path)
    encoder = ModelArgs(model_name_or_path=options.get("model_name_or_path"))
    decoder = resolve_encoder_decoder(encoder, EncoderDecoderArgs(options.get("encoder_decoder_from"),
                                                                  options.get("decoder_name_or_path")))
    if decoder is None:
        raise HfTransferError(f"--model {path}: neither adapter_config.json nor run.json names the encoder-decoder's base")
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(encoder.model_name_or_path, decoder,
                                                                encoder_config=config.encoder, decoder_config=config.decoder)
    for key in ("decoder_start_token_id", "pad_token_id", "eos_token_id", "vocab_size"):  # as the run set them
        setattr(model.config, key, getattr(config, key))
    return model


# ---------------------------------------------------------------------------------------------------------
# Batches: inputs in, one output per input (logits, or text) or why that input was skipped
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Skipped:
    reason: str


class Predictor:
    """A loaded model and how a batch of its inputs (texts, or paths to media) becomes model inputs and outputs.

    `run` gives one result per input: a row of logits (classifiers), a string (generated text, transcripts), or
    `Skipped` with the reason an input could not be used (an unreadable file, a clip too short).
    """

    def __init__(self, model, device: str, bf16: bool) -> None:
        self.model, self.device, self.bf16 = model.to(device), device, bf16

    def prepare(self, items: list, skipped: dict[int, str]):
        """The model inputs of `items` less those it adds to `skipped` (index -> reason), or None when none is left."""
        raise NotImplementedError

    def forward(self, inputs) -> list:
        return list(self.model(**inputs).logits.float().cpu())

    def run(self, items: list) -> list:
        import torch

        skipped: dict[int, str] = {}
        inputs = self.prepare(items, skipped)
        outputs = []
        if inputs is not None:
            with torch.inference_mode(), torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
                outputs = self.forward({k: v.to(self.device) for k, v in inputs.items()})
        results = iter(outputs)
        return [Skipped(skipped[i]) if i in skipped else next(results) for i in range(len(items))]


class TextPredictor(Predictor):
    """Text classifiers and text-to-text models: items are texts, or (text, pair) for sentence-pair classifiers."""

    def __init__(self, model, tokenizer, device: str, bf16: bool, max_length: int, prefix: str = "",
                 max_new_tokens: int | None = None) -> None:
        super().__init__(model, device, bf16)
        self.tokenizer, self.max_length, self.prefix = tokenizer, max_length, prefix
        self.generate = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}

    def prepare(self, items: list, skipped: dict[int, str]):
        texts = [self.prefix + (item[0] if isinstance(item, tuple) else item) for item in items]
        pairs = [item[1] for item in items] if isinstance(items[0], tuple) else None
        return self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")

    def forward(self, inputs) -> list:
        if not self.model.config.is_encoder_decoder:
            return super().forward(inputs)
        generated = self.model.generate(**inputs, **self.generate)  # the saved generation config: as the run evaluated
        return [text.strip() for text in self.tokenizer.batch_decode(generated, skip_special_tokens=True)]


def text_to_text_predictor(folder: str, model, device: str, bf16: bool, max_length: int | None, prefix: str | None,
                           max_new_tokens: int | None, default_length: int) -> TextPredictor:
    """Sources as the run fed them: its --source_prefix and --max_source_length (run.json), unless given here."""
    from transformers import AutoTokenizer

    options = run_options(folder)
    prefix = (options.get("source_prefix") or "") if prefix is None else prefix
    max_length = max_length or options.get("max_source_length") or default_length
    return TextPredictor(model, load_processor(AutoTokenizer, folder), device, bf16, max_length, prefix, max_new_tokens)


class MediaPredictor(Predictor):
    """Image and audio models: items are paths (or a Hub row's {bytes, path}) under `column` ("image", "audio"),
    batched by `collate`, the data layer's collator of the medium as evaluation used it. `check` tells from a file's
    header why it cannot be used (None: it can); `diagnose` why a file that failed to decode did; `decode_text` turns
    a recogniser's batch into text."""

    def __init__(self, model, device: str, bf16: bool, column: str, collate, check=None, diagnose=None,
                 decode_text=None) -> None:
        super().__init__(model, device, bf16)
        self.column, self.collate, self.check, self.diagnose, self.decode_text = column, collate, check, diagnose, decode_text

    def batch(self, items: list, indices: list[int]):
        return self.collate([{self.column: items[i]} for i in indices]) if indices else None

    def prepare(self, items: list, skipped: dict[int, str]):
        skipped.update({i: reason for i, item in enumerate(items) if self.check and (reason := self.check(item))})
        keep = [i for i in range(len(items)) if i not in skipped]
        try:
            return self.batch(items, keep)
        except Exception:  # noqa: BLE001 - a file that passed its check fails to decode: find it, keep the others
            for i in keep:
                try:
                    self.batch(items, [i])
                except Exception as error:  # noqa: BLE001 - decoders raise many types; the reason is what counts
                    skipped[i] = (self.diagnose and self.diagnose(items[i])) or f"cannot be decoded ({first_line(error)})"
            return self.batch(items, [i for i in keep if i not in skipped])

    def forward(self, inputs) -> list:
        if self.decode_text is None:
            return super().forward(inputs)
        return self.decode_text(self.model, inputs)


def media_predictor(folder: str, kind: Kind, model, device: str, bf16: bool, max_new_tokens: int | None) -> MediaPredictor:
    """The image or audio predictor of a loaded model: its folder's processor, the matching collator and checks."""
    if kind is IMAGE_CLASSIFIER:
        from transformers import AutoImageProcessor

        from hf_transfer.data.image import ImageCollator, probe

        # Decoded once, in the collator; the training check's probe runs only on a file that failed, for its reason.
        collate = ImageCollator(load_processor(AutoImageProcessor, folder))
        return MediaPredictor(model, device, bf16, "image", collate, diagnose=probe)
    from hf_transfer.models.whisper import is_whisper

    if is_whisper(model.config):
        return whisper_predictor(folder, kind, model, device, bf16, max_new_tokens)
    from transformers import AutoFeatureExtractor, AutoProcessor

    from hf_transfer.data.audio import AudioCollator
    from hf_transfer.models.speech import min_input_samples

    shortest = min_input_samples(model.config)
    if kind is CTC_RECOGNISER:  # a transcript of part of a clip is wrong: CTC hears every clip whole
        from hf_transfer.metrics.speech import id_to_token_table, ids_to_text
        from hf_transfer.models.speech import output_frames

        processor = load_processor(AutoProcessor, folder)
        collate, tokenizer = AudioCollator(processor.feature_extractor, min_samples=shortest), processor.tokenizer
        table = id_to_token_table(tokenizer)

        def decode_text(model, inputs) -> list[str]:
            """Greedy CTC decoding as the run's WER was computed (an unknown character shows as U+FFFD), each clip's
            frames only: the frames of a shorter clip's padding are not speech."""
            ids = model(**inputs).logits.argmax(-1).tolist()
            mask = inputs.get("attention_mask")
            frames = [output_frames(int(n), model.config) for n in mask.sum(-1)] if mask is not None else [None] * len(ids)
            return [ids_to_text(row[:n], table, tokenizer.pad_token_id, tokenizer.unk_token) for row, n in zip(ids, frames)]

        return MediaPredictor(model, device, bf16, "audio", collate, clip_check(collate.sampling_rate, shortest),
                              decode_text=decode_text)
    # A classifier hears the start of a long clip, as the run's evaluation did (--max_duration_seconds, cut).
    feature_extractor = load_processor(AutoFeatureExtractor, folder)
    collate = AudioCollator(feature_extractor, max_seconds=run_options(folder).get("max_duration_seconds"), min_samples=shortest)
    return MediaPredictor(model, device, bf16, "audio", collate, clip_check(collate.sampling_rate, shortest))


def whisper_predictor(folder: str, kind: Kind, model, device: str, bf16: bool, max_new_tokens: int | None) -> MediaPredictor:
    """Whisper hears a fixed window (the saved feature extractor's): a classifier its start, as evaluation did; a
    recogniser never a clip longer than it (its transcript would lose the end)."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    from hf_transfer.data.audio import AudioCollator, WhisperCollator

    if kind is AUDIO_CLASSIFIER:
        feature_extractor = load_processor(WhisperFeatureExtractor, folder)
        window = feature_extractor.n_samples / feature_extractor.sampling_rate
        collate = WhisperCollator(AudioCollator(feature_extractor, max_seconds=window), feature_extractor)
        return MediaPredictor(model, device, bf16, "audio", collate, clip_check(feature_extractor.sampling_rate, 1))
    processor = load_processor(WhisperProcessor, folder)
    feature_extractor = processor.feature_extractor
    collate = WhisperCollator(AudioCollator(feature_extractor), feature_extractor)

    def decode_text(model, inputs) -> list[str]:
        generated = model.generate(**inputs, **({"max_new_tokens": max_new_tokens} if max_new_tokens else {}))
        return [text.strip() for text in processor.batch_decode(generated, skip_special_tokens=True)]

    check = clip_check(feature_extractor.sampling_rate, 1, longest=feature_extractor.n_samples)
    return MediaPredictor(model, device, bf16, "audio", collate, check, decode_text=decode_text)


def clip_check(sampling_rate: int, shortest: int, longest: int | None = None):
    """Why a clip cannot be used, from its header alone (the audio layer's probe): unreadable, too short for the
    model's receptive field, or longer than a window it must fit whole; None when it can."""
    import math

    from hf_transfer.data.audio_io import probe

    def check(source) -> str | None:
        header = probe(source)
        if isinstance(header, str):
            return header
        samples = math.ceil(header.frames * sampling_rate / header.sampling_rate)
        if samples < shortest:
            return f"too short ({samples} samples at {sampling_rate} Hz; the model needs {shortest})"
        if longest is not None and samples > longest:
            return f"longer than the model's {longest / sampling_rate:g} s window"
        return None

    return check


def load_processor(processor_class, folder: str):
    try:
        return processor_class.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as error:
        raise HfTransferError(f"cannot load the processor saved in {folder} ({first_line(error)}); the recipes save it "
                              "with the model") from error
