"""The only module that knows the inside of Hugging Face models.

An adapter gives explainers one view of a supported model: its inputs, a plain forward with attention weights, the
input embedding to attribute to, and a *relevance forward* that recomputes the model with the module's own
weights, written in `RelevanceOps` so that a backward pass propagates relevance (tests check it reproduces the HF
outputs). Supported (`ARCHITECTURES`): BERT-family sequence classifiers (BERT, MiniLM, RoBERTa, ELECTRA,
DistilBERT), ViT and DeiT image classifiers, and GPT-2- and Llama-shaped causal LMs, which are explained at their
next-token prediction (the logits at the last real token; the "classes" are the vocabulary).
Families differ only by data: a `Layout` names each one's Hugging Face modules.
Nothing here modifies the model; `eager_attention` switches the attention implementation and always restores it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lab.errors import ExplainInputError, UnsupportedModelError  # noqa: F401  (re-exported)
from lab.models.tokens import special_token_ids
from lab.relevance.composites import GRADIENT
from lab.relevance.propagate import RelevanceOps


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


# ---- families as data ------------------------------------------------------------------------------------


class Proj(NamedTuple):
    """A linear map y = x W^T + b (unpacks as ops.linear's weight, bias)."""

    weight: torch.Tensor
    bias: torch.Tensor | None


def _proj(module: nn.Module) -> Proj:
    """nn.Linear, or GPT-2's Conv1D (y = x W + b with W stored [in, out])."""
    if type(module).__name__ == "Conv1D":
        return Proj(module.weight.t(), module.bias)
    return Proj(module.weight, module.bias)


def _get(obj, path: str):
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


@dataclass(frozen=True)
class Layout:
    """Where one family keeps its modules: dotted attribute paths, relative to a block unless said otherwise."""

    layers: str  # relative to the base model
    query: str  # with key and value: separate projections; or qkv: one fused projection split in three (GPT-2)
    key: str
    value: str
    output: str
    norm1: str  # LayerNorm/RMSNorm before (pre_norm) or after (post-LN) the attention
    norm2: str  # the same for the MLP
    fc1: str
    act: str
    fc2: str
    pre_norm: bool
    gate: str | None = None  # gated MLP (Llama): fc2(act(gate(x)) * fc1(x))
    qkv: str | None = None
    final_norm: str | None = None  # relative to the base model


BERT_LAYOUT = Layout("encoder.layer", "attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense", "attention.output.LayerNorm", "output.LayerNorm", "intermediate.dense",
                     "intermediate.intermediate_act_fn", "output.dense", pre_norm=False)
DISTILBERT_LAYOUT = Layout("transformer.layer", "attention.q_lin", "attention.k_lin", "attention.v_lin",
                           "attention.out_lin", "sa_layer_norm", "output_layer_norm", "ffn.lin1", "ffn.activation",
                           "ffn.lin2", pre_norm=False)
VIT_LAYOUT = Layout("layers", "attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj",
                    "layernorm_before", "layernorm_after", "mlp.fc1", "mlp.activation_fn", "mlp.fc2", pre_norm=True,
                    final_norm="layernorm")
GPT2_LAYOUT = Layout("h", "", "", "", "attn.c_proj", "ln_1", "ln_2", "mlp.c_fc", "mlp.act", "mlp.c_proj",
                     pre_norm=True, qkv="attn.c_attn", final_norm="ln_f")
LLAMA_LAYOUT = Layout("layers", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                      "input_layernorm", "post_attention_layernorm", "mlp.up_proj", "mlp.act_fn", "mlp.down_proj",
                      pre_norm=True, gate="mlp.gate_proj", final_norm="norm")

# ---- the shared adapter ----------------------------------------------------------------------------------


class Adapter:
    """One supported model. Subclasses set `layout` and the readout: "first" (the head reads the first token,
    [CLS]), "first_two" (DeiT with teacher: the mean of the [CLS] and distillation heads) or "last" (a causal LM's
    next-token prediction at the last real token)."""

    modality: str = "text"
    readout: str = "first"
    layout: Layout
    # relevance forward: compute only the readout rows of the last block (exact, cheaper; False for checks)
    cls_only_last_block: bool = True

    def __init__(self, model: nn.Module, base: nn.Module, layout: Layout | None = None, tokenizer=None):
        self.model = model
        self.config = model.config
        # special tokens: the config's and the tokenizer's (when explain() is given the one that made the inputs)
        self.token_ids = special_token_ids(self.config, tokenizer)  # {"pad": id, "unk": ..., "mask": ...}
        self.special_ids = frozenset(special_token_ids(self.config).values()) | frozenset(self.token_ids.values())
        self.base = base
        self.layout = layout or self.layout
        self.layers = list(_get(base, self.layout.layers))
        self.num_layers = len(self.layers)
        self.num_heads = self.config.num_attention_heads
        self.num_kv_heads = getattr(self.config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(self.config, "head_dim", None) or self.config.hidden_size // self.num_heads
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
    def _attention_modules(self, layer) -> tuple[Proj, Proj, Proj, Proj, float]:
        """(query, key, value, output projections, score scaling) of one block."""
        lay = self.layout
        if lay.qkv is not None:
            fused = _proj(_get(layer, lay.qkv))
            q, k, v = (Proj(w, b) for w, b in zip(fused.weight.chunk(3), fused.bias.chunk(3)))
            module = _get(layer, lay.qkv.rsplit(".", 1)[0])
        else:
            q, k, v = (_proj(_get(layer, p)) for p in (lay.query, lay.key, lay.value))
            module = _get(layer, lay.query.rsplit(".", 1)[0])
        return q, k, v, _proj(_get(layer, lay.output)), getattr(module, "scaling", self.scaling)

    def _self_attention(self, ops: RelevanceOps, x, layer, additive_mask, block: int, rows: int | None = None,
                        rotary=None):
        """Self-attention with `ops`; rows: only the first `rows` query rows (keys and values from every token);
        rotary: (cos, sin) [B, S, head_dim] of rotary position embeddings."""
        q_mod, k_mod, v_mod, o_mod, scale = self._attention_modules(layer)
        batch = x.shape[0]

        def heads(t, n):
            return t.view(batch, t.shape[1], n, self.head_dim).transpose(1, 2)

        q = heads(ops.linear(x if rows is None else x[:, :rows], *q_mod), self.num_heads)
        k = heads(ops.linear(x, *k_mod), self.num_kv_heads)
        v = heads(ops.linear(x, *v_mod), self.num_kv_heads)
        if rotary is not None:
            q, k = _rotate(ops, q, *rotary), _rotate(ops, k, *rotary)
        if self.num_kv_heads != self.num_heads:  # grouped-query attention: each key/value head serves a group
            k, v = (t.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1) for t in (k, v))
        scores = ops.matmul(q, k.transpose(2, 3))
        if additive_mask is None:
            scores = ops.nonlinear(lambda s: s * scale, scores)
        else:
            mask = additive_mask[..., :scores.shape[-2], :]
            scores = ops.nonlinear(lambda s: s * scale + mask, scores)
        probs = ops.softmax(scores)
        context = ops.matmul(probs, v, attention_block=block)  # Chefer Eq. 14: O = A V
        context = context.transpose(1, 2).reshape(batch, q.shape[2], -1)
        return ops.linear(context, *o_mod)

    def _mlp(self, ops, layer, h):
        lay = self.layout
        up = ops.linear(h, *_proj(_get(layer, lay.fc1)))
        act = _get(layer, lay.act)
        if lay.gate is None:
            h = ops.nonlinear(act, up)
        else:
            h = _product(ops, ops.nonlinear(act, ops.linear(h, *_proj(_get(layer, lay.gate)))), up)
        return ops.linear(h, *_proj(_get(layer, lay.fc2)))

    def _block(self, ops, layer, x, additive, b, rows=None, rotary=None):
        """One block, pre- or post-LN; rows as in `_self_attention` (the residual keeps the same rows)."""
        lay = self.layout
        norm1, norm2 = _get(layer, lay.norm1), _get(layer, lay.norm2)
        kept = x if rows is None else x[:, :rows]
        if lay.pre_norm:
            x = ops.add(self._self_attention(ops, ops.nonlinear(norm1, x), layer, additive, b, rows, rotary), kept)
            return ops.add(self._mlp(ops, layer, ops.nonlinear(norm2, x)), x)
        a = ops.nonlinear(norm1, ops.add(self._self_attention(ops, x, layer, additive, b, rows), kept))
        return ops.nonlinear(norm2, ops.add(self._mlp(ops, layer, a), a))

    def _blocks(self, ops, hidden, additive, rows_last: int | None = None, rotary=None):
        """Every block with probes at its input; rows_last: only that many rows in the last block."""
        last = self.num_layers - 1 if self.cls_only_last_block and rows_last else None
        for b, layer in enumerate(self.layers):
            hidden = ops.probe(hidden, f"block{b}.input")
            hidden = self._block(ops, layer, hidden, additive, b, rows_last if b == last else None, rotary)
        return ops.probe(hidden, "encoder.output")

    def _head(self, ops, x, steps: list[tuple[Proj, Callable | None]]):
        for proj, act in steps:
            x = ops.linear(x, *proj)
            x = x if act is None else ops.nonlinear(act, x)
        return x

    def head_modules(self) -> list[nn.Module]:
        """The modules after the last block, in this order: the classifier, the pooler, the final norm (those the
        model has)."""
        found = (getattr(self.model, "classifier", None), getattr(self.base, "pooler", None),
                 getattr(self.base, "layernorm", None))
        return [module for module in found if module is not None]

    def attention_readout(self, block_input: torch.Tensor):
        """The last block split where attention mixes the values (Jain & Wallace swap in other rows): (values
        [B, H, T, d] of the block input [B, T, D], finish(context, residual) -> block output, the rest of the block
        as a plain forward, post- or pre-LN as the layout says)."""
        layer, lay, ops = self.layers[-1], self.layout, RelevanceOps(GRADIENT)
        if self.num_kv_heads != self.num_heads:
            raise UnsupportedModelError("attention_readout: grouped-query attention is not supported")
        _, _, value, output, _ = self._attention_modules(layer)
        norm1, norm2 = _get(layer, lay.norm1), _get(layer, lay.norm2)
        x = norm1(block_input) if lay.pre_norm else block_input
        batch, seq = x.shape[:2]
        values = F.linear(x, *value).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)

        def finish(context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
            a = F.linear(context, *output) + residual
            if lay.pre_norm:
                return a + self._mlp(ops, layer, norm2(a))
            a = norm1(a)
            return norm2(self._mlp(ops, layer, a) + a)

        return values, finish


def _rotate(ops, t, cos, sin):
    """Rotary embedding t cos + rotate_half(t) sin as a sum of two element-wise scalings, the second of the half-
    swapped t: rotate_half(t) sin = swap(t) * [-sin_1, sin_2], so relevance follows each term (z-rule on the add)."""
    cos, sin = cos[:, None, :t.shape[2]], sin[:, None, :t.shape[2]]
    half = t.shape[-1] // 2
    signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    swapped = torch.cat([t[..., half:], t[..., :half]], dim=-1)
    return ops.add(ops.nonlinear(lambda u: u * cos, t), ops.nonlinear(lambda u: u * signed, swapped))


def _product(ops, a, b):
    """Element-wise a * b as a product of 1x1 matrices, so the matmul rule of the composite applies (AttnLRP's
    uniform rule under "halve"; CP-LRP's "first_constant" holds the gate `a` constant, like attention weights)."""
    return ops.matmul(a[..., None, None], b[..., None, None])[..., 0, 0]


# ---- text classifiers: BERT, MiniLM, RoBERTa, ELECTRA, DistilBERT ------------------------------------------


class BertAdapter(Adapter):
    """BERT-family sequence classifiers (BERT, MiniLM, RoBERTa, ELECTRA, DistilBERT): post-LN blocks, a head on
    the first token."""

    def __init__(self, model, tokenizer=None):
        base = model.base_model
        super().__init__(model, base, DISTILBERT_LAYOUT if hasattr(base, "transformer") else BERT_LAYOUT, tokenizer)
        self.is_roberta = not hasattr(model, "bert") and hasattr(model, "roberta")
        self.position_offset = 2 if self.is_roberta else 0  # RoBERTa positions start after padding_idx
        self.uses_token_types = hasattr(base.embeddings, "token_type_embeddings") and not self.is_roberta
        project = getattr(base, "embeddings_project", None)  # ELECTRA: embedding size != hidden size
        self.project = None if project is None else _proj(project)
        self.head_steps = _text_head(model)

    # ---- inputs ----
    def prepare(self, inputs) -> dict:
        ids = _input_ids(inputs, self.device)
        max_len = self.config.max_position_embeddings - self.position_offset
        _check_length(ids, max_len)
        out = {"input_ids": ids, "attention_mask": _attention_mask(inputs, ids, self.device)}
        types = inputs.get("token_type_ids")
        if types is not None and self.uses_token_types:
            out["token_type_ids"] = torch.as_tensor(types, device=self.device).reshape(ids.shape)
        return out

    def truncate(self, inputs: dict, max_len: int | None = None) -> dict:
        max_len = max_len or self.config.max_position_embeddings - self.position_offset
        return {k: v[:, :max_len] for k, v in inputs.items()}

    def valid_mask(self, inputs) -> torch.Tensor:
        return inputs["attention_mask"].bool()

    def special_mask(self, inputs) -> torch.Tensor:
        special = _special(inputs["input_ids"], self.special_ids)
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
        return self.model.get_input_embeddings()(inputs["input_ids"])

    def baseline_embed(self, inputs, token_id: int | None = None) -> torch.Tensor:
        tid = self.config.pad_token_id if token_id is None else token_id
        return self.model.get_input_embeddings()(torch.full_like(inputs["input_ids"], tid or 0))

    # ---- relevance forward ----
    def relevance_forward(self, inputs, ops: RelevanceOps):
        """Recompute the classifier with `ops`; returns (embedding output leaf, logits)."""
        emb_kwargs = {"input_ids": inputs["input_ids"]}
        if "token_type_ids" in inputs:
            emb_kwargs["token_type_ids"] = inputs["token_type_ids"]
        leaf = self.base.embeddings(**emb_kwargs).detach().requires_grad_(True)
        hidden = leaf if self.project is None else ops.linear(leaf, *self.project)
        mask = inputs["attention_mask"].to(hidden.dtype)
        additive = ((1.0 - mask) * torch.finfo(hidden.dtype).min)[:, None, None, :]
        hidden = self._blocks(ops, hidden, additive, rows_last=1)
        return leaf, self._head(ops, hidden[:, 0], self.head_steps)

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from the last block's output [N, T, D] (the head reads position 0): `head_steps` applied with the
        model's own weights, as its eval-mode head computes them (pooler, if any, then classifier)."""
        x = hidden[:, 0]
        for proj, act in self.head_steps:
            x = F.linear(x, *proj)
            x = x if act is None else act(x)
        return x


def _text_head(model) -> list[tuple[Proj, Callable | None]]:
    """The classifier head on the first token's output as (projection, activation) steps."""
    head = model.classifier
    if hasattr(model, "pre_classifier"):  # DistilBERT
        return [(_proj(model.pre_classifier), torch.relu), (_proj(head), None)]
    if hasattr(head, "out_proj"):  # RoBERTa (tanh) and ELECTRA (its own activation) classification heads
        return [(_proj(head.dense), getattr(head, "activation", torch.tanh)), (_proj(head.out_proj), None)]
    pooler = model.base_model.pooler
    if pooler is None:
        raise UnsupportedModelError("BERT classifier without a pooler is not supported")
    return [(_proj(pooler.dense), torch.tanh), (_proj(head), None)]


def _input_ids(inputs, device) -> torch.Tensor:
    if not hasattr(inputs, "keys") or "input_ids" not in inputs:
        raise ExplainInputError("text inputs must be a tokenizer output with 'input_ids' (and 'attention_mask')")
    ids = torch.as_tensor(inputs["input_ids"], device=device)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.numel() == 0 or ids.shape[-1] == 0:
        raise ExplainInputError("empty input: the batch has no tokens")
    return ids


def _attention_mask(inputs, ids, device) -> torch.Tensor:
    mask = inputs.get("attention_mask")
    return torch.ones_like(ids) if mask is None else torch.as_tensor(mask, device=device).reshape(ids.shape)


def _check_length(ids, max_len: int) -> None:
    if ids.shape[1] > max_len:
        raise ExplainInputError(
            f"sequence length {ids.shape[1]} exceeds the model's maximum of {max_len} positions; tokenize with "
            f"truncation=True, max_length={max_len} (or pass truncate=True to explain())"
        )


def _special(ids, special_ids) -> torch.Tensor:
    """Positions holding one of the ids in `special_ids`."""
    return torch.isin(ids, torch.tensor(sorted(special_ids), dtype=ids.dtype, device=ids.device))


# ---- image classifiers: ViT, DeiT ---------------------------------------------------------------------------


class ViTAdapter(Adapter):
    """ViT (and DeiT) image classifiers: pre-LN blocks, prefix tokens ([CLS], DeiT's distillation token) then the
    patch tokens; the patch grid comes from the config."""

    modality = "vision"
    layout = VIT_LAYOUT
    prefix = ("cls_token",)  # embeddings parameters put before the patches, in order

    def __init__(self, model, tokenizer=None):
        super().__init__(model, model.base_model, tokenizer=tokenizer)
        size, patch = self.config.image_size, self.config.patch_size
        size = size if isinstance(size, (tuple, list)) else (size, size)
        patch = patch if isinstance(patch, (tuple, list)) else (patch, patch)
        self.patch = tuple(patch)
        self.grid = (size[0] // patch[0], size[1] // patch[1])
        self.image_size = tuple(size)
        self.head_rows = self._head_rows(model)

    @staticmethod
    def _head_rows(model) -> list[tuple[int, Proj]]:
        """(token row, linear head) pairs whose logits the model averages."""
        return [(0, _proj(model.classifier))]

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
        return torch.ones(b, len(self.prefix) + self.grid[0] * self.grid[1], dtype=torch.bool, device=self.device)

    def special_mask(self, inputs):
        m = torch.zeros_like(self.valid_mask(inputs))
        m[:, :len(self.prefix)] = True
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
        prefix = [getattr(emb, name).expand(tokens.shape[0], -1, -1).to(tokens.dtype) for name in self.prefix]
        hidden = torch.cat([*prefix, tokens], dim=1)
        hidden = ops.add(hidden, emb.position_embeddings.expand_as(hidden).to(hidden.dtype))
        leaf = hidden
        hidden = self._blocks(ops, hidden, None, rows_last=1 + max(row for row, _ in self.head_rows))
        hidden = ops.nonlinear(_get(self.base, self.layout.final_norm), hidden)
        heads = [ops.linear(hidden[:, row], *proj) for row, proj in self.head_rows]
        logits = heads[0] if len(heads) == 1 else ops.nonlinear(lambda t: t / len(heads), ops.add(*heads))
        return (leaf, pixels, logits) if return_pixels else (leaf, logits)


class DeiTAdapter(ViTAdapter):
    """DeiTForImageClassification: a distillation token after [CLS]; the head reads [CLS]."""

    prefix = ("cls_token", "distillation_token")


class DeiTTeacherAdapter(DeiTAdapter):
    """DeiTForImageClassificationWithTeacher: the mean of a head on [CLS] and one on the distillation token."""

    readout = "first_two"

    @staticmethod
    def _head_rows(model):
        return [(0, _proj(model.cls_classifier)), (1, _proj(model.distillation_classifier))]


# ---- causal language models: GPT-2, Llama --------------------------------------------------------------------


class DecoderAdapter(Adapter):
    """GPT-2- and Llama-shaped causal LMs explained at their next-token prediction: `forward(...).logits` and the
    relevance forward give the logits [B, vocab] at the last real token of each row, so a target is a vocabulary id.
    Causal attention. Left-padded inputs are moved to right padding by `prepare` (so the explanation's positions
    are those of the right-padded batch; Hugging Face Llama returns NaN for left padding in fp64), and positions
    count real tokens only, so a batch gives the same result as each row alone. GPT-2: absolute positions, LayerNorm, Conv1D projections;
    Llama: rotary positions, RMSNorm, gated MLP, grouped-query attention."""

    readout = "last"
    cls_only_last_block = False

    def __init__(self, model, tokenizer=None):
        base = model.base_model
        super().__init__(model, base, GPT2_LAYOUT if hasattr(base, "wpe") else LLAMA_LAYOUT, tokenizer)
        self.lm_head = _proj(model.get_output_embeddings())

    @property
    def num_labels(self) -> int:
        return self.config.vocab_size

    def prepare(self, inputs) -> dict:
        ids = _input_ids(inputs, self.device)
        _check_length(ids, self.config.max_position_embeddings)
        mask = _attention_mask(inputs, ids, self.device)
        order = torch.sort((mask == 0).int(), dim=1, stable=True).indices  # real tokens first, in their order
        return {"input_ids": ids.gather(1, order), "attention_mask": mask.gather(1, order)}

    def truncate(self, inputs: dict, max_len: int | None = None) -> dict:
        """Keep the last max_len tokens (the context nearest the prediction)."""
        max_len = max_len or self.config.max_position_embeddings
        return {k: v[:, -max_len:] for k, v in inputs.items()}

    def valid_mask(self, inputs) -> torch.Tensor:
        return inputs["attention_mask"].bool()

    def special_mask(self, inputs) -> torch.Tensor:
        return _special(inputs["input_ids"], self.special_ids) | ~self.valid_mask(inputs)

    def last_position(self, inputs) -> torch.Tensor:
        """Index of each row's last real token (the prediction is read there)."""
        mask = inputs["attention_mask"]
        return (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)

    @staticmethod
    def position_ids(mask: torch.Tensor) -> torch.Tensor:
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    def forward(self, inputs, embeds=None, attentions=False, hidden_states=False):
        mask = inputs["attention_mask"]
        kwargs = {"attention_mask": mask, "position_ids": self.position_ids(mask), "use_cache": False}
        if embeds is None:
            kwargs["input_ids"] = inputs["input_ids"]
        else:
            kwargs["inputs_embeds"] = embeds
        with (eager_attention(self.model) if attentions else contextlib.nullcontext()):
            out = self.model(**kwargs, output_attentions=attentions, output_hidden_states=hidden_states)
        out["logits"] = out.logits[torch.arange(mask.shape[0], device=mask.device), self.last_position(inputs)]
        return out

    def embed(self, inputs) -> torch.Tensor:
        return self.model.get_input_embeddings()(inputs["input_ids"])

    def baseline_embed(self, inputs, token_id: int | None = None) -> torch.Tensor:
        tid = special_token_ids(self.config).get("pad", 0) if token_id is None else token_id
        return self.model.get_input_embeddings()(torch.full_like(inputs["input_ids"], tid))

    def relevance_forward(self, inputs, ops: RelevanceOps):
        """Recompute the next-token logits with `ops`; returns (embedding output leaf, logits [B, vocab])."""
        mask = inputs["attention_mask"]
        positions = self.position_ids(mask)
        hidden = self.embed(inputs)
        wpe = getattr(self.base, "wpe", None)
        if wpe is not None:  # GPT-2: learned absolute positions, added before the blocks
            hidden = hidden + wpe(positions)
        leaf = hidden.detach().requires_grad_(True)
        rotary = None
        if hasattr(self.base, "rotary_emb"):  # Llama: rotary positions, applied to queries and keys
            rotary = tuple(t.to(leaf.dtype) for t in self.base.rotary_emb(leaf, positions))
        seq = mask.shape[1]
        causal = torch.ones(seq, seq, dtype=torch.bool, device=mask.device).tril()
        allowed = causal[None, None] & mask.bool()[:, None, None, :]
        additive = torch.zeros(allowed.shape, dtype=leaf.dtype, device=leaf.device)
        additive = additive.masked_fill(~allowed, torch.finfo(leaf.dtype).min)
        hidden = self._blocks(ops, leaf, additive, rotary=rotary)
        hidden = hidden[torch.arange(mask.shape[0], device=mask.device), self.last_position(inputs)]
        hidden = ops.nonlinear(_get(self.base, self.layout.final_norm), hidden)
        return leaf, ops.linear(hidden, *self.lm_head)


# ---- which adapter for which model --------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    name: str
    classes: tuple[str, ...]  # Hugging Face model classes (a subclass counts as its parent)
    adapter: type


ARCHITECTURES = (
    Architecture("BERT / MiniLM", ("BertForSequenceClassification",), BertAdapter),
    Architecture("RoBERTa", ("RobertaForSequenceClassification", "XLMRobertaForSequenceClassification"), BertAdapter),
    Architecture("ELECTRA", ("ElectraForSequenceClassification",), BertAdapter),
    Architecture("DistilBERT", ("DistilBertForSequenceClassification",), BertAdapter),
    Architecture("ViT", ("ViTForImageClassification",), ViTAdapter),
    Architecture("DeiT", ("DeiTForImageClassification",), DeiTAdapter),
    Architecture("DeiT + teacher", ("DeiTForImageClassificationWithTeacher",), DeiTTeacherAdapter),
    Architecture("GPT-2 (next token)", ("GPT2LMHeadModel",), DecoderAdapter),
    Architecture("Llama (next token)", ("LlamaForCausalLM",), DecoderAdapter),
)


def architecture_of(model: nn.Module) -> Architecture | None:
    names = [cls.__name__ for cls in type(model).__mro__]
    for name in names:
        for arch in ARCHITECTURES:
            if name in arch.classes:
                return arch
    return None


def get_adapter(model: nn.Module, tokenizer=None) -> Adapter:
    """The adapter for a supported model, or one clear error; `tokenizer` (optional): the one that made the inputs,
    whose special tokens are then special too."""
    arch = architecture_of(model)
    if arch is None:
        supported = ", ".join(c for a in ARCHITECTURES for c in a.classes)
        raise UnsupportedModelError(f"{type(model).__name__} is not supported: lab explains {supported}")
    return arch.adapter(model, tokenizer)


# ---- training and language models: module access for BERT-style encoders (classifiers and MLMs) ------------

WORD_EMBEDDINGS_KEY = "embeddings.word_embeddings.weight"  # a BERT-style checkpoint's word-embedding tensor (suffix)


def embedding_module(model: nn.Module) -> nn.Module | None:
    """The input embeddings (word, position, type, LayerNorm) of a BERT-style model; None if it has none."""
    return getattr(model.base_model, "embeddings", None)


def encoder_blocks(model: nn.Module) -> nn.ModuleList | None:
    """The blocks of a BERT-style encoder, bottom first; None for other models (DistilBERT, ViT, decoders)."""
    return getattr(getattr(model.base_model, "encoder", None), "layer", None)


def masked_lm_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits of a BertForMaskedLM's head (transform, then the decoder) at encoder outputs `hidden`."""
    return model.cls(hidden)


@contextlib.contextmanager
def only_blocks(model: nn.Module, blocks: slice):
    """While active, the BERT-style encoder runs `encoder_blocks(model)[blocks]` only."""
    encoder = model.base_model.encoder
    full = encoder.layer
    encoder.layer = nn.ModuleList(list(full)[blocks])
    try:
        yield
    finally:
        encoder.layer = full


def _reads_only_cls(model: nn.Module) -> bool:
    """BERT/RoBERTa sequence classifiers: the head reads the last block's [CLS] row and nothing else."""
    return type(model).__name__ in ("BertForSequenceClassification", "RobertaForSequenceClassification") and \
        hasattr(encoder_blocks(model)[-1].attention, "self")


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
    layer = encoder_blocks(model)[-1]
    layer.forward = _cls_only_layer_forward(layer)
    try:
        yield model
    finally:
        del layer.forward


