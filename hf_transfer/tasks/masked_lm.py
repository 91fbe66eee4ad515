"""The masked-LM task (continued pretraining on unlabelled text): its `load` step, the strategies it allows, and the
warm-up that trains a new masked-LM head alone before the encoder (`--mlm_head_warmup_steps`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from hf_transfer.errors import HfTransferError
from hf_transfer.run.task import Args, TaskData, mixed_precision

# Continued pretraining: gradual trains the (possibly new) masked-LM head alone first, so a random head's first
# gradients do not reach the encoder; feature_extraction would train nothing but that head, and a peft config is
# task-specific.
MASKED_LM_STRATEGIES = ("full", "lora", "freeze", "gradual")

# `auto` warm-up for a new head: a fifth of the run, at most 300 steps. Measured on MiniLM-L6 (IMDb unlabelled text,
# the encoder frozen, AdamW at 1e-4 after a 36-step learning-rate warm-up, batches of 4 x 128 tokens): the new head's
# loss fell from 10.4 (chance over the vocabulary) to 7.3 by step 100 and 7.1 by step 250, then stayed there (7.05 at
# step 400); what remains needs the encoder. 300 steps cover that fit; a fifth of a short run is most of it (the
# recipe's 600-step MiniLM config gets 120 steps) and leaves the rest of the budget to the encoder.
AUTO_WARMUP_SHARE = Fraction(1, 5)
AUTO_WARMUP_MAX_STEPS = 300

@dataclass
class MaskedLMHeadArgs:
    mlm_head_warmup_steps: str = field(
        default="auto",
        metadata={"help": "Optimizer steps at the start in which only the masked-LM head trains (the encoder frozen), "
                  f"then everything the strategy trains. auto: {AUTO_WARMUP_SHARE} of the run's steps (at most "
                  f"{AUTO_WARMUP_MAX_STEPS}) when the checkpoint has no MLM head (a sentence-embedding model), 0 when it has "
                  "one or under --strategy gradual (which trains the head alone first). 0: off."},
    )

    def __post_init__(self) -> None:
        self.mlm_head_warmup_steps = checked_warmup_steps(self.mlm_head_warmup_steps)

    @property
    def given_steps(self) -> int | None:
        """The steps given, or None for auto."""
        return None if self.mlm_head_warmup_steps == "auto" else int(self.mlm_head_warmup_steps)


def checked_warmup_steps(value) -> str:
    """--mlm_head_warmup_steps as given (a config file may give a number): a number of steps >= 0, or auto."""
    value = str(value).strip()
    if value != "auto" and not value.isdigit():
        raise HfTransferError(f"--mlm_head_warmup_steps takes a number of steps >= 0 or auto, got '{value}'")
    return value


def auto_warmup_steps(max_steps: int) -> int:
    return min(AUTO_WARMUP_MAX_STEPS, int(max_steps * AUTO_WARMUP_SHARE))  # exact: a Fraction


def head_warmup_length(args: Args, head_is_new: bool):
    """The warm-up's length as a function of the run's max_steps, or None when this run has none."""
    given = args[MaskedLMHeadArgs].given_steps
    if given is not None:
        return (lambda max_steps: given) if given else None
    if not head_is_new or args.strategy.strategy == "gradual":
        return None
    return auto_warmup_steps


def load_masked_lm_task(args: Args) -> TaskData:
    """Masked-LM continued pretraining: unlabelled text in blocks (or lines), masked on the fly; perplexity is the metric."""
    from hf_transfer.data.mlm import (
        MaskedLMCollator,
        MaskedLMDataArgs,
        load_masked_lm_data,
    )
    from hf_transfer.data.randomness import TrainingEpoch
    from hf_transfer.models.loading import load_config, load_tokenizer

    if args.model.from_scratch:
        raise HfTransferError("--from_scratch makes no sense for continued pretraining: it continues from pretrained weights")
    if args.strategy.strategy not in MASKED_LM_STRATEGIES:
        raise HfTransferError(
            f"--strategy {args.strategy.strategy} is not offered for continued pretraining; use {', '.join(MASKED_LM_STRATEGIES)}"
        )
    check_head_warmup(args)
    data_args = args[MaskedLMDataArgs]
    config = load_config(args.model)
    args.strategy.check_config(config)
    tokenizer = load_tokenizer(args.model)
    data = load_masked_lm_data(data_args, tokenizer, seed=args.training.seed)
    epoch = TrainingEpoch()  # keys each training row's masks (hf_transfer/data/randomness.py)
    return TaskData(
        datasets=data.datasets,
        collator=MaskedLMCollator(tokenizer, data_args, pad_to_multiple_of=8 if mixed_precision(args.training) else None,
                                  seed=args.training.seed, epoch=epoch),
        processing_class=tokenizer,
        config=config,
        report={"train_blocks": len(data.datasets["train"]), "dropped_empty_texts": data.dropped_empty},
        eval_splits=(),  # perplexity before and after is measured by the recipe's own hooks
        extra={"train_tokens": data.train_tokens},
        callbacks=[epoch],
    )


# --- the head warm-up (hf_transfer.trainer.HeadWarmup) ---

def check_head_warmup(args: Args) -> None:
    warmup = args[MaskedLMHeadArgs]
    if warmup.given_steps and args.strategy.strategy == "gradual":
        raise HfTransferError("--strategy gradual already trains the head alone first (for --unfreeze_every units); "
                              "drop --mlm_head_warmup_steps or use another strategy")
    if warmup.given_steps != 0 and args.training.ddp_find_unused_parameters is False:
        raise HfTransferError("the MLM head warm-up needs --ddp_find_unused_parameters True (the frozen encoder gives no "
                              "gradient); drop that flag or pass --mlm_head_warmup_steps 0")


def build_masked_lm_trainer(args: Args, data: TaskData, kwargs: dict):
    """The masked-LM trainer (a `Task.build_trainer`), with the head warm-up when this run has one."""
    from hf_transfer.trainer import HeadWarmup, TransferTrainer

    length = head_warmup_length(args, data.extra["mlm_head_was_missing"])
    if length is None:
        return TransferTrainer(**kwargs)
    # Under DDP the encoder's parameters give no gradient while frozen; DDP must know before the Trainer builds it.
    kwargs["args"].ddp_find_unused_parameters = True
    return TransferTrainer(**{**kwargs, "callbacks": [*(kwargs["callbacks"] or []), HeadWarmup(length)]})


def head_warmup_report(trainer) -> dict:
    """metrics.json's record of the warm-up: its steps, the head's training loss at the hand-over and its seconds in
    this process (None when the run resumed after the hand-over)."""
    from hf_transfer.trainer import HeadWarmup

    warmup = next((c for c in trainer.callback_handler.callbacks if isinstance(c, HeadWarmup)), None)
    if warmup is None or not warmup.steps:
        return {"mlm_head_warmup_steps": 0, "mlm_head_warmup_loss": None, "mlm_head_warmup_seconds": None}
    return {
        "mlm_head_warmup_steps": warmup.steps,
        "mlm_head_warmup_loss": warmup.handover_loss(trainer.state.log_history),
        "mlm_head_warmup_seconds": None if warmup.seconds is None else round(warmup.seconds, 2),
    }


def describe_head_warmup(results: dict) -> str:
    """The warm-up in a few words, from a run's metrics (the run summary, dapt's report)."""
    steps = results.get("mlm_head_warmup_steps", 0)
    if not steps:
        return "none"
    loss, seconds = results.get("mlm_head_warmup_loss"), results.get("mlm_head_warmup_seconds")
    spent = f"{seconds:.1f} s" if seconds is not None else "ended before the resume"
    at_handover = f", MLM loss {loss:.4f} at the hand-over" if loss is not None else ""
    return f"{steps} steps, head alone ({spent}){at_handover}"


def head_warmup_summary(results: dict) -> list[str]:
    return [f"{'mlm head warm-up':<36} {describe_head_warmup(results)}"]


def head_warmup_card_notes(args: Args, results: dict) -> dict[str, list[str]]:
    steps = results.get("mlm_head_warmup_steps", 0)
    if not steps:
        return {}
    new = " (new: the checkpoint had none)" if results.get("mlm_head_was_missing") else ""
    return {"model": [(f"The masked-LM head{new} trained alone for the first {steps} optimizer steps, the encoder frozen; "
                       "then everything the strategy trains joined it, so a random head's first gradients did not reach "
                       "the pretrained weights.")]}
