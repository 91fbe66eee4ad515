"""Unlabelled text for masked-LM continued pretraining: load, clean, tokenise into blocks or lines, mask."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import chain

from hf_transfer.data.randomness import (
    AUGMENT,
    AUGMENT_STREAM,
    ROW,
    RowRandom,
    TrainingEpoch,
    flag_training_rows,
)
from hf_transfer.data.text import TEXT_COLUMNS, check_files, pick_column, read_splits
from hf_transfer.errors import HfTransferError

logger = logging.getLogger(__name__)


@dataclass
class MaskedLMDataArgs:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id of unlabelled text."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "Local text: txt (a text per line), csv, tsv, json, jsonl or parquet."})
    validation_file: str | None = field(default=None, metadata={"help": "Held-out text for perplexity (default: a share of train)."})
    text_column: str | None = field(default=None, metadata={"help": f"Text column (default: the first of {', '.join(TEXT_COLUMNS)})."})
    line_by_line: bool = field(
        default=False, metadata={"help": "One example per text (truncated to --block_size) instead of concatenated blocks."}
    )
    block_size: int = field(default=128, metadata={"help": "Tokens per training example."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked for prediction."})
    whole_word_masking: bool = field(default=False, metadata={"help": "Mask every piece of a word together (fast tokenizers)."})
    validation_split_percentage: int = field(default=5, metadata={"help": "Without a validation file, hold out this share of train texts."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training texts."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many held-out texts."})

    def __post_init__(self) -> None:
        if bool(self.dataset_name) == bool(self.train_file):
            raise HfTransferError("give exactly one of --dataset_name or --train_file for the unlabelled text")
        check_files({"train_file": self.train_file, "validation_file": self.validation_file})
        if not 0.0 < self.mlm_probability < 1.0:
            raise HfTransferError(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.block_size < 8:
            raise HfTransferError(f"--block_size must be at least 8, got {self.block_size}")


@dataclass
class MaskedLMData:
    datasets: object  # DatasetDict: train (masked on the fly), validation (masked once, fixed: comparable perplexity)
    dropped_empty: int
    train_tokens: int


def _split_held_out(raw, args: MaskedLMDataArgs, seed: int):
    if "validation" in raw:
        return raw["train"], raw["validation"]
    if len(raw["train"]) < 2:
        raise HfTransferError("need at least two texts to hold one out for perplexity; add texts or pass --validation_file")
    held_out = raw["train"].train_test_split(test_size=args.validation_split_percentage / 100, seed=seed)
    return held_out["train"], held_out["test"]


def load_masked_lm_data(args: MaskedLMDataArgs, tokenizer, seed: int = 42) -> MaskedLMData:
    """Tokenised train/validation splits. Train and held-out texts never share a text (split before tokenising)."""
    from datasets import DatasetDict

    if tokenizer.mask_token is None:
        raise HfTransferError("this tokenizer has no mask token, so it cannot do masked-LM training; use an encoder's tokenizer (BERT, RoBERTa, ...)")
    if args.whole_word_masking and not tokenizer.is_fast:
        raise HfTransferError("--whole_word_masking needs a fast tokenizer (offset mappings); drop it or use a fast tokenizer")
    raw = read_splits(args.dataset_name, args.dataset_config_name, {"train": args.train_file, "validation": args.validation_file})
    column = pick_column(raw["train"].column_names, args.text_column, TEXT_COLUMNS, "text_column", "text")

    dropped = 0
    cleaned = {}
    for split, dataset in raw.items():
        if column not in dataset.column_names:
            raise HfTransferError(f"the {split} split has no column {column}; its columns are: {', '.join(dataset.column_names)}")
        texts = dataset[column]
        keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        dropped += len(texts) - len(keep)
        if not keep:
            raise HfTransferError(f"the {split} split has no non-empty text")
        cleaned[split] = dataset.select(keep).select_columns([column])
    if dropped:
        logger.warning("dropped %d empty or whitespace-only texts", dropped)
    train, validation = _split_held_out(DatasetDict(cleaned), args, seed)
    if args.max_train_samples is not None:
        train = train.shuffle(seed=seed).select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples is not None:
        validation = validation.select(range(min(args.max_eval_samples, len(validation))))

    wwm = args.whole_word_masking

    def tokenize(batch):
        if args.line_by_line:
            return tokenizer(batch[column], truncation=True, max_length=args.block_size, return_special_tokens_mask=True,
                             return_offsets_mapping=wwm)
        return tokenizer(batch[column], return_special_tokens_mask=True, return_offsets_mapping=wwm)

    def group(batch):
        # Concatenate every text, then cut into full blocks (the remainder is dropped, as in transformers' MLM example).
        joined = {k: list(chain.from_iterable(batch[k])) for k in batch}
        total = (len(joined["input_ids"]) // args.block_size) * args.block_size
        return {k: [v[i : i + args.block_size] for i in range(0, total, args.block_size)] for k, v in joined.items()}

    splits = {}
    for split, dataset in (("train", train), ("validation", validation)):
        tokens = dataset.map(tokenize, batched=True, remove_columns=[column], desc=f"Tokenising {split}")
        if not args.line_by_line:
            tokens = tokens.map(group, batched=True, batch_size=1000, desc=f"Grouping {split} into blocks of {args.block_size}")
            if len(tokens) == 0:
                raise HfTransferError(
                    f"the {split} text is shorter than one block of {args.block_size} tokens; "
                    "add text, lower --block_size, or use --line_by_line"
                )
        splits[split] = tokens
    train_tokens = sum(len(ids) for ids in splits["train"]["input_ids"])
    splits["train"] = flag_training_rows(splits["train"])  # numbered: the rows key their batch's masks (MaskedLMCollator)
    splits["validation"] = _mask_once(splits["validation"], tokenizer, args, seed)
    return MaskedLMData(DatasetDict(splits), dropped, train_tokens)


def masking_collator(tokenizer, args: MaskedLMDataArgs, seed: int | None = None):
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=args.mlm_probability, whole_word_mask=args.whole_word_masking, seed=seed
    )


def _mask_once(dataset, tokenizer, args: MaskedLMDataArgs, seed: int):
    """Mask the held-out set once with a fixed seed, so perplexity before and after training scores the same masks."""
    collator = masking_collator(tokenizer, args, seed=seed)

    def mask(batch):
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["input_ids"]))]
        out = collator(rows)
        lengths = [len(ids) for ids in batch["input_ids"]]
        return {
            "input_ids": [out["input_ids"][i, :n].tolist() for i, n in enumerate(lengths)],
            "attention_mask": [[1] * n for n in lengths],
            "labels": [out["labels"][i, :n].tolist() for i, n in enumerate(lengths)],
        }

    return dataset.map(mask, batched=True, batch_size=256, remove_columns=dataset.column_names, desc="Masking held-out text")


class RowKeyedMasking:
    """Masks tokenised rows for masked-LM training with draws keyed by the rows' own generators (`RowRandom`: the run's
    seed, the epoch, the row's number, the stream), not by the process's global stream: a resumed run skips the batches
    it trained on without collating them, and then masks every later batch as the uninterrupted run did, with any
    number of DataLoader workers (hf_transfer/data/randomness.py). Keyed per batch rather than per row: the masker then
    pads and masks the batch in one call (row by row took several times as long).

    `rows`: dicts of `input_ids` (and what the tokenizer's padding takes); `numbers`: each row's number in its split
    (or the row with its `row_number`).
    Returns padded `input_ids` (masked: 80% [MASK], 10% a random token, 10% unchanged), `attention_mask` and `labels`
    (-100 where nothing is predicted)."""

    def __init__(self, tokenizer, mlm_probability: float, whole_word_mask: bool = False, seed: int = 42,
                 stream: int = AUGMENT_STREAM, epoch: TrainingEpoch | None = None):
        from transformers import DataCollatorForLanguageModeling

        self.masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability,
                                                      whole_word_mask=whole_word_mask)
        self.random = RowRandom(seed, stream, epoch)

    def __call__(self, rows: list[dict], numbers: list) -> dict:
        import numpy as np
        import torch

        key = np.random.default_rng([int(self.random.generator(number).integers(2**63)) for number in numbers])
        # The masker draws from its `generator` when it has one. Its own `seed` option would make one per DataLoader
        # worker (seed + worker id), so that masks depended on which worker collated the batch: set here, per batch.
        self.masker.generator = torch.Generator().manual_seed(int(key.integers(2**63)))
        return self.masker(rows)


class MaskedLMCollator:
    """Masks training batches on the fly (`RowKeyedMasking`, keyed by each row's `row_number`); pads already-masked
    evaluation batches as they are (labels padded with -100). `epoch`: the run's, which the task registers as a
    callback.
    """

    def __init__(self, tokenizer, args: MaskedLMDataArgs, pad_to_multiple_of: int | None = None, seed: int = 42,
                 epoch: TrainingEpoch | None = None):
        self.tokenizer = tokenizer
        self.masker = RowKeyedMasking(tokenizer, args.mlm_probability, args.whole_word_masking, seed, AUGMENT_STREAM, epoch)
        self.pad_to_multiple_of = pad_to_multiple_of

    def _masked(self, features: list[dict]) -> dict:
        return self.masker([{k: v for k, v in row.items() if k not in (AUGMENT, ROW)} for row in features], features)

    def __call__(self, features: list[dict]) -> dict:
        import torch

        if "labels" not in features[0]:
            return self._masked(features)
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad = self.tokenizer.pad_token_id

        def padded(key, value):
            return torch.tensor([f[key] + [value] * (width - len(f[key])) for f in features])

        return {"input_ids": padded("input_ids", pad), "attention_mask": padded("attention_mask", 0), "labels": padded("labels", -100)}
