"""An exported text classifier (an ONNX file written by hf_transfer.sharing.export) run by onnxruntime on the CPU.

`OnnxClassifier` stands in for a transformers model where predict's loop uses one: it has `.config`, `.eval()` and
`.to(device)` (no-ops), and called with the tokenizer's tensors it returns an object whose `.logits` is a float32
torch tensor on the CPU. onnxruntime computes outside torch, so torch's autocast never changes its precision.
"""
from __future__ import annotations

from pathlib import Path

from hf_transfer.errors import HfTransferError

EXPORTED_MODEL = "model.onnx"  # the fp32 export; quantised ones sit beside it (model_quantized.onnx)
PYTORCH_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "adapter_config.json")
ONNX_EXTRA = "pip install 'hf-transfer-toolkit[onnx]'"


def onnx_model_file(model: str | Path) -> Path | None:
    """The ONNX file `model` names: a .onnx file, or an export folder (model.onnx and no PyTorch weights); else None."""
    path = Path(model)
    if path.suffix.lower() == ".onnx" and path.is_file():
        return path
    if path.is_dir() and (path / EXPORTED_MODEL).is_file() and not any(any(path.glob(p)) for p in PYTORCH_WEIGHTS):
        return path / EXPORTED_MODEL
    return None


def config_folder(model: str | Path) -> Path:
    """Where the config of `model` sits: the folder itself, or the export folder of an .onnx file."""
    path = Path(model)
    return path.parent if path.suffix.lower() == ".onnx" and path.is_file() else path


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise HfTransferError(f"running an ONNX model needs onnxruntime, which is not installed: {ONNX_EXTRA}") from error
    return onnxruntime


class OnnxClassifier:
    """A sequence classifier's ONNX file in an onnxruntime session (CPU), called like the transformers model it came from."""

    def __init__(self, path: str | Path, config, threads: int | None = None) -> None:
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        if threads is not None:  # None: onnxruntime's default, one thread per physical core
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types (Fail, InvalidGraph, NoSuchFile) for bad files
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise HfTransferError(f"onnxruntime cannot load {path}: {message}") from error
        self.path = Path(path)
        self.config = config
        self.input_names = [i.name for i in self.session.get_inputs()]

    def eval(self) -> OnnxClassifier:
        return self

    def to(self, *args, **kwargs) -> OnnxClassifier:
        return self  # onnxruntime's CPU session: the inputs come back to the CPU in __call__

    def __call__(self, **inputs):
        import numpy as np
        import torch
        from transformers.modeling_outputs import SequenceClassifierOutput

        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise HfTransferError(f"{self.path} needs the inputs {', '.join(missing)}, which the tokenizer did not give; "
                                  "export the model again with its own tokenizer")
        feed = {}
        for name in self.input_names:  # inputs the graph does not take (e.g. token_type_ids it ignores) are left out
            value = inputs[name]
            value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            feed[name] = value if value.dtype == np.int64 else value.astype(np.int64)
        (logits,) = self.session.run(["logits"], feed)
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))
