"""TransferTrainer: per-group learning rates read back from the optimizer, freezing and gradual unfreezing checked
on the weights themselves, and a killed-and-resumed run equal to an uninterrupted one."""
import math

import pytest
import torch
from transformers import Trainer, TrainerCallback, BertConfig, BertForSequenceClassification, DataCollatorWithPadding, TrainingArguments

from conftest import make_tokenizer, review_rows
from hf_transfer import StrategyArgs, TransferTrainer, apply_strategy, layer_groups


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def train_set(tokenizer):
    from datasets import Dataset

    rows = review_rows(48, seed=3)
    encoded = tokenizer([t for t, _ in rows])
    return Dataset.from_dict({**encoded, "labels": [int(l == "positive") for _, l in rows]})


def new_model(tokenizer, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(config)


def make_trainer(tokenizer, train_set, out, strategy, model=None, **overrides):
    options = dict(output_dir=str(out), per_device_train_batch_size=8, learning_rate=1e-3, weight_decay=0.01,
                   num_train_epochs=2, logging_steps=1, save_strategy="no", report_to="none", seed=7,
                   dataloader_pin_memory=False, use_cpu=True)
    options.update(overrides)
    model = apply_strategy(model or new_model(tokenizer), strategy)
    return TransferTrainer(model=model, args=TrainingArguments(**options), strategy=strategy,
                           train_dataset=train_set, data_collator=DataCollatorWithPadding(tokenizer))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_layer_lr_decay_sets_one_lr_per_group(tokenizer, train_set, tmp_path):
    trainer = make_trainer(tokenizer, train_set, tmp_path, StrategyArgs(layer_lr_decay=0.5))
    optimizer = trainer.create_optimizer()
    groups = layer_groups(trainer.model)
    top = len(groups) - 1
    expected = {g.name: 1e-3 * 0.5 ** (top - i) for i, g in enumerate(groups)}
    seen = set()
    for param_group in optimizer.param_groups:
        name = param_group["layer_group"]
        assert math.isclose(param_group["lr"], expected[name], rel_tol=1e-12), name
        seen.add(name)
        # Biases and LayerNorm weights carry no weight decay, everything else the configured 0.01.
        owned = {id(p): n for n, p in next(g for g in groups if g.name == name).named_parameters}
        for p in param_group["params"]:
            no_decay = "bias" in owned[id(p)] or "LayerNorm" in owned[id(p)]
            assert param_group["weight_decay"] == (0.0 if no_decay else 0.01), owned[id(p)]
    assert seen == set(expected)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in trainer.model.parameters()}


def test_layer_lr_decay_survives_the_scheduler(tokenizer, train_set, tmp_path):
    trainer = make_trainer(tokenizer, train_set, tmp_path, StrategyArgs(layer_lr_decay=0.5), lr_scheduler_type="constant")
    trainer.train()
    lrs = {g["layer_group"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert math.isclose(lrs["head"] / lrs["embeddings"], 2.0 ** 3)


def test_without_decay_the_optimizer_is_the_stock_one(tokenizer, train_set, tmp_path):
    trainer = make_trainer(tokenizer, train_set, tmp_path, StrategyArgs())
    optimizer = trainer.create_optimizer()
    assert len(optimizer.param_groups) == 2 and "layer_group" not in optimizer.param_groups[0]


def test_full_fine_tuning_is_exactly_a_plain_trainer_run(tokenizer, train_set, tmp_path):
    # The toolkit adds nothing to plain full fine-tuning: same seed, same data, bitwise the same weights after.
    ours = make_trainer(tokenizer, train_set, tmp_path / "ours", StrategyArgs())
    ours.train()
    plain = Trainer(model=new_model(tokenizer), args=ours.args, train_dataset=train_set,
                    data_collator=DataCollatorWithPadding(tokenizer))
    plain.train()
    theirs, start = dict(plain.model.named_parameters()), dict(new_model(tokenizer).named_parameters())
    for name, p in ours.model.named_parameters():
        assert torch.equal(p, theirs[name]), name
        assert not torch.equal(p, start[name]) or "position" in name or "token_type" in name, f"{name} never trained"
    assert [h["loss"] for h in ours.state.log_history if "loss" in h] == [h["loss"] for h in plain.state.log_history if "loss" in h]


def test_frozen_groups_stay_bitwise_equal_and_never_enter_the_optimizer(tokenizer, train_set, tmp_path):
    strategy = StrategyArgs(strategy="freeze", freeze_bottom=1, layer_lr_decay=0.9)
    trainer = make_trainer(tokenizer, train_set, tmp_path, strategy)
    before = snapshot(trainer.model)
    trainer.train()
    groups = layer_groups(trainer.model)
    frozen = {n for g in groups[:2] for n, _ in g.named_parameters}
    for name, p in trainer.model.named_parameters():
        if name in frozen:
            assert torch.equal(p, before[name]), f"frozen {name} changed"
        elif "weight" in name:
            assert not torch.equal(p, before[name]), f"trainable {name} did not change"
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for g in groups[:2] for p in g.parameters}


def test_gradual_unfreezing_follows_the_step_schedule(tokenizer, train_set, tmp_path):
    # 48 rows / batch 8 = 6 steps. Every 2 steps one more group: head (steps 0-1), +block_1 (2-3), +block_0 (4-5).
    strategy = StrategyArgs(strategy="gradual", unfreeze_every=2, unfreeze_unit="step")
    trainer = make_trainer(tokenizer, train_set, tmp_path, strategy, num_train_epochs=1)
    trajectory = []

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            trajectory.append({g.name: snapshot_group(g) for g in layer_groups(model)})

    def snapshot_group(group):
        return [p.detach().clone() for p in group.parameters]

    start = {g.name: snapshot_group(g) for g in layer_groups(trainer.model)}
    trainer.add_callback(Record())
    trainer.train()

    def changed(a, b):
        return any(not torch.equal(x, y) for x, y in zip(a, b))

    states = [start] + trajectory
    for step in range(6):
        moved = {name for name in start if changed(states[step][name], states[step + 1][name])}
        expected = ["head", "block_1", "block_0", "embeddings"][: 1 + step // 2]
        assert moved == set(expected), (step, moved)


def test_gradual_by_epoch_unfreezes_once_per_epoch(tokenizer, train_set, tmp_path):
    strategy = StrategyArgs(strategy="gradual")  # defaults: every 1 epoch
    trainer = make_trainer(tokenizer, train_set, tmp_path, strategy, num_train_epochs=2)
    before = snapshot(trainer.model)
    trainer.train()
    groups = layer_groups(trainer.model)
    # Two epochs: head in epoch 1, head + block_1 in epoch 2; block_0 and the embeddings never train.
    for group in groups[:2]:
        assert all(torch.equal(p, before[n]) for n, p in group.named_parameters), group.name
    for group in groups[2:]:
        assert any(not torch.equal(p, before[n]) for n, p in group.named_parameters), group.name


class KillAfter(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


@pytest.mark.parametrize("strategy", [
    StrategyArgs(strategy="gradual", unfreeze_every=2, unfreeze_unit="step", layer_lr_decay=0.8),
    StrategyArgs(strategy="lora", lora_r=4),
], ids=["gradual+llrd", "lora"])
def test_resumed_run_equals_uninterrupted_run(tokenizer, train_set, tmp_path, strategy):
    full = make_trainer(tokenizer, train_set, tmp_path / "full", strategy, num_train_epochs=2)
    full.train()
    expected = snapshot(full.model)

    # The same run, saving every 4 steps, killed right after the checkpoint at step 4 (the schedule still
    # plans 12 steps: max_steps=4 would change the learning-rate schedule, not simulate a kill).
    first = make_trainer(tokenizer, train_set, tmp_path / "split", strategy, num_train_epochs=2, save_strategy="steps",
                         save_steps=4)
    first.add_callback(KillAfter(4))
    first.train()
    assert first.state.global_step == 4
    resumed = make_trainer(tokenizer, train_set, tmp_path / "split", strategy, num_train_epochs=2)
    with torch.no_grad():  # scramble what the run trains: all of it must come back from the checkpoint
        for p in resumed.model.parameters():
            if p.requires_grad:
                p.normal_()
    resumed.train(resume_from_checkpoint=str(tmp_path / "split" / "checkpoint-4"))
    assert resumed.state.global_step == full.state.global_step == 12
    got = snapshot(resumed.model)
    assert got.keys() == expected.keys()
    differ = {n: float((got[n] - expected[n]).abs().max()) for n in expected if not torch.equal(got[n], expected[n])}
    assert not differ, differ


def test_gradual_never_unfreezes_what_was_frozen_on_purpose(tokenizer, train_set, tmp_path):
    strategy = StrategyArgs(strategy="gradual", unfreeze_every=1, unfreeze_unit="step")
    trainer = make_trainer(tokenizer, train_set, tmp_path, strategy, num_train_epochs=1)
    pinned = trainer.model.bert.embeddings.word_embeddings.weight
    pinned.requires_grad_(False)  # e.g. a feature encoder a recipe freezes before training
    before = pinned.detach().clone()
    trainer.train()  # 6 steps, one group a step: the embeddings group is unfrozen at step 3
    assert not pinned.requires_grad and torch.equal(pinned, before)
    position = trainer.model.bert.embeddings.position_embeddings.weight
    assert position.requires_grad, "the rest of the embeddings group should have been unfrozen"
