"""The image classification recipe on a tiny ViT: every strategy, what it saves, bad input, and the feature probe."""
import json

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, cli_error
from image_helpers import make_label_folders, save_tiny_vit, write_bad_images
from safetensors.torch import load_file
from trainer_helpers import (
    BatchRecorder,
    assert_same_batches,
    assert_same_weights,
    keep_only_checkpoint,
    stop_runs_after,
)

from hf_transfer.errors import HfTransferError
from recipes import image_classification, linear_probe


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp("vit") / "tiny-vit")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    make_label_folders(root / "train", per_label=8, seed=0)
    make_label_folders(root / "validation", per_label=3, seed=1)
    write_bad_images(root / "train" / "red")  # five unusable files among the training images: skipped, counted
    return root


def argv(vit, images, out, *extra):
    return ["--model_name_or_path", str(vit), "--train_dir", str(images / "train"),
            "--validation_dir", str(images / "validation"), "--output_dir", str(out), "--num_train_epochs", "3",
            "--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--logging_steps", "1",
            "--save_strategy", "no", "--eval_strategy", "no", "--disable_tqdm", "true", "--seed", "0", *extra]


def base_weights(vit) -> dict:
    return {f"vit.{k}": v for k, v in load_file(str(vit / "model.safetensors")).items() if not k.startswith("pooler.")}


def unchanged(saved: dict, base: dict) -> dict[str, bool]:
    return {k: torch.equal(saved[k], v) for k, v in base.items()}


@pytest.fixture(scope="module")
def full_run(vit, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "out"
    return out, image_classification.main(argv(vit, images, out))


def test_full_run_learns_saves_the_processor_and_counts_skipped_files(full_run, vit):
    from transformers import AutoConfig, AutoImageProcessor

    out, metrics = full_run
    assert metrics["validation_accuracy"] >= 5 / 6, metrics
    assert metrics["train_bad_images_skipped"] == 5 and metrics["train_images"] == 16 and metrics["validation_images"] == 6
    assert metrics["label_names"] == ["blue", "red"] and metrics["task"] == "image classification"
    assert AutoConfig.from_pretrained(out).id2label == {0: "blue", 1: "red"}
    processor = AutoImageProcessor.from_pretrained(out)  # the checkpoint's own processor, saved with the model
    assert (processor.size["height"], processor.size["width"]) == (16, 16) and list(processor.image_mean) == [0.5] * 3
    assert (out / "model.safetensors").is_file() and not list(out.glob("pytorch_model*.bin"))
    saved = load_file(str(out / "model.safetensors"))
    assert not any(unchanged(saved, base_weights(vit)).values()), "full fine-tuning left a weight untouched"
    card = (out / "README.md").read_text()
    assert "pipeline_tag: image-classification" in card and 'pipeline("image-classification"' in card


def test_a_run_killed_mid_epoch_resumes_with_the_same_crops_and_flips_and_ends_bitwise_equal(vit, images, tmp_path,
                                                                                              monkeypatch):
    """Crops and flips (both on by default) draw from each row's own generator for the epoch: the resumed run, though it
    skips its epoch's first batches without collating them, trains on the uninterrupted run's pixel values; here it
    even resumes on two persistent DataLoader workers where the first run had none."""
    flags = ["--num_train_epochs", "2", "--save_strategy", "steps", "--save_steps", "2"]
    recorder = BatchRecorder(monkeypatch)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    image_classification.main(argv(vit, images, whole, *flags))
    uninterrupted = recorder.take()  # 16 images, batches of 4, 2 epochs: 8 steps
    with monkeypatch.context() as patch:
        stop_runs_after(6, patch)  # killed right after checkpoint-6, in the middle of the second epoch
        image_classification.main(argv(vit, images, cut, *flags))
    recorder.take()
    keep_only_checkpoint(cut, "checkpoint-6")
    resumed = image_classification.main(argv(vit, images, cut, *flags, "--resume_from_checkpoint", "last",
                                             "--dataloader_num_workers", "2", "--dataloader_persistent_workers", "true"))
    assert resumed["resumed_from_step"] == 6
    assert_same_batches(uninterrupted[6:], recorder.take())
    assert_same_weights(whole / "model.safetensors", cut / "model.safetensors")
    # Drawn anew each epoch: the second epoch's 16 training images are not the first's in another order.
    pixels = [b["pixel_values"] for b in uninterrupted]
    as_a_set = lambda x: x[x.flatten(1).sum(1).argsort()]
    assert not torch.equal(as_a_set(torch.cat(pixels[:4])), as_a_set(torch.cat(pixels[4:])))


def test_freeze_bottom_block_with_layer_lr_decay(vit, images, tmp_path):
    out = tmp_path / "out"
    metrics = image_classification.main(argv(vit, images, out, "--strategy", "freeze", "--freeze_bottom", "1",
                                             "--layer_lr_decay", "0.5", "--num_train_epochs", "1"))
    same = unchanged(load_file(str(out / "model.safetensors")), base_weights(vit))
    # Saved files keep the checkpoint names of transformers 4 (encoder.layer.N), which v5 maps to `layers.N` on loading.
    frozen = {k: v for k, v in same.items() if k.startswith(("vit.embeddings.", "vit.encoder.layer.0."))}
    trained = {k: v for k, v in same.items() if k not in frozen}
    assert frozen and all(frozen.values()), "a frozen weight changed"
    assert trained and not any(trained.values()), "a trainable weight did not change"
    assert metrics["trainable_parameters"] < metrics["total_parameters"]


def test_layer_lr_decay_follows_the_vit_blocks():
    from transformers import ViTConfig, ViTForImageClassification

    from hf_transfer.layers import layer_groups
    from hf_transfer.trainer import layerwise_parameter_groups

    model = ViTForImageClassification(ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=2, intermediate_size=37))
    groups = layerwise_parameter_groups(layer_groups(model), 1e-3, 0.5, 0.0, set())
    rates = {g["layer_group"]: g["lr"] for g in groups}
    assert rates == {"embeddings": 1e-3 / 8, "block_0": 1e-3 / 4, "block_1": 1e-3 / 2, "head": 1e-3}
    head = {id(p) for g in groups if g["layer_group"] == "head" for p in g["params"]}
    assert {id(p) for p in [*model.classifier.parameters(), *model.vit.layernorm.parameters()]} == head


def test_gradual_unfreezing_trains_the_head_alone_first(vit, images, tmp_path):
    out = tmp_path / "out"
    image_classification.main(argv(vit, images, out, "--strategy", "gradual", "--num_train_epochs", "1"))
    saved = load_file(str(out / "model.safetensors"))
    same = unchanged(saved, base_weights(vit))
    body = {k: v for k, v in same.items() if not k.startswith("vit.layernorm.")}
    assert all(body.values()), "a block changed during the head-only first epoch"
    assert not same["vit.layernorm.weight"], "the head (ViT's final layer norm and the classifier) did not train"


@pytest.fixture(scope="module")
def lora_run(vit, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "out"
    return out, image_classification.main(argv(vit, images, out, "--strategy", "lora", "--lora_r", "4",
                                               "--learning_rate", "1e-2"))


def _validation_loss(model, out, images) -> float:
    from transformers import AutoImageProcessor

    from hf_transfer.data.image import ImageCollator

    paths = sorted((images / "validation").rglob("*.png"))
    rows = [{"image": str(p), "labels": int(p.parent.name == "red")} for p in paths]
    batch = ImageCollator(AutoImageProcessor.from_pretrained(out))(rows)
    with torch.no_grad():
        return float(model.eval()(**batch).loss)


def test_lora_reloads_with_its_trained_head_and_label_names(lora_run, vit, images):
    from peft import PeftConfig, PeftModel
    from transformers import AutoConfig, ViTForImageClassification

    out, metrics = lora_run
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q_proj", "v_proj"}  # transformers 5 names, from the layer map
    assert set(adapter["modules_to_save"]) == {"classifier", "vit.layernorm"}
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert any("classifier" in k for k in saved) and any("lora_A" in k for k in saved)
    assert not (out / "model.safetensors").exists()

    # As the card says: the saved config (label names) over the base named by the adapter, then the adapter.
    config = AutoConfig.from_pretrained(out)
    base = ViTForImageClassification.from_pretrained(PeftConfig.from_pretrained(out).base_model_name_or_path, config=config)
    model = PeftModel.from_pretrained(base, out).merge_and_unload()
    assert model.config.id2label == {0: "blue", 1: "red"}
    # The reloaded model scores the validation images as the run did: the trained head came back, not a random one.
    assert _validation_loss(model, out, images) == pytest.approx(metrics["validation_loss"], abs=1e-4)
    assert metrics["validation_accuracy"] >= 5 / 6


def test_lora_on_all_linear_layers(vit, images, tmp_path):
    out = tmp_path / "out"
    image_classification.main(argv(vit, images, out, "--strategy", "lora", "--lora_target_modules", "all-linear",
                                   "--lora_r", "2", "--num_train_epochs", "1"))
    adapter = json.loads((out / "adapter_config.json").read_text())
    adapted = {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"} <= adapted, adapter["target_modules"]
    # peft's all-linear also lists the classifier (ViT has no output embeddings to exclude it by), but a module in
    # modules_to_save is wrapped whole first: the new head trains and is saved in full, with no adapter of its own.
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert "classifier" in adapter["modules_to_save"]
    assert any(k.endswith("classifier.weight") and "lora" not in k for k in saved)
    assert not any("classifier" in k and "lora_" in k for k in saved)
    assert any("fc1.lora_A" in k for k in saved)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """An image model the layer map does not know (ResNet), with a ViT-style processor at its input size."""
    from transformers import ResNetConfig, ResNetModel, ViTImageProcessor

    folder = tmp_path_factory.mktemp("resnet") / "tiny-resnet"
    torch.manual_seed(0)
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")).save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


def test_a_model_the_layer_map_lacks_runs_with_strategy_full(resnet, images, tmp_path):
    metrics = image_classification.main(argv(resnet, images, tmp_path / "out", "--num_train_epochs", "1"))
    assert metrics["strategy"] == "full" and "validation_accuracy" in metrics

    # Its frozen features: feature maps are averaged over height and width, one value per channel.
    from datasets import Dataset
    from transformers import AutoImageProcessor, ResNetModel

    from hf_transfer.data.image import ImageCollator
    from hf_transfer.evidence.features import embed

    backbone, collator = ResNetModel.from_pretrained(resnet), ImageCollator(AutoImageProcessor.from_pretrained(resnet))
    paths = sorted(str(p) for p in (images / "validation").rglob("*.png"))
    maps = backbone(**collator([{"image": p} for p in paths])).last_hidden_state.detach()
    features = embed(backbone, Dataset.from_dict({"image": paths}), collator)
    np.testing.assert_allclose(features, maps.mean((2, 3)).numpy(), atol=1e-5)
    with pytest.raises(HfTransferError, match="--pooling cls needs a model with a CLS token"):
        embed(backbone, Dataset.from_dict({"image": paths}), collator, pooling="cls")


def test_bad_input_is_one_line_exit_2_and_writes_nothing(vit, resnet, images, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    error = cli_error(image_classification.main, argv(vit, images, out, "--on_bad_image", "error"), monkeypatch, capsys)
    assert error.startswith("error: 5 unusable image file(s) in the train split: ") and "--on_bad_image skip" in error
    error = cli_error(image_classification.main, argv(resnet, images, out, "--strategy", "freeze", "--freeze_bottom", "1"),
                      monkeypatch, capsys)
    assert "model type 'resnet' is not in the layer map" in error and "--strategy full" in error
    small = tmp_path / "vit-processor-32"
    save_tiny_vit(small)
    from transformers import ViTImageProcessor

    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(small)
    error = cli_error(image_classification.main, argv(small, images, out), monkeypatch, capsys)
    assert "the image processor gives 32x32 images but the model takes 16x16" in error
    error = cli_error(image_classification.main, argv(vit, images, out, "--remove_unused_columns", "true"), monkeypatch, capsys)
    assert "--remove_unused_columns false" in error
    assert not out.exists()


def test_linear_probe_on_images_cls_and_mean_with_the_cache(vit, images, tmp_path):
    common = ["--recipe", "image_classification", "--model_name_or_path", str(vit), "--train_dir", str(images / "train"),
              "--validation_dir", str(images / "validation"), "--feature_cache_dir", str(tmp_path / "cache")]
    mean = linear_probe.main(common + ["--output_dir", str(tmp_path / "mean"), "--k_folds", "2", "--heads", "linear_svm"])
    assert mean["feature_dim"] == 32 and mean["train_examples"] == 16 and not mean["feature_cache_hit"]
    assert "cv2_linear_svm_accuracy_mean" in mean
    again = linear_probe.main(common + ["--output_dir", str(tmp_path / "again"), "--heads", "linear_svm"])
    assert again["feature_cache_hit"] and again["validation_accuracy"] == mean["validation_accuracy"]
    cls = linear_probe.main(common + ["--output_dir", str(tmp_path / "cls"), "--pooling", "cls", "--heads", "linear_svm"])
    assert not cls["feature_cache_hit"]  # another pooling, another entry

    # The two poolings read the backbone as documented: the CLS token, and the mean over the patches without it.
    from transformers import AutoImageProcessor, ViTModel

    from hf_transfer.data.image import ImageCollator
    from hf_transfer.evidence.features import embed

    backbone = ViTModel.from_pretrained(vit)
    from datasets import Dataset

    paths = sorted(str(p) for p in (images / "validation").rglob("*.png"))
    dataset = Dataset.from_dict({"image": paths, "labels": [0] * len(paths)})
    collator = ImageCollator(AutoImageProcessor.from_pretrained(vit))
    hidden = backbone(pixel_values=collator([{"image": p} for p in paths])["pixel_values"]).last_hidden_state.detach()
    np.testing.assert_allclose(embed(backbone, dataset, collator, pooling="cls"), hidden[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(embed(backbone, dataset, collator, pooling="mean"), hidden[:, 1:].mean(1).numpy(), atol=1e-5)

    # The probe's accuracy recomputed: mean-pooled features of the readable images (the bad files are not named
    # <digits>.png), a linear SVM fitted on the folder names, its validation predictions scored by scikit-learn.
    from sklearn.metrics import accuracy_score

    from hf_transfer.evidence.features import fit_head

    def features_and_labels(split):
        readable = sorted(p for p in (images / split).glob("*/*.png") if p.stem.isdigit())
        rows = Dataset.from_dict({"image": [str(p) for p in readable], "labels": [0] * len(readable)})
        return embed(backbone, rows, collator, pooling="mean"), np.array([p.parent.name for p in readable])

    (x_train, y_train), (x_validation, y_validation) = features_and_labels("train"), features_and_labels("validation")
    predicted = fit_head("linear_svm", x_train, y_train, seed=42).predict(x_validation)
    assert mean["validation_accuracy"] == pytest.approx(accuracy_score(y_validation, predicted))


def test_compare_on_images_gives_the_learning_curve(vit, images, tmp_path):
    from recipes import compare

    result = compare.main([
        "--recipe", "image_classification", "--strategies", "lora", "--seeds", "1", "--train_sizes", "2",
        "--in_process", "true", "--output_dir", str(tmp_path / "compare"), "--feature_cache_dir", str(tmp_path / "cache"),
        "--recipe_args", f"--model_name_or_path {vit} --train_dir {images / 'train'} --validation_dir {images / 'validation'} "
                         "--num_train_epochs 1 --per_device_train_batch_size 4 --learning_rate 3e-3 --save_strategy no "
                         "--eval_strategy no --disable_tqdm true"])
    arms = {(r["arm"], r["train_size"]) for r in result["runs"]}
    assert arms == {(a, s) for a in ("scratch", "frozen+logistic_regression", "lora") for s in (2,)}
    # The subset is drawn before the files are checked: a bad file drawn into it is skipped, and counted.
    assert all(r["train_examples"] + r.get("train_bad_images_skipped", 0) == 2 * r["train_size"]
               for r in result["runs"] if r["arm"] != "frozen+logistic_regression")
    report = (tmp_path / "compare" / "report.md").read_text()
    assert "validation_accuracy by training-set size" in report
    assert (tmp_path / "compare" / "learning_curve_by_train_size.png").is_file()


@pytest.mark.real_data
def test_cifar10_loads_in_place():
    from hf_transfer.data.image import ImageDataArgs, load_image_classification

    root = SHARED_DATA / "cifar10"
    if not (root / "train").is_dir():
        pytest.skip(f"{root} is absent (see data_cards/cifar10.md)")
    data = load_image_classification(ImageDataArgs(train_dir=str(root / "train"), max_train_samples_per_class=2,
                                                   max_eval_samples=50))
    assert data.label_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert data.report["train_images"] == 20 and data.report["train_bad_images_skipped"] == 0
    from hf_transfer.data.image import load_image

    assert load_image(data.datasets["train"][0]["image"]).size == (32, 32)
