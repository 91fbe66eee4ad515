"""Loading checkpoints (models.py): incomplete folders, pickle-only weights, shape mismatches, and what is printed."""
import logging
import warnings

import pytest
import torch

from hf_transfer import HfTransferError
from hf_transfer.models.loading import ModelArgs, load_config, load_pretrained


@pytest.fixture(scope="module")
def bert_config():
    from transformers import BertConfig

    return BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                      max_position_embeddings=32)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, bert_config):
    """A backbone checkpoint (BertModel, safetensors): a classifier built on it has a new head."""
    from transformers import BertModel

    folder = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    BertModel(bert_config).save_pretrained(folder)
    return folder


class LoadReport(logging.Handler):
    """Collects what transformers' loading code logs (its own logger does not propagate to the root)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("transformers.modeling_utils").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("transformers.modeling_utils").removeHandler(self)


def test_folder_without_config_says_what_it_holds(tmp_path, bert_config):
    from transformers import BertModel

    torch.save(BertModel(bert_config).state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(HfTransferError) as info:
        load_config(ModelArgs(str(tmp_path)))
    message = str(info.value)
    assert message == (f"{tmp_path} has no config.json (it holds pytorch_model.bin); a checkpoint folder needs "
                       "config.json and weights: save it with save_pretrained")
    assert "model_type" not in message and "Hub" not in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HfTransferError, match=r"has no config.json \(it is empty\)"):
        load_config(ModelArgs(str(empty)))


def test_pickle_only_folder_names_the_option_and_loads_with_it(tmp_path, bert_config):
    from transformers import AutoModel, BertModel

    bert_config.save_pretrained(tmp_path)
    torch.manual_seed(1)
    original = BertModel(bert_config)
    torch.save(original.state_dict(), tmp_path / "pytorch_model.bin")
    args = ModelArgs(str(tmp_path))
    with pytest.raises(HfTransferError) as info:
        load_pretrained(AutoModel, args, load_config(args))
    assert str(info.value) == (f"{tmp_path} has only pickle weights (pytorch_model.bin) and only safetensors load by "
                               "default; pass --no_use_safetensors to load them if you trust their source")
    trusted = ModelArgs(str(tmp_path), use_safetensors=False)
    loaded = load_pretrained(AutoModel, trusted, load_config(trusted))
    assert torch.equal(loaded.embeddings.word_embeddings.weight, original.embeddings.word_embeddings.weight)


def test_new_head_is_one_note_instead_of_the_load_table(base_dir, capsys):
    from transformers import AutoModelForSequenceClassification

    args = ModelArgs(str(base_dir))
    with LoadReport() as report:
        model = load_pretrained(AutoModelForSequenceClassification, args, load_config(args, num_labels=2))
    assert model.classifier.out_features == 2
    assert not any("MISSING" in m or "LOAD REPORT" in m for m in report.messages), report.messages
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: new classification head (classifier.weight, classifier.bias) starts from random weights: "
                     "it is trained by every strategy"]
    # A checkpoint with every weight (the backbone loaded as itself) has nothing to note.
    with LoadReport() as report:
        load_pretrained(__import__("transformers").AutoModel, args, load_config(args))
    assert "note:" not in capsys.readouterr().out and not report.messages


@pytest.fixture(scope="module")
def three_label_dir(tmp_path_factory, bert_config):
    from transformers import BertForSequenceClassification

    folder = tmp_path_factory.mktemp("three")
    config = bert_config.__class__(**bert_config.to_dict())
    config.num_labels = 3
    torch.manual_seed(2)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_head_of_another_size_names_the_shapes_and_the_option(three_label_dir, capsys):
    from transformers import AutoModelForSequenceClassification

    args = ModelArgs(str(three_label_dir))
    with pytest.raises(HfTransferError) as info:
        load_pretrained(AutoModelForSequenceClassification, args, load_config(args, num_labels=2))
    message = str(info.value)
    assert "classifier.weight 3x32 -> 2x32" in message and "classifier.bias 3 -> 2" in message
    assert "--ignore_mismatched_sizes" in message and "\n" not in message
    assert isinstance(info.value.__cause__, RuntimeError)

    again = ModelArgs(str(three_label_dir), ignore_mismatched_sizes=True)
    model = load_pretrained(AutoModelForSequenceClassification, again, load_config(again, num_labels=2))
    assert model.classifier.out_features == 2
    assert "note: re-initialised by --ignore_mismatched_sizes (checkpoint -> model shape): classifier.bias 3 -> 2, " \
           "classifier.weight 3x32 -> 2x32" in capsys.readouterr().out


class Reworded:
    """An auto class whose shape-mismatch error is worded without ignore_mismatched_sizes, as another transformers
    release may word it: the mismatch must be found from the shapes, not the message."""

    def __init__(self, auto_class, message):
        self.auto_class, self.message = auto_class, message

    def from_pretrained(self, *args, **kwargs):
        if not kwargs.get("ignore_mismatched_sizes"):
            raise RuntimeError(self.message)
        return self.auto_class.from_pretrained(*args, **kwargs)


def test_mismatch_is_found_by_comparing_shapes_not_by_the_message(three_label_dir, base_dir):
    from transformers import AutoModelForSequenceClassification

    args = ModelArgs(str(three_label_dir))
    reworded = Reworded(AutoModelForSequenceClassification, "weights do not fit")
    with pytest.raises(HfTransferError, match=r"classifier.weight 3x32 -> 2x32.*--ignore_mismatched_sizes"):
        load_pretrained(reworded, args, load_config(args, num_labels=2))
    # Where the shapes fit, a RuntimeError is another problem: it propagates as it is, with its traceback.
    fits = ModelArgs(str(base_dir))
    with pytest.raises(RuntimeError, match="^weights do not fit$"):
        load_pretrained(reworded, fits, load_config(fits, num_labels=2))


def test_peft_reading_the_deprecated_checkpointing_property_does_not_warn(base_dir):
    from transformers import AutoModelForSequenceClassification

    from hf_transfer import StrategyArgs, apply_strategy

    args = ModelArgs(str(base_dir))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_pretrained(AutoModelForSequenceClassification, args, load_config(args, num_labels=2))
        apply_strategy(model, StrategyArgs(strategy="lora", lora_r=2))
        warnings.warn("`is_gradient_checkpointing` is deprecated (raised elsewhere)", FutureWarning)
    messages = [str(w.message) for w in caught]
    assert not any("is_gradient_checkpointing" in m and "elsewhere" not in m for m in messages), messages
    assert any("elsewhere" in m for m in messages), "the filter must stay narrow: only transformers' own warning"
