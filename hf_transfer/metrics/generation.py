"""Generation metrics: corpus BLEU and chrF (sacrebleu), ROUGE-1/2/L (rouge-score) of decoded text; the predictions kept.

Both libraries run offline; `evaluate.load("sacrebleu")` fetches a script from the Hub and fails
without Hub access. Scores are on a 0-100 scale, as sacrebleu reports them.

References are the targets as the model's tokenizer gives them back (tokenised, truncated at
--max_target_length, decoded): what the model can produce. For a lower-casing tokenizer (an uncased BERT)
that is lower-cased text, so its BLEU is not comparable to a cased sacreBLEU score on the raw references;
the raw references are in the predictions files beside the metrics for scoring them so.
ROUGE uses rouge-score's own tokenizer (lower-cased, ASCII letters and digits only, Porter stemming): the
standard for English summarisation; for other languages BLEU and chrF are the metrics to read.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
GENERATION_METRICS = ("bleu", "chrf", *ROUGE_TYPES, "gen_len")


def generation_scores(predictions: list[str], references: list[str]) -> dict:
    """Corpus BLEU and chrF, and mean ROUGE-1/2/L F1 (all 0-100) of `predictions` against one reference each."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return {}
    scores = {
        "bleu": float(sacrebleu.corpus_bleu(predictions, [references]).score),
        "chrf": float(sacrebleu.corpus_chrf(predictions, [references]).score),
    }
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        for kind, score in scorer.score(reference, prediction).items():
            totals[kind] += score.fmeasure
    scores.update({kind: 100.0 * total / len(references) for kind, total in totals.items()})
    return scores


class GenerationMetrics:
    """`compute_metrics` for a `Seq2SeqTrainer` with `predict_with_generate`: token ids in, scores out.

    Ids of -100 (ignored label positions, and the padding the Trainer adds when it joins batches of generated
    tokens) become the pad token before decoding. The texts of the last call stay in `last`, for the
    predictions files.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.pad = tokenizer.pad_token_id
        self.special = np.asarray(sorted(set(tokenizer.all_special_ids)))
        self.last: tuple[list[str], list[str]] | None = None

    def decode(self, ids) -> list[str]:
        ids = np.where(np.asarray(ids) < 0, self.pad, ids)
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def __call__(self, eval_prediction) -> dict:
        generated = eval_prediction.predictions
        generated = generated[0] if isinstance(generated, tuple) else generated
        predictions, references = self.decode(generated), self.decode(eval_prediction.label_ids)
        self.last = (predictions, references)
        scores = generation_scores(predictions, references)
        # Mean generated length in tokens, special tokens (start, end, padding) left out.
        generated = np.asarray(generated)
        scores["gen_len"] = float(((generated >= 0) & ~np.isin(generated, self.special)).sum(-1).mean())
        return scores


class KeepPredictions(TrainerCallback):
    """Keeps each evaluation's decoded predictions by its metric prefix ("validation", "test", "eval"), for the files.

    `GenerationMetrics` runs inside the evaluation and `on_evaluate` follows it with the prefixed metrics, so
    the split is known here without evaluating anything twice.
    """

    def __init__(self, metrics: GenerationMetrics, texts: dict) -> None:
        self.metrics, self.texts = metrics, texts
        self.predictions: dict[str, list[str]] = {}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        prefix = next((k[: -len("_bleu")] for k in (metrics or {}) if k.endswith("_bleu")), None)
        if prefix is not None and self.metrics.last is not None:
            self.predictions[prefix] = self.metrics.last[0]
        self.metrics.last = None

    def write(self, output_dir: str | Path, splits: tuple[str, ...] = ("validation", "test")) -> list[str]:
        """`<split>_predictions.jsonl` (source, reference, prediction) per split, and `generated_predictions.txt`
        (one prediction a line) of the last split: test when there is one, else validation. Returns the names written."""
        out, written = Path(output_dir), []
        for split in splits:
            predictions, texts = self.predictions.get(split), self.texts.get(split)
            if predictions is None or texts is None:
                continue
            if len(predictions) != len(texts["source"]):
                logger.warning("%d predictions for %d %s pairs: %s_predictions.jsonl not written",
                               len(predictions), len(texts["source"]), split, split)
                continue
            with open(out / f"{split}_predictions.jsonl", "w", encoding="utf-8") as f:
                for source, reference, prediction in zip(texts["source"], texts["target"], predictions):
                    row = {"source": source, "reference": reference, "prediction": prediction}
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            # One line per example: a prediction holding a newline would shift every line after it.
            lines = "".join(p.replace("\r", " ").replace("\n", " ") + "\n" for p in predictions)
            (out / "generated_predictions.txt").write_text(lines, encoding="utf-8")
            written.append(f"{split}_predictions.jsonl")
        if written:
            written.append("generated_predictions.txt")
        return written



