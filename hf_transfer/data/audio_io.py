"""Decoding audio with soundfile: headers without samples, mono float32 at a target rate, speed and noise perturbation.

soundfile's wheel bundles libsndfile (WAV, FLAC, OGG/Vorbis/Opus, MP3), so nothing here needs FFmpeg or
torchcodec; resampling and noise come from torchaudio.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile
import torch

from hf_transfer.data.media import open_target


@dataclass(frozen=True)
class AudioHeader:
    frames: int
    sampling_rate: int
    channels: int


def probe(source) -> AudioHeader | str:
    """The clip's header, or why it cannot be used (a short reason for the log); never decodes samples."""
    target = open_target(source)
    if target is None or (isinstance(target, str) and not target):
        return "no audio path or bytes"
    if isinstance(target, (str, Path)) and not Path(target).is_file():
        return "file not found"
    try:
        info = soundfile.info(target)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        message = str(error)
        if "SF_INFO struct incomplete" in message:  # libsndfile's words for a header with rate or channels 0
            return "sample rate cannot be read from the header"
        if "Format not recognised" in message:
            return "not a readable audio file (format not recognised)"
        return f"cannot be read ({message.split(': ', 1)[-1].strip()})"
    if info.samplerate <= 0:
        return "sample rate cannot be read from the header"
    if info.frames <= 0:
        return "empty (no audio frames)"
    return AudioHeader(info.frames, info.samplerate, info.channels)


@lru_cache(maxsize=64)
def _resampler(orig_freq: int, new_freq: int):
    import torchaudio

    # A Resample module computes its sinc kernel once; per-call functional.resample would redo it every clip.
    return torchaudio.transforms.Resample(orig_freq, new_freq)


def resample(waveform: np.ndarray, orig_freq: int, new_freq: int) -> np.ndarray:
    """torchaudio's band-limited sinc resampling (`torchaudio.functional.resample`'s kernel, cached per rate pair)."""
    if orig_freq == new_freq:
        return waveform
    with torch.no_grad():
        return _resampler(int(orig_freq), int(new_freq))(torch.from_numpy(waveform)).numpy()


def read_audio(
    source, sampling_rate: int, *, max_seconds: float | None = None, rng: np.random.Generator | None = None, speed: float = 1.0
) -> np.ndarray:
    """Decode one clip to mono float32 at `sampling_rate`.

    Longer than `max_seconds`: only a window is read (random with `rng`, else the start). `speed` != 1 plays
    the clip faster or slower (pitch included, like sox/Kaldi speed perturbation); it is folded into the one
    resampling pass: reading a clip of rate r as if its rate were r * speed is exactly that perturbation.
    """
    with soundfile.SoundFile(open_target(source)) as file:
        rate, frames = file.samplerate, file.frames
        window = frames if max_seconds is None else min(frames, int(max_seconds * rate * speed))
        if window < frames:
            file.seek(int(rng.integers(0, frames - window + 1)) if rng is not None else 0)
        samples = file.read(window, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return resample(np.ascontiguousarray(mono), round(rate * speed), sampling_rate)


def add_noise(waveform: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise scaled to `snr_db` against the clip's own power (`torchaudio.functional.add_noise`)."""
    from torchaudio.functional import add_noise as torchaudio_add_noise

    noise = torch.from_numpy(rng.standard_normal(waveform.shape[-1]).astype(np.float32))
    signal = torch.from_numpy(waveform)
    if float(signal.pow(2).sum()) == 0.0:  # silence has no power to scale noise against
        return waveform
    return torchaudio_add_noise(signal, noise, torch.tensor(float(snr_db))).numpy()



