"""The layer map against the installed transformers' real module names, one tiny model per architecture."""
import re

import pytest
from conftest import ARCHS, TEXT_ARCHS, tiny_config, tiny_model, tiny_seq2seq
from torch import nn

from hf_transfer import (
    HfTransferError,
    LayerGroup,
    add_to_head,
    head_module_names,
    layer_groups,
)
from hf_transfer.layers import ARCHITECTURES, num_blocks, stack_depths

ONE_STACK = [a for a in ARCHS if a != "t5"]

# What the bottom and top of each architecture must hold, and how its block parameters are named.
EXPECTED = {
    "bert": (r"bert\.embeddings\.", r"bert\.encoder\.layer\.(\d+)\.", {"bert.pooler", "classifier"}),
    "roberta": (r"roberta\.embeddings\.", r"roberta\.encoder\.layer\.(\d+)\.", {"classifier"}),
    "distilbert": (r"distilbert\.embeddings\.", r"distilbert\.transformer\.layer\.(\d+)\.", {"pre_classifier", "classifier"}),
    "vit": (r"vit\.embeddings\.", r"vit\.layers\.(\d+)\.", {"vit.layernorm", "classifier"}),
    "wav2vec2": (r"wav2vec2\.(feature_extractor|feature_projection|encoder\.pos_conv_embed|encoder\.layer_norm|masked_spec_embed)",
                 r"wav2vec2\.encoder\.layers\.(\d+)\.", {"projector", "classifier"}),
    "hubert": (r"hubert\.(feature_extractor|feature_projection|encoder\.pos_conv_embed|encoder\.layer_norm|masked_spec_embed)",
               r"hubert\.encoder\.layers\.(\d+)\.", {"projector", "classifier"}),
    # Not in conftest's ARCHS: tests/test_audio_recipes.py builds a tiny WavLM and checks it against this entry.
    "wavlm": (r"wavlm\.(feature_extractor|feature_projection|encoder\.pos_conv_embed|encoder\.layer_norm|masked_spec_embed)",
              r"wavlm\.encoder\.layers\.(\d+)\.", {"projector", "classifier"}),
    # Two stacks: checked by test_t5_stacks_side_by_side (block pattern groups: stack, index).
    "t5": (r"shared\.", r"(encoder|decoder)\.block\.(\d+)\.", {"decoder.final_layer_norm"}),
    "mt5": (r"shared\.", r"(encoder|decoder)\.block\.(\d+)\.", {"decoder.final_layer_norm"}),
    # Two stacks (the decoder optional): checked in detail by tests/test_whisper.py.
    "whisper": (r"model\.(encoder\.(conv|embed_positions)|decoder\.embed)", r"model\.(encoder|decoder)\.layers\.(\d+)\.",
                {"model.decoder.layer_norm"}),
}


def full_tiny_model(arch: str):
    """A tiny model of `arch` that has every optional part the table names (wav2vec2's mask embedding)."""
    import transformers as T
    from audio_helpers import tiny_speech_config

    if arch in ("wav2vec2", "hubert", "wavlm"):
        config = tiny_speech_config(arch, mask_time_prob=0.05)
        return T.AutoModelForAudioClassification.from_config(config)
    if arch == "whisper":  # the generation model: both stacks, the tied output projection
        from audio_helpers import tiny_whisper_config

        return T.WhisperForConditionalGeneration(tiny_whisper_config())
    if arch == "mt5":
        return T.MT5ForConditionalGeneration(T.MT5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=2))
    return tiny_model(arch)


@pytest.mark.parametrize("arch", ONE_STACK)
def test_groups_partition_the_model_bottom_to_top(arch):
    model = tiny_model(arch)
    groups = layer_groups(model)
    bottom, block_pattern, head_modules = EXPECTED[arch]

    assert len(groups) == num_blocks(model.config) + 2
    assert [g.name for g in groups] == ["embeddings"] + [f"block_{i}" for i in range(len(groups) - 2)] + ["head"]
    n = len(groups) - 2
    assert [(g.stack, g.depth_from_top) for g in groups] == [(None, n + 1)] + [("encoder", n - i) for i in range(n)] + [(None, 0)]
    # Every parameter in exactly one group.
    ids = [id(p) for g in groups for p in g.parameters]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(g.named_parameters for g in groups), "a group is empty"

    assert all(re.match(bottom, n) for n, _ in groups[0].named_parameters)
    for i, group in enumerate(groups[1:-1]):
        for name, _ in group.named_parameters:
            match = re.match(block_pattern, name)
            assert match and int(match.group(1)) == i, (name, group.name)
    assert set(head_module_names(model)) == head_modules


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_path_in_the_table_exists_in_the_installed_transformers(arch):
    model = full_tiny_model(arch)
    spec, backbone = ARCHITECTURES[arch], model.base_model
    for path in spec.embeddings + spec.head + tuple(p for p, _ in spec.on_top_if):
        assert any(n == path or n.startswith(path + ".") for n, _ in backbone.named_parameters()), path
    for stack in spec.stacks:
        blocks = backbone.get_submodule(stack.blocks)
        assert isinstance(blocks, nn.ModuleList) and len(blocks) == getattr(model.config, stack.depth) == 2, stack
        for path in stack.top:
            backbone.get_submodule(path)
    module_names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert set(spec.lora_targets) <= module_names, spec.lora_targets


def test_every_table_entry_is_tested():
    assert set(ARCHITECTURES) == set(EXPECTED)


@pytest.mark.parametrize("arch", ["t5", "mt5"])
def test_t5_stacks_side_by_side(arch):
    model = tiny_seq2seq("t5", encoder_layers=3, decoder_layers=2) if arch == "t5" else full_tiny_model("mt5")
    groups = layer_groups(model)
    enc = 3 if arch == "t5" else 2
    bottom, block_pattern, head_modules = EXPECTED[arch]

    assert [(g.name, g.stack, g.depth_from_top) for g in groups] == (
        [("embeddings", None, enc + 1)]
        + [(f"encoder.block_{i}", "encoder", enc - i) for i in range(enc)]
        + [("decoder.block_0", "decoder", 2), ("decoder.block_1", "decoder", 1), ("head", None, 0)]
    )
    assert stack_depths(model.config) == {"encoder": enc, "decoder": 2} and num_blocks(model.config) == enc + 2
    ids = [id(p) for g in groups for p in g.parameters]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert sum(g.numel() for g in groups) == sum(p.numel() for p in model.parameters())

    # `shared` is the input of both stacks and, tied, the LM head: one parameter, in the embeddings.
    assert model.lm_head.weight is model.shared.weight is model.encoder.embed_tokens.weight
    assert [n for n, _ in groups[0].named_parameters] == ["shared.weight"]
    by_name = {n: g.name for g in groups for n, _ in g.named_parameters}
    assert by_name["encoder.final_layer_norm.weight"] == f"encoder.block_{enc - 1}"
    assert by_name["decoder.final_layer_norm.weight"] == "head"
    for name, group in by_name.items():
        match = re.match(block_pattern, name)
        if match:
            assert group == f"{match.group(1)}.block_{match.group(2)}", name
    assert set(head_module_names(model)) == head_modules


def test_an_untied_lm_head_is_head_and_a_t5_without_decoder_has_one_stack():
    import transformers as T

    model = tiny_seq2seq("t5")
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())  # t5 v1.1 keeps its LM head apart
    groups = layer_groups(model)
    assert {n for n, _ in groups[-1].named_parameters} == {"decoder.final_layer_norm.weight", "lm_head.weight"}
    assert [n for n, _ in groups[0].named_parameters] == ["shared.weight"]

    # T5ForTokenClassification wraps a T5EncoderModel: the (optional) decoder stack is simply absent.
    encoder_only = T.T5ForTokenClassification(tiny_config("t5"))
    groups = layer_groups(encoder_only)
    assert [(g.name, g.depth_from_top) for g in groups] == [
        ("embeddings", 3), ("encoder.block_0", 2), ("encoder.block_1", 1), ("head", 0)
    ]
    assert {n for n, _ in groups[-1].named_parameters} == {"classifier.weight", "classifier.bias"}


def test_encoder_decoder_model_composes_the_specs_of_its_parts():
    model = tiny_seq2seq("encoder-decoder", encoder_layers=2, decoder_layers=3)
    groups = layer_groups(model)
    assert [(g.name, g.stack, g.depth_from_top) for g in groups] == [
        ("embeddings", None, 4),
        ("encoder.block_0", "encoder", 2), ("encoder.block_1", "encoder", 1),
        ("decoder.block_0", "decoder", 3), ("decoder.block_1", "decoder", 2), ("decoder.block_2", "decoder", 1),
        ("head", None, 0),
    ]
    assert stack_depths(model.config) == {"encoder": 2, "decoder": 3}
    ids = [id(p) for g in groups for p in g.parameters]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))

    by_name = {n: g.name for g in groups for n, _ in g.named_parameters}
    for name, group in by_name.items():
        if match := re.match(r"encoder\.encoder\.layer\.(\d+)\.", name):
            assert group == f"encoder.block_{match.group(1)}", name
        elif match := re.match(r"decoder\.bert\.encoder\.layer\.(\d+)\.", name):
            assert group == f"decoder.block_{match.group(1)}", name
        elif re.match(r"(encoder|decoder\.bert)\.embeddings\.", name):
            assert group == "embeddings", name
    assert any(".crossattention." in n for n, _ in groups[3].named_parameters), "cross-attention outside the decoder blocks"
    # The pooler, which EncoderDecoderModel never calls, stays with the encoder; the LM head's weight is tied
    # to the decoder's word embeddings and stays there too.
    assert by_name["encoder.pooler.dense.weight"] == "encoder.block_1"
    assert model.decoder.cls.predictions.decoder.weight is model.decoder.bert.embeddings.word_embeddings.weight
    assert {n for n, _ in groups[-1].named_parameters} == {
        "decoder.cls.predictions.bias", "decoder.cls.predictions.transform.dense.weight",
        "decoder.cls.predictions.transform.dense.bias", "decoder.cls.predictions.transform.LayerNorm.weight",
        "decoder.cls.predictions.transform.LayerNorm.bias",
    }
    assert head_module_names(model) == ["decoder.cls.predictions.transform"]


class DomainAdversarial(nn.Module):
    """A wrapper the table cannot know: a mapped classifier plus a domain head reading the same features."""

    def __init__(self):
        super().__init__()
        self.classifier = tiny_model("bert")
        self.domain_head = nn.Linear(32, 2)

    def forward(self, input_ids, labels=None):
        out = self.classifier(input_ids=input_ids, labels=labels, output_hidden_states=True)
        return out.loss + nn.functional.cross_entropy(self.domain_head(out.hidden_states[-1][:, 0]), labels)

    def transfer_layer_groups(self) -> list[LayerGroup]:
        return add_to_head(layer_groups(self.classifier), self.domain_head)


def test_a_wrapper_declares_its_groups_and_the_extra_head_joins_the_head():
    model = DomainAdversarial()
    groups = layer_groups(model)
    inner = layer_groups(model.classifier)
    assert [(g.name, g.stack, g.depth_from_top) for g in groups] == [(g.name, g.stack, g.depth_from_top) for g in inner]
    assert [n for n, _ in groups[1].named_parameters] == [f"classifier.{n}" for n, _ in inner[1].named_parameters]
    assert {"domain_head.weight", "domain_head.bias"} <= {n for n, _ in groups[-1].named_parameters}
    ids = [id(p) for g in groups for p in g.parameters]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert set(head_module_names(model)) == {"classifier.bert.pooler", "classifier.classifier", "domain_head"}

    class Unmapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = tiny_model("bert")

    with pytest.raises(HfTransferError, match=r"Unmapped has no transformers config.*transfer_layer_groups\(\)"):
        layer_groups(Unmapped())


def test_unknown_architecture_is_a_clear_error():
    import transformers as T

    model = T.GPT2ForSequenceClassification(T.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50))
    with pytest.raises(HfTransferError, match=r"model type 'gpt2' is not in the layer map; supported: bert, distilbert, encoder-decoder"):
        layer_groups(model)


@pytest.mark.parametrize("arch", TEXT_ARCHS + ["vit", "wav2vec2", "t5", "encoder-decoder"])
def test_lora_weights_land_in_their_block(arch):
    from peft import LoraConfig, get_peft_model

    model = tiny_seq2seq(arch) if arch in ("t5", "encoder-decoder") else tiny_model(arch)
    targets = list(ARCHITECTURES["bert" if arch == "encoder-decoder" else arch].lora_targets)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=targets))
    groups = layer_groups(peft_model)
    assert len(groups) == num_blocks(model.config) + 2
    for group in groups[1:-1]:
        lora = [n for n, _ in group.named_parameters if "lora_" in n]
        # lora_A and lora_B for each target in this block, twice in a decoder block (self- and cross-attention)
        attentions = 2 if group.stack == "decoder" else 1
        assert len(lora) == 2 * len(targets) * attentions, (group.name, lora)
    assert not any("lora_" in n for g in (groups[0], groups[-1]) for n, _ in g.named_parameters)


def test_stable_layer_norm_wav2vec2_puts_the_final_norm_on_top():
    import transformers as T

    config = tiny_config("wav2vec2")
    base = layer_groups(T.Wav2Vec2ForSequenceClassification(config))
    assert any(n.startswith("wav2vec2.encoder.layer_norm") for n, _ in base[0].named_parameters)
    config.do_stable_layer_norm = True  # large-lv60 / XLS-R layout: the norm follows the last block
    stable = layer_groups(T.Wav2Vec2ForSequenceClassification(config))
    assert any(n.startswith("wav2vec2.encoder.layer_norm") for n, _ in stable[-1].named_parameters)
    assert not any(n.startswith("wav2vec2.encoder.layer_norm") for n, _ in stable[0].named_parameters)
