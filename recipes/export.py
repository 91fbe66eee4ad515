"""Export a trained text classifier for CPU serving: ONNX (and int8), checked against PyTorch, with a deployment report.

    python recipes/export.py --model outputs/sentiment                       # -> outputs/sentiment/onnx/model.onnx
    python recipes/export.py --model outputs/sentiment --quantize int8       # also model_quantized.onnx
    python recipes/predict.py --model outputs/sentiment/onnx/model_quantized.onnx --input new.csv

The export folder holds the ONNX file(s), the config and the tokenizer: alone, it is enough to serve. The report
(deployment.json, deployment.md, and a Deployment section in the model's card) gives size, CPU latency and throughput
of PyTorch fp32 and each export, and their accuracy on the run's validation file. Needs the `onnx` extra:
`pip install 'hf-transfer-toolkit[onnx]'`. From Python: `from recipes.export import main; main(["--model", ...])`.
"""
from hf_transfer.cli import parse_args, run_cli
from hf_transfer.sharing.export import ExportArgs, export


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_args((ExportArgs,), argv)
    return export(args)


if __name__ == "__main__":
    run_cli(main)
