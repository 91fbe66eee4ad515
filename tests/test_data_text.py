"""Text classification data: formats, column detection, label sets, and each bad input as one clear error."""
import json

import pytest
from conftest import make_tokenizer, review_rows, write_csv

from hf_transfer import HfTransferError
from hf_transfer.data.text import TextDataArgs, load_text_classification


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def load(tokenizer, **options):
    return load_text_classification(TextDataArgs(**options), tokenizer, seed=0)


def test_csv_with_detected_columns_and_string_labels(tokenizer, tmp_path):
    train = write_csv(tmp_path / "t.csv", review_rows(40), header=("Sentence", "sentiment"))
    data = load(tokenizer, train_file=str(train))
    assert (data.text_column, data.label_column) == ("Sentence", "sentiment")
    assert data.label_names == ["negative", "positive"]
    # No validation file: 10% held out, stratified, disjoint from train.
    assert len(data.datasets["validation"]) == 4 and len(data.datasets["train"]) == 36
    assert sorted(data.datasets["validation"]["labels"]) == [0, 0, 1, 1]
    first = data.datasets["train"][0]
    assert set(first) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    # Tokens round-trip to one of the original rows, and its label is the one the row carried.
    decoded = tokenizer.decode(first["input_ids"], skip_special_tokens=True)
    originals = dict(review_rows(40))
    assert decoded in originals
    assert data.label_names[first["labels"]] == originals[decoded]


def test_tsv_keeps_quotes_as_text_and_int_labels_take_declared_names(tokenizer, tmp_path):
    rows = [(f'the movie was "great" {i}', i % 2) for i in range(20)]
    train = write_csv(tmp_path / "t.tsv", rows, header=("sentence", "label"), delimiter="\t")
    train.write_text(train.read_text().replace('"""', '"'))  # csv.writer quoted the quotes; TSV corpora do not
    data = load(tokenizer, train_file=str(train), validation_file=str(train), class_names=["negative", "positive"])
    assert data.label_names == ["negative", "positive"]
    assert data.datasets["train"]["labels"][:4] == [0, 1, 0, 1]


def test_jsonl_and_max_samples(tokenizer, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"review": t, "class": l}) for t, l in review_rows(30)))
    data = load(tokenizer, train_file=str(path), validation_file=str(path), max_train_samples=8, max_eval_samples=5)
    assert len(data.datasets["train"]) == 8 and len(data.datasets["validation"]) == 5


def test_empty_texts_are_dropped_and_counted(tokenizer, tmp_path):
    rows = review_rows(20) + [("   ", "positive"), ("", "negative")]
    data = load(tokenizer, train_file=str(write_csv(tmp_path / "t.csv", rows)))
    assert data.dropped_empty == 2
    assert len(data.datasets["train"]) + len(data.datasets["validation"]) == 20


def test_embedded_sample_is_the_default(tokenizer):
    data = load(tokenizer)
    assert data.label_names == ["negative", "positive"]
    assert len(data.datasets["train"]) == 320 and len(data.datasets["validation"]) == 120


@pytest.mark.parametrize(
    "rows, header, options, message",
    [
        (None, ("review_body", "stars"), {}, r"no text column found among: review_body, stars; name it with --text_column"),
        (None, ("text", "label"), {"text_column": "body"}, r"text column 'body' not found; the data has columns: text, label"),
        (None, ("text", "label"), {"class_names": ["negative", "neutral"]}, r"labels outside the label set \['negative', 'neutral'\]: \['positive'\]"),
        ([("good", "positive"), ("bad", "positive")], ("text", "label"), {}, r"need at least two labels"),
        ([], ("text", "label"), {}, r"the train split is empty"),
        ([("good", "positive"), ("bad", "")], ("text", "label"), {}, r"rows of the train split have no label"),
    ],
)
def test_bad_input_is_one_clear_error(tokenizer, tmp_path, rows, header, options, message):
    train = write_csv(tmp_path / "t.csv", review_rows(10) if rows is None else rows, header=header)
    with pytest.raises(HfTransferError, match=message):
        load(tokenizer, train_file=str(train), **options)


def test_validation_labels_outside_the_training_set(tokenizer, tmp_path):
    train = write_csv(tmp_path / "t.csv", review_rows(10))
    validation = write_csv(tmp_path / "v.csv", review_rows(4) + [("so so", "neutral")])
    with pytest.raises(HfTransferError, match=r"the validation split has labels outside .*\['neutral'\]"):
        load(tokenizer, train_file=str(train), validation_file=str(validation))


def test_validation_missing_a_column(tokenizer, tmp_path):
    train = write_csv(tmp_path / "t.csv", review_rows(10))
    validation = write_csv(tmp_path / "v.csv", review_rows(4), header=("text", "verdict"))
    with pytest.raises(HfTransferError, match=r"the validation split has no column label; its columns are: text, verdict"):
        load(tokenizer, train_file=str(train), validation_file=str(validation))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"train_file": "/no/such.csv"}, r"--train_file /no/such.csv does not exist"),
        ({"dataset_name": "x", "train_file": "y.csv"}, r"either --dataset_name or --train_file"),
        ({"validation_file": "v.csv"}, r"need --train_file"),
    ],
)
def test_bad_paths_and_contradictions(options, message):
    with pytest.raises(HfTransferError, match=message):
        TextDataArgs(**options)


def test_unsupported_format(tmp_path):
    path = tmp_path / "t.xlsx"
    path.write_text("x")
    with pytest.raises(HfTransferError, match="unsupported format"):
        TextDataArgs(train_file=str(path))


def test_per_class_subset_keeps_at_most_n_of_each_label(tokenizer, tmp_path):
    from collections import Counter

    train = write_csv(tmp_path / "t.csv", review_rows(40))
    data = load(tokenizer, train_file=str(train), validation_file=str(train), max_train_samples_per_class=3)
    assert Counter(data.datasets["train"]["labels"]) == {0: 3, 1: 3} and len(data.datasets["validation"]) == 40


def test_a_malformed_jsonl_names_its_line(tokenizer, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": l}) for t, l in review_rows(4)) + '\n{"text": "oops", "label"\n')
    with pytest.raises(HfTransferError, match=r"cannot read .*t.jsonl: line 5 is not valid JSON"):
        load(tokenizer, train_file=str(path))
