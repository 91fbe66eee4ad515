"""The layer map: each supported architecture's parameters as groups from the bottom (embeddings) to the top (head).

Every transfer strategy speaks of "layers from the bottom to the top", so this module is the only place
that knows how an architecture is laid out. Groups are:

    [embeddings, block_0, ..., block_{n-1}, head]

`head` is everything above the last block. For BERT that is the pretrained pooler plus the new
classifier, which gives BERT the same two-layer head on the first token that RoBERTa's
`classifier.dense/out_proj` and DistilBERT's `pre_classifier/classifier` already are; so "train the head
only" means the same thing on all three.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .errors import HfTransferError


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where an architecture keeps its layers, as paths inside the backbone (`model.base_model`)."""

    embeddings: tuple[str, ...]  # modules or parameters below the first block
    blocks: tuple[str, ...]  # ModuleLists of blocks, bottom to top; several are concatenated (T5: encoder, decoder)
    depth: tuple[str, ...]  # config attributes whose sum is the number of blocks
    lora_targets: tuple[str, ...]  # attention projections LoRA adapts by default (peft has none for ViT/wav2vec2)
    # (path, config flag): a bottom part that moves above the blocks (into `head`) when the flag is set.
    on_top_if: tuple[tuple[str, str], ...] = ()


_BERT_LIKE = ArchitectureSpec(("embeddings",), ("encoder.layer",), ("num_hidden_layers",), ("query", "value"))
# wav2vec2's base layout applies `encoder.layer_norm` before the blocks (bottom); the stable-layer-norm
# variants (large-lv60, XLS-R) apply it after the last block, so there it belongs to the top.
_WAV2VEC2_LIKE = ArchitectureSpec(
    ("masked_spec_embed", "feature_extractor", "feature_projection", "encoder.pos_conv_embed", "encoder.layer_norm"),
    ("encoder.layers",),
    ("num_hidden_layers",),
    ("q_proj", "v_proj"),
    on_top_if=(("encoder.layer_norm", "do_stable_layer_norm"),),
)

# Keyed by `config.model_type`. Module names are those of transformers 5.x (ViT's blocks moved from
# `encoder.layer` to `layers` and its projections became q_proj/k_proj/v_proj); tests/test_layers.py
# checks every entry against the installed version.
ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "distilbert": ArchitectureSpec(("embeddings",), ("transformer.layer",), ("n_layers",), ("q_lin", "v_lin")),
    "vit": ArchitectureSpec(("embeddings",), ("layers",), ("num_hidden_layers",), ("q_proj", "v_proj")),
    "wav2vec2": _WAV2VEC2_LIKE,
    "hubert": _WAV2VEC2_LIKE,
    # WavLM keeps wav2vec2's names; its relative-position embedding lives in block 0's attention.
    "wavlm": _WAV2VEC2_LIKE,
    # T5's blocks run encoder then decoder; the encoder's final norm and the tied LM head land in `head`.
    "t5": ArchitectureSpec(("shared",), ("encoder.block", "decoder.block"), ("num_layers", "num_decoder_layers"), ("q", "v")),
}


@dataclass(frozen=True)
class LayerGroup:
    """One rung of the stack: a name and the parameters it owns (names as the model passed in reports them)."""

    name: str
    named_parameters: tuple[tuple[str, nn.Parameter], ...]

    @property
    def parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_parameters]

    def numel(self) -> int:
        return sum(p.numel() for p in self.parameters)

    def set_trainable(self, trainable: bool) -> None:
        for p in self.parameters:
            p.requires_grad_(trainable)


def architecture_spec(model_type: str) -> ArchitectureSpec:
    """The layout of `model_type`, or a clear error naming the supported ones."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise HfTransferError(
            f"model type '{model_type}' is not in the layer map; supported: {', '.join(sorted(ARCHITECTURES))} "
            "(add an entry to hf_transfer.layers.ARCHITECTURES, or use --strategy full)"
        ) from None


def num_blocks(config) -> int:
    """How many blocks a config describes, read before any weights load (used to validate options early)."""
    spec = architecture_spec(config.model_type)
    return sum(getattr(config, attr) or 0 for attr in spec.depth)


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft or DDP wrapper; parameter objects are shared, so groups stay valid."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        else:
            return model


def _resolve(root: nn.Module, path: str) -> list[nn.Parameter]:
    try:
        return list(root.get_submodule(path).parameters())
    except AttributeError:
        pass
    try:
        return [root.get_parameter(path)]
    except AttributeError:
        return []  # optional parts (e.g. `masked_spec_embed` when masking is off) may be absent


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """Split `model`'s parameters into [embeddings, block_0, ..., block_{n-1}, head], bottom to top.

    Works on the bare transformers model and on a peft-wrapped one (LoRA weights fall in the block that
    holds them). Every parameter lands in exactly one group; tied parameters count once.
    """
    inner = _unwrap(model)
    spec = architecture_spec(inner.config.model_type)
    backbone = inner.base_model

    owners: dict[int, int] = {}  # id(parameter) -> group index; the first claim wins
    names = ["embeddings"]
    on_top = {path for path, flag in spec.on_top_if if getattr(inner.config, flag, False)}
    for path in (p for p in spec.embeddings if p not in on_top):
        for p in _resolve(backbone, path):
            owners.setdefault(id(p), 0)
    for path in spec.blocks:
        for block in backbone.get_submodule(path):
            names.append(f"block_{len(names) - 1}")
            for p in block.parameters():
                owners.setdefault(id(p), len(names) - 1)
    names.append("head")
    head = len(names) - 1

    members: list[list[tuple[str, nn.Parameter]]] = [[] for _ in names]
    for name, p in model.named_parameters():
        members[owners.get(id(p), head)].append((name, p))
    return [LayerGroup(n, tuple(m)) for n, m in zip(names, members)]


def head_module_names(model: nn.Module) -> list[str]:
    """Paths of the smallest set of modules that hold the head group (e.g. ['bert.pooler', 'classifier']).

    This is what peft's `modules_to_save` needs so that a new, randomly initialised head trains.
    """
    inner = _unwrap(model)
    head_ids = {id(p) for p in layer_groups(inner)[-1].parameters}
    found: list[str] = []
    for name, p in inner.named_parameters():
        if id(p) not in head_ids or any(name.startswith(f + ".") for f in found):
            continue
        parts = name.split(".")[:-1]  # a parameter held directly by a mixed module cannot be wrapped: skipped
        for depth in range(1, len(parts) + 1):
            path = ".".join(parts[:depth])
            if all(id(q) in head_ids for q in inner.get_submodule(path).parameters()):
                found.append(path)
                break
    return found
