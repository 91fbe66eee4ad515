"""Strategy options are validated up front; apply_strategy freezes or adapts exactly what the layer map says."""
import json

import pytest
import torch
from conftest import (
    ARCHS,
    SEQ2SEQ,
    TEXT_ARCHS,
    dummy_batch,
    seq2seq_batch,
    tiny_config,
    tiny_model,
    tiny_seq2seq,
)

from hf_transfer import (
    HfTransferError,
    StrategyArgs,
    apply_strategy,
    head_module_names,
    layer_groups,
)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"strategy": "lora", "freeze_bottom": 2}, r"--freeze_bottom applies to --strategy freeze, not 'lora'"),
        ({"strategy": "full", "lora_r": 4}, r"--lora_r applies to --strategy lora"),
        ({"strategy": "freeze"}, r"--strategy freeze needs --freeze_bottom"),
        ({"strategy": "gradual", "peft_config": "x.json"}, r"--peft_config applies to --strategy peft"),
        ({"strategy": "feature_extraction", "layer_lr_decay": 0.8}, r"nothing to decay"),
        ({"strategy": "full", "layer_lr_decay": 1.5}, r"must be in \(0, 1\]"),
        ({"strategy": "peft"}, r"needs --peft_config"),
        ({"strategy": "peft", "peft_config": "/no/such.json"}, r"does not exist"),
        ({"strategy": "gradual", "unfreeze_every": 0}, r"--unfreeze_every must be >= 1"),
        ({"strategy": "bogus"}, r"unknown strategy 'bogus'"),
        ({"strategy": "feature_extraction", "freeze_stacks": ["encoder"]}, r"--freeze_stacks applies to --strategy freeze"),
        ({"strategy": "freeze", "freeze_bottom": -1}, r"--freeze_bottom must be >= 0"),
    ],
)
def test_contradictory_options_fail_before_any_model(options, message):
    with pytest.raises(HfTransferError, match=message):
        StrategyArgs(**options)


def test_freezing_more_blocks_than_the_model_has_is_caught_from_the_config():
    with pytest.raises(HfTransferError, match=r"--freeze_bottom 3 exceeds the model's 2 blocks"):
        StrategyArgs(strategy="freeze", freeze_bottom=3).check_config(tiny_config("bert"))


def test_unsupported_architecture_for_a_layer_strategy_is_caught_from_the_config():
    from transformers import GPT2Config

    StrategyArgs(strategy="full").check_config(GPT2Config())  # full needs no layer map
    with pytest.raises(HfTransferError, match="not in the layer map"):
        StrategyArgs(strategy="gradual").check_config(GPT2Config())


def test_freeze_bottom_is_checked_against_every_stack_and_freeze_stacks_against_their_names():
    from transformers import T5Config

    config = T5Config(num_layers=3, num_decoder_layers=1)
    StrategyArgs(strategy="freeze", freeze_bottom=1).check_config(config)
    with pytest.raises(HfTransferError, match=r"--freeze_bottom 2 exceeds the 1 blocks of the model's decoder stack "
                                              r"\(it freezes that many in each stack: encoder 3, decoder 1\)"):
        StrategyArgs(strategy="freeze", freeze_bottom=2).check_config(config)
    StrategyArgs(strategy="freeze", freeze_stacks=["encoder"]).check_config(config)
    with pytest.raises(HfTransferError, match=r"--freeze_stacks decoder: the model has no such stack; its stacks: encoder"):
        StrategyArgs(strategy="freeze", freeze_stacks=["decoder"]).check_config(tiny_config("bert"))
    with pytest.raises(HfTransferError, match=r"--freeze_bottom 3 exceeds the 2 blocks of the model's decoder stack.*--freeze_stacks"):
        StrategyArgs(strategy="freeze", freeze_bottom=3).check_config(tiny_seq2seq("encoder-decoder", encoder_layers=3).config)


def block_index(group) -> int:
    return int(group.name.rsplit("block_", 1)[1])


def build(arch):
    return tiny_seq2seq(arch) if arch in SEQ2SEQ else tiny_model(arch)


@pytest.mark.parametrize("arch", ARCHS + ["encoder-decoder"])
@pytest.mark.parametrize("frozen_blocks", [0, 1, 2])
def test_freeze_bottom_freezes_embeddings_and_n_blocks_of_each_stack(arch, frozen_blocks):
    model = apply_strategy(build(arch), StrategyArgs(strategy="freeze", freeze_bottom=frozen_blocks))
    for group in layer_groups(model):
        want = group.name == "head" or (group.stack is not None and block_index(group) >= frozen_blocks)
        assert all(p.requires_grad == want for p in group.parameters), (group.name, want)


@pytest.mark.parametrize("arch", ARCHS + ["encoder-decoder"])
def test_feature_extraction_trains_the_head_only_or_the_decoder_and_head(arch):
    model = apply_strategy(build(arch), StrategyArgs(strategy="feature_extraction"))
    for group in layer_groups(model):
        # Encoder-decoder models: the encoder is the feature extractor; the decoder trains with the head.
        want = group.name == "head" or group.stack == "decoder"
        assert all(p.requires_grad == want for p in group.parameters), (group.name, want)


@pytest.mark.parametrize("arch", SEQ2SEQ)
def test_freeze_stacks_freezes_whole_stacks(arch):
    model = apply_strategy(tiny_seq2seq(arch), StrategyArgs(strategy="freeze", freeze_stacks=["encoder"]))
    frozen = {g.name for g in layer_groups(model) if not any(p.requires_grad for p in g.parameters)}
    assert frozen == {"embeddings", "encoder.block_0", "encoder.block_1"}
    model = apply_strategy(tiny_seq2seq(arch), StrategyArgs(strategy="freeze", freeze_stacks=["decoder"], freeze_bottom=1))
    frozen = {g.name for g in layer_groups(model) if not any(p.requires_grad for p in g.parameters)}
    assert frozen == {"embeddings", "encoder.block_0", "decoder.block_0", "decoder.block_1"}
    with pytest.raises(HfTransferError, match=r"--freeze_stacks middle: the model has no such stack; its stacks: encoder, decoder"):
        apply_strategy(tiny_seq2seq(arch), StrategyArgs(strategy="freeze", freeze_stacks=["middle"]))


def train_steps(model, batch, steps=2):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("arch", SEQ2SEQ)
@pytest.mark.parametrize("strategy", [StrategyArgs(strategy="freeze", freeze_bottom=1), StrategyArgs(strategy="feature_extraction")],
                         ids=["freeze_bottom_1", "feature_extraction"])
def test_frozen_stacks_stay_bitwise_equal_and_the_rest_trains(arch, strategy):
    model = apply_strategy(tiny_seq2seq(arch), strategy)
    groups = layer_groups(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, seq2seq_batch())
    if strategy.strategy == "freeze":  # embeddings and block 0 of each stack
        frozen = {"embeddings", "encoder.block_0", "decoder.block_0"}
    else:  # the encoder: embeddings (its input) and its blocks
        frozen = {"embeddings", "encoder.block_0", "encoder.block_1"}
    for group in groups:
        same = [torch.equal(p, before[n]) for n, p in group.named_parameters]
        if group.name in frozen:
            assert all(same), f"frozen {group.name} changed"
        else:
            assert not all(same), f"trainable {group.name} did not change"


@pytest.mark.parametrize("arch", TEXT_ARCHS + ["vit", "wav2vec2", "hubert"])
def test_lora_freezes_the_base_and_trains_adapters_and_the_new_head(arch):
    base = tiny_model(arch)
    originals = {id(p): (p, p.detach().clone()) for p in base.parameters()}
    model = apply_strategy(base, StrategyArgs(strategy="lora", lora_r=4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing trainable"
    assert all("lora_" in n or "modules_to_save" in n for n in trainable), trainable
    head = layer_groups(model)[-1]
    assert any("modules_to_save" in n and p.requires_grad for n, p in head.named_parameters), "the new head is frozen"

    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(2):  # LoRA's B starts at zero, so A only moves from the second step
        model(**dummy_batch(arch)).loss.backward()
        opt.step()
        opt.zero_grad()

    # peft keeps the original parameter objects (as base_layer / original_module): all bitwise unchanged.
    for param, value in originals.values():
        assert torch.equal(param, value), "a pretrained weight changed under LoRA"
    # The trainable head copies moved away from the original head weights they started from.
    named = dict(model.named_parameters())
    copies = [n for n in trainable if "modules_to_save.default" in n]
    assert copies
    moved = [not torch.equal(named[n], named[n.replace("modules_to_save.default", "original_module")]) for n in copies]
    assert any(moved), "the new head did not train"
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b), "LoRA adapters did not train"


@pytest.mark.parametrize("arch", SEQ2SEQ)
@pytest.mark.parametrize("targets", [None, ["all-linear"]], ids=["default", "all-linear"])
def test_lora_on_seq2seq_adapts_both_stacks_and_copies_no_embedding(arch, targets):
    base = tiny_seq2seq(arch)
    originals = [(p, p.detach().clone()) for p in base.parameters()]
    model = apply_strategy(base, StrategyArgs(strategy="lora", lora_r=4, lora_target_modules=targets))
    # The tied LM head is in the embeddings, so no vocabulary-sized matrix is copied into modules_to_save.
    assert set(model.peft_config["default"].modules_to_save) == (
        {"decoder.final_layer_norm"} if arch == "t5" else {"decoder.cls.predictions.transform"})
    names = [n for n, _ in model.named_parameters()]
    if targets is None:
        want = ["SelfAttention.q", "SelfAttention.v", "EncDecAttention.q", "EncDecAttention.v"] if arch == "t5" else [
            "attention.self.query", "attention.self.value", "crossattention.self.query", "crossattention.self.value"]
        assert all(any(f"{t}.lora_A" in n for n in names) for t in want), want
        assert not any(".k.lora_A" in n or ".key.lora_A" in n for n in names)
    for stack in ("encoder", "decoder"):
        assert any("lora_A" in n and g.stack == stack for g in layer_groups(model) for n, _ in g.named_parameters), stack
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "modules_to_save" in n for n in trainable), trainable

    train_steps(model, seq2seq_batch())
    for param, value in originals:
        assert torch.equal(param, value), "a pretrained weight changed under LoRA"
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n), "LoRA adapters did not train"


def test_an_untied_lm_head_is_not_copied_into_modules_to_save():
    base = tiny_seq2seq("t5")
    base.lm_head.weight = torch.nn.Parameter(base.lm_head.weight.detach().clone())
    assert "lm_head" in head_module_names(base)
    model = apply_strategy(base, StrategyArgs(strategy="lora", lora_r=2))
    assert model.peft_config["default"].modules_to_save == ["decoder.final_layer_norm"]


def test_strategies_work_on_a_wrapper_that_declares_its_groups():
    from test_layers import DomainAdversarial

    model = apply_strategy(DomainAdversarial(), StrategyArgs(strategy="feature_extraction"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in layer_groups(model)[-1].named_parameters}
    assert {"domain_head.weight", "classifier.classifier.weight", "classifier.bert.pooler.dense.weight"} <= trainable
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = dummy_batch("bert")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(**batch).backward()
    opt.step()
    assert not torch.equal(model.domain_head.weight, before["domain_head.weight"]), "the extra head did not train"
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n not in trainable)

    model = apply_strategy(DomainAdversarial(), StrategyArgs(strategy="freeze", freeze_bottom=1))
    assert {g.name for g in layer_groups(model) if not any(p.requires_grad for p in g.parameters)} == {"embeddings", "block_0"}
    with pytest.raises(HfTransferError, match=r"--freeze_bottom 3 exceeds the model's 2 blocks"):
        apply_strategy(DomainAdversarial(), StrategyArgs(strategy="freeze", freeze_bottom=3))
    with pytest.raises(HfTransferError, match=r"pass --lora_target_modules"):
        apply_strategy(DomainAdversarial(), StrategyArgs(strategy="lora"))


def test_lora_target_modules_override_and_bad_target_is_clear():
    model = apply_strategy(tiny_model("bert"), StrategyArgs(strategy="lora", lora_target_modules=["query", "key", "value"]))
    assert any("attention.self.key.lora_A" in n for n, _ in model.named_parameters())
    with pytest.raises(HfTransferError, match="peft could not adapt this model"):
        apply_strategy(tiny_model("bert"), StrategyArgs(strategy="lora", lora_target_modules=["no_such_module"]))


@pytest.mark.parametrize("arch", TEXT_ARCHS)
def test_lora_on_all_linear_layers_adapts_every_block_linear_and_keeps_the_head_whole(arch):
    base = tiny_model(arch)
    linears = {n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)}
    head = set(head_module_names(base))
    model = apply_strategy(base, StrategyArgs(strategy="lora", lora_target_modules=["all-linear"]))
    adapted = {n.removeprefix("base_model.model.").split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    in_head = {n for n in linears if any(n == h or n.startswith(h + ".") for h in head)}
    assert adapted == linears - in_head and adapted, (sorted(adapted), sorted(linears - in_head))


def test_any_peft_method_from_a_config_file(tmp_path):
    path = tmp_path / "ia3.json"
    path.write_text(json.dumps({"peft_type": "IA3", "target_modules": ["key", "value", "output.dense"], "feedforward_modules": ["output.dense"]}))
    model = apply_strategy(tiny_model("bert"), StrategyArgs(strategy="peft", peft_config=str(path)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("ia3_l" in n for n in trainable)
    assert any("classifier.modules_to_save" in n for n in trainable), "head not added to modules_to_save"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"r": 4}))
    with pytest.raises(HfTransferError, match="not a valid peft config"):
        apply_strategy(tiny_model("bert"), StrategyArgs(strategy="peft", peft_config=str(bad)))
