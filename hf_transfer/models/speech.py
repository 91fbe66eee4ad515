"""What the wav2vec2-family recipes share: model options, config and feature-extractor loading, and model preparation.

The supported models (wav2vec2, HuBERT, WavLM) share one layout: a convolutional feature encoder over the
raw waveform, then transformer blocks. The layer map knows it; this module adds what is special to
speech: freezing the feature encoder, the model's own SpecAugment masking, and the conv stack's
receptive field (the shortest clip that yields a frame).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hf_transfer.errors import HfTransferError
from hf_transfer.models.loading import ModelArgs, load_config

if TYPE_CHECKING:  # torch and the strategies load when a model is prepared, not when options are parsed
    from torch import nn

    from hf_transfer.strategies import StrategyArgs

SPEECH_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm")


@dataclass
class SpeechModelArgs:
    freeze_feature_encoder: bool = field(
        default=True,
        metadata={"help": "Keep the convolutional feature encoder frozen, as the Hugging Face speech examples do: it "
                  "holds low-level acoustic filters that small data sets only disturb, and backward then skips it."},
    )
    attention_mask: bool = field(
        default=True,
        metadata={"help": "Pass an attention mask with padded batches (the Hugging Face audio-classification example "
                  "does). Group-norm checkpoints such as wav2vec2-base were pretrained without one."},
    )
    mask_time_prob: float | None = field(
        default=None, metadata={"help": "SpecAugment time masking inside the model while training (config override; wav2vec2's default is 0.05)."}
    )
    mask_time_length: int | None = field(default=None, metadata={"help": "Frames per time mask (config override; default 10)."})
    mask_feature_prob: float | None = field(
        default=None, metadata={"help": "SpecAugment feature-channel masking while training (config override; default 0)."}
    )

    def __post_init__(self) -> None:
        for option in ("mask_time_prob", "mask_feature_prob"):
            value = getattr(self, option)
            if value is not None and not 0 <= value < 1:
                raise HfTransferError(f"--{option} must be in [0, 1), got {value}")
        if self.mask_time_length is not None and self.mask_time_length < 1:
            raise HfTransferError(f"--mask_time_length must be >= 1, got {self.mask_time_length}")

    def config_overrides(self) -> dict:
        names = ("mask_time_prob", "mask_time_length", "mask_feature_prob")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def load_speech_config(model_args: ModelArgs, speech_args: SpeechModelArgs, **task_overrides):
    """The model's config with the masking overrides; an architecture without a wav2vec2 layout is a clear error."""
    config = load_config(model_args, **speech_args.config_overrides(), **task_overrides)
    if config.model_type not in SPEECH_MODEL_TYPES:
        raise HfTransferError(
            f"model type '{config.model_type}' is not a supported speech encoder; the audio recipes take "
            f"{', '.join(SPEECH_MODEL_TYPES)} checkpoints (e.g. facebook/wav2vec2-base)"
        )
    return config


def load_feature_extractor(model_args: ModelArgs, speech_args: SpeechModelArgs):
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(
            model_args.model_name_or_path, return_attention_mask=speech_args.attention_mask, **model_args.load_kwargs()
        )
    except (OSError, ValueError) as error:
        raise HfTransferError(
            f"cannot load the feature extractor of '{model_args.model_name_or_path}': {str(error).strip().splitlines()[0]} "
            "(a speech checkpoint has a preprocessor_config.json)"
        ) from error


def output_frames(samples: int, config) -> int:
    """Frames the conv feature encoder (and adapter, if any) makes of `samples` (the model's own arithmetic)."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        samples = (samples - kernel) // stride + 1
    if getattr(config, "add_adapter", False):
        for _ in range(config.num_adapter_layers):
            samples = (samples - 1) // config.adapter_stride + 1
    return max(samples, 0)


def min_input_samples(config, frames: int = 1) -> int:
    """The fewest samples that give `frames` output frames: the conv stack's receptive field for frames=1."""
    samples = frames
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        samples = (samples - 1) * stride + kernel
    while output_frames(samples, config) < frames:  # an adapter shortens further; step up to it
        samples += 1
    return samples


def min_batch_samples(config) -> int:
    """Batches shorter than this make wav2vec2's time masking raise (mask span longer than the sequence)."""
    masking = getattr(config, "apply_spec_augment", False) and (getattr(config, "mask_time_prob", 0) or 0) > 0
    return min_input_samples(config, config.mask_time_length if masking else 1)


def check_training_args(train_args) -> None:
    if train_args.remove_unused_columns:
        raise HfTransferError(
            "the audio recipes decode clips in the collator, which needs the raw columns: pass --remove_unused_columns false"
        )


def prepare_speech_model(model: nn.Module, speech_args: SpeechModelArgs, strategy: StrategyArgs) -> nn.Module:
    """Freeze the feature encoder (before anything else, so no strategy ever trains it), then apply the strategy.

    Gradual unfreezing only unfreezes what was trainable when training began, and LoRA freezes the base
    model anyway, so the encoder stays frozen under every strategy.
    """
    from hf_transfer.strategies import apply_strategy

    if speech_args.freeze_feature_encoder:
        model.freeze_feature_encoder()
    return apply_strategy(model, strategy)



