"""Predict with any recipe's output folder: new inputs in, the inputs with their predictions out.

    python recipes/predict.py --model outputs/sentiment --input new.csv --output predictions.csv
    printf 'great phone\nawful service\n' | python recipes/predict.py --model outputs/sentiment --top_k 2
    python recipes/predict.py --model outputs/image_classification --input photos/     # a folder, searched recursively
    python recipes/predict.py --model outputs/speech_recognition --input clips.csv      # a table of paths

The folder is a text, image or audio classifier, a text-to-text model or a speech recogniser (CTC or Whisper): full,
merged or a LoRA adapter. Inputs: a table (csv, tsv, json, jsonl, parquet), a folder of images or clips (class
subfolders are their labels), or lines of text on stdin. The output keeps the input's columns and adds
`predicted_label` and `score` (with --top_k > 1, `top_k`; a regression model: `predicted_value`), `generated_text`
or `transcript`; labels, references or transcripts in the input are scored (accuracy, MAE, BLEU/chrF/ROUGE, WER/CER).
Rows that cannot be used are kept, marked in a `skipped` column with the reason, and counted. See docs/predict.md.
From Python: `from recipes.predict import main; main(["--model", ..., "--input", ...])`.
"""
from hf_transfer.cli import parse_args, run_cli
from hf_transfer.run.predict import PredictArgs, predict


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_args((PredictArgs,), argv)
    return predict(args)


if __name__ == "__main__":
    run_cli(main)
