"""One output folder, one run: reuse is refused or replaced cleanly, resume takes only a complete checkpoint of the same run."""
import json

import pytest
from conftest import recipe_argv, review_rows, write_csv

from hf_transfer import HfTransferError
from recipes import sentiment


def _saving(*extra):
    return ["--save_strategy", "steps", "--save_steps", "4", "--save_total_limit", "5", *extra]


def test_a_folder_holding_a_run_is_refused_and_left_as_it_was(tiny_text_model_dir, review_files, tmp_path):
    out = tmp_path / "out"
    sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(HfTransferError, match="already holds a run .*--overwrite_output_dir"):
        sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out))
    # A bad input with --overwrite_output_dir must not clear the earlier run either: the input is checked first.
    with pytest.raises(HfTransferError, match="does not exist"):
        sentiment.main(recipe_argv(tiny_text_model_dir, {**review_files, "train": tmp_path / "nope.csv"}, out,
                                   "--overwrite_output_dir", "true"))
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_overwriting_a_lora_run_with_a_full_run_leaves_no_stale_adapter(tiny_text_model_dir, review_files, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "out"
    sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, "--strategy", "lora", "--lora_r", "2"))
    assert (out / "adapter_config.json").is_file()
    sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, "--overwrite_output_dir", "true", "--learning_rate", "1e-2"))
    assert not list(out.glob("adapter_*")), "the LoRA run's adapter was left beside the new weights"
    # The folder loads as exactly the model the full run saved (a stale adapter would change the logits).
    from safetensors.torch import load_file

    model = AutoModelForSequenceClassification.from_pretrained(out)
    saved = load_file(out / "model.safetensors")
    for name, tensor in model.state_dict().items():
        if name in saved:
            assert torch.equal(tensor, saved[name]), name
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model(**tokenizer(["the movie was great"], return_tensors="pt")).logits.shape == (1, 2)


def test_resume_refuses_a_checkpoint_of_another_run(tiny_text_model_dir, review_files, tmp_path):
    out = tmp_path / "out"
    sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, *_saving()))
    other = write_csv(tmp_path / "other.csv", review_rows(64, seed=9))
    with pytest.raises(HfTransferError, match=r"belong to another run \(it differs in: .*train_file \(content\)"):
        sentiment.main(recipe_argv(tiny_text_model_dir, {**review_files, "train": other}, out, *_saving(),
                                   "--resume_from_checkpoint", "last"))
    with pytest.raises(HfTransferError, match=r"differs in: learning_rate"):
        sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, *_saving(), "--learning_rate", "0.5",
                                   "--resume_from_checkpoint", "last"))


def test_resume_skips_a_checkpoint_cut_off_during_its_save(tiny_text_model_dir, review_files, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    argv = recipe_argv(tiny_text_model_dir, review_files, out, *_saving(), "--num_train_epochs", "2")
    whole = sentiment.main(argv)
    assert whole["global_step"] == 16
    # What a kill during the save of checkpoint-16 leaves behind: its config and a temporary weights file (and no
    # metrics.json: the run never reached its end).
    (out / "metrics.json").unlink()
    shutil.rmtree(out / "checkpoint-16")
    partial = out / "checkpoint-16"
    partial.mkdir()
    (partial / "config.json").write_text((out / "checkpoint-12" / "config.json").read_text())
    (partial / "model.safetensors.tmp").write_bytes(b"\0" * 64)
    capsys.readouterr()

    resumed = sentiment.main(argv + ["--resume_from_checkpoint", "last"])
    printed = capsys.readouterr().out
    assert "starts from random weights" not in printed  # the head comes from the checkpoint, and the note says so
    assert "come from checkpoint-12, which this run resumes" in printed
    assert "removed checkpoint-16: it was not completely written (no trainer state, no weights, temporary files of an unfinished write)" in printed
    # The resumed run saved step 16 again: a whole checkpoint, with nothing of the cut-off one left.
    assert (partial / "trainer_state.json").is_file() and not (partial / "model.safetensors.tmp").exists()
    assert resumed["resumed_from_step"] == 12 and resumed["global_step"] == 16
    # The resumed run's loss covers steps 13-16 only, so it is not reported under the whole run's name.
    assert "train_loss" not in resumed and resumed["train_loss_since_resume"] > 0
    logged = [e["loss"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e and e["step"] > 12]
    assert resumed["train_loss_since_resume"] == pytest.approx(sum(logged) / len(logged), rel=1e-4)
    # Same run, resumed: the final weights equal the uninterrupted run's accuracy-wise.
    assert resumed["validation_accuracy"] == whole["validation_accuracy"]


def test_gradual_unfreezing_that_never_reaches_the_body_is_reported_as_such(tiny_text_model_dir, review_files, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from hf_transfer import layer_groups

    out = tmp_path / "out"
    # The default unit is an epoch: in a one-epoch run only the head can train.
    metrics = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, "--strategy", "gradual"))
    printed = capsys.readouterr().out
    assert "reaches only the top 1 of 4 levels" in printed and "block_0" in printed
    model = AutoModelForSequenceClassification.from_pretrained(out)
    head = layer_groups(model)[-1]
    assert metrics["trainable_parameters"] == head.numel() < metrics["total_parameters"]
    # Independently: the body's saved weights are the pretrained ones, bit for bit.
    pretrained = load_file(tiny_text_model_dir / "model.safetensors")
    for name, tensor in model.bert.encoder.state_dict().items():
        assert torch.equal(tensor, pretrained[f"encoder.{name}"]), name


def test_sharded_fsdp_state_dict_is_refused_before_training(tiny_text_model_dir, review_files, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT")
    with pytest.raises(HfTransferError, match="FULL_STATE_DICT"):
        sentiment.main(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_push_to_hub_offline_is_refused_before_training(tiny_text_model_dir, review_files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HfTransferError, match="--push_to_hub needs the Hub"):
        sentiment.main(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "out", "--push_to_hub", "true",
                                   "--hub_model_id", "me/model"))
    assert not (tmp_path / "out").exists()


def test_a_causal_checkpoint_without_a_pad_token_trains_padding_with_eos(review_files, tmp_path, capsys):
    from conftest import NEGATIVE, NOUNS, POSITIVE
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    folder = tmp_path / "gpt2"
    words = ["<|endoftext|>", "<unk>"] + sorted(set(POSITIVE + NEGATIVE + NOUNS + ["the", "was", "and"]))
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", unk_token="<unk>")
    assert tokenizer.pad_token is None
    tokenizer.save_pretrained(folder)
    GPT2Model(GPT2Config(vocab_size=len(words), n_layer=1, n_embd=32, n_head=2, n_positions=64)).save_pretrained(folder)

    out = tmp_path / "out"
    metrics = sentiment.main(recipe_argv(folder, review_files, out, "--strategy", "full"))
    assert "padding with its end-of-text token" in capsys.readouterr().out
    assert metrics["global_step"] == 8
    assert json.loads((out / "config.json").read_text())["pad_token_id"] == 0


# ---------------------------------------------------------------------------------------------------------
# one run per folder, and faults of the folder itself

def test_a_second_run_into_a_folder_in_use_is_refused_and_a_dead_runs_lock_is_taken_over(tiny_text_model_dir, review_files,
                                                                                          tmp_path, capsys):
    import os
    import socket
    import subprocess
    import sys

    from hf_transfer.run.outputs import LOCK_FILE, RunLock

    out = tmp_path / "out"
    with RunLock(out):  # a run in progress holds the folder
        with pytest.raises(HfTransferError, match=rf"another run \(process {os.getpid()} on .*\) is writing to"):
            sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out))
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the refused run wrote nothing
    assert not out.exists()  # released, and the folder it created for nothing removed

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0}))
    capsys.readouterr()
    results = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out))
    assert "left by a run that is no longer running" in capsys.readouterr().out
    assert results["global_step"] > 0 and not (out / LOCK_FILE).exists()


def test_a_restart_loop_passing_last_from_the_first_launch_on_starts_at_step_zero(tiny_text_model_dir, review_files,
                                                                                 tmp_path, capsys):
    plain = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "plain", *_saving()))
    out = tmp_path / "out"
    argv = recipe_argv(tiny_text_model_dir, review_files, out, *_saving(), "--resume_from_checkpoint", "last")
    capsys.readouterr()
    first = sentiment.main(argv)  # an empty folder
    assert "no complete checkpoint in" in capsys.readouterr().out
    assert first["global_step"] == plain["global_step"] and first["validation_accuracy"] == plain["validation_accuracy"]

    # Killed during its first checkpoint: run.json and a checkpoint without trainer state. The same loop goes on.
    killed = tmp_path / "killed"
    sentiment.main(recipe_argv(tiny_text_model_dir, review_files, killed, *_saving()))
    for path in killed.iterdir():
        if path.name not in ("run.json", "checkpoint-4"):
            __import__("shutil").rmtree(path) if path.is_dir() else path.unlink()
    (killed / "checkpoint-4" / "trainer_state.json").unlink()
    capsys.readouterr()
    again = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, killed, *_saving(), "--resume_from_checkpoint", "last"))
    printed = capsys.readouterr().out
    assert "removed checkpoint-4: it was not completely written (no trainer state)" in printed
    assert "starting from step 0" in printed
    assert again["validation_accuracy"] == plain["validation_accuracy"] and "train_loss" in again


def test_resuming_a_finished_run_changes_nothing(tiny_text_model_dir, review_files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = recipe_argv(tiny_text_model_dir, review_files, out, *_saving())
    finished = sentiment.main(argv)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    again = sentiment.main(argv + ["--resume_from_checkpoint", "last"])
    assert "finished already: nothing to resume" in capsys.readouterr().out
    assert again == json.loads(before["metrics.json"]) and again["train_loss"] == finished["train_loss"]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_an_output_dir_that_is_a_file_or_not_writable_is_one_line_before_any_model_loads(tiny_text_model_dir, review_files,
                                                                                        tmp_path, monkeypatch):
    import os

    from hf_transfer.models import loading

    loaded = []
    monkeypatch.setattr(loading, "load_pretrained", lambda *a, **k: loaded.append(a))
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    with pytest.raises(HfTransferError, match=r"--output_dir .*taken is a file, not a folder"):
        sentiment.main(recipe_argv(tiny_text_model_dir, review_files, a_file))
    assert a_file.read_text() == "not a folder"

    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).startswith(str(tmp_path / "locked")) and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    (tmp_path / "locked").mkdir()
    with pytest.raises(HfTransferError, match=r"cannot write to --output_dir .*locked \(Permission denied\)"):
        sentiment.main(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "locked"))
    assert loaded == [] and list((tmp_path / "locked").iterdir()) == []


def test_a_full_disk_during_a_checkpoint_is_one_line_and_the_folder_resumes(tiny_text_model_dir, review_files, tmp_path, monkeypatch):
    import errno

    from transformers import Trainer

    out = tmp_path / "out"
    argv = recipe_argv(tiny_text_model_dir, review_files, out, *_saving())
    whole = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "whole", *_saving()))
    real_save = Trainer._save_checkpoint

    def fills_the_disk_at_step_8(self, *args, **kwargs):
        if self.state.global_step == 8:
            partial = out / "checkpoint-8"
            partial.mkdir()
            (partial / "model.safetensors").write_bytes(b"\0" * 16)  # a truncated weights file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_save_checkpoint", fills_the_disk_at_step_8)
    with pytest.raises(HfTransferError, match=r"writing to .*out failed \(No space left on device\); .*--resume_from_checkpoint last"):
        sentiment.main(argv)
    monkeypatch.setattr(Trainer, "_save_checkpoint", real_save)
    resumed = sentiment.main(argv + ["--resume_from_checkpoint", "last"])
    assert resumed["resumed_from_step"] == 4 and resumed["validation_accuracy"] == whole["validation_accuracy"]


@pytest.mark.parametrize("flags", [
    ["--strategy", "full"],
    ["--strategy", "freeze", "--freeze_bottom", "1"],
    ["--strategy", "gradual", "--unfreeze_every", "3", "--unfreeze_unit", "step"],
    ["--strategy", "lora", "--lora_r", "2"],
    ["--layer_lr_decay", "0.8"],
], ids=["full", "freeze", "gradual", "lora", "llrd"])
def test_resume_from_the_checkpoint_before_an_epoch_end_evaluation_is_exact(tiny_text_model_dir, review_files, tmp_path, flags):
    """Evaluation each epoch (the default) and a checkpoint at the epoch's last step: the run resumed from it trains
    bitwise like the uninterrupted one, which evaluated right after saving that checkpoint."""
    import shutil

    from safetensors.torch import load_file

    argv = lambda out: recipe_argv(tiny_text_model_dir, review_files, out, *_saving(), "--num_train_epochs", "2",
                                   "--eval_strategy", "epoch", *flags)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    sentiment.main(argv(whole))
    sentiment.main(argv(cut))
    # What a kill right after checkpoint-8 (the end of epoch 1: 64 rows, batches of 8) leaves behind.
    for path in cut.iterdir():
        if path.name not in ("run.json", "checkpoint-4", "checkpoint-8"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    resumed = sentiment.main(argv(cut) + ["--resume_from_checkpoint", "last"])
    assert resumed["resumed_from_step"] == 8
    weights = sorted(p.name for p in whole.glob("*.safetensors"))
    for name in weights:
        expected, got = load_file(whole / name), load_file(cut / name)
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch_equal(expected[key], got[key]), f"{name}:{key}"


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)
