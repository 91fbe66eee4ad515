"""The trainer of contrastive few-shot runs, and the model it trains (the method and its options: hf_transfer/contrastive.py).

The closing fit writes logistic regression on the embedding the classification layer reads (with the head's dropout
off) into that layer: the saved folder is an ordinary *ForSequenceClassification model that predicts exactly what
the fitted regression predicts. Which embedding that is, and what the pairs compare (`prepare_contrastive_model`):
- `cls`: the model's own head input (BERT: the pooler's tanh over the last [CLS] state; RoBERTa: its head's dense
  layer), trained with the body; pairs compare it.
- `mean` (BERT, RoBERTa): the mean of the last block's token states, which sentence-embedding models such as
  all-MiniLM-L6-v2 are trained to produce (and SetFit pools), while their [CLS] state is a poor embedding (frozen,
  logistic regression on it scored 9 points below the mean on SST-2 at 16 per class). A stock classifier reads
  position 0 only, so a pooling block is added on top of the stack, built rather than trained: its attention has zero
  queries, so position 0 attends uniformly to every unmasked token and takes their mean (values: the identity); the
  output projection scales it by 1024, so the residual [CLS] state is a thousandth of the sum and the LayerNorm
  returns the normalised mean; the feed-forward part adds nothing. The head's dense layer becomes I / sqrt(d), so the
  classifier reads tanh(LayerNorm(mean) / sqrt(d)): about the unit-length centred mean (tanh is within 2% of linear
  there), the scale of SetFit's normalised embeddings, on which its logistic regression (C = 1) is fitted. The block
  and the head's dense layer stay frozen; the saved config counts the block (one more hidden layer), so
  `from_pretrained` and `pipeline` rebuild it. Pairs compare the mean itself (SetFit's loss exactly), with the block
  left out of their forward pass: it would only cost time there (a seventh of MiniLM-L6's forward).

Resume: the pair phase is ordinary Trainer steps over a pair set that is a function of the seed, so checkpoints resume
exactly (the block is rebuilt the same way before the checkpoint loads); the head is a function of the body's weights,
refitted after every resume and at every evaluation, which scores the body as it is at that step through the head it
would get then. Under several processes every rank fits the same head from the same weights, with nothing to exchange.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np
import torch
from torch import nn

from hf_transfer.adaptation.objectives import FeatureTap, classifier_layers
from hf_transfer.contrastive import (
    LOSSES,
    MEAN_POOLING_TYPES,
    POOLINGS,
    fit_logistic_head,
    linear_from_logistic,
    pair_loss,
)
from hf_transfer.data.pairs import PAIR_COLUMNS, SECOND_PREFIX, SIMILARITY
from hf_transfer.errors import HfTransferError
from hf_transfer.layers import layer_groups, unwrap_model
from hf_transfer.trainer import TransferTrainer, random_state_kept

RESIDUAL_SCALE = 1024.0  # the pooling block's output projection: the [CLS] residual is this much smaller than the mean


@torch.no_grad()
def set_classifier(model: nn.Module, head) -> None:
    """Write the fitted regression into the model's classification layer (both copies under peft)."""
    layers = classifier_layers(model)
    weight, bias = linear_from_logistic(head, layers[0].out_features)
    for layer in layers:
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))


def head_dropouts(model: nn.Module) -> list[nn.Module]:
    """Dropout modules of the head: those sitting directly in the task model (BERT's and DistilBERT's classifier
    dropout) or in a module holding only head parameters (RoBERTa's classification head)."""
    inner = unwrap_model(model)
    head = {id(p) for p in layer_groups(inner)[-1].parameters}
    found = []
    for name, module in inner.named_modules():
        if isinstance(module, nn.Dropout):
            parent = name.rpartition(".")[0]
            if all(id(p) in head for p in (inner.get_submodule(parent).parameters() if parent else ())):
                found.append(module)
    return found


@contextlib.contextmanager
def head_dropout_off(model: nn.Module):
    """The head's dropout in eval mode for a block (the body keeps its own): pairs are compared on the embedding the
    classifier reads at inference, not on a copy with a tenth of it zeroed."""
    switched = [m for m in head_dropouts(model) if m.training]
    for module in switched:
        module.eval()
    try:
        yield
    finally:
        for module in switched:
            module.train()


def pooled_embeddings(model: nn.Module, batch: dict) -> torch.Tensor:
    """One vector per row of `batch`: the classification layer's input, with the head's dropout off."""
    tap = FeatureTap()
    with tap.attached(model), head_dropout_off(model):
        model(**batch)
    return tap.take()


@contextlib.contextmanager
def pooling_block_left_out(model: nn.Module):
    """The model without its pooling block (the last block, frozen) for a block: the hidden states end at the last
    trained block. Its parameters are frozen, so neither the optimizer nor DDP sees the difference."""
    blocks = unwrap_model(model).base_model.encoder.layer
    block = blocks[-1]
    del blocks[-1]
    try:
        yield
    finally:
        blocks.append(block)


def pair_embeddings(model: nn.Module, batch: dict, pooling: str) -> torch.Tensor:
    """What the pair loss compares: the classifier's input (`cls`), or the attention-masked mean of the last trained
    block's token states (`mean`)."""
    if pooling == "cls":
        return pooled_embeddings(model, batch)
    with pooling_block_left_out(model):
        hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def head_dense_layers(model: nn.Module) -> list[nn.Linear]:
    """The head's square dense layer(s) below the classification layer (BERT's pooler, RoBERTa's classifier.dense;
    both copies under peft)."""
    inner = unwrap_model(model)
    final = {id(layer) for layer in classifier_layers(inner)}
    head = {id(p) for p in layer_groups(inner)[-1].parameters}
    width = inner.config.hidden_size
    return [m for m in inner.modules() if isinstance(m, nn.Linear) and id(m) not in final and m.in_features == width
            and m.out_features == width and all(id(p) in head for p in m.parameters())]


@torch.no_grad()
def append_mean_pooling_block(model: nn.Module) -> nn.Module:
    """Add the pooling block on top of the encoder and make the head's dense layer I / sqrt(d) (see the module doc);
    returns the block (frozen, dropout off)."""
    inner = unwrap_model(model)
    blocks = inner.base_model.encoder.layer
    reference = next(blocks[-1].parameters())
    block = type(blocks[-1])(inner.config, layer_idx=len(blocks)).to(reference.device, reference.dtype)
    width = inner.config.hidden_size
    eye = torch.eye(width, device=reference.device, dtype=reference.dtype)
    parameters = dict(block.named_parameters())
    for parameter in parameters.values():
        parameter.zero_()  # queries, keys, the feed-forward part and every bias: zero
    parameters["attention.self.value.weight"].copy_(eye)
    parameters["attention.output.dense.weight"].copy_(RESIDUAL_SCALE * eye)
    for norm in ("attention.output.LayerNorm.weight", "output.LayerNorm.weight"):
        parameters[norm].fill_(1.0)
    for module in block.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0  # the mean of every token, in training too (saved models read the config's rate, in eval mode)
    block.requires_grad_(False)
    blocks.append(block)
    inner.config.num_hidden_layers = len(blocks)
    for dense in head_dense_layers(inner):
        dense.weight.copy_(eye / width ** 0.5)
        dense.bias.zero_()
    return block


def prepare_contrastive_model(model: nn.Module, pooling: str = "mean") -> nn.Module:
    """Set the model up for the pair phase, before the optimizer and DDP see it: with `mean`, the pooling block and
    the linear head (see the module doc); then freeze what the pair loss must not train: the classification layer
    (fitted after the pairs), and with `mean` the head's dense layer. Refuses a classification layer without a bias,
    which could not hold the regression's intercept, and `mean` on an architecture it does not know."""
    if pooling not in POOLINGS:
        raise ValueError(pooling)
    inner = unwrap_model(model)
    layers = classifier_layers(model)  # an HfTransferError for a model without one
    if any(layer.bias is None for layer in layers):
        raise HfTransferError(f"{type(inner).__name__}'s classification layer has no bias, which the fitted logistic "
                              "regression needs; use a BERT-, RoBERTa- or DistilBERT-style classifier")
    frozen = [p for layer in layers for p in layer.parameters()]
    if pooling == "mean":
        model_type = getattr(inner.config, "model_type", None)
        if model_type not in MEAN_POOLING_TYPES or len(head_dense_layers(inner)) == 0:
            raise HfTransferError(f"--contrastive_pooling mean knows {', '.join(MEAN_POOLING_TYPES)} models, not "
                                  f"'{model_type}'; use --contrastive_pooling cls")
        append_mean_pooling_block(model)
        frozen += [p for dense in head_dense_layers(inner) for p in dense.parameters()]
    for parameter in frozen:
        parameter.requires_grad_(False)
    return model


class ContrastiveTrainer(TransferTrainer):
    """`TransferTrainer` whose training steps read pairs (`train_dataset` a pair dataset, `data_collator` a
    `PairCollator`) and whose closing step fits the head on `labelled` (the tokenised training rows with `labels`).
    The model comes through `prepare_contrastive_model` with the same `pooling`."""

    def __init__(self, model=None, args=None, *, labelled, loss: str = "cosine", pooling: str = "mean", **kwargs):
        if args is not None:
            # A step runs the model twice (one pass per side) before its backward. DDP's default broadcast of buffers
            # at each forward then overwrote, in the second pass, a buffer the first pass's graph still held (BERT's
            # constant position and token-type ids, the same on every rank from loading): no broadcast.
            args.ddp_broadcast_buffers = False
        super().__init__(model, args, **kwargs)
        if loss not in LOSSES or pooling not in POOLINGS:
            raise ValueError((loss, pooling))
        self.labelled, self.pair_loss, self.pooling = labelled, loss, pooling
        self.head = None  # the fitted scikit-learn regression
        self.head_step: int | None = None  # the step whose body `head` was fitted on

    def _set_signature_columns_if_needed(self) -> None:
        # The pair columns reach the collator (the Trainer would drop them: the model's forward takes no such argument).
        super()._set_signature_columns_if_needed()
        self._signature_columns += [c for c in PAIR_COLUMNS if c not in self._signature_columns]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if SIMILARITY not in inputs:  # evaluation rows: the classifier's own loss
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        similarity = inputs.pop(SIMILARITY)
        second = {key[len(SECOND_PREFIX):]: inputs.pop(key) for key in list(inputs) if key.startswith(SECOND_PREFIX)}
        # Two forward passes, one per side, and one backward: each side padded to its own length. DDP takes that (a
        # parameter's gradient hook still fires once, after both passes' contributions are summed).
        first, second = pair_embeddings(model, inputs, self.pooling), pair_embeddings(model, second, self.pooling)
        loss = pair_loss(first, second, similarity, self.pair_loss)
        return (loss, {"first": first, "second": second}) if return_outputs else loss

    @torch.no_grad()
    def embed(self, rows) -> np.ndarray:
        """Embeddings of tokenised `rows` by the model as it is now (eval mode), in the rows' order."""
        from torch.utils.data import DataLoader

        inputs = rows.remove_columns([c for c in rows.column_names if c == "labels"])
        loader = DataLoader(inputs, batch_size=self.args.eval_batch_size, collate_fn=self.data_collator)
        model, was_training = self.model, self.model.training
        model.eval()
        try:
            chunks = [pooled_embeddings(model, {k: v.to(self.args.device) for k, v in batch.items()}).float().cpu().numpy()
                      for batch in loader]
        finally:
            model.train(was_training)
        return np.concatenate(chunks)

    def fit_head(self) -> None:
        """Phase two: logistic regression on the labelled rows' embeddings, written into the classification layer."""
        with random_state_kept():  # a DataLoader takes a seed from torch's generator: training's stream stays as it was
            features = self.embed(self.labelled)
        self.head = fit_logistic_head(features, np.asarray(self.labelled["labels"]), self.args.seed)
        set_classifier(self.model, self.head)
        self.head_step = self.state.global_step

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        start = time.perf_counter()
        self.fit_head()
        # The closing step's cost beside train_runtime (the pair steps): metrics.json's train_head_fit_seconds.
        output.metrics["head_fit_seconds"] = round(time.perf_counter() - start, 3)
        return output

    def evaluate(self, *args, **kwargs):
        if self.head_step != self.state.global_step:
            self.fit_head()
        return super().evaluate(*args, **kwargs)


