"""A checkpoint's weights read back under the model's own names (hf_transfer/checkpoint_weights.py): what
`from_pretrained` reads from the same folder, in place, strictly; and the trainer's best model read the same way."""
import pytest
import torch
import transformers as T

from hf_transfer import HfTransferError, StrategyArgs, TransferTrainer
from hf_transfer.checkpoint_weights import load_model_weights
from hf_transfer.trainer import Objective, attach_objective

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
MODELS = {
    # transformers 5 renames ViT's modules: saved as vit.encoder.layer.N.attention.attention.query, held as
    # vit.layers.N.attention.q_proj
    "vit": lambda: T.ViTForImageClassification(T.ViTConfig(image_size=16, patch_size=8, **TINY)),
    "bert_mlm": lambda: T.BertForMaskedLM(T.BertConfig(vocab_size=64, **TINY)),  # the decoder tied to the embeddings
    "t5": lambda: T.T5ForConditionalGeneration(T.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                                          num_heads=2)),  # three names for one embedding
    # a converter: each expert saved as its own tensors, held stacked in one
    "mixtral": lambda: T.MixtralForCausalLM(T.MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=37,
                                                            num_hidden_layers=2, num_attention_heads=2,
                                                            num_key_value_heads=1, num_local_experts=3,
                                                            num_experts_per_tok=2)),
}


def model(name: str, seed: int):
    torch.manual_seed(seed)
    return MODELS[name]()


def assert_same_weights(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    differ = [k for k in expected if not torch.equal(got[k], expected[k])]
    assert not differ, differ


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_checkpoint_is_read_back_as_from_pretrained_reads_it_into_the_same_parameters(name, tmp_path):
    from safetensors.torch import load_file

    trained = model(name, seed=0)
    trained.save_pretrained(tmp_path)
    target = model(name, seed=1)
    parameters = {n: p for n, p in target.named_parameters()}
    load_model_weights(target, tmp_path)
    reference = type(target).from_pretrained(tmp_path).state_dict()
    assert_same_weights(target.state_dict(), reference)
    assert_same_weights(target.state_dict(), trained.state_dict())
    # In place: the optimizer's and the strategy's references to the parameters stay valid.
    assert all(p is parameters[n] for n, p in target.named_parameters())
    if name in ("vit", "mixtral"):  # what the Trainer's plain load_state_dict would have missed
        saved = load_file(tmp_path / "model.safetensors")
        assert set(saved) - set(target.state_dict())


def test_a_checkpoint_in_shards_is_read_whole(tmp_path):
    trained = model("vit", seed=0)
    trained.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and len(list(tmp_path.glob("model-*.safetensors"))) > 1
    target = model("vit", seed=1)
    load_model_weights(target, tmp_path)
    assert_same_weights(target.state_dict(), trained.state_dict())


def test_weights_without_a_place_or_missing_are_a_one_line_error(tmp_path):
    from safetensors.torch import load_file, save_file

    model("vit", seed=0).save_pretrained(tmp_path / "vit")
    with pytest.raises(HfTransferError, match=r"does not fit the model: \d+ saved weight\(s\) the model has no place for "
                                              r"\(.*\); \d+ model weight\(s\) not in it .*; resume with the model and"):
        load_model_weights(model("bert_mlm", seed=0), tmp_path / "vit")
    weights = load_file(tmp_path / "vit" / "model.safetensors")
    del weights["classifier.bias"]
    save_file(weights, tmp_path / "vit" / "model.safetensors")
    with pytest.raises(HfTransferError, match=r"does not fit the model: 1 model weight\(s\) not in it \(classifier.bias\)"):
        load_model_weights(model("vit", seed=0), tmp_path / "vit")


class Probe(Objective):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(32, 2)


def test_weights_the_model_leaves_out_when_saving_may_be_absent(tmp_path):
    trained = model("vit", seed=0)
    attach_objective(trained, "probe", Probe())  # its weights go to objectives.safetensors, not model.safetensors
    trained.save_pretrained(tmp_path)
    target = model("vit", seed=1)
    probe = attach_objective(target, "probe", Probe())
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    load_model_weights(target, tmp_path)
    assert_same_weights(probe.state_dict(), before)  # left as it was (the trainer loads it from its own file)
    assert_same_weights({k: v for k, v in target.state_dict().items() if "transfer_objectives" not in k},
                        {k: v for k, v in trained.state_dict().items() if "transfer_objectives" not in k})


def test_the_best_model_at_the_end_is_read_under_the_models_names(tmp_path):
    trainer = TransferTrainer(
        model=model("vit", seed=0), strategy=StrategyArgs(),
        args=T.TrainingArguments(output_dir=str(tmp_path), max_steps=2, save_strategy="steps", save_steps=1,
                                 per_device_train_batch_size=4, learning_rate=1e-2, report_to="none", use_cpu=True,
                                 dataloader_pin_memory=False),
        train_dataset=[{"pixel_values": torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(i)), "labels": i % 2}
                       for i in range(8)],
    )
    trainer.train()
    first = tmp_path / "checkpoint-1"
    reference = T.ViTForImageClassification.from_pretrained(first).state_dict()
    assert any(not torch.equal(v, reference[k]) for k, v in trainer.model.state_dict().items())  # step 2 moved on
    trainer.state.best_model_checkpoint = str(first)
    trainer._load_best_model()
    assert_same_weights(trainer.model.state_dict(), reference)
