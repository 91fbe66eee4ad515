"""Frozen features: length-sorted batching must give each example exactly its own vector, in the original order,
for text (token masks) and audio (per-sample masks reduced to the encoder's frames); the cache key follows the clips."""
import numpy as np
import torch
from conftest import make_tokenizer, review_rows
from datasets import Dataset
from transformers import BertConfig, BertModel, DataCollatorWithPadding

from hf_transfer.evidence.features import embed, frozen_baseline


def test_embed_matches_one_example_at_a_time(tmp_path):
    tokenizer = make_tokenizer(tmp_path)
    texts = [t + " and" * (i % 5) for i, (t, _) in enumerate(review_rows(13))]  # varied lengths
    data = Dataset.from_dict(dict(tokenizer(texts)))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=37, max_position_embeddings=64))
    batched = embed(model, data, DataCollatorWithPadding(tokenizer), batch_size=4)
    with torch.inference_mode():
        for i, text in enumerate(texts):
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
            np.testing.assert_allclose(batched[i], hidden.mean(0).numpy(), rtol=1e-4, atol=1e-5)
    first_token = embed(model, data, DataCollatorWithPadding(tokenizer), batch_size=4, pooling="cls")
    with torch.inference_mode():
        np.testing.assert_allclose(first_token[5], model(**tokenizer(texts[5], return_tensors="pt")).last_hidden_state[0, 0].numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_baseline_separates_a_separable_feature(tmp_path):
    tokenizer = make_tokenizer(tmp_path)
    rows = review_rows(40)
    data = Dataset.from_dict({**tokenizer([t for t, _ in rows]), "labels": [int(l == "positive") for _, l in rows]})

    class WordIdentity(torch.nn.Module):
        """Features = one-hot of the token ids: the adjective decides the label, so a linear head must get it right."""

        def forward(self, input_ids, attention_mask, **_):
            return type("Out", (), {"last_hidden_state": torch.nn.functional.one_hot(input_ids, len(tokenizer)).float()})

        def parameters(self):
            yield torch.zeros(1)

    scores = frozen_baseline(WordIdentity(), data, data, DataCollatorWithPadding(tokenizer))
    assert scores["accuracy"] == 1.0 and scores["roc_auc"] == 1.0


# ---------------------------------------------------------------------------------------------------------
# Audio: clips decoded by the collator, a per-sample mask reduced to the model's frames, the cache key
# ---------------------------------------------------------------------------------------------------------

def _clip_dataset(folder, seconds):
    """Clips at 16 kHz of the given lengths (not sorted), with the columns an audio loader gives."""
    from audio_helpers import write_clip

    paths = [str(write_clip(folder / f"{i}.wav", 300.0 + 150 * i, 16000, s)) for i, s in enumerate(seconds)]
    return Dataset.from_dict({"audio": paths, "labels": [i % 2 for i in range(len(paths))],
                              "length": [int(16000 * s) for s in seconds], "augment": [True] * len(paths)})


def _audio_setup(**config):
    from audio_helpers import tiny_speech_config
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from hf_transfer.data.audio import AudioAugmentArgs, AudioCollator

    torch.manual_seed(0)
    model = Wav2Vec2Model(tiny_speech_config("wav2vec2", **config)).eval()
    # Noise on every training row: embed must take training rows as they are (no noise, no random crop).
    collator = AudioCollator(Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True),
                             augment=AudioAugmentArgs(noise_snr_db=0.0, noise_probability=1.0), max_seconds=1.0)
    return model, collator


def test_embed_audio_pools_only_the_clip_frames(tmp_path):
    """Batched (padded) audio features equal one clip at a time: the per-sample mask is reduced to frames.

    Layer-normalised wav2vec2 (the large/stable variant) gives each clip the same frames padded or not, so any
    padded frame in the mean, or a row put back in the wrong place, shows as a difference.
    """
    seconds = [0.31, 0.12, 0.25, 0.07, 0.2, 0.16, 0.28]
    data = _clip_dataset(tmp_path, seconds)
    model, collator = _audio_setup(feat_extract_norm="layer", do_stable_layer_norm=True)
    batched = embed(model, data, collator, batch_size=3)
    assert batched.shape == (len(seconds), 32)
    with torch.inference_mode():
        for i in range(len(seconds)):
            one = collator([{"audio": data[i]["audio"]}])  # an evaluation row: no augmentation
            reference = model(input_values=one["input_values"]).last_hidden_state[0].mean(0).numpy()
            np.testing.assert_allclose(batched[i], reference, rtol=1e-4, atol=1e-5, err_msg=f"clip {i}")


class Downsampler(torch.nn.Module):
    """Hidden states at a quarter of the input's length (one frame per 4 samples), like a speech encoder's."""

    def forward(self, input_values, attention_mask=None, **_):
        return type("Out", (), {"last_hidden_state": input_values.unfold(1, 4, 4).mean(-1, keepdim=True)})

    def parameters(self):
        yield torch.zeros(1)


def _padded(rows, mask=False):
    longest = max(len(r["x"]) for r in rows)
    batch = {"input_values": torch.tensor([r["x"] + [0.0] * (longest - len(r["x"])) for r in rows])}
    if mask:
        batch["attention_mask"] = torch.tensor([[1] * len(r["x"]) + [0] * (longest - len(r["x"])) for r in rows])
    return batch


def test_embed_pools_the_frames_of_each_clip_whatever_the_mask():
    rows = Dataset.from_dict({"x": [[2.0] * 8, [1.0] * 4, [3.0] * 4 + [5.0] * 8], "length": [8, 4, 12]})
    third = (3 + 5 + 5) / 3  # its frames are 3, 5, 5

    class WithFrameMask(Downsampler):
        def _get_feature_vector_attention_mask(self, frames, mask):
            return mask[:, ::4][:, :frames]

    # Sorted by length, the 4-sample clip shares a batch with the 8-sample one: only its own frame counts.
    np.testing.assert_allclose(embed(WithFrameMask(), rows, lambda b: _padded(b, mask=True), batch_size=2)[:, 0], [2.0, 1.0, third], rtol=1e-6)
    # No mask from the collator (wav2vec2-base's feature extractor gives none): the `length` column stands in.
    np.testing.assert_allclose(embed(WithFrameMask(), rows, _padded, batch_size=2)[:, 0], [2.0, 1.0, third], rtol=1e-6)
    # A model that cannot map its input mask to frames is pooled over every frame, padding included.
    np.testing.assert_allclose(embed(Downsampler(), rows, lambda b: _padded(b, mask=True), batch_size=2)[:, 0], [2.0, 0.5, third], rtol=1e-6)


def test_audio_fingerprint_follows_the_clips(tmp_path):
    from audio_helpers import write_clip

    from hf_transfer.evidence.features import data_fingerprint

    data = _clip_dataset(tmp_path, [0.1, 0.2])
    key = data_fingerprint(data)
    assert data_fingerprint(_clip_dataset(tmp_path / "copy", [0.1, 0.2])) != key  # other files
    assert data_fingerprint(data.remove_columns("length").add_column("length", [1600, 1000])) != key  # other lengths (a cut)
    import os
    import time

    time.sleep(0.01)
    write_clip(tmp_path / "1.wav", 999.0, 16000, 0.2)  # the same path and length, other sound
    os.utime(tmp_path / "1.wav", ns=(time.time_ns(), time.time_ns() + 10**9))  # whatever the filesystem's clock grain
    assert data_fingerprint(data) != key
    as_bytes = lambda payload: Dataset.from_dict({"audio": [{"bytes": payload, "path": None}], "length": [3]})
    assert data_fingerprint(as_bytes(b"abc")) != data_fingerprint(as_bytes(b"abd"))
