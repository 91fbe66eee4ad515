"""recipes/predict.py on the sentiment recipe's output folders: a full model and a LoRA adapter folder, tables and
stdin, unlabelled and labelled rows, rows without text, and bad input as one line."""
from __future__ import annotations

import csv
import io
import json

import pytest
import torch
from conftest import cli_error, recipe_argv, review_rows, write_csv

from recipes import predict, sentiment


@pytest.fixture(scope="module")
def trained(tiny_text_model_dir, review_files, tmp_path_factory):
    folders = {}
    for name, flags in {"full": [], "lora": ["--strategy", "lora", "--lora_r", "2"]}.items():
        out = tmp_path_factory.mktemp(name) / "out"
        sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, "--learning_rate", "1e-2", *flags))
        folders[name] = out
    return folders


def reference_probabilities(folder, texts: list[str]) -> torch.Tensor:
    """The saved model's class probabilities, computed apart: transformers' own loading, fp32, one text at a time."""
    from peft import AutoPeftModelForSequenceClassification
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    config = AutoConfig.from_pretrained(folder)
    if (folder / "adapter_config.json").is_file():
        model = AutoPeftModelForSequenceClassification.from_pretrained(folder, id2label=config.id2label, label2id=config.label2id)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return torch.cat([model.eval()(**tokenizer([t], return_tensors="pt")).logits.softmax(-1) for t in texts])


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_predictions_keep_the_input_and_equal_the_models_own(trained, tmp_path, kind, monkeypatch):
    from hf_transfer.run import launch

    monkeypatch.setattr(launch, "_cpu_flags", lambda: set())  # fp32, to compare with the fp32 reference exactly
    rows = review_rows(12, seed=5)
    table = write_csv(tmp_path / "new.csv", [(text, "x" + str(i)) for i, (text, _) in enumerate(rows)], header=("text", "id"))
    result = predict.main(["--model", str(trained[kind]), "--input", str(table), "--top_k", "2", "--batch_size", "5"])
    written = list(csv.DictReader(open(tmp_path / "new_predictions.csv")))
    assert [r["id"] for r in written] == [f"x{i}" for i in range(12)] and [r["text"] for r in written] == [t for t, _ in rows]
    expected = reference_probabilities(trained[kind], [t for t, _ in rows])
    names = json.loads((trained[kind] / "config.json").read_text())["id2label"]
    for row, probabilities in zip(written, expected):
        best = int(probabilities.argmax())
        assert row["predicted_label"] == names[str(best)]
        assert float(row["score"]) == pytest.approx(float(probabilities[best]), abs=1e-5)
        top = json.loads(row["top_k"])
        assert [t["label"] for t in top] == [names[str(i)] for i in probabilities.argsort(descending=True).tolist()]
    assert result == {"rows": 12, "predicted": 12, "skipped": 0}


def test_labelled_rows_are_scored_and_rows_without_text_are_kept_and_marked(trained, tmp_path, capsys):
    rows = review_rows(10, seed=6)
    lines = [{"text": t, "label": y} for t, y in rows] + [{"text": "", "label": "positive"}, {"label": "negative"}]
    table = tmp_path / "labelled.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "out" / "predictions.jsonl"
    result = predict.main(["--model", str(trained["full"]), "--input", str(table), "--output", str(out)])
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 12 and [w.get("skipped") for w in written[-2:]] == ["no text in 'text'"] * 2
    assert all(w["predicted_label"] is None for w in written[-2:]) and all(w["skipped"] == "" for w in written[:10])
    right = sum(w["predicted_label"] == w["label"] for w in written[:10])
    assert result["skipped"] == 2 and result["labelled"] == 10 and result["accuracy"] == pytest.approx(right / 10)
    assert f"accuracy on the 10 labelled rows: {right / 10:.4f}" in capsys.readouterr().out


def test_lines_on_stdin_give_jsonl_on_stdout(trained, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("the phone was great\n\nthe service was awful\n"))
    predict.main(["--model", str(trained["full"])])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["text"] for o in out] == ["the phone was great", "the service was awful"]
    assert all(o["predicted_label"] in ("negative", "positive") and 0.5 <= o["score"] <= 1 for o in out)


def test_bad_input_is_one_line(trained, tiny_text_model_dir, tmp_path, monkeypatch, capsys):
    table = write_csv(tmp_path / "t.csv", review_rows(4), header=("review_body", "verdict"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cases = [
        (["--model", str(tmp_path), "--input", str(table)], "is not a model folder (no config.json)"),
        (["--model", str(tiny_text_model_dir), "--input", str(table)], "holds a BertModel model; predict takes text classifiers"),
        (["--model", str(trained["full"]), "--input", str(table)], "no text column found in --input; its columns: review_body, verdict"),
        (["--model", str(trained["full"]), "--input", str(tmp_path / "nope.csv")], "--input " + str(tmp_path / "nope.csv") + " does not exist"),
        (["--model", str(trained["full"]), "--input", str(empty)], "empty.jsonl has no rows"),
        (["--model", str(trained["full"]), "--input", str(table), "--text_column", "review_body", "--label_column", "stars"],
         "--label_column stars is not in --input"),
        (["--model", str(trained["full"]), "--input", str(table), "--top_k", "0"], "--top_k must be at least 1"),
        (["--model", str(trained["full"]), "--input", str(table), "--output", str(tmp_path / "p.txt")], "name a file ending in one of"),
    ]
    for argv, message in cases:
        assert message in cli_error(predict.main, argv, monkeypatch, capsys)
    assert not (tmp_path / "t_predictions.csv").exists()
