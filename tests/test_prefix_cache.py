"""The cached frozen prefix: a cached run is the uncached computation (bitwise with fixed padding, to rounding with
per-batch padding), the prefix runs once per example, the memory budget bounds the store, a resumed run equals the
uninterrupted one, refusals are one line, the cache never serves stale states; and length-grouped batches are the text
recipes' default, resumable, off with a flag or with fixed padding."""
import random
import subprocess
import sys

import pytest
import torch
from conftest import NEGATIVE, POSITIVE, make_tokenizer, review_rows, tiny_config
from trainer_helpers import KillAfter
from transformers import DataCollatorWithPadding, TrainingArguments

from hf_transfer import HfTransferError, StrategyArgs, TransferTrainer, apply_strategy
from hf_transfer.prefix_cache import FrozenPrefixCache, inputs_vary_per_epoch
from hf_transfer.trainer import SeededLengthGroupedSampler


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def review_set(tokenizer, rows: int, seed: int):
    """Reviews of 7 to 17 tokens, so per-batch padding differs from batch to batch."""
    from datasets import Dataset

    rng = random.Random(seed)
    texts, labels = [], []
    for text, label in review_rows(rows, seed=seed):
        words = POSITIVE if label == "positive" else NEGATIVE
        texts.append(" and ".join([text] + [rng.choice(words) for _ in range(rng.randint(0, 4))]))
        labels.append(int(label == "positive"))
    return Dataset.from_dict({**tokenizer(texts), "labels": labels})


@pytest.fixture(scope="module")
def train_set(tokenizer):
    return review_set(tokenizer, 24, seed=3)


@pytest.fixture(scope="module")
def eval_set(tokenizer):
    return review_set(tokenizer, 16, seed=4)


def new_model(tokenizer, arch="bert", layers=3, seed=0):
    import transformers as T

    config = tiny_config(arch)
    if arch == "distilbert":
        config.n_layers = layers
    else:
        config.num_hidden_layers = layers
    config.vocab_size, config.max_position_embeddings, config.pad_token_id, config.num_labels = len(tokenizer), 64, 0, 2
    torch.manual_seed(seed)
    return getattr(T, {"bert": "Bert", "roberta": "Roberta", "distilbert": "DistilBert"}[arch] + "ForSequenceClassification")(config)


def fixed_padding(tokenizer):
    return DataCollatorWithPadding(tokenizer, padding="max_length", max_length=24)


def make_trainer(tokenizer, train_set, out, strategy, *, model=None, collator=None, eval_set=None, arch="bert", **overrides):
    options = dict(output_dir=str(out), per_device_train_batch_size=8, per_device_eval_batch_size=8, learning_rate=3e-3,
                   num_train_epochs=3, logging_steps=1, save_strategy="no", report_to="none", seed=7,
                   dataloader_pin_memory=False, use_cpu=True, disable_tqdm=True)
    options.update(overrides)
    model = apply_strategy(model or new_model(tokenizer, arch), strategy)
    return TransferTrainer(model=model, args=TrainingArguments(**options), strategy=strategy, train_dataset=train_set,
                           eval_dataset=eval_set, data_collator=collator or DataCollatorWithPadding(tokenizer))


def cached(store_mb=64.0, strategy="freeze", **kwargs):
    """The option on; store_mb=0 stores nothing: the uncached run with the same option."""
    if strategy == "freeze":
        kwargs.setdefault("freeze_bottom", 2)
    return StrategyArgs(strategy=strategy, cache_frozen_prefix=True, prefix_cache_max_memory_mb=store_mb, **kwargs)


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def run_pair(tokenizer, train_set, eval_set, tmp_path, strategy_kwargs=None, **kwargs):
    runs = []
    for name, store in (("cached", 64.0), ("uncached", 0.0)):
        trainer = make_trainer(tokenizer, train_set, tmp_path / name, cached(store, **(strategy_kwargs or {})),
                               eval_set=eval_set, **kwargs)
        trainer.train()
        runs.append((trainer, weights(trainer.model), trainer.evaluate()))
    return runs


# --- cached == uncached ---
@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_cached_run_is_bitwise_the_uncached_run_with_fixed_padding(tokenizer, train_set, eval_set, tmp_path, arch):
    (c, cw, ce), (u, uw, ue) = run_pair(tokenizer, train_set, eval_set, tmp_path, arch=arch, collator=fixed_padding(tokenizer),
                                        eval_strategy="epoch")
    # The cache did serve: 24 training rows computed once, then two epochs and the evaluations from the store.
    assert c.prefix_cache.stats.computed_rows == 24 + 16 and c.prefix_cache.stats.cached_rows == 2 * 24 + 3 * 16
    assert u.prefix_cache.stats.cached_rows == 0
    start = weights(new_model(tokenizer, arch))
    for name, value in cw.items():
        assert torch.equal(value, uw[name]), name
    assert any(not torch.equal(cw[n], start[n]) for n in cw), "nothing trained"
    assert ce["eval_loss"] == ue["eval_loss"]
    assert [h["loss"] for h in c.state.log_history if "loss" in h] == [h["loss"] for h in u.state.log_history if "loss" in h]


def test_cached_run_matches_the_uncached_run_with_per_batch_padding(tokenizer, train_set, eval_set, tmp_path):
    # States stored from one batch are fed in batches padded to other lengths, where the uncached run recomputes
    # them: CPU kernels then round differently in the last bits (module doc). Tolerance: 1e-6 on every weight
    # (measured: about 4e-9) and on the eval loss.
    (c, cw, ce), (u, uw, ue) = run_pair(tokenizer, train_set, eval_set, tmp_path, train_sampling_strategy="group_by_length")
    assert c.prefix_cache.stats.cached_rows > 0
    for name, value in cw.items():
        torch.testing.assert_close(value, uw[name], rtol=0, atol=1e-6, msg=name)
    assert ce["eval_loss"] == pytest.approx(ue["eval_loss"], abs=1e-6)


def test_feature_extraction_caches_every_block(tokenizer, train_set, eval_set, tmp_path):
    (c, cw, ce), (u, uw, ue) = run_pair(tokenizer, train_set, eval_set, tmp_path, {"strategy": "feature_extraction"},
                                        collator=fixed_padding(tokenizer), num_train_epochs=2)
    assert c.prefix_cache.layout.frozen == 3
    assert all(torch.equal(v, uw[n]) for n, v in cw.items()) and ce["eval_loss"] == ue["eval_loss"]


def distinct_examples(*datasets) -> set[tuple]:
    """What keys an example: its token ids and token types (these sets hold no padding)."""
    return {(tuple(row["input_ids"]), tuple(row.get("token_type_ids") or ())) for data in datasets for row in data}


def test_the_memory_budget_bounds_the_store_and_changes_no_result(tokenizer, train_set, eval_set, tmp_path):
    # Each distinct example's states: its unpadded length x hidden size, float32.
    hidden = new_model(tokenizer).config.hidden_size
    examples = distinct_examples(train_set, eval_set)
    every_state = sum(len(ids) for ids, _ in examples) * hidden * 4
    runs = {}
    for name, budget in (("all", every_state), ("half", every_state // 2), ("none", 0)):
        trainer = make_trainer(tokenizer, train_set, tmp_path / name, cached(budget / 2**20), eval_set=eval_set,
                               collator=fixed_padding(tokenizer), eval_strategy="epoch")
        trainer.train()
        runs[name] = (trainer.prefix_cache.stats, weights(trainer.model))
    stats, fitted = runs["all"]
    assert (stats.stored_rows, stats.stored_bytes, stats.unstored_rows) == (len(examples), every_state, 0)
    half, _ = runs["half"]
    assert 0 < half.stored_bytes <= every_state // 2 and half.stored_rows < len(examples)
    assert half.unstored_rows > 0 and "found no room" in half.summary()
    assert stats.computed_rows < half.computed_rows < runs["none"][0].computed_rows  # what is not stored is recomputed
    for name in ("half", "none"):
        assert all(torch.equal(value, runs[name][1][n]) for n, value in fitted.items()), name


def test_the_prefix_runs_once_per_example_and_the_model_is_left_as_built(tokenizer, train_set, eval_set, tmp_path):
    trainer = make_trainer(tokenizer, train_set, tmp_path, cached(), eval_set=eval_set, eval_strategy="epoch")
    bert = trainer.model.bert
    seen = {"embeddings": 0, "block_0": 0, "block_1": 0, "block_2": 0}

    def counter(name):
        def hook(module, args, output):
            seen[name] += output.shape[0]  # rows through this module
        return hook

    bert.embeddings.register_forward_hook(counter("embeddings"))
    for i, block in enumerate(bert.encoder.layer):
        block.register_forward_hook(counter(f"block_{i}"))
    names_before = [n for n, _ in trainer.model.named_parameters()]
    trainer.train()
    # 3 epochs of 24 rows and 3 evaluations of 16: the prefix saw each example once, the trainable block every row.
    assert seen == {"embeddings": 24 + 16, "block_0": 24 + 16, "block_1": 24 + 16, "block_2": 3 * 24 + 3 * 16}
    assert [n for n, _ in trainer.model.named_parameters()] == names_before
    assert len(bert.encoder.layer) == 3 and type(bert.embeddings).__name__ == "BertEmbeddings"
    trainer.save_model(str(tmp_path / "saved"))
    from safetensors.torch import load_file

    assert set(load_file(tmp_path / "saved" / "model.safetensors")) == set(new_model(tokenizer).state_dict())


def test_the_prefix_runs_in_eval_mode_and_the_rest_in_train_mode(tokenizer, train_set, tmp_path):
    trainer = make_trainer(tokenizer, train_set, tmp_path, cached(), num_train_epochs=1)
    modes = {}
    for i, block in enumerate(trainer.model.bert.encoder.layer):
        block.register_forward_pre_hook(lambda m, a, i=i: modes.setdefault(i, set()).add(m.training))
    trainer.train()
    assert modes == {0: {False}, 1: {False}, 2: {True}}
    assert all(m.training for m in trainer.model.modules())  # restored after every call


# --- resume ---


@pytest.mark.parametrize("padding", ["per_batch", "fixed"])
def test_resumed_run_equals_the_uninterrupted_one(tokenizer, train_set, tmp_path, padding):
    # Length-grouped batches (the recipes' default): 3 steps an epoch, 9 in all; killed after the checkpoint at step 5,
    # in the middle of epoch 2. The resumed process starts with an empty store, so it computes states in other batches
    # than the uninterrupted run did: equal bitwise with fixed padding, to rounding with per-batch padding (as a cached
    # run and an uncached one; same tolerance).
    common = dict(train_sampling_strategy="group_by_length")
    if padding == "fixed":
        common["collator"] = fixed_padding(tokenizer)
    whole = make_trainer(tokenizer, train_set, tmp_path / "whole", cached(), **common)
    whole.train()
    expected = weights(whole.model)

    split = cached()
    first = make_trainer(tokenizer, train_set, tmp_path / "split", split, save_strategy="steps", save_steps=5, **common)
    first.add_callback(KillAfter(5))
    first.train()
    assert first.state.global_step == 5
    resumed = make_trainer(tokenizer, train_set, tmp_path / "split", split, **common)
    with torch.no_grad():  # scramble what trains: all of it must come back from the checkpoint
        for p in resumed.model.parameters():
            if p.requires_grad:
                p.normal_()
    resumed.train(resume_from_checkpoint=str(tmp_path / "split" / "checkpoint-5"))
    assert resumed.prefix_cache.stats.stored_rows == len(distinct_examples(train_set))  # refilled by its last epoch
    got = weights(resumed.model)
    if padding == "fixed":
        assert not {n for n in expected if not torch.equal(got[n], expected[n])}
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)


def test_length_grouped_order_is_a_function_of_seed_and_epoch():
    lengths = [random.Random(1).randint(3, 40) for _ in range(200)]
    a, b = SeededLengthGroupedSampler(8, lengths, seed=5), SeededLengthGroupedSampler(8, lengths, seed=5)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(1)  # the global RNG plays no part (the Trainer's own sampler draws from it)
    assert list(b) == first and sorted(first) == list(range(200))
    a.set_epoch(1)
    assert list(a) != first


def test_the_prefix_cache_never_imports_the_strategies():
    """Imports flow one way: strategies (the options) and the trainer (the wiring) import the cache, not back."""
    code = "import sys, hf_transfer.prefix_cache; print('hf_transfer.strategies' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


# --- refusals ---
@pytest.mark.parametrize("strategy, message", [
    (dict(strategy="gradual"), "gradual unfreezing unfreezes the bottom layers"),
    (dict(strategy="lora"), "LoRA adapts every block"),
    (dict(strategy="full"), "nothing is frozen"),
    (dict(strategy="freeze", freeze_bottom=1, prefix_cache_dtype="int8"), "--prefix_cache_dtype must be"),
], ids=["gradual", "lora", "full", "dtype"])
def test_strategies_without_a_frozen_prefix_are_refused(strategy, message):
    with pytest.raises(HfTransferError, match=message) as error:
        StrategyArgs(cache_frozen_prefix=True, **strategy)
    assert "\n" not in str(error.value)


def test_cache_options_without_the_cache_are_refused():
    with pytest.raises(HfTransferError, match="--prefix_cache_max_memory_mb applies to --cache_frozen_prefix"):
        StrategyArgs(strategy="freeze", freeze_bottom=1, prefix_cache_max_memory_mb=10)


@pytest.mark.parametrize("arch", ["wav2vec2", "t5"])
def test_other_architectures_are_refused_from_their_config(arch):
    with pytest.raises(HfTransferError, match=f"supports bert, roberta, distilbert, vit, whisper .*not '{arch}'"):
        cached(strategy="feature_extraction").check_config(tiny_config(arch))


# --- images: one fixed-length row of patch states per image ---
def image_set(rows: int, seed: int):
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (rows,), generator=generator)
    pixels = torch.randn(rows, 3, 16, 16, generator=generator) + labels[:, None, None, None]  # learnable: a shift
    return Dataset.from_dict({"pixel_values": pixels.tolist(), "labels": labels.tolist()}).with_format("torch")


def new_vit(seed=0):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    return ViTForImageClassification(ViTConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=24,
                                               image_size=16, patch_size=8, num_labels=2))


def test_vit_cached_run_is_bitwise_the_uncached_run(tmp_path):
    """Images need no padding, so the cached run equals the uncached one bitwise; the key is the processed pixels."""
    train, held_out = image_set(24, seed=1), image_set(16, seed=2)
    runs = []
    for name, store in (("cached", 64.0), ("uncached", 0.0)):
        strategy = cached(store)
        model = apply_strategy(new_vit(), strategy)
        args = TrainingArguments(output_dir=str(tmp_path / name), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                                 learning_rate=3e-3, num_train_epochs=3, logging_steps=1, save_strategy="no", eval_strategy="epoch",
                                 report_to="none", seed=7, dataloader_pin_memory=False, use_cpu=True, disable_tqdm=True)
        trainer = TransferTrainer(model=model, args=args, strategy=strategy, train_dataset=train, eval_dataset=held_out)
        trainer.train()
        runs.append((trainer, weights(trainer.model), trainer.evaluate()))
    (c, cw, ce), (u, uw, ue) = runs
    assert c.prefix_cache.stats.computed_rows == 24 + 16 and c.prefix_cache.stats.cached_rows == 2 * 24 + 3 * 16
    assert c.prefix_cache.layout.describe() == "the embeddings and blocks 0-1"
    start = weights(new_vit())
    for name, value in cw.items():
        assert torch.equal(value, uw[name]), name
        if name.startswith(("vit.embeddings", "vit.layers.0.", "vit.layers.1.")):
            assert torch.equal(value, start[name]), f"{name} is in the frozen prefix and changed"
    assert not torch.equal(cw["classifier.weight"], start["classifier.weight"]), "nothing trained"
    assert ce["eval_loss"] == ue["eval_loss"]
    # And both are the model's own computation: without the cache's hooks the same model scores the same.
    c.prefix_cache.close()
    assert c.evaluate()["eval_loss"] == pytest.approx(ce["eval_loss"], abs=1e-6)


def test_lora_on_the_prefix_is_refused(tokenizer, train_set, tmp_path):
    from peft import LoraConfig, get_peft_model

    strategy = cached()  # freeze the bottom 2 of 3 blocks
    model = apply_strategy(new_model(tokenizer), strategy)
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["query", "value"], modules_to_save=["classifier"]))
    with pytest.raises(HfTransferError, match=r"block 0 of the frozen prefix .* has trainable parameters .*lora") as error:
        TransferTrainer(model=model, args=TrainingArguments(str(tmp_path), use_cpu=True, report_to="none"), strategy=strategy,
                        train_dataset=train_set, data_collator=DataCollatorWithPadding(tokenizer))
    assert "\n" not in str(error.value)
    # Adapters only above the prefix are fine: the prefix stays frozen.
    top_only = get_peft_model(apply_strategy(new_model(tokenizer), strategy),
                              LoraConfig(r=2, target_modules=["query", "value"], layers_to_transform=[2]))
    assert FrozenPrefixCache(top_only, frozen_blocks=2).layout.frozen == 2


class AugmentingCollator(DataCollatorWithPadding):
    augment = object()  # like the audio and image collators: training rows are augmented


class DeclaringCollator(DataCollatorWithPadding):
    inputs_vary_per_epoch = True


@pytest.mark.parametrize("collator", [AugmentingCollator, DeclaringCollator], ids=["augmentation", "declared"])
def test_inputs_that_vary_per_epoch_are_refused(tokenizer, train_set, tmp_path, collator):
    with pytest.raises(HfTransferError, match="change every epoch|vary per epoch") as error:
        make_trainer(tokenizer, train_set, tmp_path, cached(), collator=collator(tokenizer))
    assert "\n" not in str(error.value)


def test_known_collators_are_classified():
    from hf_transfer.data.audio import AudioAugmentArgs, AudioCollator
    from hf_transfer.data.mlm import MaskedLMCollator, MaskedLMDataArgs

    class Extractor:
        sampling_rate = 16000

    assert inputs_vary_per_epoch(AudioCollator(Extractor(), augment=AudioAugmentArgs(speed_factors=[0.9, 1.1])))
    masked = MaskedLMCollator.__new__(MaskedLMCollator)
    masked.masker = object()
    assert inputs_vary_per_epoch(masked) and MaskedLMDataArgs
    assert inputs_vary_per_epoch(DataCollatorWithPadding(None)) is None


def test_left_padding_is_refused(tokenizer, eval_set, tmp_path):
    trainer = make_trainer(tokenizer, eval_set, tmp_path, cached(), eval_set=eval_set)
    batch = DataCollatorWithPadding(tokenizer)([eval_set[i] for i in range(4)])
    batch = {k: v.flip(1) if k in ("input_ids", "attention_mask", "token_type_ids") else v for k, v in batch.items()}
    with pytest.raises(HfTransferError, match="right-padded"):
        trainer.model(**batch)
    assert type(trainer.model.bert.embeddings).__name__ == "BertEmbeddings"  # put back even after an error


# --- never stale ---
def test_a_change_of_prefix_weights_or_data_is_never_served_from_the_cache(tokenizer, train_set, eval_set, tmp_path):
    trainer = make_trainer(tokenizer, train_set, tmp_path, cached(), eval_set=eval_set)
    reference = make_trainer(tokenizer, train_set, tmp_path / "ref", cached(0.0), eval_set=eval_set)  # same weights, no store
    assert make_trainer(tokenizer, train_set, tmp_path, cached(), model=trainer.model).prefix_cache is trainer.prefix_cache
    with pytest.raises(HfTransferError, match="already has a prefix cache with other settings"):
        make_trainer(tokenizer, train_set, tmp_path, cached(1.0), model=trainer.model)
    stats = trainer.prefix_cache.stats
    first = trainer.evaluate()
    assert trainer.evaluate()["eval_loss"] == first["eval_loss"]
    assert stats.computed_rows == 16 and stats.cached_rows == 16
    namespace = trainer.prefix_cache.namespace

    with torch.no_grad():  # a frozen weight changed in place (a checkpoint loaded, a user's edit)
        for model in (trainer.model, reference.model):
            model.bert.encoder.layer[0].output.dense.weight.mul_(1.5)
    changed = trainer.evaluate()
    assert trainer.prefix_cache.namespace != namespace and stats.computed_rows == 32  # a new namespace: all recomputed
    assert changed["eval_loss"] == reference.evaluate()["eval_loss"] != first["eval_loss"]

    # One changed token in one example: keyed by content, that row is never served from the cache.
    edited = eval_set.map(lambda row, i: {"input_ids": row["input_ids"][:2] + [5] + row["input_ids"][3:]} if i == 0 else {},
                          with_indices=True)
    assert trainer.evaluate(edited)["eval_loss"] == reference.evaluate(edited)["eval_loss"]
    assert stats.computed_rows == 32 + 8  # the batch holding the edited row ran the prefix again


# --- length grouping: the speech recipes' default, the text recipes' speed option ---
def test_text_batches_are_random_by_default_and_length_grouped_with_a_flag():
    from recipes import audio_classification, domain_adaptation, sentiment

    assert sentiment.TASK.parse([]).training.train_sampling_strategy == "random"
    grouped = sentiment.TASK.parse(["--train_sampling_strategy", "group_by_length"]).training.train_sampling_strategy
    assert grouped == "group_by_length"
    assert "train_sampling_strategy" not in domain_adaptation.TASK.defaults
    assert audio_classification.TASK.defaults["train_sampling_strategy"] == "group_by_length"


def test_the_sampler_groups_by_length_unless_batches_have_a_fixed_length(tokenizer, train_set, tmp_path):
    from torch.utils.data import RandomSampler

    from hf_transfer.data.text import TextDataArgs, text_collator

    grouped = dict(train_sampling_strategy="group_by_length")
    plain = StrategyArgs()
    assert isinstance(make_trainer(tokenizer, train_set, tmp_path, plain, **grouped)._get_train_sampler(), SeededLengthGroupedSampler)
    fixed = text_collator(TextDataArgs(pad_to_max_length=True, max_seq_length=24), tokenizer, mixed_precision=False)
    sampler = make_trainer(tokenizer, train_set, tmp_path, plain, collator=fixed, **grouped)._get_train_sampler()
    assert type(sampler) is RandomSampler
    assert type(make_trainer(tokenizer, train_set, tmp_path, plain)._get_train_sampler()) is RandomSampler


def test_sentiment_recipe_with_the_cache(tiny_text_model_dir, review_files, tmp_path, capsys):
    from conftest import recipe_argv

    from recipes import sentiment

    out = tmp_path / "out"
    metrics = sentiment.main(recipe_argv(tiny_text_model_dir, review_files, out, "--strategy", "freeze", "--freeze_bottom", "1",
                                         "--cache_frozen_prefix", "--num_train_epochs", "2"))
    assert "validation_accuracy" in metrics and metrics["global_step"] == 16
    printed = capsys.readouterr().out
    # Epoch 1 and its evaluation ran the prefix (64 + 16 rows); epoch 2 and the next evaluations were fed from the cache.
    assert "prefix cache: ran the prefix on 80 rows (9 batches), fed 80 rows from the cache" in printed, printed


# --- Whisper's encoder (audio classification): one fixed-length row of states per clip ---
def whisper_set(rows: int, seed: int):
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (rows,), generator=generator)
    features = torch.randn(rows, 80, 200, generator=generator) + labels[:, None, None]  # 100 positions; learnable: a shift
    return Dataset.from_dict({"input_features": features.tolist(), "labels": labels.tolist()}).with_format("torch")


def new_whisper(seed=0, **overrides):
    from audio_helpers import tiny_whisper_config
    from transformers import WhisperForAudioClassification

    torch.manual_seed(seed)
    # Dropout on: the trainable blocks draw the same masks in both runs, and the stem's dropout (in the encoder's own
    # forward) belongs to the prefix, so it is off in both.
    settings = dict(encoder_layers=3, num_labels=2, dropout=0.1, attention_dropout=0.1)
    return WhisperForAudioClassification(tiny_whisper_config(**{**settings, **overrides}))


def whisper_trainer(out, strategy, model=None, train=None, held_out=None):
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                             learning_rate=3e-3, num_train_epochs=3, logging_steps=1, save_strategy="no", eval_strategy="epoch",
                             report_to="none", seed=7, dataloader_pin_memory=False, use_cpu=True, disable_tqdm=True)
    return TransferTrainer(model=apply_strategy(model or new_whisper(), strategy), args=args, strategy=strategy,
                           train_dataset=train, eval_dataset=held_out)


@pytest.mark.parametrize("strategy_kwargs", [{}, {"strategy": "feature_extraction"}], ids=["freeze_bottom_2", "feature_extraction"])
def test_whisper_cached_run_is_bitwise_the_uncached_run(tmp_path, strategy_kwargs):
    """The encoder's conv stem, position table and bottom blocks run once per clip; with its stand-ins the encoder
    computes 0 + states, so the run is the uncached one bitwise (dropout on in the trainable blocks)."""
    train, held_out = whisper_set(24, seed=1), whisper_set(16, seed=2)
    runs = []
    for name, store in (("cached", 64.0), ("uncached", 0.0)):
        trainer = whisper_trainer(tmp_path / name, cached(store, **strategy_kwargs), train=train, held_out=held_out)
        trainer.train()
        runs.append((trainer, weights(trainer.model), trainer.evaluate()))
    (c, cw, ce), (u, uw, ue) = runs
    frozen = 3 if strategy_kwargs else 2
    assert c.prefix_cache.layout.frozen == frozen
    assert c.prefix_cache.layout.describe() == f"the conv stem and position table and blocks 0-{frozen - 1}"
    assert c.prefix_cache.stats.computed_rows == 24 + 16 and c.prefix_cache.stats.cached_rows == 2 * 24 + 3 * 16
    assert u.prefix_cache.stats.cached_rows == 0  # the store of size 0: every batch ran the prefix
    start = weights(new_whisper())
    prefix = ("encoder.conv", "encoder.embed_positions", *(f"encoder.layers.{i}." for i in range(frozen)))
    for name, value in cw.items():
        assert torch.equal(value, uw[name]), name
        if name.startswith(prefix):
            assert torch.equal(value, start[name]), f"{name} is in the frozen prefix and changed"
    assert not torch.equal(cw["classifier.weight"], start["classifier.weight"]), "nothing trained"
    if not strategy_kwargs:
        assert not torch.equal(cw["encoder.layers.2.fc1.weight"], start["encoder.layers.2.fc1.weight"]), "top block did not train"
    assert ce["eval_loss"] == ue["eval_loss"]
    # The encoder's own training flag (the stem's dropout) is off only during its forward: back on after a training step.
    c.model.train()
    c.model(input_features=train[:2]["input_features"])
    assert c.model.encoder.training and c.model.encoder.layers[2].training
    # Both are the model's own computation: without the hooks it scores the same in eval mode, as built.
    c.prefix_cache.close()
    assert c.evaluate()["eval_loss"] == pytest.approx(ce["eval_loss"], abs=1e-6)
    assert type(c.model.encoder.conv1).__name__ == "Conv1d" and len(c.model.encoder.layers) == 3


@pytest.mark.parametrize("model, message", [
    (lambda: __import__("transformers").WhisperForConditionalGeneration(new_whisper().config), "not the encoder-decoder"),
    (lambda: new_whisper(use_weighted_layer_sum=True), "use_weighted_layer_sum reads every block"),
    (lambda: new_whisper(encoder_layerdrop=0.1), "encoder_layerdrop 0.1 skips blocks at random"),
], ids=["encoder_decoder", "weighted_layer_sum", "layerdrop"])
def test_whisper_setups_the_cache_cannot_follow_are_refused(model, message):
    strategy = cached()
    with pytest.raises(HfTransferError, match=message) as error:
        FrozenPrefixCache(apply_strategy(model(), strategy))
    assert "\n" not in str(error.value)


def test_audio_collators_declare_when_their_inputs_vary():
    from hf_transfer.data.audio import AudioAugmentArgs, AudioCollator, WhisperCollator

    class Extractor:
        sampling_rate = 16000

    plain = AudioCollator(Extractor())
    assert inputs_vary_per_epoch(plain) is None and inputs_vary_per_epoch(WhisperCollator(plain, Extractor())) is None
    noisy = AudioCollator(Extractor(), augment=AudioAugmentArgs(noise_snr_db=20))
    assert "--noise_snr_db" in inputs_vary_per_epoch(WhisperCollator(noisy, Extractor()))
    # Clips over --max_duration_seconds get a random window each epoch: refused when the loader counted some (or
    # nobody counted), fine when none is that long.
    assert "some training clips are longer than --max_duration_seconds 1" in inputs_vary_per_epoch(AudioCollator(Extractor(), max_seconds=1.0))
    assert "3 training clips" in inputs_vary_per_epoch(AudioCollator(Extractor(), max_seconds=1.0, long_training_clips=3))
    assert inputs_vary_per_epoch(AudioCollator(Extractor(), max_seconds=1.0, long_training_clips=0)) is None
