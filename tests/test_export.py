"""recipes/export.py: a trained text classifier's folder (full, LoRA adapter, regression head) to ONNX fp32 and int8,
checked against the PyTorch model by an independent onnxruntime session; predict on the export folder and on the
quantised file; the deployment report's figures against the files and the model; bad input as one line, nothing written."""
from __future__ import annotations

import csv
import json
import shutil
import statistics

import pytest
import torch
from conftest import cli_error, recipe_argv, review_rows, tiny_model, write_csv

from recipes import export, predict, sentiment

pytest.importorskip("onnxruntime", reason="the export needs the onnx extra: pip install 'hf-transfer-toolkit[onnx]'")

QUICK = ["--threads", "1", "--latency_samples", "4", "--timing_rows", "16", "--repeats", "2", "--warmup", "1"]
INT8_BOUND = 0.05  # largest |int8 logit - fp32 logit| allowed on the test reviews (measured: 0.001-0.002)


@pytest.fixture(scope="module")
def trained(tiny_text_model_dir, review_files, tmp_path_factory):
    """Full and LoRA sentiment folders, trained until every validation review is right (confident logits), and the
    full folder exported with int8 and the report."""
    folders = {}
    for name, flags in {"full": [], "lora": ["--strategy", "lora", "--lora_r", "2"]}.items():
        out = tmp_path_factory.mktemp(name) / "out"
        sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, "--learning_rate", "1e-2",
                                   "--num_train_epochs", "4", *flags))
        folders[name] = out
    folders["result"] = export.main(["--model", str(folders["full"]), "--quantize", "int8", *QUICK])
    return folders


def pytorch_logits(folder, texts: list[str]) -> torch.Tensor:
    """The saved model's logits by transformers' own loading (a LoRA adapter merged by peft), fp32."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if (folder / "adapter_config.json").is_file():
        from peft import AutoPeftModelForSequenceClassification

        config = json.loads((folder / "config.json").read_text())
        model = AutoPeftModelForSequenceClassification.from_pretrained(
            folder, id2label={int(k): v for k, v in config["id2label"].items()}, label2id=config["label2id"]).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        return model.eval()(**AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")).logits


def onnx_logits(path, texts: list[str]) -> torch.Tensor:
    """An ONNX file's logits in a plain onnxruntime session, tokenised by the export folder's own tokenizer."""
    import onnxruntime
    from transformers import AutoTokenizer

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    encoded = AutoTokenizer.from_pretrained(path.parent)(texts, padding=True, return_tensors="np")
    return torch.from_numpy(session.run(["logits"], {i.name: encoded[i.name] for i in session.get_inputs()})[0])


def test_exported_logits_equal_pytorchs(trained):
    texts = [t for t, _ in review_rows(24, seed=9)]  # 24 rows padded to their longest: not the traced shape
    exported = trained["full"] / "onnx"
    assert {"model.onnx", "model_quantized.onnx", "config.json", "tokenizer.json"} <= {p.name for p in exported.iterdir()}
    expected = pytorch_logits(trained["full"], texts)
    fp32 = onnx_logits(exported / "model.onnx", texts)
    assert torch.allclose(fp32, expected, atol=1e-5, rtol=1e-4), float((fp32 - expected).abs().max())
    int8 = onnx_logits(exported / "model_quantized.onnx", texts)
    assert float((int8 - expected).abs().max()) <= INT8_BOUND
    assert torch.equal(int8.argmax(-1), expected.argmax(-1))
    assert float((int8 - expected).abs().max()) > 0  # int8 really is another computation


def test_a_lora_adapter_folder_exports_merged(trained, tmp_path):
    out = tmp_path / "exported"
    result = export.main(["--model", str(trained["lora"]), "--output_dir", str(out), "--report", "false"])
    assert result["report"] is None and not (out / "deployment.json").exists() and (out / "model.onnx").is_file()
    texts = [t for t, _ in review_rows(10, seed=3)]
    expected = pytorch_logits(trained["lora"], texts)
    assert torch.allclose(onnx_logits(out / "model.onnx", texts), expected, atol=1e-5, rtol=1e-4)
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}


def predicted(model, table, tmp_path, name: str) -> list[dict]:
    out = tmp_path / f"{name}.jsonl"
    predict.main(["--model", str(model), "--input", str(table), "--output", str(out)])
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_predict_on_the_export_folder_and_on_the_quantised_file_gives_pytorchs_labels(trained, tmp_path):
    table = write_csv(tmp_path / "new.csv", review_rows(20, seed=11))
    exported = trained["full"] / "onnx"
    reference = predicted(trained["full"], table, tmp_path, "pytorch")
    folder = predicted(exported, table, tmp_path, "folder")
    quantised = predicted(exported / "model_quantized.onnx", table, tmp_path, "int8")
    labels = [r["predicted_label"] for r in reference]
    assert [r["predicted_label"] for r in folder] == labels == [r["predicted_label"] for r in quantised]
    assert labels == [label for _, label in review_rows(20, seed=11)]  # the model is right, so the labels mean something
    for pytorch_row, onnx_row in zip(reference, folder):
        assert onnx_row["score"] == pytest.approx(pytorch_row["score"], abs=1e-5)


def test_predicts_bf16_autocast_leaves_the_onnx_model_in_fp32(trained, tmp_path, monkeypatch):
    from hf_transfer.run import launch

    monkeypatch.setenv("HF_TRANSFER_AUTO_BF16", "1")
    monkeypatch.setattr(launch, "_cpu_flags", lambda: {"avx512_bf16"})  # predict would pick bf16 for a PyTorch model
    rows = review_rows(8, seed=12)
    table = write_csv(tmp_path / "new.csv", rows)
    exported = trained["full"] / "onnx" / "model.onnx"
    scores = [r["score"] for r in predicted(exported, table, tmp_path, "onnx")]
    expected = onnx_logits(exported, [t for t, _ in rows]).softmax(-1).max(-1).values
    assert scores == pytest.approx(expected.tolist(), abs=1e-6)


def test_the_deployment_report_matches_the_files_and_the_model(trained, review_files):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    exported = trained["full"] / "onnx"
    report = json.loads((exported / "deployment.json").read_text())
    assert report == trained["result"]["report"]
    models = {m["key"]: m for m in report["models"]}
    assert list(models) == ["pytorch_fp32", "onnx_fp32", "onnx_int8"]
    on_disk = {"pytorch_fp32": trained["full"] / "model.safetensors", "onnx_fp32": exported / "model.onnx",
               "onnx_int8": exported / "model_quantized.onnx"}
    for key, path in on_disk.items():
        assert models[key]["files"] == [path.name] and models[key]["bytes"] == path.stat().st_size
        assert models[key]["size_ratio"] == pytest.approx(path.stat().st_size / on_disk["pytorch_fp32"].stat().st_size)
    model = AutoModelForSequenceClassification.from_pretrained(trained["full"])
    assert report["parameters"] == sum(p.numel() for p in model.parameters())

    # Accuracy on the run's validation file (from run.json), computed here apart.
    rows = list(csv.DictReader(open(review_files["validation"])))
    with torch.no_grad():
        tokens = AutoTokenizer.from_pretrained(trained["full"])([r["text"] for r in rows], padding=True, return_tensors="pt")
        classes = model.eval()(**tokens).logits.argmax(-1).tolist()
    right = sum(model.config.id2label[c] == r["label"] for c, r in zip(classes, rows))
    assert report["validation"] == {"source": f"{review_files['validation']} ({len(rows)} rows)", "rows": len(rows),
                                    "metric": "accuracy"}
    assert models["pytorch_fp32"]["accuracy"] == pytest.approx(right / len(rows))
    assert models["onnx_fp32"]["agreement"] == 1.0 and models["onnx_fp32"]["max_logit_difference"] < 1e-5
    texts = [r["text"] for r in rows]  # one batch, as the report scores 16 rows at batch 32 (int8 scales are per batch)
    int8 = onnx_logits(exported / "model_quantized.onnx", texts)
    int8_difference = float((int8 - pytorch_logits(trained["full"], texts)).abs().max())
    assert models["onnx_int8"]["max_logit_difference"] == pytest.approx(int8_difference, abs=1e-6)
    assert 0 < models["onnx_int8"]["max_logit_difference"] <= INT8_BOUND

    assert report["timing"]["threads"] == [1] and report["timing"]["latency_samples"] == 4
    for m in models.values():
        assert set(m["latency_ms"]) == set(m["throughput"]) == {"1"}
        assert 0 < m["latency_ms"]["1"]["p50"] <= m["latency_ms"]["1"]["p95"]
        assert len(m["throughput"]["1"]["passes"]) == 2
        assert m["throughput"]["1"]["rows_per_s"] == pytest.approx(statistics.median(m["throughput"]["1"]["passes"]))


def test_the_card_gets_one_deployment_section_replaced_by_a_new_export(trained, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(trained["full"], folder, ignore=shutil.ignore_patterns("onnx"))
    export.main(["--model", str(folder), *QUICK])
    export.main(["--model", str(folder), *QUICK])  # again, over the first export: replaced, not appended
    card = (folder / "README.md").read_text()
    original = (trained["full"] / "README.md").read_text().split("## Deployment")[0]
    assert card.count("## Deployment") == 1 and card.startswith(original)
    section = card.split("## Deployment\n\n", 1)[1]
    assert section == (folder / "onnx" / "deployment.md").read_text().split("# Deployment report\n\n", 1)[1]
    assert "| ONNX fp32 | `model.onnx` |" in section and "ONNX int8" not in section
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no partial folder left behind


def test_a_regression_head_exports_and_is_scored_by_rmse(tiny_text_model_dir, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path / "regression"
    torch.manual_seed(4)
    config = BertConfig.from_pretrained(tiny_text_model_dir, num_labels=1, problem_type="regression")
    BertForSequenceClassification(config).save_pretrained(folder)  # a random head: the export need not care
    AutoTokenizer.from_pretrained(tiny_text_model_dir).save_pretrained(folder)
    rows = [(text, f"{i / 3:.3f}") for i, (text, _) in enumerate(review_rows(9, seed=4))]
    table = write_csv(tmp_path / "scores.csv", rows, header=("text", "score"))
    result = export.main(["--model", str(folder), "--validation_file", str(table), "--label_column", "score", *QUICK])
    expected = pytorch_logits(folder, [t for t, _ in rows])[:, 0]
    assert torch.allclose(onnx_logits(folder / "onnx" / "model.onnx", [t for t, _ in rows])[:, 0], expected, atol=1e-5)
    truth = torch.tensor([float(y) for _, y in rows])
    models = {m["key"]: m for m in result["report"]["models"]}
    assert result["report"]["validation"]["metric"] == "rmse"
    assert models["pytorch_fp32"]["rmse"] == pytest.approx(float(((expected - truth) ** 2).mean().sqrt()), rel=1e-5)
    assert models["onnx_fp32"]["rmse"] == pytest.approx(models["pytorch_fp32"]["rmse"], rel=1e-5)


def test_bad_input_is_one_line_and_writes_nothing(trained, tiny_text_model_dir, tmp_path, monkeypatch, capsys):
    import importlib.util

    model = tmp_path / "model"
    shutil.copytree(trained["full"], model, ignore=shutil.ignore_patterns("onnx"))
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    image = tmp_path / "vit"
    tiny_model("vit").save_pretrained(image)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    wrong = write_csv(tmp_path / "wrong.csv", [("the movie was great", "thrilled")])
    cases = [
        (["--model", str(tmp_path / "busy")], "is not a model folder (no config.json)"),
        (["--model", str(tiny_text_model_dir)], "holds a BertModel model; export takes text classifiers"),
        (["--model", str(image)], "holds a ViTForImageClassification model; export takes text classifiers"),
        (["--model", str(model), "--quantize", "fp16"], "--quantize fp16: unknown; choose int8"),
        (["--model", str(trained["full"] / "onnx")], "is already an ONNX export; give the trained model's output folder"),
        (["--model", str(model), "--output_dir", str(busy)], f"--output_dir {busy} holds other files"),
        (["--model", str(model), "--validation_file", str(wrong)], "labels thrilled are not the model's (negative, positive)"),
        (["--model", str(model), "--threads", "0"], "--threads takes thread counts of 1 or more"),
    ]
    for argv, message in cases:
        assert message in cli_error(export.main, argv, monkeypatch, capsys)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
    line = cli_error(export.main, ["--model", str(model)], monkeypatch, capsys)
    assert "needs onnxruntime, not installed: pip install 'hf-transfer-toolkit[onnx]'" in line
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"] and not (image / "onnx").exists()


def test_predict_without_onnxruntime_says_to_install_the_extra(trained, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    table = write_csv(tmp_path / "new.csv", review_rows(2))
    line = cli_error(predict.main, ["--model", str(trained["full"] / "onnx"), "--input", str(table)], monkeypatch, capsys)
    assert "needs onnxruntime, which is not installed: pip install 'hf-transfer-toolkit[onnx]'" in line
    assert not (tmp_path / "new_predictions.csv").exists()


def test_a_new_run_over_the_folder_removes_the_old_export(trained, tiny_text_model_dir, review_files, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(trained["full"], folder)
    assert (folder / "onnx" / "model.onnx").is_file() and "## Deployment" in (folder / "README.md").read_text()
    sentiment.main(recipe_argv(tiny_text_model_dir, review_files, folder, "--overwrite_output_dir", "true"))
    assert not (folder / "onnx").exists() and "## Deployment" not in (folder / "README.md").read_text()
