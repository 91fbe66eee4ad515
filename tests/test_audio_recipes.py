"""The audio recipes end to end on tiny local checkpoints: outputs, strategies, a frozen feature encoder, bad input."""
import json

import pytest
import torch
from audio_helpers import (
    feature_encoder_state,
    make_label_folders,
    save_speech_checkpoint,
    table_from_folders,
    tiny_speech_config,
    write_corrupt,
    write_empty,
    write_table,
    write_zero_rate,
)
from conftest import cli_error, lora_parameter_counts
from trainer_helpers import (
    BatchRecorder,
    assert_same_batches,
    assert_same_weights,
    keep_only_checkpoint,
    stop_runs_after,
)

from hf_transfer import StrategyArgs, TransferTrainer, head_module_names, layer_groups
from hf_transfer.data.audio import (
    AudioCollator,
    AudioDataArgs,
    AudioLabelArgs,
    load_audio_classification,
)
from hf_transfer.models.speech import (
    SpeechModelArgs,
    min_batch_samples,
    prepare_speech_model,
)
from recipes import audio_classification, speech_recognition


@pytest.fixture(scope="module")
def audio_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    make_label_folders(root / "train", per_label=8, seed=0)
    make_label_folders(root / "dev", per_label=3, seed=1)
    write_corrupt(root / "train" / "low" / "corrupt.wav")
    write_empty(root / "train" / "high" / "empty.wav")
    words = {"low": "Low tone.", "high": "high, tone"}
    for split in ("train", "dev"):
        table_from_folders(root / split, root / f"{split}_labels.csv")
        rows = [{"path": str(p.relative_to(root)), "text": words[p.parent.name]} for p in sorted((root / split).rglob("*.*"))]
        write_table(root / f"{split}_transcripts.csv", rows)
    return root


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    return save_speech_checkpoint(tmp_path_factory.mktemp("tiny-wav2vec2") / "model")


def classification_argv(model, root, out, *extra):
    return [
        "--model_name_or_path", str(model), "--train_dir", str(root / "train"), "--validation_dir", str(root / "dev"),
        "--output_dir", str(out), "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
        "--logging_steps", "1", "--save_strategy", "no", "--disable_tqdm", "true", *extra,
    ]


def recognition_argv(model, root, out, *extra):
    return [
        "--model_name_or_path", str(model), "--train_file", str(root / "train_transcripts.csv"),
        "--validation_file", str(root / "dev_transcripts.csv"), "--output_dir", str(out), "--num_train_epochs", "1",
        "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--logging_steps", "1", "--save_strategy", "no",
        "--disable_tqdm", "true", *extra,
    ]


def changed(before: dict, after: dict) -> set:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("freeze", [True, False])
def test_classification_run_saves_a_reloadable_model_and_keeps_the_feature_encoder_frozen(audio_root, base_checkpoint, tmp_path, freeze):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    out = tmp_path / "out"
    metrics = audio_classification.main(classification_argv(base_checkpoint, audio_root, out, "--freeze_feature_encoder", str(freeze)))

    assert metrics["global_step"] == 4  # 16 readable clips / batch 4
    assert metrics["train_bad_audio_skipped"] == 2 and metrics["train_clips"] == 16 and metrics["validation_clips"] == 6
    for key in ("validation_accuracy", "validation_f1", "train_loss", "trainable_parameters", "wall_time_s"):
        assert key in metrics, key
    assert json.loads((out / "metrics.json").read_text())["label_names"] == ["high", "low"]
    model = AutoModelForAudioClassification.from_pretrained(out)
    assert model.config.id2label == {0: "high", 1: "low"}
    assert AutoFeatureExtractor.from_pretrained(out).return_attention_mask
    assert not list(out.glob("*.bin")) or list(out.glob("*.bin")) == [out / "training_args.bin"]

    encoder_changes = changed(feature_encoder_state(base_checkpoint), feature_encoder_state(out))
    pretrained = AutoModelForAudioClassification.from_pretrained(base_checkpoint).state_dict()
    assert changed({k: v for k, v in pretrained.items() if ".encoder.layers." in k}, model.state_dict()), "the blocks did not train"
    if freeze:
        assert encoder_changes == set(), "the frozen feature encoder moved"
        frozen = sum(p.numel() for p in model.wav2vec2.feature_extractor.parameters())
        assert metrics["trainable_parameters"] == metrics["total_parameters"] - frozen
    else:
        assert encoder_changes, "with --freeze_feature_encoder false the encoder should train"


@pytest.mark.parametrize("flags, frozen_groups", [
    (["--strategy", "freeze", "--freeze_bottom", "1"], {"embeddings", "block_0"}),
    (["--strategy", "gradual", "--unfreeze_every", "1", "--unfreeze_unit", "step", "--layer_lr_decay", "0.8"], set()),
])
def test_layer_strategies_never_touch_the_frozen_feature_encoder(audio_root, base_checkpoint, tmp_path, flags, frozen_groups):
    from transformers import AutoModelForAudioClassification

    out = tmp_path / "out"
    audio_classification.main(classification_argv(base_checkpoint, audio_root, out, *flags))
    trained = AutoModelForAudioClassification.from_pretrained(out)
    original = AutoModelForAudioClassification.from_pretrained(base_checkpoint)
    after = dict(trained.named_parameters())
    for group in layer_groups(original)[:-1]:
        moved = changed(dict(group.named_parameters), after)
        if group.name in frozen_groups:
            assert not moved, (group.name, moved)
        elif group.name != "embeddings":
            assert moved, f"{group.name} did not train"
    assert not changed(feature_encoder_state(base_checkpoint), feature_encoder_state(out))


def test_lora_targets_q_and_v_and_trains_the_new_head_with_the_feature_encoder_bitwise_unchanged(audio_root, tmp_path):
    from transformers import (
        TrainingArguments,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForSequenceClassification,
    )

    torch.manual_seed(0)
    base = Wav2Vec2ForSequenceClassification(tiny_speech_config())
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = prepare_speech_model(base, SpeechModelArgs(), StrategyArgs(strategy="lora", lora_r=2))

    adapted = sorted({n.split(".lora_")[0] for n, _ in model.named_parameters() if "lora_A" in n})
    assert adapted == [f"base_model.model.wav2vec2.encoder.layers.{i}.attention.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")]
    assert model.peft_config["default"].modules_to_save == ["classifier", "projector"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)

    data = load_audio_classification(AudioDataArgs(train_dir=str(audio_root / "train")), AudioLabelArgs(), 16000, 400)
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                             remove_unused_columns=False, report_to="none", save_strategy="no", use_cpu=True)
    TransferTrainer(model=model, args=args, train_dataset=data.datasets["train"], data_collator=AudioCollator(extractor)).train()

    after = {n: p.detach() for n, p in model.named_parameters()}
    head = {n: p for n, p in after.items() if "modules_to_save" in n}
    assert {n.split(".")[2] for n in head} == {"projector", "classifier"}
    assert all(not torch.equal(before[n.replace("modules_to_save.default.", "").replace("base_model.model.", "")], p) for n, p in head.items()), "the new head did not train"
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in after.items() if "lora_B" in n), "LoRA did not train"
    for name, value in before.items():  # every original weight, the feature encoder included, bitwise unchanged
        original = dict(model.base_model.model.named_parameters())
        key = name if name in original else name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        if key not in original:
            key = name.replace("projector.", "projector.original_module.").replace("classifier.", "classifier.original_module.")
        assert torch.equal(original[key], value), name


def test_lora_on_ctc_keeps_the_lm_head_trainable():
    from transformers import Wav2Vec2ForCTC

    model = prepare_speech_model(Wav2Vec2ForCTC(tiny_speech_config()), SpeechModelArgs(), StrategyArgs(strategy="lora"))
    assert model.peft_config["default"].modules_to_save == ["lm_head"]
    assert all(p.requires_grad for n, p in model.named_parameters() if "lm_head.modules_to_save" in n)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "feature_extractor" in n)


@pytest.mark.parametrize("model_type", ["hubert", "wavlm"])
def test_hubert_and_wavlm_share_the_layout_and_run_through_the_recipe(audio_root, tmp_path, model_type):
    import re

    from test_layers import EXPECTED
    from transformers import AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_config(tiny_speech_config(model_type))
    groups = layer_groups(model)
    bottom, block_pattern, head = EXPECTED[model_type]
    assert len(groups) == 4 and all(re.match(bottom, n) for n, _ in groups[0].named_parameters)
    assert all(int(re.match(block_pattern, n).group(1)) == i for i, g in enumerate(groups[1:-1]) for n, _ in g.named_parameters)
    assert set(head_module_names(model)) == head

    checkpoint = save_speech_checkpoint(tmp_path / "model", model_type=model_type)
    out = tmp_path / "out"
    metrics = audio_classification.main(classification_argv(checkpoint, audio_root, out, "--strategy", "lora", "--lora_r", "2"))
    trained, total = lora_parameter_counts(model, ("q_proj", "v_proj"), ("projector.", "classifier."), r=2)
    assert (metrics["trainable_parameters"], metrics["total_parameters"]) == (trained, total)
    assert (out / "adapter_model.safetensors").is_file()


def test_augmentation_and_masking_options_run_and_reach_the_config(audio_root, base_checkpoint, tmp_path):
    out = tmp_path / "out"
    # A 700-frame mask span is longer than any clip here: the collator must pad batches to it, or
    # wav2vec2's time masking raises mid-epoch.
    flags = ["--speed_factors", "0.9", "1.1", "--noise_snr_db", "15", "--mask_time_prob", "0.3", "--mask_time_length", "700",
             "--mask_feature_prob", "0.2", "--max_duration_seconds", "0.25"]
    metrics = audio_classification.main(classification_argv(base_checkpoint, audio_root, out, *flags))
    config = json.loads((out / "config.json").read_text())
    assert (config["mask_time_prob"], config["mask_time_length"], config["mask_feature_prob"]) == (0.3, 700, 0.2)
    import soundfile

    readable = [p for p in (audio_root / "train").rglob("*.*") if p.name not in ("corrupt.wav", "empty.wav")]
    assert metrics["train_too_long_cut"] == sum(soundfile.info(str(p)).duration > 0.25 for p in readable)
    from transformers import AutoConfig

    assert min_batch_samples(AutoConfig.from_pretrained(out)) > 16000 * 0.25 * 1.1


def test_a_run_killed_mid_epoch_resumes_with_the_same_speed_noise_and_windows(audio_root, base_checkpoint, tmp_path,
                                                                              monkeypatch):
    """Speed, noise and a long clip's window draw from each row's own generator for the epoch: the resumed run trains on
    the uninterrupted run's clips and ends with its weights, bitwise."""
    flags = ["--num_train_epochs", "2", "--speed_factors", "0.9", "1.1", "--noise_snr_db", "15",
             "--max_duration_seconds", "0.25", "--save_strategy", "steps", "--save_steps", "2"]
    recorder = BatchRecorder(monkeypatch)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    audio_classification.main(classification_argv(base_checkpoint, audio_root, whole, *flags))
    uninterrupted = recorder.take()  # 14 readable clips, batches of 4, 2 epochs: 8 steps
    with monkeypatch.context() as patch:
        stop_runs_after(6, patch)  # killed right after checkpoint-6, in the middle of the second epoch
        audio_classification.main(classification_argv(base_checkpoint, audio_root, cut, *flags))
    recorder.take()
    keep_only_checkpoint(cut, "checkpoint-6")
    resumed = audio_classification.main(classification_argv(base_checkpoint, audio_root, cut, *flags,
                                                            "--resume_from_checkpoint", "last"))
    assert resumed["resumed_from_step"] == 6 and len(uninterrupted) == 8
    assert_same_batches(uninterrupted[6:], recorder.take())
    assert_same_weights(whole / "model.safetensors", cut / "model.safetensors")


def test_speech_recognition_run_saves_the_vocabulary_with_the_processor(audio_root, base_checkpoint, tmp_path):
    from transformers import AutoModelForCTC, AutoProcessor

    out = tmp_path / "out"
    metrics = speech_recognition.main(recognition_argv(base_checkpoint, audio_root, out, "--strategy", "lora", "--lora_r", "2"))
    for key in ("validation_wer", "validation_cer", "train_loss", "vocabulary_size"):
        assert key in metrics, key
    assert metrics["train_bad_audio_skipped"] == 2
    processor = AutoProcessor.from_pretrained(out)
    assert processor.tokenizer.get_vocab() == {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate("eghilnotw")}}
    assert processor.feature_extractor.sampling_rate == 16000
    assert (out / "adapter_model.safetensors").is_file()

    full = tmp_path / "full"
    speech_recognition.main(recognition_argv(base_checkpoint, audio_root, full, "--per_device_eval_batch_size", "2"))
    model = AutoModelForCTC.from_pretrained(full)
    assert model.config.vocab_size == 12 and model.config.pad_token_id == 0 and model.config.ctc_loss_reduction == "mean"
    assert not changed(feature_encoder_state(base_checkpoint), feature_encoder_state(full))


def test_speech_recognition_continues_a_ctc_checkpoint_with_its_own_vocabulary(audio_root, tmp_path):
    from transformers import AutoModelForCTC

    vocabulary = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate("EGHILNOTW")}}
    checkpoint = save_speech_checkpoint(tmp_path / "ctc", ctc_vocabulary=vocabulary)
    out = tmp_path / "out"
    speech_recognition.main(recognition_argv(checkpoint, audio_root, out, "--tokenizer_name_or_path", str(checkpoint), "--text_case", "upper"))
    assert json.loads((out / "vocab.json").read_text()) == vocabulary
    original, trained = AutoModelForCTC.from_pretrained(checkpoint), AutoModelForCTC.from_pretrained(out)
    assert trained.lm_head.weight.shape == original.lm_head.weight.shape
    assert not torch.equal(trained.lm_head.weight, original.lm_head.weight), "the kept head should go on training"


def test_bad_input_is_one_line_exit_2_and_writes_nothing(audio_root, base_checkpoint, tmp_path, monkeypatch, capsys):
    from transformers import BertConfig

    bert = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(bert)
    ctc_checkpoint = save_speech_checkpoint(tmp_path / "ctc", ctc_vocabulary={"<pad>": 0, "<unk>": 1, "|": 2, "a": 3})
    zero_rate = tmp_path / "zero_rate"
    make_label_folders(zero_rate, per_label=2)
    write_zero_rate(zero_rate / "low" / "broken_header.wav")
    empty = write_table(tmp_path / "empty.csv", [])
    missing_files = write_table(tmp_path / "missing.csv", [{"path": "nowhere/a.wav", "label": "low"}, {"path": "nowhere/b.wav", "label": "high"}])
    labels_table = str(audio_root / "train_labels.csv")

    classification = [
        (["--train_dir", "", "--train_file", labels_table, "--label_column", "speaker"], "label column 'speaker' not found; the data has columns: path, label"),
        (["--train_dir", str(tmp_path / "no_such_folder")], "--train_dir " + str(tmp_path / "no_such_folder") + " does not exist"),
        (["--validation_dir", "", "--validation_file", str(empty)], "the validation split is empty"),
        (["--train_dir", str(zero_rate), "--on_bad_audio", "error"], "broken_header.wav: sample rate cannot be read from the header"),
        (["--train_dir", "", "--train_file", str(missing_files)], "the train split has no usable audio: all 2 clips were skipped (2 file not found)"),
        (["--model_name_or_path", str(bert)], "model type 'bert' is not a supported speech encoder"),
        (["--remove_unused_columns", "true"], "needs the raw columns: pass --remove_unused_columns false"),
        (["--strategy", "freeze", "--freeze_bottom", "3"], "--freeze_bottom 3 exceeds the model's 2 blocks"),
    ]
    for i, (flags, message) in enumerate(classification):
        out = tmp_path / f"out{i}"
        argv = classification_argv(base_checkpoint, audio_root, out, *flags)
        line = cli_error(audio_classification.main, argv, monkeypatch, capsys)
        assert message in line, line
        assert not out.exists(), f"{out} was written for a bad input"

    recognition = [
        (["--tokenizer_name_or_path", str(ctc_checkpoint)], "the train split's transcripts have"),
        (["--model_name_or_path", str(ctc_checkpoint)], "already has a CTC head tied to its own vocabulary"),
        (["--train_file", "", "--train_dir", str(audio_root / "train"), "--validation_file", ""], "--train_dir gives labels from folder names, not transcripts"),
        (["--long_audio", "cut"], "--long_audio cut would cut transcribed speech"),
    ]
    for i, (flags, message) in enumerate(recognition):
        out = tmp_path / f"ctc_out{i}"
        argv = recognition_argv(base_checkpoint, audio_root, out, *flags)
        line = cli_error(speech_recognition.main, argv, monkeypatch, capsys)
        assert message in line, line
        assert not out.exists(), f"{out} was written for a bad input"


def test_command_line_error_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    # In process through the entry point's own wrapper (tests/test_cli.py holds the one subprocess test).
    line = cli_error(speech_recognition.main, ["--train_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "out")],
                     monkeypatch, capsys, alone=True)
    assert line == f"error: --train_dir {tmp_path / 'nope'} does not exist (a folder with one subfolder of clips per label)"
    assert not (tmp_path / "out").exists()
