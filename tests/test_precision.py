"""Precision and threads: `--bf16` on a CPU-only machine, the automatic choice, and what a run records."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import recipe_argv

from hf_transfer.run import launch
from recipes import sentiment

needs_cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")


@needs_cpu_only
def test_bf16_on_a_cpu_only_machine_trains_in_bfloat16_and_records_it(tiny_text_model_dir, review_files, tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.setattr(launch, "_cpu_flags", lambda: {"avx2", "fma"})  # a CPU that emulates bfloat16
    seen = []
    original = torch.autocast.__init__

    def spy(self, device_type, *args, **kwargs):  # every autocast the Trainer (through accelerate) enters
        original(self, device_type, *args, **kwargs)
        seen.append((self.device, self.fast_dtype, self._enabled))

    monkeypatch.setattr(torch.autocast, "__init__", spy)
    out = tmp_path / "out"
    results = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, "--max_steps", "2", "--bf16", "true"))
    assert ("cpu", torch.bfloat16, True) in seen
    saved = json.loads((out / "metrics.json").read_text())
    assert results["precision"] == saved["precision"] == "bf16"
    assert json.loads((out / "run.json").read_text())["options"]["bf16"] is True
    assert results["precision_reason"] is None
    notes = [line for line in capsys.readouterr().out.splitlines() if "no native bfloat16" in line]
    assert notes == ["note: " + launch.emulated_bf16_note(sentiment.TASK.parse(["--bf16", "true", "--output_dir", "x"]).training)]


@needs_cpu_only
def test_fp32_run_records_fp32_and_enters_no_bfloat16_autocast(tiny_text_model_dir, review_files, tmp_path, monkeypatch):
    seen = []
    original = torch.autocast.__init__

    def spy(self, device_type, *args, **kwargs):
        original(self, device_type, *args, **kwargs)
        seen.append((self.fast_dtype, self._enabled))

    monkeypatch.setattr(torch.autocast, "__init__", spy)
    results = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, tmp_path / "out", "--max_steps", "2"))
    assert results["precision"] == "fp32" and results["precision_reason"] is None
    assert (torch.bfloat16, True) not in seen


@pytest.mark.parametrize("flags, variable, expected", [
    ({"avx512_bf16", "avx512f"}, None, True),
    ({"amx_bf16"}, None, True),
    ({"avx512f", "avx2"}, None, False),  # AVX-512 without its BF16 extension emulates bfloat16: fp32 is faster
    ({"avx512_bf16"}, "no", True),  # what `accelerate launch` sets when nothing was asked: the recipe chooses
    ({"avx512_bf16"}, "fp16", False),  # `accelerate launch --mixed_precision fp16` asked for fp16: not bf16 too
])
@needs_cpu_only
def test_automatic_precision_follows_the_cpu_and_yields_to_the_launcher(monkeypatch, flags, variable, expected):
    monkeypatch.setattr(launch, "_cpu_flags", lambda: set(flags))
    monkeypatch.delenv("HF_TRANSFER_AUTO_BF16", raising=False)
    if variable is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", variable)
    defaults = launch.recipe_defaults()
    assert defaults.get("bf16", False) is expected
    assert defaults["use_cpu"] is True  # what lets the Trainer accept --bf16 without a GPU
    reason = launch.native_bf16()
    assert (reason is not None) is bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.mark.parametrize("flags, bf16, noted", [
    ({"avx2"}, "true", True),  # asked for, emulated: slower than fp32, said once
    ({"avx512_bf16"}, "true", False),  # native: nothing to say
    ({"avx2"}, "false", False),  # fp32: nothing to say
])
@needs_cpu_only
def test_bf16_asked_for_on_a_cpu_that_emulates_it_gets_a_note(monkeypatch, flags, bf16, noted):
    monkeypatch.setattr(launch, "_cpu_flags", lambda: set(flags))
    training = sentiment.TASK.parse(["--bf16", bf16, "--output_dir", "unused"]).training
    note = launch.emulated_bf16_note(training)
    assert (note is not None) is noted
    if noted:
        assert "--bf16 false" in note


@needs_cpu_only
def test_a_flag_or_the_variable_overrides_the_automatic_choice(monkeypatch):
    monkeypatch.setattr(launch, "_cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setenv("HF_TRANSFER_AUTO_BF16", "0")
    assert "bf16" not in launch.recipe_defaults()
    monkeypatch.delenv("HF_TRANSFER_AUTO_BF16")
    args = sentiment.TASK.parse(["--bf16", "false", "--output_dir", "unused"])
    assert args.training.bf16 is False and launch.precision(args.training) == "fp32"
    args = sentiment.TASK.parse(["--output_dir", "unused"])
    assert args.training.bf16 is True and launch.precision(args.training) == "bf16"


def test_processes_of_one_launch_share_the_cores(monkeypatch):
    before = torch.get_num_threads()
    cores = len(launch.os.sched_getaffinity(0))
    training = type("Args", (), {"use_cpu": True})()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert launch.choose_threads(training) == max(1, cores // 2)
        torch.set_num_threads(before)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's (or torchrun's) choice is kept
        assert launch.choose_threads(training) == before
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # one process keeps torch's own choice
        assert launch.choose_threads(training) == before
    finally:
        torch.set_num_threads(before)
