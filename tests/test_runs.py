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
    # What a kill during the save of checkpoint-16 leaves behind: its config and a temporary weights file.
    shutil.rmtree(out / "checkpoint-16")
    partial = out / "checkpoint-16"
    partial.mkdir()
    (partial / "config.json").write_text((out / "checkpoint-12" / "config.json").read_text())
    (partial / "model.safetensors.tmp").write_bytes(b"\0" * 64)
    capsys.readouterr()

    resumed = sentiment.main(argv + ["--resume_from_checkpoint", "last"])
    printed = capsys.readouterr().out
    assert "skipped checkpoint-16" in printed and "temporary files removed" in printed
    assert not (partial / "model.safetensors.tmp").exists()
    assert resumed["resumed_from_step"] == 12 and resumed["global_step"] == 16
    # The resumed run's loss covers steps 13-16 only, so it is not reported under the whole run's name.
    assert "train_loss" not in resumed and resumed["train_loss_since_resume"] > 0
    logged = [e["loss"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e and e["step"] > 12]
    assert resumed["train_loss_since_resume"] == pytest.approx(sum(logged) / len(logged), rel=1e-4)
    # Same run, resumed: the final weights equal the uninterrupted run's accuracy-wise.
    assert resumed["validation_accuracy"] == whole["validation_accuracy"]
