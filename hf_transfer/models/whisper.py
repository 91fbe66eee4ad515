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

from hf_transfer.errors import HfTransferError

WHISPER_MODEL_TYPES = ("whisper",)
FRAMES_PER_SECOND = 100  # hop 160 at 16 kHz
POSITIONS_PER_SECOND = 50  # the conv stem halves the frames


@dataclass
class WhisperArgs:
    whisper_window_seconds: int | None = field(
        default=None,
        metadata={"help": "Whisper only: pad clips to this many seconds instead of the checkpoint's window (30 s). The "
                  "encoder's position table is cut to the window; clips longer than it are cut. See hf_transfer/models/whisper.py."},
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
