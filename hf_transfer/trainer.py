"""The trainer side of transfer learning: a mixin adding layer-wise LRs, gradual unfreezing, the cached frozen prefix and
resumable length-grouped batches to `Trainer` and `Seq2SeqTrainer`."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch.utils.data import RandomSampler
from transformers import Seq2SeqTrainer, Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from .errors import HfTransferError
from .layers import LayerGroup, layer_groups
from .strategies import StrategyArgs


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


class TransferTrainerMixin:
    """What a trainer needs to know of the transfer strategy: per-layer-group learning rates, gradual unfreezing and the
    cached frozen prefix (`strategy.cache_frozen_prefix`, see prefix_cache.py); and length grouping that resumes exactly.

    Mixed in before a `Trainer` class (`class X(TransferTrainerMixin, Trainer)`); it takes one more keyword,
    `strategy`. With `strategy.layer_lr_decay == 1`, no gradual schedule, no prefix cache and random batches the
    trainer is the plain one: the optimizer, the sampler and the training step are the stock ones.
    """

    def __init__(self, model=None, args=None, *, strategy: StrategyArgs | None = None, **kwargs):
        self.strategy = strategy or StrategyArgs()
        if self.strategy.strategy == "gradual" and args is not None:
            if args.ddp_find_unused_parameters is False:
                raise HfTransferError(
                    "--strategy gradual needs --ddp_find_unused_parameters True (frozen groups produce no gradient)"
                )
            # Must be set before Trainer.__init__ builds the Accelerator, which reads it.
            args.ddp_find_unused_parameters = True
        super().__init__(model, args, **kwargs)
        if self.strategy.strategy == "gradual":
            self.add_callback(GradualUnfreezing(self.strategy.gradual_every, self.strategy.gradual_unit))
        self.prefix_cache = None
        if self.strategy.cache_frozen_prefix:
            from .prefix_cache import FrozenPrefixCache, PrefixCacheCallback, PrefixCacheOptions, check_trainer

            check_trainer(self.args, self.data_collator, fsdp=getattr(self, "is_fsdp_enabled", False),
                          deepspeed=getattr(self, "is_deepspeed_enabled", False))
            self.prefix_cache = FrozenPrefixCache.attach(self.model, PrefixCacheOptions.from_strategy(self.strategy),
                                                         rank=self.args.process_index, strategy=self.strategy)
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
        if self.optimizer is None and self.strategy.layer_lr_decay != 1.0:
            opt_model = self.model if model is None else model
            param_groups = layerwise_parameter_groups(
                layer_groups(opt_model),
                lr=self.args.learning_rate,
                decay=self.strategy.layer_lr_decay,
                weight_decay=self.args.weight_decay,
                decay_names=set(self.get_decay_parameter_names(opt_model)),
            )
            if self.optimizer_cls_and_kwargs is not None:
                optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
            else:
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return super().create_optimizer(model)


class TransferTrainer(TransferTrainerMixin, Trainer):
    """`Trainer` with the transfer strategy (classification, audio, continued pre-training)."""


class Seq2SeqTransferTrainer(TransferTrainerMixin, Seq2SeqTrainer):
    """`Seq2SeqTrainer` with the transfer strategy (T5, EncoderDecoderModel; `predict_with_generate` evaluation)."""
