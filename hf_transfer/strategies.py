"""Transfer strategies as data: one validated options dataclass, and `apply_strategy` to set a model up for it.

What acts where (all read from the layer map in `layers.py`):
- freeze / feature_extraction: `requires_grad` is switched off here, before the Trainer exists, so frozen
  parameters never enter the optimizer and backward stops at the lowest trainable group.
- gradual: nothing is frozen here. `TransferTrainer` freezes by schedule once training starts, after DDP
  has registered every parameter (a parameter frozen at wrap time would never be all-reduced later).
- layer_lr_decay: optimizer parameter groups, built by `TransferTrainer.create_optimizer`.
- lora / peft: `peft.get_peft_model`, targets from the layer map's table, the head in `modules_to_save`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .errors import HfTransferError
from .layers import architecture_spec, head_module_names, layer_groups, num_blocks

STRATEGIES = ("full", "freeze", "feature_extraction", "gradual", "lora", "peft")


@dataclass
class StrategyArgs:
    strategy: str = field(
        default="full",
        metadata={
            "help": "full: train everything. freeze: freeze the embeddings and the bottom --freeze_bottom blocks. "
            "feature_extraction: train the head only. gradual: ULMFiT unfreezing, head first, one more group "
            "every --unfreeze_every units. lora: LoRA adapters via peft. peft: any peft method from --peft_config.",
            "choices": STRATEGIES,
        },
    )
    freeze_bottom: int | None = field(
        default=None, metadata={"help": "freeze: number of blocks frozen above the (always frozen) embeddings."}
    )
    unfreeze_every: int | None = field(default=None, metadata={"help": "gradual: units between unfreezings (default 1)."})
    unfreeze_unit: str | None = field(
        default=None, metadata={"help": "gradual: 'epoch' (default) or 'step'.", "choices": ("epoch", "step")}
    )
    layer_lr_decay: float = field(
        default=1.0,
        metadata={"help": "Layer-wise LR decay: each group gets this factor times the LR of the group above (1 = off)."},
    )
    lora_r: int | None = field(default=None, metadata={"help": "lora: rank (default 8)."})
    lora_alpha: int | None = field(default=None, metadata={"help": "lora: scaling alpha (default 16)."})
    lora_dropout: float | None = field(default=None, metadata={"help": "lora: dropout (default 0.1)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "lora: module names to adapt (default: the architecture's attention q/v), or all-linear "
                          "for every linear layer of the backbone (peft's shortcut)."},
    )
    peft_config: str | None = field(
        default=None, metadata={"help": "peft: path to a peft config JSON (any method, with a 'peft_type' key)."}
    )

    def __post_init__(self) -> None:
        s = self.strategy
        if s not in STRATEGIES:
            raise HfTransferError(f"unknown strategy '{s}'; choose one of {', '.join(STRATEGIES)}")
        only_for = {
            "freeze_bottom": ("freeze",),
            "unfreeze_every": ("gradual",),
            "unfreeze_unit": ("gradual",),
            "lora_r": ("lora",),
            "lora_alpha": ("lora",),
            "lora_dropout": ("lora",),
            "lora_target_modules": ("lora",),
            "peft_config": ("peft",),
        }
        for option, strategies in only_for.items():
            if getattr(self, option) is not None and s not in strategies:
                raise HfTransferError(f"--{option} applies to --strategy {strategies[0]}, not '{s}'; drop it or change the strategy")
        if s == "freeze" and (self.freeze_bottom is None or self.freeze_bottom < 0):
            raise HfTransferError("--strategy freeze needs --freeze_bottom N >= 0 (blocks frozen above the embeddings)")
        if s == "peft" and not self.peft_config:
            raise HfTransferError("--strategy peft needs --peft_config path/to/config.json")
        if s == "peft" and not Path(self.peft_config).is_file():
            raise HfTransferError(f"--peft_config {self.peft_config} does not exist; pass the path of a peft config JSON")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise HfTransferError(f"--layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.layer_lr_decay != 1.0 and s == "feature_extraction":
            raise HfTransferError("--layer_lr_decay has nothing to decay with --strategy feature_extraction (only the head trains)")
        if self.unfreeze_every is not None and self.unfreeze_every < 1:
            raise HfTransferError(f"--unfreeze_every must be >= 1, got {self.unfreeze_every}")
        if self.lora_r is not None and self.lora_r < 1:
            raise HfTransferError(f"--lora_r must be >= 1, got {self.lora_r}")

    # --- checks that need the model's config (read before any weights load) ---
    def check_config(self, config) -> None:
        """Raise if the strategy cannot work on this architecture; a `full` run needs no layer map."""
        if self.strategy == "full" and self.layer_lr_decay == 1.0:
            return
        blocks = num_blocks(config)  # raises for an architecture the layer map does not know
        if self.strategy == "freeze" and self.freeze_bottom > blocks:
            raise HfTransferError(
                f"--freeze_bottom {self.freeze_bottom} exceeds the model's {blocks} blocks; "
                "use at most that, or --strategy feature_extraction to train the head only"
            )

    @property
    def gradual_every(self) -> int:
        return self.unfreeze_every or 1

    @property
    def gradual_unit(self) -> str:
        return self.unfreeze_unit or "epoch"


def apply_strategy(model: nn.Module, args: StrategyArgs) -> nn.Module:
    """Prepare `model` for `args.strategy`; returns the model to train (a peft model for lora/peft)."""
    args.check_config(model.config)
    if args.strategy == "freeze":
        for group in layer_groups(model)[: 1 + args.freeze_bottom]:
            group.set_trainable(False)
    elif args.strategy == "feature_extraction":
        for group in layer_groups(model)[:-1]:
            group.set_trainable(False)
    elif args.strategy == "lora":
        from peft import LoraConfig

        config = LoraConfig(
            r=args.lora_r or 8,
            lora_alpha=args.lora_alpha or 16,
            lora_dropout=0.1 if args.lora_dropout is None else args.lora_dropout,
            # Empty: the layer map's defaults, filled in by _wrap_peft. peft reads the string "all-linear" as every
            # linear layer but the output one; inside a list it would be taken for a module name.
            target_modules="all-linear" if args.lora_target_modules == ["all-linear"] else args.lora_target_modules,
        )
        model = _wrap_peft(model, config)
    elif args.strategy == "peft":
        model = _wrap_peft(model, _load_peft_config(args.peft_config))
    return model


def _load_peft_config(path: str):
    from peft import get_peft_config

    try:
        return get_peft_config(json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise HfTransferError(f"--peft_config {path} is not a valid peft config ({error}); it needs a 'peft_type' key") from None


def _wrap_peft(model: nn.Module, config) -> nn.Module:
    """Apply a peft config with the layer map's defaults filled in, and the new head kept trainable.

    No `task_type` is set on purpose: with one, peft picks the head by its own name list and, for example,
    left wav2vec2's new `projector` frozen. The layer map's head goes to `modules_to_save` instead.
    """
    from peft import get_peft_model

    if hasattr(config, "target_modules") and not config.target_modules:
        config.target_modules = list(architecture_spec(model.config.model_type).lora_targets)
    if hasattr(config, "modules_to_save"):
        config.modules_to_save = sorted(set(config.modules_to_save or []) | set(head_module_names(model)))
    try:
        return get_peft_model(model, config)
    except ValueError as error:
        raise HfTransferError(f"peft could not adapt this model: {str(error).splitlines()[0]}") from None


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied parameters count once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
