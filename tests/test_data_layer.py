"""The shared data layer, tested directly: io (files, columns), labels (label sets, ids), splits (hold-out, subsets)."""
import json
import logging
from collections import Counter

import pytest
from conftest import make_tokenizer, review_rows, write_csv

from hf_transfer import HfTransferError
from hf_transfer.data.io import (
    FILE_BUILDERS,
    check_files,
    check_not_empty,
    pick_column,
    read_file,
    read_splits,
    require_columns,
)
from hf_transfer.data.labels import LabelMaps, encode_labels
from hf_transfer.data.splits import hold_out_validation, subsample


def _dict(**splits):
    """A DatasetDict from {split: {column: values}}."""
    from datasets import Dataset, DatasetDict

    return DatasetDict({split: Dataset.from_dict(columns) for split, columns in splits.items()})


def _labelled(labels, names=None, **extra):
    """A DatasetDict with one train split of ClassLabel `labels` (ids) and a `row` column numbering the rows."""
    from datasets import ClassLabel, Dataset, DatasetDict

    names = names or [str(i) for i in range(max(labels) + 1)]
    data = Dataset.from_dict({"row": list(range(len(labels))), "labels": labels, **extra})
    return DatasetDict({"train": data.cast_column("labels", ClassLabel(names=names))})


# ---------------------------------------------------------------------------------------------------------
# io
# ---------------------------------------------------------------------------------------------------------

def test_a_malformed_jsonl_names_the_file_and_its_first_bad_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n{"text": "c", "label": \n{"text": "d"}\n')
    with pytest.raises(HfTransferError) as caught:
        read_file(str(path), "train")
    message = str(caught.value)
    assert message.startswith(f"cannot read {path}: line 4 is not valid JSON (")  # line 2 is blank: numbers are the file's
    assert "fix or remove that line" in message and "\n" not in message
    assert caught.value.__cause__ is not None, "the datasets error should be chained as the cause"


def test_a_jsonl_line_that_is_not_an_object_is_named(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n["b", "y"]\n')
    with pytest.raises(HfTransferError, match=r"line 2 is a JSON list, not an object"):
        read_file(str(path), "train")


def test_a_broken_json_document_names_its_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('[\n  {"text": "a", "label": "x"},\n  {"text": "b" "label": "y"}\n]\n')
    with pytest.raises(HfTransferError, match=r"train.json: line 3 is not valid JSON \(Expecting ',' delimiter\)"):
        read_file(str(path), "train")


def test_read_file_formats_and_empty_files(tmp_path):
    rows = [("a \"quoted\" word", "x"), ("plain", "y")]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("text\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows))
    assert list(read_file(str(tsv), "train")["text"]) == ['a "quoted" word', "plain"]  # TSV quotes are text
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in rows))
    assert list(read_file(str(jsonl), "train")["label"]) == ["x", "y"]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(HfTransferError, match=r"the validation split is empty \(.*empty.csv has no rows\)"):
        read_file(str(empty), "validation")


def test_read_splits_keeps_the_given_files_and_check_not_empty(tmp_path):
    train = write_csv(tmp_path / "t.csv", review_rows(6))
    header_only = write_csv(tmp_path / "v.csv", [])
    data = read_splits(None, None, {"train": str(train), "validation": None})
    assert list(data) == ["train"] and len(data["train"]) == 6
    with pytest.raises(HfTransferError, match=r"the (validation split is empty|validation split is empty;)"):
        check_not_empty(read_splits(None, None, {"train": str(train), "validation": str(header_only)}), what="clip")
    with pytest.raises(HfTransferError, match=r"the test split is empty; give it at least one clip"):
        check_not_empty(_dict(train={"a": [1]}, test={"a": []}), what="clip")


def test_check_files(tmp_path):
    good = write_csv(tmp_path / "t.csv", review_rows(2))
    check_files({"train_file": str(good), "test_file": None})
    with pytest.raises(HfTransferError, match=r"--validation_file /no/such.csv does not exist"):
        check_files({"validation_file": "/no/such.csv"})
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(HfTransferError, match=r"t.xlsx: unsupported format; use " + ", ".join(FILE_BUILDERS)):
        check_files({"train_file": str(tmp_path / "t.xlsx")})


def test_pick_column_and_require_columns():
    assert pick_column(["id", "Sentence", "label"], None, ("text", "sentence"), "text_column", "text") == "Sentence"
    assert pick_column(["text", "body"], "body", ("text",), "text_column", "text") == "body"
    with pytest.raises(HfTransferError, match=r"no text column found among: id, stars; name it with --text_column"):
        pick_column(["id", "stars"], None, ("text",), "text_column", "text")
    with pytest.raises(HfTransferError, match=r"label column 'y' not found; the data has columns: text, label"):
        pick_column(["text", "label"], "y", ("label",), "label_column", "label")
    data = _dict(train={"text": ["a"], "label": [1]}, test={"text": ["b"], "verdict": [0]})
    require_columns(data, ["text", None])
    with pytest.raises(HfTransferError, match=r"the test split has no column label; its columns are: text, verdict"):
        require_columns(data, ["text", "label"])


# ---------------------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------------------

def test_training_values_sort_numerically_when_numeric_and_as_text_otherwise():
    data, names = encode_labels(_dict(train={"y": [10, 2, 1, 2], "x": list("abcd")}, test={"y": [1], "x": ["e"]}), "y", None)
    assert names == ["1", "2", "10"]  # as text, "10" would sort before "2"
    assert list(data["train"]["labels"]) == [2, 1, 0, 1] and list(data["test"]["labels"]) == [0]
    assert data["train"].features["labels"].names == names
    assert data["train"].column_names == ["x", "labels"], "the label column is replaced, the others kept"
    _, names = encode_labels(_dict(train={"y": ["pos ", "neg", "neutral", "pos"]}), "y", None)
    assert names == ["neg", "neutral", "pos"]  # spaces around a label are not part of it


def test_declared_names_come_first_and_integer_labels_are_then_ids():
    raw = _dict(train={"y": ["b", "a", "c"]})
    data, names = encode_labels(raw, "y", ["c", "b", "a"])
    assert names == ["c", "b", "a"] and list(data["train"]["labels"]) == [1, 2, 0]
    data, names = encode_labels(_dict(train={"y": [1, 0, 1]}), "y", ["negative", "positive"])
    assert names == ["negative", "positive"] and list(data["train"]["labels"]) == [1, 0, 1]
    with pytest.raises(HfTransferError, match=r"the train split has labels outside the label set \['negative', 'positive'\]: \['2'\]"):
        encode_labels(_dict(train={"y": [0, 1, 2]}), "y", ["negative", "positive"])


def test_the_datasets_classlabel_names_are_used_and_a_reordered_declaration_maps_by_name():
    raw = _labelled([0, 1, 1], names=["neg", "pos"])
    raw["train"] = raw["train"].rename_column("labels", "label")
    data, names = encode_labels(raw, "label", None)
    assert names == ["neg", "pos"] and list(data["train"]["labels"]) == [0, 1, 1]
    data, names = encode_labels(raw, "label", ["pos", "neg"])
    assert names == ["pos", "neg"] and list(data["train"]["labels"]) == [1, 0, 0], "declaring the same names in another order must not swap classes"


def test_label_errors_are_one_line_with_the_fix():
    with pytest.raises(HfTransferError, match=r"^2 clips of the validation split have no label; fill or remove them$"):
        encode_labels(_dict(train={"y": ["a", "b"]}, validation={"y": ["a", None, "  "]}), "y", None, what="clip")
    with pytest.raises(HfTransferError, match=r"need at least two labels, found \['a'\] in the train split; .*--class_names"):
        encode_labels(_dict(train={"y": ["a", "a"]}), "y", None)
    outside = [f"x{i:02d}" for i in range(12)]
    with pytest.raises(HfTransferError) as caught:
        encode_labels(_dict(train={"y": ["a", "b"] + outside}), "y", ["a", "b"])
    message = str(caught.value)
    assert str(outside[:10]) in message and "x10" not in message and "and 2 more" in message
    assert message.endswith("declare every label with --class_names or fix the data")
    with pytest.raises(HfTransferError, match=r"--class_names repeats a"):
        encode_labels(_dict(train={"y": ["a", "b"]}), "y", ["a", "b", "a"])


def test_label_maps_number_the_label_names_in_order():
    class Data(LabelMaps):
        label_names = ["neg", "pos"]

    assert Data().id2label == {0: "neg", 1: "pos"} and Data().label2id == {"neg": 0, "pos": 1}


# ---------------------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_held_out_split_is_stratified_when_it_can_be(seed):
    data = hold_out_validation(_labelled([0] * 30 + [1] * 10), 20, seed)
    assert Counter(data["validation"]["labels"]) == {0: 6, 1: 2}
    assert Counter(data["train"]["labels"]) == {0: 24, 1: 8}
    assert sorted([*data["train"]["row"], *data["validation"]["row"]]) == list(range(40)), "the two parts are disjoint and complete"


def test_a_label_too_rare_to_stratify_falls_back_to_a_random_hold_out_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="hf_transfer.data.splits"):
        data = hold_out_validation(_labelled([0] * 9 + [1], names=["common", "rare"]), 20, seed=0)
    assert len(data["train"]) == 8 and len(data["validation"]) == 2
    assert "not stratified by label: label 'rare' has only 1 row" in caplog.text


def test_a_given_validation_split_is_kept_and_one_row_cannot_be_split():
    data = _labelled([0, 1, 0, 1])
    data["validation"] = data["train"].select([0])
    assert hold_out_validation(data, 50, 0)["validation"]["row"] == [0] and len(data["train"]) == 4
    with pytest.raises(HfTransferError, match=r"^the train split has 1 clip\(s\), too few to hold out 10% as validation; .*--validation_file"):
        hold_out_validation(_labelled([0]), 10, 0, what="clip")
    unlabelled = _dict(train={"text": list("abcdefghij")})
    assert len(hold_out_validation(unlabelled, 30, 0, stratify=False)["validation"]) == 3


def test_the_per_class_subset_has_at_most_n_rows_of_each_label_shuffled():
    data = _labelled([0] * 10 + [1] * 3 + [2] * 6)
    subset = subsample(data, seed=0, max_train_samples_per_class=4)["train"]
    assert Counter(subset["labels"]) == {0: 4, 1: 3, 2: 4}
    assert len(set(subset["row"])) == 11
    assert list(subset["labels"]) != sorted(subset["labels"]), "the subset should be shuffled, not grouped by label"
    again = subsample(_labelled([0] * 10 + [1] * 3 + [2] * 6), seed=0, max_train_samples_per_class=4)["train"]
    other = subsample(_labelled([0] * 10 + [1] * 3 + [2] * 6), seed=1, max_train_samples_per_class=4)["train"]
    assert list(again["row"]) == list(subset["row"]) and set(other["row"]) != set(subset["row"])


def test_train_subset_is_random_and_eval_subsets_are_the_first_rows():
    data = _labelled(list(range(2)) * 10)
    for split in ("validation", "test", "source"):
        data[split] = data["train"]
    data = subsample(data, seed=0, max_train_samples=5, max_eval_samples=3, eval_splits=("validation", "test"))
    assert len(data["train"]) == 5 and list(data["train"]["row"]) != [0, 1, 2, 3, 4]
    assert list(data["validation"]["row"]) == [0, 1, 2] and list(data["test"]["row"]) == [0, 1, 2]
    assert len(data["source"]) == 20, "a split outside eval_splits is left whole"


@pytest.mark.parametrize("limits, message", [
    ({"max_train_samples": 2, "max_train_samples_per_class": 1}, r"give --max_train_samples or --max_train_samples_per_class, not both"),
    ({"max_train_samples": 0}, r"--max_train_samples must be at least 1, got 0"),
    ({"max_eval_samples": -1}, r"--max_eval_samples must be at least 1, got -1"),
])
def test_bad_subset_limits(limits, message):
    with pytest.raises(HfTransferError, match=message):
        subsample(_labelled([0, 1]), seed=0, **limits)


def test_a_per_class_subset_needs_labels():
    with pytest.raises(HfTransferError, match=r"--max_train_samples_per_class needs labelled data"):
        subsample(_dict(train={"text": ["a", "b"]}), seed=0, max_train_samples_per_class=1)


# ---------------------------------------------------------------------------------------------------------
# The text pipeline on top
# ---------------------------------------------------------------------------------------------------------

def test_a_two_row_train_file_without_validation_gives_both_splits(tmp_path, caplog):
    from hf_transfer.data.text import TextDataArgs, load_text_classification

    train = write_csv(tmp_path / "t.csv", [("the movie was great", "positive"), ("the movie was bad", "negative")])
    with caplog.at_level(logging.WARNING, logger="hf_transfer.data.splits"):
        data = load_text_classification(TextDataArgs(train_file=str(train)), make_tokenizer(tmp_path / "tok"), seed=0)
    assert len(data.datasets["train"]) == 1 and len(data.datasets["validation"]) == 1
    assert sorted([*data.datasets["train"]["labels"], *data.datasets["validation"]["labels"]]) == [0, 1]
    assert "not stratified by label" in caplog.text


def test_a_label_with_one_training_example_is_named_when_validation_is_given(caplog):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "labels": ClassLabel(names=["cat", "dog", "owl"])})
    train = Dataset.from_dict({"text": list("abcde"), "labels": [0, 0, 1, 1, 2]}, features=features)
    validation = Dataset.from_dict({"text": list("xy"), "labels": [0, 2]}, features=features)
    with caplog.at_level(logging.WARNING):
        data = hold_out_validation(DatasetDict(train=train, validation=validation), 10, seed=0, what="image")
    assert data["validation"] is validation and len(data["train"]) == 5  # the given split is kept as it is
    assert [r.getMessage() for r in caplog.records] == [
        "label(s) with a single training image: owl; the model sees each once an epoch: add examples"]


def test_the_summary_counts_files_skipped_in_training_too(tmp_path, capsys):
    from hf_transfer.run.finish import print_summary

    print_summary({"trainable_parameters": 1, "total_parameters": 2, "wall_time_s": 1.0, "train_bad_images_skipped": 3,
                   "validation_bad_images_skipped": 1, "train_images": 40}, tmp_path)
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["train_bad_images_skipped", "3"] in lines and ["validation_bad_images_skipped", "1"] in lines
    assert not any(line[:1] == ["train_images"] for line in lines)
