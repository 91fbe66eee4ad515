"""The preview a run with shifts writes as it starts: a few rows before and after each shift, so the user can check
that the transform looks like the target. Images and audio: `shift_preview.png` (the images; spectrograms for audio);
text: `shift_preview.txt`. Every step is applied here (probability 1), each shift with its own fixed generator per
row, so the preview shows what a row the step hits looks like, the same in every run.
"""
from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

PREVIEW_FILES = ("shift_preview.png", "shift_preview.txt")


@dataclass
class PreviewRows:
    rows: list[dict]  # a few rows as the collator sees them
    decode: Callable[[dict], Any]  # row -> PIL image, waveform or text
    sampling_rate: int | None = None  # audio


def pick_rows(dataset, decode: Callable[[dict], Any], count: int = 6, sampling_rate: int | None = None) -> PreviewRows:
    """Up to `count` rows of `dataset`, the labels in turn (the first rows of each), so the preview shows every class."""
    labels = dataset["labels"] if "labels" in dataset.column_names else [None] * len(dataset)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels[: 50 * count]):
        by_label.setdefault(str(label), []).append(i)
    queues, chosen = list(by_label.values()), []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return PreviewRows([dataset[i] for i in chosen], decode, sampling_rate)


def _every_step(shift):
    return dataclasses.replace(shift, steps=tuple(dataclasses.replace(s, probability=1.0) for s in shift.steps))


def _columns(plan) -> list[tuple[str, Any, Callable[[int], np.random.Generator]]]:
    """(title, shift, row number -> generator) for each shift of the plan."""
    columns = []
    if plan.synthetic is not None:
        columns.append(("--synthetic_shift (training)", _every_step(plan.synthetic), lambda i: plan.training_generator(i, 0)))
    for shift in plan.evaluations:
        columns.append((f"--eval_shift ({shift.label})", _every_step(shift), plan.evaluation_generator))
    return columns


def write_preview(plan, rows: PreviewRows, output_dir: str | Path) -> Path:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if plan.modality == "text":
        return _write_text(plan, rows, out / "shift_preview.txt")
    return _write_figure(plan, rows, out / "shift_preview.png")


def _write_text(plan, rows: PreviewRows, path: Path) -> Path:
    columns = _columns(plan)
    lines = ["Shift preview: each row before and after every shift (every step applied).", ""]
    lines += [f"{title}: {shift}\n    {shift.describe()}" for title, shift, _ in columns]
    for i, row in enumerate(rows.rows):
        original = rows.decode(row)
        lines += ["", f"[{i}] original: {original}"]
        lines += [f"    {title}: {shift(original, generator(i), **plan.context)}" for title, shift, generator in columns]
    path.write_text("\n".join(lines) + "\n")
    return path


def _spectrogram(waveform: np.ndarray, sampling_rate: int) -> np.ndarray:
    import torch

    n_fft = 512 if sampling_rate >= 16000 else 256
    power = torch.stft(torch.from_numpy(np.asarray(waveform, dtype=np.float32)), n_fft, hop_length=n_fft // 4,
                       window=torch.hann_window(n_fft), return_complex=True).abs().pow(2)
    return 10 * np.log10(power.numpy() + 1e-10)


def _write_figure(plan, rows: PreviewRows, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = _columns(plan)
    audio = plan.modality == "audio"
    shown = rows.rows[: 4 if audio else 6]
    width = 1 + len(columns)
    figure, axes = plt.subplots(len(shown), width, figsize=(3.2 * width, (2.2 if audio else 2.6) * len(shown) + 1.2),
                                squeeze=False)
    for i, row in enumerate(shown):
        original = rows.decode(row)
        context = {"sampling_rate": rows.sampling_rate} if audio else {}
        versions = [("original", original)] + [(t, s(original, g(i), **plan.context, **context)) for t, s, g in columns]
        for j, (title, value) in enumerate(versions):
            ax = axes[i][j]
            if audio:
                spectrogram = _spectrogram(value, rows.sampling_rate)
                seconds = len(value) / rows.sampling_rate
                ax.imshow(spectrogram, origin="lower", aspect="auto", cmap="magma", vmin=spectrogram.max() - 80,
                          extent=(0, seconds, 0, rows.sampling_rate / 2000))
                ax.set_ylabel("kHz" if j == 0 else "")
            else:
                ax.imshow(np.asarray(value))
                ax.set_xticks([])
                ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    notes = "\n".join(textwrap.fill(f"{title}: {shift.describe()}", 150) for title, shift, _ in columns)
    figure.suptitle(notes, fontsize=8)
    height = figure.get_size_inches()[1]
    figure.tight_layout(rect=(0, 0, 1, 1 - (0.18 * (notes.count("\n") + 1) + 0.1) / height))
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
