"""Masked-LM continued pretraining and the DAPT/TAPT chain on a tiny local model."""
import json
import math

import pytest
import torch
from conftest import make_tokenizer, review_rows

from hf_transfer import HfTransferError
from hf_transfer.data.mlm import MaskedLMDataArgs, load_masked_lm_data
from recipes import continued_pretraining, dapt


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def corpus(path, n=60, seed=0, extra=()):
    texts = list(dict.fromkeys(t for t, _ in review_rows(n, seed=seed))) + list(extra)  # unique texts
    path.write_text("\n".join(json.dumps({"text": t}) for t in texts))
    return path


def mlm_argv(model_dir, train_file, out, *extra):
    return ["--model_name_or_path", str(model_dir), "--train_file", str(train_file), "--output_dir", str(out),
            "--block_size", "16", "--per_device_train_batch_size", "8", "--save_strategy", "no",
            "--disable_tqdm", "true", *extra]


def test_mlm_loss_falls_on_a_repeated_corpus(tiny_text_model_dir, tmp_path, capsys):
    train = corpus(tmp_path / "u.jsonl", n=40)
    metrics = continued_pretraining.main(mlm_argv(tiny_text_model_dir, train, tmp_path / "out", "--learning_rate", "3e-3",
                                                  "--num_train_epochs", "15", "--logging_steps", "1"))
    assert metrics["perplexity_after"] < 0.5 * metrics["perplexity_before"], metrics
    assert metrics["mlm_head_was_missing"] is True
    printed = capsys.readouterr().out
    assert printed.count("has no masked-LM head") == 1
    # The adapted folder is a complete checkpoint + tokenizer that the classification recipe can load.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out", num_labels=2)
    assert AutoTokenizer.from_pretrained(tmp_path / "out").mask_token == "[MASK]"
    # A masked-LM model has no pooler: the original's is carried over unchanged, not left random.
    from transformers import AutoModel

    original = AutoModel.from_pretrained(tiny_text_model_dir)
    assert torch.equal(classifier.bert.pooler.dense.weight, original.pooler.dense.weight)
    assert not torch.equal(classifier.bert.embeddings.word_embeddings.weight, original.embeddings.word_embeddings.weight)
    assert "carried over unchanged" in printed


@pytest.mark.parametrize("mode", [["--whole_word_masking", "true"], ["--line_by_line", "true"]])
def test_recipe_trains_with_whole_word_masking_and_line_by_line(tiny_text_model_dir, tmp_path, mode):
    train = corpus(tmp_path / "u.jsonl", n=40)
    metrics = continued_pretraining.main(mlm_argv(tiny_text_model_dir, train, tmp_path / "out", "--max_steps", "3", *mode))
    assert metrics["global_step"] == 3 and math.isfinite(metrics["perplexity_after"])


def test_perplexity_uses_held_out_texts_only_and_fixed_masks(tokenizer, tmp_path):
    train = corpus(tmp_path / "u.jsonl", n=80, seed=1)
    args = MaskedLMDataArgs(train_file=str(train), line_by_line=True, validation_split_percentage=20)
    data = load_masked_lm_data(args, tokenizer, seed=0)

    def original_text(example):  # undo the masking: labels hold the true token where a mask was put
        ids = [l if l != -100 else i for i, l in zip(example["input_ids"], example["labels"])]
        return tokenizer.decode(ids, skip_special_tokens=True)

    held_out = {original_text(e) for e in data.datasets["validation"]}
    trained = {tokenizer.decode(e["input_ids"], skip_special_tokens=True) for e in data.datasets["train"]}
    assert len(held_out) > 5 and not held_out & trained
    again = load_masked_lm_data(args, tokenizer, seed=0)
    assert again.datasets["validation"]["input_ids"] == data.datasets["validation"]["input_ids"]
    masked = sum(l != -100 for e in data.datasets["validation"] for l in e["labels"])
    assert masked > 0


def test_blocks_are_full_and_whole_word_masking_runs(tokenizer, tmp_path):
    train = corpus(tmp_path / "u.jsonl", n=80, seed=2)
    data = load_masked_lm_data(MaskedLMDataArgs(train_file=str(train), block_size=16, whole_word_masking=True), tokenizer)
    assert {len(ids) for ids in data.datasets["train"]["input_ids"]} == {16}
    from hf_transfer.data.mlm import MaskedLMCollator

    batch = MaskedLMCollator(tokenizer, MaskedLMDataArgs(train_file=str(train), whole_word_masking=True))(
        [data.datasets["train"][i] for i in range(4)])
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 16)


def test_empty_texts_are_dropped_and_counted(tokenizer, tmp_path):
    train = corpus(tmp_path / "u.jsonl", n=40, extra=["", "   ", "\n"])
    data = load_masked_lm_data(MaskedLMDataArgs(train_file=str(train), block_size=16), tokenizer)
    assert data.dropped_empty == 3


def test_corpus_too_small_for_one_block(tokenizer, tmp_path):
    train = corpus(tmp_path / "u.jsonl", n=4)
    with pytest.raises(HfTransferError, match=r"shorter than one block of 512 tokens"):
        load_masked_lm_data(MaskedLMDataArgs(train_file=str(train), block_size=512, validation_file=str(train)), tokenizer)


def test_tokenizer_without_mask_token(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "good": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    no_mask = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]")
    train = corpus(tmp_path / "u.jsonl", n=10)
    with pytest.raises(HfTransferError, match="has no mask token"):
        load_masked_lm_data(MaskedLMDataArgs(train_file=str(train)), no_mask)


def test_gradual_trains_the_new_head_alone_before_the_encoder(tiny_text_model_dir, tmp_path):
    # One group every 4 steps, 6 steps: the head trains alone for 4, then block_1 joins; block_0 and the
    # embeddings (and the decoder tied to them) must come out bitwise the original.
    from transformers import AutoModel

    train = corpus(tmp_path / "u.jsonl", n=40)
    continued_pretraining.main(mlm_argv(tiny_text_model_dir, train, tmp_path / "out", "--max_steps", "6",
                                        "--learning_rate", "1e-3", "--strategy", "gradual", "--unfreeze_every", "4",
                                        "--unfreeze_unit", "step"))
    original, adapted = AutoModel.from_pretrained(tiny_text_model_dir), AutoModel.from_pretrained(tmp_path / "out")
    before, after = dict(original.named_parameters()), dict(adapted.named_parameters())
    for name, p in after.items():
        if name.startswith(("embeddings.", "encoder.layer.0.")):
            assert torch.equal(p, before[name]), f"{name} trained before its turn"
        elif name.startswith("encoder.layer.1.") and name.endswith("weight"):
            assert not torch.equal(p, before[name]), f"{name} never unfroze"


def test_unoffered_strategy_is_a_clear_error(tiny_text_model_dir, tmp_path):
    train = corpus(tmp_path / "u.jsonl", n=10)
    with pytest.raises(HfTransferError, match="not offered for continued pretraining"):
        continued_pretraining.main(mlm_argv(tiny_text_model_dir, train, tmp_path / "o", "--strategy", "feature_extraction"))


@pytest.mark.parametrize("tapt", [False, True])
def test_chain_fine_tunes_the_adapted_checkpoint_beside_the_original(tiny_text_model_dir, review_files, tmp_path, tapt):
    unlabelled = corpus(tmp_path / "u.jsonl", n=40)
    out = tmp_path / "dapt"
    pretrain = "--block_size 16 --max_steps 10 --learning_rate 1e-3 --save_strategy no --disable_tqdm true"
    if not tapt:
        pretrain += f" --train_file {unlabelled}"
    else:
        pretrain += " --mlm_head_warmup_steps 3"  # the option reaches the pretraining; without it, auto
    finetune = (f"--train_file {review_files['train']} --validation_file {review_files['validation']} "
                "--num_train_epochs 1 --per_device_train_batch_size 8 --save_strategy no --frozen_baseline false "
                "--disable_tqdm true")
    argv = ["--model_name_or_path", str(tiny_text_model_dir), "--output_dir", str(out), "--pretrain_args", pretrain,
            "--finetune_args", finetune, "--seeds", "1", "2"] + (["--tapt"] if tapt else [])
    report = dapt.main(argv)

    written = {"original": [], "adapted": []}  # validation accuracy per seed, as each run wrote it to its own folder
    for seed in (1, 2):
        original = json.loads((out / "original" / f"seed_{seed}" / "metrics.json").read_text())
        adapted = json.loads((out / "adapted" / f"seed_{seed}" / "metrics.json").read_text())
        assert original["model_name_or_path"] == str(tiny_text_model_dir)
        assert adapted["model_name_or_path"] == str(out / "adapted")
        assert original["global_step"] == adapted["global_step"] == 8  # same budget
        written["original"].append(original["validation_accuracy"])
        written["adapted"].append(adapted["validation_accuracy"])
    accuracy = report["comparison"]["validation_accuracy"]
    # The report against the files, not against its own fields: the runs are the files' values, the difference
    # is mean(adapted) - mean(original) of them.
    assert accuracy["original"]["runs"] == pytest.approx(written["original"])
    assert accuracy["adapted"]["runs"] == pytest.approx(written["adapted"])
    expected = sum(written["adapted"]) / 2 - sum(written["original"]) / 2
    assert accuracy["difference"] == pytest.approx(expected, abs=1e-12)
    assert report["adaptation"]["global_step"] == 10
    # The new MLM head trained alone first: 3 steps as given, or auto's fifth of the 10 steps.
    assert report["adaptation"]["mlm_head_warmup_steps"] == (3 if tapt else 2)
    assert json.loads((out / "comparison.json").read_text())["comparison"] == json.loads(json.dumps(report["comparison"]))

    # The adapted encoder really differs from the original one.
    from transformers import AutoModel

    a = AutoModel.from_pretrained(out / "adapted").embeddings.word_embeddings.weight
    o = AutoModel.from_pretrained(tiny_text_model_dir).embeddings.word_embeddings.weight
    assert not torch.equal(a, o)


def test_chain_checks_both_halves_before_running(tiny_text_model_dir, review_files, tmp_path):
    with pytest.raises(HfTransferError, match="--mlm_probability must be in"):
        dapt.main(["--model_name_or_path", str(tiny_text_model_dir), "--output_dir", str(tmp_path / "o"),
                   "--pretrain_args", f"--train_file {review_files['train']} --mlm_probability 2",
                   "--finetune_args", f"--train_file {review_files['train']}"])
    assert not (tmp_path / "o").exists()


# --- the masked-LM head warm-up (--mlm_head_warmup_steps; hf_transfer.trainer.HeadWarmup) ---

def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _logged_losses(out) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e}


def test_head_warmup_trains_the_new_head_alone_then_hands_over_to_the_encoder(tiny_text_model_dir, tmp_path, capsys):
    # tiny_text_model_dir is a saved BertModel: loaded as BertForMaskedLM its MLM head is new. A checkpoint after every
    # step; logging every 50 steps, so a loss logged at step 3 is the hand-over's own.
    from transformers import AutoModel

    out = tmp_path / "out"
    metrics = continued_pretraining.main(mlm_argv(
        tiny_text_model_dir, corpus(tmp_path / "u.jsonl", n=40), out, "--max_steps", "6", "--learning_rate", "1e-3",
        "--mlm_head_warmup_steps", "3", "--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "6",
        "--logging_steps", "50"))
    original = {f"bert.{k}": v for k, v in AutoModel.from_pretrained(tiny_text_model_dir).state_dict().items()}
    at = {step: _weights(out / f"checkpoint-{step}") for step in (1, 3)}
    final = _weights(out)
    head = [k for k in at[3] if k.startswith("cls.")]
    encoder = [k for k in at[3] if not k.startswith("cls.")]
    assert head and len(encoder) > 20
    # Warm-up: the encoder (embeddings, blocks, and so the decoder tied to the word embeddings) stays the original.
    for step in (1, 3):
        assert not [k for k in encoder if not torch.equal(at[step][k], original[k])], step
    assert not [k for k in head if torch.equal(at[1][k], at[3][k])]
    # After the hand-over both train.
    assert not [k for k in encoder + head if torch.equal(final[k], at[3][k])]

    assert metrics["mlm_head_was_missing"] is True and metrics["mlm_head_warmup_steps"] == 3
    assert _logged_losses(out) == {3: metrics["mlm_head_warmup_loss"]}
    assert metrics["mlm_head_warmup_seconds"] is not None
    assert json.loads((out / "metrics.json").read_text())["mlm_head_warmup_steps"] == 3
    assert "trained alone for the first 3 optimizer steps" in (out / "README.md").read_text()
    assert "3 steps, head alone" in capsys.readouterr().out


@pytest.mark.parametrize("strategy", [{"strategy": "freeze", "freeze_bottom": 1}, {"strategy": "lora", "lora_r": 2}],
                         ids=["freeze", "lora"])
def test_the_warmup_trains_the_head_alone_then_what_the_strategy_chose(tiny_text_model_dir, strategy):
    # The callback driven by hand: what is trainable at each step, against the strategy's own choice.
    from transformers import AutoModelForMaskedLM, TrainerControl, TrainerState

    from hf_transfer.layers import layer_groups
    from hf_transfer.strategies import StrategyArgs, apply_strategy
    from hf_transfer.trainer import HeadWarmup

    model = apply_strategy(AutoModelForMaskedLM.from_pretrained(tiny_text_model_dir), StrategyArgs(**strategy))
    trainable = lambda: {n for n, p in model.named_parameters() if p.requires_grad}
    chosen = trainable()  # freeze: block_1 and the head; lora: the adapters and the head's copy
    head = chosen & {n for n, _ in layer_groups(model)[-1].named_parameters}
    assert head and len(head) < len(chosen)
    warmup, state = HeadWarmup(lambda max_steps: 3), TrainerState(max_steps=6)
    warmup.on_train_begin(None, state, TrainerControl(), model=model)
    for step, expected in ((0, head), (2, head), (3, chosen), (5, chosen), (1, head)):  # a pure function of the step
        state.global_step = step
        warmup.on_step_begin(None, state, TrainerControl())
        assert trainable() == expected, step


@pytest.mark.parametrize("head_in_checkpoint", [False, True])
def test_auto_warms_up_a_new_head_only(tiny_text_model_dir, tmp_path, head_in_checkpoint):
    import shutil

    from transformers import AutoModelForMaskedLM

    model_dir = tiny_text_model_dir
    if head_in_checkpoint:
        model_dir = tmp_path / "with-head"
        shutil.copytree(tiny_text_model_dir, model_dir)
        AutoModelForMaskedLM.from_pretrained(tiny_text_model_dir).save_pretrained(model_dir)
    metrics = continued_pretraining.main(mlm_argv(model_dir, corpus(tmp_path / "u.jsonl", n=40), tmp_path / "out",
                                                  "--max_steps", "20"))
    assert metrics["mlm_head_was_missing"] is (not head_in_checkpoint)
    # auto: a fifth of the 20 steps (at most 300) for a new head, none for the checkpoint's own.
    assert metrics["mlm_head_warmup_steps"] == (0 if head_in_checkpoint else 4)


def test_training_masks_are_keyed_by_the_rows_and_the_epoch_not_the_global_generator(tokenizer, tmp_path):
    # What makes a resumed masked-LM run exact: the batches after a resume are masked as the uninterrupted run's were.
    from hf_transfer.data.mlm import MaskedLMCollator
    from hf_transfer.data.randomness import TrainingEpoch

    args = MaskedLMDataArgs(train_file=str(corpus(tmp_path / "u.jsonl", n=40)), block_size=16)
    rows = [load_masked_lm_data(args, tokenizer).datasets["train"][i] for i in range(4)]
    epoch = TrainingEpoch()
    collate = MaskedLMCollator(tokenizer, args, seed=1, epoch=epoch)
    first = collate(rows)
    torch.manual_seed(123)  # the global generator elsewhere
    again = collate(rows)
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    assert (first["labels"] != -100).any()
    epoch.set(1)
    assert not torch.equal(collate(rows)["labels"], first["labels"])  # a new epoch, new masks


def test_a_run_killed_in_or_after_the_warmup_resumes_bitwise(tiny_text_model_dir, tmp_path, monkeypatch):
    from trainer_helpers import keep_only_checkpoint, stop_runs_after

    train = corpus(tmp_path / "u.jsonl", n=40)
    argv = lambda out: mlm_argv(tiny_text_model_dir, train, out, "--max_steps", "6", "--learning_rate", "1e-3",
                                "--mlm_head_warmup_steps", "3", "--save_strategy", "steps", "--save_steps", "2",
                                "--logging_steps", "1")
    whole = continued_pretraining.main(argv(tmp_path / "whole"))
    expected = _weights(tmp_path / "whole")
    cut = tmp_path / "cut"
    with monkeypatch.context() as patch:
        stop_runs_after(4, patch)
        continued_pretraining.main(argv(cut))
    # checkpoint-2 is inside the warm-up (the encoder frozen), checkpoint-4 after the hand-over at step 3.
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        keep_only_checkpoint(cut, checkpoint)
        resumed = continued_pretraining.main(argv(cut) + ["--resume_from_checkpoint", "last"])
        assert resumed["resumed_from_step"] == int(checkpoint.split("-")[1])
        got = _weights(cut)
        assert got.keys() == expected.keys()
        assert not [k for k in expected if not torch.equal(got[k], expected[k])], checkpoint
        assert resumed["mlm_head_warmup_loss"] == whole["mlm_head_warmup_loss"] == _logged_losses(tmp_path / "whole")[3]
    assert resumed["mlm_head_warmup_seconds"] is None  # the hand-over happened before this process started


@pytest.mark.parametrize("flags, message", [
    (["--mlm_head_warmup_steps", "-1"], "--mlm_head_warmup_steps takes a number of steps >= 0 or auto, got '-1'"),
    (["--mlm_head_warmup_steps", "some"], "--mlm_head_warmup_steps takes a number of steps >= 0 or auto, got 'some'"),
    (["--mlm_head_warmup_steps", "2", "--strategy", "gradual"], "--strategy gradual already trains the head alone first"),
])
def test_a_bad_head_warmup_exits_2_before_writing(tiny_text_model_dir, tmp_path, monkeypatch, capsys, flags, message):
    from conftest import cli_error

    out = tmp_path / "out"
    line = cli_error(continued_pretraining.main, mlm_argv(tiny_text_model_dir, corpus(tmp_path / "u.jsonl", n=10), out,
                                                          *flags), monkeypatch, capsys)
    assert message in line
    assert not out.exists()
