"""The layer map: each supported architecture's parameters as groups, from the embeddings at the bottom to the head on top.

Every transfer strategy speaks of "layers from the bottom to the top", so this module is the only place
that knows how an architecture is laid out. An architecture has one or more parallel *stacks* of blocks
(BERT: one, `encoder`; T5 and an `EncoderDecoderModel`: `encoder` and `decoder`). `layer_groups` returns

    [embeddings, <stack 1> block_0 .. block_{n-1}, <stack 2> block_0 .. block_{m-1}, ..., head]

bottom to top within each stack, stacks in the order they run. A one-stack model names its blocks
`block_0`.. (short names where there is only one stack to name); with several stacks
they are `encoder.block_0`.., `decoder.block_0`... Each group carries `stack` (None for the embeddings
and the head) and `depth_from_top`:

    head 0;  the top block of EVERY stack 1;  the next block of every stack 2; ...;  embeddings 1 + the deepest stack

so the stacks sit side by side under one head, each counted from its own top:
- layer-wise LR decay gives a group `lr * decay ** depth_from_top` (the encoder and the decoder each decay
  from their own top block);
- gradual unfreezing unfreezes by `depth_from_top`: the head first, then the top block of every stack
  together, then the next, ..., the embeddings last;
- `freeze_bottom N` freezes the embeddings and the bottom N blocks of each stack.

`head` is everything the map does not place elsewhere. For BERT that is the pretrained pooler plus the
new classifier, which gives BERT the same two-layer head on the first token that RoBERTa's
`classifier.dense/out_proj` and DistilBERT's `pre_classifier/classifier` already are; so "train the head
only" means the same thing on all three.

Tied parameters belong to the first group that claims them, in the order embeddings, stacks, head. So an
LM head tied to the input embeddings (T5's `lm_head` = `shared`, BERT's MLM decoder = its word
embeddings) is in `embeddings`, never in the head: it is the bottom of every stack, and putting it in the
head would make "train the head only" train the whole vocabulary matrix and peft copy it into
`modules_to_save`. An untied LM head is an ordinary head module.

A model (or a wrapper around one: a domain-adversarial model, a multi-head model) may declare its own
groups with a method `transfer_layer_groups() -> list[LayerGroup]` ending with the head; `add_to_head`
builds that list from an inner model's map plus the wrapper's own modules.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import reduce

from torch import nn

from hf_transfer.errors import HfTransferError

# The stack that `feature_extraction` trains with the head in an encoder-decoder model: the decoder reads
# the encoder's features, so it is the part that adapts to the task (see strategies.py).
DECODER = "decoder"


@dataclass(frozen=True)
class Stack:
    """One tower of blocks: where its ModuleList lives and which config attribute counts them."""

    name: str
    blocks: str  # path of the ModuleList, bottom block first
    depth: str  # config attribute holding the number of blocks (dotted for a sub-config: "encoder.num_hidden_layers")
    top: tuple[str, ...] = ()  # modules applied after the last block that belong to the top block's group
    optional: bool = False  # absent from some model classes (T5EncoderModel has no decoder); otherwise missing is an error


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where an architecture keeps its layers, as paths inside the backbone (`model.base_model`; for a
    composed encoder-decoder spec, inside the composed model itself)."""

    embeddings: tuple[str, ...]  # modules or parameters below the first block of every stack
    stacks: tuple[Stack, ...]  # parallel stacks, in the order they run
    lora_targets: tuple[str, ...]  # attention projections LoRA adapts by default (peft has none for ViT/wav2vec2)
    head: tuple[str, ...] = ()  # explicit head modules; whatever no other group claims joins them
    # (path, config flag): a bottom part that moves above the blocks (into `head`) when the flag is set.
    on_top_if: tuple[tuple[str, str], ...] = ()


def _one_stack(embeddings, blocks, depth, lora_targets, **kwargs) -> ArchitectureSpec:
    return ArchitectureSpec(tuple(embeddings), (Stack("encoder", blocks, depth),), tuple(lora_targets), **kwargs)


_BERT_LIKE = _one_stack(("embeddings",), "encoder.layer", "num_hidden_layers", ("query", "value"))
# wav2vec2's base layout applies `encoder.layer_norm` before the blocks (bottom); the stable-layer-norm
# variants (large-lv60, XLS-R) apply it after the last block, so there it belongs to the top.
_WAV2VEC2_LIKE = _one_stack(
    ("masked_spec_embed", "feature_extractor", "feature_projection", "encoder.pos_conv_embed", "encoder.layer_norm"),
    "encoder.layers",
    "num_hidden_layers",
    ("q_proj", "v_proj"),
    on_top_if=(("encoder.layer_norm", "do_stable_layer_norm"),),
)
# T5: `shared` is the input embedding of both stacks (and, tied, the LM head), so it is the bottom of both.
# The encoder's final norm ends the encoder: it joins the encoder's top block, so freezing or unfreezing
# the encoder moves it too. The decoder's final norm feeds the LM head: it is the head. Whether `lm_head`
# is tied is read from the parameters, not the config: tied (t5-small/base) it is `shared`, so it is in the
# embeddings; untied (t5 v1.1 and mT5 checkpoints) it is an ordinary head module.
_T5_LIKE = ArchitectureSpec(
    embeddings=("shared",),
    stacks=(
        Stack("encoder", "encoder.block", "num_layers", top=("encoder.final_layer_norm",)),
        Stack(DECODER, "decoder.block", "num_decoder_layers", optional=True),
    ),
    lora_targets=("q", "v"),
    head=("decoder.final_layer_norm",),
)

# Whisper: a conv stem (conv1, conv2) and fixed position tables under the encoder's blocks; the decoder's token
# embedding is the bottom of the decoder stack and, tied, its output projection `proj_out`: so it is in
# `embeddings` (never the head, where "train the head only" would train the 51k x d vocabulary). The encoder's
# final norm ends the encoder (its top block). WhisperForAudioClassification has no decoder (optional stack); its
# `projector`, `classifier` (and `layer_weights` with a weighted layer sum) are the head. For generation the head
# is the decoder's final norm. Paths are inside WhisperModel (generation) or the classifier itself: both name the
# encoder `encoder`.
_WHISPER = ArchitectureSpec(
    embeddings=("encoder.conv1", "encoder.conv2", "encoder.embed_positions", "decoder.embed_tokens", "decoder.embed_positions"),
    stacks=(
        Stack("encoder", "encoder.layers", "encoder_layers", top=("encoder.layer_norm",)),
        Stack(DECODER, "decoder.layers", "decoder_layers", optional=True),
    ),
    lora_targets=("q_proj", "v_proj"),  # encoder self-attention; decoder self- and cross-attention
    head=("decoder.layer_norm",),
)

# Keyed by `config.model_type`. Module names are those of transformers 5.x (ViT's blocks moved from
# `encoder.layer` to `layers` and its projections became q_proj/k_proj/v_proj); tests/test_layers.py
# checks every entry against the installed version.
ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "distilbert": _one_stack(("embeddings",), "transformer.layer", "n_layers", ("q_lin", "v_lin")),
    "vit": _one_stack(("embeddings",), "layers", "num_hidden_layers", ("q_proj", "v_proj")),
    "wav2vec2": _WAV2VEC2_LIKE,
    "hubert": _WAV2VEC2_LIKE,
    # WavLM keeps wav2vec2's names; its relative-position embedding lives in block 0's attention.
    "wavlm": _WAV2VEC2_LIKE,
    "t5": _T5_LIKE,
    "mt5": _T5_LIKE,  # T5's layout and names; only the vocabulary (and so the tied embedding) is larger
    "whisper": _WHISPER,
}

# Models made of two table entries (config.encoder, config.decoder), mapped by composing their specs.
COMPOSED = ("encoder-decoder",)


@dataclass(frozen=True)
class LayerGroup:
    """One rung of the map: a name, the parameters it owns (named as the model passed in reports them),
    the stack it belongs to (None for the embeddings and the head) and its distance from the head."""

    name: str
    named_parameters: tuple[tuple[str, nn.Parameter], ...]
    stack: str | None = None
    depth_from_top: int = 0

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
    except KeyError as error:
        raise HfTransferError(
            f"model type '{model_type}' is not in the layer map; supported: "
            f"{', '.join(sorted([*ARCHITECTURES, *COMPOSED]))} "
            "(add an entry to hf_transfer.layers.ARCHITECTURES, or use --strategy full)"
        ) from error


def encoder_decoder_spec(config, encoder_root: str = "encoder", decoder_root: str = "decoder") -> ArchitectureSpec:
    """The spec of an `EncoderDecoderModel`, composed from those of `config.encoder` and `config.decoder`.

    Paths are relative to the composed model; `*_root` are the sub-models' backbones (a BERT decoder is
    `BertLMHeadModel`, whose backbone is `decoder.bert`). The encoder stack is the encoder's blocks; the
    decoder stack is the decoder's blocks, cross-attention included (it lives inside each block). The
    embeddings are both sub-models' embeddings. Whatever else the encoder holds (BERT's pooler, which an
    EncoderDecoderModel never calls) joins the encoder's top block, so freezing the encoder freezes all of
    it and peft never copies it as a head. The head is the decoder's LM head (`decoder.cls`; its weight is
    tied to the decoder's word embeddings and so stays there) and everything else (`enc_to_dec_proj`, new
    when the widths differ). LoRA's default targets are the encoder architecture's: for BERT, query/value
    also match the decoder's self- and cross-attention, which is what one wants.
    """
    parts = {}
    for role in ("encoder", "decoder"):
        spec = architecture_spec(getattr(config, role).model_type)
        if len(spec.stacks) != 1:
            raise HfTransferError(
                f"the {role} of this encoder-decoder model is a '{getattr(config, role).model_type}', which has "
                f"{len(spec.stacks)} stacks; only one-stack architectures compose"
            )
        parts[role] = spec
    enc, dec = parts["encoder"], parts["decoder"]
    enc_stack, dec_stack = enc.stacks[0], dec.stacks[0]

    def under(root, paths):
        return tuple(f"{root}.{p}" for p in paths)

    return ArchitectureSpec(
        embeddings=under(encoder_root, enc.embeddings) + under(decoder_root, dec.embeddings),
        stacks=(
            Stack("encoder", f"{encoder_root}.{enc_stack.blocks}", f"encoder.{enc_stack.depth}",
                  top=under(encoder_root, enc_stack.top) + ("encoder",)),  # the whole encoder sub-model's rest
            Stack(DECODER, f"{decoder_root}.{dec_stack.blocks}", f"decoder.{dec_stack.depth}",
                  top=under(decoder_root, dec_stack.top)),
        ),
        lora_targets=enc.lora_targets,
        head=under(decoder_root, dec.head),
        # The encoder's own on-top parts are claimed by its top block (through "encoder") before the head.
        on_top_if=tuple((f"{decoder_root}.{path}", f"decoder.{flag}") for path, flag in dec.on_top_if),
    )


def config_spec(config) -> ArchitectureSpec:
    """The spec a config describes (composed for an encoder-decoder); read before any weights load."""
    if config.model_type in COMPOSED:
        return encoder_decoder_spec(config)
    return architecture_spec(config.model_type)


def _config_attr(config, dotted: str):
    return reduce(lambda obj, attr: getattr(obj, attr, None), dotted.split("."), config)


def stack_depths(config) -> dict[str, int]:
    """Blocks per stack, in the order the stacks run, as the config declares them (e.g. {'encoder': 6, 'decoder': 6})."""
    return {s.name: int(_config_attr(config, s.depth) or 0) for s in config_spec(config).stacks}


def num_blocks(config) -> int:
    """How many blocks a config describes, all stacks together (used to validate options early)."""
    return sum(stack_depths(config).values())


def unwrap_model(model: nn.Module) -> nn.Module:
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


def _backbone_path(model: nn.Module, path: str) -> str:
    """Path of the backbone of the sub-model at `path` (what `base_model` returns for it)."""
    sub = model.get_submodule(path)
    prefix = getattr(sub, "base_model_prefix", "")
    return f"{path}.{prefix}" if prefix and isinstance(getattr(sub, prefix, None), nn.Module) else path


def _spec_and_root(model: nn.Module) -> tuple[ArchitectureSpec, nn.Module]:
    config = getattr(model, "config", None)
    if config is None:
        raise HfTransferError(
            f"{type(model).__name__} has no transformers config, so the layer map cannot place its parameters; "
            "give it a transfer_layer_groups() method (see hf_transfer.layers.add_to_head)"
        )
    if config.model_type in COMPOSED:
        spec = encoder_decoder_spec(config, _backbone_path(model, "encoder"), _backbone_path(model, "decoder"))
        return spec, model
    return architecture_spec(config.model_type), model.base_model


def architecture_groups(model: nn.Module) -> list[LayerGroup]:
    """The groups of a transformers model from its architecture's spec, whatever the model declares itself (a
    `transfer_layer_groups` method builds on this); names are fixed later by `layer_groups`."""
    spec, root = _spec_and_root(model)
    on_top = {path for path, flag in spec.on_top_if if _config_attr(model.config, flag)}

    owners: dict[int, int] = {}  # id(parameter) -> slot; the first claim wins (tied parameters count once)
    slots: list[tuple[str, str | None]] = [("embeddings", None)]  # (name, stack)
    depths: list[int] = [0]  # blocks from the top of their stack, filled in once each stack's length is known

    def claim(params, slot):
        for p in params:
            owners.setdefault(id(p), slot)

    for path in spec.embeddings:
        if path not in on_top:
            claim(_resolve(root, path), 0)
    stack_lengths = []
    for stack in spec.stacks:
        try:
            blocks = root.get_submodule(stack.blocks)
        except AttributeError as error:
            if stack.optional:
                continue
            raise HfTransferError(
                f"{type(model).__name__} has no '{stack.blocks}' ({stack.name} stack of '{model.config.model_type}'); "
                "the layer map does not match this transformers version or model class"
            ) from error
        prefix = "" if len(spec.stacks) == 1 else f"{stack.name}."
        for i, block in enumerate(blocks):
            slots.append((f"{prefix}block_{i}", stack.name))
            depths.append(len(blocks) - i)
            claim(block.parameters(), len(slots) - 1)
        if len(blocks):
            for path in stack.top:
                claim(_resolve(root, path), len(slots) - 1)
        stack_lengths.append(len(blocks))
    if not stack_lengths:
        raise HfTransferError(f"{type(model).__name__} has none of the stacks the layer map knows for '{model.config.model_type}'")
    depths[0] = 1 + max(stack_lengths)
    slots.append(("head", None))
    depths.append(0)
    head = len(slots) - 1
    for path in (*spec.head, *sorted(on_top)):
        claim(_resolve(root, path), head)

    members: list[list[tuple[str, nn.Parameter]]] = [[] for _ in slots]
    for name, p in model.named_parameters():
        members[owners.get(id(p), head)].append((name, p))
    return [LayerGroup(n, tuple(m), s, d) for (n, s), m, d in zip(slots, members, depths)]


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """Split `model`'s parameters into [embeddings, blocks of each stack bottom to top, head] (see the module doc).

    Works on the bare transformers model, on a peft- or DDP-wrapped one (LoRA weights fall in the block
    that holds them), and on any model with a `transfer_layer_groups()` method. Every parameter lands in
    exactly one group, named as `model.named_parameters()` names it; tied parameters count once, and a
    parameter no group claims joins the head.
    """
    inner = unwrap_model(model)
    declared = getattr(inner, "transfer_layer_groups", None)
    if callable(declared):
        groups = list(declared())
        if not groups or groups[-1].depth_from_top != 0 or groups[-1].stack is not None:
            raise HfTransferError(
                f"{type(inner).__name__}.transfer_layer_groups() must return groups ending with the head "
                "(stack None, depth_from_top 0)"
            )
    else:
        groups = architecture_groups(inner)

    # Names as the model passed in reports them (peft and DDP add prefixes), one group per parameter.
    owners: dict[int, int] = {}
    for index, group in enumerate(groups):
        for p in group.parameters:
            owners.setdefault(id(p), index)
    members: list[list[tuple[str, nn.Parameter]]] = [[] for _ in groups]
    for name, p in model.named_parameters():
        members[owners.get(id(p), len(groups) - 1)].append((name, p))
    return [replace(g, named_parameters=tuple(m)) for g, m in zip(groups, members)]


def add_to_head(groups: list[LayerGroup], *modules: nn.Module) -> list[LayerGroup]:
    """`groups` with the parameters of `modules` (those not already in a group) added to the head.

    How a wrapper declares its map: its inner model's groups, plus its own modules on top, e.g.

        def transfer_layer_groups(self):
            return add_to_head(layer_groups(self.classifier), self.domain_head)

    Call `layer_groups(wrapper)`, not the method, for parameter names relative to the wrapper.
    """
    seen = {id(p) for g in groups for p in g.parameters}
    extra = []
    for module in modules:
        for name, p in module.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                extra.append((name, p))
    head = groups[-1]
    return [*groups[:-1], replace(head, named_parameters=head.named_parameters + tuple(extra))]


def stack_groups(groups: list[LayerGroup]) -> dict[str, list[LayerGroup]]:
    """The block groups of each stack, bottom to top, stacks in the order they run."""
    stacks: dict[str, list[LayerGroup]] = {}
    for group in groups:
        if group.stack is not None:
            stacks.setdefault(group.stack, []).append(group)
    return stacks


def head_module_names(model: nn.Module) -> list[str]:
    """Paths of the smallest set of modules that hold the head group (e.g. ['bert.pooler', 'classifier']).

    This is what peft's `modules_to_save` needs so that a new, randomly initialised head trains. A tied
    LM head is in `embeddings` (see the module doc), so it never appears here.
    """
    inner = unwrap_model(model)
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



