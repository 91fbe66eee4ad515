"""A checkpoint's model weights put back into the training model under the model's own parameter names.

transformers 5 writes a model under its checkpoint format's key names: `save_pretrained` reverts the weight
conversion that `from_pretrained` applies (a ViT's `vit.layers.0.attention.q_proj.weight` is written as
`vit.encoder.layer.0.attention.attention.query.weight`). The Trainer reads a checkpoint back with a plain
`load_state_dict(..., strict=False)`, so every renamed weight was skipped with a warning, and a resumed run went on
from the pretrained encoder with the checkpoint's head (transformers issue #43701). Here the checkpoint's keys go
through the conversion `from_pretrained` would apply to them, and every weight must find its place: a checkpoint
weight the model has no place for, or a model weight the checkpoint lacks, is an error. The only weights a checkpoint
may lack are those `save_pretrained` leaves out: aliases of a saved weight (tied weights) and the model's
`_keys_to_ignore_on_save` (the trainer's objectives, which come back from their own file).
"""
from __future__ import annotations

import json
from copy import deepcopy
from pathlib import Path

from hf_transfer.errors import HfTransferError

SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"  # a checkpoint saved in shards


def has_model_weights(folder) -> bool:
    """Whether `folder` holds a whole model's weights in safetensors, in one file or in shards (not a peft adapter)."""
    return (Path(folder) / SAFE_WEIGHTS).is_file() or (Path(folder) / SAFE_WEIGHTS_INDEX).is_file()


def read_model_weights(folder) -> dict:
    """The checkpoint's tensors under the names it was saved with, on the CPU."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / SAFE_WEIGHTS).is_file():
        return load_file(folder / SAFE_WEIGHTS, device="cpu")
    shards = json.loads((folder / SAFE_WEIGHTS_INDEX).read_text())["weight_map"].values()
    weights = {}
    for shard in sorted(set(shards)):  # all of them: a conversion may merge tensors saved in different shards
        weights.update(load_file(folder / shard, device="cpu"))
    return weights


def to_model_keys(model, weights: dict) -> dict:
    """`weights` as `save_pretrained` wrote them, renamed (and merged or split, where the model's conversion does that)
    to the model's own keys, the way `from_pretrained` maps a checkpoint (transformers' core_model_loading)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, dot_natural_key, rename_source_key

    own = model.state_dict()
    transforms = get_model_conversion_mapping(model)  # from_pretrained's list: the model's own and the legacy renames
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    converter_of = {pattern: converter for converter in converters for pattern in converter.source_patterns}
    mapped, converting = {}, {}
    for key, tensor in sorted(weights.items(), key=lambda item: dot_natural_key(item[0])):
        name, pattern = rename_source_key(key, renamings, converters, model.base_model_prefix, own)
        if name not in own and key in own:  # a rename that does not apply to this model: kept, as from_pretrained does
            name, pattern = rename_source_key(key, [], [], model.base_model_prefix, own)
        if pattern is None or name not in own:
            mapped[name] = tensor
        else:  # a converter takes several saved tensors (or gives several): gather them, convert once all are in
            converter = converting.setdefault(name, deepcopy(converter_of[pattern]))
            converter.add_tensor(name, key, pattern, tensor)
    for name, converter in converting.items():
        for target, value in converter.convert(name, model=model, config=model.config).items():
            mapped[target] = value[0] if isinstance(value, list) else value
    return mapped


def load_model_weights(model, folder) -> None:
    """Copy the model weights saved in checkpoint `folder` into `model` (in place: the optimizer's and the strategy's
    references stay valid), strictly: see the module's docstring for what may be absent."""
    from transformers.pytorch_utils import id_tensor_storage

    weights = to_model_keys(model, read_model_weights(folder))
    own = model.state_dict()
    unexpected = sorted(set(weights) - set(own))
    loaded = {id_tensor_storage(own[key]) for key in weights if key in own}  # a tied alias gets its value through these
    left_out_on_save = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    missing = sorted(key for key in own.keys() - weights.keys()
                     if key not in left_out_on_save and id_tensor_storage(own[key]) not in loaded)
    if unexpected or missing:
        found = []
        if unexpected:
            found.append(f"{len(unexpected)} saved weight(s) the model has no place for ({', '.join(unexpected[:3])})")
        if missing:
            found.append(f"{len(missing)} model weight(s) not in it ({', '.join(missing[:3])})")
        raise HfTransferError(f"checkpoint {folder} does not fit the model: {'; '.join(found)}; resume with the model "
                              "and options the checkpoint was made with")
    model.load_state_dict(weights, strict=False)  # strict=False only for the aliases and left-out keys allowed above
