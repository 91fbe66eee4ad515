"""hf_transfer: transfer learning on the Hugging Face stack. The layer map feeds every strategy."""
from .config import parse_args
from .errors import HfTransferError
from .layers import ARCHITECTURES, LayerGroup, head_module_names, layer_groups
from .strategies import StrategyArgs, apply_strategy, count_parameters
from .trainer import GradualUnfreezing, TransferTrainer, layerwise_parameter_groups

__all__ = [
    "ARCHITECTURES",
    "GradualUnfreezing",
    "HfTransferError",
    "LayerGroup",
    "StrategyArgs",
    "TransferTrainer",
    "apply_strategy",
    "count_parameters",
    "head_module_names",
    "layer_groups",
    "layerwise_parameter_groups",
    "parse_args",
]
