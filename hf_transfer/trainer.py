"""TransferTrainer: the Trainer plus the two strategies that live inside training, layer-wise LRs and gradual unfreezing."""
from __future__ import annotations

from transformers import Trainer, TrainerCallback

from .errors import HfTransferError
from .layers import LayerGroup, layer_groups
from .strategies import StrategyArgs


def layerwise_parameter_groups(
    groups: list[LayerGroup], lr: float, decay: float, weight_decay: float, decay_names: set[str]
) -> list[dict]:
    """Optimizer parameter groups, one pair (with/without weight decay) per layer group.

    The head gets `lr`, each group below it `decay` times the group above: lr * decay ** (distance from the head).
    Frozen parameters are left out (they never enter the optimizer), except under gradual unfreezing,
    where nothing is frozen yet when the optimizer is built.
    """
    top = len(groups) - 1
    param_groups = []
    for depth, group in enumerate(groups):
        group_lr = lr * decay ** (top - depth)
        for use_decay in (True, False):
            params = [p for n, p in group.named_parameters if p.requires_grad and (n in decay_names) == use_decay]
            if params:
                param_groups.append(
                    {"params": params, "lr": group_lr, "weight_decay": weight_decay if use_decay else 0.0, "layer_group": group.name}
                )
    return param_groups


class GradualUnfreezing(TrainerCallback):
    """ULMFiT-style unfreezing: the head trains first, then one more group from the top every `every` units.

    The frozen state is a pure function of the global step, so `resume_from_checkpoint` restores it with
    nothing saved, and every process computes the same state without talking to the others.

    Trade-off (why requires_grad and not gradient masking): switching `requires_grad` off makes backward
    stop at the lowest trainable group, so early steps are cheaper. Under DDP that needs two things, both
    arranged by TransferTrainer: all parameters trainable when DDP wraps the model (it only all-reduces
    what it registered then), and `find_unused_parameters=True` (a frozen group produces no gradient; DDP
    then leaves its `.grad` as None on every rank, and AdamW skips it). Masking gradients instead would
    need neither, but would pay the full backward from the first step.
    """

    def __init__(self, every: int, unit: str):
        self.every, self.unit = every, unit
        self.groups: list[LayerGroup] = []
        self.steps_per_unit = 1
        self.unfrozen = -1  # how many groups, counted from the top, are trainable now

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        # Only what is trainable now is ever unfrozen: parameters the recipe froze on purpose (wav2vec2's
        # convolutional feature encoder, say) stay frozen whatever the schedule says.
        self.groups = [
            LayerGroup(g.name, tuple((n, p) for n, p in g.named_parameters if p.requires_grad)) for g in layer_groups(model)
        ]
        if self.unit == "epoch":
            batches = len(train_dataloader)
            self.steps_per_unit = max(batches // args.gradient_accumulation_steps, 1) * self.every
        else:
            self.steps_per_unit = self.every
        self.unfrozen = -1
        self._update(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self._update(state.global_step)

    def unfrozen_at(self, global_step: int) -> int:
        return min(1 + global_step // self.steps_per_unit, len(self.groups))

    def _update(self, global_step: int) -> None:
        wanted = self.unfrozen_at(global_step)
        if wanted != self.unfrozen:
            cut = len(self.groups) - wanted
            for i, group in enumerate(self.groups):
                group.set_trainable(i >= cut)
            self.unfrozen = wanted


class TransferTrainer(Trainer):
    """A `Trainer` that knows the transfer strategy: per-layer-group learning rates and gradual unfreezing.

    With `strategy.layer_lr_decay == 1` and no gradual schedule it is a plain `Trainer`: the optimizer
    and the training step are the stock ones.
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

    def create_optimizer(self, model=None):
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
