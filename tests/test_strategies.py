"""Strategy options are validated up front; apply_strategy freezes or adapts exactly what the layer map says."""
import json

import pytest
import torch

from conftest import ARCHS, TEXT_ARCHS, dummy_batch, tiny_config, tiny_model
from hf_transfer import HfTransferError, StrategyArgs, apply_strategy, head_module_names, layer_groups


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


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("frozen_blocks", [0, 1, 2])
def test_freeze_bottom_freezes_embeddings_and_n_blocks(arch, frozen_blocks):
    model = apply_strategy(tiny_model(arch), StrategyArgs(strategy="freeze", freeze_bottom=frozen_blocks))
    groups = layer_groups(model)
    for i, group in enumerate(groups):
        want = i > frozen_blocks
        assert all(p.requires_grad == want for p in group.parameters), (group.name, want)


@pytest.mark.parametrize("arch", ARCHS)
def test_feature_extraction_trains_the_head_only(arch):
    model = apply_strategy(tiny_model(arch), StrategyArgs(strategy="feature_extraction"))
    groups = layer_groups(model)
    assert all(not p.requires_grad for g in groups[:-1] for p in g.parameters)
    assert all(p.requires_grad for p in groups[-1].parameters)


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
