"""Contrastive few-shot training (SetFit's two phases inside the Trainer) and few-shot draws in compare: pairs, losses,
the exact mapping of logistic regression onto the classifier, the recipe's two phases, resume in each, LoRA, and the
saved folder reloading to the same predictions."""
import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import REPO, recipe_argv, review_rows, write_csv

from hf_transfer import HfTransferError
from hf_transfer.contrastive import linear_from_logistic, pair_loss
from hf_transfer.data.pairs import DISSIMILAR, SIMILAR, PairCollator, check_pairable, contrastive_pairs
from recipes import sentiment

# A tiny BERT learns the pair task quickly only at a high rate; 8 pairs per example, 3 epochs: 48 steps of 8 pairs.
CONTRASTIVE = ["--contrastive_pairs_per_example", "8", "--learning_rate", "1e-2", "--num_train_epochs", "3",
               "--max_train_samples_per_class", "8", "--seed", "5"]


def _saving(*extra):
    return ["--save_strategy", "steps", "--save_steps", "12", "--save_total_limit", "10", *extra]


# ---------------------------------------------------------------------------------------------------------------
# pairs

def test_pairs_are_balanced_labelled_right_and_anchored_evenly():
    labels = [0] * 5 + [1] * 3  # unequal classes
    pairs = contrastive_pairs(labels, 6, seed=0)
    assert len(pairs) == 6 * len(labels)
    assert Counter(s for _, _, s in pairs) == {SIMILAR: 3 * len(labels), DISSIMILAR: 3 * len(labels)}
    for first, second, similarity in pairs:
        assert first != second
        assert similarity == (SIMILAR if labels[first] == labels[second] else DISSIMILAR)
    anchored = Counter((first, s) for first, _, s in pairs)
    assert set(anchored.values()) == {3} and len(anchored) == 2 * len(labels)  # 3 of each kind for every row
    # A row's partners of one kind repeat only once all its candidates were used: row 5 (label 1) has two similar
    # candidates (6, 7), so its three similar pairs take both, one of them twice.
    assert sorted(Counter(second for first, second, s in pairs if first == 5 and s == SIMILAR).values()) == [1, 2]


def test_pairs_are_a_function_of_the_seed():
    labels = [0, 1] * 6
    assert contrastive_pairs(labels, 4, seed=3) == contrastive_pairs(labels, 4, seed=3)
    assert contrastive_pairs(labels, 4, seed=3) != contrastive_pairs(labels, 4, seed=4)


def test_pairs_of_several_labels_draw_dissimilar_partners_from_every_other_label():
    labels = [0] * 4 + [1] * 4 + [2] * 4
    pairs = contrastive_pairs(labels, 16, seed=1)  # 8 dissimilar per row, 8 candidates: each used once
    for anchor in range(len(labels)):
        partners = [second for first, second, s in pairs if first == anchor and s == DISSIMILAR]
        assert sorted(partners) == [i for i in range(len(labels)) if labels[i] != labels[anchor]]


def test_a_label_with_one_example_or_a_single_label_is_a_clear_error():
    with pytest.raises(HfTransferError, match=r"label\(s\) rare have a single training example.*at least two examples"):
        check_pairable([0, 0, 1], ["common", "rare"])
    with pytest.raises(HfTransferError, match="at least two labels; the training data has one"):
        contrastive_pairs([0, 0, 0], 2, seed=0)
    with pytest.raises(HfTransferError, match="even number"):
        contrastive_pairs([0, 0, 1, 1], 3, seed=0)


def test_the_pair_collator_pads_each_side_on_its_own_and_evaluation_rows_as_they_are():
    from datasets import Dataset

    rows = Dataset.from_dict({"input_ids": [[1, 5], [1, 6, 7], [1, 8]], "labels": [0, 1, 0]})
    padded = []

    def pad(features):
        padded.append(features)
        return {"input_ids": len(features), "attention_mask": max(len(f["input_ids"]) for f in features)}

    collator = PairCollator(pad, rows)
    batch = collator([{"first": 0, "second": 1, "similarity": 0.0}, {"first": 2, "second": 0, "similarity": 1.0}])
    assert padded[-2:] == [[{"input_ids": [1, 5]}, {"input_ids": [1, 8]}], [{"input_ids": [1, 6, 7]}, {"input_ids": [1, 5]}]]
    assert batch["attention_mask"] == 2 and batch["second_attention_mask"] == 3  # each side its own longest
    assert batch["similarity"].tolist() == [0.0, 1.0]
    assert collator([{"input_ids": [1, 5], "labels": 0}])["input_ids"] == 1
    assert padded[-1] == [{"input_ids": [1, 5], "labels": 0}]


# ---------------------------------------------------------------------------------------------------------------
# the maths, against independent computations

def test_pair_losses_match_their_formulas():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    an, bn = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
    cos = (an * bn).sum(1) / np.linalg.norm(an, axis=1) / np.linalg.norm(bn, axis=1)
    yn = y.numpy()
    assert pair_loss(a, b, y, "cosine").item() == pytest.approx(np.mean((cos - yn) ** 2), rel=1e-5)
    d = 1 - cos
    expected = np.mean(0.5 * (yn * d ** 2 + (1 - yn) * np.maximum(0.5 - d, 0) ** 2))
    assert pair_loss(a, b, y, "contrastive").item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("classes", [2, 3])
def test_the_fitted_regression_maps_exactly_onto_a_linear_softmax_layer(classes):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    y = rng.integers(0, classes, size=40)
    head = LogisticRegression(max_iter=1000).fit(x, y)
    weight, bias = linear_from_logistic(head, classes + 1)  # one more label than the rows show
    logits = x @ weight.T + bias
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    np.testing.assert_allclose(probabilities[:, :classes], head.predict_proba(x), atol=1e-9)
    assert probabilities[:, classes].max() < 1e-100  # the label no row shows is never predicted


# ---------------------------------------------------------------------------------------------------------------
# the recipe: both phases, the saved folder, resume, LoRA

def _pooled(model_dir, texts, check_mean: bool = False):
    """The embedding the saved classifier reads, computed here from the saved body alone: BERT's pooler output.
    `check_mean`: it is the normalised mean of the tokens below the pooling block, tanh(LayerNorm(mean) / sqrt(d))."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, body = AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        output = body(**batch, output_hidden_states=True)
    if check_mean:
        below = output.hidden_states[-2].double().numpy()  # the last trained block's token states
        mask = batch["attention_mask"].numpy()[..., None]
        mean = (below * mask).sum(1) / mask.sum(1)
        normalised = (mean - mean.mean(1, keepdims=True)) / mean.std(1, keepdims=True)
        np.testing.assert_allclose(output.pooler_output.numpy(), np.tanh(normalised / np.sqrt(mean.shape[1])), atol=2e-3)
    return output.pooler_output.numpy()


def test_both_phases_train_the_body_on_pairs_then_set_the_classifier_from_logistic_regression(tiny_text_model_dir,
                                                                                          review_files, tmp_path):
    import csv

    from safetensors.torch import load_file
    from sklearn.linear_model import LogisticRegression
    from transformers import pipeline

    out = tmp_path / "out"
    metrics = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, *CONTRASTIVE))
    assert metrics["contrastive_pairs"] == 16 * 8 and metrics["train_examples"] == 16
    assert metrics["global_step"] == 3 * 128 // 8
    # Phase one trained the body on pairs: their loss fell (the first epoch's mean against the last's).
    losses = [e["loss"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e]
    assert np.mean(losses[-16:]) < 0.5 * np.mean(losses[:16]), losses
    saved = load_file(out / "model.safetensors")
    pretrained = load_file(tiny_text_model_dir / "model.safetensors")
    assert not torch.equal(saved["bert.pooler.dense.weight"], pretrained["pooler.dense.weight"])
    # Phase two: the classifier is logistic regression (C = 1) refitted here on the saved body's embeddings of the
    # training rows the run drew (its seed), and the reloaded pipeline predicts exactly its probabilities.
    rows = list(csv.DictReader(open(review_files["train"])))
    from datasets import Dataset

    from hf_transfer.data.splits import per_class_subset

    labels = {"negative": 0, "positive": 1}
    pool = Dataset.from_dict({"text": [r["text"] for r in rows], "labels": [labels[r["label"]] for r in rows]})
    drawn = per_class_subset(pool, 8, seed=5)
    head = LogisticRegression(C=1.0, max_iter=1000, random_state=5).fit(_pooled(out, list(drawn["text"]), check_mean=True),
                                                                         list(drawn["labels"]))
    validation = [r["text"] for r in csv.DictReader(open(review_files["validation"]))]
    expected = head.predict_proba(_pooled(out, validation))[:, 1]
    classifier = pipeline("text-classification", model=str(out), top_k=None)
    got = [next(p["score"] for p in scores if p["label"] == "positive") for scores in classifier(validation)]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # ... and what the run evaluated is what the reloaded model predicts.
    truth = [r["label"] for r in csv.DictReader(open(review_files["validation"]))]
    accuracy = np.mean([("positive" if p > 0.5 else "negative") == t for p, t in zip(got, truth)])
    assert metrics["validation_accuracy"] == pytest.approx(accuracy)
    # What trained: the body below the pooling block; the block (one more hidden layer, built), the linear pooler and
    # the fitted classifier did not.
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == 3 and metrics["validation_accuracy"] > 0.8
    fixed = [model.classifier, model.bert.pooler, model.bert.encoder.layer[-1]]
    assert metrics["trainable_parameters"] == metrics["total_parameters"] - sum(p.numel() for m in fixed for p in m.parameters())


@pytest.mark.parametrize("cut", [24, 48], ids=["in the pair phase", "in the head fit"])
def test_a_run_killed_in_either_phase_resumes_to_the_uninterrupted_result(tiny_text_model_dir, review_files, tmp_path,
                                                                         monkeypatch, cut):
    from safetensors.torch import load_file

    from hf_transfer import contrastive_trainer

    # Cut in the head fit: without evaluation, so that the closing step is the only fit (an epoch-end evaluation fits
    # the head too, before that epoch's checkpoint is saved).
    quiet = ["--eval_strategy", "no"] if cut == 48 else []
    argv = lambda out: recipe_argv(tiny_text_model_dir, review_files, out, *CONTRASTIVE, *_saving(), *quiet)
    whole, cut_run = tmp_path / "whole", tmp_path / "cut"
    sentiment.main(argv(whole))
    if cut < 48:  # what a kill right after checkpoint-24 (half the pair phase) leaves behind
        sentiment.main(argv(cut_run))
        for path in cut_run.iterdir():
            if path.name not in ("run.json", "checkpoint-12", "checkpoint-24"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    else:  # killed while fitting the head: every pair step and its last checkpoint done, nothing after
        def killed(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(contrastive_trainer, "fit_logistic_head", killed)
        with pytest.raises(KeyboardInterrupt):
            sentiment.main(argv(cut_run))
        monkeypatch.undo()
        assert (cut_run / "checkpoint-48").is_dir() and not (cut_run / "metrics.json").exists()
    resumed = sentiment.main(argv(cut_run) + ["--resume_from_checkpoint", "last"])
    assert resumed["resumed_from_step"] == cut
    expected, got = load_file(whole / "model.safetensors"), load_file(cut_run / "model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_lora_on_the_body_saves_a_model_whose_reload_predicts_as_the_run_evaluated(tiny_text_model_dir, review_files,
                                                                                  tmp_path, pooling):
    """cls: the adapter, reloaded with peft; mean: its pooling block is no adapter weight, so the merged model."""
    import csv

    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "out"
    merge = ["--merge_lora", "true"] if pooling == "mean" else []
    metrics = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, *CONTRASTIVE, "--strategy", "lora",
                                         "--lora_r", "4", "--contrastive_pooling", pooling, *merge))
    labels = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}
    if pooling == "cls":
        assert (out / "adapter_config.json").is_file()
        model = AutoPeftModelForSequenceClassification.from_pretrained(out, **labels).eval()
        classifier = model.base_model.model.classifier.modules_to_save["default"]
    else:
        assert not (out / "adapter_config.json").exists()
        model = AutoModelForSequenceClassification.from_pretrained(out).eval()
        classifier = model.classifier
    tokenizer = AutoTokenizer.from_pretrained(out)
    rows = list(csv.DictReader(open(review_files["validation"])))
    with torch.no_grad():
        logits = model(**tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")).logits
    accuracy = np.mean([["negative", "positive"][int(i)] == r["label"] for i, r in zip(logits.argmax(-1), rows)])
    assert metrics["validation_accuracy"] == pytest.approx(accuracy)
    # The classifier was fitted, not trained: its two rows are w/2 and -w/2 (a binary regression's split), which no
    # random initialisation or gradient step would give.
    assert torch.allclose(classifier.weight[0], -classifier.weight[1]) and classifier.weight.abs().sum() > 0
    # LoRA trained adapters (and with cls the pooler), never the whole body.
    assert metrics["trainable_parameters"] < 0.5 * metrics["total_parameters"]


def test_contrastive_input_errors_are_one_line_before_anything_is_written(tiny_text_model_dir, tmp_path):
    files = {"train": write_csv(tmp_path / "train.csv", [*review_rows(8), ("a fine movie", "neutral")]),
             "validation": write_csv(tmp_path / "validation.csv", review_rows(4, seed=2))}
    out = tmp_path / "out"
    with pytest.raises(HfTransferError, match=r"label\(s\) neutral have a single training example"):
        sentiment.main(recipe_argv(tiny_text_model_dir, files, out, "--contrastive_pairs_per_example", "4",
                                   "--class_names", "negative", "neutral", "positive"))
    with pytest.raises(HfTransferError, match="--strategy gradual trains the head first"):
        sentiment.main(recipe_argv(tiny_text_model_dir, files, out, "--contrastive_pairs_per_example", "4",
                                   "--strategy", "gradual"))
    with pytest.raises(HfTransferError, match="a lora adapter does not carry: add --merge_lora"):
        sentiment.main(recipe_argv(tiny_text_model_dir, files, out, "--contrastive_pairs_per_example", "4",
                                   "--strategy", "lora"))
    with pytest.raises(HfTransferError, match="must be 0 \\(off\\) or an even number"):
        sentiment.main(recipe_argv(tiny_text_model_dir, files, out, "--contrastive_pairs_per_example", "5"))
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# compare: few-shot draws

def test_compare_runs_every_arm_on_the_same_few_shot_draws_and_reports_the_spread_over_them(tiny_text_model_dir,
                                                                                            review_files, tmp_path):
    from recipes import compare

    recipe_args = " ".join(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "unused", "--learning_rate", "1e-2"))
    result = compare.main(["--strategies", "full", "contrastive=--contrastive_pairs_per_example 4 --learning_rate 1e-2",
                           "--references", "false", "--seeds", "7", "--few_shot_draws", "2", "--train_sizes", "4",
                           "--in_process", "true", "--output_dir", str(tmp_path / "compare"), "--recipe_args", recipe_args])
    runs = result["runs"]
    assert sorted((r["arm"], r["draw"]) for r in runs) == sorted((a, d) for a in ("full", "contrastive") for d in range(2))

    for run in runs:  # every arm's draw d sampled its rows with --train_sample_seed d (the training seed stayed 7)
        folder = tmp_path / "compare" / "size_4" / run["arm"] / "seed_7" / f"draw_{run['draw']}"
        options = json.loads((folder / "run.json").read_text())["options"]
        assert options["train_sample_seed"] == run["draw"] and options["seed"] == 7
    # Mean ± std over the draws, as the report's table says.
    full = [100 * r["validation_accuracy"] for r in runs if r["arm"] == "full"]
    report = (tmp_path / "compare" / "report.md").read_text()
    assert f"{np.mean(full):.2f} ± {np.std(full, ddof=1):.2f}" in report
    assert "few-shot draws" in report and "`few_shot_draws` = 2" in report


def test_the_sample_seed_draws_the_few_shot_rows_apart_from_the_training_seed(tiny_text_model_dir, review_files, tmp_path):
    def drawn(*flags):
        args = sentiment.TASK.parse(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "out",
                                                "--max_train_samples_per_class", "4", *flags))
        return sorted(map(tuple, sentiment.TASK.load(args).datasets["train"]["input_ids"]))

    assert drawn("--seed", "1") == drawn("--seed", "2", "--train_sample_seed", "1")  # default: the training seed
    assert drawn("--seed", "1", "--train_sample_seed", "3") == drawn("--seed", "2", "--train_sample_seed", "3")
    assert drawn("--train_sample_seed", "3") != drawn("--train_sample_seed", "4")
    # A draw's smaller subset is part of its larger one (a learning curve over sizes adds examples to the same draw).
    args = lambda n: recipe_argv(tiny_text_model_dir, review_files, tmp_path / "out", "--max_train_samples_per_class", n,
                                 "--train_sample_seed", "3")
    small = sentiment.TASK.load(sentiment.TASK.parse(args("2"))).datasets["train"]["input_ids"]
    large = sentiment.TASK.load(sentiment.TASK.parse(args("4"))).datasets["train"]["input_ids"]
    assert {tuple(x) for x in small} <= {tuple(x) for x in large}


def test_a_contrastive_run_on_two_cpu_processes_trains_the_model_one_process_trains(tiny_text_model_dir, review_files,
                                                                                   tmp_path):
    """Pairs shard across processes like rows (4 + 4 a step against 8), DDP averages their gradients, and every rank
    fits the same head from the same weights: the saved classifiers agree."""
    from safetensors.torch import load_file
    from test_distributed import launch
    from transformers import AutoConfig

    model = tmp_path / "tiny-no-dropout"  # one computation on both sides (each process would draw its own masks)
    shutil.copytree(tiny_text_model_dir, model)
    config = AutoConfig.from_pretrained(model)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(model)
    common = [*CONTRASTIVE, "--num_train_epochs", "1"]
    launch("cpu_2proc.yaml", REPO / "recipes" / "sentiment.py",
           recipe_argv(model, review_files, tmp_path / "ddp", *common, "--per_device_train_batch_size", "4"), tmp_path)
    two = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    one = sentiment.main(recipe_argv(model, review_files, tmp_path / "single", *common))
    assert two["world_size"] == 2 and one["world_size"] == 1 and two["global_step"] == one["global_step"] == 16
    a, b = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "single" / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < 1e-4, worst
    assert two["validation_accuracy"] == one["validation_accuracy"]
