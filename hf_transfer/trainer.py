"""The trainer side of transfer learning: a mixin adding layer-wise LRs, gradual unfreezing, the cached frozen prefix,
resumable length-grouped batches, checkpoints read back under the model's own weight names and extra objectives (losses
added to the task's) to `Trainer` and `Seq2SeqTrainer`; and `HeadWarmup`, a callback that trains a new head alone first."""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import RandomSampler
from transformers import PreTrainedModel, Seq2SeqTrainer, Trainer, TrainerCallback
from transformers.trainer_pt_utils import (
    LengthGroupedSampler,
    get_length_grouped_indices,
)

from hf_transfer.checkpoint_weights import has_model_weights, load_model_weights
from hf_transfer.errors import HfTransferError
from hf_transfer.layers import LayerGroup, layer_groups, unwrap_model
from hf_transfer.prefix_cache import (
    FrozenPrefixCache,
    PrefixCacheOptions,
    check_trainer,
    find_prefix,
)
from hf_transfer.strategies import StrategyArgs, frozen_groups

logger = logging.getLogger(__name__)


def layerwise_parameter_groups(
    groups: list[LayerGroup], lr: float, decay: float, weight_decay: float, decay_names: set[str]
) -> list[dict]:
    """Optimizer parameter groups, one pair (with/without weight decay) per layer group.

    A group gets `lr * decay ** depth_from_top`: the head `lr`, the top block of every stack `lr * decay`,
    and so on down each stack, so an encoder and a decoder each decay from their own top (see layers.py).
    Frozen parameters are left out (they never enter the optimizer), except under gradual unfreezing,
    where nothing is frozen yet when the optimizer is built.
    """
    param_groups = []
    for group in groups:
        group_lr = lr * decay ** group.depth_from_top
        for use_decay in (True, False):
            params = [p for n, p in group.named_parameters if p.requires_grad and (n in decay_names) == use_decay]
            if params:
                param_groups.append(
                    {"params": params, "lr": group_lr, "weight_decay": weight_decay if use_decay else 0.0, "layer_group": group.name}
                )
    return param_groups


def objective_parameter_groups(param_groups: list[dict], model: nn.Module) -> list[dict]:
    """`param_groups` with each objective's parameters (DANN's domain head) moved to groups of their own at the
    objective's `lr_multiplier` times the group's learning rate."""
    multiplier = {id(p): o.lr_multiplier for o in model_objectives(model).values() for p in o.parameters()}
    out = []
    for group in param_groups:
        own = [p for p in group["params"] if multiplier.get(id(p), 1.0) == 1.0]
        if own:
            out.append({**group, "params": own})
        for factor in sorted({multiplier.get(id(p), 1.0) for p in group["params"]} - {1.0}):
            moved = [p for p in group["params"] if multiplier.get(id(p)) == factor]
            out.append({**group, "params": moved, "lr": group["lr"] * factor, "objective_lr_multiplier": factor})
    return out


class GradualUnfreezing(TrainerCallback):
    """ULMFiT-style unfreezing by `depth_from_top`: the head trains first, then every `every` units one more
    level: the top block of every stack together, then the next, ..., the embeddings last.

    The frozen state is a pure function of the global step, so `resume_from_checkpoint` restores it with
    nothing saved, and every process computes the same state without talking to the others.

    Trade-off (why requires_grad and not gradient masking): switching `requires_grad` off makes backward
    stop at the lowest trainable group, so early steps are cheaper. Under DDP that needs two things, both
    arranged by TransferTrainerMixin: all parameters trainable when DDP wraps the model (it only all-reduces
    what it registered then), and `find_unused_parameters=True` (a frozen group produces no gradient; DDP
    then leaves its `.grad` as None on every rank, and AdamW skips it). Masking gradients instead would
    need neither, but would pay the full backward from the first step.
    """

    def __init__(self, every: int, unit: str):
        self.every, self.unit = every, unit
        self.groups: list[LayerGroup] = []
        self.levels = 1  # distinct depths from the top: head, one per block depth, embeddings
        self.steps_per_unit = 1
        self.unfrozen = -1  # how many levels, counted from the top (the head is level 0), are trainable now
        self.deepest_reached = 0  # the most levels trainable at any step so far

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        for group in self.groups:  # a second train() starts from what the first one found, not what it froze
            group.set_trainable(True)
        # Only what is trainable now is ever unfrozen: parameters the recipe froze on purpose (wav2vec2's
        # convolutional feature encoder, say) stay frozen whatever the schedule says.
        self.groups = [
            replace(g, named_parameters=tuple((n, p) for n, p in g.named_parameters if p.requires_grad))
            for g in layer_groups(model)
        ]
        self.levels = 1 + max(g.depth_from_top for g in self.groups)
        if self.unit == "epoch":
            batches = len(train_dataloader)
            self.steps_per_unit = max(batches // args.gradient_accumulation_steps, 1) * self.every
        else:
            self.steps_per_unit = self.every
        self.unfrozen = -1
        self.deepest_reached = 0
        self._update(state.global_step)
        max_steps = getattr(state, "max_steps", 0)  # 0: unknown (a callback driven by hand)
        reachable = self.unfrozen_at(max(max_steps - 1, 0)) if max_steps else self.levels
        if reachable < self.levels:
            below = [g.name for g in self.groups if g.depth_from_top >= reachable]
            print(f"note: gradual unfreezing reaches only the top {reachable} of {self.levels} levels in this run's "
                  f"{max_steps} steps (one more every {self.steps_per_unit} steps); {', '.join(below)} will never "
                  "train. Use --unfreeze_unit step with a smaller --unfreeze_every, or train longer.", flush=True)

    def trained_groups(self) -> list[LayerGroup]:
        """The groups that were trainable at some step of this run (the summary reports these, not all groups)."""
        return [g for g in self.groups if g.depth_from_top < self.deepest_reached]

    def on_step_begin(self, args, state, control, **kwargs):
        self._update(state.global_step)

    def unfrozen_at(self, global_step: int) -> int:
        """How many levels from the top are trainable at `global_step` (1: the head only)."""
        return min(1 + global_step // self.steps_per_unit, self.levels)

    def _update(self, global_step: int) -> None:
        wanted = self.unfrozen_at(global_step)
        if wanted != self.unfrozen:
            for group in self.groups:
                group.set_trainable(group.depth_from_top < wanted)
            self.unfrozen = wanted
            self.deepest_reached = max(self.deepest_reached, wanted)


class HeadWarmup(TrainerCallback):
    """The head trains alone for the first optimizer steps, then everything the strategy trains does.

    For a head that starts random (a sentence-embedding checkpoint has no masked-LM head): its first gradients are
    large and meaningless, and without the warm-up they go straight into the pretrained encoder. `length` gives the
    number of steps from the run's `max_steps` (known once training starts). As in `GradualUnfreezing`: the frozen
    state is a pure function of the global step (a resumed run restores it with nothing saved), `requires_grad` is
    switched (backward stops at the head, so warm-up steps are cheap), every parameter is in the optimizer from the
    start (a frozen one keeps `.grad` None and AdamW skips it: no step, no weight decay), and only what is trainable
    when training starts is switched back on, so a layer the strategy froze stays frozen. Under DDP the trainer needs
    `find_unused_parameters=True`, which the caller sets before building it.

    At the hand-over the Trainer is asked to log, so the log history holds the head's training loss at that step.
    """

    def __init__(self, length: Callable[[int], int]):
        self.length = length
        self.steps = 0
        self.encoder: list[LayerGroup] = []  # every group but the head, as far as it was trainable at the start
        self.warming = False
        self.started = 0.0
        self.seconds: float | None = None  # wall time of the warm-up in this process (None: it ended before a resume)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._set_warming(False)  # a second train() starts from what the first one found, not what it froze
        self.steps = min(self.length(state.max_steps), state.max_steps)  # it cannot outlast the run
        *below, head = layer_groups(model)
        if self.steps and not any(p.requires_grad for p in head.parameters):
            raise HfTransferError("the head has no trainable weight to warm up on its own; turn the head warm-up off")
        self.encoder = [replace(g, named_parameters=tuple((n, p) for n, p in g.named_parameters if p.requires_grad))
                        for g in below]
        self.started, self.seconds = time.perf_counter(), None
        self._set_warming(self.warming_at(state.global_step))
        if self.steps == state.max_steps and self.steps and state.is_world_process_zero:
            print(f"note: the head warm-up ({self.steps} steps) lasts the whole run of {state.max_steps} steps: only the "
                  "head trains; train longer or shorten the warm-up", flush=True)

    def warming_at(self, global_step: int) -> bool:
        """Whether the optimizer step after `global_step` trains the head alone."""
        return global_step < self.steps

    def on_step_begin(self, args, state, control, **kwargs):
        self._set_warming(self.warming_at(state.global_step))

    def on_step_end(self, args, state, control, **kwargs):
        if self.steps and state.global_step == self.steps:
            control.should_log = True  # every process decides alike: the loss is gathered over all of them
            self.seconds = time.perf_counter() - self.started

    def handover_loss(self, log_history: list[dict]) -> float | None:
        """The head's training loss logged at the hand-over (a resumed run finds it in the restored history)."""
        return next((e["loss"] for e in log_history if e.get("step") == self.steps and "loss" in e), None)

    def _set_warming(self, warming: bool) -> None:
        if warming != self.warming:
            for group in self.encoder:
                group.set_trainable(not warming)
            self.warming = warming


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """The Trainer's length grouping (`--train_sampling_strategy group_by_length`) with an order that is a function of
    (seed, epoch), as accelerate's seedable random sampler is for random batches.

    The Trainer's own `LengthGroupedSampler` draws its order from the global RNG when an epoch starts, so a run resumed
    in the middle of an epoch (a fresh process: another RNG state at that moment) skipped the right number of batches
    of a different order: some examples were seen twice in that epoch and others never. Here the resumed epoch has the
    uninterrupted run's order, and every rank draws the same order without synchronising anything.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer (through accelerate) before each epoch
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def pads_to_fixed_length(collator) -> bool:
    """Whether a collator pads every batch to one length (`--pad_to_max_length`): length grouping then saves nothing."""
    padding = getattr(collator, "padding", None)
    return str(getattr(padding, "value", padding)) == "max_length"


def _column_lengths(dataset, length_column: str, input_name: str | None) -> list[int] | None:
    """Example lengths read column-wise from a `datasets.Dataset` (the Trainer reads them row by row: seconds on 67k rows)."""
    names = getattr(dataset, "column_names", None) or []
    if length_column in names:
        return [int(n) for n in dataset[length_column]]
    if (input_name or "input_ids") in names:
        return [len(x) for x in dataset[input_name or "input_ids"]]
    return None


# ---------------------------------------------------------------------------------------------------------------
# Objectives: extra losses a task adds to the trainer (domain-adversarial, CORAL, MMD: hf_transfer/adaptation/)
# ---------------------------------------------------------------------------------------------------------------

OBJECTIVES = "transfer_objectives"  # attribute of the (unwrapped) transformers model holding its objectives
OBJECTIVES_FILE = "objectives.safetensors"  # an objective's weights and buffers inside a checkpoint folder


class Objective(nn.Module):
    """An extra loss that the trainer adds to the task loss, owning its modules and what it logs.

    It lives inside the model (`attach_objective`), so its parameters join the optimizer, the layer map's head group
    and DDP's gradient all-reduce with nothing else to arrange; the model's `save_pretrained` leaves them out (they
    are in its `_keys_to_ignore_on_save`), so the saved model loads for inference without them, and a checkpoint
    keeps them in `objectives.safetensors` for an exact resume. Any weight schedule must be a pure function of the
    step (`loss` gets it), as gradual unfreezing is: a resumed run and every process then compute the same value.
    """

    inputs: tuple[str, ...] = ()  # batch keys it takes: removed before the model sees the batch
    lr_multiplier: float = 1.0  # its own parameters learn at this multiple of each group's learning rate

    def during_forward(self, model, batch: dict, taken: dict):
        """A context around the model's forward (hooks that read features or set a domain); also used in evaluation."""
        return contextlib.nullcontext()

    def loss(self, taken: dict, outputs, task_loss: torch.Tensor, step: int, max_steps: int) -> tuple[torch.Tensor, dict]:
        """(the term added to the task loss, detached values to log) for one training batch."""
        raise NotImplementedError

    def saving(self, model, final: bool):
        """A context around every save of the model (`final`: the run's output, not a checkpoint)."""
        return contextlib.nullcontext()


def attach_objective(model: nn.Module, name: str, objective: Objective) -> Objective:
    """Put `objective` inside `model` (under `transfer_objectives.<name>`), left out of what `save_pretrained` writes."""
    inner = unwrap_model(model)
    holder = getattr(inner, OBJECTIVES, None)
    if holder is None:
        holder = nn.ModuleDict()
        inner.add_module(OBJECTIVES, holder)
    holder[name] = objective
    ignored = set(getattr(inner, "_keys_to_ignore_on_save", None) or ())
    inner._keys_to_ignore_on_save = ignored | {f"{OBJECTIVES}.{key}" for key in holder.state_dict()}
    return objective


def model_objectives(model: nn.Module) -> dict[str, Objective]:
    holder = getattr(unwrap_model(model), OBJECTIVES, None)
    return dict(holder.items()) if holder is not None else {}


def save_objectives(model: nn.Module, folder: str) -> None:
    from safetensors.torch import save_model

    # safetensors' save_model writes a tensor two names share once (a masked-LM head's tied bias); load_model restores both.
    save_model(getattr(unwrap_model(model), OBJECTIVES), str(Path(folder) / OBJECTIVES_FILE))


def load_objectives(model: nn.Module, folder: str) -> None:
    from safetensors.torch import load_model

    path = Path(folder) / OBJECTIVES_FILE
    if not path.is_file():
        raise HfTransferError(f"checkpoint {folder} has no {OBJECTIVES_FILE}: it was not written by a run with these "
                              "objectives; resume with the options it was made with")
    load_model(getattr(unwrap_model(model), OBJECTIVES), str(path))


def has_objective_weights(model) -> bool:
    return any(True for objective in model_objectives(model).values() for _ in objective.parameters())


def prefix_cache_options(strategy: StrategyArgs) -> PrefixCacheOptions:
    """The prefix cache's options as the strategy gives them (an option left unset keeps the cache's default)."""
    given = {"max_memory_mb": strategy.prefix_cache_max_memory_mb, "dtype": strategy.prefix_cache_dtype}
    return PrefixCacheOptions(**{name: value for name, value in given.items() if value is not None})


def strategy_frozen_blocks(model, strategy: StrategyArgs) -> int:
    """How many blocks the strategy froze (the prefix cache's encoders have one stack): the cache refuses a trainable
    parameter among them."""
    return sum(1 for group in frozen_groups(layer_groups(model), strategy) if group.stack is not None)


class PrefixCacheCallback(TrainerCallback):
    """Says what the prefix cache stores when training starts, and what it did when training ends (main process)."""

    def __init__(self, cache: FrozenPrefixCache):
        self.cache = cache

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            options = self.cache.options
            logger.info("prefix cache: %s run once per example (eval mode), stored as %s up to %g MB in memory, beyond "
                        "that recomputed", self.cache.layout.describe(), options.dtype, options.max_memory_mb)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            print(self.cache.stats.summary(), flush=True)


def check_setup(model, args, strategy: StrategyArgs, collator=None) -> None:
    """The set-ups a transfer trainer refuses, checked without building one: `run_task` calls this before a run's first
    write, so that a run which cannot start leaves the output folder (and an earlier run in it) as it was."""
    if args is None or model is None:
        return
    if strategy.strategy == "gradual":
        if has_objective_weights(model) and args.world_size > 1:
            raise HfTransferError("an objective with its own weights (dann's domain head) does not combine with "
                                  "--strategy gradual on several processes; use another strategy or one process")
        if args.ddp_find_unused_parameters is False:
            raise HfTransferError("--strategy gradual needs --ddp_find_unused_parameters True (frozen groups produce no gradient)")
    if strategy.cache_frozen_prefix:
        check_trainer(args, collator)
        find_prefix(model, strategy_frozen_blocks(model, strategy))


@contextlib.contextmanager
def random_state_kept():
    """Run a block without moving Python's, NumPy's or torch's (CPU and every GPU) random generators."""
    import random

    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


class TransferTrainerMixin:
    """What a trainer needs to know of the transfer strategy: per-layer-group learning rates, gradual unfreezing and the
    cached frozen prefix (`strategy.cache_frozen_prefix`, see prefix_cache.py); length grouping that resumes exactly;
    checkpoints (resume, the best model) read as `from_pretrained` maps them (checkpoint_weights.py); and the model's
    objectives (`Objective`): extra losses added to the task loss, each term logged beside `loss`.

    Mixed in before a `Trainer` class (`class X(TransferTrainerMixin, Trainer)`); it takes one more keyword,
    `strategy`. With `strategy.layer_lr_decay == 1`, no gradual schedule, no prefix cache and random batches the
    trainer is the plain one: the optimizer, the sampler and the training step are the stock ones.
    """

    def __init__(self, model=None, args=None, *, strategy: StrategyArgs | None = None, **kwargs):
        self.strategy = strategy or StrategyArgs()
        check_setup(model, args, self.strategy, kwargs.get("data_collator"))
        if args is not None and model is not None and has_objective_weights(model) and self.strategy.strategy != "gradual":
            # An objective's modules (DANN's domain head) run after the model's forward. DDP's search for unused
            # parameters walks the graph from the forward's outputs only, would mark them unused, and then fail when
            # their gradients arrive; without the search they are all-reduced like any parameter.
            args.ddp_find_unused_parameters = False
        if self.strategy.strategy == "gradual" and args is not None:
            # Must be set before Trainer.__init__ builds the Accelerator, which reads it.
            args.ddp_find_unused_parameters = True
        super().__init__(model, args, **kwargs)
        # The Trainer skips its division of the loss by the accumulation steps for a model whose forward takes
        # **kwargs, trusting it to normalise by the label count of all the accumulated batches (num_items_in_batch).
        # The classification, CTC, masked-LM and seq2seq heads trained here take **kwargs but compute a plain mean, so
        # the loss, and the gradient that clipping sees, came out multiplied by --gradient_accumulation_steps. Each
        # batch's mean divided by the steps instead: the average that N processes compute too.
        self.model_accepts_loss_kwargs = False
        self._objective_logs: dict[str, list[torch.Tensor]] = {}
        if self.strategy.strategy == "gradual":
            self.add_callback(GradualUnfreezing(self.strategy.gradual_every, self.strategy.gradual_unit))
        self.prefix_cache = None
        if self.strategy.cache_frozen_prefix:
            check_trainer(self.args, self.data_collator, fsdp=getattr(self, "is_fsdp_enabled", False),
                          deepspeed=getattr(self, "is_deepspeed_enabled", False))
            self.prefix_cache = FrozenPrefixCache.attach(self.model, prefix_cache_options(self.strategy),
                                                         strategy_frozen_blocks(self.model, self.strategy))
            self.add_callback(PrefixCacheCallback(self.prefix_cache))

    def _get_train_sampler(self, train_dataset=None):
        # Only length grouping is changed (see SeededLengthGroupedSampler); every other strategy is the Trainer's own.
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or dataset is None or not hasattr(dataset, "__len__"):
            return super()._get_train_sampler(train_dataset)
        if pads_to_fixed_length(self.data_collator):
            if not getattr(self, "_noted_fixed_padding", False):
                print("note: every batch is padded to the same length (--pad_to_max_length), so length grouping is off: "
                      "random batches", flush=True)
                self._noted_fixed_padding = True
            return RandomSampler(dataset)  # what --train_sampling_strategy random gives
        names = getattr(self.processing_class, "model_input_names", None) or [None]
        lengths = _column_lengths(dataset, self.args.length_column_name, names[0])
        if lengths is None:
            lengths = super()._get_train_sampler(train_dataset).lengths
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return SeededLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths, seed)

    def create_optimizer(self, model=None):
        # Built here rather than passed in, so that FSDP and friends still wrap the model first.
        opt_model = self.model if model is None else model
        faster_objectives = any(o.lr_multiplier != 1.0 for o in model_objectives(opt_model).values())
        if self.optimizer is None and (self.strategy.layer_lr_decay != 1.0 or faster_objectives):
            param_groups = layerwise_parameter_groups(
                layer_groups(opt_model),
                lr=self.args.learning_rate,
                decay=self.strategy.layer_lr_decay,
                weight_decay=self.args.weight_decay,
                decay_names=set(self.get_decay_parameter_names(opt_model)),
            )
            param_groups = objective_parameter_groups(param_groups, opt_model)
            if self.optimizer_cls_and_kwargs is not None:
                optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
            else:
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return super().create_optimizer(model)

    # --- objectives (see `Objective`): all a no-op for a model without any ---
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        objectives = model_objectives(model)
        if not objectives:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        wanted = {key for objective in objectives.values() for key in objective.inputs}
        taken = {key: inputs.pop(key) for key in list(inputs) if key in wanted}
        with contextlib.ExitStack() as stack:
            for objective in objectives.values():
                stack.enter_context(objective.during_forward(model, inputs, taken))
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:  # evaluation scores the task alone
            logged = {"task_loss": loss.detach()}
            for objective in objectives.values():
                term, values = objective.loss(taken, outputs, loss, self.state.global_step, self.state.max_steps)
                loss = loss + term
                logged.update(values)
            for key, value in logged.items():
                self._objective_logs.setdefault(key, []).append(torch.as_tensor(value, dtype=torch.float32).detach())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:
            self._stop_if_diverged(logs)
        # Each objective's terms beside the Trainer's `loss`: their means over the batches since the last log, over all processes.
        if self._objective_logs and "loss" in logs:
            means = torch.stack([torch.stack(v).mean() for v in self._objective_logs.values()]).to(self.args.device)
            means = self.accelerator.reduce(means, reduction="mean")
            logs = {**logs, **{k: round(float(m), 6) for k, m in zip(self._objective_logs, means)}}
            self._objective_logs = {}
        super().log(logs, *args, **kwargs)

    def _stop_if_diverged(self, logs: dict) -> None:
        """Stop a run whose trainable weights are no longer finite. The Trainer by default logs a non-finite loss as the
        mean of the finite ones (`logging_nan_inf_filter`) and keeps stepping: such a run "finishes" with NaN weights
        and chance accuracy (a wav2vec2 from scratch at lr 1e-3 in bf16 did). Every process holds the same weights, so
        all stop at the same log; the checkpoints saved before stay, for a resume with other options."""
        broken = next((name for name, p in self.model.named_parameters() if p.requires_grad
                       and not torch.isfinite(p.detach()).all()), None)
        if broken is not None:
            raise HfTransferError(
                f"training diverged by step {self.state.global_step}: weights are not finite ({broken}; gradient norm "
                f"{logs.get('grad_norm')}); lower --learning_rate, raise --warmup_steps, or train in fp32 (--bf16 false)")

    def save_model(self, output_dir=None, _internal_call=False):
        objectives = model_objectives(self.model)
        with contextlib.ExitStack() as stack:
            for objective in objectives.values():
                stack.enter_context(objective.saving(self.model, final=not _internal_call))
            super().save_model(output_dir, _internal_call)
        if objectives and _internal_call and self.args.should_save:  # a checkpoint: the objectives' state, for resume
            save_objectives(self.model, output_dir or self.args.output_dir)

    def evaluate(self, *args, **kwargs):
        # Evaluation draws from the global random generators (every DataLoader iterator takes a seed from torch's).
        # Left to shift training's random stream, it made a run resumed from a checkpoint saved before an epoch-end
        # evaluation differ from the uninterrupted run (the resumed one never repeats that evaluation): so evaluating
        # leaves every generator as it found it, and training is the same with or without evaluation.
        with random_state_kept():
            return super().evaluate(*args, **kwargs)

    # --- checkpoints read back under the model's own weight names (transformers #43701; checkpoint_weights.py) ---
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        target = self.model if model is None else model
        if self._reads_whole_model(target, resume_from_checkpoint):
            load_model_weights(target, resume_from_checkpoint)
        else:  # a peft adapter, FSDP or DeepSpeed state, .bin weights: the Trainer's own reading
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        folder = self.state.best_model_checkpoint
        if self._reads_whole_model(self.model, folder):
            logger.info("Loading best model from %s (score: %s).", folder, self.state.best_metric)
            load_model_weights(self.model, folder)
        else:
            super()._load_best_model()

    def _reads_whole_model(self, model, folder) -> bool:
        sharded = getattr(self, "is_fsdp_enabled", False) or getattr(self, "is_deepspeed_enabled", False)
        return isinstance(model, PreTrainedModel) and not sharded and folder is not None and has_model_weights(folder)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        # The Trainer restores the model and the optimizer (whose state covers the objectives' parameters); the
        # objectives' own weights and buffers are not in the saved model, so they come back from their file here.
        if model_objectives(self.model) and isinstance(resume_from_checkpoint, str):
            load_objectives(self.model, resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)


class TransferTrainer(TransferTrainerMixin, Trainer):
    """`Trainer` with the transfer strategy (classification, audio, continued pre-training)."""


class Seq2SeqTransferTrainer(TransferTrainerMixin, Seq2SeqTrainer):
    """`Seq2SeqTrainer` with the transfer strategy (T5, EncoderDecoderModel; `predict_with_generate` evaluation)."""



