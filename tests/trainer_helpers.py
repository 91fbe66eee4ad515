"""What the resume tests share: a run stopped at a chosen step, as a kill right after that step leaves it (a trainer's
callback, or every recipe run's), the folder such a kill leaves, and the training batches a run steps on."""
import shutil

import torch
from transformers import TrainerCallback


class KillAfter(TrainerCallback):
    """Stops training after optimizer step `step`; a checkpoint due at that step is still written first."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def stop_runs_after(step: int, monkeypatch) -> None:
    """Every TransferTrainer built from now on (a recipe's too) stops right after optimizer step `step`."""
    from hf_transfer.trainer import TransferTrainer

    init = TransferTrainer.__init__

    def stopping(trainer, *args, **kwargs):
        init(trainer, *args, **kwargs)
        trainer.add_callback(KillAfter(step))

    monkeypatch.setattr(TransferTrainer, "__init__", stopping)


def keep_only_checkpoint(out, checkpoint: str) -> None:
    """What a kill right after `checkpoint` leaves behind: the run's identity and that checkpoint."""
    for path in out.iterdir():
        if path.name not in ("run.json", checkpoint):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


class BatchRecorder:
    """Records every training batch the trainer steps on (a copy of its inputs)."""

    def __init__(self, monkeypatch):
        from hf_transfer.trainer import TransferTrainer

        self.batches: list[dict] = []
        step = TransferTrainer.training_step

        def recording(trainer, model, inputs, *args, **kwargs):
            self.batches.append({k: v.detach().clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)})
            return step(trainer, model, inputs, *args, **kwargs)

        monkeypatch.setattr(TransferTrainer, "training_step", recording)

    def take(self) -> list[dict]:
        taken, self.batches = self.batches, []
        return taken


def assert_same_batches(expected: list[dict], got: list[dict]) -> None:
    assert len(expected) == len(got) and expected
    for a, b in zip(expected, got):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_same_weights(expected_file, got_file) -> None:
    """Two saved safetensors files hold the same tensors, bitwise."""
    from safetensors.torch import load_file

    expected, got = load_file(expected_file), load_file(got_file)
    assert expected.keys() == got.keys()
    differ = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not differ, differ
