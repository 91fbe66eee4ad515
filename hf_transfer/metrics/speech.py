"""Speech metrics: corpus WER and CER, greedy CTC decoding for them, and Whisper's normalised scoring.

WER and CER are computed here (a 10-line edit distance, tested against hand-worked cases) rather than
with jiwer, which is not installed and would be one more pinned dependency for two numbers. Both are
corpus-level: total edits over total reference words (characters, spaces included), not a mean of
per-utterance rates.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from hf_transfer.data.transcripts import DELIMITER, UNK

UNKNOWN_CHARACTER = "\ufffd"  # how an out-of-vocabulary character shows in decoded text: one character, one error


# ---------------------------------------------------------------------------------------------------------
# Decoding and error rates
# ---------------------------------------------------------------------------------------------------------

def id_to_token_table(tokenizer) -> dict[int, str]:
    return {i: t for t, i in tokenizer.get_vocab().items()}


def ids_to_text(ids: Sequence[int], id_to_token: dict[int, str], blank_id: int, unk_token: str = UNK, collapse: bool = True) -> str:
    """CTC greedy decoding of per-frame ids (collapse repeats, then drop blanks); collapse=False for label ids.

    -100 (the padding of labels and of predictions gathered across batches) counts as blank.
    """
    characters, previous = [], None
    for i in ids:
        i = blank_id if i < 0 else int(i)
        if collapse and i == previous:
            continue
        previous = i
        if i == blank_id:
            continue
        token = id_to_token.get(i, unk_token)
        characters.append(" " if token == DELIMITER else UNKNOWN_CHARACTER if token == unk_token else token)
    return " ".join("".join(characters).split())


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance (substitutions, deletions, insertions all cost 1), one row of the table at a time."""
    previous = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        current = [i]
        for j, h in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    edits = sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses))
    return edits / max(sum(len(r.split()) for r in references), 1)


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    edits = sum(edit_distance(r, h) for r, h in zip(references, hypotheses))
    return edits / max(sum(len(r) for r in references), 1)


def argmax_logits(logits, labels):
    """`preprocess_logits_for_metrics`: keep one id per frame, not a vocabulary-wide row, across the whole eval set."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    return logits.argmax(-1)


def ctc_metrics(tokenizer):
    """`compute_metrics` for the Trainer: greedy-decoded predictions against the label transcripts, WER and CER."""
    table, blank = id_to_token_table(tokenizer), tokenizer.pad_token_id

    def compute(eval_prediction) -> dict:
        predictions = eval_prediction.predictions
        predictions = predictions[0] if isinstance(predictions, tuple) else predictions
        if predictions.ndim == 3:  # logits, when no preprocess_logits_for_metrics was given
            predictions = predictions.argmax(-1)
        hypotheses = [ids_to_text(row, table, blank, tokenizer.unk_token) for row in np.asarray(predictions)]
        references = [ids_to_text(row, table, blank, tokenizer.unk_token, collapse=False) for row in np.asarray(eval_prediction.label_ids)]
        return {"wer": word_error_rate(references, hypotheses), "cer": character_error_rate(references, hypotheses)}

    return compute


# ---- Speech recognition with Whisper: a sequence-to-sequence task (generation, WER/CER), beside the CTC recipe ----

def normalise_for_wer(text: str) -> str:
    """Lower case, punctuation removed, spaces collapsed: Whisper writes "Zero." where a transcript says "zero"."""
    import re

    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


class WhisperRecognitionMetrics:
    """WER/CER of generated text (predict_with_generate) against the transcripts, both normalised (normalise_for_wer)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, eval_pred) -> dict:
        import numpy as np

        from hf_transfer.metrics.speech import character_error_rate, word_error_rate

        predictions, labels = eval_pred.predictions, eval_pred.label_ids
        predictions = np.where(predictions < 0, self.tokenizer.pad_token_id, predictions)
        labels = np.where(labels < 0, self.tokenizer.pad_token_id, labels)
        hyps = [normalise_for_wer(t) for t in self.tokenizer.batch_decode(predictions, skip_special_tokens=True)]
        refs = [normalise_for_wer(t) for t in self.tokenizer.batch_decode(labels, skip_special_tokens=True)]
        return {"wer": word_error_rate(refs, hyps), "cer": character_error_rate(refs, hyps)}
