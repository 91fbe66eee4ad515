"""The text-to-text recipe on a tiny T5 and a tiny bert2bert: metrics, data layouts, warm start, every strategy, bad input."""
import csv
import json
import random
from collections import Counter

import numpy as np
import pytest
import torch

from hf_transfer.errors import HfTransferError
from recipes import text_to_text

WORDS = "the a cat dog bird sat ran on under mat rug red blue big small and saw".split()
# The conftest tokenizer's words: the bert2bert copy task speaks its vocabulary.
REVIEW_WORDS = ["the", "movie", "was", "great", "good", "bad", "and", "it", "not", "phone", "hotel", "dull"]


def word_tokenizer(words=WORDS, pad=True, special=("</s>",)):
    """A real word-level tokenizer (tokenizers library) with T5's special ids: <pad> 0, </s> 1, <unk> 2."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    names = ["<pad>", "</s>", "<unk>"] + list(words)
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(names)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    kwargs = {"eos_token": "</s>", "unk_token": "<unk>", **({"pad_token": "<pad>"} if pad else {})}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)


def save_tiny_t5(folder, tokenizer, seed=0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=2,
                      decoder_start_token_id=0, pad_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return save_tiny_t5(tmp_path_factory.mktemp("tiny-t5"), word_tokenizer())


def copy_rows(n, seed, words=WORDS):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 4)))
        rows.append((text, text))
    return rows


def write_table(path, rows, header=("source", "target")):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(header, r))) + "\n" for r in rows))
    else:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def copy_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("copy")
    return {
        "train": write_table(folder / "train.csv", copy_rows(64, 1)),
        "validation": write_table(folder / "validation.csv", copy_rows(16, 2)),
        "test": write_table(folder / "test.csv", copy_rows(8, 3)),
    }


@pytest.fixture(scope="module")
def review_copy_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review-copy")
    return {
        "train": write_table(folder / "train.csv", copy_rows(32, 1, REVIEW_WORDS)),
        "validation": write_table(folder / "validation.csv", copy_rows(8, 2, REVIEW_WORDS)),
    }


def argv(model_dir, files, out, *extra):
    data = [f"--{split}_file={path}" for split, path in files.items()]
    return [
        "--model_name_or_path", str(model_dir), *data, "--output_dir", str(out), "--num_train_epochs", "1",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--save_strategy", "no",
        "--logging_steps", "50", "--generation_max_length", "8", "--source_prefix", "", *extra,
    ]


def bert2bert_argv(model_dir, files, out, *extra):
    return argv(model_dir, files, out, "--encoder_decoder_from", str(model_dir), *extra)


# --- metrics ---------------------------------------------------------------------------------------------

def test_generation_scores_against_hand_computed_values():
    from hf_transfer.metrics.generation import generation_scores

    same = generation_scores(["the cat sat on the mat", "a dog ran"], ["the cat sat on the mat", "a dog ran"])
    assert same["bleu"] == pytest.approx(100) and same["chrf"] == pytest.approx(100)
    assert same["rouge1"] == same["rouge2"] == same["rougeL"] == pytest.approx(100)

    # Reference "the cat sat on the mat", prediction with "the" -> "a": n-gram precisions 5/6, 3/5, 2/4, 1/3,
    # same length (no brevity penalty): BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4).
    scores = generation_scores(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert scores["bleu"] == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert scores["rouge1"] == pytest.approx(100 * 5 / 6)  # 5 of 6 unigrams on each side
    assert scores["rouge2"] == pytest.approx(100 * 3 / 5)  # the cat, cat sat, sat on: 3 of 5 bigrams
    assert scores["rougeL"] == pytest.approx(100 * 5 / 6)  # longest common subsequence: the cat sat on mat
    # chrF (Popovic 2015, sacrebleu's defaults): character 1- to 6-grams with spaces removed, precision and recall
    # each averaged over the orders, then F-beta with beta 2.
    hypothesis, reference = "thecatsatonamat", "thecatsatonthemat"
    precisions, recalls = [], []
    for n in range(1, 7):
        hyp, ref = (Counter(text[i:i + n] for i in range(len(text) - n + 1)) for text in (hypothesis, reference))
        matches = sum((hyp & ref).values())
        precisions.append(matches / sum(hyp.values()))
        recalls.append(matches / sum(ref.values()))
    precision, recall = sum(precisions) / 6, sum(recalls) / 6
    assert scores["chrf"] == pytest.approx(100 * 5 * precision * recall / (4 * precision + recall))
    assert generation_scores(["", "x"], ["the cat", "a dog"])["bleu"] == 0.0


def test_generation_metrics_decode_ids_with_ignored_positions():
    from transformers import EvalPrediction

    from hf_transfer.metrics.generation import GenerationMetrics

    tokenizer = word_tokenizer()
    short, long = tokenizer("the cat sat")["input_ids"], tokenizer("a dog ran on the mat")["input_ids"]  # 4 and 7 ids
    labels = np.array([short + [-100] * 3, long])  # ignored label positions are -100
    generated = np.array([[0, *short, 0, 0, -100], [0, *long]])  # start token first, as generate() returns them;
    # the Trainer pads joined batches of generated ids with -100
    metrics = GenerationMetrics(tokenizer)
    scores = metrics(EvalPrediction(predictions=generated, label_ids=labels))
    assert metrics.last == (["the cat sat", "a dog ran on the mat"], ["the cat sat", "a dog ran on the mat"])
    assert scores["bleu"] == pytest.approx(100)
    assert scores["gen_len"] == pytest.approx((3 + 6) / 2)  # start, end and pad tokens not counted


# --- data ------------------------------------------------------------------------------------------------

def load(argv_):
    args = text_to_text.TASK.parse(argv_)
    return args, text_to_text.TASK.load(args)


def test_paired_text_files_jsonl_and_collator(t5_dir, tmp_path):
    rows = copy_rows(12, 5)
    for split, part in (("train", rows[:10]), ("val", rows[10:])):
        (tmp_path / f"{split}.en").write_text("".join(r[0] + "\n" for r in part))
        (tmp_path / f"{split}.de").write_text("".join(" ".join(reversed(r[1].split())) + "\n" for r in part))
    files = {"train": tmp_path / "train.en", "validation": tmp_path / "val.en"}
    _, data = load(argv(t5_dir, files, tmp_path / "o", f"--train_target_file={tmp_path / 'train.de'}",
                        f"--validation_target_file={tmp_path / 'val.de'}"))
    assert len(data.datasets["train"]) == 10 and len(data.datasets["validation"]) == 2
    assert data.extra["texts"]["validation"]["target"][0] == " ".join(reversed(rows[10][0].split()))
    batch = data.collator([data.datasets["train"][i] for i in range(4)])
    lengths = [len(data.datasets["train"][i]["labels"]) for i in range(4)]
    assert batch["labels"].shape == (4, max(lengths))
    for row, n in enumerate(lengths):  # labels padded with -100 (ignored by the loss), inputs with the pad id
        assert (batch["labels"][row, n:] == -100).all() and (batch["labels"][row, :n] >= 0).all()
    assert data.report["pair_columns"] == ["source", "target"]

    translation = tmp_path / "wmt.jsonl"  # a Hub translation set's layout: one {"en": ..., "de": ...} column
    translation.write_text("".join(json.dumps({"translation": {"de": t, "en": s}}) + "\n" for s, t in copy_rows(10, 6)))
    _, data = load(argv(t5_dir, {"train": translation}, tmp_path / "o"))
    assert data.report["pair_columns"] == ["en", "de"]

    jsonl = {"train": write_table(tmp_path / "t.jsonl", copy_rows(10, 6), ("input", "output"))}
    _, data = load(argv(t5_dir, jsonl, tmp_path / "o", "--validation_split_percentage", "20"))
    assert data.report["pair_columns"] == ["input", "output"]
    assert len(data.datasets["train"]) == 8 and len(data.datasets["validation"]) == 2


def test_prefix_truncation_and_t5_prefix_warning(t5_dir, copy_files, tmp_path, caplog):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(t5_dir)
    flags = argv(t5_dir, copy_files, tmp_path / "o")
    flags.remove("--source_prefix")
    flags.remove("")
    with caplog.at_level("WARNING"):
        load(flags)
    assert sum("no --source_prefix" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level("WARNING"):
        _, data = load(flags + ["--source_prefix", "big red ", "--max_source_length", "4", "--max_target_length", "3"])
    assert not any("no --source_prefix" in r.getMessage() for r in caplog.records)
    first = data.datasets["validation"][0]
    assert tokenizer.decode(first["input_ids"], skip_special_tokens=True).startswith("big red")
    assert len(first["input_ids"]) <= 4 and len(first["labels"]) <= 3
    n_long = sum(len(t.split()) + 1 > 3 for t in data.extra["texts"]["validation"]["target"])
    assert data.report["truncated"]["validation"] == {"sources": 16, "targets": n_long} and n_long > 0
    assert any("truncated to --max_source_length 4" in r.getMessage() for r in caplog.records)


def test_empty_targets_are_an_error_or_dropped(t5_dir, tmp_path):
    rows = copy_rows(10, 7) + [("the cat", ""), ("", "a dog")]
    files = {"train": write_table(tmp_path / "train.csv", rows), "validation": write_table(tmp_path / "v.csv", copy_rows(4, 8))}
    with pytest.raises(HfTransferError, match=r"1 pair\(s\) have an empty or missing target and 1 an empty or missing source "
                                              r"\(train 2, the first at row 11\).*--drop_empty true"):
        load(argv(t5_dir, files, tmp_path / "o"))
    # A jsonl line without the target key is a missing target, found by its line number.
    lines = [json.dumps({"source": s, "target": t}) for s, t in copy_rows(6, 7)]
    lines.insert(3, json.dumps({"source": "the cat"}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(HfTransferError, match=r"1 pair\(s\) have an empty or missing target .*\(train 1, the first at row 4\)"):
        load(argv(t5_dir, {**files, "train": tmp_path / "train.jsonl"}, tmp_path / "o"))
    _, data = load(argv(t5_dir, files, tmp_path / "o", "--drop_empty", "true"))
    assert len(data.datasets["train"]) == 10 and data.report["dropped_empty_pairs"] == 2


# --- training --------------------------------------------------------------------------------------------

def test_t5_learns_a_copy_task_and_writes_predictions(t5_dir, copy_files, tmp_path):
    out = tmp_path / "out"
    metrics = text_to_text.main(argv(
        t5_dir, copy_files, out, "--num_train_epochs", "20", "--learning_rate", "3e-3", "--eval_strategy", "no",
        "--eval_on_start", "true",
    ))
    before = json.loads((out / "log_history.json").read_text())[0]
    assert before["step"] == 0
    assert metrics["validation_loss"] < before["eval_loss"] - 1.0, (before, metrics)
    assert metrics["validation_bleu"] > before["eval_bleu"] + 3, (before, metrics)
    for key in ("validation_chrf", "validation_rouge1", "validation_rouge2", "validation_rougeL", "test_bleu", "test_gen_len"):
        assert key in metrics, key

    rows = [json.loads(line) for line in (out / "validation_predictions.jsonl").read_text().splitlines()]
    sources = list(csv.reader(open(copy_files["validation"])))[1:]
    assert [(r["source"], r["reference"]) for r in rows] == [tuple(s) for s in sources]
    assert all(isinstance(r["prediction"], str) for r in rows)
    test_rows = (out / "test_predictions.jsonl").read_text().splitlines()
    generated = (out / "generated_predictions.txt").read_text().split("\n")
    assert len(test_rows) == 8 and generated[:-1] == [json.loads(r)["prediction"] for r in test_rows] and generated[-1] == ""

    from transformers import AutoModelForSeq2SeqLM

    reloaded = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert reloaded.generation_config.decoder_start_token_id == 0
    # The saved generation settings are the ones evaluation used (--generation_max_length 8, greedy), not the
    # checkpoint's defaults: a pipeline on the folder generates as the run was scored.
    assert (reloaded.generation_config.max_length, reloaded.generation_config.num_beams) == (8, 1)


def test_bert2bert_warm_start_keeps_checkpoint_weights(tiny_text_model_dir, review_copy_files, tmp_path):
    from transformers import BertModel

    from hf_transfer.models.seq2seq import build_seq2seq_model

    checkpoint = BertModel.from_pretrained(tiny_text_model_dir).state_dict()
    # --decoder_name_or_path: the encoder is --model_name_or_path (here the same checkpoint: bert2bert).
    args, data = load(argv(tiny_text_model_dir, review_copy_files, tmp_path / "o", "--decoder_name_or_path", str(tiny_text_model_dir)))
    tokenizer = data.processing_class
    assert data.config.decoder_start_token_id == tokenizer.cls_token_id
    assert data.datasets["train"][0]["labels"][0] != tokenizer.cls_token_id  # the start token is not a label
    assert data.datasets["train"][0]["labels"][-1] == tokenizer.sep_token_id

    model = build_seq2seq_model(args, data)
    encoder = model.encoder.state_dict()
    assert all(torch.equal(encoder[k], v) for k, v in checkpoint.items()), "encoder differs from its checkpoint"
    decoder = model.decoder.bert.state_dict()
    assert torch.equal(decoder["encoder.layer.0.attention.self.query.weight"], checkpoint["encoder.layer.0.attention.self.query.weight"])
    assert model.generation_config.decoder_start_token_id == tokenizer.cls_token_id
    assert model.generation_config.eos_token_id == tokenizer.sep_token_id

    # The new cross-attention is the layer map's head: trained (and saved by peft) under every strategy.
    from hf_transfer.layers import head_module_names, layer_groups
    from hf_transfer.strategies import StrategyArgs, apply_strategy

    new = {id(p) for n, p in model.named_parameters() if "crossattention" in n}
    assert new and new <= {id(p) for p in layer_groups(model)[-1].parameters}
    assert "decoder.bert.encoder.layer.0.crossattention" in head_module_names(model)
    for options in ({"strategy": "freeze", "freeze_bottom": 1}, {"strategy": "lora", "lora_r": 2}):
        prepared = apply_strategy(build_seq2seq_model(args, data), StrategyArgs(**options))
        cross = [(n, p) for n, p in prepared.named_parameters() if "crossattention" in n and "original_module" not in n]
        assert cross and all(p.requires_grad for _, p in cross), options

    args, data = load(bert2bert_argv(tiny_text_model_dir, review_copy_files, tmp_path / "o", "--from_scratch", "true"))
    scratch = build_seq2seq_model(args, data).encoder.state_dict()
    assert not torch.equal(scratch["embeddings.word_embeddings.weight"], checkpoint["embeddings.word_embeddings.weight"])


def test_encoder_decoder_options(tiny_text_model_dir):
    from hf_transfer.models.loading import ModelArgs, default_model_path
    from hf_transfer.models.seq2seq import EncoderDecoderArgs, resolve_encoder_decoder

    model = ModelArgs(model_name_or_path=str(tiny_text_model_dir))
    assert resolve_encoder_decoder(model, EncoderDecoderArgs()) is None
    try:
        embedded = default_model_path()
    except HfTransferError:
        embedded = None
    if embedded:  # --encoder_decoder_from embedded: the embedded MiniLM on both sides, in place of the model
        assert resolve_encoder_decoder(model, EncoderDecoderArgs(encoder_decoder_from="embedded")) == embedded
        assert model.model_name_or_path == embedded
    with pytest.raises(HfTransferError, match="not both"):
        EncoderDecoderArgs(encoder_decoder_from="embedded", decoder_name_or_path="x")
    with pytest.raises(HfTransferError, match="does not exist"):
        resolve_encoder_decoder(model, EncoderDecoderArgs(decoder_name_or_path="./missing-decoder"))


def test_bert2bert_trains_saves_and_reloads(tiny_text_model_dir, review_copy_files, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out = tmp_path / "out"
    metrics = text_to_text.main(bert2bert_argv(tiny_text_model_dir, review_copy_files, out, "--learning_rate", "1e-3"))
    assert "validation_bleu" in metrics and metrics["global_step"] == 4
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "EncoderDecoderModel"
    generated = model.generate(**tokenizer(["the movie was great"], return_tensors="pt"), max_length=6)
    assert generated[0, 0] == tokenizer.cls_token_id
    assert len((out / "validation_predictions.jsonl").read_text().splitlines()) == 8


STRATEGIES = {
    "full": [],
    "freeze": ["--strategy", "freeze", "--freeze_bottom", "1"],
    "feature_extraction": ["--strategy", "feature_extraction", "--learning_rate", "1e-2"],
    "gradual": ["--strategy", "gradual", "--unfreeze_every", "1", "--unfreeze_unit", "step"],
    "layer_lr_decay": ["--layer_lr_decay", "0.8"],
    "lora": ["--strategy", "lora", "--lora_r", "2"],
    "lora_all_linear": ["--strategy", "lora", "--lora_r", "2", "--lora_target_modules", "all-linear"],
}


def hand_counted_parameters(model: str, strategy: str, t5_dir, bert_dir) -> tuple[int, int]:
    """(trained, total) parameters of the recipe's model under a strategy without adapters, from the named parameters
    by the strategy's rule: freeze 1 keeps the embeddings and block 0 of each stack; feature extraction trains the
    decoder and head only; the rest train everything. Tied weights are named once (T5's `shared`, BERT's word
    embeddings). The warm-started bert2bert's new cross-attention is head, trained under every strategy."""
    from transformers import EncoderDecoderModel, T5ForConditionalGeneration

    if model == "t5":
        built = T5ForConditionalGeneration.from_pretrained(t5_dir)
        embeddings, bottom_blocks, decoder = ("shared.",), ("encoder.block.0.", "decoder.block.0."), "decoder."
        new = ()
    else:
        built = EncoderDecoderModel.from_encoder_decoder_pretrained(str(bert_dir), str(bert_dir))
        embeddings = ("encoder.embeddings.", "decoder.bert.embeddings.")
        bottom_blocks, decoder = ("encoder.encoder.layer.0.", "decoder.bert.encoder.layer.0."), "decoder."
        new = ("decoder.bert.encoder.layer.0.crossattention.",)
    sizes = {name: p.numel() for name, p in built.named_parameters()}
    total = sum(sizes.values())
    if strategy == "freeze":
        frozen = sum(n for name, n in sizes.items() if name.startswith(embeddings + bottom_blocks) and not name.startswith(new))
        return total - frozen, total
    if strategy == "feature_extraction":
        return sum(n for name, n in sizes.items() if name.startswith(decoder) and not name.startswith(embeddings)), total
    return total, total


@pytest.mark.parametrize("model", ["t5", "bert2bert"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_runs(model, strategy, t5_dir, tiny_text_model_dir, copy_files, review_copy_files, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "out"
    if model == "t5":
        flags = argv(t5_dir, {k: copy_files[k] for k in ("train", "validation")}, out, *STRATEGIES[strategy])
        original = load_file(t5_dir / "model.safetensors")
    else:
        flags = bert2bert_argv(tiny_text_model_dir, review_copy_files, out, *STRATEGIES[strategy])
        original = {f"encoder.{k}": v for k, v in load_file(tiny_text_model_dir / "model.safetensors").items()}
    metrics = text_to_text.main(flags)
    assert "validation_bleu" in metrics and metrics["global_step"] == (8 if model == "t5" else 4)  # 64 or 32 rows, batch 8
    if strategy.startswith("lora"):
        adapter = load_file(out / "adapter_model.safetensors")
        assert any("lora_A" in k for k in adapter)
        # What trained is what the adapter file holds: the adapters and the trainable copies of the head.
        assert metrics["trainable_parameters"] == sum(v.numel() for v in adapter.values())
        if model == "bert2bert":  # the warm start's new cross-attention is saved with the adapter
            assert any("crossattention" in k and "lora" not in k for k in adapter)
        return
    expected = hand_counted_parameters(model, strategy, t5_dir, tiny_text_model_dir)
    assert (metrics["trainable_parameters"], metrics["total_parameters"]) == expected
    saved = load_file(out / "model.safetensors")
    encoder_block = next(k for k in original if k.startswith("encoder.") and ".0." in k and k.endswith("weight"))
    changed = not torch.equal(saved[encoder_block], original[encoder_block])
    # feature_extraction keeps the encoder as it was; freeze 1 keeps its bottom block; the rest train it.
    assert changed == (strategy not in ("feature_extraction", "freeze")), encoder_block


# --- bad input -------------------------------------------------------------------------------------------

def bad(flags, out):
    with pytest.raises(HfTransferError) as error:
        text_to_text.main(flags)
    message = str(error.value)
    assert "\n" not in message and not out.exists(), message
    return message


def test_bad_input_is_one_line_and_writes_nothing(t5_dir, tiny_text_model_dir, copy_files, review_copy_files, tmp_path):
    no_target = write_table(tmp_path / "nt.csv", copy_rows(6, 1), ("source", "notes"))
    (tmp_path / "a.en").write_text("the cat\na dog\n")
    (tmp_path / "a.de").write_text("the cat\n")
    no_pad = save_tiny_t5(tmp_path / "t5-no-pad", word_tokenizer(pad=False))
    files = {k: copy_files[k] for k in ("train", "validation")}
    out = tmp_path / "out"
    cases = [
        (argv(t5_dir, {**files, "train": no_target}, out), "no target column found among: source, notes"),
        (argv(t5_dir, files, out, "--source_column", "text"), "source column 'text' not found; the data has columns: source, target"),
        (argv(t5_dir, {"train": tmp_path / "a.en"}, out, f"--train_target_file={tmp_path / 'a.de'}"),
         "a.en has 2 lines but"),
        (argv(t5_dir, {"train": tmp_path / "a.en", "validation": tmp_path / "a.en"}, out, f"--train_target_file={tmp_path / 'a.de'}"),
         "give --validation_target_file too"),
        (argv(no_pad, files, out), "has no pad token"),
        (argv(tiny_text_model_dir, review_copy_files, out), "is a 'bert', not a sequence-to-sequence model; pass --encoder_decoder_from"),
        (argv(t5_dir, files, out, "--generation_num_beams", "0"), "--generation_num_beams must be at least 1"),
        (argv(t5_dir, files, out, "--generation_max_length", "0"), "--generation_max_length must be at least 1"),
        (argv(t5_dir, files, out, "--predict_with_generate", "false", "--metric_for_best_model", "bleu"),
         "needs --predict_with_generate true"),
        (argv(t5_dir, files, out, "--strategy", "freeze", "--freeze_bottom", "3"), "exceeds"),
    ]
    for flags, expected in cases:
        assert expected in bad(flags, out)


def test_encoder_decoder_needs_a_start_token(tmp_path, review_copy_files):
    """A tokenizer with no CLS and no BOS gives a warm-started decoder nothing to start from."""
    from transformers import BertConfig, BertModel

    folder = tmp_path / "no-cls"
    tokenizer = word_tokenizer(words=REVIEW_WORDS)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    message = bad(bert2bert_argv(folder, review_copy_files, tmp_path / "out"), tmp_path / "out")
    assert "neither a CLS nor a BOS token" in message


def test_predict_with_generate_off_reports_loss_only(t5_dir, copy_files, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        metrics = text_to_text.main(argv(t5_dir, {k: copy_files[k] for k in ("train", "validation")}, out,
                                         "--predict_with_generate", "false"))
    assert "validation_loss" in metrics and "validation_bleu" not in metrics
    assert any("--predict_with_generate is off" in r.getMessage() for r in caplog.records)
    assert not (out / "validation_predictions.jsonl").exists()


def test_lengths_beyond_the_position_table_are_cut_to_it_before_training(tiny_text_model_dir, review_copy_files, tmp_path, caplog):
    """A BERT2BERT model has 64 positions here: --max_source_length 6000 would fail at the first step; it is cut to 64."""
    long_rows = [(" ".join([source] * 30), target) for source, target in copy_rows(16, 3, REVIEW_WORDS)]  # ~90 tokens
    files = {"train": write_table(tmp_path / "train.csv", long_rows), "validation": review_copy_files["validation"]}
    out = tmp_path / "out"
    results = text_to_text.main(argv(tiny_text_model_dir, files, out, "--encoder_decoder_from",
                                     str(tiny_text_model_dir), "--max_source_length", "6000", "--max_target_length", "100",
                                     "--max_steps", "1", "--predict_with_generate", "false"))
    messages = [r.getMessage() for r in caplog.records]
    assert "--max_source_length 6000 exceeds the bert model's 64 positions: texts are cut at 64 tokens instead" in messages
    assert "--max_target_length 100 exceeds the bert model's 64 positions: texts are cut at 64 tokens instead" in messages
    assert results["global_step"] == 1
