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
from hf_transfer.data.randomness import AUGMENT_STREAM, ROW, TrainingEpoch
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
    return [{"image": str(p), "labels": i % 2, "augment": augment, ROW: i} for i, p in enumerate(paths)]


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


def test_each_row_draws_its_own_crop_and_flip_for_the_epoch_and_seed(tmp_path, processor):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    image = _rows(tmp_path, augment=True)[0]["image"]
    rows = [{"image": image, "labels": 0, "augment": True, ROW: i} for i in range(6)]  # one image, six rows
    epoch = TrainingEpoch()

    def draw(seed=11):
        return ImageCollator(processor, seed=seed, epoch=epoch)(rows)["pixel_values"]

    first = draw()
    assert torch.equal(draw(), first)  # the same rows, epoch and seed: the same pixels (what a resumed run needs)
    assert len({v.numpy().tobytes() for v in first}) == 6  # every row its own crop
    assert not any(torch.equal(a, b) for a, b in zip(draw(seed=12), first))  # another seed, other draws
    epoch.set(1)  # what the TrainingEpoch callback does as the second epoch begins
    assert not any(torch.equal(a, b) for a, b in zip(draw(), first))  # another epoch, other draws
    # Row 4 in epoch 1, by hand: its generator is (seed, epoch, row, the augmentation's stream).
    rng = np.random.default_rng([11, 1, 4, AUGMENT_STREAM])
    picture = load_image(image)
    top, left, h, w = crop_box(picture.height, picture.width, (0.08, 1.0), rng)
    cropped = F.resized_crop(picture, top, left, h, w, [16, 16], interpolation=InterpolationMode.BILINEAR, antialias=True)
    if rng.random() < 0.5:
        cropped = F.horizontal_flip(cropped)
    expected = processor([cropped], return_tensors="pt", do_resize=False, do_center_crop=False)["pixel_values"][0]
    assert torch.equal(draw()[4], expected)
    with pytest.raises(ValueError, match="a training row has no 'row_number'"):
        ImageCollator(processor)([{"image": image, "labels": 0, "augment": True}])


@pytest.mark.parametrize("workers,persistent", [(2, False), (2, True)], ids=["2 workers", "2 persistent workers"])
def test_augmentation_is_the_same_without_and_with_dataloader_workers(tmp_path, processor, workers, persistent):
    rows = _rows(tmp_path, augment=True)

    def batches(num_workers, persistent_workers=False):
        epoch = TrainingEpoch()
        loader = torch.utils.data.DataLoader(rows, batch_size=2, collate_fn=ImageCollator(processor, seed=5, epoch=epoch),
                                             num_workers=num_workers, persistent_workers=persistent_workers)
        out = []
        for e in range(2):  # as the Trainer does: the epoch is set before each one begins (its workers already run)
            epoch.set(e)
            out += [batch["pixel_values"] for batch in loader]
        return out

    alone = batches(0)
    assert all(torch.equal(a, b) for a, b in zip(batches(workers, persistent), alone)) and len(alone) == 6
    assert not any(torch.equal(a, b) for a, b in zip(alone[:3], alone[3:]))  # the second epoch drew anew


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
