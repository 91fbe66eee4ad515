"""Image data: folders per label, tables of paths or Hub datasets, every image checked up front, decoded and augmented lazily per batch.

Sources: a folder holding one subfolder of images per label; a csv/jsonl/tsv/parquet table of image paths
(relative paths resolve against the table's folder) with a label column; or a Hub dataset (or a local
dataset folder) with an image column, cast to `Image(decode=False)` so rows stay bytes or paths. Reading them,
the held-out validation split, the --max_* subsets and the bad-file report are the media layer's
(`hf_transfer.data.media`, shared with audio).

Images as they really come: grayscale, palette, RGBA/LA (composited on white, not on black), CMYK, 16-bit
grayscale (scaled, not clipped to white) all become RGB, and the EXIF orientation is applied. Every image is
opened, verified and decoded once before training (JPEGs at 1/8 scale, which still reads every byte), so an
empty, truncated, non-image or missing file is found then: skipped with a count and its path in the log, or
an error with `--on_bad_image error`; never a crash mid-epoch. The check runs after the held-out split and the
--max_* subsets are drawn, so a large data set is not decoded whole for a small subset; a bad file drawn into a
subset makes it that much smaller, and the report counts it (`<split>_bad_images_skipped`).

Decoding happens in the collator, as for audio: rows are references plus labels, nothing decoded reaches the
cache, and the Trainer hands one collator every split, so training rows carry an `augment` flag (and their row
number). Training images get a random resized crop and a horizontal flip (torchvision's functional ops, parameters
drawn from the row's own generator for the epoch: hf_transfer.data.randomness, so a resumed run crops and flips as the
uninterrupted one); every image then goes through the model's own image processor (size, normalisation).
With both augmentations off, training images are the same every epoch, which --cache_frozen_prefix needs.
"""
from __future__ import annotations

import io
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hf_transfer.data.labels import LABEL_COLUMNS
from hf_transfer.data.media import (
    LabelledMedia,
    MediaDataArgs,
    Medium,
    check_every_split,
    describe,
    load_labelled_splits,
    nothing_usable_error,
    open_target,
    report_bad_files,
)
from hf_transfer.data.randomness import AUGMENT, AUGMENT_STREAM, RowRandom, TrainingEpoch
from hf_transfer.errors import HfTransferError

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image", "img", "image_path", "image_file", "path", "file", "filename", "filepath")
# What Pillow decodes without extra plugins; a folder's other files (notes, csv) are not images and are ignored.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif")
IMAGE = Medium(column="image", item="image", content="images", feature="Image", columns=IMAGE_COLUMNS, suffixes=IMAGE_SUFFIXES)
_CHECK_THREADS = min(8, os.cpu_count() or 1)  # Pillow releases the GIL while decoding
_WHITE = (255, 255, 255)


@dataclass
class ImageDataArgs(MediaDataArgs):
    medium = IMAGE

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id (or a local dataset folder) with an image column."})
    train_dir: str | None = field(default=None, metadata={"help": "Local folder with one subfolder of images per label."})
    test_dir: str | None = field(default=None, metadata={"help": "Test folder, one subfolder per label, evaluated once after training."})
    train_file: str | None = field(
        default=None,
        metadata={"help": "Local table (csv, tsv, json, jsonl, parquet) of image paths with labels; relative paths "
                  "resolve against the table's folder."},
    )
    image_column: str | None = field(
        default=None, metadata={"help": f"Image column (default: an Image feature, else the first of {', '.join(IMAGE_COLUMNS)})."}
    )
    label_column: str | None = field(default=None, metadata={"help": f"Label column (default: the first of {', '.join(LABEL_COLUMNS)})."})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "The declared label set, in id order; labels outside it are an error."}
    )
    on_bad_image: str = field(
        default="skip",
        metadata={"help": "Missing, empty, truncated or non-image files: 'skip' (count and paths logged) or 'error'.",
                  "choices": ("skip", "error")},
    )
    max_train_samples_per_class: int | None = field(
        default=None, metadata={"help": "Train on a random subset with at most this many images of each label (few-shot)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N images of each split."})


@dataclass
class ImageAugmentArgs:
    random_resized_crop: bool = field(
        default=True,
        metadata={"help": "Training images: a random crop of --crop_scale of the area (aspect 3/4..4/3) resized to the "
                  "model's input size, as torchvision's RandomResizedCrop. Off: resized whole, like evaluation images."},
    )
    crop_scale: list[float] = field(
        default_factory=lambda: [0.08, 1.0],
        metadata={"help": "The crop's share of the image area, min max (torchvision's default 0.08 1.0; 0.5 1.0 is "
                  "gentler for small or low-resolution images)."},
    )
    horizontal_flip: bool = field(default=True, metadata={"help": "Flip half of the training images left to right."})

    def __post_init__(self) -> None:
        scale = list(self.crop_scale or [])
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise HfTransferError(f"--crop_scale takes two numbers 0 < min <= max <= 1, got {' '.join(map(str, scale))}")


# ---------------------------------------------------------------------------------------------------------
# Decoding: any mode Pillow opens, as RGB, upright
# ---------------------------------------------------------------------------------------------------------

def to_rgb(image):
    """`image` upright (EXIF orientation) and in RGB: transparency over white, 16-bit scaled to 8-bit."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode == "P":  # a palette with a transparent index is an alpha channel in disguise
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode in ("L", "RGB") and "transparency" in image.info):
        # convert("RGB") would drop alpha and show whatever colour hides under transparent pixels (often black).
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*_WHITE, 255)), rgba).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":
        # 16-bit (I;16*) and 32-bit integer/float grayscale: convert("L") clips everything above 255 to white.
        values = np.asarray(image, dtype=np.float64)
        scale = 257.0 if image.mode.startswith("I;16") or (values.size and values.max() > 255) else 1.0
        image = Image.fromarray(np.clip(np.rint(values / scale), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(source, *, draft: bool = False):
    """Decode one image to an upright RGB `PIL.Image`. `draft`: JPEGs at 1/8 scale (a cheap full read, for the check)."""
    from PIL import Image

    with Image.open(open_target(source)) as image:
        if draft and image.format == "JPEG":
            image.draft(image.mode, (1, 1))
        image.load()  # reads every byte: a truncated file fails here, not later
        return to_rgb(image)


def probe(source) -> str | None:
    """Why the image cannot be used (a short reason for the log), or None when it decodes."""
    from PIL import Image, UnidentifiedImageError

    target = open_target(source)
    if target is None or (isinstance(target, str) and not target):
        return "no image path or bytes"
    if isinstance(target, (str, Path)):
        if not Path(target).is_file():
            return "file not found"
        if Path(target).stat().st_size == 0:
            return "empty file"
    try:
        with Image.open(target) as image:
            image.verify()  # structure and checksums (PNG CRCs), without decoding
        if isinstance(target, io.BytesIO):
            target.seek(0)
        load_image(target, draft=True)  # decoding: truncated data, broken EXIF, unsupported modes
    except UnidentifiedImageError:
        return "not an image file (format not recognised)"
    except Image.DecompressionBombError as error:
        return f"too large ({str(error).split('.')[0]})"
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, Image.DecompressionBombWarning) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"truncated ({message})" if "truncated" in message.lower() else f"cannot be decoded ({message})"
    return None


# ---------------------------------------------------------------------------------------------------------
# The up-front check
# ---------------------------------------------------------------------------------------------------------

def check_images(dataset, split: str, on_bad_image: str = "skip"):
    """Open, verify and decode every image once; drop (or refuse) the unusable ones. Returns (dataset, skipped count).

    Read in batches, so a Hub dataset of embedded bytes never sits in memory whole; only the reasons are kept.
    """
    reasons: list[str | None] = []
    bad: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=_CHECK_THREADS) as pool:
        for batch in dataset.select_columns(["image"]).iter(batch_size=512):
            found = list(pool.map(probe, batch["image"]))
            bad += [(describe(s), r) for s, r in zip(batch["image"], found) if r is not None]
            reasons += found
    report_bad_files(bad, split, IMAGE, on_bad_image)
    keep = [i for i, r in enumerate(reasons) if r is None]
    if not keep:
        raise nothing_usable_error(split, IMAGE, len(reasons), bad)
    return (dataset.select(keep) if len(keep) < len(dataset) else dataset), len(bad)


def check_splits(data, on_bad_image: str = "skip"):
    """`check_images` on every split; the training split is marked for augmentation. Returns (data, report)."""

    def check(dataset, split):
        checked, skipped = check_images(dataset, split, on_bad_image)
        return checked, {f"{split}_images": len(checked), f"{split}_bad_images_skipped": skipped}

    return check_every_split(data, check)


def load_image_classification(args: ImageDataArgs, seed: int = 42) -> LabelledMedia:
    """Load, label and check an image classification data set (columns image, labels; + augment in train); cheap
    checks (columns, labels) come first. The report gives images kept and files skipped per split."""
    data, names = load_labelled_splits(args, args.label_column, args.class_names, seed)
    data, report = check_splits(data, args.on_bad_image)
    return LabelledMedia(data, names, report)


# ---------------------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------------------

def processor_output_size(image_processor) -> tuple[int, int]:
    """(height, width) of the images the processor hands the model: its crop size when it crops, else its size."""
    crop = getattr(image_processor, "crop_size", None) if getattr(image_processor, "do_center_crop", False) else None
    for size in (crop, getattr(image_processor, "size", None)):
        if not size:
            continue
        get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
        if get("height") and get("width"):
            return int(get("height")), int(get("width"))
        edge = get("shortest_edge") or get("longest_edge")
        if edge:
            return int(edge), int(edge)
    raise HfTransferError(f"cannot tell the input size of {type(image_processor).__name__} (no size or crop_size)")


def _interpolation(image_processor):
    from torchvision.transforms import InterpolationMode

    # PIL's resampling codes (what processors store) -> torchvision's modes; bilinear when the processor says nothing.
    modes = {0: InterpolationMode.NEAREST, 1: InterpolationMode.LANCZOS, 2: InterpolationMode.BILINEAR,
             3: InterpolationMode.BICUBIC, 4: InterpolationMode.BOX, 5: InterpolationMode.HAMMING}
    resample = getattr(image_processor, "resample", None)
    return modes.get(int(resample) if resample is not None else 2, InterpolationMode.BILINEAR)


def crop_box(height: int, width: int, scale: tuple[float, float], rng: np.random.Generator,
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop: torchvision's `RandomResizedCrop.get_params`, drawn from `rng`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    # Fallback: the central crop at the nearest allowed aspect ratio.
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class ImageCollator:
    """Decodes, augments (rows flagged `augment`) and processes a list of rows into `pixel_values` (and `labels`).

    Training rows: a random resized crop straight to the model's input size and a random flip, then the image
    processor without its resize (its rescale and normalisation). Other rows: the image processor as it is, so
    evaluation sees exactly what the model's own processor gives at inference.
    """

    def __init__(self, image_processor, *, augment: ImageAugmentArgs | None = None, seed: int = 42, shift=None,
                 epoch: TrainingEpoch | None = None):
        self.image_processor = image_processor
        self.augment = augment or ImageAugmentArgs()
        self.size = processor_output_size(image_processor)
        self.interpolation = _interpolation(image_processor)
        self.random = RowRandom(seed, AUGMENT_STREAM, epoch)  # `epoch`: the run's, registered as a callback by the task
        self.shift = shift  # a ShiftPlan (hf_transfer/data/shift): target conditions on decoded images, before the crop

    @property
    def inputs_vary_per_epoch(self) -> bool:
        """Whether training images change between epochs (read by --cache_frozen_prefix): only with augmentation on."""
        varies = self.shift is not None and self.shift.varies_per_epoch
        return bool(self.augment.random_resized_crop or self.augment.horizontal_flip or varies)

    def _decode(self, source):
        try:
            return load_image(source)
        except Exception as error:  # noqa: BLE001 - it passed the check before training: say which file changed
            raise HfTransferError(f"cannot decode image {describe(source)} ({error}); it was readable when the data "
                                  "was checked before training: was it changed or removed since?") from error

    def _augmented(self, image, row: dict):
        from torchvision.transforms.v2 import functional as F

        rng = self.random.generator(row)
        if self.augment.random_resized_crop:
            top, left, h, w = crop_box(image.height, image.width, tuple(self.augment.crop_scale), rng)
            image = F.resized_crop(image, top, left, h, w, list(self.size), interpolation=self.interpolation, antialias=True)
        if self.augment.horizontal_flip and rng.random() < 0.5:
            image = F.horizontal_flip(image)
        return image

    def pixel_values(self, rows: list[dict]) -> torch.Tensor:
        train = [bool(row.get(AUGMENT)) for row in rows]
        images = [self._decode(row["image"]) for row in rows]
        if self.shift is not None:
            images = [self.shift.apply(row, image) for row, image in zip(rows, images)]
        images = [self._augmented(image, row) if t else image for image, row, t in zip(images, rows, train)]
        values: list = [None] * len(rows)
        cropped = self.augment.random_resized_crop
        for flag in (False, True):
            index = [i for i, t in enumerate(train) if t == flag]
            if not index:
                continue
            # Cropped training images are at the input size already: only rescale and normalise them.
            kwargs = {"do_resize": False, "do_center_crop": False} if flag and cropped else {}
            out = self.image_processor([images[i] for i in index], return_tensors="pt", **kwargs)["pixel_values"]
            for i, value in zip(index, out):
                values[i] = value
        return torch.stack(values)

    def __call__(self, rows: list[dict]) -> dict:
        batch = {"pixel_values": self.pixel_values(rows)}
        if "labels" in rows[0]:
            batch["labels"] = torch.tensor([row["labels"] for row in rows], dtype=torch.long)
        return batch
