"""Predict with a trained text classifier: an output folder and new rows in, the rows with their predictions out.

    python recipes/predict.py --model outputs/sentiment --input new.csv --output predictions.csv
    printf 'great phone\nawful service\n' | python recipes/predict.py --model outputs/sentiment --top_k 2

The output keeps the input's columns and adds `predicted_label` and `score` (with --top_k > 1, `top_k`); a label
column in the input is scored. From Python: `from recipes.predict import main; main(["--model", ..., "--input", ...])`.
"""
from hf_transfer.cli import parse_args, run_cli
from hf_transfer.run.predict import PredictArgs, predict


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_args((PredictArgs,), argv)
    return predict(args)


if __name__ == "__main__":
    run_cli(main)
