"""hf_transfer: transfer learning on the Hugging Face stack. The layer map feeds every strategy."""
from .config import parse_args
from .errors import HfTransferError
from .layers import ARCHITECTURES, ArchitectureSpec, LayerGroup, Stack, add_to_head, head_module_names, layer_groups
from .strategies import StrategyArgs, apply_strategy, count_parameters
from .trainer import (
    GradualUnfreezing, Seq2SeqTransferTrainer, TransferTrainer, TransferTrainerMixin, layerwise_parameter_groups,
)

__all__ = [
    "ARCHITECTURES",
    "ArchitectureSpec",
    "GradualUnfreezing",
    "HfTransferError",
    "LayerGroup",
    "Seq2SeqTransferTrainer",
    "Stack",
    "StrategyArgs",
    "TransferTrainer",
    "TransferTrainerMixin",
    "add_to_head",
    "apply_strategy",
    "count_parameters",
    "head_module_names",
    "layer_groups",
    "layerwise_parameter_groups",
    "parse_args",
]
