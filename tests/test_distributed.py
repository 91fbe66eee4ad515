"""Two CPU processes through `accelerate launch`: the recipe shards the data and reports the right loss,
gradual unfreezing keeps the ranks identical under DDP, and a domain-adversarial run trains the same model as one
process."""
import json
import math
import os
import socket
import subprocess
import sys

import pytest
from conftest import REPO, recipe_argv

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]


def free_port() -> int:
    """A port no one listens on now: the one the system gives a socket bound to port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(config: str, script, args, tmp_path):
    # A port of its own for each launch: concurrent test runs on one machine would otherwise meet on 29500.
    command = [*ACCELERATE, "--config_file", str(REPO / "accelerate_configs" / config), "--main_process_port", str(free_port()),
               str(script), *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_sentiment_recipe_on_two_cpu_processes(tiny_text_model_dir, review_files, tmp_path):
    from recipes import sentiment

    common = ["--per_device_train_batch_size", "4", "--seed", "3", "--learning_rate", "1e-3"]
    launch("cpu_2proc.yaml", REPO / "recipes" / "sentiment.py",
           recipe_argv(tiny_text_model_dir, review_files, tmp_path / "ddp", *common), tmp_path)
    two = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    # 64 rows, 4 per process, 2 processes: 8 steps. One process alone would have taken 16.
    assert two["world_size"] == 2 and two["global_step"] == 8

    # The same global batch (8) on one process sees the same examples per step, so the mean training
    # loss must agree; the doubled loss of average_tokens_across_devices=True would be off by a factor of two.
    one = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "single",
                                     *common, "--per_device_train_batch_size", "8"))
    assert one["world_size"] == 1 and one["global_step"] == 8
    assert 0.3 < two["train_loss"] < 1.0, two["train_loss"]  # a binary head starts near ln 2
    assert math.isclose(two["train_loss"], one["train_loss"], rel_tol=0.01), (two["train_loss"], one["train_loss"])


def test_gradual_unfreezing_under_ddp_keeps_ranks_identical(tmp_path):
    launch("cpu_2proc.yaml", REPO / "tests" / "ddp_gradual_worker.py", [str(tmp_path)], tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["steps"] == 8 for r in ranks)
    assert ranks[0]["digest"] == ranks[1]["digest"], "ranks diverged: an unfrozen group was not all-reduced"
    # 8 steps, one more group every 2: head, block_1, block_0, embeddings all trained by the end.
    assert ranks[0]["moved"] == ["embeddings", "block_0", "block_1", "head"]


def test_audio_classification_on_two_cpu_processes(tmp_path):
    from audio_helpers import make_label_folders, save_speech_checkpoint

    make_label_folders(tmp_path / "train", per_label=8)  # 16 clips at mixed rates, channels and formats
    make_label_folders(tmp_path / "dev", per_label=2, seed=1)
    model = save_speech_checkpoint(tmp_path / "tiny-wav2vec2")
    launch("cpu_2proc.yaml", REPO / "recipes" / "audio_classification.py", [
        "--model_name_or_path", str(model), "--train_dir", str(tmp_path / "train"),
        "--validation_dir", str(tmp_path / "dev"), "--output_dir", str(tmp_path / "out"),
        "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
        "--save_strategy", "no", "--disable_tqdm", "true"], tmp_path)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # 16 clips, 4 per process, 2 processes: 2 steps (one process alone would take 4).
    assert metrics["world_size"] == 2 and metrics["global_step"] == 2, metrics
    assert math.isfinite(metrics["train_loss"]) and (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize("method", ["dann", "self_training", "mlm"])
def test_domain_adaptation_on_two_cpu_processes_matches_one_process(tiny_text_model_dir, tmp_path, method):
    """DANN's domain head lives in the model, so DDP all-reduces it with the encoder; its reversal coefficient is a
    function of the step. Two processes at 4 + 4 rows and one at 8 see the same source and target rows per step, so
    they train the same model. Self-training selects pseudo-labels per batch, so one process takes the two batches of
    4 as gradient-accumulation steps; its mean teacher is updated once per optimizer step in both. The masked-LM
    objective masks each batch's target rows from those rows' keys: again two batches of 4 in both runs, and its
    head warm-up (a new head) is a function of the step."""
    import shutil

    from adaptation_helpers import adaptation_argv, write_domains
    from transformers import AutoConfig

    from recipes import domain_adaptation

    # Without dropout both runs are one computation (each process would otherwise draw its own masks).
    model = tmp_path / "tiny-no-dropout"
    shutil.copytree(tiny_text_model_dir, model)
    config = AutoConfig.from_pretrained(model)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(model)
    domains = write_domains(tmp_path / "domains")
    common = ["--adaptation", method, "--seed", "3", "--num_train_epochs", "2"]
    single = ["--per_device_train_batch_size", "8"]
    if method == "self_training":
        common += ["--self_training_teacher", "ema", "--self_training_ema_decay", "0.5", "--self_training_threshold",
                   "0.5", "--self_training_start", "0"]
        single = ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2"]
    if method == "mlm":
        common += ["--mlm_head_warmup_steps", "2", "--mlm_probability", "0.3"]
        single = ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2"]
    launch("cpu_2proc.yaml", REPO / "recipes" / "domain_adaptation.py",
           adaptation_argv(model, domains, tmp_path / "ddp", *common, "--per_device_train_batch_size", "4"), tmp_path)
    two = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    one = domain_adaptation.main(adaptation_argv(model, domains, tmp_path / "single", *common, *single))
    # 32 source rows, 8 a step (4 per process x 2, or 8 on one): 4 steps an epoch.
    assert two["world_size"] == 2 and one["world_size"] == 1 and two["global_step"] == one["global_step"] == 8
    if method == "dann":
        assert 1.0 < two["train_loss"] < 2.0, two["train_loss"]  # task (~ln 2) + domain loss (~ln 2)
    elif method == "mlm":  # the same masks: the same masked-LM loss at every step, warm-up and after
        losses = [[e["mlm_loss"] for e in json.loads((tmp_path / run / "log_history.json").read_text()) if "mlm_loss" in e]
                  for run in ("ddp", "single")]
        assert len(losses[0]) == 8 and all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(*losses)), losses
        assert two["mlm_head_warmup_steps"] == one["mlm_head_warmup_steps"] == 2
    else:  # every step after the first had pseudo-labels, the same in both runs
        shares = [[e["pseudo_label_share"] for e in json.loads((tmp_path / run / "log_history.json").read_text())
                   if "pseudo_label_share" in e] for run in ("ddp", "single")]
        assert shares[0] == shares[1] and min(shares[0][1:]) > 0, shares
    assert math.isclose(two["train_loss"], one["train_loss"], rel_tol=0.01), (two["train_loss"], one["train_loss"])
    assert math.isclose(two["target_accuracy"], one["target_accuracy"], abs_tol=1 / 24 + 1e-9)
    # And the saved classifiers agree to float rounding (gradients summed in another order), every weight.
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "single" / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < 1e-5, worst  # float rounding is ~2e-7 here; per-process dropout masks would give ~8e-3
