"""Audio data: Hub datasets or local files, checked up front from their headers, decoded and resampled lazily per batch.

Sources: a Hub dataset with an audio column (cast to `Audio(decode=False)`, so `datasets` never needs
torchcodec), a csv/jsonl/tsv/parquet table of paths (relative paths resolve against the table's folder),
or a folder holding one subfolder per label; reading them, the held-out split, the subsets and the bad-file report
are the media layer's (`hf_transfer.data.media`, shared with images).

Every clip is checked before training with `soundfile.info` (header only, no decoding): unreadable, empty
or too-short clips are skipped with a count and their paths in the log (or are an error with
`--on_bad_audio error`), so nothing fails mid-epoch. The same pass gives the `length` column (samples at
the model's rate) that the Trainer's `group_by_length` sampler reads.

Decoding happens in the collator, not in a `set_transform`: the Trainer reads `dataset["length"]` for
length-grouped sampling, and on a dataset with a custom transform every element of that column goes
through the transform, i.e. the whole split would be decoded each epoch just to read its lengths
(datasets 5.2). Rows stay references (path or bytes) plus labels, so nothing decoded reaches the cache.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from hf_transfer.data.audio_io import add_noise, probe, read_audio
from hf_transfer.data.labels import LABEL_COLUMNS
from hf_transfer.data.media import (
    LabelledMedia,
    MediaDataArgs,
    Medium,
    check_every_split,
    describe,
    load_labelled_splits,
    nothing_usable_error,
    report_bad_files,
)
from hf_transfer.data.randomness import AUGMENT, AUGMENT_STREAM, RowRandom, TrainingEpoch
from hf_transfer.errors import HfTransferError

logger = logging.getLogger(__name__)

AUDIO_COLUMNS = ("audio", "file", "path", "audio_path", "audio_file", "filename", "wav")
# What soundfile's bundled libsndfile decodes without system libraries (MP3 since libsndfile 1.1).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
AUDIO = Medium(column="audio", item="clip", content="audio", feature="Audio", columns=AUDIO_COLUMNS, suffixes=AUDIO_SUFFIXES)


@dataclass
class AudioDataArgs(MediaDataArgs):
    medium = AUDIO

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id (or a local dataset folder) with an audio column."})
    train_split_name: str = field(default="train", metadata={"help": "Hub dataset: the training split."})
    validation_split_name: str = field(
        default="validation", metadata={"help": "Hub dataset: the validation split (held out from train when absent)."}
    )
    test_split_name: str = field(default="test", metadata={"help": "Hub dataset: the test split (evaluated when present)."})
    train_file: str | None = field(
        default=None,
        metadata={"help": "Local table (csv, tsv, json, jsonl, parquet) with an audio path column; relative paths "
                  "resolve against the table's folder."},
    )
    train_dir: str | None = field(default=None, metadata={"help": "Local folder with one subfolder of clips per label."})
    audio_column: str | None = field(
        default=None, metadata={"help": f"Audio column (default: an Audio feature, else the first of {', '.join(AUDIO_COLUMNS)})."}
    )
    max_duration_seconds: float | None = field(default=None, metadata={"help": "Longer clips are cut or skipped (--long_audio)."})
    long_audio: str = field(
        default="cut",
        metadata={"help": "Clips over --max_duration_seconds: 'cut' (a random window in training, the start in "
                  "evaluation) or 'skip'. Counts are logged.", "choices": ("cut", "skip")},
    )
    on_bad_audio: str = field(
        default="skip",
        metadata={"help": "Unreadable, empty or missing audio files: 'skip' (count and paths logged) or 'error'.",
                  "choices": ("skip", "error")},
    )
    max_train_samples_per_class: int | None = field(
        default=None,
        metadata={"help": "Audio classification: train on a random subset with at most this many clips of each label (few-shot)."},
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N clips of each split."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_duration_seconds is not None and self.max_duration_seconds <= 0:
            raise HfTransferError(f"--max_duration_seconds must be > 0, got {self.max_duration_seconds}")

    def hub_split_names(self) -> dict[str, str]:
        return {"train": self.train_split_name, "validation": self.validation_split_name, "test": self.test_split_name}


@dataclass
class AudioLabelArgs:
    label_column: str | None = field(default=None, metadata={"help": f"Label column (default: the first of {', '.join(LABEL_COLUMNS)})."})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "The declared label set, in id order; labels outside it are an error."}
    )


@dataclass
class AudioAugmentArgs:
    speed_factors: list[float] | None = field(
        default=None,
        metadata={"help": "Speed perturbation of training clips: each plays at a factor drawn from this list "
                  "(e.g. 0.9 1.0 1.1; pitch moves with it, as Kaldi's speed perturbation)."},
    )
    noise_snr_db: float | None = field(default=None, metadata={"help": "Add white noise to training clips at this SNR in dB."})
    noise_probability: float | None = field(default=None, metadata={"help": "Share of training clips that get noise (default 0.5)."})

    def __post_init__(self) -> None:
        if self.speed_factors is not None and (not self.speed_factors or min(self.speed_factors) <= 0):
            raise HfTransferError(f"--speed_factors must be positive numbers, got {self.speed_factors}")
        if self.noise_probability is not None:
            if self.noise_snr_db is None:
                raise HfTransferError("--noise_probability needs --noise_snr_db")
            if not 0 <= self.noise_probability <= 1:
                raise HfTransferError(f"--noise_probability must be in [0, 1], got {self.noise_probability}")


# ---------------------------------------------------------------------------------------------------------
# The up-front check: headers, lengths, bad and long clips
# ---------------------------------------------------------------------------------------------------------

def check_audio(dataset, split: str, args: AudioDataArgs, sampling_rate: int, min_samples: int):
    """Read every clip's header; drop (or refuse) the unusable ones; add `length` (samples at `sampling_rate`).

    Returns the checked dataset and a Counter of what was skipped or cut. Only headers are read, so this
    costs milliseconds per thousand local files.
    """
    bad: list[tuple[str, str]] = []
    counts: Counter = Counter()
    keep, lengths = [], []
    max_samples = None if args.max_duration_seconds is None else int(args.max_duration_seconds * sampling_rate)
    index = 0
    for batch in dataset.select_columns(["audio"]).iter(batch_size=256):
        for source in batch["audio"]:
            header = probe(source)
            if isinstance(header, str):
                bad.append((describe(source), header))
            else:
                samples = math.ceil(header.frames * sampling_rate / header.sampling_rate)
                if max_samples is not None and samples > max_samples:
                    counts["too_long_skipped" if args.long_audio == "skip" else "too_long_cut"] += 1
                    samples = None if args.long_audio == "skip" else max_samples
                if samples is not None and samples < min_samples:
                    counts["too_short_skipped"] += 1  # shorter than the conv stack's receptive field: no frame at all
                    samples = None
                if samples is not None:
                    keep.append(index)
                    lengths.append(samples)
            index += 1

    report_bad_files(bad, split, AUDIO, args.on_bad_audio)
    if bad:
        counts["bad_audio_skipped"] = len(bad)
    for what, n in counts.items():
        if what != "bad_audio_skipped":
            logger.warning("%s split: %d clip(s) %s (--max_duration_seconds %s, receptive field %d samples)",
                           split, n, what.replace("_", " "), args.max_duration_seconds, min_samples)
    if not keep:
        skipped = Counter({k.replace("_", " "): v for k, v in counts.items() if k not in ("bad_audio_skipped", "too_long_cut")})
        raise nothing_usable_error(split, AUDIO, index, bad, skipped)
    checked = dataset.select(keep) if len(keep) < len(dataset) else dataset
    return checked.add_column("length", lengths), counts


def check_splits(data, args: AudioDataArgs, sampling_rate: int, min_samples: int):
    """`check_audio` on every split; the training split is marked for augmentation. Returns (data, report)."""

    def check(dataset, split):
        checked, counts = check_audio(dataset, split, args, sampling_rate, min_samples)
        hours = round(sum(checked["length"]) / sampling_rate / 3600, 4)
        return checked, {**{f"{split}_{what}": n for what, n in counts.items()}, f"{split}_clips": len(checked), f"{split}_hours": hours}

    return check_every_split(data, check)


def load_audio_classification(
    args: AudioDataArgs, label_args: AudioLabelArgs, sampling_rate: int, min_samples: int, seed: int = 42
) -> LabelledMedia:
    """Load, label and check an audio classification data set (columns audio, labels, length; + augment in train);
    cheap checks (columns, labels) come first. The report gives clips, hours and skip counts per split."""
    data, names = load_labelled_splits(args, label_args.label_column, label_args.class_names, seed)
    data, report = check_splits(data, args, sampling_rate, min_samples)
    return LabelledMedia(data, names, report)


# ---------------------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------------------

class AudioCollator:
    """Decodes, resamples, augments (training rows only) and featurises a list of rows, then pads the batch.

    Gives `input_values`, `attention_mask` (when the feature extractor returns one) and `labels`: class ids
    as a tensor, or token sequences padded with -100 (ignored by the CTC loss). Batches are padded to at
    least `min_samples`, so the model's time masking never meets a sequence shorter than its mask span.
    """

    def __init__(self, feature_extractor, *, max_seconds: float | None = None, augment: AudioAugmentArgs | None = None,
                 min_samples: int = 0, seed: int = 42, long_training_clips: int | None = None, shift=None,
                 epoch: TrainingEpoch | None = None):
        self.feature_extractor = feature_extractor
        self.sampling_rate = feature_extractor.sampling_rate
        self.max_seconds = max_seconds
        self.augment = augment or AudioAugmentArgs()
        self.min_samples = min_samples
        # Training clips over max_seconds (a random window each epoch); None: unknown (the loader's report says)
        self.long_training_clips = long_training_clips
        # Speed, noise and a long clip's window: the row's own draws for the epoch (hf_transfer.data.randomness); `epoch`
        # is the run's, registered as a callback by the task.
        self.random = RowRandom(seed, AUGMENT_STREAM, epoch)
        self.shift = shift  # a ShiftPlan (hf_transfer/data/shift): target conditions on decoded clips, before the noise

    @property
    def inputs_vary_per_epoch(self) -> str | bool:
        """Why training inputs differ between epochs (speed or noise augmentation, random crops of long clips), or
        False: read by the cached frozen prefix, which must see the same input every epoch."""
        if self.augment.speed_factors or self.augment.noise_snr_db is not None:
            return "the audio collator augments training clips (--speed_factors, --noise_snr_db), so they change every epoch"
        if self.shift is not None and self.shift.varies_per_epoch:
            return "--synthetic_shift transforms training clips anew every epoch"
        if self.max_seconds is not None and self.long_training_clips != 0:
            many = "some" if self.long_training_clips is None else str(self.long_training_clips)
            return (f"{many} training clips are longer than --max_duration_seconds {self.max_seconds:g} and get a random "
                    "window each epoch (pass --long_audio skip or a larger --max_duration_seconds)")
        return False

    def waveform(self, row: dict) -> np.ndarray:
        if not row.get(AUGMENT):
            waveform = read_audio(row["audio"], self.sampling_rate, max_seconds=self.max_seconds)
            return waveform if self.shift is None else self.shift.apply(row, waveform, sampling_rate=self.sampling_rate)
        rng = self.random.generator(row)
        speed = float(rng.choice(self.augment.speed_factors)) if self.augment.speed_factors else 1.0
        waveform = read_audio(row["audio"], self.sampling_rate, max_seconds=self.max_seconds, rng=rng, speed=speed)
        if self.shift is not None:
            waveform = self.shift.apply(row, waveform, sampling_rate=self.sampling_rate)
        probability = 0.5 if self.augment.noise_probability is None else self.augment.noise_probability
        if self.augment.noise_snr_db is not None and rng.random() < probability:
            waveform = add_noise(waveform, self.augment.noise_snr_db, rng)
        return waveform

    def __call__(self, rows: list[dict]) -> dict:
        waveforms = [self.waveform(row) for row in rows]
        features = self.feature_extractor(waveforms, sampling_rate=self.sampling_rate)  # per-clip normalisation
        longest = max(len(w) for w in waveforms)
        batch = self.feature_extractor.pad(
            {"input_values": features["input_values"]},
            padding="longest" if longest >= self.min_samples else "max_length",
            max_length=None if longest >= self.min_samples else self.min_samples,
            return_attention_mask=self.feature_extractor.return_attention_mask,
            return_tensors="pt",
        )
        if "labels" in rows[0]:
            batch["labels"] = pad_labels([row["labels"] for row in rows])
        return batch


def pad_labels(labels: list) -> torch.Tensor:
    """Class ids as a 1-d tensor; token sequences right-padded with -100."""
    if not isinstance(labels[0], (list, tuple, np.ndarray)):
        return torch.tensor(labels, dtype=torch.long)
    longest = max(len(seq) for seq in labels)
    padded = torch.full((len(labels), longest), -100, dtype=torch.long)
    for i, seq in enumerate(labels):
        padded[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return padded


class WhisperCollator:
    """Decodes like the audio collator (same reading, resampling, augmentation), then log-mel features padded to the
    window: `input_features` (batch, mel bins, 2 * positions) and `labels`."""

    def __init__(self, audio_collator, feature_extractor) -> None:
        self.audio = audio_collator
        self.feature_extractor = feature_extractor

    @property
    def inputs_vary_per_epoch(self) -> str | bool:
        return self.audio.inputs_vary_per_epoch

    def __call__(self, rows: list[dict]) -> dict:
        waveforms = [self.audio.waveform(row) for row in rows]
        batch = self.feature_extractor(waveforms, sampling_rate=self.feature_extractor.sampling_rate, return_tensors="pt",
                                       padding="max_length", truncation=True)
        out = {"input_features": batch["input_features"]}
        if "labels" in rows[0]:
            out["labels"] = pad_labels([row["labels"] for row in rows])
        return out
