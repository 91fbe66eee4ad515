"""Trainer callbacks the tests share: a run stopped at a chosen step, as a kill right after that step leaves it."""
from transformers import TrainerCallback


class KillAfter(TrainerCallback):
    """Stops training after optimizer step `step`; a checkpoint due at that step is still written first."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
