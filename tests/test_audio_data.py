"""Audio data: decoding and resampling checked against independent computations, header checks, sources, the collator."""
import logging
import math

import numpy as np
import pytest
import soundfile
import torch

from audio_helpers import (
    make_label_folders, table_from_folders, tone, write_clip, write_corrupt, write_empty, write_table, write_zero_rate,
)
from hf_transfer import HfTransferError
from hf_transfer.data import audio
from hf_transfer.data.audio import (
    AudioAugmentArgs, AudioCollator, AudioDataArgs, AudioHeader, AudioLabelArgs, add_noise, check_audio, load_audio_classification,
    probe, read_audio,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny tensors gain nothing from a second thread, and on a shared 2-core machine the intra-op pool
    # made a tiny wav2vec2 step 25x slower (2.5 s vs 0.1 s) while another process held a core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture
def bad_clips(tmp_path):
    return {
        "corrupt": write_corrupt(tmp_path / "corrupt.wav"),
        "empty": write_empty(tmp_path / "empty.wav"),
        "zero_rate": write_zero_rate(tmp_path / "zero_rate.wav"),
        "no_frames": write_clip(tmp_path / "no_frames.wav", 440.0, 16000, 0.0),
        "missing": tmp_path / "missing.wav",
    }


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


def _dataset(paths):
    from datasets import Dataset

    return Dataset.from_dict({"audio": [str(p) for p in paths], "labels": list(range(len(paths)))})


def test_check_reads_lengths_from_headers_without_decoding(tmp_path, monkeypatch):
    clips = [write_clip(tmp_path / "a.wav", 440.0, 8000, 0.3), write_clip(tmp_path / "b.flac", 440.0, 44100, 0.25, 2)]

    def no_decoding(*args, **kwargs):
        raise AssertionError("the up-front check decoded samples")

    monkeypatch.setattr(soundfile.SoundFile, "read", no_decoding)
    checked, counts = check_audio(_dataset(clips), "train", AudioDataArgs(), 16000, min_samples=400)
    assert list(checked["length"]) == [math.ceil(2400 * 2), math.ceil(11025 * 16000 / 44100)]
    assert not counts


def test_bad_clips_are_skipped_with_a_count_and_their_paths_in_the_log(tmp_path, bad_clips, caplog):
    good = write_clip(tmp_path / "good.wav", 440.0, 16000, 0.3)
    with caplog.at_level(logging.WARNING, logger="hf_transfer.data.audio"):
        checked, counts = check_audio(_dataset([good, *bad_clips.values()]), "train", AudioDataArgs(), 16000, 400)
    assert list(checked["audio"]) == [str(good)] and list(checked["labels"]) == [0]
    assert counts["bad_audio_skipped"] == 5
    assert "skipped 5 unusable audio file(s) in the train split" in caplog.text
    for path in bad_clips.values():
        assert str(path) in caplog.text


def test_bad_clips_are_an_error_when_asked(tmp_path, bad_clips):
    good = write_clip(tmp_path / "good.wav", 440.0, 16000, 0.3)
    with pytest.raises(HfTransferError, match=r"1 unusable audio file\(s\) in the train split: .*zero_rate.wav: sample rate cannot be read"):
        check_audio(_dataset([good, bad_clips["zero_rate"]]), "train", AudioDataArgs(on_bad_audio="error"), 16000, 400)


def test_a_split_with_no_usable_clip_is_an_error_naming_the_reasons(bad_clips):
    with pytest.raises(HfTransferError, match=r"the validation split has no usable audio: all 2 clips were skipped \(1 not a readable"):
        check_audio(_dataset([bad_clips["corrupt"], bad_clips["missing"]]), "validation", AudioDataArgs(), 16000, 400)


def test_long_clips_are_cut_or_skipped_and_short_ones_skipped_with_counts(tmp_path):
    clips = [write_clip(tmp_path / f"{s}.wav", 440.0, 16000, s) for s in (0.01, 0.5, 2.0, 3.0)]
    cut, counts = check_audio(_dataset(clips), "train", AudioDataArgs(max_duration_seconds=1.0), 16000, min_samples=400)
    assert list(cut["length"]) == [8000, 16000, 16000] and counts == {"too_long_cut": 2, "too_short_skipped": 1}
    skipped, counts = check_audio(_dataset(clips), "train", AudioDataArgs(max_duration_seconds=1.0, long_audio="skip"), 16000, 400)
    assert list(skipped["length"]) == [8000] and counts == {"too_long_skipped": 2, "too_short_skipped": 1}


@pytest.fixture(scope="module")
def label_folders(tmp_path_factory):
    return make_label_folders(tmp_path_factory.mktemp("clips") / "train", per_label=6)


def _hub_folder(root, label_folders):
    """A Hub-style dataset (parquet, an Audio column with the bytes embedded), loadable by name like one on the Hub."""
    from datasets import Audio, ClassLabel, Dataset

    clips = sorted(label_folders.rglob("*.*"))
    data = Dataset.from_dict({
        "audio": [{"bytes": c.read_bytes(), "path": c.name} for c in clips],
        "label": [["high", "low"].index(c.parent.name) for c in clips],
        "speaker_id": [0] * len(clips),
    }).cast_column("audio", Audio()).cast_column("label", ClassLabel(names=["high", "low"]))
    (root / "data").mkdir(parents=True)
    data.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root


def test_every_source_gives_the_same_clips_labels_and_lengths(label_folders, tmp_path):
    table_dir = tmp_path / "tables" / "nested"
    sources = {
        "folders": ["--train_dir", str(label_folders)],
        "csv with relative paths": ["--train_file", str(table_from_folders(label_folders, table_dir / "train.csv"))],
        "jsonl": ["--train_file", str(table_from_folders(label_folders, table_dir / "train.jsonl", label_key="class"))],
        "hub dataset": ["--dataset_name", str(_hub_folder(tmp_path / "hub", label_folders))],
    }
    from hf_transfer.config import parse_args

    seen = {}
    for name, flags in sources.items():
        data_args, label_args = parse_args((AudioDataArgs, AudioLabelArgs), flags + ["--validation_split_percentage", "25"])
        data = load_audio_classification(data_args, label_args, 16000, min_samples=400, seed=0)
        assert data.label_names == ["high", "low"], name
        assert set(data.datasets["train"].column_names) == {"audio", "labels", "length", "augment"}, name
        assert set(data.datasets["validation"].column_names) == {"audio", "labels", "length"}, name
        # (label, file name) -> length, over both splits: the Hub copy keeps only file names, the others full paths.
        seen[name] = {
            (data.label_names[row["labels"]], audio.describe(row["audio"]).rsplit("/", 1)[-1]): row["length"]
            for split in ("train", "validation") for row in data.datasets[split]
        }
    assert len(seen["folders"]) == 12
    assert seen["csv with relative paths"] == seen["jsonl"] == seen["hub dataset"] == seen["folders"]


def test_hub_clips_decode_from_their_embedded_bytes(label_folders, tmp_path):
    from hf_transfer.config import parse_args

    data_args, label_args = parse_args((AudioDataArgs, AudioLabelArgs), ["--dataset_name", str(_hub_folder(tmp_path / "hub", label_folders))])
    row = load_audio_classification(data_args, label_args, 16000, 400).datasets["train"][0]
    assert isinstance(row["audio"], dict) and row["audio"]["bytes"]
    assert len(read_audio(row["audio"], 16000)) == row["length"]


@pytest.mark.parametrize("flags, message", [
    (["--label_column", "speaker"], r"label column 'speaker' not found; the data has columns: path, label, note"),
    (["--train_dir", "/no/such/folder"], r"--train_dir /no/such/folder does not exist"),
    (["--train_file", "/no/such.csv"], r"--train_file /no/such.csv does not exist"),
    ([], r"no training data: pass --dataset_name"),
])
def test_bad_sources_are_one_clear_error(label_folders, tmp_path, flags, message):
    from hf_transfer.config import parse_args

    table = table_from_folders(label_folders, tmp_path / "train.csv", note="x")
    if flags and flags[0] == "--label_column":
        flags = ["--train_file", str(table), *flags]
    with pytest.raises(HfTransferError, match=message):
        data_args, label_args = parse_args((AudioDataArgs, AudioLabelArgs), flags)
        load_audio_classification(data_args, label_args, 16000, 400)


def test_an_empty_split_is_an_error(label_folders, tmp_path):
    empty_table = write_table(tmp_path / "empty.csv", [])
    empty_folder = tmp_path / "empty_dir"
    (empty_folder / "low").mkdir(parents=True)
    for flags, message in [
        (["--train_dir", str(label_folders), "--validation_file", str(empty_table)], "the validation split is empty"),
        (["--train_dir", str(label_folders), "--validation_dir", str(empty_folder)], "the validation split is empty"),
    ]:
        with pytest.raises(HfTransferError, match=message):
            load_audio_classification(AudioDataArgs(**_kwargs(flags)), AudioLabelArgs(), 16000, 400)


def _kwargs(flags):
    return {flags[i].lstrip("-"): flags[i + 1] for i in range(0, len(flags), 2)}


def _feature_extractor(mask=True):
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=mask)


def test_collator_pads_per_batch_with_an_attention_mask_and_normalises_each_clip(tmp_path):
    clips = [write_clip(tmp_path / f"{i}.wav", 300.0 * (i + 1), 8000, s) for i, s in enumerate((0.1, 0.25, 0.2))]
    rows = [{"audio": str(c), "labels": i, "length": 0} for i, c in enumerate(clips)]
    batch = AudioCollator(_feature_extractor())(rows)

    assert batch["input_values"].shape == (3, 4000) and batch["input_values"].dtype == torch.float32
    assert batch["attention_mask"].sum(1).tolist() == [1600, 4000, 3200]
    assert batch["labels"].tolist() == [0, 1, 2]
    for values, n in zip(batch["input_values"], (1600, 4000, 3200)):
        assert float(values[:n].mean()) == pytest.approx(0.0, abs=1e-4) and float(values[:n].std()) == pytest.approx(1.0, abs=1e-2)
        assert not values[n:].any()
    assert "attention_mask" not in AudioCollator(_feature_extractor(mask=False))(rows)


def test_collator_pads_token_labels_with_minus_100_and_short_batches_to_the_mask_span(tmp_path):
    clip = write_clip(tmp_path / "short.wav", 440.0, 16000, 0.01)
    rows = [{"audio": str(clip), "labels": [5, 6, 7]}, {"audio": str(clip), "labels": [8]}]
    batch = AudioCollator(_feature_extractor(), min_samples=1000)(rows)
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]
    assert batch["input_values"].shape == (2, 1000) and batch["attention_mask"].sum(1).tolist() == [160, 160]


def test_augmentation_touches_training_rows_only(tmp_path):
    clip = str(write_clip(tmp_path / "tone.wav", 440.0, 16000, 0.5))
    augment = AudioAugmentArgs(speed_factors=[1.25], noise_snr_db=5.0, noise_probability=1.0)
    collator = AudioCollator(_feature_extractor(), augment=augment, seed=0)
    clean = AudioCollator(_feature_extractor())([{"audio": clip, "labels": 0}])["input_values"][0]

    evaluation = collator([{"audio": clip, "labels": 0}])["input_values"][0]
    training = collator([{"audio": clip, "labels": 0, "augment": True}])["input_values"][0]
    assert torch.equal(evaluation, clean)
    assert len(training) == 6400  # sped up by 1.25
    again = collator([{"audio": clip, "labels": 0, "augment": True}])["input_values"][0]
    assert not torch.equal(training, again), "every draw should give new noise"


def test_group_by_length_reads_the_length_column_and_decodes_nothing(label_folders, tmp_path, monkeypatch):
    from transformers import TrainingArguments, Wav2Vec2ForSequenceClassification

    from audio_helpers import tiny_speech_config
    from hf_transfer import TransferTrainer

    data = load_audio_classification(AudioDataArgs(train_dir=str(label_folders)), AudioLabelArgs(), 16000, 400)
    decoded = []
    monkeypatch.setattr(audio, "read_audio", lambda *a, **k: decoded.append(a) or np.zeros(400, np.float32))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), train_sampling_strategy="group_by_length", per_device_train_batch_size=2,
                             remove_unused_columns=False, report_to="none", use_cpu=True)
    trainer = TransferTrainer(model=Wav2Vec2ForSequenceClassification(tiny_speech_config()), args=args,
                              train_dataset=data.datasets["train"], data_collator=AudioCollator(_feature_extractor()))
    sampler = trainer._get_train_sampler()
    order = list(sampler)
    assert sorted(order) == list(range(len(data.datasets["train"])))
    assert list(sampler.lengths) == list(data.datasets["train"]["length"])
    assert decoded == [], "reading lengths decoded clips"
