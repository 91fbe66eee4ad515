"""The sentiment recipe end to end on a tiny local model: outputs, strategies, and bad input as one line and exit 2."""
import json

import pytest
from conftest import cli_error, lora_parameter_counts, recipe_argv, review_rows, write_csv

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


def hand_counted_parameters(model_dir, strategy: str) -> tuple[int, int]:
    """(trained, total) parameters of the recipe's BERT classifier under `strategy`, counted from its named parameters
    by the strategy's rule; the head is the pooler and the classifier (what the layer map leaves above the blocks)."""
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    total = sum(p.numel() for p in model.parameters())
    head = ("bert.pooler.", "classifier.")
    if strategy == "feature_extraction":
        return sum(p.numel() for name, p in model.named_parameters() if name.startswith(head)), total
    if strategy == "lora":
        return lora_parameter_counts(model, ("query", "value"), head, r=2)
    return total, total  # gradual: 8 steps, a group every 2, so head, block_1, block_0 and embeddings all trained


@pytest.mark.parametrize("flags", [
    ["--strategy", "feature_extraction", "--learning_rate", "1e-2"],
    ["--strategy", "lora", "--lora_r", "2"],
    ["--strategy", "gradual", "--unfreeze_every", "2", "--unfreeze_unit", "step", "--layer_lr_decay", "0.9"],
], ids=["feature_extraction", "lora", "gradual"])
def test_strategies_run_through_the_recipe(tiny_text_model_dir, review_files, tmp_path, flags):
    out = tmp_path / "out"
    metrics = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, *flags))
    trained, total = hand_counted_parameters(tiny_text_model_dir, flags[1])
    assert (metrics["trainable_parameters"], metrics["total_parameters"]) == (trained, total)
    if "lora" in flags:
        assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()


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
    ]
    for i, (case_files, flags, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        line = cli_error(sentiment.main, recipe_argv(tiny_text_model_dir, case_files, out, *flags), monkeypatch, capsys)
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
    line = cli_error(sentiment.main, recipe_argv(three_way, review_files, tmp_path / "o"), monkeypatch, capsys)
    assert "pass --ignore_mismatched_sizes" in line and not (tmp_path / "o").exists()
    metrics = sentiment.main(recipe_argv(three_way, review_files, tmp_path / "o2", "--ignore_mismatched_sizes", "true"))
    assert metrics["global_step"] == 8


def test_command_line_error_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    # In process through the entry point's own wrapper (tests/test_cli.py holds the one subprocess test).
    line = cli_error(sentiment.main, ["--train_file", str(tmp_path / "nope.csv"), "--output_dir", str(tmp_path / "out")],
                     monkeypatch, capsys, alone=True)
    assert line == f"error: --train_file {tmp_path / 'nope.csv'} does not exist"
    assert not (tmp_path / "out").exists()
