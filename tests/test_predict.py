"""recipes/predict.py on every recipe's output folder: the sentiment recipe's (full, LoRA), the image recipe's LoRA
adapter, the audio recipe's wav2vec2 and Whisper-LoRA classifiers, the text-to-text recipe's BERT2BERT (full, LoRA),
the CTC recipe's, and a Whisper recogniser and a regression model saved as the recipes save them. Tables, folders
(class subfolders scored) and stdin; unusable rows kept and marked; bad input as one line. Predictions are checked
against the model run apart, on inputs read apart, one at a time."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli_error, recipe_argv, review_rows, write_csv

from recipes import audio_classification, image_classification, predict, sentiment


@pytest.fixture(scope="module")
def trained(tiny_text_model_dir, review_files, tmp_path_factory):
    folders = {}
    for name, flags in {"full": [], "lora": ["--strategy", "lora", "--lora_r", "2"]}.items():
        out = tmp_path_factory.mktemp(name) / "out"
        sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, "--learning_rate", "1e-2", *flags))
        folders[name] = out
    return folders


def reference_probabilities(folder, texts: list[str]) -> torch.Tensor:
    """The saved model's class probabilities, computed apart: transformers' own loading, fp32, one text at a time."""
    from peft import AutoPeftModelForSequenceClassification
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    config = AutoConfig.from_pretrained(folder)
    if (folder / "adapter_config.json").is_file():
        model = AutoPeftModelForSequenceClassification.from_pretrained(folder, id2label=config.id2label, label2id=config.label2id)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return torch.cat([model.eval()(**tokenizer([t], return_tensors="pt")).logits.softmax(-1) for t in texts])


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_predictions_keep_the_input_and_equal_the_models_own(trained, tmp_path, kind, monkeypatch):
    from hf_transfer.run import launch

    monkeypatch.setattr(launch, "_cpu_flags", lambda: set())  # fp32, to compare with the fp32 reference exactly
    rows = review_rows(12, seed=5)
    table = write_csv(tmp_path / "new.csv", [(text, "x" + str(i)) for i, (text, _) in enumerate(rows)], header=("text", "id"))
    result = predict.main(["--model", str(trained[kind]), "--input", str(table), "--top_k", "2", "--batch_size", "5"])
    written = list(csv.DictReader(open(tmp_path / "new_predictions.csv")))
    assert [r["id"] for r in written] == [f"x{i}" for i in range(12)] and [r["text"] for r in written] == [t for t, _ in rows]
    expected = reference_probabilities(trained[kind], [t for t, _ in rows])
    names = json.loads((trained[kind] / "config.json").read_text())["id2label"]
    for row, probabilities in zip(written, expected):
        best = int(probabilities.argmax())
        assert row["predicted_label"] == names[str(best)]
        assert float(row["score"]) == pytest.approx(float(probabilities[best]), abs=1e-5)
        top = json.loads(row["top_k"])
        assert [t["label"] for t in top] == [names[str(i)] for i in probabilities.argsort(descending=True).tolist()]
    assert result == {"rows": 12, "predicted": 12, "skipped": 0}


def test_labelled_rows_are_scored_and_rows_without_text_are_kept_and_marked(trained, tmp_path, capsys):
    rows = review_rows(10, seed=6)
    lines = [{"text": t, "label": y} for t, y in rows] + [{"text": "", "label": "positive"}, {"label": "negative"}]
    table = tmp_path / "labelled.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "out" / "predictions.jsonl"
    result = predict.main(["--model", str(trained["full"]), "--input", str(table), "--output", str(out)])
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 12 and [w.get("skipped") for w in written[-2:]] == ["no text in 'text'"] * 2
    assert all(w["predicted_label"] is None for w in written[-2:]) and all(w["skipped"] == "" for w in written[:10])
    right = sum(w["predicted_label"] == w["label"] for w in written[:10])
    assert result["skipped"] == 2 and result["labelled"] == 10 and result["accuracy"] == pytest.approx(right / 10)
    assert f"accuracy on the 10 labelled rows: {right / 10:.4f}" in capsys.readouterr().out


def test_lines_on_stdin_give_jsonl_on_stdout(trained, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("the phone was great\n\nthe service was awful\n"))
    predict.main(["--model", str(trained["full"])])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["text"] for o in out] == ["the phone was great", "the service was awful"]
    assert all(o["predicted_label"] in ("negative", "positive") and 0.5 <= o["score"] <= 1 for o in out)


# ---------------------------------------------------------------------------------------------------------
# Every other recipe's output folder
# ---------------------------------------------------------------------------------------------------------

def media_argv(model, root, out, *extra):
    """A one-epoch run of a media recipe on the label folders under `root/train`, the rest of train held out."""
    return ["--model_name_or_path", str(model), "--train_dir", str(root / "train"), "--output_dir", str(out),
            "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--save_strategy", "no",
            "--eval_strategy", "no", "--disable_tqdm", "true", "--validation_split_percentage", "25", *extra]


@pytest.fixture(scope="module")
def image_lora(tmp_path_factory):
    """The image recipe's LoRA adapter folder (a tiny ViT), and new images: label folders with every kind of bad file."""
    from image_helpers import make_label_folders, save_tiny_vit, write_bad_images

    root = tmp_path_factory.mktemp("images")
    make_label_folders(root / "train", per_label=4, seed=0)
    out = root / "lora"
    image_classification.main(media_argv(save_tiny_vit(root / "tiny-vit"), root, out, "--strategy", "lora", "--lora_r", "2"))
    make_label_folders(root / "new", per_label=3, seed=5)
    bad = write_bad_images(root / "new" / "red")
    return out, root / "new", bad


def image_probabilities(folder, paths) -> torch.Tensor:
    """The LoRA folder's class probabilities computed apart: the base named by the adapter with the run's config, the
    adapter merged (as the model card says), images opened with Pillow, the saved processor, one image at a time."""
    from peft import PeftConfig, PeftModel
    from PIL import Image
    from transformers import AutoConfig, AutoImageProcessor, ViTForImageClassification

    base = ViTForImageClassification.from_pretrained(PeftConfig.from_pretrained(folder).base_model_name_or_path,
                                                     config=AutoConfig.from_pretrained(folder))
    model = PeftModel.from_pretrained(base, folder).merge_and_unload().eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        return torch.cat([model(**processor([Image.open(p).convert("RGB")], return_tensors="pt")).logits.softmax(-1)
                          for p in paths])


def test_an_image_folder_on_a_lora_adapter_folder_keeps_bad_files_marked_and_scores_the_subfolders(image_lora, capsys):
    out, new, bad = image_lora
    result = predict.main(["--model", str(out), "--input", str(new), "--batch_size", "4", "--top_k", "2"])
    written = [json.loads(line) for line in (new.parent / "new_predictions.jsonl").read_text().splitlines()]
    good = sorted(p for p in new.rglob("*.png") if p not in bad.values())
    assert sorted(w["path"] for w in written) == sorted(str(p) for p in new.rglob("*.*"))
    by_path = {w["path"]: w for w in written}
    for path, probabilities in zip(good, image_probabilities(out, good)):
        row, best = by_path[str(path)], int(probabilities.argmax())
        assert row["label"] == path.parent.name and row["skipped"] == ""
        assert row["predicted_label"] == ["blue", "red"][best] and row["score"] == pytest.approx(float(probabilities[best]), abs=1e-5)
        assert [t["label"] for t in row["top_k"]] == [["blue", "red"][i] for i in probabilities.argsort(descending=True).tolist()]
    reasons = {kind: by_path[str(path)]["skipped"] for kind, path in bad.items()}
    assert reasons["empty"] == "empty file" and reasons["not_an_image"].startswith("not an image file")
    assert reasons["truncated_jpeg"].startswith("truncated") and reasons["truncated_png"].startswith("truncated")
    assert reasons["corrupt"].startswith(("truncated", "cannot be decoded"))
    assert all(by_path[str(p)]["predicted_label"] is None for p in bad.values())
    right = sum(by_path[str(p)]["predicted_label"] == p.parent.name for p in good)
    assert result == {"rows": 11, "predicted": 6, "skipped": 5, "labelled": 6, "accuracy": pytest.approx(right / 6)}
    assert "5 skipped, marked in column 'skipped'" in capsys.readouterr().out


def test_a_table_of_image_paths_resolves_them_next_to_the_table(image_lora, tmp_path):
    out, new, _ = image_lora
    good = sorted(new.rglob("*.png"))[:4]
    tables = tmp_path / "tables"
    tables.mkdir()
    rows = [{"file": os.path.relpath(p, tables), "id": i} for i, p in enumerate(good)] + [{"file": "", "id": 9}]
    (tables / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = predict.main(["--model", str(out), "--input", str(tables / "images.jsonl"), "--output", str(tmp_path / "p.csv")])
    written = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [w["file"] for w in written] == [r["file"] for r in rows] and [w["id"] for w in written] == ["0", "1", "2", "3", "9"]
    expected = image_probabilities(out, good)
    assert [float(w["score"]) for w in written[:4]] == pytest.approx(expected.max(-1).values.tolist(), abs=1e-5)
    assert written[4]["skipped"] == "no path in 'file'" and written[4]["predicted_label"] == ""
    assert result == {"rows": 5, "predicted": 4, "skipped": 1}  # no label column: nothing scored


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """Tiny wav2vec2 and Whisper checkpoints, training clips in label folders, and new clips: label folders of tones at
    mixed rates, channels and formats, a corrupt file and a clip shorter than the wav2vec2 receptive field (20 samples)."""
    from audio_helpers import make_label_folders, save_speech_checkpoint, save_whisper_checkpoint, write_clip, write_corrupt

    root = tmp_path_factory.mktemp("audio")
    make_label_folders(root / "train", per_label=4, seed=0)
    make_label_folders(root / "new", per_label=2, seed=3)
    write_corrupt(root / "new" / "low" / "corrupt.wav")
    write_clip(root / "new" / "high" / "blip.wav", 2000.0, 16000, 0.001)
    return {"root": root, "wav2vec2": save_speech_checkpoint(root / "tiny-wav2vec2"),
            "whisper": save_whisper_checkpoint(root / "tiny-whisper")}


def read_clip(path, rate: int) -> np.ndarray:
    """A clip as the model hears it, read apart from the data layer: soundfile, channels averaged, torchaudio's resampling."""
    import soundfile
    import torchaudio

    samples, original = soundfile.read(str(path), dtype="float32", always_2d=True)
    return torchaudio.functional.resample(torch.from_numpy(samples.mean(axis=1)), original, rate).numpy()


def predicted_rows(out, input_folder, *extra) -> tuple[dict, dict]:
    """predict on a folder: (the result, the written rows by path)."""
    result = predict.main(["--model", str(out), "--input", str(input_folder), *extra])
    written = (input_folder.parent / f"{input_folder.name}_predictions.jsonl").read_text().splitlines()
    return result, {Path(row["path"]): row for row in map(json.loads, written)}


def test_an_audio_classifier_run_predicts_clips_one_at_a_time_as_the_model_does(audio, tmp_path):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    root, out = audio["root"], tmp_path / "out"
    audio_classification.main(media_argv(audio["wav2vec2"], root, out, "--learning_rate", "1e-3"))
    result, written = predicted_rows(out, root / "new", "--batch_size", "1")
    model, extractor = AutoModelForAudioClassification.from_pretrained(out).eval(), AutoFeatureExtractor.from_pretrained(out)
    clips = sorted(p for p in (root / "new").rglob("*.*") if p.name not in ("corrupt.wav", "blip.wav"))
    for clip in clips:
        with torch.no_grad():
            inputs = extractor(read_clip(clip, 16000), sampling_rate=16000, return_tensors="pt")
            probabilities = model(**inputs).logits.softmax(-1)[0]
        assert written[clip]["label"] == clip.parent.name
        assert written[clip]["predicted_label"] == model.config.id2label[int(probabilities.argmax())]
        assert written[clip]["score"] == pytest.approx(float(probabilities.max()), abs=1e-4)
    new = root / "new"
    assert written[new / "low" / "corrupt.wav"]["skipped"].startswith("not a readable audio file")
    assert written[new / "high" / "blip.wav"]["skipped"] == "too short (16 samples at 16000 Hz; the model needs 20)"
    right = sum(written[clip]["predicted_label"] == clip.parent.name for clip in clips)
    assert result == {"rows": 6, "predicted": 4, "skipped": 2, "labelled": 4, "accuracy": pytest.approx(right / 4)}


def test_a_whisper_lora_adapter_at_a_1s_window_loads_its_base_cut_alike(audio, tmp_path):
    """The run cut the encoder's position table to 1 s (50 rows) before adding LoRA: the base (100 rows) must be cut the
    same way before the adapter goes on. Clips over the window are heard for their first second, as evaluation did."""
    from audio_helpers import tiny_whisper_config, write_clip
    from peft import PeftModel
    from transformers import AutoConfig, WhisperFeatureExtractor, WhisperForAudioClassification

    root, out = audio["root"], tmp_path / "out"
    audio_classification.main(media_argv(audio["whisper"], root, out, "--whisper_window_seconds", "1", "--strategy", "lora",
                                         "--lora_r", "2", "--use_cpu", "true"))
    flat = tmp_path / "clips"  # loose files, no label folders: nothing to score
    clips = [write_clip(flat / "a.wav", 300.0, 16000, 0.5), write_clip(flat / "b.flac", 2000.0, 44100, 1.6, channels=2)]
    result, written = predicted_rows(out, flat)
    assert result == {"rows": 2, "predicted": 2, "skipped": 0} and all("label" not in row for row in written.values())

    saved = AutoConfig.from_pretrained(out)
    config = tiny_whisper_config(id2label=saved.id2label, label2id=saved.label2id)  # the base's own 100 positions
    model = WhisperForAudioClassification.from_pretrained(audio["whisper"], config=config)
    short = torch.nn.Embedding(50, config.d_model)
    short.weight.data.copy_(model.encoder.embed_positions.weight.data[:50])
    model.encoder.embed_positions, model.config.max_source_positions = short, 50
    model = PeftModel.from_pretrained(model, out).merge_and_unload().eval()
    extractor = WhisperFeatureExtractor.from_pretrained(out)
    assert extractor.n_samples == 16000  # the run's 1 s window, saved with the model
    for clip in clips:
        with torch.no_grad():
            features = extractor(read_clip(clip, 16000)[:16000], sampling_rate=16000, return_tensors="pt").input_features
            probabilities = model(input_features=features).logits.softmax(-1)[0]
        assert written[clip]["predicted_label"] == saved.id2label[int(probabilities.argmax())]
        assert written[clip]["score"] == pytest.approx(float(probabilities.max()), abs=1e-4)


def greedy_ctc(logits: torch.Tensor, vocabulary: dict[str, int]) -> str:
    """CTC greedy decoding by its definition: best id per frame, repeats collapsed, blanks (<pad>) dropped, | a space,
    an unknown character U+FFFD (one character, one error, as the run's WER counts it)."""
    tokens = {i: t for t, i in vocabulary.items()}
    best = logits.argmax(-1).tolist()
    ids = [i for n, i in enumerate(best) if n == 0 or i != best[n - 1]]
    shown = {"|": " ", "<unk>": "\ufffd"}
    return " ".join("".join(shown.get(tokens[i], tokens[i]) for i in ids if tokens[i] != "<pad>").split())


def test_a_ctc_run_transcribes_a_table_and_scores_its_transcripts(audio, tmp_path):
    from audio_helpers import write_table
    from conftest import error_rates
    from transformers import AutoFeatureExtractor, AutoModelForCTC

    from recipes import speech_recognition

    root, out = audio["root"], tmp_path / "out"
    words = {"low": "Low tone.", "high": "high, tone"}
    clips = sorted(p for p in (root / "train").rglob("*.*"))
    write_table(tmp_path / "train.csv", [{"path": str(p), "text": words[p.parent.name]} for p in clips])
    speech_recognition.main(["--model_name_or_path", str(audio["wav2vec2"]), "--train_file", str(tmp_path / "train.csv"),
                             "--output_dir", str(out), "--num_train_epochs", "1", "--per_device_train_batch_size", "4",
                             "--learning_rate", "1e-3", "--save_strategy", "no", "--disable_tqdm", "true"])
    new = sorted(p for p in (root / "new").rglob("*.*") if p.name != "blip.wav")
    table = write_table(tmp_path / "new.csv", [{"path": os.path.relpath(p, tmp_path), "text": words[p.parent.name]} for p in new])
    result = predict.main(["--model", str(out), "--input", str(table), "--batch_size", "1"])
    written = list(csv.DictReader(open(tmp_path / "new_predictions.csv")))
    model, vocabulary = AutoModelForCTC.from_pretrained(out).eval(), json.loads((out / "vocab.json").read_text())
    extractor = AutoFeatureExtractor.from_pretrained(out)
    hypotheses, references = [], []
    for clip, row in zip(new, written):
        if clip.name == "corrupt.wav":
            assert row["skipped"].startswith("not a readable audio file") and row["transcript"] == ""
            continue
        with torch.no_grad():
            logits = model(**extractor(read_clip(clip, 16000), sampling_rate=16000, return_tensors="pt")).logits[0]
        assert row["transcript"] == greedy_ctc(logits, vocabulary)
        hypotheses.append(row["transcript"])
        references.append({"low": "low tone", "high": "high tone"}[clip.parent.name])  # as the run normalised them
    wer, cer = error_rates(references, hypotheses)
    assert result == {"rows": 5, "predicted": 4, "skipped": 1, "labelled": 4, "wer": pytest.approx(wer), "cer": pytest.approx(cer)}


def test_a_whisper_recogniser_transcribes_clips_and_skips_those_longer_than_its_window(audio, tmp_path):
    """A folder saved as the Whisper recipe saves one (weights, processor: 2 s window): transcripts are the model's own
    greedy generation; a clip over the window is skipped (its transcript would lose the end), not cut."""
    from audio_helpers import save_whisper_recognition_files, tiny_whisper_config, write_clip
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    folder = save_whisper_recognition_files(tmp_path / "whisper")
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(tiny_whisper_config())
    model.generation_config.suppress_tokens = [0, 1, 2]  # the special tokens: a random model then writes letters
    model.save_pretrained(folder)
    clips = tmp_path / "clips"
    short = [write_clip(clips / "a.wav", 300.0, 16000, 0.5), write_clip(clips / "b.wav", 1200.0, 8000, 1.2)]
    write_clip(clips / "long.wav", 300.0, 16000, 2.5)
    table = clips / "clips.csv"
    table.write_text("file,sentence\na.wav,yes\nb.wav,no no\nlong.wav,yes\n")
    result = predict.main(["--model", str(folder), "--input", str(table), "--max_new_tokens", "5"])
    written = list(csv.DictReader(open(clips / "clips_predictions.csv")))
    assert written[2]["skipped"] == "longer than the model's 2 s window" and written[2]["transcript"] == ""

    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    extractor, tokenizer = WhisperFeatureExtractor.from_pretrained(folder), WhisperTokenizerFast.from_pretrained(folder)
    with torch.no_grad():
        features = extractor([read_clip(c, 16000) for c in short], sampling_rate=16000, return_tensors="pt").input_features
        expected = [t.strip() for t in tokenizer.batch_decode(model.generate(features, max_new_tokens=5), skip_special_tokens=True)]
    assert [w["transcript"] for w in written[:2]] == expected
    from conftest import error_rates

    normalised = [" ".join(t.lower().split()) for t in expected]  # the tokens are letters and spaces: nothing else to strip
    wer, cer = error_rates(["yes", "no no"], normalised)
    assert result == {"rows": 3, "predicted": 2, "skipped": 1, "labelled": 2, "wer": pytest.approx(wer), "cer": pytest.approx(cer)}


@pytest.fixture(scope="module")
def bert2bert(tiny_text_model_dir, tmp_path_factory):
    """The text-to-text recipe's folders: a BERT2BERT warm-started from the tiny BERT, trained full and with LoRA, with
    a source prefix (the run records it; predict puts it before every source)."""
    from recipes import text_to_text

    root = tmp_path_factory.mktemp("text_to_text")
    pairs = [(text, text) for text, _ in review_rows(32, seed=1)]
    write_csv(root / "train.csv", pairs, header=("source", "target"))
    folders = {}
    for name, flags in {"full": [], "lora": ["--strategy", "lora", "--lora_r", "2"]}.items():
        folders[name] = root / name
        text_to_text.main(["--model_name_or_path", str(tiny_text_model_dir), "--encoder_decoder_from", str(tiny_text_model_dir),
                           "--train_file", str(root / "train.csv"), "--output_dir", str(folders[name]), "--num_train_epochs", "1",
                           "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--save_strategy", "no",
                           "--eval_strategy", "no", "--generation_max_length", "6", "--source_prefix", "it was ",
                           "--validation_split_percentage", "25", *flags])
    return folders


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_text_to_text_generates_with_the_runs_prefix_and_scores_the_references(bert2bert, tiny_text_model_dir, tmp_path, kind):
    import sacrebleu
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    folder = bert2bert[kind]
    rows = [{"source": text, "target": text} for text, _ in review_rows(6, seed=7)]
    table = tmp_path / "new.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = predict.main(["--model", str(folder), "--input", str(table), "--batch_size", "4"])
    written = [json.loads(line) for line in (tmp_path / "new_predictions.jsonl").read_text().splitlines()]

    if kind == "lora":  # peft names no base for a warm-started model: the run's two halves (both the tiny BERT)
        from peft import PeftModel
        from transformers import AutoConfig, EncoderDecoderModel, GenerationConfig

        config = AutoConfig.from_pretrained(folder)
        base = EncoderDecoderModel.from_encoder_decoder_pretrained(str(tiny_text_model_dir), str(tiny_text_model_dir),
                                                                   encoder_config=config.encoder, decoder_config=config.decoder)
        base.config.decoder_start_token_id, base.config.pad_token_id = config.decoder_start_token_id, config.pad_token_id
        model = PeftModel.from_pretrained(base, folder).merge_and_unload()
        generation = GenerationConfig.from_pretrained(folder)  # the LoRA folder keeps the run's generation settings
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(folder)
        generation = model.generation_config
    assert generation.max_length == 6
    tokenizer = AutoTokenizer.from_pretrained(folder)
    expected = []
    with torch.no_grad():
        for row in rows:  # one source at a time, with the run's prefix and its saved generation settings (6 tokens)
            ids = model.eval().generate(**tokenizer(["it was " + row["source"]], return_tensors="pt"), generation_config=generation)
            expected.append(tokenizer.decode(ids[0], skip_special_tokens=True).strip())
    assert [w["generated_text"] for w in written] == expected and [w["source"] for w in written] == [r["source"] for r in rows]
    bleu = sacrebleu.corpus_bleu(expected, [[r["target"] for r in rows]]).score
    assert result["bleu"] == pytest.approx(bleu) and result["labelled"] == 6


def test_a_regression_model_writes_its_raw_output_and_scores_mae(tiny_text_model_dir, tmp_path, capsys):
    """config.problem_type == "regression" (one output): the raw logit, no softmax, no label; numeric labels scored
    by MAE, rows whose label is not a number left unscored."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path / "regressor"
    torch.manual_seed(0)
    config = BertConfig.from_pretrained(tiny_text_model_dir, num_labels=1, problem_type="regression")
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(tiny_text_model_dir)
    tokenizer.save_pretrained(folder)
    texts = [text for text, _ in review_rows(5, seed=8)]
    targets = ["0.5", "2.25", "-1", "n/a", ""]
    table = write_csv(tmp_path / "scores.csv", zip(texts, targets), header=("sentence", "score_label"))
    result = predict.main(["--model", str(folder), "--input", str(table), "--label_column", "score_label"])
    written = list(csv.DictReader(open(tmp_path / "scores_predictions.csv")))
    with torch.no_grad():
        expected = [float(model(**tokenizer([t], return_tensors="pt")).logits[0, 0]) for t in texts]
    assert [float(w["predicted_value"]) for w in written] == pytest.approx(expected, abs=1e-5)
    assert "predicted_label" not in written[0] and "score" not in written[0]
    mae = float(np.mean([abs(e - t) for e, t in zip(expected, (0.5, 2.25, -1.0))]))
    assert result == {"rows": 5, "predicted": 5, "skipped": 0, "labelled": 3, "mae": pytest.approx(mae, abs=1e-5)}
    assert f"MAE on the 3 labelled rows: {mae:.4f}" in capsys.readouterr().out


def test_bad_input_is_one_line_and_writes_nothing(trained, image_lora, audio, bert2bert, tiny_text_model_dir, tmp_path,
                                                  monkeypatch, capsys):
    image_model, images, _ = image_lora
    table = write_csv(tmp_path / "t.csv", review_rows(4), header=("review_body", "verdict"))
    empty, empty_folder, unknown = tmp_path / "empty.jsonl", tmp_path / "nothing", tmp_path / "unknown"
    empty.write_text("")
    empty_folder.mkdir()
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    pngs = write_csv(tmp_path / "pngs.csv", [(str(p), "red") for p in sorted(images.rglob("*.png"))], header=("path", "label"))
    predicted = write_csv(tmp_path / "again.csv", [("great", "positive")], header=("text", "predicted_label"))
    full, t2t = str(trained["full"]), str(bert2bert["full"])
    cases = [
        (["--model", str(tmp_path), "--input", str(table)], "is not a model folder (no config.json)"),
        (["--model", str(tiny_text_model_dir), "--input", str(table)], "holds a BertModel model; predict takes text classifiers, "
         "image classifiers, audio classifiers, text-to-text models, CTC speech recognisers, Whisper speech recognisers"),
        (["--model", str(unknown), "--input", str(table)], "cannot read its config.json"),
        (["--model", full, "--input", str(table)], "no text column found in --input; its columns: review_body, verdict"),
        (["--model", full, "--input", str(tmp_path / "nope.csv")], "--input " + str(tmp_path / "nope.csv") + " does not exist"),
        (["--model", full, "--input", str(empty)], "empty.jsonl has no rows"),
        (["--model", full, "--input", str(table), "--text_column", "review_body", "--label_column", "stars"],
         "--label_column stars is not in --input"),
        (["--model", full, "--input", str(table), "--top_k", "0"], "--top_k must be at least 1"),
        (["--model", full, "--input", str(table), "--output", str(tmp_path / "p.txt")], "name a file ending in one of"),
        (["--model", full, "--input", str(predicted)], "--input already has a column 'predicted_label', which predict writes"),
        # a modality mismatch: images to a text model, a table without paths or stdin to an image model, clips to it
        (["--model", full, "--input", str(images)], "is a folder; a text classifier reads a table with a text column"),
        (["--model", str(image_model), "--input", str(table)],
         "no image path column found in --input; its columns: review_body, verdict; name it with --path_column"),
        (["--model", str(image_model)], "--input - (lines of text on stdin) is for text models; an image classifier takes"),
        (["--model", str(image_model), "--input", str(empty_folder)], "nothing has no image files (.jpg"),
        (["--model", str(image_model), "--input", str(audio["root"] / "new")],
         "it holds 6 audio files, which an image classifier does not take"),
        (["--model", str(audio["whisper"]), "--input", str(pngs)], "'path' column lists image files; an audio classifier takes audio"),
        # options for another kind of model
        (["--model", t2t, "--input", str(table), "--top_k", "2"], "--top_k does not apply to " + t2t + ", a text-to-text model"),
        (["--model", full, "--input", str(table), "--path_column", "x"], "--path_column does not apply"),
    ]
    before = {p: p.stat().st_mtime_ns for p in images.parent.glob("*_predictions*")}  # earlier tests' outputs
    for argv, message in cases:
        assert message in cli_error(predict.main, argv, monkeypatch, capsys), argv
    assert not list(tmp_path.rglob("*_predictions*"))
    assert {p: p.stat().st_mtime_ns for p in images.parent.glob("*_predictions*")} == before
