"""The cached frozen prefix: frozen embeddings and bottom blocks run once per example; later epochs reuse their output.

With `--strategy freeze` (or `feature_extraction`) the bottom of the network never changes, yet a plain run
recomputes its forward pass on the same inputs every epoch. With `--cache_frozen_prefix` the first time an
example is seen its prefix output (the hidden states entering the lowest trainable block) is stored; every
later batch made only of stored examples skips the prefix: the model's own forward runs with its embeddings
replaced by a module that returns the stored states and its block list cut down to the trainable blocks,
so attention-mask handling, the trainable blocks and the head are the model's own code, unchanged.

What makes it safe:
- **Eval-mode prefix.** With the option on, the prefix always runs in eval mode (no dropout), cached or
  not: a stored state is exactly what the prefix computes for that example, so caching changes nothing but
  speed. (Without the option a frozen block still applies dropout in training, so the option itself changes
  the training slightly: it removes the noise of the frozen blocks' dropout.)
- **Content keys.** An example is keyed by its content: the unpadded token ids and token types of its row,
  or for an image model the bytes and shape of its processed pixels (a 16-byte BLAKE2 digest). Whatever the
  order, the batch or the process, a state is found again only for the very same input, and a changed data
  set can never meet a stale entry. Text rows must be right-padded.
- **Weights fingerprint.** The store is namespaced by a hash of the prefix's weights and of what else
  decides its output (model type, attention implementation, dtypes, device type, library versions), as the
  feature cache is. A cheap check on every forward (each prefix parameter's identity, version counter,
  storage and `requires_grad`) notices any change of those weights: the fingerprint is then recomputed, and
  a changed one opens a new, empty namespace. A prefix parameter that becomes trainable is an error.
- **A batch with any unseen example runs the prefix on the whole batch**, exactly as an uncached run does,
  and stores the new rows. So the first epoch is the uncached computation itself, and an uncached run (a
  store of size 0) is the same code.

Exactness: the stored states of an example were computed in the batch it first came in. A later batch pads
to another length; on CPU, BERT's output at the real positions then differs in the last bits (measured up
to about 2e-6 for MiniLM-sized blocks: the attention and matmul kernels reduce in a length-dependent order).
So a cached run equals an uncached one bitwise when the padded length is fixed (`--pad_to_max_length`), and
to float rounding with per-batch padding (the test's tiny BERT after 9 steps: weights within 4e-9; it allows
1e-6; on SST-2 the benchmark's cached run and today's freeze, which also keeps the frozen blocks' dropout,
reached the same dev accuracy). Padded
positions are fed zeros instead of the prefix's output there; they are masked out as keys and never reach
the loss, so this changes no result (tests/test_prefix_cache.py checks it bitwise).

Storage: in memory (float32 by default; `--prefix_cache_dtype float16|bfloat16` halves it at the price of
rounding the states, so such a run no longer equals an uncached one) up to `--prefix_cache_max_memory_mb`
per process; and, unless `--prefix_cache_dir none`, every new entry is also written to disk under
`--prefix_cache_dir/<namespace>/` (write-through; default outputs/prefix_cache). States beyond the memory
budget are then read back from disk (the page cache, mostly), and a later process reloads them instead of
recomputing: a resumed run, a rerun with another seed or learning rate (the pretrained prefix is the same),
another rank. Each process appends to its own pair of files and, when it opens the namespace, reads every
earlier process's complete entries; never stale, since a namespace is one set of prefix weights and an entry
one input. Without a disk folder, examples beyond the memory budget are recomputed whenever they come. The
folder is never cleaned up by the toolkit: delete it to reclaim the space.

Two processes (DDP): each rank caches what it sees (the hooks act per process); the ranks stay identical, and
a cached DDP run equals an uncached one as a single process does (checked by hand: 2 CPU processes, fixed
padding, same weights bitwise). With the default shuffling a rank meets in later epochs examples that the
other rank saw first, and a batch holding one such example runs the prefix whole, so the saving grows more
slowly than on one process (2 ranks, batch 4, 4 epochs of a 64-example set: each rank ran the prefix on 92 of
its 128 rows, against 128 uncached; with larger data the share falls each epoch), and each rank may store up
to the whole data set. Ranks share entries only through the disk, between runs (a rank reads the files that
existed when it started).

Whisper (audio classification, `WhisperForAudioClassification`): the prefix is the encoder's conv stem and
position table (its "embeddings") and its bottom blocks; each clip's log-mel window is one fixed-length row, keyed
by its features like an image, so the cached run is the uncached one bitwise. The stem is not one module but three
calls in the encoder's own forward (`gelu(conv1)`, `gelu(conv2)`, `+ embed_positions`): while a cached batch runs,
conv1 returns nothing, conv2 zeros (gelu(0) = 0) and the position table the stored states, so the encoder computes
`0 + states`, exactly the states, and its trainable blocks, final norm and the head run as built. The encoder's
dropout after the stem is part of the prefix, so with the option on the encoder's own training flag is off during
its forward (the blocks keep theirs); LayerDrop (`encoder_layerdrop` > 0, which skips blocks at random) and the
weighted layer sum (`use_weighted_layer_sum`, which reads every block's output) are refused, and so is the
encoder-decoder (speech recognition: the decoder reads the encoder at every generation step).

Refused (one-line HfTransferError): strategies other than freeze/feature_extraction (gradual unfreezing
changes the frozen layers during the run; LoRA/peft adapt every block), a prefix with trainable parameters
(adapters inside it), collators whose training inputs vary per epoch (random crops, speed or noise
augmentation, masking: see `inputs_vary_per_epoch`), torch.compile, FSDP, DeepSpeed and DataParallel, and architectures
other than BERT, RoBERTa, DistilBERT (MiniLM is a BERT), ViT and Whisper's encoder. For ViT every image is one fixed-length row
(its patches and CLS token), so states are stacked, never padded, and the cached run is the uncached one bitwise;
the image recipe's augmentation (random crops and flips) must be off (`--random_resized_crop false
--horizontal_flip false`), since an augmented image is a new input each epoch; likewise the audio collators
declare that speed or noise augmentation and random crops of long clips (`--max_duration_seconds`) vary per epoch.
wav2vec2/HuBERT/WavLM and T5 are not done: wav2vec2's prefix is spread over its feature encoder, projection,
SpecAugment masking (random per step by default) and the encoder's positional convolution and norm, and T5 is an
encoder-decoder.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import struct
import sys
import uuid
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback

from hf_transfer.errors import HfTransferError
from hf_transfer.layers import (
    architecture_spec,
    layer_groups,
    stack_groups,
    unwrap_model,
)
from hf_transfer.strategies import (
    DEFAULT_PREFIX_CACHE_DIR as DEFAULT_CACHE_DIR,
)
from hf_transfer.strategies import (
    DEFAULT_PREFIX_CACHE_MB as DEFAULT_MAX_MEMORY_MB,
)

logger = logging.getLogger(__name__)

# What each supported architecture is fed: token ids (padded rows of varying length), or pixels or log-mel features
# (one fixed-length row of states per image or clip). The key of an example and the shape of its states follow from it.
INPUT_KINDS = {"bert": "tokens", "roberta": "tokens", "distilbert": "tokens", "vit": "pixels", "whisper": "features"}
INPUT_NAMES = {"tokens": "input_ids", "pixels": "pixel_values", "features": "input_features"}
SUPPORTED_ARCHITECTURES = tuple(INPUT_KINDS)
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FORMAT_VERSION = 1  # of the on-disk entries; part of the namespace


# --------------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------
# Where the prefix is: embeddings + the bottom blocks that are frozen, read from the layer map
# --------------------------------------------------------------------------------------------------------

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
    def width(self) -> int:
        return int(self.backbone.config.hidden_size)

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


def find_prefix(model: nn.Module, strategy=None) -> PrefixLayout:
    """The frozen prefix of `model` (a supported encoder, possibly peft- or DDP-wrapped): its embeddings and the
    longest run of bottom blocks whose parameters are all frozen. With `strategy`, that run must hold at least the
    blocks the strategy froze: a trainable parameter among them (adapters inside the prefix) is refused."""
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
    if strategy is not None:
        from hf_transfer.strategies import frozen_groups

        expected = sum(1 for g in frozen_groups(groups, strategy) if g.stack == stack.name)
        if frozen < expected:
            raise HfTransferError(
                f"--cache_frozen_prefix: block {frozen} of the frozen prefix (the strategy freezes blocks 0-{expected - 1}) "
                f"has trainable parameters ({', '.join(blocking[:2])}): adapters (LoRA/peft) or unfrozen weights inside "
                "the prefix; keep them above it or drop --cache_frozen_prefix"
            )
    if not isinstance(blocks, nn.ModuleList) or len(blocks) != len(stack_groups(groups).get(stack.name, [])):
        raise HfTransferError(f"--cache_frozen_prefix: {type(inner).__name__}'s blocks at '{stack.blocks}' do not match the layer map")
    return PrefixLayout(backbone, {path: backbone.get_submodule(path) for path in stem_paths},
                        backbone.get_submodule(parent_path) if parent_path else backbone, blocks_attr, blocks, frozen,
                        stem_name=stem_name, stem_dropout_in_backbone=config.model_type == "whisper")


def _whisper_encoder(inner: nn.Module) -> nn.Module:
    """Whisper's encoder as the backbone, for audio classification only (see the module doc)."""
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


# --------------------------------------------------------------------------------------------------------
# Storage: memory slabs, then disk
# --------------------------------------------------------------------------------------------------------

@dataclass
class PrefixCacheStats:
    prefix_batches: int = 0  # batches the prefix ran on (any unseen example)
    computed_rows: int = 0  # rows those batches held
    cached_batches: int = 0  # batches fed entirely from the store
    cached_rows: int = 0
    memory_rows: int = 0  # entries held in memory
    memory_payload_bytes: int = 0  # bytes of their states
    memory_allocated_bytes: int = 0  # bytes of the slabs holding them
    index_bytes: int = 0  # estimated size of the in-memory index (keys and locations)
    disk_rows: int = 0  # entries this process wrote to disk (every new one, when a folder is set)
    disk_bytes: int = 0
    disk_loaded_rows: int = 0  # entries found on disk from earlier processes
    unstored_rows: int = 0  # new rows that found no room (recomputed whenever they come)
    namespaces: int = 0  # fingerprints met (1 unless the prefix weights changed)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        where = f"{self.memory_rows:,} in memory ({self.memory_payload_bytes / 2**20:.1f} MB)"
        if self.disk_rows or self.disk_loaded_rows:
            where += f", {self.disk_rows:,} written to disk ({self.disk_bytes / 2**20:.1f} MB)"
            where += f", {self.disk_loaded_rows:,} found there" if self.disk_loaded_rows else ""
        return (f"prefix cache: ran the prefix on {self.computed_rows:,} rows ({self.prefix_batches:,} batches), fed "
                f"{self.cached_rows:,} rows from the cache; examples stored: {where}")


# Rough per-entry size of the index: a 16-byte key object, a 3-tuple of ints and the dict slot.
_INDEX_ENTRY_BYTES = sys.getsizeof(b"\0" * 16) + sys.getsizeof((0, 0, 0)) + 3 * 28 + 3 * 8 * 2


class _MemoryTier:
    """Rows packed into preallocated slabs (little per-entry overhead), until the budget is spent. Slabs grow
    geometrically from 1 MB to 16 MB, so a small cache holds little more than its rows."""

    SLAB_MIN, SLAB_MAX = 1 << 20, 16 << 20

    def __init__(self, budget_bytes: int, width: int, dtype: torch.dtype):
        self.width, self.dtype = width, dtype
        self.row_bytes = width * torch.empty((), dtype=dtype).element_size()
        self.budget = int(budget_bytes)
        self.slabs: list[torch.Tensor] = []
        self.used = 0  # rows used in the last slab
        self.allocated = self.payload = 0
        self.index: dict[bytes, tuple[int, int, int]] = {}

    def get(self, key: bytes) -> torch.Tensor | None:
        where = self.index.get(key)
        if where is None:
            return None
        slab, start, rows = where
        return self.slabs[slab][start:start + rows]

    def put(self, key: bytes, rows: torch.Tensor) -> bool:
        n = rows.shape[0]
        if not self.slabs or self.used + n > self.slabs[-1].shape[0]:
            slab_bytes = min(max(self.allocated, self.SLAB_MIN), self.SLAB_MAX)
            capacity = min(max(n, slab_bytes // self.row_bytes), (self.budget - self.allocated) // self.row_bytes)
            if capacity < n:
                return False
            self.slabs.append(torch.empty(capacity, self.width, dtype=self.dtype))
            self.allocated += capacity * self.row_bytes
            self.used = 0
        self.slabs[-1][self.used:self.used + n] = rows
        self.index[key] = (len(self.slabs) - 1, self.used, n)
        self.used += n
        self.payload += n * self.row_bytes
        return True


class _DiskTier:
    """Append-only files, one pair per process (`<id>.bin` states, `<id>.idx` fixed-size records), so processes never
    write to the same file; at start every earlier process's complete records are read (a record is written after
    its data, and one whose data the file does not hold in full is ignored)."""

    RECORD = struct.Struct("<16sQI4x")  # key, byte offset, rows

    def __init__(self, folder: Path, width: int, dtype: torch.dtype, name: str = ""):
        self.folder, self.width, self.dtype, self.name = folder, width, dtype, name
        self.row_bytes = width * torch.empty((), dtype=dtype).element_size()
        folder.mkdir(parents=True, exist_ok=True)
        self.index: dict[bytes, tuple[int, int, int]] = {}  # key -> (fd, offset, rows)
        self.fds: list[int] = []
        self.loaded = 0
        for idx in sorted(folder.glob("*.idx")):
            data = idx.with_suffix(".bin")
            if not data.is_file():
                continue
            size, raw = data.stat().st_size, idx.read_bytes()
            fd = None
            for start in range(0, len(raw) - self.RECORD.size + 1, self.RECORD.size):
                key, offset, rows = self.RECORD.unpack_from(raw, start)
                if offset + rows * self.row_bytes > size or key in self.index:
                    continue
                if fd is None:
                    fd = os.open(data, os.O_RDONLY)
                    self.fds.append(fd)
                self.index[key] = (fd, offset, rows)
                self.loaded += 1
        self._data = self._records = None
        self._read_fd = -1
        self._offset = 0
        self.written_rows = self.written_bytes = 0

    def get(self, key: bytes) -> torch.Tensor | None:
        where = self.index.get(key)
        if where is None:
            return None
        fd, offset, rows = where
        raw = os.pread(fd, rows * self.row_bytes, offset)
        return torch.frombuffer(bytearray(raw), dtype=self.dtype).view(rows, self.width)

    def put_many(self, items: list[tuple[bytes, torch.Tensor]]) -> None:
        if not items:
            return
        if self._data is None:
            name = f"{self.name}{os.getpid()}-{uuid.uuid4().hex[:12]}"
            self._data = open(self.folder / f"{name}.bin", "ab", buffering=0)
            self._records = open(self.folder / f"{name}.idx", "ab", buffering=0)
            self._read_fd = os.open(self.folder / f"{name}.bin", os.O_RDONLY)
            self.fds.append(self._read_fd)
        chunks, records, offset = [], [], self._offset
        for key, rows in items:
            raw = rows.contiguous().view(torch.uint8).numpy().tobytes()
            chunks.append(raw)
            records.append(self.RECORD.pack(key, offset, rows.shape[0]))
            self.index[key] = (self._read_fd, offset, rows.shape[0])
            offset += len(raw)
        self._data.write(b"".join(chunks))  # the data first: a record never points past what the file holds
        self._records.write(b"".join(records))
        self.written_rows += len(items)
        self.written_bytes += offset - self._offset
        self._offset = offset

    def close(self) -> None:
        for f in (self._data, self._records):
            if f is not None:
                f.close()
        for fd in self.fds:
            os.close(fd)
        self.fds, self.index, self._data, self._records = [], {}, None, None

    def __del__(self):  # a model dropped without close(): its descriptors are not left open
        try:
            self.close()
        except (OSError, AttributeError):
            pass


class StateStore:
    """Prefix states by example key: in memory up to the budget; with a folder, every new entry is also written to disk
    (write-through), so states beyond the budget are read from there and a later process (a resumed run, another run
    with the same frozen prefix, another rank) reloads them instead of recomputing."""

    def __init__(self, max_memory_bytes: int, folder: Path | None, width: int, dtype: torch.dtype, stats: PrefixCacheStats,
                 name: str = ""):
        self.folder, self.stats = folder, stats
        self.memory = _MemoryTier(max_memory_bytes, width, dtype)
        self.disk = _DiskTier(folder, width, dtype, name) if folder is not None else None
        if self.disk is not None:
            stats.disk_loaded_rows += self.disk.loaded

    def get(self, key: bytes) -> torch.Tensor | None:
        rows = self.memory.get(key)
        if rows is None and self.disk is not None:
            rows = self.disk.get(key)
            if rows is not None and self.memory.put(key, rows):  # promoted: the next read is from memory
                self._account()
                rows = self.memory.get(key)
        return rows

    def put_many(self, items: list[tuple[bytes, torch.Tensor]]) -> None:
        if not items:
            return
        kept = [self.memory.put(key, rows) for key, rows in items]
        if self.disk is not None:
            self.disk.put_many(items)
        else:
            self.stats.unstored_rows += kept.count(False)
        self._account()

    def _account(self) -> None:
        s, m = self.stats, self.memory
        s.memory_rows, s.memory_payload_bytes, s.memory_allocated_bytes = len(m.index), m.payload, m.allocated
        s.index_bytes = len(m.index) * _INDEX_ENTRY_BYTES
        if self.disk is not None:
            s.disk_rows, s.disk_bytes = self.disk.written_rows, self.disk.written_bytes

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()
        self.memory = _MemoryTier(0, self.memory.width, self.memory.dtype)
        self.disk = None


# --------------------------------------------------------------------------------------------------------
# The rewiring: hooks on the backbone
# --------------------------------------------------------------------------------------------------------

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


def row_keys(input_ids: torch.Tensor, lengths: list[int], token_type_ids: torch.Tensor | None) -> list[bytes]:
    """One 16-byte key per row: a digest of its unpadded token ids (and token types)."""
    ids = input_ids.numpy()
    types = token_type_ids.numpy() if token_type_ids is not None else None
    keys = []
    for i, n in enumerate(lengths):
        h = hashlib.blake2b(ids[i, :n].tobytes(), digest_size=16)
        if types is not None:
            h.update(b"|")
            h.update(types[i, :n].tobytes())
        keys.append(h.digest())
    return keys


def tensor_keys(values: torch.Tensor) -> list[bytes]:
    """One 16-byte key per row (an image's processed pixels, a clip's log-mel features): a digest of its values, their
    shape and dtype."""
    rows = values.detach().to("cpu").contiguous()
    shape = f"{tuple(rows.shape[1:])}|{rows.dtype}".encode()
    keys = []
    for row in rows:
        h = hashlib.blake2b(row.view(torch.uint8).numpy().tobytes(), digest_size=16)  # any dtype, bfloat16 too
        h.update(b"|")
        h.update(shape)
        keys.append(h.digest())
    return keys


@dataclass
class PrefixCacheOptions:
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB
    cache_dir: str | None = DEFAULT_CACHE_DIR  # None: memory only
    dtype: str = "float32"

    @classmethod
    def from_strategy(cls, strategy) -> "PrefixCacheOptions":
        folder = strategy.prefix_cache_dir
        if folder is None:
            folder = DEFAULT_CACHE_DIR
        elif folder.strip().lower() in ("", "none"):
            folder = None
        return cls(
            max_memory_mb=DEFAULT_MAX_MEMORY_MB if strategy.prefix_cache_max_memory_mb is None else strategy.prefix_cache_max_memory_mb,
            cache_dir=folder,
            dtype=strategy.prefix_cache_dtype or "float32",
        )


# backbone -> the cache installed on it: one per model, shared by every trainer of that model (see `attach`).
_INSTALLED: "weakref.WeakKeyDictionary[nn.Module, FrozenPrefixCache]" = weakref.WeakKeyDictionary()


class FrozenPrefixCache:
    """Installs the cache on a model: a forward pre-hook and a forward hook on its backbone (see the module doc).

    The model's structure is changed only while a forward call of the backbone runs; outside it (saving,
    checkpoints, the layer map, `named_parameters`) the model is exactly as it was built. The cache belongs to
    the model (its frozen prefix): a second trainer of the same model shares it (`attach`).
    """

    @classmethod
    def attach(cls, model: nn.Module, options: PrefixCacheOptions | None = None, rank: int = 0, strategy=None):
        """The cache installed on `model`, or a new one. Two caches on one backbone would each rewire it, so the
        same options share the installed one and other options are refused."""
        options = options or PrefixCacheOptions()
        layout = find_prefix(model, strategy)
        installed = _INSTALLED.get(layout.backbone)
        if installed is None:
            return cls(model, options, rank, strategy)
        if installed.options != options or installed.layout.frozen != layout.frozen:
            raise HfTransferError("this model already has a prefix cache with other settings (another trainer's); "
                                  "call trainer.prefix_cache.close() on that trainer first")
        return installed

    def __init__(self, model: nn.Module, options: PrefixCacheOptions | None = None, rank: int = 0, strategy=None):
        self.options = options or PrefixCacheOptions()
        if self.options.dtype not in STORAGE_DTYPES:
            raise HfTransferError(f"--prefix_cache_dtype {self.options.dtype}: choose one of {', '.join(STORAGE_DTYPES)}")
        self.layout = find_prefix(model, strategy)
        self.rank = rank
        self.stats = PrefixCacheStats()
        self.storage_dtype = STORAGE_DTYPES[self.options.dtype]
        self._feed = StateFeed()
        self._stand_ins = stand_ins(self.layout, self._feed)
        self._prefix_blocks = nn.ModuleList(list(self.layout.blocks)[: self.layout.frozen])
        self._trainable_blocks = nn.ModuleList(list(self.layout.blocks)[self.layout.frozen:])
        self._store: StateStore | None = None
        self._signature = None
        self.namespace: str | None = None
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
    def _prefix_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.layout.modules() for p in m.parameters()]

    def _check_fresh(self, device: torch.device) -> None:
        params = self._prefix_parameters()
        trainable = [p for p in params if p.requires_grad]
        if trainable:
            raise HfTransferError("--cache_frozen_prefix: a parameter of the frozen prefix became trainable (adapters or "
                                  "unfreezing inside the prefix); its cached outputs would be stale")
        signature = (device.type, tuple((id(p), p._version, p.data_ptr()) for p in params))
        if signature == self._signature:
            return
        namespace = self._namespace(device)
        if namespace != self.namespace:
            if self._store is not None:
                self._store.close()
            folder = Path(self.options.cache_dir) / namespace if self.options.cache_dir else None
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "namespace.json").write_text(json.dumps(self._namespace_parts, indent=1, sort_keys=True))
            self._store = StateStore(int(self.options.max_memory_mb * 2**20), folder, self.layout.width,
                                     self.storage_dtype, self.stats, name=f"rank{self.rank}-")
            self.namespace = namespace
            self.stats.namespaces += 1
        self._signature = signature

    def _namespace(self, device: torch.device) -> str:
        import transformers

        from hf_transfer.evidence.features import model_fingerprint

        config = self.layout.backbone.config
        parts = {
            "prefix_weights": model_fingerprint(nn.ModuleList(self.layout.modules())),
            "model_type": config.model_type,
            "prefix_blocks": self.layout.frozen,
            "attention": getattr(config, "_attn_implementation", None),
            "compute_dtype": str(next(self.layout.first_stem_module.parameters()).dtype),
            "storage_dtype": self.options.dtype,
            "device": device.type,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "format": FORMAT_VERSION,
        }
        key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
        self._namespace_parts = parts
        return key

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
        self._unswap()
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

    def _unswap(self) -> None:
        self._swap(self.layout.stem, self.layout.blocks)

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
        token_type_ids = inputs["token_type_ids"]
        types = token_type_ids.detach().to("cpu", torch.int64) if token_type_ids is not None else None
        return row_keys(ids, lengths, types), lengths

    def _states(self, inputs: dict) -> torch.Tensor:
        first = inputs[INPUT_NAMES[self.input_kind]]
        device, rows = first.device, first.shape[0]
        self._check_fresh(device)
        keys, lengths = self._keys(inputs)
        found = [self._store.get(k) for k in keys]
        if all(f is not None for f in found):
            self.stats.cached_batches += 1
            self.stats.cached_rows += rows
            if lengths is None:
                states = torch.stack(found)
            else:  # zeros at padded positions (masked out as keys; see the module doc), up to this batch's width
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
        new, seen = [], set()
        for i, (key, present) in enumerate(zip(keys, found)):
            if present is None and key not in seen:
                seen.add(key)
                new.append((key, on_cpu[i] if lengths is None else on_cpu[i, : lengths[i]]))
        self._store.put_many(new)
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
        """Remove the hooks and release the store (the model is left exactly as it was built)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if _INSTALLED.get(self.layout.backbone) is self:
            del _INSTALLED[self.layout.backbone]
        if self._store is not None:
            self._store.close()
            self._store = None


class PrefixCacheCallback(TrainerCallback):
    """Says what is cached when training starts, and what the cache did when it ends (main process)."""

    def __init__(self, cache: FrozenPrefixCache):
        self.cache = cache

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            options = self.cache.options
            where = f"all also on disk in {options.cache_dir}" if options.cache_dir else "beyond that recomputed"
            logger.info("prefix cache: %s run once per example (eval mode), stored as %s up to %g MB in memory, %s",
                        self.cache.layout.describe(), options.dtype, options.max_memory_mb, where)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            print(self.cache.stats.summary(), flush=True)



