"""Two small review domains for the domain-adaptation tests: the same words of sentiment about other things."""
from __future__ import annotations

import random
from pathlib import Path

from conftest import NEGATIVE, POSITIVE, write_csv

SOURCE_NOUNS = ["movie", "book", "story", "screen"]
TARGET_NOUNS = ["phone", "hotel", "meal", "service"]


def domain_rows(n: int, nouns: list[str], seed: int) -> list[tuple[str, str]]:
    """Distinct labelled sentences about `nouns` (the label follows from the adjectives); no text repeats."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = "positive" if len(rows) % 2 else "negative"
        words = POSITIVE if label == "positive" else NEGATIVE
        text = f"the {rng.choice(nouns)} was {rng.choice(words)} and {rng.choice(words)}{rng.choice(['', ' a', ' it'])}"
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


def write_domains(folder: Path) -> dict[str, Path]:
    """source train/validation (labelled), target (labelled: the labels only score), and bad variants."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train": write_csv(folder / "source_train.csv", domain_rows(32, SOURCE_NOUNS, 1)),
        "validation": write_csv(folder / "source_validation.csv", domain_rows(8, SOURCE_NOUNS, 2)),
        "target": write_csv(folder / "target.csv", domain_rows(24, TARGET_NOUNS, 3)),
        "empty_target": write_csv(folder / "empty_target.csv", []),
        "unlabelled_source": write_csv(folder / "unlabelled_source.csv", [(t,) for t, _ in domain_rows(8, SOURCE_NOUNS, 4)],
                                       header=("text",)),
        "other_column_target": write_csv(folder / "other_column_target.csv", domain_rows(8, TARGET_NOUNS, 5),
                                         header=("review", "label")),
        # Star ratings scored against a negative/positive source: integers that are no label of the source.
        "star_target": write_csv(folder / "star_target.csv", [(t, str(1 + i % 5)) for i, (t, _) in enumerate(domain_rows(10, TARGET_NOUNS, 6))]),
    }
    return files


def adaptation_argv(model_dir: Path, files: dict, out: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir), "--train_file", str(files["train"]),
        "--validation_file", str(files["validation"]), "--target_file", str(files["target"]), "--output_dir", str(out),
        "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--logging_steps", "1",
        "--save_strategy", "no", "--eval_strategy", "no", "--diagnostic_samples", "0", "--disable_tqdm", "true", *extra,
    ]
