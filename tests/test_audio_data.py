"""Audio data: the up-front header check, sources (folders, tables, Hub), labels, splits, and the collator."""
import logging
import math

import numpy as np
import pytest
import soundfile
import torch
from audio_helpers import (
    bad_clips,  # noqa: F401  (a fixture)
    make_label_folders,
    table_from_folders,
    write_clip,
    write_corrupt,
    write_empty,
    write_table,
    write_zero_rate,
)

from hf_transfer import HfTransferError
from hf_transfer.data import audio
from hf_transfer.data.audio import (
    AudioAugmentArgs,
    AudioCollator,
    AudioDataArgs,
    AudioLabelArgs,
    check_audio,
    load_audio_classification,
)
from hf_transfer.data.audio_io import read_audio
from hf_transfer.data.media import describe


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
    with caplog.at_level(logging.WARNING, logger="hf_transfer.data.media"):
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
    from hf_transfer.cli import parse_args

    seen = {}
    for name, flags in sources.items():
        data_args, label_args = parse_args((AudioDataArgs, AudioLabelArgs), flags + ["--validation_split_percentage", "25"])
        data = load_audio_classification(data_args, label_args, 16000, min_samples=400, seed=0)
        assert data.label_names == ["high", "low"], name
        assert set(data.datasets["train"].column_names) == {"audio", "labels", "length", "augment", "row_number"}, name
        assert data.datasets["train"]["row_number"] == list(range(len(data.datasets["train"]))), name
        assert set(data.datasets["validation"].column_names) == {"audio", "labels", "length"}, name
        # (label, file name) -> length, over both splits: the Hub copy keeps only file names, the others full paths.
        seen[name] = {
            (data.label_names[row["labels"]], describe(row["audio"]).rsplit("/", 1)[-1]): row["length"]
            for split in ("train", "validation") for row in data.datasets[split]
        }
    assert len(seen["folders"]) == 12
    assert seen["csv with relative paths"] == seen["jsonl"] == seen["hub dataset"] == seen["folders"]


def test_hub_clips_decode_from_their_embedded_bytes(label_folders, tmp_path):
    from hf_transfer.cli import parse_args

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
    from hf_transfer.cli import parse_args

    table = table_from_folders(label_folders, tmp_path / "train.csv", note="x")
    if flags and flags[0] == "--label_column":
        flags = ["--train_file", str(table), *flags]
    with pytest.raises(HfTransferError, match=message):
        data_args, label_args = parse_args((AudioDataArgs, AudioLabelArgs), flags)
        load_audio_classification(data_args, label_args, 16000, 400)


def test_label_folders_skip_hidden_files_and_say_where_loose_clips_belong(tmp_path):
    folders = make_label_folders(tmp_path / "train", per_label=3)
    write_corrupt(folders / "low" / "._0.wav")  # a macOS resource fork: a clip's suffix, no audio
    data = load_audio_classification(AudioDataArgs(train_dir=str(folders), validation_dir=str(folders)), AudioLabelArgs(), 16000, 400)
    assert data.report["train_clips"] == 6 and "train_bad_audio_skipped" not in data.report
    loose = tmp_path / "loose"
    for name in ("a.wav", "b.flac"):
        write_clip(loose / name, 440.0, 16000, 0.3)
    with pytest.raises(HfTransferError, match=r"^the train split is empty: .*loose has no label subfolders with audio files "
                                              r"\(2 audio files lie directly in it: put them in a subfolder named after their label\); "
                                              r"audio files end in \.wav, \.flac"):
        load_audio_classification(AudioDataArgs(train_dir=str(loose)), AudioLabelArgs(), 16000, 400)


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


def test_augmentation_touches_training_rows_only_and_draws_per_row_epoch_and_seed(tmp_path):
    from hf_transfer.data.audio_io import add_noise
    from hf_transfer.data.randomness import AUGMENT_STREAM, ROW, TrainingEpoch

    clip = str(write_clip(tmp_path / "tone.wav", 440.0, 16000, 0.5))
    augment = AudioAugmentArgs(speed_factors=[0.8, 1.25], noise_snr_db=5.0, noise_probability=1.0)
    epoch = TrainingEpoch()
    collator = AudioCollator(_feature_extractor(), augment=augment, seed=0, epoch=epoch)
    clean = AudioCollator(_feature_extractor())([{"audio": clip, "labels": 0}])["input_values"][0]

    def training(row: int, seed: int = 0) -> np.ndarray:
        collate = collator if seed == 0 else AudioCollator(_feature_extractor(), augment=augment, seed=seed, epoch=epoch)
        return collate.waveform({"audio": clip, "labels": 0, "augment": True, ROW: row})

    evaluation = collator([{"audio": clip, "labels": 0}])["input_values"][0]
    assert torch.equal(evaluation, clean)
    # Row 3 by hand: its generator (seed, epoch, row, the augmentation's stream) picks the speed, then the noise.
    rng = np.random.default_rng([0, 0, 3, AUGMENT_STREAM])
    speed = float(rng.choice([0.8, 1.25]))
    expected = read_audio(clip, 16000, rng=rng, speed=speed)
    assert rng.random() < 1.0
    expected = add_noise(expected, 5.0, rng)
    assert np.array_equal(training(3), expected) and len(expected) == round(8000 / speed)
    assert np.array_equal(training(3), training(3))  # the same row, epoch and seed: the same clip (a resumed run's)
    assert not np.array_equal(training(3), training(4))  # another row
    assert not np.array_equal(training(3), training(3, seed=1))  # another seed
    epoch.set(1)
    assert not np.array_equal(training(3), expected)  # another epoch


def test_group_by_length_reads_the_length_column_and_decodes_nothing(label_folders, tmp_path, monkeypatch):
    from audio_helpers import tiny_speech_config
    from transformers import TrainingArguments, Wav2Vec2ForSequenceClassification

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


def test_a_per_class_subset_of_clips_and_its_contradictions(label_folders, tmp_path):
    from collections import Counter

    from audio_helpers import tiny_speech_config

    from hf_transfer.data.transcripts import TranscriptArgs, load_speech_recognition

    data_args = AudioDataArgs(train_dir=str(label_folders), validation_dir=str(label_folders), max_train_samples_per_class=2)
    data = load_audio_classification(data_args, AudioLabelArgs(), 16000, 400, seed=0)
    assert Counter(data.datasets["train"]["labels"]) == {0: 2, 1: 2} and len(data.datasets["validation"]) == 12
    with pytest.raises(HfTransferError, match=r"give --max_train_samples or --max_train_samples_per_class, not both"):
        AudioDataArgs(train_dir=str(label_folders), max_train_samples=4, max_train_samples_per_class=2)
    clip = write_clip(tmp_path / "clips" / "0.wav", 300.0, 16000, 0.3)
    table = write_table(tmp_path / "train.csv", [{"path": f"clips/{clip.name}", "text": t} for t in ("yes", "no", "yes no")])
    with pytest.raises(HfTransferError, match=r"^--max_train_samples_per_class needs class labels, .*; use --max_train_samples$"):
        load_speech_recognition(AudioDataArgs(train_file=str(table), long_audio="skip", max_train_samples_per_class=1),
                                TranscriptArgs(), tiny_speech_config(), 16000, 20)


def test_a_single_clip_of_a_label_still_gets_a_held_out_split(label_folders, tmp_path, caplog):
    rows = [{"path": str(clip), "label": clip.parent.name} for clip in sorted(label_folders.rglob("*.*"))]
    rows = [r for r in rows if r["label"] == "high"] + [next(r for r in rows if r["label"] == "low")]
    with caplog.at_level(logging.WARNING, logger="hf_transfer.data.splits"):
        data = load_audio_classification(AudioDataArgs(train_file=str(write_table(tmp_path / "t.csv", rows)),
                                                       validation_split_percentage=30), AudioLabelArgs(), 16000, 400, seed=0)
    assert len(data.datasets["train"]) == 4 and len(data.datasets["validation"]) == 3
    assert "label 'low' has only 1 clip" in caplog.text
