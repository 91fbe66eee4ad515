"""Decoding: resampling, mixing, windows, speed and noise checked against independent computations; header probes."""
import math

import numpy as np
import pytest
import soundfile
from audio_helpers import (
    bad_clips,  # noqa: F401  (fixtures)
    tone,
    write_clip,
    write_corrupt,
    write_empty,
    write_zero_rate,
)

from hf_transfer.data.audio_io import AudioHeader, add_noise, probe, read_audio


def peak_frequency(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("rate, channels, ext", [(8000, 1, "wav"), (44100, 2, "wav"), (16000, 1, "flac"), (22050, 2, "flac"), (32000, 1, "ogg")])
def test_decoding_resamples_to_the_target_rate_keeping_pitch_duration_and_level(tmp_path, rate, channels, ext):
    from scipy.signal import resample_poly

    path = write_clip(tmp_path / f"tone.{ext}", 440.0, rate, 0.5, channels)
    wave = read_audio(str(path), 16000)

    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == 8000  # 0.5 s at 16 kHz, whatever the source rate
    assert abs(peak_frequency(wave, 16000) - 440.0) <= 2.0  # one FFT bin is 2 Hz here
    middle = slice(800, -800)  # filters differ at the edges
    assert np.sqrt(np.mean(wave[middle] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.03)
    if ext != "ogg":  # lossless sources: compare with an independent polyphase resampler (scipy)
        source = soundfile.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
        g = math.gcd(rate, 16000)
        reference = resample_poly(source, 16000 // g, rate // g)[: len(wave)]
        assert np.max(np.abs(wave[middle] - reference[middle])) < 0.01


def test_stereo_is_mixed_to_mono(tmp_path):
    left = tone(300.0, 16000, 0.25)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(read_audio(str(path), 16000), left / 2, atol=1e-6)


def test_a_long_clip_is_read_as_a_window_the_start_in_evaluation_a_random_one_in_training(tmp_path):
    ramp = np.linspace(-0.9, 0.9, 32000, dtype=np.float32)  # 2 s at 16 kHz; every sample value marks its position
    path = tmp_path / "ramp.wav"
    soundfile.write(path, ramp, 16000, subtype="FLOAT")

    start = read_audio(str(path), 16000, max_seconds=0.5)
    np.testing.assert_array_equal(start, ramp[:8000])
    windows = [read_audio(str(path), 16000, max_seconds=0.5, rng=np.random.default_rng(s)) for s in range(3)]
    offsets = [int(np.argmin(np.abs(ramp - w[0]))) for w in windows]
    for w, k in zip(windows, offsets):
        np.testing.assert_array_equal(w, ramp[k : k + 8000])
    assert len(set(offsets)) == 3 and max(offsets) > 0


def test_speed_perturbation_shortens_the_clip_and_raises_the_pitch(tmp_path):
    path = write_clip(tmp_path / "tone.wav", 400.0, 16000, 1.0)
    fast = read_audio(str(path), 16000, speed=1.25)
    assert len(fast) == 12800  # 16000 / 1.25
    assert abs(peak_frequency(fast, 16000) - 500.0) <= 2.0


def test_noise_is_added_at_the_requested_snr():
    clean = tone(440.0, 16000, 0.5)
    noisy = add_noise(clean, 10.0, np.random.default_rng(0))
    snr = 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum((noisy - clean).astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.01)
    assert np.array_equal(add_noise(np.zeros(100, np.float32), 10.0, np.random.default_rng(0)), np.zeros(100))



def test_probe_reads_headers_and_names_what_is_wrong(tmp_path, bad_clips):
    assert probe(str(write_clip(tmp_path / "ok.flac", 440.0, 44100, 0.5, channels=2))) == AudioHeader(22050, 44100, 2)
    reasons = {name: probe(str(path)) for name, path in bad_clips.items()}
    assert reasons == {
        "corrupt": "not a readable audio file (format not recognised)",
        "empty": "not a readable audio file (format not recognised)",
        "zero_rate": "sample rate cannot be read from the header",
        "no_frames": "empty (no audio frames)",
        "missing": "file not found",
    }
    embedded = {"bytes": (tmp_path / "ok.flac").read_bytes(), "path": "ok.flac"}
    assert probe(embedded) == AudioHeader(22050, 44100, 2)
