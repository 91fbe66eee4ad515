"""The audio pipeline and recipes on real recordings (FSDD in ../shared/data): run with `make test-real`.

Each test skips with the reason when the data is absent.
"""
import csv

import numpy as np
import pytest
import soundfile
from conftest import SHARED_DATA, error_rates

from hf_transfer.data.audio import AudioCollator, AudioDataArgs, check_audio
from hf_transfer.data.audio_io import read_audio

pytestmark = pytest.mark.real_data

FSDD = SHARED_DATA / "fsdd" / "recordings"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def recordings():
    if not FSDD.is_dir():
        pytest.skip(f"FSDD not found at {FSDD} (see ../shared/data/README.md)")
    return sorted(FSDD.glob("*.wav"))


def test_every_fsdd_header_reads_and_lengths_match_decoding(recordings):
    from datasets import Dataset

    assert len(recordings) == 3000
    dataset = Dataset.from_dict({"audio": [str(p) for p in recordings]})
    checked, counts = check_audio(dataset, "all", AudioDataArgs(), 16000, min_samples=400)
    assert not counts and len(checked) == 3000
    for row in checked.select(range(0, 3000, 150)):  # 20 spread-out clips: decoded length == header-derived length
        assert len(read_audio(row["audio"], 16000)) == row["length"] == 2 * soundfile.info(row["audio"]).frames


def test_collated_fsdd_batch_is_normalised_and_masked(recordings):
    from transformers import Wav2Vec2FeatureExtractor

    rows = [{"audio": str(p), "labels": int(p.name[0])} for p in recordings[:8]]
    batch = AudioCollator(Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True))(rows)
    lengths = batch["attention_mask"].sum(1).numpy()
    assert list(lengths) == [2 * soundfile.info(r["audio"]).frames for r in rows]
    first = batch["input_values"][0, : lengths[0]].numpy()
    assert abs(first.mean()) < 1e-3 and abs(first.std() - 1) < 1e-2 and np.isfinite(first).all()


def test_speech_recognition_recipe_runs_on_one_speakers_digits(recordings, tmp_path):
    from audio_helpers import save_speech_checkpoint

    from recipes import speech_recognition

    rows = [{"path": str(p), "text": WORDS[int(p.name[0])], "take": int(p.stem.split("_")[2])}
            for p in recordings if "_theo_" in p.name]
    for split, takes in (("train", range(5, 15)), ("test", range(5))):
        with open(tmp_path / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "text", "take"])
            writer.writeheader()
            writer.writerows(r for r in rows if r["take"] in takes)
    model = save_speech_checkpoint(tmp_path / "model")
    out = tmp_path / "out"
    metrics = speech_recognition.main([
        "--model_name_or_path", str(model), "--train_file", str(tmp_path / "train.csv"),
        "--validation_file", str(tmp_path / "test.csv"), "--output_dir", str(out), "--max_steps", "4",
        "--per_device_train_batch_size", "8", "--save_strategy", "no", "--eval_strategy", "no", "--disable_tqdm", "true",
        "--per_device_eval_batch_size", "1",  # unpadded clips, so the check below can feed them one at a time
    ])
    assert metrics["vocabulary_size"] == 3 + len(set("".join(WORDS)))  # pad, unk, delimiter + the digit words' letters
    assert metrics["train_clips"] == 100 and metrics["validation_clips"] == 50

    # The error rates re-derived outside the recipe: the saved model and processor transcribe each held-out clip
    # (greedy CTC written out here), scored against the CSV's transcripts with torchaudio's edit distance.
    references = [r["text"] for r in rows if r["take"] in range(5)]
    hypotheses = [transcribe(out, r["path"]) for r in rows if r["take"] in range(5)]
    wer, cer = error_rates(references, hypotheses)
    assert metrics["validation_cer"] == pytest.approx(cer, abs=1e-9)
    assert metrics["validation_wer"] == pytest.approx(wer, abs=1e-9)


_LOADED = {}


def transcribe(folder, path) -> str:
    import torch
    from transformers import AutoModelForCTC, Wav2Vec2Processor

    if folder not in _LOADED:
        _LOADED.clear()
        _LOADED[folder] = AutoModelForCTC.from_pretrained(folder).eval(), Wav2Vec2Processor.from_pretrained(folder)
    model, processor = _LOADED[folder]
    inputs = processor.feature_extractor(read_audio(path, 16000), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ids = model(**inputs).logits.argmax(-1)[0].tolist()
    tokenizer = processor.tokenizer
    tokens = {i: t for t, i in tokenizer.get_vocab().items()}
    kept = [i for n, i in enumerate(ids) if (n == 0 or i != ids[n - 1]) and i != tokenizer.pad_token_id]  # collapse, drop blank
    # One character per token; an <unk> counts as one wrong character (no reference holds "?").
    text = "".join("?" if tokens[i] == tokenizer.unk_token else " " if tokens[i] == "|" else tokens[i] for i in kept)
    return " ".join(text.split())
