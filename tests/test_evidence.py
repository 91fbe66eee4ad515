"""Evidence: feature cache invalidation, folds, negative-transfer flags (either direction), linear probes of text and
audio, and compare reports from tiny runs: in this process, by training-set size, and once with a process per run."""
import json

import numpy as np
import pytest
import torch
from audio_helpers import make_label_folders, save_speech_checkpoint, write_clip
from conftest import make_tokenizer, recipe_argv, review_rows
from datasets import Dataset
from transformers import BertConfig, BertModel, DataCollatorWithPadding

from hf_transfer import HfTransferError
from hf_transfer.evidence.compare import Run, lower_is_better, summarise, write_report
from hf_transfer.evidence.features import cached_embed, stratified_folds


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


def run(arm, seed, value, metric="validation_accuracy"):
    return Run(arm, seed, {metric: value, "wall_time_s": 1.0, "trainable_parameters": 10, "total_parameters": 10})


def test_negative_transfer_is_flagged_only_beyond_the_spread():
    runs = [run("scratch", s, a) for s, a in enumerate([0.80, 0.82, 0.81])]
    runs += [run("hurts", s, a) for s, a in enumerate([0.70, 0.71, 0.69])]  # clearly worse than scratch
    runs += [run("noisy", s, a) for s, a in enumerate([0.70, 0.90, 0.78])]  # lower mean, but within the spread
    runs += [run("helps", s, a) for s, a in enumerate([0.90, 0.91, 0.92])]
    rows = {r.arm: r for r in summarise(runs, "validation_accuracy")}
    assert rows["hurts"].negative_transfer
    assert not rows["noisy"].negative_transfer and not rows["helps"].negative_transfer
    assert rows["scratch"].mean == pytest.approx(0.81) and rows["scratch"].std == pytest.approx(0.01)




def test_lower_is_better_metrics_flip_best_and_negative_transfer(tmp_path):
    assert [lower_is_better(m) for m in ("validation_wer", "validation_cer", "eval_loss", "perplexity_after")] == [True] * 4
    assert not any(lower_is_better(m) for m in ("validation_accuracy", "validation_f1", "validation_precision", "test_roc_auc"))
    values = {"scratch": [0.40, 0.42, 0.41], "hurts": [0.60, 0.61, 0.59], "helps": [0.20, 0.21, 0.22]}
    for metric, hurt, helped in (("validation_wer", "hurts", "helps"), ("validation_accuracy", "helps", "hurts")):
        runs = [run(arm, s, v, metric) for arm, vs in values.items() for s, v in enumerate(vs)]
        rows = {r.arm: r for r in summarise(runs, metric)}
        assert rows[hurt].negative_transfer and not rows[helped].negative_transfer, metric
        report = write_report(runs, tmp_path / metric, metric).read_text()
        assert f"Best: **{helped}**" in report, metric
        assert f"by more than the spread): {hurt}." in report, metric
    # Perplexity is no fraction: shown as it is, not in percent.
    runs = [run("scratch", 0, 30.0, "perplexity_after"), run("adapted", 0, 12.5, "perplexity_after")]
    report = write_report(runs, tmp_path / "ppl", "perplexity_after").read_text()
    assert "| adapted | 12.50 ± 0.00 |" in report and "Best: **adapted** at 12.50, -17.50 against" in report


def test_linear_probe_heads_cv_and_views(tiny_text_model_dir, review_files, tmp_path):
    import csv

    from sklearn.metrics import accuracy_score
    from transformers import AutoModel, AutoTokenizer, DataCollatorWithPadding

    from hf_transfer.evidence.features import embed, fit_head
    from recipes import linear_probe

    heads = ("logistic_regression", "linear_svm", "mlp")
    metrics = linear_probe.main(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "out") + [
        "--heads", *heads, "--k_folds", "4", "--feature_views", "true", "--feature_cache_dir", str(tmp_path / "cache")])
    # Independently: the texts and labels straight from the files, features from the checkpoint, each head fitted on
    # the string labels and scored by scikit-learn; a row out of place or a mislabelled split would show.
    tokenizer, model = AutoTokenizer.from_pretrained(tiny_text_model_dir), AutoModel.from_pretrained(tiny_text_model_dir)
    rows = {split: list(csv.DictReader(open(review_files[split]))) for split in ("train", "validation")}
    x = {split: embed(model, Dataset.from_dict(dict(tokenizer([r["text"] for r in rs]))), DataCollatorWithPadding(tokenizer))
         for split, rs in rows.items()}
    y = {split: np.array([r["label"] for r in rs]) for split, rs in rows.items()}
    for head in heads:
        fitted = fit_head(head, x["train"], y["train"], seed=42)
        assert metrics[f"validation_{head}_accuracy"] == pytest.approx(accuracy_score(y["validation"], fitted.predict(x["validation"]))), head
        assert f"cv4_{head}_accuracy_std" in metrics
    assert metrics["validation_accuracy"] == metrics["validation_logistic_regression_accuracy"]
    assert metrics["train_examples"] == 64 and metrics["task"] == "sentiment"
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


def test_linear_probe_of_an_audio_recipe(tmp_path):
    from recipes import linear_probe

    checkpoint = save_speech_checkpoint(tmp_path / "w2v")
    train = make_label_folders(tmp_path / "train", per_label=5, seed=0)
    validation = make_label_folders(tmp_path / "dev", per_label=2, seed=1)
    cache = tmp_path / "cache"

    def probe(out):
        return linear_probe.main(["--recipe", "audio_classification", "--model_name_or_path", str(checkpoint),
                                  "--train_dir", str(train), "--validation_dir", str(validation), "--output_dir", str(tmp_path / out),
                                  "--feature_cache_dir", str(cache), "--per_device_eval_batch_size", "4"])

    first = probe("a")
    assert first["task"] == "audio classification" and first["train_examples"] == 10 and first["feature_dim"] == 32
    assert not first["feature_cache_hit"]
    saved = {p: np.load(p) for p in cache.glob("*.npy")}
    assert sorted(f.shape for f in saved.values()) == [(4, 32), (10, 32)]  # one row per clip of each split
    assert "validation_accuracy" in first and "validation_logistic_regression_f1" in first
    assert probe("b")["feature_cache_hit"]

    # One training clip rewritten in place (same path, same length, another tone): the training features are computed
    # again, and differ from the cached ones in that clip's row only; the validation split still comes from the cache.
    changed = sorted((train / "high").glob("*.wav"))[0]
    import soundfile

    info = soundfile.info(changed)
    write_clip(changed, 777.0, info.samplerate, info.frames / info.samplerate, info.channels)
    third = probe("c")
    assert third["feature_cache_hits"] == {"train": False, "validation": True}
    (new,) = [np.load(p) for p in cache.glob("*.npy") if p not in saved]
    (old,) = [f for f in saved.values() if len(f) == 10]
    differs = np.where(~np.isclose(new, old, atol=1e-6).all(1))[0]
    clips = sorted(str(p) for p in train.rglob("*.*"))  # the folder loader's order: label folders, then files, sorted
    assert differs.tolist() == [clips.index(str(changed))]


def test_linear_probe_refuses_a_task_without_labels():
    from recipes import linear_probe

    with pytest.raises(HfTransferError, match="speech recognition .* has none; use a labelled recipe") as error:
        linear_probe.main(["--recipe", "speech_recognition"])
    assert "\n" not in str(error.value)


def test_compare_refuses_unknown_recipes_and_folds_of_audio():
    from recipes import compare

    with pytest.raises(HfTransferError, match="no recipe named 'nosuch'") as error:
        compare.main(["--recipe", "nosuch", "--in_process", "true"])
    assert "\n" not in str(error.value)
    with pytest.raises(HfTransferError, match="--k_folds .* works for text recipes \\(sentiment\\) only") as error:
        compare.main(["--recipe", "audio_classification", "--k_folds", "2", "--in_process", "true"])
    assert "\n" not in str(error.value)


def test_compare_writes_a_complete_report(tiny_text_model_dir, review_files, tmp_path):
    from recipes import compare

    out = tmp_path / "cmp"
    argv = " ".join(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "ignored"))
    result = compare.main(["--strategies", "full", "--seeds", "1", "--k_folds", "2", "--output_dir", str(out),
                           "--recipe_args", argv, "--in_process", "true", "--feature_cache_dir", str(tmp_path / "cache")])
    report = (out / "report.md").read_text()
    for section in ("# Transfer report: sentiment", "| scratch |", "| frozen+logistic_regression |", "| full |",
                    "Negative transfer", "## Environment", "transformers:", "learning_curves.png",
                    "metric_vs_trainable_parameters.png", "metric_vs_time.png"):
        assert section in report, section
    for plot in ("learning_curves.png", "metric_vs_trainable_parameters.png", "metric_vs_time.png"):
        assert (out / plot).stat().st_size > 1000
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs) == 3 * 2  # three arms, two folds, one seed
    # Each fold trained on its own half: 64 + 16 rows -> folds of 32 train rows -> 4 steps at batch 8.
    assert [r["metrics"]["global_step"] for r in runs if r["arm"] != "frozen+logistic_regression"] == [4] * 4
    assert [r["metrics"]["train_examples"] for r in runs if r["arm"] == "frozen+logistic_regression"] == [32, 32]
    assert {r["arm"] for r in result["runs"]} == {"scratch", "frozen+logistic_regression", "full"}


def test_compare_by_train_size_draws_the_learning_curve(tiny_text_model_dir, review_files, tmp_path):
    from recipes import compare

    out = tmp_path / "sizes"
    # Batch 1 and one epoch: a run's optimizer steps count its training examples.
    argv = " ".join(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "ignored", "--per_device_train_batch_size", "1",
                                "--eval_strategy", "no"))
    result = compare.main(["--strategies", "full", "--seeds", "3", "--train_sizes", "4", "2", "--output_dir", str(out),
                           "--recipe_args", argv, "--in_process", "true", "--feature_cache_dir", str(tmp_path / "cache")])
    runs = result["runs"]
    assert [(r["train_size"], r["arm"]) for r in runs] == [
        (2, "scratch"), (2, "frozen+logistic_regression"), (2, "full"), (4, "scratch"), (4, "frozen+logistic_regression"), (4, "full")]
    for r in runs:  # two classes: 2 and 4 per class are 4 and 8 examples, as recorded and (fine-tuning) as counted in steps
        assert r["train_examples"] == 2 * r["train_size"], r["arm"]
        if not r["arm"].startswith("frozen"):
            assert r["global_step"] == 2 * r["train_size"], r["arm"]
    report = (out / "report.md").read_text()
    assert "| strategy | 2 per class (4 examples) | 4 per class (8 examples) |" in report
    for arm in ("scratch", "frozen+logistic_regression", "full"):
        table_row = next(line for line in report.splitlines() if line.startswith(f"| {arm} | ") and line.count("±") == 2)
        at = {r["train_size"]: 100 * r["validation_accuracy"] for r in runs if r["arm"] == arm}
        assert f"{at[2]:.2f} ± 0.00" in table_row and f"{at[4]:.2f} ± 0.00" in table_row, table_row
    assert "![learning_curve_by_train_size](learning_curve_by_train_size.png)" in report
    assert (out / "learning_curve_by_train_size.png").stat().st_size > 1000
    assert (out / "size_2" / "full" / "seed_3" / "metrics.json").is_file()


def test_compare_runs_each_arm_in_its_own_process(tiny_text_model_dir, review_files, tmp_path):
    """The one smoke test of the default: each run is a process of its own (the recipe's script) with its own log."""
    from recipes import compare

    out = tmp_path / "cmp"
    argv = " ".join(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "ignored", "--max_train_samples_per_class", "4"))
    compare.main(["--strategies", "full", "--seeds", "1", "--output_dir", str(out), "--recipe_args", argv,
                  "--feature_cache_dir", str(tmp_path / "cache")])
    for arm, says in (("scratch", "run summary"), ("frozen+logistic_regression", "frozen features"), ("full", "run summary")):
        run_dir = out / arm / "seed_1"
        assert says in (run_dir / "run.log").read_text(), arm
        assert json.loads((run_dir / "metrics.json").read_text())["wall_time_s"] > 0
    report = (out / "report.md").read_text()
    assert "| full |" in report and "one process each" in report
