"""One encoder, one head per task: complete transformers models that share their encoder, in one `nn.Module`.

Each task has its own sequence classifier (its config: labels, problem type), and every one's backbone
(`model.base_model`, e.g. `bert`) is the FIRST task's backbone object. So each task model stays a standard model that
`save_pretrained` writes standalone, while the wrapper trains one encoder: parameters are shared objects, which
`named_parameters`, the optimizer and DDP count once. The wrapper routes a batch by its `task` ids (one task a batch,
see sampler.py) and weighs the loss by the task's weight while training.

Transfer strategies see one model: `transfer_layer_groups` is the first task model's layer map with every other head
added to the head group (pooler and classifiers), so freezing, feature extraction, gradual unfreezing (heads first),
layer-wise learning rates and LoRA (adapters in the shared encoder, every head saved whole) act on it as on one
classifier.

Its state dict names every shared tensor once, under the first task (`task_models.<first>.bert...`): the other tasks'
names for it are aliases, left out when saving (safetensors refuses shared tensors) and filled in when loading.
"""
from __future__ import annotations

from itertools import chain

from torch import nn

from hf_transfer.layers import add_to_head, layer_groups


def share_encoder(first, other) -> None:
    """Give `other` (a transformers model of the same architecture) the backbone of `first`; its own is dropped."""
    prefix = first.base_model_prefix
    if type(getattr(other, prefix, None)) is not type(first.base_model):
        raise ValueError(f"{type(other).__name__} has no '{prefix}' backbone like {type(first).__name__}'s to share")
    setattr(other, prefix, first.base_model)


class MultitaskModel(nn.Module):
    """Task models (name -> sequence classifier, in the task file's order) around the first one's encoder."""

    # The Trainer divides a step's loss by the accumulation steps itself (no per-token normalisation to hand over).
    accepts_loss_kwargs = False

    def __init__(self, task_models: dict[str, nn.Module], loss_weights: dict[str, float] | None = None) -> None:
        super().__init__()
        first, *others = task_models.values()
        for model in others:
            share_encoder(first, model)
        self.task_models = nn.ModuleDict(task_models)
        self.task_names = list(task_models)
        self.loss_weights = [float((loss_weights or {}).get(name, 1.0)) for name in self.task_names]
        self.register_state_dict_post_hook(_drop_aliases)
        self.register_load_state_dict_pre_hook(_fill_aliases)

    @property
    def config(self):
        """The shared encoder's config (the first task's): what the layer map, LoRA's default targets and peft read."""
        return self.task_models[self.task_names[0]].config

    def can_generate(self) -> bool:  # asked of a peft model's base when its adapter is saved (sharing/adapters.py)
        return False

    def transfer_layer_groups(self):
        first, *others = self.task_models.values()
        return add_to_head(layer_groups(first), *others)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, task=None):
        if task is None:
            raise ValueError("a multitask batch needs its `task` ids")
        index = int(task[0])
        if bool((task != index).any()):
            raise ValueError("a batch mixes tasks; the multitask model takes one task a batch (TaskSampler)")
        model = self.task_models[self.task_names[index]]
        if labels is not None and model.config.problem_type != "regression":
            labels = labels.long()  # class ids: float ids would make transformers take a multi-label loss
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        outputs = model(**{k: v for k, v in inputs.items() if v is not None}, labels=labels, return_dict=True)
        if outputs.loss is not None and self.training:  # evaluation reports each task's own loss
            outputs["loss"] = outputs.loss * self.loss_weights[index]
        return outputs


def alias_names(module: nn.Module) -> dict[str, str]:
    """Every second name of a shared tensor in `module` -> its first name (the order `named_parameters` keeps)."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    named = chain(module.named_parameters(remove_duplicate=False), module.named_buffers(remove_duplicate=False))
    for name, tensor in named:
        if id(tensor) in first:
            aliases[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    return aliases


def _drop_aliases(module, state_dict, prefix, local_metadata) -> None:
    for alias in alias_names(module):
        state_dict.pop(prefix + alias, None)


def _fill_aliases(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs) -> None:
    for alias, name in alias_names(module).items():
        if prefix + name in state_dict and prefix + alias not in state_dict:
            state_dict[prefix + alias] = state_dict[prefix + name]

