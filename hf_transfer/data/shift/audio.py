"""Audio conditions: pure functions of (mono float32 waveform; strength in (0, 1]; numpy Generator; sampling_rate).

torchaudio's functional ops do what they have (biquad filters, resampling, mu-law, FFT convolution, noise at an SNR);
written here: pink noise, the synthetic room impulse response, the telephone chain's schedule, gain and clipping.
Every output has the input's length and dtype. Noise clips and impulse responses come from folders
(`--shift_noise_dir`, `--shift_impulse_dir`), read once per process and resampled to the model's rate.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from hf_transfer.data.shift.transform import Transform, registry

TELEPHONE_BAND = (300.0, 3400.0)  # Hz: the voice band of the public telephone network (ITU-T G.712)
TELEPHONE_RATE = 8000  # Hz: narrowband telephony's sampling rate
# The Q of each second-order section of an 8th-order Butterworth filter, 1 / (2 cos((2k - 1) pi / 16)): 48 dB per octave.
_BUTTERWORTH_Q = (0.5098, 0.6013, 0.9000, 2.5629)


def _tensor(waveform: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))


def _fit(waveform: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad to `length` samples (resampling round trips can add one)."""
    if len(waveform) >= length:
        return np.ascontiguousarray(waveform[:length], dtype=np.float32)
    return np.pad(waveform, (0, length - len(waveform))).astype(np.float32)


def _rms(waveform: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64)))) if len(waveform) else 0.0


# --- additive noise ---

def _snr_db(strength: float) -> float:
    return 40.0 * (1.0 - strength)  # 40 dB (barely audible) down to 0 dB (noise as loud as the signal)


def _at_snr(waveform: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    import torch
    from torchaudio.functional import add_noise

    if _rms(waveform) == 0.0 or _rms(noise) == 0.0:  # silence has no power to scale noise against
        return waveform
    return add_noise(_tensor(waveform), _tensor(noise), torch.tensor(float(snr_db))).numpy().astype(np.float32)


def white_noise(waveform, strength, rng, sampling_rate, **folders):
    return _at_snr(waveform, rng.standard_normal(len(waveform)).astype(np.float32), _snr_db(strength))


def pink(length: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with power falling as 1/f (3 dB per octave): white noise shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.arange(len(spectrum), dtype=np.float64)
    spectrum[1:] /= np.sqrt(frequencies[1:])
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n=length).astype(np.float32)


def pink_noise(waveform, strength, rng, sampling_rate, **folders):
    return _at_snr(waveform, pink(len(waveform), rng), _snr_db(strength))


def audio_files(folder: str | Path) -> list[Path]:
    """The audio files under `folder` (any depth), in a stable order."""
    from hf_transfer.data.audio import AUDIO_SUFFIXES

    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


@lru_cache(maxsize=8)
def _folder_clips(folder: str, sampling_rate: int) -> tuple[np.ndarray, ...]:
    from hf_transfer.data.audio_io import read_audio

    clips = tuple(read_audio(str(path), sampling_rate) for path in audio_files(folder))
    return tuple(c for c in clips if len(c) and _rms(c) > 0)


def _folder_clip(folder: str | None, option: str, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    from hf_transfer.errors import HfTransferError

    clips = _folder_clips(str(folder), int(sampling_rate)) if folder else ()
    if not clips:
        raise HfTransferError(f"{option} {folder} holds no readable, non-silent audio file; give a folder of WAV/FLAC/OGG clips")
    return clips[int(rng.integers(len(clips)))]


def noise_clips(waveform, strength, rng, sampling_rate, noise_dir=None, **folders):
    clip = _folder_clip(noise_dir, "--shift_noise_dir", sampling_rate, rng)
    # A random stretch of a random clip, looped when shorter than the waveform.
    start = int(rng.integers(len(clip)))
    noise = np.resize(np.roll(clip, -start), len(waveform))
    return _at_snr(waveform, noise, _snr_db(strength))


# --- the telephone line ---

def _telephone_values(strength: float, sampling_rate: int) -> tuple[float, float, int, int]:
    """(low edge Hz, high edge Hz, the rate of the round trip, mu-law levels): the full chain at strength 1, a wider
    band, a higher rate and finer quantisation below it (log-spaced between the clip's own and the telephone's)."""
    nyquist = sampling_rate / 2
    low = TELEPHONE_BAND[0] * strength
    high = nyquist * (min(TELEPHONE_BAND[1], nyquist * 0.95) / nyquist) ** strength
    rate = sampling_rate
    if sampling_rate > TELEPHONE_RATE:
        rate = int(round(sampling_rate * (TELEPHONE_RATE / sampling_rate) ** strength / 1000) * 1000) or TELEPHONE_RATE
    levels = int(round(2 ** (16 - 8 * strength)))  # 16-bit linear down to G.711's 8-bit mu-law
    return low, high, rate, levels


def telephone(waveform, strength, rng, sampling_rate, **folders):
    """The line as a call goes through it: band-pass (G.712's 300-3,400 Hz), sampled at 8 kHz and coded with mu-law
    there (G.711: its quantisation noise stays inside the narrow band), then back at the clip's rate."""
    import torch
    from torchaudio.functional import (
        highpass_biquad,
        lowpass_biquad,
        mu_law_decoding,
        mu_law_encoding,
    )

    from hf_transfer.data.audio_io import resample

    low, high, rate, levels = _telephone_values(strength, sampling_rate)
    with torch.no_grad():
        signal = _tensor(waveform)
        for q in _BUTTERWORTH_Q:
            if low >= 20.0:
                signal = highpass_biquad(signal, sampling_rate, low, q)
            if high < sampling_rate / 2 * 0.999:
                signal = lowpass_biquad(signal, sampling_rate, high, q)
        line = resample(signal.numpy(), sampling_rate, rate)
        if levels <= 2 ** 15:
            coded = mu_law_encoding(_tensor(line).clamp(-1.0, 1.0), levels)
            line = mu_law_decoding(coded, levels).numpy()
    return _fit(resample(np.asarray(line, dtype=np.float32), rate, sampling_rate), len(waveform))


# --- rooms ---

def _room_values(strength: float) -> tuple[float, float]:
    return 0.1 + 0.9 * strength, 12.0 - 18.0 * strength  # RT60 in seconds, direct-to-reverberant ratio in dB


def room_impulse(strength: float, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: the direct sound, then Gaussian noise decaying 60 dB over RT60, scaled to the
    direct-to-reverberant ratio (the classic exponential-decay model of a diffuse field)."""
    rt60, drr_db = _room_values(strength)
    length = max(2, int(min(rt60, 2.0) * sampling_rate))
    t = np.arange(length) / sampling_rate
    tail = rng.standard_normal(length) * np.exp(-6.908 * t / rt60)  # ln(1000) = 6.908: -60 dB at RT60
    tail[: max(1, int(0.0025 * sampling_rate))] = 0.0  # the first reflection a few ms after the direct sound
    tail *= 10 ** (-drr_db / 20) / max(np.sqrt(np.sum(tail ** 2)), 1e-12)
    tail[0] = 1.0
    return tail.astype(np.float32)


def _convolved(waveform: np.ndarray, impulse: np.ndarray) -> np.ndarray:
    from torchaudio.functional import fftconvolve

    wet = fftconvolve(_tensor(waveform), _tensor(impulse)).numpy()[: len(waveform)]
    scale = _rms(waveform) / max(_rms(wet), 1e-12)  # the room changes the sound, not its level
    return (wet * scale).astype(np.float32)


def reverb(waveform, strength, rng, sampling_rate, **folders):
    return _convolved(waveform, room_impulse(strength, sampling_rate, rng))


def reverb_files(waveform, strength, rng, sampling_rate, impulse_dir=None, **folders):
    impulse = _folder_clip(impulse_dir, "--shift_impulse_dir", sampling_rate, rng)
    wet = _convolved(waveform, impulse)
    return ((1.0 - strength) * waveform + strength * wet).astype(np.float32)


# --- level ---

def _gain_db(strength: float) -> float:
    return 24.0 * strength


def gain(waveform, strength, rng, sampling_rate, **folders):
    # Louder or quieter (a random sign); full scale stays the limit, so a loud gain clips like a hot microphone.
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return np.clip(waveform * 10 ** (sign * _gain_db(strength) / 20), -1.0, 1.0).astype(np.float32)


def _clipped_share(strength: float) -> float:
    return 0.25 * strength


def clipping(waveform, strength, rng, sampling_rate, **folders):
    # An overdriven input: the loudest share of samples flattened at a threshold, then the level brought back.
    magnitude = np.abs(waveform)
    peak = float(magnitude.max()) if len(waveform) else 0.0
    if peak == 0.0:
        return waveform
    threshold = max(float(np.quantile(magnitude, 1.0 - _clipped_share(strength))), 1e-6)
    return (np.clip(waveform, -threshold, threshold) * (peak / threshold)).astype(np.float32)


def _describe_telephone(strength: float) -> str:
    low, high, rate, levels = _telephone_values(strength, 16000)
    return (f"band {low:.0f}-{high:.0f} Hz, {rate / 1000:g} kHz round trip, mu-law {math.log2(levels):.0f}-bit "
            "(at 16 kHz)")


TRANSFORMS = registry(
    Transform("white_noise", "audio", white_noise, lambda s: f"SNR {_snr_db(s):.0f} dB", "white Gaussian noise at an SNR"),
    Transform("pink_noise", "audio", pink_noise, lambda s: f"SNR {_snr_db(s):.0f} dB",
              "pink (1/f) noise at an SNR: closer to wind, traffic and crowds than white"),
    Transform("noise_clips", "audio", noise_clips, lambda s: f"SNR {_snr_db(s):.0f} dB",
              "recorded noise from --shift_noise_dir at an SNR (a random clip and offset, looped)"),
    Transform("telephone", "audio", telephone, _describe_telephone,
              "a telephone line: band-pass 300-3,400 Hz, 8 kHz and back, mu-law"),
    Transform("reverb", "audio", reverb, lambda s: "RT60 {:.2f} s, direct-to-reverberant {:.0f} dB".format(*_room_values(s)),
              "a synthetic room (exponentially decaying noise tail)"),
    Transform("reverb_files", "audio", reverb_files, lambda s: f"{s:.0%} wet",
              "a recorded room: an impulse response from --shift_impulse_dir, mixed wet/dry"),
    Transform("gain", "audio", gain, lambda s: f"level +/-{_gain_db(s):.0f} dB (random sign), clipped at full scale",
              "a louder or quieter microphone"),
    Transform("clipping", "audio", clipping, lambda s: f"the loudest {_clipped_share(s):.0%} of samples flattened",
              "an overdriven input"),
)
