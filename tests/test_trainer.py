"""TransferTrainer: per-group learning rates read back from the optimizer, freezing and gradual unfreezing checked
on the weights themselves, and a killed-and-resumed run equal to an uninterrupted one."""
import math

import pytest
import torch
from conftest import make_tokenizer, review_rows
from trainer_helpers import KillAfter
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

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


def test_accumulating_two_batches_of_4_trains_as_one_batch_of_8(tokenizer, train_set, tmp_path):
    # BERT's forward takes **kwargs, so the stock Trainer would leave the loss undivided by the accumulation steps
    # (twice the loss, a different clipping); without dropout the two runs are one computation up to float rounding.
    def model():
        built = new_model(tokenizer)
        for module in built.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return built

    whole = make_trainer(tokenizer, train_set, tmp_path / "whole", StrategyArgs(), model=model())
    whole.train()
    split = make_trainer(tokenizer, train_set, tmp_path / "split", StrategyArgs(), model=model(),
                         per_device_train_batch_size=4, gradient_accumulation_steps=2)
    split.train()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (whole, split)]
    assert len(losses[0]) == len(losses[1]) == 12
    assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(*losses)), losses
    theirs = dict(split.model.named_parameters())
    worst = max((p - theirs[name]).abs().max().item() for name, p in whole.model.named_parameters())
    assert worst < 1e-5, worst


def test_a_run_whose_weights_turn_nan_stops_with_one_line(tokenizer, train_set, tmp_path):
    # The stock Trainer would log the mean of the finite losses and train on to the end with NaN weights.
    from hf_transfer.errors import HfTransferError

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 3:
                with torch.no_grad():
                    model.classifier.weight[0, 0] = float("nan")

    trainer = make_trainer(tokenizer, train_set, tmp_path / "nan", StrategyArgs())
    trainer.add_callback(Poison())
    with pytest.raises(HfTransferError, match=r"training diverged by step 3: weights are not finite \(classifier.weight"):
        trainer.train()
    assert trainer.state.global_step == 3
    healthy = make_trainer(tokenizer, train_set, tmp_path / "ok", StrategyArgs())
    healthy.train()  # and a finite run is not stopped
    assert healthy.state.global_step == 12


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


def test_a_resumed_vit_takes_its_encoder_from_the_checkpoint_and_equals_the_uninterrupted_run(tmp_path):
    """transformers 5 saves a ViT under its checkpoint format's names (vit.encoder.layer.N...), not the module's
    (vit.layers.N...): the resumed run must read every weight back (transformers #43701), with no missing-keys warning.
    Augmentation off here: the weights are what is checked (test_image_classification.py resumes with it on)."""
    import logging

    from image_helpers import make_label_folders, save_tiny_vit
    from safetensors.torch import load_file
    from transformers import ViTForImageClassification, ViTImageProcessor

    from hf_transfer.data.image import ImageAugmentArgs, ImageCollator, ImageDataArgs, load_image_classification

    vit = save_tiny_vit(tmp_path / "vit")
    make_label_folders(tmp_path / "images", per_label=6, seed=0)
    rows = load_image_classification(ImageDataArgs(train_dir=str(tmp_path / "images")), seed=0).datasets["train"]
    collator = ImageCollator(ViTImageProcessor.from_pretrained(vit),
                             augment=ImageAugmentArgs(random_resized_crop=False, horizontal_flip=False))

    def vit_trainer(out, **overrides):
        torch.manual_seed(0)  # the new head's initialisation
        options = dict(output_dir=str(out), per_device_train_batch_size=4, learning_rate=3e-3, num_train_epochs=3,
                       save_strategy="no", report_to="none", seed=7, dataloader_pin_memory=False, use_cpu=True,
                       remove_unused_columns=False)
        options.update(overrides)
        return TransferTrainer(model=ViTForImageClassification.from_pretrained(vit, num_labels=2), strategy=StrategyArgs(),
                               args=TrainingArguments(**options), train_dataset=rows, data_collator=collator)

    full = vit_trainer(tmp_path / "full")
    full.train()
    expected = snapshot(full.model)
    first = vit_trainer(tmp_path / "split", save_strategy="steps", save_steps=4)
    first.add_callback(KillAfter(4))
    first.train()
    checkpoint = tmp_path / "split" / "checkpoint-4"
    saved = set(load_file(checkpoint / "model.safetensors"))
    # The trap: the checkpoint's encoder names are not the model's.
    assert "vit.encoder.layer.0.attention.attention.query.weight" in saved
    assert "vit.layers.0.attention.q_proj.weight" in expected and "vit.layers.0.attention.q_proj.weight" not in saved
    resumed = vit_trainer(tmp_path / "split")
    with torch.no_grad():  # scramble what the run trains: all of it must come back from the checkpoint
        for p in resumed.model.parameters():
            p.normal_()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        resumed.train(resume_from_checkpoint=str(checkpoint))
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert not [r for r in records if "keys" in r.getMessage()], [r.getMessage() for r in records]
    assert resumed.state.global_step == full.state.global_step == 9
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


# --- two stacks: T5 through Seq2SeqTransferTrainer ---
def tiny_t5(encoder_layers=2, decoder_layers=2, seed=0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    return T5ForConditionalGeneration(T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=37, num_layers=encoder_layers,
                                               num_decoder_layers=decoder_layers, num_heads=2, decoder_start_token_id=0,
                                               pad_token_id=0))


def seq2seq_set(rows, seed):
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    return Dataset.from_dict({"input_ids": torch.randint(2, 128, (rows, 10), generator=g).tolist(),
                              "labels": torch.randint(2, 128, (rows, 5), generator=g).tolist()})


def make_seq2seq_trainer(out, strategy, model=None, trainer_kwargs=None, **overrides):
    from transformers import Seq2SeqTrainingArguments, default_data_collator

    from hf_transfer import Seq2SeqTransferTrainer

    options = dict(output_dir=str(out), per_device_train_batch_size=4, per_device_eval_batch_size=4, learning_rate=1e-3,
                   weight_decay=0.01, max_steps=3, logging_steps=1, save_strategy="no", report_to="none", seed=7,
                   dataloader_pin_memory=False, use_cpu=True, predict_with_generate=True, generation_max_length=6)
    options.update(overrides)
    model = apply_strategy(model or tiny_t5(), strategy)
    return Seq2SeqTransferTrainer(model=model, args=Seq2SeqTrainingArguments(**options), strategy=strategy,
                                  train_dataset=seq2seq_set(16, 1), eval_dataset=seq2seq_set(8, 2),
                                  data_collator=default_data_collator, **(trainer_kwargs or {}))


def t5_depth(name: str, encoder_layers: int, decoder_layers: int) -> int:
    """Distance from the head of a T5 parameter, from its name alone (the documented rule, not the layer map)."""
    if name.startswith("shared."):
        return 1 + max(encoder_layers, decoder_layers)
    if name.startswith("encoder.final_layer_norm."):  # ends the encoder: its top block's level
        return 1
    for stack, layers in (("encoder", encoder_layers), ("decoder", decoder_layers)):
        if name.startswith(f"{stack}.block."):
            return layers - int(name.split(".")[2])
    assert name.startswith("decoder.final_layer_norm."), name
    return 0


def test_layer_lr_decay_runs_per_stack_from_each_stack_top(tmp_path):
    trainer = make_seq2seq_trainer(tmp_path, StrategyArgs(layer_lr_decay=0.5), model=tiny_t5(encoder_layers=3, decoder_layers=2))
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = list(trainer.model.named_parameters())
    assert set(lr_of) == {id(p) for _, p in named}
    for name, p in named:
        assert math.isclose(lr_of[id(p)], 1e-3 * 0.5 ** t5_depth(name, 3, 2), rel_tol=1e-12), name
    # The two stacks' top blocks share the rate just below the head, whatever their depths.
    by_group = {g["layer_group"]: g["lr"] for g in optimizer.param_groups}
    assert by_group["encoder.block_2"] == by_group["decoder.block_1"] == 1e-3 * 0.5
    assert by_group["encoder.block_0"] == 1e-3 * 0.5 ** 3 and by_group["embeddings"] == 1e-3 * 0.5 ** 4


def test_gradual_unfreezing_on_t5_takes_the_top_block_of_every_stack_together():
    from hf_transfer import GradualUnfreezing

    model = tiny_t5(encoder_layers=3, decoder_layers=2)
    schedule = GradualUnfreezing(every=2, unit="step")
    schedule.on_train_begin(type("Args", (), {"gradient_accumulation_steps": 1})(), type("S", (), {"global_step": 0})(),
                            None, model=model)
    expected = [
        {"head"},
        {"head", "encoder.block_2", "decoder.block_1"},
        {"head", "encoder.block_2", "decoder.block_1", "encoder.block_1", "decoder.block_0"},
        {"head", "encoder.block_2", "decoder.block_1", "encoder.block_1", "decoder.block_0", "encoder.block_0"},
        {g.name for g in layer_groups(model)},
    ]
    for step in range(12):
        schedule.on_step_begin(None, type("S", (), {"global_step": step})(), None)
        trainable = {g.name for g in layer_groups(model) if all(p.requires_grad for p in g.parameters)}
        frozen = {g.name for g in layer_groups(model) if not any(p.requires_grad for p in g.parameters)}
        want = expected[min(step // 2, 4)]
        assert trainable == want and not (trainable & frozen) and trainable | frozen == {g.name for g in layer_groups(model)}, step


def test_seq2seq_transfer_trainer_trains_with_decay_and_evaluates_with_generate(tmp_path):
    seen = {}

    def compute_metrics(prediction):
        seen["predictions"] = prediction.predictions
        return {"generated_tokens": float((prediction.predictions != 0).sum(axis=1).mean())}

    trainer = make_seq2seq_trainer(tmp_path, StrategyArgs(layer_lr_decay=0.8), max_steps=2, eval_strategy="steps",
                                   eval_steps=2, lr_scheduler_type="constant", trainer_kwargs={"compute_metrics": compute_metrics})
    before = snapshot(trainer.model)
    trainer.train()
    assert trainer.state.global_step == 2
    groups = layer_groups(trainer.model)
    lrs = {g["layer_group"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs.keys() == {g.name for g in groups}
    # The schedule scales every group alike, so the ratios stay those of the decay.
    assert all(math.isclose(lrs[g.name] / lrs["head"], 0.8 ** g.depth_from_top) for g in groups)
    assert all(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if "relative_attention_bias" not in n)
    evaluation = next(h for h in trainer.state.log_history if "eval_loss" in h)
    assert "eval_generated_tokens" in evaluation and evaluation["step"] == 2
    # Generated ids (not logits): 8 rows, at most generation_max_length long (Seq2SeqTrainer pads them with 0 further).
    predictions = seen["predictions"]
    assert predictions.shape[0] == 8 and predictions.dtype.kind == "i" and (predictions[:, 6:] == 0).all()
