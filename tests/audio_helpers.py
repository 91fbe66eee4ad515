"""Helpers for the audio tests: clips written with soundfile, tiny local speech checkpoints, tables of paths.

Everything is made in temporary folders; nothing touches the network.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import tiny_config

# Two classes a tiny model can tell apart: low tones and high tones, at mixed rates, channels and formats.
LABEL_TONES = {"low": (220.0, 330.0, 440.0), "high": (1500.0, 2000.0, 2500.0)}
CLIP_FORMATS = [(8000, 1, "wav"), (16000, 2, "flac"), (44100, 1, "wav"), (16000, 1, "wav"), (8000, 2, "flac"), (44100, 2, "wav")]


def tone(freq: float, rate: int, seconds: float, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def write_clip(path: Path, freq: float, rate: int, seconds: float, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, tone(freq, rate, seconds, channels), rate)
    return path


def write_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return path


def write_empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_zero_rate(path: Path) -> Path:
    """A WAV whose header says 0 Hz: libsndfile refuses it ('SF_INFO struct incomplete')."""
    write_clip(path, 440.0, 16000, 0.2)
    data = bytearray(path.read_bytes())
    data[24:28] = (0).to_bytes(4, "little")  # the canonical 44-byte header keeps the rate at offset 24
    path.write_bytes(bytes(data))
    return path


def make_label_folders(root: Path, per_label: int = 6, seconds: float = 0.3, seed: int = 0) -> Path:
    """root/<label>/<i>.<ext>: tones per label at the CLIP_FORMATS rates, channels and formats."""
    rng = np.random.default_rng(seed)
    for label, freqs in LABEL_TONES.items():
        for i in range(per_label):
            rate, channels, ext = CLIP_FORMATS[i % len(CLIP_FORMATS)]
            freq = float(rng.choice(freqs)) * float(rng.uniform(0.95, 1.05))
            write_clip(root / label / f"{i}.{ext}", freq, rate, seconds * float(rng.uniform(0.7, 1.3)), channels)
    return root


def write_table(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["path", "label"])
            writer.writeheader()
            writer.writerows(rows)
    return path


def table_from_folders(root: Path, table: Path, label_key: str = "label", **extra) -> Path:
    """A table listing root's clips with paths relative to the table's own folder."""
    rows = [
        {"path": os.path.relpath(clip, table.parent), label_key: clip.parent.name, **extra}
        for clip in sorted(root.rglob("*.*"))
    ]
    return write_table(table, rows)


def tiny_speech_config(model_type: str = "wav2vec2", **overrides):
    import transformers as T

    config = tiny_config("wav2vec2")
    if model_type == "wav2vec2":
        config.update(overrides)
        return config
    cls = {"hubert": T.HubertConfig, "wavlm": T.WavLMConfig}[model_type]
    keys = ("conv_dim", "conv_stride", "conv_kernel", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups",
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    return cls(**{k: getattr(config, k) for k in keys}, **overrides)


def save_speech_checkpoint(folder: Path, model_type: str = "wav2vec2", ctc_vocabulary: dict | None = None, seed: int = 0) -> Path:
    """A 'pretrained' tiny base model with its feature extractor; with a vocabulary, a CTC model and its processor."""
    import transformers as T

    torch.manual_seed(seed)
    feature_extractor = T.Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    if ctc_vocabulary is None:
        T.AutoModel.from_config(tiny_speech_config(model_type)).save_pretrained(folder)
        feature_extractor.save_pretrained(folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(ctc_vocabulary))
    tokenizer = T.Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                       word_delimiter_token="|", bos_token=None, eos_token=None)
    config = tiny_speech_config(model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    T.AutoModelForCTC.from_config(config).save_pretrained(folder)
    T.Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def feature_encoder_state(path_or_model) -> dict[str, torch.Tensor]:
    """The conv feature encoder's weights, from a saved folder (safetensors) or a model, keyed without the prefix."""
    if isinstance(path_or_model, (str, Path)):
        from safetensors.torch import load_file

        state = load_file(str(Path(path_or_model) / "model.safetensors"))
    else:
        state = {k: v.detach().clone() for k, v in path_or_model.state_dict().items()}
    marker = "feature_extractor."
    return {k[k.index(marker):]: v for k, v in state.items() if marker in k}


@pytest.fixture
def bad_clips(tmp_path):
    """One file for each way a clip can be unreadable."""
    return {
        "corrupt": write_corrupt(tmp_path / "corrupt.wav"),
        "empty": write_empty(tmp_path / "empty.wav"),
        "zero_rate": write_zero_rate(tmp_path / "zero_rate.wav"),
        "no_frames": write_clip(tmp_path / "no_frames.wav", 440.0, 16000, 0.0),
        "missing": tmp_path / "missing.wav",
    }


def tiny_whisper_config(**overrides):
    """A two-block, width-32 Whisper (real module names); 80 mel bins as the feature extractor makes them;
    100 encoder positions (2 s), so a 1 s window cuts the table."""
    from transformers import WhisperConfig

    settings = dict(vocab_size=16, num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                    decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, max_source_positions=100,
                    max_target_positions=16, classifier_proj_size=16, decoder_start_token_id=1, pad_token_id=0,
                    eos_token_id=0, bos_token_id=0)
    settings.update(overrides)
    return WhisperConfig(**settings)


def save_whisper_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A tiny WhisperForAudioClassification checkpoint with its feature extractor (2 s window)."""
    from transformers import WhisperFeatureExtractor, WhisperForAudioClassification

    torch.manual_seed(seed)
    WhisperForAudioClassification(tiny_whisper_config()).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80, chunk_length=2).save_pretrained(folder)
    return folder


# Whisper's special tokens, then the byte-level pieces of "yes" and "no" ("Ġ" is the space): ids in this order.
WHISPER_TOKENS = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "y", "e", "s", "n", "o", "Ġ"]


def save_whisper_recognition_files(folder: Path) -> Path:
    """What Whisper recognition reads before any weights: the tiny config, its 2 s feature extractor and a tokenizer
    whose vocabulary is WHISPER_TOKENS (padded to the config's 16 ids)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_whisper_config()
    config.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80, chunk_length=2).save_pretrained(folder)
    words = WHISPER_TOKENS + [f"w{i}" for i in range(config.vocab_size - len(WHISPER_TOKENS))]
    # The vocabulary only: WhisperTokenizerFast makes it Whisper's byte-level tokenizer with the prefix tokens.
    Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>")).save(str(folder / "tokenizer.json"))
    WhisperTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                         unk_token="<|endoftext|>", pad_token="<|endoftext|>").save_pretrained(folder)
    return folder
