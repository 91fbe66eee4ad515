"""The image data layer: every image mode to upright RGB, bad files found before training, sources, and the collator."""
import json
import logging
import types

import numpy as np
import pytest
import torch
from image_helpers import COLOURS, make_label_folders, write_bad_images

from hf_transfer import HfTransferError
from hf_transfer.data.image import (
    ImageAugmentArgs,
    ImageCollator,
    ImageDataArgs,
    crop_box,
    load_image,
    load_image_classification,
)
from hf_transfer.tasks.image_classification import check_training_args


def _pixel(path, xy=(0, 0)):
    image = load_image(str(path))
    assert image.mode == "RGB"
    return image.getpixel(xy)


def test_every_mode_becomes_upright_rgb(tmp_path):
    from PIL import Image

    # Grayscale and 1-bit.
    Image.new("L", (3, 3), 77).save(tmp_path / "gray.png")
    assert _pixel(tmp_path / "gray.png") == (77, 77, 77)
    Image.new("1", (3, 3), 1).save(tmp_path / "bits.png")
    assert _pixel(tmp_path / "bits.png") == (255, 255, 255)
    # Palette: a plain one keeps its colours; a transparent index is composited on white, not shown as its colour.
    palette = Image.new("P", (2, 1))
    palette.putpalette([200, 10, 10, 0, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "palette.png")
    assert _pixel(tmp_path / "palette.png", (0, 0)) == (200, 10, 10)
    palette.save(tmp_path / "palette_transparent.png", transparency=1)
    assert _pixel(tmp_path / "palette_transparent.png", (1, 0)) == (255, 255, 255)
    # RGBA and LA: transparent -> white (a plain convert shows the hidden colour), half-transparent -> blended with white.
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (255, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 128))
    rgba.save(tmp_path / "rgba.png")
    assert _pixel(tmp_path / "rgba.png", (0, 0)) == (255, 255, 255)
    assert _pixel(tmp_path / "rgba.png", (1, 0)) == (127, 127, 255)
    Image.new("LA", (1, 1), (0, 0)).save(tmp_path / "la.png")
    assert _pixel(tmp_path / "la.png") == (255, 255, 255)
    # CMYK JPEG: pure cyan-free magenta+yellow is red.
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    red = _pixel(tmp_path / "cmyk.jpg", (4, 4))
    assert red[0] > 240 and red[1] < 15 and red[2] < 15, red
    # 16-bit grayscale: scaled to 8 bits, not clipped (a plain convert("L") makes everything above 255 white).
    Image.fromarray(np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode == "I;16"
    assert [_pixel(tmp_path / "gray16.png", (x, 0))[0] for x in range(4)] == [0, 128, 255, 4]
    # EXIF orientation 6 (rotate 90 degrees clockwise to display): a 32x16 stored image is shown 16x32, and its green
    # top-left corner is shown top right.
    stored = Image.new("RGB", (32, 16), (255, 0, 0))
    stored.paste((0, 255, 0), (0, 0, 8, 8))
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    upright = load_image(str(tmp_path / "rotated.jpg"))
    assert upright.size == (16, 32)
    assert upright.getpixel((12, 3))[1] > 200 and upright.getpixel((3, 3))[0] > 200


@pytest.fixture
def folders(tmp_path):
    make_label_folders(tmp_path / "train", per_label=4, seed=0)
    make_label_folders(tmp_path / "validation", per_label=2, seed=1)
    bad = write_bad_images(tmp_path / "train" / "red")
    (tmp_path / "train" / "red" / "readme.txt").write_text("not an image suffix: ignored, not counted")
    return tmp_path, bad


def test_bad_files_are_skipped_counted_and_logged(folders, caplog):
    root, bad = folders
    with caplog.at_level(logging.WARNING, logger="hf_transfer.data.media"):
        data = load_image_classification(ImageDataArgs(train_dir=str(root / "train"), validation_dir=str(root / "validation")))
    assert data.report["train_bad_images_skipped"] == len(bad) == 5
    assert data.report["train_images"] == 8 and data.report["validation_bad_images_skipped"] == 0
    assert sorted(data.datasets["train"]["image"]) == sorted(str(p) for p in (root / "train").rglob("[0-9].png"))
    assert "skipped 5 unusable image file(s) in the train split" in caplog.text
    reasons = {kind: next(r.message for r in caplog.records if str(path) in r.message) for kind, path in bad.items()}
    assert "empty file" in reasons["empty"] and "not an image" in reasons["not_an_image"]
    assert "truncated" in reasons["truncated_jpeg"].lower() and "truncated" in reasons["truncated_png"].lower()
    assert data.label_names == ["blue", "red"] and all(data.datasets["train"]["augment"])
    assert "augment" not in data.datasets["validation"].column_names


def test_on_bad_image_error_is_one_line_naming_the_files(folders):
    root, bad = folders
    with pytest.raises(HfTransferError) as error:
        load_image_classification(ImageDataArgs(train_dir=str(root / "train"), validation_dir=str(root / "validation"),
                                                on_bad_image="error"))
    message = str(error.value)
    assert "\n" not in message and message.startswith("5 unusable image file(s) in the train split: ")
    assert message.endswith("and 2 more; fix or remove them, or pass --on_bad_image skip")


def test_a_split_with_no_usable_image_is_an_error(tmp_path):
    make_label_folders(tmp_path / "train", per_label=3)
    for label in COLOURS:
        write_bad_images(tmp_path / "validation" / label)
        for path in (tmp_path / "validation" / label).iterdir():
            path.rename(path.with_name(f"{label}_{path.name}"))
    with pytest.raises(HfTransferError, match=r"the validation split has no usable images: all 10 images were skipped"):
        load_image_classification(ImageDataArgs(train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "validation")))


def test_tables_of_relative_paths_and_a_dataset_with_an_image_column(tmp_path):
    images = make_label_folders(tmp_path / "pictures", per_label=5)
    table = tmp_path / "tables" / "train.csv"
    table.parent.mkdir()
    rows = [f"../pictures/{p.parent.name}/{p.name},{label}" for p, label in images]
    table.write_text("path,species\n" + "\n".join(rows + ["../pictures/missing.png,red"]) + "\n")
    held = tmp_path / "tables" / "validation.jsonl"
    held.write_text("".join(json.dumps({"path": f"../pictures/{p.parent.name}/{p.name}", "species": label}) + "\n"
                            for p, label in images[::3]))
    data = load_image_classification(ImageDataArgs(train_file=str(table), validation_file=str(held), label_column="species"))
    assert data.report["train_images"] == 10 and data.report["train_bad_images_skipped"] == 1  # the missing file
    assert all(path.startswith(str(tmp_path / "pictures")) for path in data.datasets["train"]["image"])

    # A dataset with an Image feature (what a Hub image dataset is), here a local image folder: rows stay bytes/paths.
    make_label_folders(tmp_path / "hub" / "train", per_label=4, seed=2)
    make_label_folders(tmp_path / "hub" / "test", per_label=2, seed=3)
    data = load_image_classification(ImageDataArgs(dataset_name=str(tmp_path / "hub"), validation_split_percentage=25))
    assert set(data.datasets) == {"train", "validation", "test"} and data.label_names == ["blue", "red"]
    first = data.datasets["train"][0]["image"]
    assert isinstance(first, dict) and set(first) == {"bytes", "path"}  # not decoded into the dataset
    assert load_image(first).mode == "RGB"


def test_options_are_checked_up_front(tmp_path):
    with pytest.raises(HfTransferError, match=r"--crop_scale takes two numbers 0 < min <= max <= 1, got 0.9 0.5"):
        ImageAugmentArgs(crop_scale=[0.9, 0.5])
    with pytest.raises(HfTransferError, match="does not exist"):
        ImageDataArgs(train_dir=str(tmp_path / "nope"))
    with pytest.raises(HfTransferError, match="--remove_unused_columns false"):
        check_training_args(types.SimpleNamespace(remove_unused_columns=True))


@pytest.fixture(scope="module")
def processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 16, "width": 16})


def _rows(tmp_path, augment: bool, n: int = 6):
    paths = [p for p, _ in make_label_folders(tmp_path / "c", per_label=n // 2, seed=4)]
    return [{"image": str(p), "labels": i % 2, "augment": augment} for i, p in enumerate(paths)]


def test_evaluation_rows_are_the_processor_alone_and_augmentation_can_be_turned_off(tmp_path, processor):
    evaluation = _rows(tmp_path, augment=False)
    reference = processor([load_image(r["image"]) for r in evaluation], return_tensors="pt")["pixel_values"]
    batch = ImageCollator(processor)(evaluation)
    assert torch.equal(batch["pixel_values"], reference) and batch["labels"].tolist() == [0, 1, 0, 1, 0, 1]

    training = [{**r, "augment": True} for r in evaluation]
    off = ImageAugmentArgs(random_resized_crop=False, horizontal_flip=False)
    assert torch.equal(ImageCollator(processor, augment=off)(training)["pixel_values"], reference)

    cropped = ImageCollator(processor)(training)["pixel_values"]
    assert cropped.shape == reference.shape and not torch.equal(cropped, reference)
    # Flip alone: every training image is its evaluation image or its mirror, and both happen.
    flip_only = ImageCollator(processor, augment=ImageAugmentArgs(random_resized_crop=False), seed=3)
    flipped = torch.cat([flip_only(training)["pixel_values"] for _ in range(4)])
    expected = reference.repeat(4, 1, 1, 1)
    same = [torch.equal(a, b) for a, b in zip(flipped, expected)]
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, expected)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)


def test_each_worker_draws_its_own_augmentation(tmp_path, processor, monkeypatch):
    rows = _rows(tmp_path, augment=True)

    def draw(worker_seed):
        info = None if worker_seed is None else types.SimpleNamespace(seed=worker_seed, id=0)
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: info)
        return ImageCollator(processor, seed=11)(rows)["pixel_values"]

    assert torch.equal(draw(None), draw(None))  # one process: the run's seed decides
    assert torch.equal(draw(1234), draw(1234))
    assert not torch.equal(draw(1234), draw(5678))  # workers (and epochs: a new worker seed) differ
    assert not torch.equal(draw(None), draw(1234))


def test_crop_boxes_stay_inside_and_follow_the_scale():
    rng = np.random.default_rng(0)
    for height, width in ((32, 32), (20, 60), (5, 3)):
        for _ in range(200):
            top, left, h, w = crop_box(height, width, (0.5, 1.0), rng)
            assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
    areas = [np.prod(crop_box(100, 100, (0.5, 1.0), rng)[2:]) / 1e4 for _ in range(500)]
    assert 0.45 <= min(areas) and max(areas) <= 1.0 and 0.65 < np.mean(areas) < 0.85


def test_the_prefix_cache_is_refused_only_while_images_are_augmented(processor):
    from hf_transfer.prefix_cache import inputs_vary_per_epoch

    assert "declares that its training inputs vary" in inputs_vary_per_epoch(ImageCollator(processor))
    assert inputs_vary_per_epoch(ImageCollator(processor, augment=ImageAugmentArgs(random_resized_crop=False))) is not None
    off = ImageAugmentArgs(random_resized_crop=False, horizontal_flip=False)
    assert inputs_vary_per_epoch(ImageCollator(processor, augment=off)) is None
