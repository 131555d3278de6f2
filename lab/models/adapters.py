"""The only module that knows the inside of Hugging Face models.

An adapter gives explainers one view of a supported classifier (BERT/MiniLM/RoBERTa-style sequence classifiers
and ViTForImageClassification): its inputs, a plain forward with attention weights, the input embedding to
attribute to, and a *relevance forward* that recomputes the model with the module's own weights, written in
`RelevanceOps` so that a backward pass propagates relevance (tests check it reproduces the HF outputs).
Nothing here modifies the model; `eager_attention` switches the attention implementation and always restores it.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lab.relevance.propagate import RelevanceOps


class UnsupportedModelError(TypeError):
    pass


class ExplainInputError(ValueError):
    """Bad input to an explainer; the message says what is wrong and how to fix it."""


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """Temporarily use the eager attention implementation (the only one that returns attention weights)."""
    previous = getattr(model.config, "_attn_implementation", "eager")
    if previous != "eager":
        try:
            model.set_attn_implementation("eager")
        except Exception as exc:  # pragma: no cover - depends on the model class
            raise UnsupportedModelError(
                f"{type(model).__name__} uses attention implementation {previous!r}, which cannot return attention "
                f"weights, and switching to 'eager' failed ({exc}). Load the model with attn_implementation='eager'."
            ) from None
    try:
        yield model
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)


@dataclass
class AttentionModules:
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear


class Adapter:
    modality: str = "text"
    # relevance forward: compute only the [CLS] row of the last block (exact, cheaper; False for checks)
    cls_only_last_block: bool = True

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        self.num_layers = self.config.num_hidden_layers
        self.num_heads = self.config.num_attention_heads
        self.head_dim = self.config.hidden_size // self.num_heads
        self.scaling = self.head_dim ** -0.5

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    @property
    def num_labels(self) -> int:
        return self.config.num_labels

    # ---- shared pieces of the relevance forward ----
    def _self_attention(self, ops: RelevanceOps, x, mods: AttentionModules, additive_mask, block: int,
                        cls_only: bool = False):
        """Self-attention with `ops`; cls_only: only the [CLS] query row (keys and values from every token)."""
        batch = x.shape[0]

        def heads(t):
            return t.view(batch, t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        q = heads(ops.linear(x[:, :1] if cls_only else x, mods.query.weight, mods.query.bias))
        k = heads(ops.linear(x, mods.key.weight, mods.key.bias))
        v = heads(ops.linear(x, mods.value.weight, mods.value.bias))
        scores = ops.matmul(q, k.transpose(2, 3))
        scale = self.scaling
        if additive_mask is None:
            scores = ops.nonlinear(lambda s: s * scale, scores)
        else:
            scores = ops.nonlinear(lambda s: s * scale + additive_mask, scores)
        probs = ops.softmax(scores)
        context = ops.matmul(probs, v, attention_block=block)  # Chefer Eq. 14: O = A V
        context = context.transpose(1, 2).reshape(batch, q.shape[2], -1)
        return ops.linear(context, mods.output.weight, mods.output.bias)


class BertAdapter(Adapter):
    """BERT-family sequence classifiers (BERT, MiniLM, RoBERTa): post-LayerNorm blocks."""

    def __init__(self, model):
        super().__init__(model)
        self.base = model.base_model
        self.layers = list(self.base.encoder.layer)
        self.is_roberta = not hasattr(model, "bert") and hasattr(model, "roberta")

    # ---- inputs ----
    def prepare(self, inputs) -> dict:
        if not hasattr(inputs, "keys") or "input_ids" not in inputs:
            raise ExplainInputError("text inputs must be a tokenizer output with 'input_ids' (and 'attention_mask')")
        ids = torch.as_tensor(inputs["input_ids"], device=self.device)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.numel() == 0 or ids.shape[-1] == 0:
            raise ExplainInputError("empty input: the batch has no tokens")
        max_len = self.config.max_position_embeddings - (2 if self.is_roberta else 0)
        if ids.shape[1] > max_len:
            raise ExplainInputError(
                f"sequence length {ids.shape[1]} exceeds the model's maximum of {max_len} positions; tokenize with "
                f"truncation=True, max_length={max_len} (or pass truncate=True to explain())"
            )
        out = {"input_ids": ids}
        mask = inputs.get("attention_mask")
        out["attention_mask"] = torch.ones_like(ids) if mask is None else torch.as_tensor(mask, device=self.device).reshape(ids.shape)
        types = inputs.get("token_type_ids")
        if types is not None and not self.is_roberta:
            out["token_type_ids"] = torch.as_tensor(types, device=self.device).reshape(ids.shape)
        return out

    def truncate(self, inputs: dict, max_len: int | None = None) -> dict:
        max_len = max_len or self.config.max_position_embeddings - (2 if self.is_roberta else 0)
        return {k: v[:, :max_len] for k, v in inputs.items()}

    def valid_mask(self, inputs) -> torch.Tensor:
        return inputs["attention_mask"].bool()

    def special_mask(self, inputs) -> torch.Tensor:
        ids = inputs["input_ids"]
        special = torch.zeros_like(ids, dtype=torch.bool)
        for name in ("cls_token_id", "sep_token_id", "pad_token_id", "bos_token_id", "eos_token_id"):
            tid = getattr(self.config, name, None)
            if tid is not None:
                special |= ids == tid
        if getattr(self.config, "model_type", "") in ("bert",):  # [CLS]=101, [SEP]=102 in the uncased vocab
            special |= (ids == 101) | (ids == 102)
        special[:, 0] = True
        return special | ~self.valid_mask(inputs)

    # ---- plain forwards on the unmodified model ----
    def forward(self, inputs, embeds=None, attentions=False, hidden_states=False):
        kwargs = {k: v for k, v in inputs.items() if k != "input_ids"}
        if embeds is None:
            kwargs["input_ids"] = inputs["input_ids"]
        else:
            kwargs["inputs_embeds"] = embeds
        with (eager_attention(self.model) if attentions else contextlib.nullcontext()):
            return self.model(**kwargs, output_attentions=attentions, output_hidden_states=hidden_states)

    def embed(self, inputs) -> torch.Tensor:
        """The word-embedding vectors e_t that gradient methods attribute to."""
        return self.base.embeddings.word_embeddings(inputs["input_ids"])

    def baseline_embed(self, inputs, token_id: int | None = None) -> torch.Tensor:
        tid = self.config.pad_token_id if token_id is None else token_id
        return self.base.embeddings.word_embeddings(torch.full_like(inputs["input_ids"], tid or 0))

    # ---- relevance forward ----
    def relevance_forward(self, inputs, ops: RelevanceOps):
        """Recompute the classifier with `ops`; returns (embedding output leaf, logits)."""
        emb_kwargs = {"input_ids": inputs["input_ids"]}
        if "token_type_ids" in inputs:
            emb_kwargs["token_type_ids"] = inputs["token_type_ids"]
        hidden = self.base.embeddings(**emb_kwargs).detach().requires_grad_(True)
        leaf = hidden
        mask = inputs["attention_mask"].to(hidden.dtype)
        additive = ((1.0 - mask) * torch.finfo(hidden.dtype).min)[:, None, None, :]
        last = self.num_layers - 1 if self.cls_only_last_block else None
        for b, layer in enumerate(self.layers):
            hidden = ops.probe(hidden, f"block{b}.input")
            hidden = self._layer(ops, layer, hidden, additive, b, cls_only=b == last)
        hidden = ops.probe(hidden, "encoder.output")
        return leaf, self._head(ops, hidden)

    def _layer(self, ops, layer, x, additive, b, cls_only=False):
        """One block; cls_only (the last block): only the [CLS] row, the one the classifier reads. The other rows
        of the last block receive neither gradient nor relevance, so this changes no result and saves about a
        block of work (the attention relevance/gradient of the last block has only its [CLS] row)."""
        att = layer.attention
        mods = AttentionModules(att.self.query, att.self.key, att.self.value, att.output.dense)
        a = self._self_attention(ops, x, mods, additive, b, cls_only=cls_only)
        a = ops.nonlinear(att.output.LayerNorm, ops.add(a, x[:, :1] if cls_only else x))
        h = ops.nonlinear(layer.intermediate.intermediate_act_fn, ops.linear(a, layer.intermediate.dense.weight,
                                                                               layer.intermediate.dense.bias))
        h = ops.linear(h, layer.output.dense.weight, layer.output.dense.bias)
        return ops.nonlinear(layer.output.LayerNorm, ops.add(h, a))

    def _head(self, ops, hidden):
        cls = hidden[:, 0]
        if self.is_roberta:
            head = self.model.classifier
            x = ops.nonlinear(torch.tanh, ops.linear(cls, head.dense.weight, head.dense.bias))
            return ops.linear(x, head.out_proj.weight, head.out_proj.bias)
        pooler = self.base.pooler
        if pooler is None:
            raise UnsupportedModelError("BERT classifier without a pooler is not supported")
        x = ops.nonlinear(torch.tanh, ops.linear(cls, pooler.dense.weight, pooler.dense.bias))
        return ops.linear(x, self.model.classifier.weight, self.model.classifier.bias)


class ViTAdapter(Adapter):
    """ViTForImageClassification: pre-LayerNorm blocks, [CLS] + patch tokens; the patch grid comes from the config."""

    modality = "vision"

    def __init__(self, model):
        super().__init__(model)
        self.base = model.vit
        self.layers = list(getattr(self.base, "layers", None) or self.base.encoder.layer)
        size, patch = self.config.image_size, self.config.patch_size
        size = size if isinstance(size, (tuple, list)) else (size, size)
        patch = patch if isinstance(patch, (tuple, list)) else (patch, patch)
        self.patch = tuple(patch)
        self.grid = (size[0] // patch[0], size[1] // patch[1])
        self.image_size = tuple(size)

    def prepare(self, inputs) -> dict:
        pixels = inputs["pixel_values"] if hasattr(inputs, "keys") else inputs
        pixels = torch.as_tensor(pixels, device=self.device)
        if pixels.dim() == 3:
            pixels = pixels.unsqueeze(0)
        if pixels.numel() == 0:
            raise ExplainInputError("empty input: the batch has no images")
        if pixels.dim() != 4 or tuple(pixels.shape[-2:]) != self.image_size:
            raise ExplainInputError(
                f"pixel_values must have shape [batch, {self.config.num_channels}, {self.image_size[0]}, "
                f"{self.image_size[1]}], got {list(pixels.shape)}"
            )
        return {"pixel_values": pixels.to(self.dtype)}

    def truncate(self, inputs, max_len=None):
        return inputs

    def valid_mask(self, inputs):
        b = inputs["pixel_values"].shape[0]
        return torch.ones(b, 1 + self.grid[0] * self.grid[1], dtype=torch.bool, device=self.device)

    def special_mask(self, inputs):
        m = torch.zeros_like(self.valid_mask(inputs))
        m[:, 0] = True
        return m

    def forward(self, inputs, embeds=None, attentions=False, hidden_states=False):
        pixels = inputs["pixel_values"] if embeds is None else embeds
        with (eager_attention(self.model) if attentions else contextlib.nullcontext()):
            return self.model(pixel_values=pixels, output_attentions=attentions, output_hidden_states=hidden_states)

    def embed(self, inputs):
        return inputs["pixel_values"]

    def baseline_embed(self, inputs, token_id=None):
        return torch.zeros_like(inputs["pixel_values"])

    def relevance_forward(self, inputs, ops: RelevanceOps, return_pixels: bool = False):
        pixels = inputs["pixel_values"].detach().requires_grad_(True)
        emb = self.base.embeddings
        conv = emb.patch_embeddings.projection
        patches = F.unfold(pixels, kernel_size=self.patch, stride=self.patch).transpose(1, 2)  # [B, N, C*p*p]
        tokens = ops.linear(patches, conv.weight.reshape(conv.out_channels, -1), conv.bias, first=True)
        cls = emb.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        hidden = torch.cat([cls, tokens], dim=1)
        hidden = ops.add(hidden, emb.position_embeddings.expand_as(hidden).to(hidden.dtype))
        leaf = hidden
        last = self.num_layers - 1 if self.cls_only_last_block else None
        for b, layer in enumerate(self.layers):
            hidden = ops.probe(hidden, f"block{b}.input")
            hidden = self._layer(ops, layer, hidden, b, cls_only=b == last)
        hidden = ops.probe(hidden, "encoder.output")
        hidden = ops.nonlinear(self.base.layernorm, hidden)
        logits = ops.linear(hidden[:, 0], self.model.classifier.weight, self.model.classifier.bias)
        return (leaf, pixels, logits) if return_pixels else (leaf, logits)

    def _layer(self, ops, layer, x, b, cls_only=False):
        """One pre-LN block; cls_only as in BertAdapter._layer."""
        att = layer.attention
        if hasattr(att, "q_proj"):
            mods = AttentionModules(att.q_proj, att.k_proj, att.v_proj, att.o_proj)
        else:  # transformers 4 layout
            mods = AttentionModules(att.attention.query, att.attention.key, att.attention.value, att.output.dense)
        h = ops.nonlinear(layer.layernorm_before, x)
        x = ops.add(self._self_attention(ops, h, mods, None, b, cls_only=cls_only), x[:, :1] if cls_only else x)
        h = ops.nonlinear(layer.layernorm_after, x)
        mlp = getattr(layer, "mlp", None)
        if mlp is not None:
            fc1, act, fc2 = mlp.fc1, mlp.activation_fn, mlp.fc2
        else:  # transformers 4 layout
            fc1, act, fc2 = layer.intermediate.dense, layer.intermediate.intermediate_act_fn, layer.output.dense
        h = ops.nonlinear(act, ops.linear(h, fc1.weight, fc1.bias))
        h = ops.linear(h, fc2.weight, fc2.bias)
        return ops.add(h, x)


# ---- training: only what the classification loss reads ---------------------------------------------------


def _reads_only_cls(model: nn.Module) -> bool:
    """BERT/RoBERTa sequence classifiers: the head reads the last block's [CLS] row and nothing else."""
    return type(model).__name__ in ("BertForSequenceClassification", "RobertaForSequenceClassification") and \
        hasattr(model.base_model.encoder.layer[-1].attention, "self")


def _cls_only_layer_forward(layer: nn.Module):
    """The forward of a post-LN BERT block computing only its [CLS] output row: keys and values from every
    token, the query, attention output and feed-forward for [CLS] only, with the block's own modules (and their
    dropout in train mode). Same function as the block's forward restricted to row 0."""
    attention = layer.attention.self

    def forward(hidden_states, attention_mask=None, *args, **kwargs):
        batch = hidden_states.shape[0]
        shape = (batch, -1, attention.num_attention_heads, attention.attention_head_size)
        query = attention.query(hidden_states[:, :1]).view(shape).transpose(1, 2)
        key = attention.key(hidden_states).view(shape).transpose(1, 2)
        value = attention.value(hidden_states).view(shape).transpose(1, 2)
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = attention_mask[:, :, :1, :]
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=attention.scaling,
            dropout_p=attention.dropout.p if attention.training else 0.0)
        context = context.transpose(1, 2).reshape(batch, 1, -1)
        attended = layer.attention.output(context, hidden_states[:, :1])
        return layer.output(layer.intermediate(attended), attended)

    return forward


@contextlib.contextmanager
def cls_only_last_layer(model: nn.Module):
    """While active, the last encoder block of a BERT/RoBERTa classifier computes only its [CLS] row, the only
    one the classification head reads: the same logits, loss and gradients for about one block less work (the
    encoder's last_hidden_state then has one position). Instance-scoped and undone on exit, also on error;
    a no-op for other models."""
    if not _reads_only_cls(model):
        yield model
        return
    layer = model.base_model.encoder.layer[-1]
    layer.forward = _cls_only_layer_forward(layer)
    try:
        yield model
    finally:
        del layer.forward


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for a supported model, or one clear error."""
    base = getattr(model, "base_model", None)
    if hasattr(model, "vit") and hasattr(model, "classifier"):
        return ViTAdapter(model)
    if base is not None and hasattr(base, "encoder") and hasattr(base.encoder, "layer") and hasattr(model, "classifier"):
        layer = base.encoder.layer[0]
        if hasattr(layer, "attention") and hasattr(layer.attention, "self"):
            return BertAdapter(model)
    raise UnsupportedModelError(
        f"{type(model).__name__} is not supported: lab explains BERT-family sequence classifiers "
        "(BertForSequenceClassification, RobertaForSequenceClassification, MiniLM) and ViTForImageClassification"
    )


def grid_shape(adapter: Adapter, n_tokens: int) -> tuple[int, int]:
    if isinstance(adapter, ViTAdapter):
        return adapter.grid
    side = int(math.isqrt(n_tokens))
    return side, n_tokens // max(side, 1)
