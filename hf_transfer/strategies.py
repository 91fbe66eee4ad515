"""Transfer strategies as data: one validated options dataclass, and `apply_strategy` to set a model up for it.

What acts where (all read from the layer map in `layers.py`):
- freeze: `requires_grad` is switched off here, before the Trainer exists, so frozen parameters never
  enter the optimizer and backward stops at the lowest trainable group. It freezes the embeddings, the
  bottom `--freeze_bottom` blocks of EACH stack (encoder and decoder alike) and any whole stack named in
  `--freeze_stacks`.
- feature_extraction: the pretrained network is a fixed feature extractor. With one stack only the head
  trains. In an encoder-decoder model (T5, EncoderDecoderModel) the encoder produces the features and the
  decoder stack trains with the head: "freeze the encoder". Training only the decoder's final norm (its
  head) could not learn a new output task, so that reading would be useless.
- gradual: nothing is frozen here. `TransferTrainer` freezes by schedule once training starts, after DDP
  has registered every parameter (a parameter frozen at wrap time would never be all-reduced later).
- layer_lr_decay: optimizer parameter groups, built by `TransferTrainer.create_optimizer`.
- lora / peft: `peft.get_peft_model`, targets from the layer map's table, the head in `modules_to_save`.
- --cache_frozen_prefix (with freeze / feature_extraction): checked here, installed by `TransferTrainer` (see
  prefix_cache.py, which never imports this module): the frozen bottom runs once per example.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from hf_transfer import prefix_cache
from hf_transfer.errors import HfTransferError
from hf_transfer.layers import (
    DECODER,
    LayerGroup,
    config_spec,
    head_module_names,
    layer_groups,
    stack_depths,
    stack_groups,
    unwrap_model,
)

STRATEGIES = ("full", "freeze", "feature_extraction", "gradual", "lora", "peft")
# Why --cache_frozen_prefix does not go with a strategy: there is no prefix that stays frozen for the whole run.
_NO_FROZEN_PREFIX = {
    "full": "nothing is frozen",
    "gradual": "gradual unfreezing unfreezes the bottom layers during the run, which would make their cached outputs stale",
    "lora": "LoRA adapts every block, so no block stays frozen",
    "peft": "a peft method adapts the blocks, so no block stays frozen",
}


@dataclass
class StrategyArgs:
    strategy: str = field(
        default="full",
        metadata={
            "help": "full: train everything. freeze: freeze the embeddings, the bottom --freeze_bottom blocks of each "
            "stack and the stacks in --freeze_stacks. feature_extraction: train the head only (and the decoder "
            "stack of an encoder-decoder model: the encoder is frozen). gradual: ULMFiT unfreezing, head first, one more group "
            "every --unfreeze_every units. lora: LoRA adapters via peft. peft: any peft method from --peft_config.",
            "choices": STRATEGIES,
        },
    )
    freeze_bottom: int | None = field(
        default=None,
        metadata={"help": "freeze: number of blocks frozen above the (always frozen) embeddings, in each stack."},
    )
    freeze_stacks: list[str] | None = field(
        default=None,
        metadata={"help": "freeze: whole stacks to freeze by name, e.g. encoder (stacks: encoder; encoder and "
                          "decoder for T5 and encoder-decoder models)."},
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
    # The cached frozen prefix (hf_transfer/prefix_cache.py): options of freeze / feature_extraction.
    cache_frozen_prefix: bool = field(
        default=False,
        metadata={"help": "freeze / feature_extraction: run the frozen embeddings and bottom blocks once per example and "
                  "feed their stored output to the trainable blocks in later epochs (BERT, RoBERTa, DistilBERT). The "
                  "frozen part then always runs in eval mode (no dropout), cached or not."},
    )
    prefix_cache_max_memory_mb: float | None = field(
        default=None,
        metadata={"help": f"--cache_frozen_prefix: memory for stored states per process, in MB (default "
                  f"{prefix_cache.DEFAULT_MAX_MEMORY_MB:g}); examples beyond it are recomputed whenever they come."},
    )
    prefix_cache_dtype: str | None = field(
        default=None,
        metadata={"help": "--cache_frozen_prefix: precision of stored states: float32 (default, exact), float16 or "
                  "bfloat16 (half the memory; states are rounded, so results differ slightly from an uncached run).",
                  "choices": tuple(prefix_cache.STORAGE_DTYPES)},
    )

    def __post_init__(self) -> None:
        s = self.strategy
        if s not in STRATEGIES:
            raise HfTransferError(f"unknown strategy '{s}'; choose one of {', '.join(STRATEGIES)}")
        only_for = {
            "freeze_bottom": ("freeze",),
            "freeze_stacks": ("freeze",),
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
        if s == "freeze" and not self.freeze_stacks and self.freeze_bottom is None:
            raise HfTransferError(
                "--strategy freeze needs --freeze_bottom N >= 0 (blocks frozen above the embeddings in each stack) "
                "or --freeze_stacks NAME"
            )
        if self.freeze_bottom is not None and self.freeze_bottom < 0:
            raise HfTransferError(f"--freeze_bottom must be >= 0, got {self.freeze_bottom}")
        if s == "peft" and not self.peft_config:
            raise HfTransferError("--strategy peft needs --peft_config path/to/config.json")
        if s == "peft" and not Path(self.peft_config).is_file():
            raise HfTransferError(f"--peft_config {self.peft_config} does not exist; pass the path of a peft config JSON")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise HfTransferError(f"--layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.layer_lr_decay != 1.0 and s == "feature_extraction":
            raise HfTransferError(
                "--layer_lr_decay has nothing to decay with --strategy feature_extraction (only the head trains; for "
                "an encoder-decoder model use --strategy freeze --freeze_stacks encoder to decay over the decoder)"
            )
        if self.unfreeze_every is not None and self.unfreeze_every < 1:
            raise HfTransferError(f"--unfreeze_every must be >= 1, got {self.unfreeze_every}")
        if self.lora_r is not None and self.lora_r < 1:
            raise HfTransferError(f"--lora_r must be >= 1, got {self.lora_r}")
        self._check_prefix_cache()

    def _check_prefix_cache(self) -> None:
        options = ("prefix_cache_max_memory_mb", "prefix_cache_dtype")
        if not self.cache_frozen_prefix:
            given = [o for o in options if getattr(self, o) is not None]
            if given:
                raise HfTransferError(f"--{given[0]} applies to --cache_frozen_prefix; add it or drop --{given[0]}")
            return
        if self.strategy in _NO_FROZEN_PREFIX:
            raise HfTransferError(f"--cache_frozen_prefix needs --strategy freeze or feature_extraction, not "
                                  f"'{self.strategy}': {_NO_FROZEN_PREFIX[self.strategy]}")
        if self.prefix_cache_max_memory_mb is not None and self.prefix_cache_max_memory_mb < 0:
            raise HfTransferError(f"--prefix_cache_max_memory_mb must be >= 0, got {self.prefix_cache_max_memory_mb}")
        if self.prefix_cache_dtype not in (None, *prefix_cache.STORAGE_DTYPES):
            raise HfTransferError(f"--prefix_cache_dtype must be float32, float16 or bfloat16, got {self.prefix_cache_dtype}")

    # --- checks that need the model's config (read before any weights load) ---
    def check_config(self, config) -> None:
        """Raise if the strategy cannot work on this architecture; a `full` run needs no layer map."""
        if self.strategy == "full" and self.layer_lr_decay == 1.0:
            return
        self.check_stacks(stack_depths(config))  # raises for an architecture the layer map does not know
        if self.cache_frozen_prefix:
            prefix_cache.check_architecture(config)

    def check_stacks(self, depths: dict[str, int]) -> None:
        """Raise if the options do not fit a model with these stacks ({name: number of blocks})."""
        if self.strategy != "freeze":
            return
        if not depths:
            raise HfTransferError("--strategy freeze needs a model with stacks of blocks; this one's layer map has none")
        shallowest = min(depths, key=depths.get)
        if (self.freeze_bottom or 0) > depths[shallowest]:
            where = (f"the model's {depths[shallowest]} blocks" if len(depths) == 1 else
                     f"the {depths[shallowest]} blocks of the model's {shallowest} stack (it freezes that many in each "
                     f"stack: {', '.join(f'{name} {n}' for name, n in depths.items())})")
            instead = "--strategy feature_extraction to train the head only" if len(depths) == 1 else \
                "--freeze_stacks NAME to freeze a whole stack"
            raise HfTransferError(f"--freeze_bottom {self.freeze_bottom} exceeds {where}; use at most that, or {instead}")
        unknown = [name for name in self.freeze_stacks or [] if name not in depths]
        if unknown:
            raise HfTransferError(
                f"--freeze_stacks {' '.join(unknown)}: the model has no such stack; its stacks: {', '.join(depths)}"
            )

    @property
    def gradual_every(self) -> int:
        return self.unfreeze_every or 1

    @property
    def gradual_unit(self) -> str:
        return self.unfreeze_unit or "epoch"


def apply_strategy(model: nn.Module, args: StrategyArgs) -> nn.Module:
    """Prepare `model` for `args.strategy`; returns the model to train (a peft model for lora/peft)."""
    if args.strategy == "full" and args.layer_lr_decay == 1.0:
        return model
    # Checked against the model's actual groups: also right for a model class without a stack its config
    # declares (T5EncoderModel) and for wrappers that declare their own groups.
    groups = layer_groups(model)  # raises for an architecture the layer map does not know
    args.check_stacks({name: len(blocks) for name, blocks in stack_groups(groups).items()})
    if args.strategy in ("freeze", "feature_extraction"):
        for group in frozen_groups(groups, args):
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


def frozen_groups(groups: list[LayerGroup], args: StrategyArgs) -> list[LayerGroup]:
    """The groups `freeze` / `feature_extraction` switch off (see the module doc for what each means)."""
    if args.strategy == "feature_extraction":
        stacks = stack_groups(groups)
        keep = {DECODER} if len(stacks) > 1 and DECODER in stacks else set()
        return [g for g in groups[:-1] if g.stack not in keep]  # the head is always the last group
    frozen = [g for g in groups if g.stack is None and g.depth_from_top > 0]  # the embeddings
    for name, blocks in stack_groups(groups).items():
        frozen += blocks if name in (args.freeze_stacks or []) else blocks[: args.freeze_bottom or 0]
    return frozen


def _load_peft_config(path: str):
    from peft import get_peft_config

    try:
        return get_peft_config(json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise HfTransferError(f"--peft_config {path} is not a valid peft config ({error}); it needs a 'peft_type' key") from error


def _wrap_peft(model: nn.Module, config) -> nn.Module:
    """Apply a peft config with the layer map's defaults filled in, and the new head kept trainable.

    No `task_type` is set on purpose: with one, peft picks the head by its own name list and, for example,
    left wav2vec2's new `projector` frozen. The layer map's head goes to `modules_to_save` instead, less an
    untied pretrained LM head (the output embeddings): it is not new, and a full trainable copy of a
    vocabulary-sized matrix would outweigh the adapters (peft's own seq2seq task leaves it out too).
    """
    from peft import get_peft_model

    if hasattr(config, "target_modules") and not config.target_modules:
        config.target_modules = list(_default_lora_targets(model))
    if hasattr(config, "modules_to_save"):
        config.modules_to_save = sorted(set(config.modules_to_save or []) | set(_new_head_modules(model)))
    try:
        return get_peft_model(model, config)
    except ValueError as error:
        raise HfTransferError(f"peft could not adapt this model: {str(error).splitlines()[0]}") from error


def _default_lora_targets(model: nn.Module) -> tuple[str, ...]:
    config = getattr(unwrap_model(model), "config", None)
    if config is None:
        raise HfTransferError(
            f"{type(unwrap_model(model)).__name__} has no transformers config to read LoRA's default targets from; "
            "pass --lora_target_modules"
        )
    return config_spec(config).lora_targets


def _new_head_modules(model: nn.Module) -> list[str]:
    inner = unwrap_model(model)
    get_output = getattr(inner, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    return [path for path in head_module_names(inner) if output is None or inner.get_submodule(path) is not output]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied parameters count once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)



