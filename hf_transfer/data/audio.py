"""Audio data: Hub datasets or local files, checked up front from their headers, decoded and resampled lazily per batch.

Sources: a Hub dataset with an audio column (cast to `Audio(decode=False)`, so `datasets` never needs
torchcodec), a csv/jsonl/tsv/parquet table of paths (relative paths resolve against the table's folder),
or a folder holding one subfolder per label.

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
from pathlib import Path

import numpy as np
import torch

from hf_transfer.data.audio_io import add_noise, probe, read_audio
from hf_transfer.data.io import (
    SPLITS,
    check_media_sources,
    check_not_empty,
    describe,
    media_splits,
    read_file,
)
from hf_transfer.data.labels import LABEL_COLUMNS, LabelMaps, encode_labels
from hf_transfer.data.randomness import WorkerRandom
from hf_transfer.data.splits import hold_out_validation, subsample
from hf_transfer.errors import HfTransferError

logger = logging.getLogger(__name__)

AUDIO_COLUMNS = ("audio", "file", "path", "audio_path", "audio_file", "filename", "wav")
# What soundfile's bundled libsndfile decodes without system libraries (MP3 since libsndfile 1.1).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
_LISTED_PATHS = 20  # skipped files named one per log line; beyond this only counted


@dataclass
class AudioDataArgs:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id (or a local dataset folder) with an audio column."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
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
    validation_file: str | None = field(default=None, metadata={"help": "Local validation table (same formats)."})
    test_file: str | None = field(default=None, metadata={"help": "Local test table, evaluated once after training."})
    train_dir: str | None = field(default=None, metadata={"help": "Local folder with one subfolder of clips per label."})
    validation_dir: str | None = field(default=None, metadata={"help": "Validation folder, one subfolder per label."})
    test_dir: str | None = field(default=None, metadata={"help": "Test folder, one subfolder per label."})
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
    validation_split_percentage: int = field(
        default=10, metadata={"help": "Without a validation split, hold out this share of train (stratified by label)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a random subset of this size."})
    max_train_samples_per_class: int | None = field(
        default=None,
        metadata={"help": "Audio classification: train on a random subset with at most this many clips of each label (few-shot)."},
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N clips of each split."})

    def __post_init__(self) -> None:
        check_media_sources(self, "clips")
        if self.max_duration_seconds is not None and self.max_duration_seconds <= 0:
            raise HfTransferError(f"--max_duration_seconds must be > 0, got {self.max_duration_seconds}")
        if not 0 < self.validation_split_percentage < 100:
            raise HfTransferError(f"--validation_split_percentage must be in 1..99, got {self.validation_split_percentage}")
        if self.max_train_samples is not None and self.max_train_samples_per_class is not None:
            raise HfTransferError("give --max_train_samples or --max_train_samples_per_class, not both")

    def require_source(self) -> None:
        """Checked at load time, not on parse, so a config file can hold the run and the data come as flags."""
        if not (self.dataset_name or self.train_file or self.train_dir):
            raise HfTransferError("no training data: pass --dataset_name, --train_file (a table of paths) or --train_dir (a folder per label)")


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
# Sources: Hub, tables of paths, folders per label
# ---------------------------------------------------------------------------------------------------------

def _load_hub(args: AudioDataArgs) -> dict:
    from datasets import get_dataset_split_names, load_dataset

    names = {"train": args.train_split_name, "validation": args.validation_split_name, "test": args.test_split_name}
    try:
        available = get_dataset_split_names(args.dataset_name, args.dataset_config_name)
        if names["train"] not in available:
            raise HfTransferError(
                f"dataset '{args.dataset_name}' has no '{names['train']}' split (it has: {', '.join(available)}); "
                "name it with --train_split_name"
            )
        # Split by split, so a corpus with hundreds of hours in other splits is not downloaded for nothing.
        return {split: load_dataset(args.dataset_name, args.dataset_config_name, split=name)
                for split, name in names.items() if name in available}
    except HfTransferError:
        raise
    except Exception as error:  # datasets and the Hub client raise many types
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HfTransferError(f"cannot load dataset '{args.dataset_name}': {message}") from error


def _scan_label_folders(root: str, split: str):
    from datasets import Dataset

    paths, labels = [], []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        for clip in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
            paths.append(str(clip))
            labels.append(folder.name)
    if not paths:
        raise HfTransferError(
            f"the {split} split is empty: {root} has no label subfolders with audio files ({', '.join(AUDIO_SUFFIXES)})"
        )
    return Dataset.from_dict({"audio": paths, "label": labels})


def load_audio_splits(args: AudioDataArgs, target: str | None, candidates: tuple[str, ...], option: str, what: str, folders_give: str | None):
    """The raw splits as a DatasetDict with two columns, `audio` (path or {bytes, path}) and `target`.

    `target`/`candidates`/`option`/`what` name the label or transcript column as in `io.pick_column`;
    `folders_give` is the column a folder-per-label source provides (None: folders are not a valid source).
    """
    from datasets import Audio  # its feature stays undecoded: no torchcodec needed

    args.require_source()
    if args.dataset_name:
        raw = _load_hub(args)
    else:
        raw = {}
        for split in SPLITS:
            file, folder = getattr(args, f"{split}_file"), getattr(args, f"{split}_dir")
            if folder:
                if folders_give is None:
                    raise HfTransferError(
                        f"--{split}_dir gives labels from folder names, not {what}s; use --{split}_file with a {what} column"
                    )
                raw[split] = _scan_label_folders(folder, split)
            elif file:
                raw[split] = read_file(file, split)

    check_not_empty(raw, what="clip")
    return media_splits(raw, args, media="audio", feature=Audio, media_columns=AUDIO_COLUMNS, target=target,
                        target_columns=candidates, target_option=option, target_what=what, folders_give=folders_give)


# ---------------------------------------------------------------------------------------------------------
# Held-out validation and subsets (label ids come from labels.encode_labels)
# ---------------------------------------------------------------------------------------------------------

def hold_out_and_subsample(data, args: AudioDataArgs, seed: int, labelled: bool = True):
    """A validation split from train when none is given (stratified by label when `labelled`), then the --max_* subsets."""
    if not labelled and args.max_train_samples_per_class is not None:
        raise HfTransferError(
            "--max_train_samples_per_class needs class labels, and transcribed speech has none; use --max_train_samples"
        )
    data = hold_out_validation(data, args.validation_split_percentage, seed, stratify=labelled, what="clip")
    return subsample(
        data, seed, args.max_train_samples, args.max_train_samples_per_class, args.max_eval_samples,
        eval_splits=("validation", "test"),
    )


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

    if bad:
        listing = "; ".join(f"{path}: {reason}" for path, reason in bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        if args.on_bad_audio == "error":
            raise HfTransferError(
                f"{len(bad)} unusable audio file(s) in the {split} split: {listing}; fix or remove them, or pass --on_bad_audio skip"
            )
        counts["bad_audio_skipped"] = len(bad)
        logger.warning("skipped %d unusable audio file(s) in the %s split (--on_bad_audio skip):", len(bad), split)
        for path, reason in bad[:_LISTED_PATHS]:
            logger.warning("  skipped %s: %s", path, reason)
        if len(bad) > _LISTED_PATHS:
            logger.warning("  ... and %d more", len(bad) - _LISTED_PATHS)
    for what, n in counts.items():
        if what != "bad_audio_skipped":
            logger.warning("%s split: %d clip(s) %s (--max_duration_seconds %s, receptive field %d samples)",
                           split, n, what.replace("_", " "), args.max_duration_seconds, min_samples)
    if not keep:
        reasons = Counter(reason for _, reason in bad)
        reasons.update({k.replace("_", " "): v for k, v in counts.items() if k != "bad_audio_skipped" and k != "too_long_cut"})
        example = f" (e.g. {bad[0][0]}: {bad[0][1]})" if bad else ""
        raise HfTransferError(
            f"the {split} split has no usable audio: all {index} clips were skipped "
            f"({', '.join(f'{n} {r}' for r, n in reasons.items())}){example}"
        )
    checked = dataset.select(keep) if len(keep) < len(dataset) else dataset
    return checked.add_column("length", lengths), counts


def check_splits(data, args: AudioDataArgs, sampling_rate: int, min_samples: int):
    """`check_audio` on every split; the training split is marked for augmentation. Returns (data, report)."""
    from datasets import DatasetDict

    checked, report = {}, {}
    for split, dataset in data.items():
        checked[split], counts = check_audio(dataset, split, args, sampling_rate, min_samples)
        report.update({f"{split}_{what}": n for what, n in counts.items()})
        report[f"{split}_clips"] = len(checked[split])
        report[f"{split}_hours"] = round(sum(checked[split]["length"]) / sampling_rate / 3600, 4)
    # The collator decodes every split; this flag is how it tells training rows (random crop, augmentation)
    # from evaluation rows, since the Trainer hands one collator all of them.
    checked["train"] = checked["train"].add_column("augment", [True] * len(checked["train"]))
    return DatasetDict(checked), report


@dataclass
class AudioClassificationData(LabelMaps):
    datasets: object  # DatasetDict: audio, labels, length (+ augment in train)
    label_names: list[str]
    report: dict  # clips, hours and skip counts per split


def load_audio_classification(
    args: AudioDataArgs, label_args: AudioLabelArgs, sampling_rate: int, min_samples: int, seed: int = 42
) -> AudioClassificationData:
    """Load, label and check an audio classification data set; cheap checks (columns, labels) come first."""
    raw = load_audio_splits(args, label_args.label_column, LABEL_COLUMNS, "label_column", "label", folders_give="label")
    data, names = encode_labels(raw, "target", label_args.class_names, what="clip")
    data = hold_out_and_subsample(data, args, seed, labelled=True)
    data, report = check_splits(data, args, sampling_rate, min_samples)
    return AudioClassificationData(data, names, report)


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
                 min_samples: int = 0, seed: int = 42, long_training_clips: int | None = None):
        self.feature_extractor = feature_extractor
        self.sampling_rate = feature_extractor.sampling_rate
        self.max_seconds = max_seconds
        self.augment = augment or AudioAugmentArgs()
        self.min_samples = min_samples
        # Training clips over max_seconds (a random window each epoch); None: unknown (the loader's report says)
        self.long_training_clips = long_training_clips
        self.random = WorkerRandom(seed)

    @property
    def inputs_vary_per_epoch(self) -> str | bool:
        """Why training inputs differ between epochs (speed or noise augmentation, random crops of long clips), or
        False: read by the cached frozen prefix, which must see the same input every epoch."""
        if self.augment.speed_factors or self.augment.noise_snr_db is not None:
            return "the audio collator augments training clips (--speed_factors, --noise_snr_db), so they change every epoch"
        if self.max_seconds is not None and self.long_training_clips != 0:
            many = "some" if self.long_training_clips is None else str(self.long_training_clips)
            return (f"{many} training clips are longer than --max_duration_seconds {self.max_seconds:g} and get a random "
                    "window each epoch (pass --long_audio skip or a larger --max_duration_seconds)")
        return False

    def waveform(self, row: dict) -> np.ndarray:
        if not row.get("augment"):
            return read_audio(row["audio"], self.sampling_rate, max_seconds=self.max_seconds)
        rng = self.random.generator()
        speed = float(rng.choice(self.augment.speed_factors)) if self.augment.speed_factors else 1.0
        waveform = read_audio(row["audio"], self.sampling_rate, max_seconds=self.max_seconds, rng=rng, speed=speed)
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
        from hf_transfer.data.audio import pad_labels

        waveforms = [self.audio.waveform(row) for row in rows]
        batch = self.feature_extractor(waveforms, sampling_rate=self.feature_extractor.sampling_rate, return_tensors="pt",
                                       padding="max_length", truncation=True)
        out = {"input_features": batch["input_features"]}
        if "labels" in rows[0]:
            out["labels"] = pad_labels([row["labels"] for row in rows])
        return out
