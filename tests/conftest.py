"""Shared fixtures: tiny models with each architecture's real module names, a local tokenizer, small data files.

No test touches the network: the Hub is switched off before transformers or datasets are imported.
"""
from __future__ import annotations

import csv
import os
import random
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# fp32 for the suite: the recipes' automatic bf16 (on CPUs that compute it natively) would make results depend on the
# machine; tests/test_precision.py covers that choice.
os.environ.setdefault("HF_TRANSFER_AUTO_BF16", "0")

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# One thread for the whole suite: tiny models gain nothing from threads, and on a busy 2-core machine OpenMP's
# spinning makes training tests many times slower (test_trainer.py: 182 s with two threads, 13 s with one, load 5).
# Tests that start processes set OMP_NUM_THREADS=1 for them too.
torch.set_num_threads(1)

POSITIVE = ["great", "good", "lovely", "excellent", "fun", "superb", "charming", "brilliant"]
NEGATIVE = ["bad", "awful", "boring", "dull", "poor", "terrible", "weak", "broken"]
NOUNS = ["movie", "phone", "hotel", "meal", "book", "service", "screen", "story"]


def tiny_config(arch: str):
    """A two-block, width-32 config of `arch` (real module names, seconds to build)."""
    import transformers as T

    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    if arch == "bert":
        return T.BertConfig(vocab_size=128, **common)
    if arch == "roberta":
        return T.RobertaConfig(vocab_size=128, **common)
    if arch == "distilbert":
        return T.DistilBertConfig(vocab_size=128, dim=32, n_layers=2, n_heads=2, hidden_dim=37)
    if arch == "vit":
        return T.ViTConfig(image_size=16, patch_size=8, **common)
    if arch in ("wav2vec2", "hubert"):
        cls = T.Wav2Vec2Config if arch == "wav2vec2" else T.HubertConfig
        return cls(
            vocab_size=12, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **common,
        )
    if arch == "t5":
        return T.T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=2)
    raise ValueError(arch)


TASK_CLASSES = {
    "bert": "BertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
    "vit": "ViTForImageClassification",
    "wav2vec2": "Wav2Vec2ForSequenceClassification",
    "hubert": "HubertForSequenceClassification",
    "t5": "T5ForConditionalGeneration",
}
ARCHS = list(TASK_CLASSES)
TEXT_ARCHS = ["bert", "roberta", "distilbert"]


def tiny_model(arch: str, seed: int = 0):
    import transformers as T

    torch.manual_seed(seed)
    return getattr(T, TASK_CLASSES[arch])(tiny_config(arch))


def dummy_batch(arch: str, batch: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (batch,), generator=g)
    if arch in TEXT_ARCHS:
        return {"input_ids": torch.randint(5, 128, (batch, 12), generator=g), "labels": labels}
    if arch == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g), "labels": labels}
    if arch in ("wav2vec2", "hubert"):
        return {"input_values": torch.randn(batch, 800, generator=g), "labels": labels}
    if arch == "t5":
        return {"input_ids": torch.randint(2, 128, (batch, 10), generator=g), "labels": torch.randint(2, 128, (batch, 6), generator=g)}
    raise ValueError(arch)


def review_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Learnable two-class review sentences: the label follows from the adjective."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        words = POSITIVE if label == "positive" else NEGATIVE
        rows.append((f"the {rng.choice(NOUNS)} was {rng.choice(words)} and {rng.choice(words)}", label))
    return rows


def write_csv(path: Path, rows, header=("text", "label"), delimiter=",") -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_tokenizer(folder: Path):
    """A real WordPiece tokenizer over a small vocabulary written to `folder` (v5 takes `vocab=`, not `vocab_file=`)."""
    from transformers import BertTokenizerFast

    words = sorted(set(POSITIVE + NEGATIVE + NOUNS + ["the", "was", "and", "a", "it", "not"]))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"))
    assert tokenizer.convert_ids_to_tokens(tokenizer("the movie was great")["input_ids"]) == [
        "[CLS]", "the", "movie", "was", "great", "[SEP]"
    ], "fixture tokenizer did not load its vocabulary"
    return tokenizer


@pytest.fixture(scope="session")
def tiny_text_model_dir(tmp_path_factory) -> Path:
    """A local 'pretrained' tiny BERT with its tokenizer, loadable with from_pretrained like a Hub checkpoint."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = make_tokenizer(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def review_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("reviews")
    return {
        "train": write_csv(folder / "train.csv", review_rows(64, seed=1)),
        "validation": write_csv(folder / "validation.csv", review_rows(16, seed=2)),
    }


def recipe_argv(model_dir: Path, files: dict, out: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir), "--train_file", str(files["train"]),
        "--validation_file", str(files["validation"]), "--output_dir", str(out),
        "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--logging_steps", "1",
        "--save_strategy", "no", "--frozen_baseline", "false", "--dataloader_pin_memory", "false", *extra,
    ]


def one_line_error(stderr: str) -> str:
    lines = [l for l in stderr.strip().splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, f"expected one 'error:' line, got:\n{stderr[-2000:]}"
    assert not re.search(r"Traceback", stderr), stderr[-2000:]
    return lines[0]


def cli_error(main, argv: list[str], monkeypatch, capsys, alone: bool = False) -> str:
    """Run a recipe's `main` as its command does (through `run_cli`, with `argv` as the command line) and return
    the one `error:` line it prints; exit status 2 is asserted. `alone`: that line is all of stderr."""
    from hf_transfer.cli import run_cli

    monkeypatch.delenv("HF_TRANSFER_DEBUG", raising=False)  # the debug traceback would break the one line
    monkeypatch.setattr(sys, "argv", ["recipe.py", *argv])  # the program's name shows in --help only
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    line = one_line_error(stderr)
    if alone:
        assert stderr.strip() == line, stderr[-2000:]
    return line


def lora_parameter_counts(model, targets: tuple[str, ...], head: tuple[str, ...], r: int) -> tuple[int, int]:
    """(trained, total) parameters of `model` under LoRA, counted by the rule rather than read from peft: r x (in + out)
    for each Linear named by `targets`, and a trainable copy of the head (parameters under the `head` prefixes)."""
    adapters = sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
                   if name.rsplit(".", 1)[-1] in targets)
    head_size = sum(p.numel() for name, p in model.named_parameters() if name.startswith(head))
    total = sum(p.numel() for p in model.parameters())
    return adapters + head_size, total + adapters + head_size


def error_rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus WER and CER (total edits over total reference words, characters), with torchaudio's edit distance:
    an implementation independent of hf_transfer.metrics.speech."""
    from torchaudio.functional import edit_distance

    word_edits = sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses, strict=True))
    char_edits = sum(edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True))
    return word_edits / sum(len(r.split()) for r in references), char_edits / sum(len(r) for r in references)


# --- seq2seq: two stacks (encoder, decoder) ---
SEQ2SEQ = ["t5", "encoder-decoder"]


def tiny_seq2seq(kind: str, seed: int = 0, encoder_layers: int = 2, decoder_layers: int = 2):
    """A trainable tiny T5 or BERT2BERT `EncoderDecoderModel` (vocab 128; token 0 pads and starts decoding)."""
    import transformers as T

    torch.manual_seed(seed)
    if kind == "t5":
        return T.T5ForConditionalGeneration(T.T5Config(
            vocab_size=128, d_model=32, d_kv=8, d_ff=37, num_layers=encoder_layers, num_decoder_layers=decoder_layers,
            num_heads=2, decoder_start_token_id=0, pad_token_id=0,
        ))
    if kind == "encoder-decoder":
        common = dict(vocab_size=128, hidden_size=32, num_attention_heads=2, intermediate_size=37, max_position_embeddings=64)
        encoder = T.BertConfig(num_hidden_layers=encoder_layers, **common)
        decoder = T.BertConfig(num_hidden_layers=decoder_layers, is_decoder=True, add_cross_attention=True, **common)
        config = T.EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder, decoder_start_token_id=2, pad_token_id=0)
        return T.EncoderDecoderModel(config)
    raise ValueError(kind)


def seq2seq_batch(batch: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(3, 128, (batch, 10), generator=g), "labels": torch.randint(3, 128, (batch, 6), generator=g)}
