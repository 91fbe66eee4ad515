"""Image data pipeline throughput: decode + augment + process + collate at 224 px, per CPU core, and the loader
workers a ViT-base needs at 1,200 images/s (a plain Trainer's rate on one H200: ViT-base 224, bf16, batch 64).

    nice -n 10 python benchmarks/image_pipeline.py          # about two minutes; writes benchmarks/results/image_pipeline.json

What is timed is `hf_transfer.data.image.ImageCollator` itself, the code a training run executes in its loader
workers: batches of 64 rows, each decoded from its file, made RGB and upright, then for training rows a random
resized crop to 224 and a flip, and the image processor's rescale and normalisation; for evaluation rows the
processor's own resize to 224. Rates are images per second of this process's CPU time (one thread, so one core),
which stays meaningful on a machine shared with other jobs; wall-clock rates are recorded beside them.

Two kinds of files: CIFAR-10's 32x32 JPEGs (../shared/data/cifar10: decoding is nearly free, the upscale to 224
dominates) and 500x375 JPEGs at quality 90, the average ImageNet photo's size, made from upscaled CIFAR images
plus noise (a photo-like amount of detail for the JPEG decoder). Both of transformers 5's processor back-ends are
timed: torchvision (ViTImageProcessor, what AutoImageProcessor loads when torchvision is installed; the old
`ViTImageProcessorFast` is now an alias of it) and PIL (ViTImageProcessorPil, the fallback). Workers needed = ceil(1,200 / rate per core), assuming one core per worker and linear
scaling, with no core left for the training process itself.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import paths

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

CIFAR = paths.DATA / "cifar10"
RESULT = paths.RESULTS / "image_pipeline.json"
TARGET_RATE = 1200  # images/s: ViT-base 224, bf16, batch 64, plain Trainer on one H200 (1,193 measured, random weights)
IMAGES, BATCH = 256, 64


def photo_files(sources: list[Path], folder: Path) -> list[Path]:
    """500x375 JPEGs (quality 90) from CIFAR images upscaled, with noise so the decoder sees photo-like detail."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i, source in enumerate(sources):
        big = np.asarray(Image.open(source).convert("RGB").resize((500, 375), Image.BICUBIC), dtype=np.int16)
        noisy = np.clip(big + rng.normal(0, 12, big.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(noisy).save(path, quality=90)
        made.append(path)
    return made


def measure(collator, rows: list[dict]) -> dict:
    collator(rows[:BATCH])  # warm-up: imports and first-call set-up are not throughput
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(rows), BATCH):
        batch = collator(rows[start:start + BATCH])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert batch["pixel_values"].shape[-2:] == (224, 224)
    per_core = len(rows) / cpu
    return {"images_per_cpu_second": round(per_core, 1), "images_per_wall_second": round(len(rows) / wall, 1),
            "workers_for_1200_per_s": math.ceil(TARGET_RATE / per_core)}


def main() -> None:
    import torch
    from transformers import ViTImageProcessor
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    from hf_transfer.data.image import ImageAugmentArgs, ImageCollator

    if not CIFAR.is_dir():
        sys.exit(f"{CIFAR} is missing: the benchmark reads CIFAR-10 in place (see data_cards/cifar10.md)")
    torch.set_num_threads(1)
    cifar = sorted((CIFAR / "train").glob("*/*.jpg"))[:: 10000 // IMAGES][:IMAGES]
    processors = {"torchvision back-end (ViTImageProcessor)": ViTImageProcessor(size={"height": 224, "width": 224}),
                  "PIL back-end (ViTImageProcessorPil)": ViTImageProcessorPil(size={"height": 224, "width": 224})}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"cifar10 32x32 jpeg": cifar, "500x375 jpeg q90": photo_files(cifar, Path(tmp) / "photos")}
        for kind, paths in files.items():
            for name, processor in processors.items():
                for mode in ("train", "eval"):
                    rows = [{"image": str(p), "labels": 0, "augment": mode == "train", "row_number": i}
                            for i, p in enumerate(paths)]
                    collator = ImageCollator(processor, augment=ImageAugmentArgs(crop_scale=[0.08, 1.0]), seed=0)
                    key = f"{kind} | {name} | {mode}"
                    results[key] = measure(collator, rows)
                    print(f"{key}: {results[key]}", flush=True)
    RESULT.write_text(json.dumps({
        "what": "ImageCollator: decode, RGB/EXIF, (train) random resized crop to 224 + flip, processor rescale/normalise "
                "(eval: processor resize to 224), collate; batches of 64, one thread",
        "target_images_per_s": TARGET_RATE,
        "machine": f"{platform.node() or 'project machine'}: {os.cpu_count()} CPU cores, shared with other jobs (rates per CPU second)",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "python": platform.python_version(), "torch": torch.__version__,
        "results": results,
    }, indent=1) + "\n")
    print(f"written {RESULT.relative_to(paths.REPO)}")


if __name__ == "__main__":
    main()
