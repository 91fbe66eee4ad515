"""Multitask transfer (recipes/multitask.py, hf_transfer/multitask): the task sampler's draws, what each strategy trains
in a two-task model, exported task folders against the multitask model and an independent scoring, exact resume, two
processes against one with gradient accumulation, the multitask -> fine-tune chain, and bad input as one line."""
from __future__ import annotations

import csv
import json
import math
import random
import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import (
    NEGATIVE,
    NOUNS,
    POSITIVE,
    cli_error,
    review_rows,
    tiny_config,
    write_csv,
)

from hf_transfer.multitask.sampler import TaskSampler
from recipes import multitask

TOPICS = {"movie": "film", "phone": "gadget", "hotel": "travel"}  # noun -> one of three classes


def topic_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Three classes named by the sentence's noun."""
    rng = random.Random(seed)
    nouns = list(TOPICS)
    return [(f"the {nouns[i % 3]} was {rng.choice(POSITIVE + NEGATIVE)}", TOPICS[nouns[i % 3]]) for i in range(n)]


def score_rows(n: int, seed: int) -> list[tuple[str, float]]:
    """A number per sentence that grows with its positive adjectives (regression)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(POSITIVE + NEGATIVE) for _ in range(2)]
        rows.append((f"the {rng.choice(NOUNS)} was {words[0]} and {words[1]}", 1.25 + 2.5 * sum(w in POSITIVE for w in words)))
    return rows


def write_tasks(path, tasks: list[dict]):
    path.write_text(yaml.safe_dump({"tasks": tasks}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def task_set(tmp_path_factory):
    """Three tasks in one folder, its task file naming the files relatively: 2 classes (40 rows, the only task with a
    test split), 3 classes with a text pair (24 rows, a loss weight), a regression (16 rows)."""
    folder = tmp_path_factory.mktemp("tasks")
    write_csv(folder / "reviews_train.csv", review_rows(40, seed=1))
    write_csv(folder / "reviews_dev.csv", review_rows(12, seed=2))
    pair = lambda rows: [(text, "it was a review", label) for text, label in rows]
    write_csv(folder / "topics_train.csv", pair(topic_rows(24, 3)), header=("sentence", "context", "topic"))
    write_csv(folder / "topics_dev.csv", pair(topic_rows(9, 4)), header=("sentence", "context", "topic"))
    write_csv(folder / "scores_train.csv", score_rows(16, 5), header=("text", "score"))
    write_csv(folder / "scores_dev.csv", score_rows(8, 6), header=("text", "score"))
    entries = [
        {"name": "reviews", "train_file": "reviews_train.csv", "validation_file": "reviews_dev.csv",
         "test_file": "reviews_dev.csv"},
        {"name": "topics", "train_file": "topics_train.csv", "validation_file": "topics_dev.csv", "text_column": "sentence",
         "text_pair_column": "context", "label_column": "topic", "loss_weight": 2.0},
        {"name": "scores", "train_file": "scores_train.csv", "validation_file": "scores_dev.csv", "label_column": "score",
         "task_type": "regression"},
    ]
    return folder, write_tasks(folder / "tasks.yaml", entries), entries


def multitask_argv(model_dir, tasks, out, *extra) -> list[str]:
    return ["--tasks", str(tasks), "--model_name_or_path", str(model_dir), "--output_dir", str(out),
            "--num_train_epochs", "2", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
            "--save_strategy", "no", "--logging_steps", "1", "--dataloader_pin_memory", "false", *extra]


# --- the sampler ---

def test_sampler_batches_are_a_function_of_seed_epoch_and_index():
    sizes, batch = [23, 5, 12], 4
    sampler = TaskSampler(sizes, batch, seed=7)
    epochs = [sampler.batches(epoch) for epoch in range(3)]
    # The same again from a fresh sampler, in any order of epochs (what a resumed run or another process computes).
    fresh = TaskSampler(sizes, batch, seed=7)
    for epoch in (2, 0, 1):
        fresh.set_epoch(epoch)
        assert np.array_equal(fresh.batches(epoch), epochs[epoch])
        assert list(fresh) == epochs[epoch].reshape(-1).tolist()  # what the DataLoader receives
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(TaskSampler(sizes, batch, seed=8).batches(0), epochs[0])
    offsets = np.cumsum([0, *sizes])
    for rows in epochs:
        assert rows.shape == (math.ceil(sum(sizes) / batch), batch)  # 40 rows: 10 full batches an epoch
        tasks = np.searchsorted(offsets, rows, side="right") - 1
        assert (tasks == tasks[:, :1]).all(), "a batch mixed tasks"
        for task, size in enumerate(sizes):
            stream = (rows[tasks[:, 0] == task] - offsets[task]).reshape(-1)
            # A fresh permutation each time the task runs out: every row before any repeats, and whole cycles.
            for start in range(0, len(stream), size):
                cycle = stream[start:start + size]
                assert len(set(cycle.tolist())) == len(cycle)
            assert stream.min(initial=0) >= 0 and stream.max(initial=0) < size


@pytest.mark.parametrize("policy,temperature", [("proportional", 2.0), ("temperature", 2.0), ("temperature", 0.5)])
def test_sampler_shares_match_rows_to_the_power_one_over_t(policy, temperature):
    sizes = np.array([900, 100, 400])
    sampler = TaskSampler(list(sizes), 10, seed=3, policy=policy, temperature=temperature)
    exponent = 1.0 if policy == "proportional" else 1 / temperature
    expected = sizes ** exponent / (sizes ** exponent).sum()
    draws = np.concatenate([sampler.batch_tasks(epoch) for epoch in range(100)])  # 14,000 batches
    shares = np.bincount(draws, minlength=3) / len(draws)
    sd = np.sqrt(expected * (1 - expected) / len(draws))
    assert (np.abs(shares - expected) < 4 * sd).all(), (shares, expected)


def test_round_robin_takes_each_task_in_turn():
    sampler = TaskSampler([50, 3, 20], 4, seed=0, policy="round_robin")
    for epoch in range(3):
        assert sampler.batch_tasks(epoch).tolist() == [i % 3 for i in range(19)]
    assert np.allclose(sampler.shares(), 1 / 3)


def test_annealed_shares_move_from_proportional_to_equal_over_the_run():
    sizes = np.array([990, 10])
    sampler = TaskSampler(list(sizes), 1, seed=1, policy="annealed")
    assert np.allclose(sampler.shares(0.0), sizes / sizes.sum()) and np.allclose(sampler.shares(1.0), 0.5)
    with pytest.raises(ValueError, match="run's length"):
        sampler.batch_tasks(0)
    epochs = 20
    sampler.progress.total_batches = epochs * sampler.num_batches  # 20,000 batches
    draws = np.concatenate([sampler.batch_tasks(epoch) for epoch in range(epochs)])
    progress = np.arange(len(draws)) / (len(draws) - 1)
    small = sizes[1] ** (1 - progress) / (sizes[0] ** (1 - progress) + sizes[1] ** (1 - progress))
    for window in (slice(0, 2000), slice(-2000, None)):  # the first and the last tenth of the run
        expected, observed = small[window].mean(), (draws[window] == 1).mean()
        sd = np.sqrt((small[window] * (1 - small[window])).sum()) / 2000
        assert abs(observed - expected) < 4 * sd, (window, observed, expected)


# --- the model under each strategy ---

def two_task_model():
    from transformers import BertForSequenceClassification

    from hf_transfer.multitask.model import MultitaskModel

    torch.manual_seed(0)
    models = {}
    for name, labels in (("a", 2), ("b", 3)):
        config = tiny_config("bert")
        config.num_labels = labels
        models[name] = BertForSequenceClassification(config)
    return MultitaskModel(models)


HEADS = ("task_models.a.bert.pooler.", "task_models.a.classifier.", "task_models.b.classifier.")


def trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_the_encoder_is_shared_and_saved_once(tmp_path):
    from safetensors.torch import load_file, save_file

    model = two_task_model()
    a, b = model.task_models["a"], model.task_models["b"]
    assert a.bert is b.bert and a.classifier is not b.classifier
    state = model.state_dict()
    assert not [k for k in state if k.startswith("task_models.b.bert.")]
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in a.parameters()) + 32 * 3 + 3
    save_file(state, tmp_path / "whole.safetensors")  # safetensors refuses tensors saved under two names
    other = two_task_model()
    torch.nn.init.normal_(other.task_models["b"].classifier.weight)
    other.load_state_dict(load_file(tmp_path / "whole.safetensors"), strict=True)  # the aliases filled in
    batch = {"input_ids": torch.randint(5, 100, (3, 7))}
    for index, name in enumerate("ab"):
        task = torch.full((3,), index)
        expected = model.eval().task_models[name](**batch).logits
        assert torch.equal(model(**batch, task=task).logits, expected)
        assert torch.equal(other.eval()(**batch, task=task).logits, expected)


@pytest.mark.parametrize("strategy", ["full", "freeze", "feature_extraction", "lora"])
def test_each_strategy_trains_what_it_says_in_a_two_task_model(strategy):
    from hf_transfer.strategies import StrategyArgs, apply_strategy

    options = {"freeze": {"freeze_bottom": 1}, "lora": {"lora_r": 2}}.get(strategy, {})
    model = apply_strategy(two_task_model(), StrategyArgs(strategy=strategy, **options))
    names = {name for name, _ in model.named_parameters()}
    if strategy == "full":
        assert trainable(model) == names
    elif strategy == "freeze":
        frozen = {n for n in names if n.startswith(("task_models.a.bert.embeddings.", "task_models.a.bert.encoder.layer.0."))}
        assert frozen and trainable(model) == names - frozen
    elif strategy == "feature_extraction":
        assert trainable(model) == {n for n in names if n.startswith(HEADS)}
    else:  # adapters once in the shared encoder (2 blocks x query, value), trained copies of the pooler and both heads
        adapters = {n for n in trainable(model) if ".lora_" in n}
        assert len(adapters) == 2 * 2 * 2 and all(".task_models.a.bert.encoder." in n for n in adapters)
        heads = trainable(model) - adapters
        assert {n.split("modules_to_save")[0] for n in heads} == {f"base_model.model.{h}" for h in HEADS}
        count = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert count == 2 * 2 * 2 * (32 + 32) + (32 * 32 + 32) + (32 * 2 + 2) + (32 * 3 + 3)


def test_gradual_unfreezing_and_layer_lr_decay_see_every_head_as_the_head():
    from types import SimpleNamespace

    from hf_transfer.layers import layer_groups
    from hf_transfer.trainer import GradualUnfreezing, layerwise_parameter_groups

    model = two_task_model()
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["embeddings", "block_0", "block_1", "head"]
    assert {n for n, _ in groups[-1].named_parameters} == {n for n, _ in model.named_parameters() if n.startswith(HEADS)}
    schedule = GradualUnfreezing(every=1, unit="step")
    state = SimpleNamespace(global_step=0, max_steps=0)
    schedule.on_train_begin(SimpleNamespace(gradient_accumulation_steps=1), state, None, model=model)
    assert trainable(model) == {n for n, _ in model.named_parameters() if n.startswith(HEADS)}  # heads first
    schedule.on_step_begin(None, SimpleNamespace(global_step=1), None)
    assert "task_models.a.bert.encoder.layer.1.output.dense.weight" in trainable(model)
    fresh = two_task_model()
    by_name = dict(fresh.named_parameters())
    lrs = {name: group["lr"] for group in layerwise_parameter_groups(layer_groups(fresh), 1.0, 0.5, 0.0, set())
           for name, p in by_name.items() for q in group["params"] if p is q}
    assert lrs["task_models.b.classifier.weight"] == lrs["task_models.a.classifier.weight"] == 1.0
    assert lrs["task_models.a.bert.encoder.layer.1.output.dense.weight"] == 0.5
    assert lrs["task_models.a.bert.embeddings.word_embeddings.weight"] == 0.125


def test_lora_exports_merged_and_adapter_folders_that_predict_as_the_multitask_heads(tiny_text_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    from hf_transfer.multitask.export import save_task_models
    from hf_transfer.multitask.model import MultitaskModel
    from hf_transfer.strategies import StrategyArgs, apply_strategy

    torch.manual_seed(0)
    models = {name: AutoModelForSequenceClassification.from_pretrained(tiny_text_model_dir, num_labels=labels)
              for name, labels in (("a", 2), ("b", 3))}
    strategy = StrategyArgs(strategy="lora", lora_r=2)
    model = apply_strategy(MultitaskModel(models), strategy)
    with torch.no_grad():  # trained-looking adapters and heads (LoRA's B starts at zero)
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_text_model_dir)
    batch = dict(tokenizer(["the movie was great", "the phone was awful and dull"], padding=True, return_tensors="pt"))
    model.eval()
    expected = {name: model(**batch, task=torch.full((2,), i)).logits for i, name in enumerate("ab")}
    adapters = {name: tmp_path / "adapter" / name for name in "ab"}
    assert save_task_models(model, tokenizer, adapters, "adapter", strategy)[1] == "adapter"
    merged_dirs = {name: tmp_path / "merged" / name for name in "ab"}
    merged, saved = save_task_models(model, tokenizer, merged_dirs, None, strategy)
    assert saved == "merged" and isinstance(merged, MultitaskModel)
    for name in "ab":
        full = AutoModelForSequenceClassification.from_pretrained(merged_dirs[name]).eval()
        assert torch.allclose(full(**batch).logits, expected[name], atol=1e-5)
        config = AutoConfig.from_pretrained(adapters[name])
        base = AutoModelForSequenceClassification.from_pretrained(tiny_text_model_dir, config=config)
        adapter = PeftModel.from_pretrained(base, adapters[name]).eval()
        assert torch.allclose(adapter(**batch).logits, expected[name], atol=1e-5)


# --- a run end to end ---

@pytest.fixture(scope="module")
def finished_run(tiny_text_model_dir, task_set, tmp_path_factory):
    _, tasks, _ = task_set
    out = tmp_path_factory.mktemp("run") / "out"
    # Long enough to learn something (scores that a wrong label map or head would change), the best epoch kept.
    return out, multitask.main(multitask_argv(
        tiny_text_model_dir, tasks, out, "--task_sampler", "temperature", "--num_train_epochs", "6", "--learning_rate",
        "3e-3", "--save_strategy", "epoch", "--metric_for_best_model", "macro_score", "--load_best_model_at_end", "true"))


def read_task_rows(path, text: str, label: str, pair: str | None = None):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [r[text] for r in rows], [r[pair] for r in rows] if pair else None, [r[label] for r in rows]


def test_each_task_is_scored_on_its_own_and_exported_standalone(finished_run, task_set):
    from safetensors.torch import load_file
    from scipy.special import softmax
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        pipeline,
    )

    from hf_transfer.multitask.model import MultitaskModel

    out, metrics = finished_run
    folder, _, entries = task_set
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["task_train_examples"] == {"reviews": 40, "topics": 24, "scores": 16} and metrics["train_examples"] == 80
    assert metrics["global_step"] == 6 * 10  # 80 rows, batches of 8: 10 an epoch
    assert metrics["task_sampler"] == "temperature"
    assert metrics["seconds_per_step"] == pytest.approx(metrics["train_runtime"] / 60)
    # Each epoch's evaluation in the Trainer's names; the best epoch by macro score is the model kept.
    evaluations = [entry for entry in json.loads((out / "log_history.json").read_text()) if "eval_macro_score" in entry]
    assert len(evaluations) == 6 and all("eval_topics_accuracy" in entry for entry in evaluations)
    assert metrics["validation_macro_score"] == pytest.approx(max(e["eval_macro_score"] for e in evaluations))
    # The whole multitask model, from its folder's weights and the task folders' configs.
    whole = MultitaskModel({e["name"]: AutoModelForSequenceClassification.from_config(
        AutoConfig.from_pretrained(out / "tasks" / e["name"])) for e in entries})
    whole.load_state_dict(load_file(out / "model.safetensors"), strict=True)
    whole.eval()
    columns = {"reviews": ("text", "label", None), "topics": ("sentence", "topic", "context"), "scores": ("text", "score", None)}
    main_scores = []
    for index, entry in enumerate(entries):
        name, task_dir = entry["name"], out / "tasks" / entry["name"]
        model = AutoModelForSequenceClassification.from_pretrained(task_dir).eval()
        tokenizer = AutoTokenizer.from_pretrained(task_dir)
        texts, pairs, labels = read_task_rows(folder / entry["validation_file"], *columns[name])
        batch = dict(tokenizer(texts, pairs, padding=True, return_tensors="pt"))
        with torch.no_grad():
            logits = model(**batch).logits
            assert torch.equal(whole(**batch, task=torch.full((len(texts),), index)).logits, logits)
        if name == "scores":
            predictions, targets = logits[:, 0].numpy().astype(float), np.array(labels, dtype=float)
            assert metrics["validation_scores_mse"] == pytest.approx(np.mean((predictions - targets) ** 2), rel=1e-5)
            main_scores.append(np.corrcoef(predictions, targets)[0, 1])
            assert metrics["validation_scores_pearson"] == pytest.approx(main_scores[-1], abs=1e-5)
            assert model.config.problem_type == "regression"
            continue
        names = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
        assert sorted(model.config.id2label.values()) == sorted(set(labels))
        main_scores.append(np.mean([p == t for p, t in zip(names, labels)]))
        assert metrics[f"validation_{name}_accuracy"] == pytest.approx(main_scores[-1])
        if name == "reviews":  # the pipeline: the label names, the softmax of the same logits
            predicted = pipeline("text-classification", model=str(task_dir), top_k=None)(texts[:2])
            for row, scores in zip(predicted, softmax(logits[:2].numpy(), axis=-1)):
                assert {p["label"]: p["score"] for p in row} == pytest.approx(
                    {model.config.id2label[i]: s for i, s in enumerate(scores)}, abs=1e-5)
        card = (task_dir / "README.md").read_text()
        assert f"Task `{name}` of a multitask run, trained together with" in card
        assert all(f"`{other['name']}`" in card for other in entries if other["name"] != name)
    assert metrics["validation_macro_score"] == pytest.approx(np.mean(main_scores), abs=1e-5)
    # Only the reviews task has a test split (its dev file again): the test macro score is its accuracy.
    assert metrics["test_macro_score"] == metrics["test_reviews_accuracy"] == metrics["validation_reviews_accuracy"]
    assert not [key for key in metrics if key.startswith(("test_topics_", "test_scores_"))]
    readme = (out / "README.md").read_text()
    assert f"{metrics['validation_macro_score']:.4f}" in readme and all(f"(tasks/{e['name']})" in readme for e in entries)


def test_a_task_folder_starts_the_text_recipe(finished_run, task_set, tmp_path, capsys):
    from recipes import sentiment

    out, _ = finished_run
    folder, _, _ = task_set
    capsys.readouterr()
    metrics = sentiment.main(["--model_name_or_path", str(out / "tasks" / "reviews"), "--train_file",
                              str(folder / "reviews_train.csv"), "--validation_file", str(folder / "reviews_dev.csv"),
                              "--output_dir", str(tmp_path / "fine"), "--num_train_epochs", "1",
                              "--per_device_train_batch_size", "8", "--save_strategy", "no"])
    assert metrics["global_step"] == 5 and "validation_accuracy" in metrics
    assert "new classification head" not in capsys.readouterr().out  # the task's trained head carried over
    config = json.loads((tmp_path / "fine" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}


@pytest.mark.parametrize("strategy", [[], ["--strategy", "lora", "--lora_r", "2"]], ids=["full", "lora"])
def test_kill_and_resume_trains_the_same_weights_bitwise(tiny_text_model_dir, task_set, tmp_path, monkeypatch, capsys,
                                                        strategy):
    from trainer_helpers import (
        assert_same_weights,
        keep_only_checkpoint,
        stop_runs_after,
    )

    _, tasks, _ = task_set
    # 80 rows, batches of 4, 2 accumulated: 10 steps an epoch. A checkpoint every 5; the kill at 15 is mid-epoch 2.
    argv = lambda out: multitask_argv(tiny_text_model_dir, tasks, out, "--per_device_train_batch_size", "4",
                                      "--gradient_accumulation_steps", "2", "--task_sampler", "annealed",
                                      "--save_strategy", "steps", "--save_steps", "5", "--eval_strategy", "no", *strategy)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    multitask.main(argv(whole))
    notes = [line for line in capsys.readouterr().out.splitlines() if "new classification head" in line]
    # One note per task's new head, each naming its task (the regression task's head is a classification layer too).
    assert [line.split(":")[1].strip() for line in notes] == ["task 'reviews'", "task 'topics'", "task 'scores'"], notes
    stop_runs_after(15, monkeypatch)
    multitask.main(argv(cut))
    monkeypatch.undo()
    keep_only_checkpoint(cut, "checkpoint-15")
    resumed = multitask.main(argv(cut) + ["--resume_from_checkpoint", "last"])
    assert resumed["resumed_from_step"] == 15 and resumed["global_step"] == 20
    saved = "adapter_model.safetensors" if strategy else "model.safetensors"  # LoRA: the whole model's adapters
    assert_same_weights(whole / saved, cut / saved)
    for task in ("reviews", "topics", "scores"):  # each task's exported model (LoRA: merged)
        assert_same_weights(whole / "tasks" / task / "model.safetensors", cut / "tasks" / task / "model.safetensors")


def test_two_processes_train_as_one_with_gradient_accumulation(tiny_text_model_dir, task_set, tmp_path):
    """2 processes at batch 4 take consecutive batches of the task sampler (4 + 4 rows a step); 1 process at batch 4
    accumulating 2 takes the same two batches a step. Without dropout both are one computation, up to float rounding."""
    from conftest import REPO
    from safetensors.torch import load_file
    from test_distributed import launch
    from transformers import AutoConfig

    model = tmp_path / "tiny-no-dropout"
    shutil.copytree(tiny_text_model_dir, model)
    config = AutoConfig.from_pretrained(model)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(model)
    _, tasks, _ = task_set
    common = ["--per_device_train_batch_size", "4", "--eval_strategy", "no", "--seed", "5"]
    launch("cpu_2proc.yaml", REPO / "recipes" / "multitask.py", multitask_argv(model, tasks, tmp_path / "two", *common),
           tmp_path)
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    one = multitask.main(multitask_argv(model, tasks, tmp_path / "one", *common, "--gradient_accumulation_steps", "2"))
    # 80 rows, batches of 4: 20 an epoch, 2 a step: 10 steps an epoch either way.
    assert (two["world_size"], one["world_size"], two["global_step"], one["global_step"]) == (2, 1, 20, 20)
    assert math.isclose(two["train_loss"], one["train_loss"], rel_tol=1e-4), (two["train_loss"], one["train_loss"])
    a, b = load_file(tmp_path / "two" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst


# --- bad input ---

def test_bad_input_is_one_line_naming_the_task_and_writes_nothing(tiny_text_model_dir, task_set, tmp_path, monkeypatch,
                                                                   capsys):
    folder, _, entries = task_set
    reviews, topics, scores = entries
    write_csv(folder / "empty.csv", [])
    write_csv(folder / "words.csv", [("the movie was great", "high"), ("the hotel was dull", "low")],
                      header=("text", "score"))
    cases = [
        ([{"name": "reviews"}, topics], "task 'reviews' in", "has no data; give it train_file"),
        ([reviews, {**topics, "name": "reviews"}], "task 'reviews' is listed twice", "own name"),
        ([reviews, {**topics, "label_column": "category"}], "task 'topics'", "label column 'category' not found"),
        ([reviews, {**scores, "train_file": "words.csv"}], "task 'scores'", "not a number"),
        ([reviews, {**topics, "train_file": "empty.csv"}], "task 'topics'", "is empty"),
        ([], "lists no tasks", "at least one entry"),
        ([reviews, {**topics, "max_seq_length": 64}], "task 'topics'",
         ("unknown key(s) max_seq_length (max_seq_length: a flag of the recipe, shared by every task); a task takes "
          "name, loss_weight, dataset_name")),
        ([reviews, {**topics, "labels": "topic"}], "task 'topics'", "unknown key(s) labels; a task takes name"),
    ]
    for i, (task_entries, where, message) in enumerate(cases):
        tasks = write_tasks(folder / f"bad{i}.yaml", task_entries)
        out = tmp_path / f"out{i}"
        line = cli_error(multitask.main, multitask_argv(tiny_text_model_dir, tasks, out), monkeypatch, capsys)
        assert where in line and message in line, line
        assert not out.exists(), f"{out} was written for a bad input"
    flags = [
        (["--task_sampler", "temperature", "--sampler_temperature", "0"], "--sampler_temperature must be > 0"),
        (["--strategy", "freeze", "--freeze_bottom", "1", "--cache_frozen_prefix", "true"], "--cache_frozen_prefix is not supported"),
        (["--lora_export", "adapter"], "--lora_export applies to --strategy lora"),
        (["--metric_for_best_model", "scores_accuracy"], "--metric_for_best_model scores_accuracy"),
    ]
    for i, (extra, message) in enumerate(flags):
        out = tmp_path / f"flags{i}"
        line = cli_error(multitask.main, multitask_argv(tiny_text_model_dir, folder / "tasks.yaml", out, *extra),
                         monkeypatch, capsys)
        assert message in line, line
        assert not out.exists()


# --- compare: the multitask run beside the same task trained alone ---

def test_compare_puts_the_multitask_run_beside_the_task_alone(tiny_text_model_dir, task_set, tmp_path, monkeypatch, capsys):
    from recipes import compare

    folder, tasks, _ = task_set
    out = tmp_path / "cmp"
    budget = "--num_train_epochs 2 --per_device_train_batch_size 8 --learning_rate 1e-3 --save_strategy no"
    alone = (f"--model_name_or_path {tiny_text_model_dir} --train_file {folder / 'reviews_train.csv'} "
             f"--validation_file {folder / 'reviews_dev.csv'} {budget}")
    argv = ["--references", "false", "--strategies", "full", "--seeds", "1", "--output_dir", str(out), "--in_process",
            "true", "--recipe_args", alone, "--multitask_tasks", str(tasks), "--multitask_task", "reviews",
            "--multitask_args", f"--model_name_or_path {tiny_text_model_dir} {budget}"]
    result = compare.main(argv)
    by_arm = {run["arm"]: run for run in result["runs"]}
    assert set(by_arm) == {"full", "multitask"}
    # The multitask arm's score is the reviews task's own score in its run, not the macro score or another task's.
    written = json.loads((out / "multitask" / "seed_1" / "metrics.json").read_text())
    assert by_arm["multitask"]["validation_accuracy"] == written["validation_reviews_accuracy"]
    assert sorted(written["tasks"]) == ["reviews", "scores", "topics"]
    single = json.loads((out / "full" / "seed_1" / "metrics.json").read_text())
    assert by_arm["full"]["validation_accuracy"] == single["validation_accuracy"]
    report = (out / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| multitask |"))
    assert f"{100 * written['validation_reviews_accuracy']:.2f} ± 0.00" in row
    assert f"--tasks {tasks}" in report and "scored on its task reviews" in report

    bad = [(["--multitask_task", "nosuch"], "--multitask_task nosuch is not a task of", "its tasks: reviews, topics, scores"),
           (["--train_sizes", "4"], "cannot follow --train_sizes", "drop them or --multitask_tasks")]
    for extra, where, fix in bad:
        out_bad = tmp_path / f"bad_{extra[0][2:]}"
        args = [a if a != str(out) else str(out_bad) for a in argv] + extra
        line = cli_error(compare.main, args, monkeypatch, capsys)
        assert where in line and fix in line, line
        assert not out_bad.exists()
    line = cli_error(compare.main, ["--multitask_task", "reviews", "--in_process", "true"], monkeypatch, capsys)
    assert "--multitask_tasks (the task file) and --multitask_task" in line
