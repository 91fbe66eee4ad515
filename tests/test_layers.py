"""The layer map against the installed transformers' real module names, one tiny model per architecture."""
import re

import pytest

from conftest import ARCHS, TEXT_ARCHS, tiny_model
from hf_transfer import HfTransferError, head_module_names, layer_groups
from hf_transfer.layers import ARCHITECTURES, num_blocks

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
    # T5 stacks encoder blocks 0-1 then decoder blocks 0-1 as blocks 0-3.
    "t5": (r"shared\.", r"(encoder|decoder)\.block\.(\d+)\.", {"encoder.final_layer_norm", "decoder.final_layer_norm"}),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_groups_partition_the_model_bottom_to_top(arch):
    model = tiny_model(arch)
    groups = layer_groups(model)
    bottom, block_pattern, head_modules = EXPECTED[arch]

    assert len(groups) == num_blocks(model.config) + 2
    assert [g.name for g in groups] == ["embeddings"] + [f"block_{i}" for i in range(len(groups) - 2)] + ["head"]
    # Every parameter in exactly one group.
    ids = [id(p) for g in groups for p in g.parameters]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(g.named_parameters for g in groups), "a group is empty"

    assert all(re.match(bottom, n) for n, _ in groups[0].named_parameters)
    for i, group in enumerate(groups[1:-1]):
        for name, _ in group.named_parameters:
            match = re.match(block_pattern, name)
            assert match, name
            stack, index = (match.group(1), int(match.group(2))) if arch == "t5" else ("", int(match.group(1)))
            expected_index = i - 2 if stack == "decoder" else i
            assert index == expected_index, (name, group.name)
    assert set(head_module_names(model)) == head_modules


def test_every_table_entry_is_tested():
    assert set(ARCHITECTURES) == set(EXPECTED)


def test_unknown_architecture_is_a_clear_error():
    import transformers as T

    model = T.GPT2ForSequenceClassification(T.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50))
    with pytest.raises(HfTransferError, match=r"model type 'gpt2' is not in the layer map; supported: bert, distilbert"):
        layer_groups(model)


@pytest.mark.parametrize("arch", TEXT_ARCHS + ["vit", "wav2vec2"])
def test_lora_weights_land_in_their_block(arch):
    from peft import LoraConfig, get_peft_model

    model = tiny_model(arch)
    targets = list(ARCHITECTURES[arch].lora_targets)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=targets))
    groups = layer_groups(peft_model)
    assert len(groups) == num_blocks(model.config) + 2
    for group in groups[1:-1]:
        lora = [n for n, _ in group.named_parameters if "lora_" in n]
        assert len(lora) == 2 * len(targets), (group.name, lora)  # lora_A and lora_B for each target in this block
    assert not any("lora_" in n for g in (groups[0], groups[-1]) for n, _ in g.named_parameters)


def test_stable_layer_norm_wav2vec2_puts_the_final_norm_on_top():
    import transformers as T

    from conftest import tiny_config

    config = tiny_config("wav2vec2")
    base = layer_groups(T.Wav2Vec2ForSequenceClassification(config))
    assert any(n.startswith("wav2vec2.encoder.layer_norm") for n, _ in base[0].named_parameters)
    config.do_stable_layer_norm = True  # large-lv60 / XLS-R layout: the norm follows the last block
    stable = layer_groups(T.Wav2Vec2ForSequenceClassification(config))
    assert any(n.startswith("wav2vec2.encoder.layer_norm") for n, _ in stable[-1].named_parameters)
    assert not any(n.startswith("wav2vec2.encoder.layer_norm") for n, _ in stable[0].named_parameters)
