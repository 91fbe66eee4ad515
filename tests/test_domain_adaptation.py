"""Domain adaptation: each objective's maths against an independent computation, per-domain normalisation folded
into the saved model, a killed-and-resumed DANN run equal to an uninterrupted one, bad input refused in one line,
and the methods composing with LoRA and freezing (the saved classifier loads without the extra heads)."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from adaptation_helpers import adaptation_argv, write_domains
from conftest import cli_error, lora_parameter_counts, tiny_model, write_csv
from trainer_helpers import BatchRecorder, assert_same_batches, assert_same_weights, keep_only_checkpoint

from hf_transfer.adaptation import (
    DOMAIN,
    balanced_selection,
    self_training_ramp,
    DomainNormalisation,
    block_output_norms,
    coral_loss,
    dann_coefficient,
    mmd_loss,
    reverse_gradient,
)
from hf_transfer.trainer import OBJECTIVES, OBJECTIVES_FILE, attach_objective
from recipes import domain_adaptation


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    return write_domains(tmp_path_factory.mktemp("domains"))


# --- the maths ---

def _two_samples(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(7, 4)), rng.normal(0.5, 2.0, size=(5, 4))


def test_coral_is_the_covariance_and_mean_distance_numpy_computes():
    s, t = _two_samples()
    d = s.shape[1]
    covariance = ((np.cov(s, rowvar=False) - np.cov(t, rowvar=False)) ** 2).sum() / (4 * d * d)
    means = ((s.mean(0) - t.mean(0)) ** 2).sum() / d
    got = coral_loss(torch.from_numpy(s), torch.from_numpy(t))
    assert math.isclose(float(got), covariance + means, rel_tol=1e-12)
    assert math.isclose(float(coral_loss(torch.from_numpy(s), torch.from_numpy(t), means=False)), covariance, rel_tol=1e-12)


def test_mmd_is_the_direct_multi_kernel_sum():
    s, t = _two_samples(1)
    points = np.concatenate([s, t])
    n = len(points)
    squared = [[float(((a - b) ** 2).sum()) for b in points] for a in points]
    base = sum(squared[i][j] for i in range(n) for j in range(n) if i != j) / (n * n - n)
    bandwidths = [base * 2.0 ** (i - 2) for i in range(5)]

    def k(i, j):
        return sum(math.exp(-squared[i][j] / b) for b in bandwidths)

    ns = len(s)
    source, target = range(ns), range(ns, n)
    expected = (sum(k(i, j) for i in source for j in source) / ns ** 2
                + sum(k(i, j) for i in target for j in target) / len(t) ** 2
                - 2 * sum(k(i, j) for i in source for j in target) / (ns * len(t)))
    assert math.isclose(float(mmd_loss(torch.from_numpy(s), torch.from_numpy(t))), expected, rel_tol=1e-10)
    assert float(mmd_loss(torch.from_numpy(s), torch.from_numpy(s))) == pytest.approx(0.0, abs=1e-12)


def test_gradient_reversal_is_the_identity_forward_and_flips_the_gradient_exactly():
    x = torch.randn(4, 3, requires_grad=True)
    upstream = torch.randn(4, 3)
    assert torch.equal(reverse_gradient(x, 0.7), x)
    (reverse_gradient(x, 1.0) * upstream).sum().backward()
    assert torch.equal(x.grad, -upstream)
    x.grad = None
    (reverse_gradient(x, 0.25) * upstream).sum().backward()
    assert torch.equal(x.grad, -0.25 * upstream)


def test_dann_coefficient_is_ganins_warm_up_as_a_function_of_the_step():
    # 2 / (1 + exp(-g p)) - 1 is tanh(g p / 2): an independent form of the same schedule.
    assert dann_coefficient(0, 100) == 0.0
    for step in (1, 10, 30, 50, 100):
        assert math.isclose(dann_coefficient(step, 100), math.tanh(10 * step / 100 / 2), rel_tol=1e-12)
    assert math.isclose(dann_coefficient(100, 100), 0.9999092042625951, rel_tol=1e-12)
    assert math.isclose(dann_coefficient(40, 80, gamma=2.0), math.tanh(0.5), rel_tol=1e-12)
    assert dann_coefficient(7, 50, gamma=0.0) == 1.0  # gamma 0: no warm-up
    values = [dann_coefficient(s, 50) for s in range(51)]
    assert values == sorted(values) and dann_coefficient(80, 50) == dann_coefficient(50, 50)


# --- per-domain normalisation ---

@pytest.mark.parametrize("layer_lr_decay", [1.0, 0.5])
def test_the_domain_head_learns_at_its_multiple_of_the_learning_rate(tmp_path, layer_lr_decay):
    """--domain_head_lr_multiplier: the optimizer, read back, holds the domain head at that multiple of its group's
    rate (the head group's: --learning_rate) and everything else where the strategy put it."""
    from transformers import TrainingArguments

    from hf_transfer import StrategyArgs, TransferTrainer
    from hf_transfer.adaptation.objectives import DomainAdversarial, feature_width

    model = tiny_model("bert")
    head = attach_objective(model, "dann", DomainAdversarial(feature_width(model), 1.0, hidden=8, head_lr_multiplier=10.0))
    args = TrainingArguments(str(tmp_path), learning_rate=1e-3, use_cpu=True, report_to="none")
    trainer = TransferTrainer(model=model, args=args, strategy=StrategyArgs(layer_lr_decay=layer_lr_decay))
    optimizer = trainer.create_optimizer()
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert all(rate[id(p)] == pytest.approx(1e-2) for p in head.parameters())
    assert rate[id(model.classifier.weight)] == pytest.approx(1e-3)
    bottom = model.bert.embeddings.word_embeddings.weight
    assert rate[id(bottom)] == pytest.approx(1e-3 * layer_lr_decay ** 3)  # 2 blocks + embeddings below the head
    assert len(rate) == sum(1 for p in model.parameters() if p.requires_grad)  # every trainable weight, once


def _norm_batch(seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(6, 9, dtype=torch.long)
    mask[1, 5:] = 0
    mask[4, 3:] = 0
    return {"input_ids": torch.randint(5, 128, (6, 9), generator=g), "attention_mask": mask}, torch.tensor([0, 0, 0, 1, 1, 1])


def test_domain_norm_tracks_masked_statistics_and_folds_exactly_into_the_layer_norms():
    model = tiny_model("bert")
    objective = attach_objective(model, "domain_norm", DomainNormalisation(model))
    assert objective.paths == ["bert.encoder.layer.0.output.LayerNorm", "bert.encoder.layer.1.output.LayerNorm"]
    assert block_output_norms(model, 1) == objective.paths[1:]
    top = model.get_submodule(objective.paths[-1])
    seen = {}
    capture = top.register_forward_hook(lambda m, a, out: seen.setdefault("out", out.detach()))  # before the objective's hook
    batch, domain = _norm_batch(0)
    model.train()
    with objective.during_forward(model, batch, {DOMAIN: domain}):
        model(**batch)
    capture.remove()
    # The first batch sets the statistics: the mean over the source rows' real tokens, computed here independently.
    out, mask = seen["out"].numpy(), batch["attention_mask"].numpy().astype(bool)
    source_tokens = out[:3][mask[:3]]
    np.testing.assert_allclose(objective.mean_1[0].numpy(), source_tokens.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(objective.var_1[0].numpy(), source_tokens.var(0), rtol=1e-4, atol=1e-6)
    for seed in (1, 2):
        batch, domain = _norm_batch(seed)
        with objective.during_forward(model, batch, {DOMAIN: domain}):
            model(**batch)

    model.eval()
    batch, domain = _norm_batch(3)
    with torch.no_grad():
        plain = model(**batch).logits
        with objective.during_forward(model, batch, {DOMAIN: domain}):
            hooked = model(**batch).logits
        with objective.folded(model):
            folded = model(**batch).logits
        restored = model(**batch).logits
    assert torch.equal(hooked[:3], plain[:3]), "source rows must pass unchanged"
    assert not torch.allclose(hooked[3:], plain[3:]), "target rows were not normalised"
    torch.testing.assert_close(folded[3:], hooked[3:], rtol=1e-5, atol=1e-6)  # the fold is the same affine map
    assert torch.equal(restored, plain)


# --- the recipe ---

def _logged(out, key):
    return [e[key] for e in json.loads((out / "log_history.json").read_text()) if key in e]


def test_killed_and_resumed_dann_run_equals_the_uninterrupted_run(tiny_text_model_dir, domains, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "run"
    argv = adaptation_argv(tiny_text_model_dir, domains, out, "--adaptation", "dann", "--save_strategy", "steps",
                           "--save_steps", "2", "--save_total_limit", "5")
    whole = domain_adaptation.main(argv)
    assert whole["global_step"] == 4
    expected = load_file(out / "model.safetensors")
    expected_head = load_file(out / "checkpoint-4" / OBJECTIVES_FILE)
    coefficients = _logged(out, "dann_coefficient")
    # Source and adaptation losses are logged apart; the coefficient rises with the step (Ganin's warm-up).
    assert len(_logged(out, "task_loss")) == len(_logged(out, "adaptation_loss")) == 4
    assert coefficients[0] == 0.0 and coefficients == sorted(coefficients)
    assert coefficients[3] == pytest.approx(dann_coefficient(3, 4), abs=1e-6)

    shutil.rmtree(out / "checkpoint-4")  # what a kill right after checkpoint-2 leaves: no later checkpoint, no metrics
    (out / "metrics.json").unlink()
    resumed = domain_adaptation.main(argv + ["--resume_from_checkpoint", "last"])
    assert resumed["resumed_from_step"] == 2 and resumed["global_step"] == 4
    got = load_file(out / "model.safetensors")
    assert got.keys() == expected.keys() and not any(OBJECTIVES in k for k in got)
    assert not [k for k in expected if not torch.equal(got[k], expected[k])]
    got_head = load_file(out / "checkpoint-4" / OBJECTIVES_FILE)
    assert all(torch.equal(got_head[k], expected_head[k]) for k in expected_head) and "dann.domain_head.0.weight" in got_head
    assert _logged(out, "dann_coefficient")[-2:] == coefficients[-2:]
    # The saved classifier is a plain one: it loads with nothing missing and nothing left over.
    _, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


@pytest.mark.parametrize("file, extra, message", [
    ("empty_target", [], "the target set is empty"),
    ("unlabelled_source", [], "no label column found"),
    ("other_column_target", [], "no 'text' column, the source's text column"),
    (None, ["--adaptation", "bogus"], "unknown --adaptation 'bogus'"),
    (None, ["--adaptation", "coral", "--adaptation_weight", "-0.5"], "--adaptation_weight must be >= 0"),
    ("train", [], "is the source's training data (32 of its 32 texts are source training texts)"),
    ("star_target", [], "star_target.csv are outside the source's label set ['negative', 'positive']: ['1', '2', '3', '4', '5']"),
    (None, ["--adaptation", "self_training", "--self_training_threshold", "0"], "--self_training_threshold must be in (0, 1]"),
    (None, ["--adaptation", "self_training", "--self_training_start", "1"], "--self_training_start is a share of the run"),
    (None, ["--adaptation", "mmd", "--self_training_share", "0.3"], "--self_training_share applies to --adaptation self_training"),
    (None, ["--adaptation", "self_training", "--self_training_ema_decay", "0.9"], "applies to --self_training_teacher ema"),
    (None, ["--adaptation", "self_training", "--self_training_teacher", "twin"], "unknown --self_training_teacher 'twin'"),
    (None, ["--adaptation", "mlm+bogus"], "unknown --adaptation 'mlm+bogus'"),
    (None, ["--adaptation", "mlm+mlm"], "a combination joins different methods, without source_only"),
    (None, ["--adaptation", "source_only+mlm"], "a combination joins different methods, without source_only"),
    (None, ["--adaptation", "mlm+self_training", "--adaptation_weight", "0.5"], "runs each method at its default weight"),
    (None, ["--adaptation", "mmd", "--mlm_probability", "0.2"], "--mlm_probability applies to --adaptation mlm"),
    (None, ["--adaptation", "mlm", "--mlm_probability", "1"], "--mlm_probability must be in (0, 1)"),
    (None, ["--adaptation", "mlm", "--mlm_head_warmup_steps", "soon"], "--mlm_head_warmup_steps takes a number"),
], ids=["empty target", "source without labels", "different text columns", "unknown method", "negative weight",
        "target is the source", "target labels of another set", "threshold 0", "start at the end", "option of another method",
        "decay without the average", "unknown teacher", "unknown method in a combination", "a method twice",
        "the reference in a combination", "one weight for a combination", "masking without mlm", "masking everything",
        "warm-up not a number"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tiny_text_model_dir, domains, tmp_path, monkeypatch, capsys,
                                                          file, extra, message):
    files = dict(domains)
    if file == "unlabelled_source":
        files["train"], files["validation"] = domains[file], domains[file]
    elif file:
        files["target"] = domains[file]
    out = tmp_path / "out"
    argv = adaptation_argv(tiny_text_model_dir, files, out, *extra)
    assert message in cli_error(domain_adaptation.main, argv, monkeypatch, capsys)
    assert not out.exists()


def _accuracy(model_or_folder, tokenizer_dir, csv_path):
    import csv

    from transformers import AutoTokenizer

    rows = list(csv.DictReader(open(csv_path)))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = model_or_folder
    model.eval()
    with torch.no_grad():
        logits = model(**tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")).logits
    names = model.config.id2label
    return float(np.mean([names[int(i)] == r["label"] for i, r in zip(logits.argmax(-1), rows)]))


def test_lora_with_dann_trains_the_domain_head_and_the_adapter_reloads_without_it(tiny_text_model_dir, domains, tmp_path):
    from peft import AutoPeftModelForSequenceClassification
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    out = tmp_path / "lora"
    metrics = domain_adaptation.main(adaptation_argv(
        tiny_text_model_dir, domains, out, "--strategy", "lora", "--lora_r", "4", "--adaptation", "dann",
        "--save_strategy", "steps", "--save_steps", "2"))
    assert metrics["global_step"] == 4
    early, late = (load_file(out / f"checkpoint-{s}" / OBJECTIVES_FILE) for s in (2, 4))
    assert any(not torch.equal(early[k], late[k]) for k in early), "the domain head did not train"
    base = AutoModelForSequenceClassification.from_pretrained(tiny_text_model_dir, num_labels=2)
    adapters_and_head, _ = lora_parameter_counts(base, ("query", "value"), ("bert.pooler.", "classifier."), r=4)
    assert metrics["trainable_parameters"] == adapters_and_head + sum(v.numel() for v in late.values())  # + the domain head
    assert not any(OBJECTIVES in k for k in load_file(out / "adapter_model.safetensors"))
    config = AutoConfig.from_pretrained(out)
    model = AutoPeftModelForSequenceClassification.from_pretrained(out, id2label=config.id2label, label2id=config.label2id)
    assert not any(OBJECTIVES in name for name, _ in model.named_parameters())
    assert _accuracy(model, out, domains["target"]) == pytest.approx(metrics["target_accuracy"])


def test_domain_norm_run_saves_the_target_domain_classifier(tiny_text_model_dir, domains, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "norm"
    metrics = domain_adaptation.main(adaptation_argv(
        tiny_text_model_dir, domains, out, "--adaptation", "domain_norm", "--diagnostic_samples", "8", "--feature_views", "true"))
    assert (out / "domain_features.png").is_file()
    assert {"proxy_a_distance_before", "proxy_a_distance_after", "coral_divergence_after"} <= set(metrics)
    # The target accuracy measured with the per-domain statistics is the saved (folded) plain model's own accuracy.
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert _accuracy(model, out, domains["target"]) == pytest.approx(metrics["target_accuracy"])
    assert metrics["target_scored_rows"] == 24
    # The model card says what was adapted to and scores the target beside the source.
    card = (out / "README.md").read_text()
    assert "- **Domain adaptation:** `domain_norm`" in card and "`target.csv`, 24 rows in the training stream" in card
    assert f"| **accuracy** | target | {metrics['target_accuracy']:.4f} |" in card
    assert f"| accuracy | validation | {metrics['validation_accuracy']:.4f} |" in card
    assert "carry the target domain's statistics" in card and "the transductive protocol" in card
    assert "from the same source as the training data" not in card
    assert "name: accuracy (target)" in card  # the model-index entry for the Hub


def test_compare_reports_arms_by_domain_pair_and_coral_composes_with_freezing(tiny_text_model_dir, domains, tmp_path):
    from safetensors.torch import load_file

    from recipes import compare

    swapped = f"--train_file {domains['target']} --validation_file {domains['target']} --target_file {domains['train']}"
    common = ["--model_name_or_path", str(tiny_text_model_dir), "--validation_file", str(domains["validation"]),
              "--per_device_train_batch_size", "8", "--max_steps", "2", "--learning_rate", "1e-3", "--logging_steps", "1",
              "--save_strategy", "no", "--eval_strategy", "no", "--diagnostic_samples", "0", "--disable_tqdm", "true"]
    result = compare.main([
        "--recipe", "domain_adaptation", "--references", "false", "--seeds", "1", "--in_process", "true",
        "--output_dir", str(tmp_path / "compare"), "--recipe_args", " ".join(common),
        "--strategies", "source_only=--adaptation source_only",
        "frozen_coral=--adaptation coral --adaptation_weight 10 --strategy freeze --freeze_bottom 1",
        "--variants", f"forward=--train_file {domains['train']} --target_file {domains['target']}", f"swapped={swapped}",
    ])
    assert result["metric"] == "target_accuracy"
    assert [(r["variant"], r["arm"]) for r in result["runs"]] == [
        ("forward", "source_only"), ("forward", "frozen_coral"), ("swapped", "source_only"), ("swapped", "frozen_coral")]
    table = (tmp_path / "compare" / "report.md").read_text().split("## target_accuracy by variant")[1]
    assert "| arm | forward | swapped | mean over 2 |" in table
    # Each cell is the run's own target accuracy, its source validation accuracy beside it in brackets.
    run = next(r for r in result["runs"] if r["variant"] == "swapped" and r["arm"] == "frozen_coral")
    row = next(line for line in table.splitlines() if line.startswith("| frozen_coral |"))
    assert f"{100 * run['target_accuracy']:.2f} ({100 * run['validation_accuracy']:.1f})" in row

    # freeze + CORAL: the adaptation loss is logged beside the source loss, and the frozen layers never moved.
    out = tmp_path / "compare" / "variant_forward" / "frozen_coral" / "seed_1"
    assert run["adaptation"] == "coral" and run["adaptation_weight"] == 10
    assert all(v > 0 for v in _logged(out, "adaptation_loss")) and len(_logged(out, "task_loss")) == 2
    assert _logged(out, "adaptation_coefficient") == [0.0, pytest.approx(dann_coefficient(1, 2), abs=1e-6)]  # warm-up
    pretrained, saved = load_file(tiny_text_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    for name, tensor in pretrained.items():
        frozen = name.startswith(("embeddings.", "encoder.layer.0."))
        assert torch.equal(saved[f"bert.{name}"], tensor) == frozen or name.startswith("pooler"), name


# --- the Amazon .review reader ---

def test_review_folders_are_read_in_place_with_labels_from_the_file_names(tmp_path):
    from hf_transfer.data.domains import read_review_folder

    folder = tmp_path / "kitchen"
    folder.mkdir()
    record = "<review>\n<rating>\n{r}\n</rating>\n<review_text>\n{t}\n</review_text>\n</review>\n"
    (folder / "positive.review").write_text(record.format(r=5, t="Works & lasts: 5 < 6 &quot;great&quot;")
                                            + record.format(r=4, t="Good\nvalue"))
    (folder / "negative.review").write_text(record.format(r=1, t="Broke in a week"))
    data = read_review_folder(folder)
    assert list(data["text"]) == ["Broke in a week", 'Works & lasts: 5 < 6 "great"', "Good\nvalue"]
    assert list(data["label"]) == ["negative", "positive", "positive"] and set(data["domain"]) == {"kitchen"}


@pytest.mark.real_data
def test_the_amazon_reviews_parse_into_balanced_domains():
    from conftest import SHARED_DATA

    from hf_transfer.data.domains import read_review_folder

    root = SHARED_DATA / "amazon_multidomain"
    if not root.is_dir():
        pytest.skip(f"the Amazon multi-domain reviews are not at {root}")
    repeats = {}
    for domain in ("books", "dvd", "electronics", "kitchen"):
        data = read_review_folder(root / domain)
        texts = list(data["text"])
        assert len(data) == 2000 and list(data["label"]).count("positive") == 1000, domain
        assert not any("<review_text>" in t or "</review" in t or not t.strip() for t in texts), domain
        repeats[domain] = len(texts) - len(set(texts))
    assert sum(repeats.values()) == 147  # the data card's count of repeated texts


def test_a_small_target_is_warned_about(tiny_text_model_dir, domains, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        domain_adaptation.main(adaptation_argv(tiny_text_model_dir, domains, tmp_path / "out", "--max_steps", "1"))
    assert ("the target set has only 24 texts: too few to adapt to or to score reliably (aim for 100 or more)"
            in [r.getMessage() for r in caplog.records])


def test_proxy_a_distance_stays_in_its_range_when_the_domains_share_rows():
    """Rows present in both domains make a memorising domain classifier worse than chance on held-out rows (their twin
    was in training with the other label); the distance then uses the flipped classifier's error, as cross-validated
    predictions computed apart give it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from hf_transfer.adaptation.diagnostics import proxy_a_distance

    rows = np.random.default_rng(0).normal(size=(40, 64))
    x, y = np.concatenate([rows, rows]), np.repeat([0, 1], 40)
    predicted = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=42)), x, y,
                                  cv=StratifiedKFold(2, shuffle=True, random_state=42))
    error = float((predicted != y).mean())  # the two folds are equal in size: their mean error is this
    assert error > 0.5  # the case the flip is for
    assert proxy_a_distance(rows, rows.copy()) == pytest.approx(2 * (1 - 2 * (1 - error)))
    assert proxy_a_distance(rows, rows + 100.0) == 2.0  # separable domains: the top of the scale


# --- synthetic target conditions (--synthetic_shift, docs/shift.md "With domain adaptation") ---

def _without_target(argv: list[str]) -> list[str]:
    at = argv.index("--target_file")
    return argv[:at] + argv[at + 2:]


def _texts(csv_path) -> list[tuple[str, str]]:
    import csv

    return [(r["text"], r["label"]) for r in csv.DictReader(open(csv_path))]


def test_without_target_data_the_shifted_source_stands_in_as_the_target(tiny_text_model_dir, domains, tmp_path, capsys):
    from transformers import AutoTokenizer

    from hf_transfer.data.shift.spec import parse_shift

    out = tmp_path / "stand_in"
    argv = _without_target(adaptation_argv(tiny_text_model_dir, domains, out, "--synthetic_shift", "typos:1",
                                           "--adaptation", "coral", "--seed", "3"))
    data = domain_adaptation.TASK.load(domain_adaptation.TASK.parse(argv))
    # Source training row i through the transform with the generator default_rng([seed, 0, i]), tokenised.
    tokenizer, typos = AutoTokenizer.from_pretrained(tiny_text_model_dir), parse_shift("typos:1", "text")
    expected = [tokenizer(typos(text, np.random.default_rng([3, 0, i])))["input_ids"]
                for i, (text, _) in enumerate(_texts(domains["train"]))]
    assert data.extra["target"]["input_ids"] == expected
    assert "target" not in data.datasets and data.report["target_scored_rows"] == 0  # no labels: nothing scores it

    metrics = domain_adaptation.main(argv)
    assert (metrics["synthetic_shift_role"], metrics["synthetic_shift"], metrics["target_rows"]) == ("target", "typos:1", 32)
    assert all(v > 0 for v in _logged(out, "adaptation_loss"))  # CORAL aligned the clean source with the stand-in
    assert "synthetic shift (role target: the shifted source texts stand in as the target): typos:1 (15.0% of letters)" \
        in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert ("**Target domain:** none given; a synthetic stand-in: the source's 32 training texts through "
            "`--synthetic_shift` typos:1 (15.0% of letters)") in card
    assert "No target data were given" in card


def test_shifted_source_rows_train_beside_the_real_target_and_resume_exactly(tiny_text_model_dir, domains, tmp_path,
                                                                             monkeypatch, capsys):
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from hf_transfer.data.domains import IGNORE_INDEX
    from hf_transfer.data.shift.spec import parse_shift

    out = tmp_path / "source_role"
    plain_argv = adaptation_argv(tiny_text_model_dir, domains, out, "--num_train_epochs", "2", "--save_strategy", "steps",
                                 "--save_steps", "2")
    argv = plain_argv + ["--synthetic_shift", "word_dropout:1", "--eval_shift", "typos:1"]
    task = domain_adaptation.TASK
    plain, data = task.load(task.parse(plain_argv)), task.load(task.parse(argv))
    assert data.datasets["validation"].to_dict() == plain.datasets["validation"].to_dict()  # the clean split as it was
    # A training batch: the source rows' texts shifted (default_rng([seed, epoch, row])) and tokenised, then the target
    # rows they bring, unchanged, padded together.
    tokenizer, dropout = AutoTokenizer.from_pretrained(tiny_text_model_dir), parse_shift("word_dropout:1", "text")
    rows = [data.datasets["train"][i] for i in (0, 1)]
    source = [{**tokenizer(dropout(text, np.random.default_rng([42, 0, i]))), "labels": int(label == "positive")}
              for i, (text, label) in enumerate(_texts(domains["train"])[:2])]
    target = [{**data.extra["target"][row["target_index"][0]], "labels": IGNORE_INDEX} for row in rows]
    expected = DataCollatorWithPadding(tokenizer)(source + target)
    batch = data.collator(rows)
    assert all(torch.equal(batch[k], expected[k]) for k in expected) and batch["domain"].tolist() == [0, 0, 1, 1]
    assert not torch.equal(batch["input_ids"], plain.collator([plain.datasets["train"][i] for i in (0, 1)])["input_ids"])

    recorder = BatchRecorder(monkeypatch)
    metrics = domain_adaptation.main(argv)
    uninterrupted = recorder.take()  # 32 source rows, batches of 8, 2 epochs: 8 steps
    shutil.copy(out / "model.safetensors", tmp_path / "whole.safetensors")
    keep_only_checkpoint(out, "checkpoint-6")  # in the second epoch, whose draws differ from the first's
    resumed = domain_adaptation.main(argv + ["--resume_from_checkpoint", "last"])
    assert resumed["resumed_from_step"] == 6
    assert_same_batches(uninterrupted[6:], recorder.take())
    assert_same_weights(tmp_path / "whole.safetensors", out / "model.safetensors")

    assert (metrics["synthetic_shift_role"], metrics["shifted_eval_shift"]) == ("source", "typos:1")
    # --eval_shift scores a shifted copy of the labelled target too: row i with default_rng([eval_shift_seed, i]).
    typos = parse_shift("typos:1", "text")
    shifted = write_csv(tmp_path / "shifted_target.csv", [(typos(text, np.random.default_rng([0, i])), label)
                                                           for i, (text, label) in enumerate(_texts(domains["target"]))])
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert _accuracy(model, out, shifted) == pytest.approx(metrics["shifted_target_accuracy"])
    assert metrics["shifted_target_loss"] != metrics["target_loss"]
    shifted_accuracy, clean = metrics["shifted_target_accuracy"], metrics["target_accuracy"]
    assert (f"{'target_accuracy (shifted)':<36} {shifted_accuracy:.4f} (clean {clean:.4f}, {shifted_accuracy - clean:+.4f})"
            in capsys.readouterr().out)
    condition = "`--synthetic_shift` word_dropout:1 (30% of words dropped), drawn anew each epoch\n"
    assert f"**Synthetic condition:** the source's training rows shifted toward the target's condition with {condition}" \
        in (out / "README.md").read_text()


@pytest.mark.parametrize("target, extra, message", [
    (False, [], "--target_dataset_name (or, without target data, --synthetic_shift SPEC: the shifted source stands in"),
    (False, ["--synthetic_shift", "typos", "--synthetic_shift_role", "source"],
     "--synthetic_shift_role source adapts to target data and none are named"),
    (True, ["--synthetic_shift", "typos", "--synthetic_shift_role", "target"],
     "--synthetic_shift_role target makes the target set from the shifted source, and target data are named too"),
    (False, ["--synthetic_shift", "typos", "--synthetic_shift_probability", "0.5"],
     "with --synthetic_shift_role target a clean row of the stand-in target is a source row"),
    (False, ["--synthetic_shift", "casing:0"], "--synthetic_shift casing:0 leaves 32 of the 32 source training texts"),
    (True, ["--synthetic_shift_role", "target"], "--synthetic_shift_role says what --synthetic_shift's rows are for"),
], ids=["no target at all", "source role without target", "target role with target", "stand-in left partly clean",
        "stand-in equal to the source", "role without a shift"])
def test_a_shift_role_the_data_cannot_have_is_one_line_exit_2(tiny_text_model_dir, domains, tmp_path, monkeypatch, capsys,
                                                               target, extra, message):
    out = tmp_path / "out"
    argv = adaptation_argv(tiny_text_model_dir, domains, out, *extra)
    assert message in cli_error(domain_adaptation.main, argv if target else _without_target(argv), monkeypatch, capsys)
    assert not out.exists()


# --- self-training ---

def test_balanced_selection_keeps_the_same_share_of_each_predicted_class():
    """Against a plain-Python selection: per predicted class, the top share by confidence (earlier row on ties), at
    least one, then the threshold."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        n, classes = int(rng.integers(1, 30)), int(rng.integers(2, 5))
        logits = rng.normal(size=(n, classes)) * 3
        logits[: n // 3] = np.round(logits[: n // 3])  # some exact ties
        probabilities = torch.softmax(torch.tensor(logits), dim=-1)
        threshold, share = float(rng.uniform(0.3, 0.95)), float(rng.uniform(0.1, 1.0))
        expected = [False] * n
        p = probabilities.numpy()
        for label in range(classes):
            rows = [i for i in range(n) if int(np.argmax(p[i])) == label]
            rows.sort(key=lambda i: (-p[i].max(), i))
            for i in rows[: max(1, math.floor(share * len(rows) + 1e-9))] if rows else []:
                expected[i] = p[i].max() >= threshold
        got = balanced_selection(probabilities, threshold, share)
        assert got.tolist() == expected, trial
        assert torch.equal(balanced_selection(probabilities, threshold, share), got)  # deterministic
    # One class predicted 9 times and another once: at share 0.5 the first keeps 4 rows (not 9), the second its one.
    probabilities = torch.tensor([[0.99 - 0.01 * i, 0.01 + 0.01 * i] for i in range(9)] + [[0.05, 0.95]])
    chosen = balanced_selection(probabilities, 0.5, 0.5)
    assert chosen.tolist() == [True] * 4 + [False] * 5 + [True]


def test_self_training_ramp_is_zero_then_linear_then_one():
    assert [self_training_ramp(s, 100, 0.25, 0.5) for s in (0, 24, 25, 50, 75, 100)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    assert self_training_ramp(10, 100, 0.1, 0.0) == 1.0 and self_training_ramp(9, 100, 0.1, 0.0) == 0.0


def _resume_after_a_kill_at_step_3(out, argv, expected) -> None:
    """Drop what an 8-step run saved after checkpoint-3 (a kill right after it), resume, and compare the weights with
    the uninterrupted run's `expected`, bitwise."""
    from safetensors.torch import load_file

    for folder in ("checkpoint-6", "checkpoint-8"):
        shutil.rmtree(out / folder)
    (out / "metrics.json").unlink()
    resumed = domain_adaptation.main(argv + ["--resume_from_checkpoint", "last"])
    assert resumed["resumed_from_step"] == 3 and resumed["global_step"] == 8
    got = load_file(out / "model.safetensors")
    assert not [k for k in expected if not torch.equal(got[k], expected[k])]


def test_killed_and_resumed_self_training_equals_the_uninterrupted_run(tiny_text_model_dir, domains, tmp_path):
    """With the mean teacher, whose average is state a resume must restore (the model teacher has none)."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    extra = ["--self_training_teacher", "ema", "--self_training_ema_decay", "0.5"]
    # Threshold 0.5 with two classes: every row is confident enough, so the share alone selects (a tiny model is
    # never 0.9 sure). 2 epochs of 4 steps: the ramp starts at step 2 (a quarter of the run) at 0, so the pseudo-labels
    # join at step 3 at half weight, at full weight from step 4.
    argv = adaptation_argv(tiny_text_model_dir, domains, out, "--adaptation", "self_training", "--num_train_epochs", "2",
                           "--self_training_threshold", "0.5", "--self_training_share", "0.5", "--save_strategy", "steps",
                           "--save_steps", "3", "--save_total_limit", "5", *extra)
    whole = domain_adaptation.main(argv)
    assert whole["global_step"] == 8 and whole["self_training_share"] == 0.5
    expected = load_file(out / "model.safetensors")
    coefficients = _logged(out, "self_training_coefficient")
    assert coefficients == [self_training_ramp(s, 8, 0.25, 0.25) for s in range(8)]
    shares = _logged(out, "pseudo_label_share")
    # 8 target rows a batch, share 0.5 of each predicted class (at least one): 4 or 5 rows once the ramp is on.
    assert shares[:3] == [0.0] * 3 and all(s in (0.5, 0.625) for s in shares[3:]), shares
    assert all(math.isclose(_logged(out, "pseudo_label_class_0")[i] + _logged(out, "pseudo_label_class_1")[i], 1.0)
               for i in range(3, 8))
    state = load_file(out / "checkpoint-6" / OBJECTIVES_FILE)
    assert int(state["self_training.ema_step"]) == 5  # folded in at step 5's batch, the last before the save
    assert sum(k.startswith("self_training.ema_") for k in state) > 10
    _resume_after_a_kill_at_step_3(out, argv, expected)
    assert _logged(out, "pseudo_label_share")[-5:] == shares[-5:]


def test_pseudo_label_accuracy_is_logged_from_the_target_labels_which_never_reach_the_loss(tiny_text_model_dir, domains,
                                                                                          tmp_path):
    """The same run with the target's two labels swapped trains bitwise the same weights (the labels are read for the
    log only), and every selected pseudo-label that was right becomes wrong: correct shares sum to the selected share."""
    import csv

    from safetensors.torch import load_file

    with open(domains["target"]) as f:
        rows = list(csv.DictReader(f))
    swapped = {"negative": "positive", "positive": "negative"}
    flipped = write_csv(tmp_path / "flipped.csv", [(r["text"], swapped[r["label"]]) for r in rows])
    runs = {}
    for name, target in (("true", domains["target"]), ("flipped", flipped)):
        out = tmp_path / name
        domain_adaptation.main(adaptation_argv(tiny_text_model_dir, {**domains, "target": target}, out, "--adaptation",
                                               "self_training", "--self_training_threshold", "0.5",
                                               "--self_training_start", "0", "--num_train_epochs", "2"))
        runs[name] = out
    a, b = load_file(runs["true"] / "model.safetensors"), load_file(runs["flipped"] / "model.safetensors")
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    share = _logged(runs["true"], "pseudo_label_share")
    right, flipped_right = _logged(runs["true"], "pseudo_label_correct_share"), _logged(runs["flipped"], "pseudo_label_correct_share")
    assert len(share) == len(right) == 8 and min(share[1:]) > 0
    assert all(math.isclose(r + f, s, abs_tol=1e-6) for r, f, s in zip(right, flipped_right, share)), (right, flipped_right, share)


# --- the masked-LM objective on the target text (UDALM) ---

@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_the_masked_lm_objective_is_the_architectures_own_head_on_the_classifiers_encoder(arch):
    """The objective's term is `weight` x the loss transformers' own masked-LM model computes with the classifier's
    encoder weights and the objective's head; its decoder is the classifier's word embeddings; in the head warm-up
    no gradient of it reaches the encoder (nor the tied embeddings), after it every encoder weight gets one."""
    import transformers as T
    from conftest import tiny_config

    from hf_transfer.adaptation import TargetMaskedLM
    from hf_transfer.data.domains import MASKED_TARGET

    classifier = tiny_model(arch, seed=0)
    torch.manual_seed(1)
    objective = TargetMaskedLM(classifier, T.AutoModelForMaskedLM.from_config(tiny_config(arch)), weight=2.0,
                               warmup=lambda max_steps: 3)
    attach_objective(classifier, "mlm", objective)
    assert objective.head and not any(n.startswith(classifier.base_model_prefix) for n, _ in objective.named_parameters())
    embeddings = classifier.get_input_embeddings().weight
    assert any(p is embeddings for p in objective._runner[0].get_output_embeddings().parameters())

    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 128, (3, 9), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 6:] = 0
    labels = torch.full_like(input_ids, -100)
    labels[0, 2], labels[1, 4], labels[2, 1], labels[2, 3] = 7, 9, 11, 13
    taken = {DOMAIN: torch.tensor([0, 1, 1, 1]), **dict(zip(MASKED_TARGET, (input_ids, attention_mask, labels)))}
    outputs = classifier(input_ids=input_ids[:1])  # the classifier's own forward (only its device is read)

    reference = T.AutoModelForMaskedLM.from_config(tiny_config(arch)).eval()
    prefix = reference.base_model_prefix
    state = {f"{prefix}.{k}": v for k, v in classifier.base_model.state_dict().items()}
    state |= {k.removeprefix("head."): v for k, v in objective.state_dict().items()}
    missing, _ = reference.load_state_dict(state, strict=False)
    assert not [k for k in missing if "decoder" not in k and "vocab_projector" not in k], missing
    with torch.no_grad():
        reference.get_output_embeddings().weight.copy_(embeddings)
        expected = reference(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    classifier.eval()
    for step, warming in ((0, True), (3, False)):
        classifier.zero_grad(set_to_none=True)
        term, logged = objective.loss(taken, outputs, torch.tensor(0.0), step=step, max_steps=10)
        assert torch.allclose(term, 2.0 * expected, atol=1e-5), (term, expected)
        assert logged["mlm_head_warming"] == float(warming) and torch.isclose(logged["mlm_loss"], expected, atol=1e-5)
        term.backward()
        encoder = {n: p.grad for n, p in classifier.base_model.named_parameters()}
        reached = [n for n, grad in encoder.items() if grad is not None and grad.abs().sum() > 0]
        head = [p.grad for p in objective.parameters() if p is not embeddings]
        assert all(grad is not None and grad.abs().sum() > 0 for grad in head[:2])
        if warming:
            assert reached == [], reached
        else:
            assert embeddings.grad is not None and len(reached) > len(encoder) // 2, (len(reached), len(encoder))
    # The Trainer's autocast covers the classifier's forward only: bf16 logits there put this forward in bf16 too.
    seen = []
    decoder = objective._runner[0].get_output_embeddings()
    handle = decoder.register_forward_hook(lambda module, args, out: seen.append((out.dtype, out.shape)))
    half = type(outputs)(logits=outputs.logits.to(torch.bfloat16))
    objective.loss(taken, half, torch.tensor(0.0), step=5, max_steps=10)
    handle.remove()
    assert seen == [(torch.bfloat16, torch.Size([1, 4, 128]))], seen  # the 4 masked positions only, as one row


def test_target_masks_are_keyed_by_the_target_rows_the_seed_and_the_epoch(tmp_path):
    """The masks of the batch's target rows depend on those rows, the seed and the epoch only: the same target rows
    are masked alike behind other source rows, and differently in another epoch or with another seed; a masked
    position's label is the token it hides, every other label -100, and [CLS]/[SEP] are never masked."""
    import datasets
    from conftest import make_tokenizer
    from transformers import DataCollatorWithPadding

    from hf_transfer.data.domains import MASKED_TARGET, DomainBatchCollator
    from hf_transfer.data.mlm import RowKeyedMasking
    from hf_transfer.data.randomness import TARGET_MASK_STREAM, TrainingEpoch

    tokenizer = make_tokenizer(tmp_path / "tok")
    words = ["the", "movie", "was", "great", "and", "the", "book", "was", "bad", "and", "it", "was", "not", "good"]
    texts = [" ".join(words[i:] + words[:i]) for i in range(6)]
    target = datasets.Dataset.from_list([dict(tokenizer(t)) for t in texts])
    source = [{**tokenizer(t), "labels": i % 2} for i, t in enumerate(texts[:4])]

    def masked(sources, indices, seed=5, epoch_number=0):
        epoch = TrainingEpoch()
        epoch.set(epoch_number)
        collate = DomainBatchCollator(DataCollatorWithPadding(tokenizer), target,
                                      RowKeyedMasking(tokenizer, 0.3, seed=seed, stream=TARGET_MASK_STREAM, epoch=epoch))
        batch = collate([{**row, "target_index": [index]} for row, index in zip(sources, indices)])
        return [batch[key] for key in MASKED_TARGET]

    first = masked(source[:2], [2, 4])
    ids, attention, labels = first
    original = torch.tensor([target[2]["input_ids"], target[4]["input_ids"]])
    hidden = labels != -100
    assert hidden.any() and torch.equal(labels[hidden], original[hidden]) and torch.equal(ids[~hidden], original[~hidden])
    assert not hidden[:, 0].any() and not hidden[:, -1].any() and attention.all()
    assert (ids[hidden] == tokenizer.mask_token_id).float().mean() > 0.5  # most hidden tokens are [MASK] (80%)
    assert all(torch.equal(a, b) for a, b in zip(first, masked(source[2:], [2, 4])))
    assert not torch.equal(labels, masked(source[:2], [2, 4], epoch_number=1)[2])
    assert not torch.equal(labels, masked(source[:2], [2, 4], seed=6)[2])


def test_killed_and_resumed_masked_lm_run_equals_the_uninterrupted_run_and_saves_a_plain_classifier(
        tiny_text_model_dir, domains, tmp_path):
    """mlm with self-training (two objectives in one run), the head warm-up ending after the checkpoint the resume
    starts from: the resumed run masks, warms up and trains as the uninterrupted one, bitwise. The checkpoint keeps the
    masked-LM head; the saved classifier has none of it and loads with nothing missing or left over."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "run"
    argv = adaptation_argv(tiny_text_model_dir, domains, out, "--adaptation", "mlm+self_training", "--num_train_epochs",
                           "2", "--self_training_threshold", "0.5", "--mlm_head_warmup_steps", "4", "--mlm_probability",
                           "0.3", "--save_strategy", "steps", "--save_steps", "3", "--save_total_limit", "5")
    whole = domain_adaptation.main(argv)
    assert whole["global_step"] == 8 and whole["mlm_head_warmup_steps"] == 4 and whole["mlm_head_was_missing"]
    assert whole["adaptation_weights"] == {"mlm": 1.0, "self_training": 1.0} and whole["mlm_probability"] == 0.3
    assert _logged(out, "mlm_head_warming") == [1.0] * 4 + [0.0] * 4
    losses = _logged(out, "mlm_loss")
    assert whole["mlm_loss_first"] == losses[0] and whole["mlm_loss_at_handover"] == losses[3] and whole["mlm_loss_last"] == losses[-1]
    expected = load_file(out / "model.safetensors")
    assert not [k for k in expected if "predictions" in k or OBJECTIVES in k]
    _, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    head = load_file(out / "checkpoint-3" / OBJECTIVES_FILE)
    assert "mlm.head.cls.predictions.transform.dense.weight" in head
    _resume_after_a_kill_at_step_3(out, argv, expected)
    assert _logged(out, "mlm_loss")[-5:] == losses[-5:]


# --- choosing without target labels ---

def test_label_free_criteria_against_direct_computations():
    """Entropy as -sum p log p; the density ratio of two unit Gaussians (means 0 and 1: p_t/p_s = exp(x - 1/2)) recovered
    by the domain classifier; IWV with unit weights is the mean loss; DEV is exact where the weighted loss is a
    multiple of the weight (a constant loss c: DEV gives c whatever the weights, IWV c x mean(w))."""
    from hf_transfer.adaptation.selection import (
        density_ratio,
        dev_risk,
        importance_weighted_risk,
        prediction_entropy,
    )

    logits = np.array([[0.0, 0.0], [2.0, -1.0], [0.5, 0.2]])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert math.isclose(prediction_entropy(logits), float(np.mean(-(p * np.log(p)).sum(1))), rel_tol=1e-12)
    rng = np.random.default_rng(0)
    source, target = rng.normal(0, 1, (4000, 1)), rng.normal(1, 1, (4000, 1))
    ratio = density_ratio(source, target, seed=0)
    inner = np.abs(source[:, 0]) < 2  # where both densities have mass
    assert np.median(np.abs(np.log(ratio[inner]) - (source[inner, 0] - 0.5))) < 0.1
    losses = rng.uniform(0, 2, 50)
    assert math.isclose(importance_weighted_risk(losses, np.ones(50)), losses.mean(), rel_tol=1e-12)
    weights = rng.uniform(0.2, 3.0, 50)
    assert math.isclose(dev_risk(np.full(50, 0.7), weights), 0.7, rel_tol=1e-9)
    assert not math.isclose(importance_weighted_risk(np.full(50, 0.7), weights), 0.7, rel_tol=1e-3)


def test_a_run_reports_the_label_free_criteria_of_its_saved_model(tiny_text_model_dir, domains, tmp_path):
    """metrics.json's target prediction entropy is the saved classifier's on the diagnostic sample of target rows."""
    from transformers import AutoModelForSequenceClassification

    from hf_transfer.adaptation.selection import prediction_entropy
    from hf_transfer.tasks.domain_adaptation import _samples

    out = tmp_path / "run"
    argv = adaptation_argv(tiny_text_model_dir, domains, out, "--adaptation", "mmd", "--diagnostic_samples", "16")
    metrics = domain_adaptation.main(argv)
    assert {"target_prediction_entropy", "iwv_risk", "dev_risk"} <= metrics.keys()
    args = domain_adaptation.TASK.parse(argv)
    data = domain_adaptation.TASK.load(args)
    _, target = _samples(data, 16, args.training.seed)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    batch = data.extra["padding"]([{k: row[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in row}
                                   for row in target])
    with torch.no_grad():
        logits = model(**batch).logits.numpy()
    assert math.isclose(metrics["target_prediction_entropy"], prediction_entropy(logits), abs_tol=1e-5)
