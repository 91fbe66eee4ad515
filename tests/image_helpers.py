"""Image test helpers: a tiny ViT saved like a Hub checkpoint, learnable coloured images, and every kind of bad file.

Everything is made in tmp folders with Pillow; nothing touches the network.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

IMAGE_SIZE = 16  # the tiny ViT's input: 2x2 patches of 8 pixels (plus the CLS token)
COLOURS = {"blue": 2, "red": 0}  # label -> the channel that is bright


def save_tiny_vit(folder: Path, seed: int = 0) -> Path:
    """A two-block, width-32 ViT backbone and its 16x16 image processor, saved with save_pretrained."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(image_size=IMAGE_SIZE, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=37)
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    return folder


def coloured_image(label: str, rng: np.random.Generator, size: int = 20):
    """A noisy image whose bright channel gives its label (red or blue): a tiny model learns it in a few steps."""
    from PIL import Image

    pixels = rng.integers(0, 100, (size, size, 3), dtype=np.uint8)
    pixels[..., COLOURS[label]] = rng.integers(170, 256, (size, size), dtype=np.uint8)
    return Image.fromarray(pixels)


def make_label_folders(root: Path, per_label: int, seed: int = 0, suffix: str = ".png") -> list[tuple[Path, str]]:
    rng = np.random.default_rng(seed)
    made = []
    for label in COLOURS:
        for i in range(per_label):
            path = root / label / f"{i}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            coloured_image(label, rng).save(path)
            made.append((path, label))
    return made


def image_bytes(image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def write_bad_images(folder: Path) -> dict[str, Path]:
    """One file of each kind the issue lists as unusable, under image suffixes, so only decoding can tell."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    photo = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    jpeg, png = image_bytes(photo, "JPEG", quality=90), image_bytes(photo, "PNG")
    files = {
        "truncated_jpeg": (folder / "truncated.jpg", jpeg[: len(jpeg) // 2]),
        "truncated_png": (folder / "truncated.png", png[: len(png) // 2]),
        "empty": (folder / "empty.jpg", b""),
        "not_an_image": (folder / "notes.jpg", b"this is a text file saved with an image suffix\n"),
        "corrupt": (folder / "corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 16),  # a PNG signature, then junk
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {kind: path for kind, (path, _) in files.items()}
