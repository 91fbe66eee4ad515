"""Frozen features: length-sorted batching must give each example exactly its own vector, in the original order."""
import numpy as np
import torch
from datasets import Dataset
from transformers import BertConfig, BertModel, DataCollatorWithPadding

from conftest import make_tokenizer, review_rows
from hf_transfer.features import embed, frozen_baseline


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
