"""Regression targets in the text recipes: a tiny BERT trained on a table of numbers reports the scores of its own
predictions (recomputed here in numpy from the saved model), the frozen baseline is the ridge regression one fits by
hand, --task_type auto tells numbers from classes, compare ranks by MAE (lower is better), and bad input is one line."""
from __future__ import annotations

import csv
import json
import random
import re

import numpy as np
import pytest
import torch
from adaptation_helpers import TARGET_NOUNS, domain_rows
from conftest import NEGATIVE, NOUNS, POSITIVE, cli_error, make_tokenizer, recipe_argv, write_csv

from recipes import compare, domain_adaptation, sentiment


def scored_rows(n: int, seed: int, integral: bool = False) -> list[tuple[str, float | int]]:
    """Sentences whose score grows with their positive adjectives: 1.25, 3.75 or 6.25 (integral: ratings 1, 5, 9)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        adjectives = [rng.choice(POSITIVE + NEGATIVE) for _ in range(2)]
        positive = sum(a in POSITIVE for a in adjectives)
        rows.append((f"the {rng.choice(NOUNS)} was {adjectives[0]} and {adjectives[1]}",
                     1 + 4 * positive if integral else 1.25 + 2.5 * positive))
    return rows


@pytest.fixture(scope="module")
def score_files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("scores")
    header = ("text", "score")
    return {
        "train": write_csv(folder / "train.csv", scored_rows(48, 1), header),
        "validation": write_csv(folder / "validation.csv", scored_rows(16, 2), header),
        "ratings_train": write_csv(folder / "ratings_train.csv", scored_rows(48, 1, integral=True), header),
        "ratings_validation": write_csv(folder / "ratings_validation.csv", scored_rows(16, 2, integral=True), header),
    }


def read_rows(path) -> tuple[list[str], np.ndarray]:
    rows = list(csv.DictReader(open(path)))
    return [r["text"] for r in rows], np.array([float(r["score"]) for r in rows])


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank (what Spearman's correlation correlates)."""
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        ranks[values == value] = ranks[values == value].mean()
    return ranks


def numpy_scores(targets: np.ndarray, predictions: np.ndarray) -> dict:
    errors = predictions - targets
    return {
        "mse": np.mean(errors**2), "rmse": np.sqrt(np.mean(errors**2)), "mae": np.mean(np.abs(errors)),
        "r2": 1 - np.sum(errors**2) / np.sum((targets - targets.mean()) ** 2),
        "pearson": np.corrcoef(targets, predictions)[0, 1],
        "spearman": np.corrcoef(average_ranks(targets), average_ranks(predictions))[0, 1],
    }


@pytest.fixture(scope="module")
def regression_run(tiny_text_model_dir, score_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("regression") / "out"
    files = {"train": score_files["train"], "validation": score_files["validation"]}
    metrics = sentiment.main(recipe_argv(tiny_text_model_dir, files, out, "--label_column", "score", "--frozen_baseline",
                                         "true", "--learning_rate", "3e-3", "--num_train_epochs", "8", "--disable_tqdm", "true"))
    return out, metrics


def test_the_run_reports_the_scores_of_its_own_predictions(regression_run, score_files):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, metrics = regression_run
    assert metrics["task_type"] == "regression" and metrics["target_column"] == "score"  # found as fractional numbers
    assert metrics["train_target_mean"] == pytest.approx(read_rows(score_files["train"])[1].mean())
    assert "validation_accuracy" not in metrics and "label_names" not in metrics
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "score"}  # one output, no LABEL_0

    # The saved model, run here one text at a time (no padding), against the validation file as written.
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts, targets = read_rows(score_files["validation"])
    with torch.no_grad():
        predictions = np.array([model(**tokenizer([t], return_tensors="pt")).logits.item() for t in texts])
    assert np.ptp(predictions) > 0.1  # predictions that differ by rounding alone would make the correlations noise
    for name, expected in numpy_scores(targets, predictions).items():
        assert metrics[f"validation_{name}"] == pytest.approx(expected, rel=1e-4, abs=1e-5), name
    assert metrics["validation_loss"] == pytest.approx(metrics["validation_mse"], rel=1e-5)  # the head's loss is MSE


def test_the_frozen_baseline_is_ridge_fitted_by_hand(regression_run, score_files, tiny_text_model_dir):
    from sklearn.linear_model import Ridge
    from transformers import AutoModel, AutoTokenizer

    from hf_transfer.evidence.features import RIDGE_ALPHAS

    _, metrics = regression_run
    backbone = AutoModel.from_pretrained(tiny_text_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_text_model_dir)

    def features(texts):  # each text alone: its mean over every token is the attention-masked mean
        with torch.no_grad():
            hidden = [backbone(**tokenizer([t], return_tensors="pt")).last_hidden_state[0] for t in texts]
        return np.stack([h.mean(0).numpy() for h in hidden])

    (train_texts, y_train), (val_texts, y_val) = read_rows(score_files["train"]), read_rows(score_files["validation"])
    x_train, x_val = features(train_texts), features(val_texts)
    mean, std = x_train.mean(0), x_train.std(0)
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    # Leave-one-out error of each alpha, each fold refitted: the alpha a cross-validated ridge should choose.
    loo = [np.mean([(Ridge(alpha=a).fit(np.delete(x_train, i, 0), np.delete(y_train, i)).predict(x_train[i:i + 1])[0]
                     - y_train[i]) ** 2 for i in range(len(y_train))]) for a in RIDGE_ALPHAS]
    alpha = RIDGE_ALPHAS[int(np.argmin(loo))]
    assert metrics["baseline_ridge_alpha"] == alpha
    predictions = Ridge(alpha=alpha).fit(x_train, y_train).predict(x_val)
    for name, expected in numpy_scores(y_val, predictions).items():
        assert metrics[f"baseline_{name}"] == pytest.approx(expected, rel=1e-4, abs=1e-5), name


def test_the_card_shows_regression_scores_and_its_code_reads_the_value(regression_run, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, metrics = regression_run
    text = (out / "README.md").read_text()
    assert "- **Target:** `score`, one number per text" in text and "**Labels" not in text
    assert "| metric | split | this model | frozen backbone + ridge regression |" in text
    cell = lambda value: f"{value:.4f}" if abs(value) <= 1 else f"{value:,.2f}"  # noqa: E731 - the card's number format
    assert f"| **mae** | validation | {cell(metrics['validation_mae'])} | {cell(metrics['baseline_mae'])} |" in text
    assert "| spearman | validation |" in text and "MSE and RMSE and MAE: lower is better." in text
    code = re.search(r"## How to use.*?```python\n(.*?)```", text, re.S).group(1)
    assert 'function_to_apply="none"' in code
    reference = re.search(r'model="([^"]+)"', code).group(1)
    capsys.readouterr()
    exec(compile(code.replace(f'"{reference}"', repr(str(out))), "card", "exec"), {})
    printed = capsys.readouterr().out
    label, value = re.search(r"'label': '(\w+)', 'score': ([-\d.e]+)", printed).groups()
    sentence = re.search(r'\("(.+?)"\)\)', code).group(1)
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        expected = model(**tokenizer([sentence], return_tensors="pt")).logits.item()
    assert label == "score" and float(value) == pytest.approx(expected, rel=1e-4, abs=1e-6)  # the value, no sigmoid


def test_a_new_regression_head_starts_at_the_target_mean_and_a_trained_one_keeps_its_bias(tiny_text_model_dir):
    from transformers import BertConfig, BertForSequenceClassification

    from hf_transfer.tasks.text_classification import start_output_at

    config = BertConfig.from_pretrained(tiny_text_model_dir, num_labels=1, problem_type="regression")
    model = BertForSequenceClassification.from_pretrained(tiny_text_model_dir, config=config)
    assert start_output_at(model, {"classifier.weight", "classifier.bias"}, 5.61)
    assert model.classifier.bias.tolist() == pytest.approx([5.61])
    before = model.classifier.bias.clone()
    assert not start_output_at(model, {"bert.pooler.dense.bias"}, -1.0)  # the checkpoint's own head: left as it is
    assert torch.equal(model.classifier.bias, before)
    two_classes = BertForSequenceClassification.from_pretrained(tiny_text_model_dir, num_labels=2)
    assert not start_output_at(two_classes, {"classifier.bias"}, 1.0)  # no single-output layer


def test_auto_tells_numbers_from_classes_and_task_type_overrides(score_files, tmp_path):
    from hf_transfer.data.text import TextDataArgs, load_text_classification

    tokenizer = make_tokenizer(tmp_path / "tok")

    def load(train, validation, *, task_type="auto"):
        args = TextDataArgs(train_file=str(score_files[train]), validation_file=str(score_files[validation]),
                            label_column="score", task_type=task_type)
        return load_text_classification(args, tokenizer)

    fractional = load("train", "validation")
    assert fractional.task_type == "regression" and fractional.label_names == []
    assert fractional.datasets["train"].features["labels"].dtype == "float32"
    assert np.allclose(fractional.datasets["validation"]["labels"], read_rows(score_files["validation"])[1])

    ratings = load("ratings_train", "ratings_validation")  # integer ratings stay classes unless told otherwise
    assert ratings.task_type == "classification" and ratings.label_names == ["1", "5", "9"]

    as_numbers = load("ratings_train", "ratings_validation", task_type="regression")
    assert as_numbers.task_type == "regression"
    assert np.array_equal(as_numbers.datasets["train"]["labels"], read_rows(score_files["ratings_train"])[1])

    as_classes = load("train", "validation", task_type="classification")
    assert as_classes.task_type == "classification" and as_classes.label_names == ["1.25", "3.75", "6.25"]


def test_best_model_metric_direction():
    from transformers import TrainingArguments

    from hf_transfer import HfTransferError
    from hf_transfer.tasks.text_classification import check_best_model_metric

    chosen = TrainingArguments(output_dir="unused", metric_for_best_model="eval_mae", use_cpu=True)
    assert chosen.greater_is_better  # the Trainer's guess for any name but *loss
    check_best_model_metric(chosen, "regression")
    assert chosen.greater_is_better is False
    spearman = TrainingArguments(output_dir="unused", metric_for_best_model="spearman", use_cpu=True)
    check_best_model_metric(spearman, "regression")
    assert spearman.greater_is_better
    with pytest.raises(HfTransferError, match="a regression run reports loss, mse"):
        check_best_model_metric(TrainingArguments(output_dir="unused", metric_for_best_model="accuracy", use_cpu=True),
                                "regression")


def test_compare_ranks_a_regression_by_mae_lower_is_better(tiny_text_model_dir, score_files, tmp_path):
    from hf_transfer.evidence.compare import lower_is_better, scale

    assert all(lower_is_better(f"validation_{m}") for m in ("mse", "rmse", "mae"))
    assert not any(lower_is_better(f"validation_{m}") for m in ("r2", "pearson", "spearman"))
    assert scale("validation_mae") == 1 and scale("validation_spearman") == 1  # not fractions: never shown in percent

    data = (f"--model_name_or_path {tiny_text_model_dir} --train_file {score_files['train']} --validation_file "
            f"{score_files['validation']} --label_column score --num_train_epochs 1 --per_device_train_batch_size 8 "
            "--learning_rate 1e-3 --save_strategy no --eval_strategy no --dataloader_pin_memory false --disable_tqdm true")
    result = compare.main(["--strategies", "full", "--seeds", "1", "--in_process", "true", "--recipe_args", data,
                           "--output_dir", str(tmp_path / "compare"), "--feature_cache_dir", str(tmp_path / "cache")])
    assert result["metric"] == "validation_mae"
    maes = {run["arm"]: run["validation_mae"] for run in result["runs"]}
    assert set(maes) == {"scratch", "frozen+ridge", "full"}
    report = (tmp_path / "compare" / "report.md").read_text()
    assert "Lower validation_mae is better." in report
    best = min(maes, key=maes.get)
    difference = maes[best] - maes["scratch"]
    assert f"Best: **{best}** at {maes[best]:.2f}, {difference:+.2f} against training from scratch" in report


def test_bad_regression_input_is_one_line(tiny_text_model_dir, score_files, tmp_path, monkeypatch, capsys):
    spelled = write_csv(tmp_path / "spelled.csv", [(t, str(s)) for t, s in scored_rows(4, 3)]
                        + [("the movie was dull", "seven")], header=("text", "score"))
    files = {"train": score_files["train"], "validation": score_files["validation"]}
    regression = ["--task_type", "regression"]
    score = ["--label_column", "score"]
    cases = [
        ({**files, "train": spelled}, regression,
         "row 5 of the train split has the target 'seven' in 'score', not a number"),
        (files, [*regression, "--max_train_samples_per_class", "4"],
         "--max_train_samples_per_class samples each class, and a regression target (--task_type regression) has none"),
        (files, ["--max_train_samples_per_class", "4"],  # auto: found to be a regression only once the labels are read
         "a regression target (the 'score' column holds fractional numbers) has none: use --max_train_samples"),
        (files, [*regression, "--class_names", "low", "high"], "--class_names declares classes"),
        (files, ["--metric_for_best_model", "accuracy", "--load_best_model_at_end", "true", "--eval_strategy", "epoch",
                 "--save_strategy", "epoch"], "--metric_for_best_model accuracy: a regression run reports loss, mse"),
    ]
    for i, (case_files, flags, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        argv = recipe_argv(tiny_text_model_dir, case_files, out, *score, *flags)
        line = cli_error(sentiment.main, argv, monkeypatch, capsys)
        assert message in line, line
        assert not out.exists(), f"{out} was written for a bad input"

    target = write_csv(tmp_path / "target.csv", [(t,) for t, _ in domain_rows(8, TARGET_NOUNS, 3)], header=("text",))
    adaptation = ["--model_name_or_path", str(tiny_text_model_dir), "--train_file", str(score_files["train"]),
                  "--target_file", str(target), "--output_dir", str(tmp_path / "adapted"), *score]
    for flags, message in (([], "the 'score' column holds fractional numbers, a regression target, and domain adaptation"),
                           (regression, "domain adaptation trains classifiers")):
        line = cli_error(domain_adaptation.main, adaptation + flags, monkeypatch, capsys)
        assert message in line, line
        assert not (tmp_path / "adapted").exists()
