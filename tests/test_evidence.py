"""Evidence: feature cache invalidation, folds, negative-transfer flags, and a full compare report from tiny runs."""
import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, BertModel, DataCollatorWithPadding

from conftest import make_tokenizer, recipe_argv, review_rows
from hf_transfer import HfTransferError
from hf_transfer.evidence import Run, summarise
from hf_transfer.features import cached_embed, stratified_folds


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def tiny_bert(tokenizer, seed=0):
    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=37, max_position_embeddings=64))


def encoded(tokenizer, n, seed):
    return Dataset.from_dict(dict(tokenizer([t for t, _ in review_rows(n, seed=seed)])))


def test_feature_cache_hits_and_invalidates(tokenizer, tmp_path):
    model, data, collator = tiny_bert(tokenizer), encoded(tokenizer, 12, 0), DataCollatorWithPadding(tokenizer)
    first, hit = cached_embed(model, data, collator, tmp_path)
    assert not hit
    again, hit = cached_embed(model, data, collator, tmp_path)
    assert hit and np.array_equal(first, again)

    changed = {
        "model": (tiny_bert(tokenizer, seed=1), data, {}),
        "data": (model, encoded(tokenizer, 12, 1), {}),
        "layer": (model, data, {"layer": 1}),
        "pooling": (model, data, {"pooling": "cls"}),
    }
    for what, (m, d, options) in changed.items():
        features, hit = cached_embed(m, d, collator, tmp_path, **options)
        assert not hit, f"a change of {what} must recompute"
        assert not np.allclose(features, first), what
    # One weight nudged is a different model.
    with torch.no_grad():
        model.encoder.layer[0].output.dense.bias[0] += 1e-3
    assert not cached_embed(model, data, collator, tmp_path)[1]
    assert len(list(tmp_path.glob("*.npy"))) == 6


def test_folds_are_disjoint_covering_and_stratified():
    labels = np.array([0] * 30 + [1] * 10)
    folds = stratified_folds(labels, 5, seed=0)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(40))  # covering, each row held out exactly once
    for train, h in folds:
        assert not set(train) & set(h) and len(train) + len(h) == 40
        assert (labels[h] == 1).sum() == 2  # proportions kept
    with pytest.raises(HfTransferError, match="needs at least 5 examples of every label"):
        stratified_folds(np.array([0] * 10 + [1] * 3), 5, seed=0)


def run(arm, seed, accuracy):
    return Run(arm, seed, {"validation_accuracy": accuracy, "wall_time_s": 1.0, "trainable_parameters": 10, "total_parameters": 10})


def test_negative_transfer_is_flagged_only_beyond_the_spread():
    runs = [run("scratch", s, a) for s, a in enumerate([0.80, 0.82, 0.81])]
    runs += [run("hurts", s, a) for s, a in enumerate([0.70, 0.71, 0.69])]  # clearly worse than scratch
    runs += [run("noisy", s, a) for s, a in enumerate([0.70, 0.90, 0.78])]  # lower mean, but within the spread
    runs += [run("helps", s, a) for s, a in enumerate([0.90, 0.91, 0.92])]
    rows = {r.arm: r for r in summarise(runs, "validation_accuracy")}
    assert rows["hurts"].negative_transfer
    assert not rows["noisy"].negative_transfer and not rows["helps"].negative_transfer
    assert rows["scratch"].mean == pytest.approx(0.81) and rows["scratch"].std == pytest.approx(0.01)


def test_linear_probe_heads_cv_and_views(tiny_text_model_dir, review_files, tmp_path):
    from recipes import linear_probe

    metrics = linear_probe.main(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "out") + [
        "--heads", "logistic_regression", "linear_svm", "mlp", "--k_folds", "4", "--feature_views", "true",
        "--feature_cache_dir", str(tmp_path / "cache")])
    for head in ("logistic_regression", "linear_svm", "mlp"):
        assert 0.0 <= metrics[f"validation_{head}_accuracy"] <= 1.0
        assert f"cv4_{head}_accuracy_std" in metrics
    assert metrics["validation_accuracy"] == metrics["validation_logistic_regression_accuracy"]
    assert (tmp_path / "out" / "features_pca.png").stat().st_size > 1000
    assert (tmp_path / "out" / "features_tsne.png").stat().st_size > 1000
    again = linear_probe.main(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "out2") + [
        "--feature_cache_dir", str(tmp_path / "cache")])
    assert again["feature_cache_hit"] and not metrics["feature_cache_hit"]


def test_feature_views_by_domain(tiny_text_model_dir, tmp_path):
    from conftest import write_csv
    from recipes import linear_probe

    rows = [(t, l, "kitchen" if i % 3 else "books") for i, (t, l) in enumerate(review_rows(60))]
    train = write_csv(tmp_path / "t.csv", rows, header=("text", "label", "domain"))
    metrics = linear_probe.main(["--model_name_or_path", str(tiny_text_model_dir), "--train_file", str(train),
                                 "--domain_column", "domain", "--feature_views", "true", "--output_dir", str(tmp_path / "o"),
                                 "--feature_cache_dir", str(tmp_path / "cache")])
    assert len(metrics["feature_views"]) == 2
    from hf_transfer.data.text import TextDataArgs, load_text_classification

    data = load_text_classification(TextDataArgs(train_file=str(train), domain_column="domain"), make_tokenizer(tmp_path / "tk"))
    assert len(data.domains["train"]) == len(data.datasets["train"]) and set(data.domains["train"]) == {"kitchen", "books"}
    with pytest.raises(HfTransferError, match="has no column place"):
        load_text_classification(TextDataArgs(train_file=str(train), domain_column="place"), make_tokenizer(tmp_path / "tk"))


def test_compare_writes_a_complete_report(tiny_text_model_dir, review_files, tmp_path):
    from recipes import compare

    out = tmp_path / "cmp"
    argv = " ".join(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "ignored"))
    result = compare.main(["--strategies", "full", "--seeds", "1", "--k_folds", "2", "--output_dir", str(out),
                           "--recipe_args", argv])
    report = (out / "report.md").read_text()
    for section in ("| scratch |", "| frozen+logistic_regression |", "| full |", "Negative transfer", "## Environment",
                    "transformers:", "learning_curves.png", "metric_vs_trainable_parameters.png", "metric_vs_time.png"):
        assert section in report, section
    for plot in ("learning_curves.png", "metric_vs_trainable_parameters.png", "metric_vs_time.png"):
        assert (out / plot).stat().st_size > 1000
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs) == 3 * 2  # three arms, two folds, one seed
    # Each fold trained on its own half: 64 + 16 rows -> folds of 32 train rows -> 4 steps at batch 8.
    assert all(r["metrics"].get("global_step", 4) == 4 for r in runs if r["arm"] != "frozen+logistic_regression")
    assert {r["arm"] for r in result["runs"]} == {"scratch", "frozen+logistic_regression", "full"}
