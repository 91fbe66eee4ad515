"""The sentiment recipe end to end on a tiny local model: outputs, strategies, and bad input as one line and exit 2."""
import json
import sys

import pytest
from conftest import one_line_error, recipe_argv, review_rows, write_csv

from hf_transfer.cli import run_cli
from recipes import sentiment


def test_full_run_writes_model_tokenizer_and_metrics(tiny_text_model_dir, review_files, tmp_path, capsys):
    out = tmp_path / "out"
    metrics = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, "--frozen_baseline", "true"))

    assert metrics["global_step"] == 8  # 64 rows / batch 8, one epoch
    for key in ("validation_accuracy", "validation_f1", "validation_roc_auc", "baseline_accuracy", "train_loss",
                "trainable_parameters", "total_parameters", "wall_time_s", "peak_cpu_memory_gb"):
        assert key in metrics, key
    assert metrics["trainable_parameters"] == metrics["total_parameters"]
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not list(out.glob("pytorch_model*.bin")), "weights must be safetensors"
    printed = capsys.readouterr().out
    assert "trainable / total parameters" in printed and "transfer vs frozen backbone" in printed


def test_saved_model_reloads_with_its_labels(tiny_text_model_dir, review_files, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "out"
    sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out))
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.id2label[1] == "positive"
    assert model(**tokenizer(["the movie was great"], return_tensors="pt")).logits.shape == (1, 2)


@pytest.mark.parametrize("flags, trainable_fraction", [
    (["--strategy", "feature_extraction", "--learning_rate", "1e-2"], (0.0, 0.2)),
    (["--strategy", "lora", "--lora_r", "2"], (0.0, 0.3)),
    (["--strategy", "gradual", "--unfreeze_every", "2", "--unfreeze_unit", "step", "--layer_lr_decay", "0.9"], (1.0, 1.0)),
])
def test_strategies_run_through_the_recipe(tiny_text_model_dir, review_files, tmp_path, flags, trainable_fraction):
    out = tmp_path / "out"
    metrics = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, *flags))
    fraction = metrics["trainable_parameters"] / metrics["total_parameters"]
    low, high = trainable_fraction
    assert low < fraction <= high or fraction == high, fraction
    if "lora" in flags:
        assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()


def _cli(monkeypatch, capsys, argv):
    monkeypatch.setattr(sys, "argv", ["sentiment.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        sentiment.run_cli(sentiment.main)
    assert exit_info.value.code == 2
    return one_line_error(capsys.readouterr().err)


def test_bad_input_cases(tiny_text_model_dir, review_files, tmp_path, monkeypatch, capsys):
    from transformers import GPT2Config

    gpt2 = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(gpt2)
    wrong_columns = write_csv(tmp_path / "wrong.csv", review_rows(8), header=("review_body", "verdict"))
    unknown_label = write_csv(tmp_path / "unknown.csv", review_rows(8) + [("meh", "neutral")])
    empty = write_csv(tmp_path / "empty.csv", [])
    files = dict(review_files)
    cases = [
        ({**files, "train": wrong_columns}, [], "no text column found among: review_body, verdict"),
        ({**files, "validation": unknown_label}, [], "labels outside the label set ['negative', 'positive']: ['neutral']"),
        ({**files, "validation": empty}, [], "the validation split is empty"),
        (files, ["--model_name_or_path", str(tmp_path / "missing")], "does not exist"),
        (files, ["--model_name_or_path", str(gpt2), "--strategy", "gradual"], "model type 'gpt2' is not in the layer map"),
        (files, ["--strategy", "lora", "--freeze_bottom", "1"], "--freeze_bottom applies to --strategy freeze"),
        (files, ["--resume_from_checkpoint", "last"], "no complete checkpoint in"),
    ]
    for i, (case_files, flags, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        line = _cli(monkeypatch, capsys, recipe_argv(tiny_text_model_dir, case_files, out, *flags))
        assert message in line, line
        assert not out.exists(), f"{out} was written for a bad input"


def test_a_head_for_other_labels_needs_explicit_consent(tiny_text_model_dir, review_files, tmp_path, monkeypatch, capsys):
    from transformers import BertForSequenceClassification

    three_way = tmp_path / "three_way"
    model = BertForSequenceClassification.from_pretrained(tiny_text_model_dir, num_labels=3)
    model.save_pretrained(three_way)
    (three_way / "vocab.txt").write_text((tiny_text_model_dir / "vocab.txt").read_text())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (three_way / name).write_text((tiny_text_model_dir / name).read_text())
    line = _cli(monkeypatch, capsys, recipe_argv(three_way, review_files, tmp_path / "o", "--model_name_or_path", str(three_way)))
    assert "pass --ignore_mismatched_sizes" in line and not (tmp_path / "o").exists()
    metrics = sentiment.main(recipe_argv(three_way, review_files, tmp_path / "o2", "--ignore_mismatched_sizes", "true"))
    assert metrics["global_step"] == 8


def test_command_line_error_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    # In process through the entry point's own wrapper (tests/test_cli.py holds the one subprocess test).
    monkeypatch.delenv("HF_TRANSFER_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["sentiment.py", "--train_file", str(tmp_path / "nope.csv"), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(sentiment.main)
    assert exit_info.value.code == 2
    assert one_line_error(capsys.readouterr().err) == f"error: --train_file {tmp_path / 'nope.csv'} does not exist"
    assert not (tmp_path / "out").exists()
