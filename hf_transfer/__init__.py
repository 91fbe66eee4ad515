"""hf_transfer: transfer learning on the Hugging Face stack. The layer map feeds every strategy.

The names below are imported on first use (PEP 562 module `__getattr__`), so `import hf_transfer` and a
recipe's `--help` do not pay for torch and transformers' Trainer before they are needed, and
`from hf_transfer import TransferTrainer` imports the trainer module then.
"""
from __future__ import annotations

import importlib

from hf_transfer.errors import HfTransferError

# Public name -> the submodule that defines it.
_EXPORTS = {
    "parse_args": "cli",
    "ARCHITECTURES": "layers",
    "ArchitectureSpec": "layers",
    "LayerGroup": "layers",
    "Stack": "layers",
    "add_to_head": "layers",
    "head_module_names": "layers",
    "layer_groups": "layers",
    "StrategyArgs": "strategies",
    "apply_strategy": "strategies",
    "count_parameters": "strategies",
    "GradualUnfreezing": "trainer",
    "Seq2SeqTransferTrainer": "trainer",
    "TransferTrainer": "trainer",
    "TransferTrainerMixin": "trainer",
    "layerwise_parameter_groups": "trainer",
}

__all__ = sorted(["HfTransferError", *_EXPORTS])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    try:  # `hf_transfer.layers` as an attribute, without importing the submodule first
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
