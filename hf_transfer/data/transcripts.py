"""Transcripts for speech recognition: normalisation, the transcribed clips both recipes (CTC, Whisper) load, a
character vocabulary and its CTC tokenizer, and the checked CTC data."""
from __future__ import annotations

import json
import logging
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from hf_transfer.data.audio import AudioDataArgs, check_splits
from hf_transfer.data.media import hold_out_and_subsample, load_media_splits
from hf_transfer.errors import HfTransferError
from hf_transfer.models.speech import output_frames

logger = logging.getLogger(__name__)
TEXT_COLUMNS = ("text", "sentence", "transcript", "transcription", "normalized_text")
PAD, UNK, DELIMITER = "<pad>", "<unk>", "|"  # <pad> doubles as the CTC blank (Wav2Vec2ForCTC uses pad_token_id)


@dataclass
class TranscriptArgs:
    text_column: str | None = field(default=None, metadata={"help": f"Transcript column (default: the first of {', '.join(TEXT_COLUMNS)})."})
    text_case: str = field(
        default="lower",
        metadata={"help": "Case normalisation of transcripts: 'lower', 'upper' (e.g. to match wav2vec2-base-960h's "
                  "vocabulary) or 'keep'.", "choices": ("lower", "upper", "keep")},
    )
    strip_punctuation: bool = field(
        default=True, metadata={"help": "Delete Unicode punctuation from transcripts (except --keep_punctuation)."}
    )
    keep_punctuation: str = field(
        default="'", metadata={"help": "Punctuation kept when stripping: the apostrophe by default (don't, it's)."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Use this CTC tokenizer's vocabulary (e.g. a fine-tuned CTC checkpoint's own, which keeps "
                  "its lm_head valid) instead of building one from the training transcripts."},
    )


def normalize_transcript(text: str, args: TranscriptArgs) -> str:
    # NFC first: a composed 'é' is one character and so one vocabulary entry, however the file spelled it.
    text = unicodedata.normalize("NFC", text)
    if args.text_case == "lower":
        text = text.lower()
    elif args.text_case == "upper":
        text = text.upper()
    if args.strip_punctuation:
        text = "".join(c for c in text if c in args.keep_punctuation or not unicodedata.category(c).startswith("P"))
    return " ".join(text.split())


def build_vocabulary(transcripts: Sequence[str]) -> dict[str, int]:
    """Blank/pad, unknown, the word delimiter (for spaces), then every character of the transcripts, sorted."""
    characters = sorted({c for text in transcripts for c in text} - {" "})
    vocabulary = {PAD: 0, UNK: 1, DELIMITER: 2}
    for c in characters:
        vocabulary.setdefault(c, len(vocabulary))
    return vocabulary


def make_tokenizer(vocabulary: dict[str, int]):
    """A Wav2Vec2CTCTokenizer over `vocabulary`, written nowhere the user can see (the run saves it with the model)."""
    from transformers import Wav2Vec2CTCTokenizer

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vocab.json"
        path.write_text(json.dumps(vocabulary, ensure_ascii=False))
        # bos/eos off: by default they are added beyond the vocabulary and len(tokenizer) no longer equals
        # the number of CTC outputs.
        return Wav2Vec2CTCTokenizer(str(path), unk_token=UNK, pad_token=PAD, word_delimiter_token=DELIMITER,
                                    bos_token=None, eos_token=None)


def load_ctc_tokenizer(name_or_path: str, load_kwargs: dict):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **load_kwargs)
    except (OSError, ValueError) as error:
        raise HfTransferError(f"cannot load the tokenizer '{name_or_path}': {str(error).strip().splitlines()[0]}") from error
    if getattr(tokenizer, "word_delimiter_token", None) is None:
        raise HfTransferError(f"'{name_or_path}' has a {type(tokenizer).__name__}, not a CTC character tokenizer (Wav2Vec2CTCTokenizer)")
    return tokenizer


def out_of_vocabulary(texts: Sequence[str], tokenizer) -> Counter:
    """Occurrences of each character the tokenizer maps to <unk> (asked of the tokenizer itself, so its casing rules apply)."""
    counts = Counter(c for text in texts for c in text if c != " ")
    unk = tokenizer.unk_token_id
    return Counter({c: n for c, n in counts.items() if tokenizer(c)["input_ids"] in ([unk], [])})


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------

def ctc_frames_needed(ids: Sequence[int]) -> int:
    """CTC needs a frame per label, plus a blank between two equal labels in a row."""
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))


def _describe_characters(counts: Counter) -> str:
    return ", ".join(f"{c!r} ({n})" for c, n in counts.most_common(20)) + (", ..." if len(counts) > 20 else "")


def _case_hint(counts: Counter, tokenizer) -> str:
    vocabulary = tokenizer.get_vocab()
    for case in ("upper", "lower"):
        if all(getattr(c, case)() in vocabulary for c in counts):
            return f"; the vocabulary has them in {case} case: pass --text_case {case}"
    return ""


def load_transcribed_splits(args: AudioDataArgs, text_args: TranscriptArgs, seed: int = 42):
    """The clips and their normalised transcripts (columns `audio`, `text`), with the held-out validation split and
    the --max_* subsets: what both speech recognition recipes (CTC, Whisper) tokenise and train on.

    Every clip needs a transcript that normalisation leaves non-empty: a clip paired with no text teaches the model
    that speech transcribes to nothing, so a missing, blank or (once punctuation is stripped) empty transcript is an
    error naming the split and how many clips have one.
    """
    from datasets import DatasetDict

    if args.max_train_samples_per_class is not None:
        raise HfTransferError(
            "--max_train_samples_per_class needs class labels, and transcribed speech has none; use --max_train_samples"
        )
    raw = load_media_splits(args, text_args.text_column, TEXT_COLUMNS, "text_column", "transcript", folders_give=None)
    normalised = {}
    for split, dataset in raw.items():
        written = list(dataset["target"])  # datasets 5 returns a lazy Column; read it once
        texts = [normalize_transcript(t, text_args) if isinstance(t, str) else "" for t in written]
        _check_transcripts(split, written, texts)
        normalised[split] = dataset.remove_columns("target").add_column("text", texts)
    return hold_out_and_subsample(DatasetDict(normalised), args, seed, stratify=False)


def _check_transcripts(split: str, written: list, normalised: list[str]) -> None:
    empty = [text for text, kept in zip(written, normalised) if not kept]
    if not empty:
        return
    # Normalisation empties a written transcript only by stripping punctuation: all it had was punctuation.
    stripped = [text for text in empty if isinstance(text, str) and text.strip()]
    how = f" ({len(stripped)} of them only punctuation, e.g. {stripped[0]!r}, which --strip_punctuation deletes)" if stripped else ""
    raise HfTransferError(f"{len(empty)} clips of the {split} split have no transcript{how}; fill or remove them"
                          + (", or pass --strip_punctuation false" if stripped else ""))


@dataclass
class SpeechRecognitionData:
    datasets: object  # DatasetDict: audio, text, labels (token ids), length (+ augment in train)
    tokenizer: object
    report: dict  # clips, hours, skip and out-of-vocabulary counts per split


def load_speech_recognition(
    args: AudioDataArgs, text_args: TranscriptArgs, config, sampling_rate: int, min_samples: int,
    seed: int = 42, load_kwargs: dict | None = None,
) -> SpeechRecognitionData:
    """Load, normalise, tokenise and check a speech recognition data set.

    The vocabulary comes from the training transcripts (after the validation hold-out, so it never peeks),
    or from --tokenizer_name_or_path; then training transcripts outside it are an error, and characters
    outside it in evaluation transcripts are a warning (they can only count as errors).
    """
    if args.long_audio == "cut":
        raise HfTransferError("--long_audio cut would cut transcribed speech away from its transcript; use --long_audio skip")
    data = load_transcribed_splits(args, text_args, seed)

    if text_args.tokenizer_name_or_path:
        tokenizer = load_ctc_tokenizer(text_args.tokenizer_name_or_path, load_kwargs or {})
    else:
        tokenizer = make_tokenizer(build_vocabulary(list(data["train"]["text"])))
    report = {}
    for split, dataset in data.items():
        texts = list(dataset["text"])
        unknown = out_of_vocabulary(texts, tokenizer)
        if unknown and split == "train":
            raise HfTransferError(
                f"the train split's transcripts have {sum(unknown.values())} characters outside the vocabulary of "
                f"{text_args.tokenizer_name_or_path}: {_describe_characters(unknown)}{_case_hint(unknown, tokenizer)}; "
                "change the normalisation options, or drop --tokenizer_name_or_path to build the vocabulary from the data"
            )
        if unknown:
            logger.warning(
                "the %s split's transcripts have %d characters outside the vocabulary (they count as errors): %s",
                split, sum(unknown.values()), _describe_characters(unknown),
            )
            report[f"{split}_oov_characters"] = sum(unknown.values())
            report[f"{split}_oov_character_set"] = "".join(sorted(unknown))
        data[split] = dataset.add_column("labels", tokenizer(texts)["input_ids"])

    data, audio_report = check_splits(data, args, sampling_rate, min_samples)
    report.update(audio_report)
    # A clip with fewer frames than its transcript needs has no CTC alignment: its loss is infinite.
    train = data["train"]
    fits = [i for i, (n, ids) in enumerate(zip(train["length"], train["labels"])) if output_frames(n, config) >= ctc_frames_needed(ids)]
    if len(fits) < len(train):
        report["train_too_short_for_transcript_skipped"] = len(train) - len(fits)
        logger.warning("train split: skipped %d clip(s) too short for their transcript", len(train) - len(fits))
        if not fits:
            raise HfTransferError("the train split has no usable audio: every clip is too short for its transcript")
        data["train"] = train.select(fits)
        report["train_clips"] = len(fits)
        report["train_hours"] = round(sum(data["train"]["length"]) / sampling_rate / 3600, 4)
    return SpeechRecognitionData(data, tokenizer, report)
