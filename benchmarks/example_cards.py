"""Example model cards: one run of each task recipe on tiny local models, its generated card kept as an example.

    python benchmarks/example_cards.py            # writes benchmarks/results/example_cards/<recipe>/README.md
    python benchmarks/example_cards.py --recipes image_classification   # only these cards (the index lists every card kept)

Each recipe runs the way the tests run it: a two-block model built from a config with random weights, saved to a
temporary folder as the "pretrained" checkpoint, and a few dozen synthetic examples (review sentences, sine-tone
clips, copy pairs, coloured images), offline, in about a minute on 2 CPU cores. The checkpoints are declared as
`example/tiny-bert`, `example/tiny-wav2vec2` and `example/tiny-vit` (--base_model_name) and the repositories as
`your-name/<recipe>-example` (--hub_model_id, nothing is pushed), so the cards show what a real run's card holds:
metadata, results, training options and loading code. The numbers in them are those of random tiny models, not results.
Nothing here is hand-written: rerun the script after changing hf_transfer/sharing/cards.py.
"""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "example_cards"
POSITIVE = ["great", "good", "lovely", "excellent", "fun", "superb", "charming", "brilliant"]
NEGATIVE = ["bad", "awful", "boring", "dull", "poor", "terrible", "weak", "broken"]
NOUNS = ["movie", "phone", "hotel", "meal", "book", "service", "screen", "story"]
COMMON = ["--num_train_epochs", "2", "--save_strategy", "no", "--logging_steps", "2", "--disable_tqdm", "true",
          "--license", "apache-2.0", "--overwrite_output_dir", "true"]


def write_csv(path: Path, rows, header) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def review_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        words = POSITIVE if label == "positive" else NEGATIVE
        rows.append((f"the {rng.choice(NOUNS)} was {rng.choice(words)} and {rng.choice(words)}", label))
    return rows


def tiny_bert(folder: Path) -> Path:
    """A two-block BERT and a WordPiece tokenizer over the review words, saved like a Hub checkpoint."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted(set(POSITIVE + NEGATIVE + NOUNS + ["the", "was", "and", "a", "it", "not"]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_wav2vec2(folder: Path) -> Path:
    import torch
    from transformers import AutoModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=12, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, hidden_size=32,
                            num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    AutoModel.from_config(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(folder)
    return folder


def tone_clips(root: Path, per_label: int, seed: int) -> list[tuple[Path, str]]:
    """Low and high sine tones, 0.3 s at 16 kHz: two classes a tiny model can tell apart."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(seed)
    clips = []
    for label, base in (("low", 300.0), ("high", 2000.0)):
        for i in range(per_label):
            t = np.arange(int(16000 * 0.3 * rng.uniform(0.8, 1.2))) / 16000
            path = root / label / f"{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, (0.5 * np.sin(2 * np.pi * base * rng.uniform(0.9, 1.1) * t)).astype("float32"), 16000)
            clips.append((path, label))
    return clips


def keep(recipe: str, out: Path) -> Path:
    """Copy the run's generated card into the results folder."""
    target = RESULTS / recipe / "README.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "README.md", target)
    print(f"[example_cards] {recipe}: {target.relative_to(REPO)}", flush=True)
    return target


def sentiment_card(work: Path, bert: Path) -> Path:
    """LoRA, beside a frozen baseline and a from-scratch run laid out as recipes/compare.py lays out its arms."""
    from recipes import sentiment

    data = [
        "--train_file", str(write_csv(work / "reviews" / "train.csv", review_rows(96, 1), ("text", "label"))),
        "--validation_file", str(write_csv(work / "reviews" / "validation.csv", review_rows(32, 2), ("text", "label"))),
        "--model_name_or_path", str(bert), "--base_model_name", "example/tiny-bert", "--language", "en",
        "--per_device_train_batch_size", "8", *COMMON,
    ]
    sentiment.main([*data, "--output_dir", str(work / "compare" / "scratch" / "seed_1"), "--from_scratch", "true",
                    "--frozen_baseline", "false", "--learning_rate", "1e-3"])
    out = work / "compare" / "lora" / "seed_1"
    sentiment.main([*data, "--output_dir", str(out), "--strategy", "lora", "--lora_r", "4", "--learning_rate", "2e-2",
                    "--frozen_baseline", "true", "--hub_model_id", "your-name/sentiment-example"])
    return keep("sentiment", out)


def audio_classification_card(work: Path, wav2vec2: Path) -> Path:
    from recipes import audio_classification

    tone_clips(work / "clips" / "train", 12, seed=0)
    tone_clips(work / "clips" / "dev", 4, seed=1)
    out = work / "audio_classification"
    audio_classification.main([
        "--model_name_or_path", str(wav2vec2), "--base_model_name", "example/tiny-wav2vec2",
        "--train_dir", str(work / "clips" / "train"), "--validation_dir", str(work / "clips" / "dev"),
        "--output_dir", str(out), "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
        "--hub_model_id", "your-name/audio-classification-example", *COMMON,
    ])
    return keep("audio_classification", out)


def speech_recognition_card(work: Path, wav2vec2: Path) -> Path:
    from recipes import speech_recognition

    words = {"low": "low tone", "high": "high tone"}
    tables = {}
    for split, seed, n in (("train", 2, 12), ("dev", 3, 4)):
        clips = tone_clips(work / "speech" / split, n, seed=seed)
        tables[split] = write_csv(work / "speech" / f"{split}.csv",
                                  [(str(p.relative_to(work / "speech")), words[label]) for p, label in clips], ("path", "text"))
    out = work / "speech_recognition"
    speech_recognition.main([
        "--model_name_or_path", str(wav2vec2), "--base_model_name", "example/tiny-wav2vec2", "--language", "en",
        "--train_file", str(tables["train"]), "--validation_file", str(tables["dev"]), "--output_dir", str(out),
        "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--strategy", "lora", "--lora_r", "4",
        "--hub_model_id", "your-name/speech-recognition-example", *COMMON,
    ])
    return keep("speech_recognition", out)


def continued_pretraining_card(work: Path, bert: Path) -> Path:
    from recipes import continued_pretraining

    texts = list(dict.fromkeys(t for t, _ in review_rows(120, 4)))
    corpus = work / "unlabelled.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = work / "continued_pretraining"
    continued_pretraining.main([
        "--model_name_or_path", str(bert), "--base_model_name", "example/tiny-bert", "--language", "en",
        "--train_file", str(corpus), "--output_dir", str(out), "--block_size", "16", "--per_device_train_batch_size", "8",
        "--learning_rate", "3e-3", "--hub_model_id", "your-name/continued-pretraining-example", *COMMON,
    ])
    return keep("continued_pretraining", out)


def text_to_text_card(work: Path, bert: Path) -> Path:
    """A bert2bert encoder-decoder warm-started from the tiny BERT, learning to copy review sentences."""
    from recipes import text_to_text

    rows = {split: [(t, t) for t, _ in review_rows(n, seed)] for split, n, seed in (("train", 64, 5), ("validation", 16, 6))}
    files = {split: write_csv(work / "pairs" / f"{split}.csv", r, ("source", "target")) for split, r in rows.items()}
    out = work / "text_to_text"
    text_to_text.main([
        "--model_name_or_path", str(bert), "--encoder_decoder_from", str(bert), "--base_model_name", "example/tiny-bert",
        "--language", "en", "--train_file", str(files["train"]), "--validation_file", str(files["validation"]),
        "--output_dir", str(out), "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
        "--generation_max_length", "12", "--source_prefix", "", "--hub_model_id", "your-name/text-to-text-example", *COMMON,
    ])
    return keep("text_to_text", out)


def tiny_vit(folder: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=37)
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


def image_classification_card(work: Path) -> Path:
    """Reddish and bluish 24x24 images with noise, a folder per label."""
    import numpy as np
    from PIL import Image

    from recipes import image_classification

    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("validation", 6)):
        for label, channel in (("red", 0), ("blue", 2)):
            for i in range(n):
                pixels = rng.integers(0, 120, (24, 24, 3), dtype=np.uint8)
                pixels[..., channel] = rng.integers(150, 256, (24, 24), dtype=np.uint8)
                path = work / "images" / split / label / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
    out = work / "image_classification"
    image_classification.main([
        "--model_name_or_path", str(tiny_vit(work / "tiny-vit")), "--base_model_name", "example/tiny-vit",
        "--train_dir", str(work / "images" / "train"), "--validation_dir", str(work / "images" / "validation"),
        "--output_dir", str(out), "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
        "--hub_model_id", "your-name/image-classification-example", *COMMON,
    ])
    return keep("image_classification", out)


def write_index(cards: list[Path]) -> Path:
    """benchmarks/results/example_cards/README.md: what the examples are, one line per card."""
    from huggingface_hub import ModelCard

    lines = ["# Example model cards", "",
             "Generated by `benchmarks/example_cards.py` (do not edit by hand): one run of each task recipe, on a tiny",
             "random model built locally (declared as `example/tiny-*`) and a few dozen synthetic examples. The cards show",
             "what every output folder's card holds; their metrics are those of two-block random models trained for",
             "seconds, not results.", "", "| recipe | pipeline tag | strategy | saved as | card |", "|---|---|---|---|---|"]
    for card_path in cards:
        card = ModelCard.load(card_path)
        strategy = next(t.removeprefix("strategy-") for t in card.data.tags if t.startswith("strategy-"))
        saved = "adapter (peft)" if card.data.library_name == "peft" else "full model"
        recipe = card_path.parent.name
        lines.append(f"| {recipe} | `{card.data.pipeline_tag}` | {strategy} | {saved} | [{recipe}/README.md]({recipe}/README.md) |")
    index = RESULTS / "README.md"
    index.write_text("\n".join(lines) + "\n")
    return index


# Recipe -> how its card is made, in the index's order; a recipe whose file is absent is left out.
CARDS = {
    "sentiment": lambda work, models: sentiment_card(work, models["bert"]()),
    "audio_classification": lambda work, models: audio_classification_card(work, models["wav2vec2"]()),
    "speech_recognition": lambda work, models: speech_recognition_card(work, models["wav2vec2"]()),
    "continued_pretraining": lambda work, models: continued_pretraining_card(work, models["bert"]()),
    "text_to_text": lambda work, models: text_to_text_card(work, models["bert"]()),
    "image_classification": lambda work, models: image_classification_card(work),
}


def main(argv: list[str] | None = None) -> None:
    import argparse

    import torch

    parser = argparse.ArgumentParser(description="Regenerate the example model cards.")
    parser.add_argument("--recipes", nargs="+", choices=list(CARDS), default=list(CARDS),
                        help="Make only these cards; the others in the results folder are kept and indexed.")
    chosen = parser.parse_args(argv).recipes
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention
    with tempfile.TemporaryDirectory(prefix="hf_transfer_example_cards_") as tmp:
        work = Path(tmp)
        built: dict[str, Path] = {}

        def once(name, make):  # each tiny checkpoint is built when a chosen card first needs it
            return lambda: built.setdefault(name, make(work / f"tiny-{name}"))

        models = {"bert": once("bert", tiny_bert), "wav2vec2": once("wav2vec2", tiny_wav2vec2)}
        for recipe in chosen:
            if (REPO / "recipes" / f"{recipe}.py").is_file():
                CARDS[recipe](work, models)
    kept = [RESULTS / recipe / "README.md" for recipe in CARDS
            if (RESULTS / recipe / "README.md").is_file() and (REPO / "recipes" / f"{recipe}.py").is_file()]
    print(f"[example_cards] index: {write_index(kept).relative_to(REPO)}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
