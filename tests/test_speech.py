"""Speech model helpers: frame arithmetic against the model's own, config and feature-extractor loading, option checks."""
import pytest
import torch
from audio_helpers import save_speech_checkpoint, tiny_speech_config

from hf_transfer import HfTransferError, StrategyArgs
from hf_transfer.models.loading import ModelArgs
from hf_transfer.models.speech import (
    SpeechModelArgs,
    load_feature_extractor,
    load_speech_config,
    min_batch_samples,
    min_input_samples,
    output_frames,
    prepare_speech_model,
)


@pytest.mark.parametrize("overrides", [{}, {"conv_kernel": (10, 3, 3), "conv_stride": (5, 2, 2), "conv_dim": (8, 8, 8)},
                                       {"add_adapter": True, "num_adapter_layers": 2, "adapter_stride": 2}])
def test_frame_arithmetic_matches_the_model(overrides):
    from transformers import Wav2Vec2Model

    config = tiny_speech_config(**overrides)
    model = Wav2Vec2Model(config)
    lengths = torch.tensor([1, 19, 20, 21, 400, 1601, 16000])
    expected = model._get_feat_extract_output_lengths(lengths, add_adapter=config.add_adapter).clamp(min=0).tolist()
    assert [output_frames(int(n), config) for n in lengths] == expected
    for frames in (1, 10, 37):
        shortest = min_input_samples(config, frames)
        assert output_frames(shortest, config) >= frames > output_frames(shortest - 1, config)


def test_batches_are_padded_to_the_time_mask_span_only_when_masking_is_on():
    config = tiny_speech_config(mask_time_prob=0.05, mask_time_length=10)
    assert output_frames(min_batch_samples(config), config) == 10
    assert min_batch_samples(tiny_speech_config(mask_time_prob=0.0)) == min_input_samples(config) == 20


def test_feature_extractor_attention_mask_follows_the_option(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    folder = save_speech_checkpoint(tmp_path / "model")
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=False).save_pretrained(folder)  # as wav2vec2-base ships
    assert load_feature_extractor(ModelArgs(str(folder)), SpeechModelArgs()).return_attention_mask is True
    assert load_feature_extractor(ModelArgs(str(folder)), SpeechModelArgs(attention_mask=False)).return_attention_mask is False


def test_loading_errors_are_one_line(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(tmp_path / "bert")
    with pytest.raises(HfTransferError, match=r"model type 'bert' is not a supported speech encoder; .* wav2vec2, hubert, wavlm"):
        load_speech_config(ModelArgs(str(tmp_path / "bert")), SpeechModelArgs())
    tiny_speech_config().save_pretrained(tmp_path / "no_extractor")
    with pytest.raises(HfTransferError, match=r"cannot load the feature extractor of .*no_extractor"):
        load_feature_extractor(ModelArgs(str(tmp_path / "no_extractor")), SpeechModelArgs())


def test_masking_overrides_reach_the_config_and_bad_values_are_refused(tmp_path):
    folder = save_speech_checkpoint(tmp_path / "model")
    config = load_speech_config(ModelArgs(str(folder)), SpeechModelArgs(mask_time_prob=0.2, mask_feature_prob=0.1, mask_time_length=4))
    assert (config.mask_time_prob, config.mask_feature_prob, config.mask_time_length) == (0.2, 0.1, 4)
    assert load_speech_config(ModelArgs(str(folder)), SpeechModelArgs()).mask_time_prob == tiny_speech_config().mask_time_prob
    with pytest.raises(HfTransferError, match=r"--mask_time_prob must be in \[0, 1\)"):
        SpeechModelArgs(mask_time_prob=1.5)


def test_gradual_unfreezing_never_reaches_the_frozen_feature_encoder():
    from transformers import Wav2Vec2ForSequenceClassification

    from hf_transfer.trainer import GradualUnfreezing

    model = prepare_speech_model(Wav2Vec2ForSequenceClassification(tiny_speech_config()), SpeechModelArgs(),
                                 StrategyArgs(strategy="gradual", unfreeze_every=1, unfreeze_unit="step"))
    schedule = GradualUnfreezing(every=1, unit="step")

    class State:
        global_step = 0
        max_steps = 6

    schedule.on_train_begin(type("Args", (), {"gradient_accumulation_steps": 1})(), State(), None, model=model)
    for step in range(6):  # past the point where every group, embeddings included, is unfrozen
        schedule.on_step_begin(None, type("S", (), {"global_step": step})(), None)
    assert all(p.requires_grad for n, p in model.named_parameters() if "feature_extractor" not in n)
    assert not any(p.requires_grad for p in model.wav2vec2.feature_extractor.parameters())
