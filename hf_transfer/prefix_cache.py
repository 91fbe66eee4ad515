"""The cached frozen prefix (`--cache_frozen_prefix`): the frozen embeddings and bottom blocks run once per example,
and later batches feed their stored output to the trainable blocks. Hooks on the backbone rewire it only while its
forward runs; examples are keyed by content and the store by the prefix's weights. Design, why it is exact and what it
costs: docs/prefix_cache.md."""
from __future__ import annotations

import hashlib
import inspect
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from hf_transfer.errors import HfTransferError
from hf_transfer.evidence.features import model_fingerprint
from hf_transfer.layers import (
    architecture_spec,
    layer_groups,
    stack_groups,
    unwrap_model,
)

# What each supported architecture is fed: token ids (padded rows of varying length), or pixels or log-mel features
# (one fixed-length row of states per image or clip). The key of an example and the shape of its states follow from it.
INPUT_KINDS = {"bert": "tokens", "roberta": "tokens", "distilbert": "tokens", "vit": "pixels", "whisper": "features"}
INPUT_NAMES = {"tokens": "input_ids", "pixels": "pixel_values", "features": "input_features"}
SUPPORTED_ARCHITECTURES = tuple(INPUT_KINDS)
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_MAX_MEMORY_MB = 1024.0


# --- Checks ---

def check_architecture(config) -> None:
    """Raise unless the prefix cache knows this architecture (read from the config, before weights load)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise HfTransferError(
            f"--cache_frozen_prefix supports {', '.join(SUPPORTED_ARCHITECTURES)} encoders (MiniLM is a bert); "
            f"not '{model_type}'; drop --cache_frozen_prefix"
        )
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise HfTransferError("--cache_frozen_prefix supports encoders only; this config is a decoder; drop --cache_frozen_prefix")


def inputs_vary_per_epoch(collator) -> str | None:
    """Why a collator's training inputs may differ between epochs (so caching them is wrong), or None.

    A collator declares it with an attribute or property `inputs_vary_per_epoch` (a bool, or a string saying why);
    that answer wins (the audio collators declare theirs).
    Without one, these are taken to vary: a collator with augmentation settings (`augment`: audio crops,
    speed and noise; image crops and flips) and a masking collator (masked-LM: `mlm_probability` or a
    `masker`). Unknown collators that declare nothing are taken at their word: they only pad.
    """
    if collator is None:
        return None
    declared = getattr(collator, "inputs_vary_per_epoch", None)
    if isinstance(declared, str) and declared:
        return declared  # the collator's own reason
    if declared is not None:
        return f"{type(collator).__name__} declares that its training inputs vary per epoch" if declared else None
    name = type(collator).__name__
    if getattr(collator, "augment", None) is not None:
        return f"{name} augments training inputs (random crops, speed, noise or flips), so they change every epoch"
    if getattr(collator, "mlm_probability", None) is not None or getattr(collator, "masker", None) is not None:
        return f"{name} masks tokens at random, so training inputs change every epoch"
    return None


def check_trainer(args, collator, *, fsdp: bool = False, deepspeed: bool = False) -> None:
    """The training set-ups the cache refuses, each with its reason, before any training."""
    if getattr(args, "torch_compile", False):
        raise HfTransferError("--cache_frozen_prefix swaps the prefix out during the forward pass, which a compiled "
                              "model cannot follow; drop --torch_compile or --cache_frozen_prefix")
    if fsdp or deepspeed or getattr(args, "fsdp", None) or getattr(args, "deepspeed", None):
        raise HfTransferError("--cache_frozen_prefix works on one process or DDP, not FSDP or DeepSpeed; "
                              "drop --cache_frozen_prefix")
    if getattr(args, "n_gpu", 0) > 1:  # torch DataParallel: replicas in threads would share one rewiring
        raise HfTransferError("--cache_frozen_prefix does not work with DataParallel (several GPUs in one process); launch "
                              "one process per GPU (accelerate launch, DDP) or drop --cache_frozen_prefix")
    reason = inputs_vary_per_epoch(collator)
    if reason:
        raise HfTransferError(f"--cache_frozen_prefix stores each example's prefix output once, but {reason}; "
                              "drop --cache_frozen_prefix (or the augmentation)")


# --- Where the prefix is: embeddings + the bottom blocks that are frozen, read from the layer map ---

@dataclass
class PrefixLayout:
    backbone: nn.Module  # the module whose forward is rewired: the base model (BertModel, ViTModel) or WhisperEncoder
    stem: dict[str, nn.Module]  # backbone attribute -> module below the blocks (while a cached batch runs, stand-ins)
    blocks_parent: nn.Module  # module holding the block list
    blocks_attr: str  # its attribute name ("layer")
    blocks: nn.ModuleList  # every block, bottom first (the original list)
    frozen: int  # how many bottom blocks belong to the prefix
    stem_name: str = "the embeddings"
    # Whisper: the stem's dropout is in the backbone's own forward, governed by the backbone's own training flag
    stem_dropout_in_backbone: bool = False

    @property
    def first_stem_module(self) -> nn.Module:
        return next(iter(self.stem.values()))

    def modules(self) -> list[nn.Module]:
        return [*self.stem.values(), *list(self.blocks)[: self.frozen]]

    def describe(self) -> str:
        if self.frozen == 0:
            return self.stem_name
        blocks = f"block{'s' if self.frozen > 1 else ''} 0{f'-{self.frozen - 1}' if self.frozen > 1 else ''}"
        return f"{self.stem_name} and {blocks}"


def find_prefix(model: nn.Module, frozen_blocks: int | None = None) -> PrefixLayout:
    """The frozen prefix of `model` (a supported encoder, possibly peft- or DDP-wrapped): its embeddings and the
    longest run of bottom blocks whose parameters are all frozen. With `frozen_blocks` (how many the strategy froze),
    that run must hold at least that many: a trainable parameter among them (adapters inside the prefix) is refused."""
    inner = unwrap_model(model)
    config = getattr(inner, "config", None)
    if config is None or callable(getattr(inner, "transfer_layer_groups", None)):
        raise HfTransferError(f"--cache_frozen_prefix needs a transformers encoder; {type(inner).__name__} is not one")
    check_architecture(config)
    spec = architecture_spec(config.model_type)
    if config.model_type == "whisper":
        # The encoder's share of the layer map's embeddings (conv1, conv2, embed_positions), inside the encoder.
        backbone, stack = _whisper_encoder(inner), spec.stacks[0]
        stem_paths = tuple(path.removeprefix("encoder.") for path in spec.embeddings if path.startswith("encoder."))
        blocks_path, stem_name = stack.blocks.removeprefix("encoder."), "the conv stem and position table"
    else:
        backbone, (embeddings_path,), (stack,) = inner.base_model, spec.embeddings, spec.stacks
        stem_paths, blocks_path, stem_name = (embeddings_path,), stack.blocks, "the embeddings"
    parent_path, _, blocks_attr = blocks_path.rpartition(".")
    blocks = backbone.get_submodule(blocks_path)
    groups = layer_groups(inner)
    if any(p.requires_grad for p in groups[0].parameters):
        raise HfTransferError(f"--cache_frozen_prefix needs frozen embeddings (--strategy freeze or feature_extraction); "
                              f"{stem_name} of this model has trainable parameters")
    frozen, blocking = 0, []
    for group in stack_groups(groups).get(stack.name, []):
        blocking = [n for n, p in group.named_parameters if p.requires_grad]
        if blocking:
            break
        frozen += 1
    if frozen_blocks is not None and frozen < frozen_blocks:
        raise HfTransferError(
            f"--cache_frozen_prefix: block {frozen} of the frozen prefix (the strategy freezes blocks 0-{frozen_blocks - 1}) "
            f"has trainable parameters ({', '.join(blocking[:2])}): adapters (LoRA/peft) or unfrozen weights inside "
            "the prefix; keep them above it or drop --cache_frozen_prefix"
        )
    if not isinstance(blocks, nn.ModuleList) or len(blocks) != len(stack_groups(groups).get(stack.name, [])):
        raise HfTransferError(f"--cache_frozen_prefix: {type(inner).__name__}'s blocks at '{stack.blocks}' do not match the layer map")
    return PrefixLayout(backbone, {path: backbone.get_submodule(path) for path in stem_paths},
                        backbone.get_submodule(parent_path) if parent_path else backbone, blocks_attr, blocks, frozen,
                        stem_name=stem_name, stem_dropout_in_backbone=config.model_type == "whisper")


def _whisper_encoder(inner: nn.Module) -> nn.Module:
    """Whisper's encoder as the backbone, for audio classification only (docs/prefix_cache.md)."""
    config = inner.config
    encoder = getattr(inner, "encoder", None)
    if encoder is None or hasattr(inner, "decoder") or hasattr(inner.base_model, "decoder"):
        raise HfTransferError("--cache_frozen_prefix covers Whisper's encoder in audio classification "
                              "(WhisperForAudioClassification), not the encoder-decoder; drop --cache_frozen_prefix")
    if getattr(config, "use_weighted_layer_sum", False):
        raise HfTransferError("--cache_frozen_prefix: use_weighted_layer_sum reads every block's output, the frozen ones "
                              "too; set it to false or drop --cache_frozen_prefix")
    if getattr(config, "encoder_layerdrop", 0.0) > 0:
        raise HfTransferError(f"--cache_frozen_prefix: encoder_layerdrop {config.encoder_layerdrop} skips blocks at "
                              "random, the frozen ones too; set it to 0 or drop --cache_frozen_prefix")
    return encoder


# --- What the cache did ---

@dataclass
class PrefixCacheStats:
    """The counts the end-of-training summary prints."""

    prefix_batches: int = 0  # batches the prefix ran on (any unseen example)
    computed_rows: int = 0  # rows those batches held
    cached_rows: int = 0  # rows fed from the store
    stored_rows: int = 0  # examples whose states are held
    stored_bytes: int = 0  # bytes of those states
    unstored_rows: int = 0  # computed rows that found no room in the memory budget (counted each time they come)

    def summary(self) -> str:
        stored = f"{self.stored_rows:,} in memory ({self.stored_bytes / 2**20:.1f} MB)"
        if self.unstored_rows:
            stored += f"; {self.unstored_rows:,} computed rows found no room (--prefix_cache_max_memory_mb)"
        return (f"prefix cache: ran the prefix on {self.computed_rows:,} rows ({self.prefix_batches:,} batches), fed "
                f"{self.cached_rows:,} rows from the cache; examples stored: {stored}")


# --- The rewiring: hooks on the backbone ---

class _PrefixDone(Exception):
    """Raised by the hook on the lowest trainable block: the prefix's output is taken, nothing above it runs."""


class StateFeed:
    """The stored states of the batch being run (set by the cache's pre-hook, cleared after the forward)."""

    states: torch.Tensor | None = None


class StandIn(nn.Module):
    """Stands in for a stem module while a cached batch runs: returns `output(states)` of this batch's stored states.

    Any other attribute the backbone's forward reads from the module comes from the real one (ViT reads the patch
    projection's dtype, Whisper the convolutions' strides and the position table's size); the real module is not
    registered as a child, so it is not counted twice anywhere."""

    def __init__(self, real: nn.Module, feed: StateFeed, output=lambda states: states):
        super().__init__()
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_feed", feed)
        object.__setattr__(self, "_output", output)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_real"), name)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self._output(self._feed.states)


def stand_ins(layout: PrefixLayout, feed: StateFeed) -> dict[str, nn.Module]:
    """What replaces each stem module while a cached batch runs. One embeddings module: the states. Whisper's
    encoder computes `gelu(conv2(gelu(conv1(x)))).permute(0, 2, 1) + embed_positions(...)`: conv1 gives nothing,
    conv2 zeros shaped (batch, width, positions), the position table the states: 0 + states is the states."""
    if not layout.stem_dropout_in_backbone:
        return {attr: StandIn(module, feed) for attr, module in layout.stem.items()}
    return {
        "conv1": StandIn(layout.stem["conv1"], feed, lambda states: states.new_empty(0)),
        "conv2": StandIn(layout.stem["conv2"], feed, lambda states: states.new_zeros(states.shape[0], states.shape[2], states.shape[1])),
        "embed_positions": StandIn(layout.stem["embed_positions"], feed),
    }


def example_key(*parts: bytes) -> bytes:
    """An example's 16-byte key: a digest of what decides its prefix output."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))  # so that no two splits of the same bytes collide
        digest.update(part)
    return digest.digest()


def tensor_keys(values: torch.Tensor) -> list[bytes]:
    """One key per row (an image's processed pixels, a clip's log-mel features): its values, shape and dtype."""
    rows = values.detach().to("cpu").contiguous()
    shape = f"{tuple(rows.shape[1:])}|{rows.dtype}".encode()
    return [example_key(row.view(torch.uint8).numpy().tobytes(), shape) for row in rows]  # any dtype, bfloat16 too


@dataclass(frozen=True)
class PrefixCacheOptions:
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB  # per process; examples beyond it are recomputed whenever they come
    dtype: str = "float32"  # of the stored states; float16 / bfloat16 halve the memory but round the states


# backbone -> the cache installed on it: one per model, shared by every trainer of that model (see `attach`).
_INSTALLED: "weakref.WeakKeyDictionary[nn.Module, FrozenPrefixCache]" = weakref.WeakKeyDictionary()


class FrozenPrefixCache:
    """Installs the cache on a model: a forward pre-hook and a forward hook on its backbone.

    The model's structure is changed only while a forward call of the backbone runs; outside it (saving,
    checkpoints, the layer map, `named_parameters`) the model is exactly as it was built. The cache belongs to
    the model (its frozen prefix): a second trainer of the same model shares it (`attach`).
    """

    @classmethod
    def attach(cls, model: nn.Module, options: PrefixCacheOptions | None = None, frozen_blocks: int | None = None):
        """The cache installed on `model`, or a new one. Two caches on one backbone would each rewire it, so the
        same options share the installed one and other options are refused."""
        options = options or PrefixCacheOptions()
        layout = find_prefix(model, frozen_blocks)
        installed = _INSTALLED.get(layout.backbone)
        if installed is None:
            return cls(model, options, frozen_blocks)
        if installed.options != options or installed.layout.frozen != layout.frozen:
            raise HfTransferError("this model already has a prefix cache with other settings (another trainer's); "
                                  "call trainer.prefix_cache.close() on that trainer first")
        return installed

    def __init__(self, model: nn.Module, options: PrefixCacheOptions | None = None, frozen_blocks: int | None = None):
        self.options = options or PrefixCacheOptions()
        if self.options.dtype not in STORAGE_DTYPES:
            raise HfTransferError(f"--prefix_cache_dtype {self.options.dtype}: choose one of {', '.join(STORAGE_DTYPES)}")
        self.layout = find_prefix(model, frozen_blocks)
        self.stats = PrefixCacheStats()
        self.storage_dtype = STORAGE_DTYPES[self.options.dtype]
        self._budget_bytes = int(self.options.max_memory_mb * 2**20)
        self._stored: dict[bytes, torch.Tensor] = {}  # example key -> its prefix states (CPU)
        self._feed = StateFeed()
        self._stand_ins = stand_ins(self.layout, self._feed)
        self._trainable_blocks = nn.ModuleList(list(self.layout.blocks)[self.layout.frozen:])
        self._signature = None
        self.namespace: tuple | None = None
        self._nested = 0
        self._restore: list | None = None
        self._backbone_training = True
        self._state_dtype = next(self.layout.first_stem_module.parameters()).dtype  # until the prefix has run once
        self.input_kind = INPUT_KINDS[self.layout.backbone.config.model_type]
        backbone = self.layout.backbone
        self._argument_names = list(inspect.signature(backbone.forward).parameters)
        self._accepts = set(self._argument_names)
        if _INSTALLED.get(backbone) is not None:
            raise HfTransferError("this model already has a prefix cache; use FrozenPrefixCache.attach to share it")
        self._handles = [
            backbone.register_forward_pre_hook(self._before, with_kwargs=True),
            backbone.register_forward_hook(self._after, with_kwargs=True, always_call=True),
        ]
        _INSTALLED[backbone] = self

    # --- freshness ---
    def _check_fresh(self, device: torch.device) -> None:
        """Empty the store when the prefix's output may have changed. A cheap signature of the prefix parameters
        (identity, in-place version counter, storage, device type) is checked on every forward; when it moves, the
        namespace (what decides the prefix's output besides the input) is recomputed, and a new one starts empty."""
        params = [p for m in self.layout.modules() for p in m.parameters()]
        if any(p.requires_grad for p in params):
            raise HfTransferError("--cache_frozen_prefix: a parameter of the frozen prefix became trainable (adapters or "
                                  "unfreezing inside the prefix); its cached outputs would be stale")
        signature = (device.type, tuple((id(p), p._version, p.data_ptr()) for p in params))
        if signature == self._signature:
            return
        config = self.layout.backbone.config
        namespace = (model_fingerprint(nn.ModuleList(self.layout.modules())), device.type,
                     next(self.layout.first_stem_module.parameters()).dtype, getattr(config, "_attn_implementation", None))
        if namespace != self.namespace:
            self._stored = {}
            self.stats.stored_rows = self.stats.stored_bytes = 0
            self.namespace = namespace
        self._signature = signature

    def _store(self, key: bytes, states: torch.Tensor) -> None:
        if self.stats.stored_bytes + states.nbytes > self._budget_bytes:
            self.stats.unstored_rows += 1
            return
        self._stored[key] = states.clone()  # a copy: a view would keep the whole padded batch alive
        self.stats.stored_rows += 1
        self.stats.stored_bytes += states.nbytes

    # --- hooks ---
    def _before(self, module, args, kwargs):
        if self._nested:
            return None
        inputs = dict(kwargs)
        if args:
            inputs.update(zip(self._argument_names, args))
        flags = [f for f in ("output_hidden_states", "output_attentions")
                 if inputs.get(f, getattr(self.layout.backbone.config, f, False))]
        self._restore = [(m, m.training) for m in self.layout.modules()]
        for m, _ in self._restore:
            m.eval()  # the prefix always runs in eval mode with this option, cached or not
        backbone = self.layout.backbone
        self._backbone_training = backbone.training
        if self.layout.stem_dropout_in_backbone:
            backbone.training = False  # its own flag only (the stem's dropout); its blocks keep theirs
        if flags:
            return None  # every layer's output was asked for: the whole model runs as built (prefix in eval mode)
        states = self._states(self._model_inputs(inputs))
        if torch.is_grad_enabled() and any(getattr(b, "gradient_checkpointing", False) for b in self._trainable_blocks):
            states.requires_grad_(True)  # reentrant checkpointing drops parameter gradients of inputs without grad
        self._feed.states = states
        self._swap(self._stand_ins, self._trainable_blocks)
        return None

    def _after(self, module, args, kwargs, output):
        if self._nested:
            return None
        self._swap(self.layout.stem, self.layout.blocks)
        self._feed.states = None
        if self._restore is not None:
            for m, training in self._restore:
                m.train(training)
            self.layout.backbone.training = self._backbone_training
        self._restore = None
        return None

    def _swap(self, stem: dict[str, nn.Module], blocks: nn.ModuleList) -> None:
        layout = self.layout
        for attr, module in stem.items():
            setattr(layout.backbone, attr, module)
        setattr(layout.blocks_parent, layout.blocks_attr, blocks)

    # --- the states of one batch ---
    def _model_inputs(self, inputs: dict) -> dict:
        """The inputs that decide the prefix's output (what keys an example), checked to be cacheable."""
        if self.input_kind == "features":  # Whisper ignores an attention mask (its windows are padded with silence)
            if inputs.get("input_features") is None:
                raise HfTransferError("--cache_frozen_prefix needs input_features in every forward call")
            return {"input_features": inputs["input_features"]}
        if self.input_kind == "pixels":
            for name in ("bool_masked_pos", "attention_mask"):
                if inputs.get(name) is not None:
                    raise HfTransferError(f"--cache_frozen_prefix keys images by their pixels; a forward call with {name} "
                                          "cannot be cached (drop --cache_frozen_prefix)")
            if inputs.get("pixel_values") is None:
                raise HfTransferError("--cache_frozen_prefix needs pixel_values in every forward call")
            return {"pixel_values": inputs["pixel_values"], "interpolate_pos_encoding": inputs.get("interpolate_pos_encoding")}
        for name in ("inputs_embeds", "position_ids"):
            if inputs.get(name) is not None:
                raise HfTransferError(f"--cache_frozen_prefix keys examples by their token ids; a forward call with "
                                      f"{name} cannot be cached (drop --cache_frozen_prefix)")
        if inputs.get("input_ids") is None:
            raise HfTransferError("--cache_frozen_prefix needs input_ids in every forward call")
        return {"input_ids": inputs["input_ids"], "attention_mask": inputs.get("attention_mask"),
                "token_type_ids": inputs.get("token_type_ids")}

    def _keys(self, inputs: dict) -> tuple[list[bytes], list[int] | None]:
        """Each row's key, and for text its unpadded length (images are one fixed-length row each: None)."""
        if self.input_kind != "tokens":
            return tensor_keys(inputs[INPUT_NAMES[self.input_kind]]), None
        ids = inputs["input_ids"].detach().to("cpu", torch.int64)
        rows, width = ids.shape
        attention_mask = inputs["attention_mask"]
        if attention_mask is None:
            lengths = [width] * rows
        else:
            mask = attention_mask.detach().to("cpu").bool()
            counts = mask.sum(1)
            if not torch.equal(mask, torch.arange(width)[None, :] < counts[:, None]):
                raise HfTransferError("--cache_frozen_prefix needs right-padded batches (the tokenizer pads on the left); "
                                      "set the tokenizer's padding_side to 'right' or drop --cache_frozen_prefix")
            lengths = counts.tolist()
        types = inputs["token_type_ids"]
        types = types.detach().to("cpu", torch.int64).numpy() if types is not None else None
        ids = ids.numpy()  # a row's key: its unpadded token ids and token types
        return [example_key(ids[i, :n].tobytes(), b"" if types is None else types[i, :n].tobytes())
                for i, n in enumerate(lengths)], lengths

    def _states(self, inputs: dict) -> torch.Tensor:
        first = inputs[INPUT_NAMES[self.input_kind]]
        device, rows = first.device, first.shape[0]
        self._check_fresh(device)
        keys, lengths = self._keys(inputs)
        found = [self._stored.get(k) for k in keys]
        if all(f is not None for f in found):
            self.stats.cached_rows += rows
            if lengths is None:
                states = torch.stack(found)
            else:  # zeros at padded positions (masked out as keys, so no result changes), up to this batch's width
                states = nn.utils.rnn.pad_sequence(found, batch_first=True)
                width = first.shape[1]
                if states.shape[1] < width:
                    states = nn.functional.pad(states, (0, 0, 0, width - states.shape[1]))
            return states.to(device=device, dtype=self._state_dtype)
        hidden = self._run_prefix(inputs)
        self._state_dtype = hidden.dtype
        self.stats.prefix_batches += 1
        self.stats.computed_rows += rows
        on_cpu = hidden.detach().to("cpu", self.storage_dtype)
        for i, key in enumerate(keys):
            if key not in self._stored:  # a row repeated in this batch is stored once
                self._store(key, on_cpu[i] if lengths is None else on_cpu[i, : lengths[i]])
        return hidden

    def _run_prefix(self, inputs: dict) -> torch.Tensor:
        """The backbone's own forward up to the prefix's output: the hidden states entering the lowest trainable
        block, taken by a hook on that block, which then stops the forward (nothing above the prefix runs); with
        every block frozen, the top block's own output. Not `output_hidden_states`: its last entry is the output
        after the backbone's final norm in some models (Whisper, tied by `capture_outputs`), and that norm is not
        in the prefix (it trains; states stored with last epoch's norm would be stale)."""
        kwargs = {k: v for k, v in inputs.items() if v is not None and k in self._accepts}
        blocks, frozen, captured = self.layout.blocks, self.layout.frozen, []
        if frozen < len(blocks):
            def entering(module, args, block_kwargs):
                captured.append(block_kwargs["hidden_states"] if "hidden_states" in block_kwargs else args[0])
                raise _PrefixDone
            handle = blocks[frozen].register_forward_pre_hook(entering, with_kwargs=True)
        else:
            def leaving(module, args, output):
                captured.append(output[0] if isinstance(output, tuple) else output)
            handle = blocks[-1].register_forward_hook(leaving)
        self._nested += 1
        try:
            with torch.no_grad():
                self.layout.backbone(**kwargs)
        except _PrefixDone:
            pass
        finally:
            handle.remove()
            self._nested -= 1
        return captured[0]

    # --- lifetime ---
    def close(self) -> None:
        """Remove the hooks and release the stored states (the model is left exactly as it was built; `stats` stay)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if _INSTALLED.get(self.layout.backbone) is self:
            del _INSTALLED[self.layout.backbone]
        self._stored = {}


