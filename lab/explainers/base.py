"""The Explanation record, the explainer registry and `explain()`, the one entry point."""
from __future__ import annotations

import contextlib
import inspect
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from numbers import Real
from typing import Callable

import torch
from torch import nn

from lab.explainers.common import NonFiniteError
from lab.errors import ExplainInputError
from lab.models.adapters import ARCHITECTURES, Adapter, ViTAdapter, get_adapter


class ExplainerError(RuntimeError):
    pass


class Predictions:
    """Shared by `Explanation` and `batch.ExplanationSet`: views of `logits` [N, C] and the length of `scores`."""

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def probabilities(self) -> torch.Tensor:
        return self.logits.softmax(-1)

    @property
    def predicted(self) -> torch.Tensor:
        return self.logits.argmax(-1)


@dataclass
class Explanation(Predictions):
    """Scores per token ([batch, seq]; text and ViT patches incl. [CLS]) or per pixel ([batch, H, W]).

    `valid` marks real (non-padding) positions and `special` the special tokens ([CLS], [SEP], padding);
    `delta` is the conservation delta (sum of input relevance minus the target's initial relevance) where the
    method defines one.
    """

    method: str
    scores: torch.Tensor
    target: torch.Tensor
    logits: torch.Tensor
    params: dict
    valid: torch.Tensor
    special: torch.Tensor
    tokens: list[list[str]] | None = None
    delta: torch.Tensor | None = None
    unit: str = "token"  # token | patch | pixel
    grid: tuple[int, int] | None = None
    extras: dict = field(default_factory=dict)


    def example(self, i: int, content_only: bool = False) -> tuple[list[str] | None, torch.Tensor]:
        """(tokens, scores) of example i without padding (and without special tokens if content_only)."""
        keep = self.valid[i] & ~self.special[i] if content_only else self.valid[i]
        scores = self.scores[i][keep]
        tokens = None
        if self.tokens is not None:
            tokens = [t for t, k in zip(self.tokens[i], keep.tolist()) if k]
        return tokens, scores

    def patch_map(self, i: int | None = None) -> torch.Tensor:
        """Patch scores as a [batch, gh, gw] (or [gh, gw]) grid, [CLS] dropped (Chefer Sec. 3.4)."""
        if self.unit == "pixel":
            maps = self.scores
        else:
            if self.grid is None:
                raise ExplainerError(f"{self.method}: no patch grid for a text explanation")
            maps = self.scores[:, -self.grid[0] * self.grid[1]:].reshape(-1, *self.grid)  # after [CLS] (DeiT: +1)
        return maps if i is None else maps[i]


@dataclass(frozen=True)
class ExplainerSpec:
    name: str
    fn: Callable
    description: str
    reference: str
    modalities: tuple[str, ...] = ("text", "vision")
    class_specific: bool = True
    # own_forward: the explainer runs the model itself, returns its "logits", and takes target=None as "the
    # predicted class" (common.resolve_target), so explain() needs no extra forward pass to find the target
    own_forward: bool = False
    # readouts: where the model reads its prediction that the method handles (`Adapter.readout`): methods built on
    # the [CLS] row of attention maps handle "first" only; input attributions any
    readouts: tuple[str, ...] = ("first",)
    # model_classes: when not empty, the Hugging Face model classes the method is limited to (e.g. it needs a BERT
    # pooler); checked on the model's class name
    model_classes: tuple[str, ...] = ()


ANY_READOUT = ("first", "first_two", "last")
EXPLAINERS: dict[str, ExplainerSpec] = {}


def register(name: str, description: str, reference: str, modalities=("text", "vision"), class_specific=True,
             own_forward=False, readouts=("first",), model_classes=()):
    """Decorator: fn(adapter, inputs, target, **params) -> dict(scores=..., [delta=...], [unit=...], [extras=...],
    [logits=...]); own_forward=True: fn accepts target=None (the predicted class) and returns "logits";
    readouts: the `Adapter.readout`s the method handles (ANY_READOUT when it does not read a token row)."""

    def wrap(fn):
        if name in EXPLAINERS:
            raise ValueError(f"explainer {name!r} registered twice")
        EXPLAINERS[name] = ExplainerSpec(name, fn, description, reference, tuple(modalities), class_specific,
                                         own_forward, tuple(readouts), tuple(model_classes))
        return fn

    return wrap


def describe_explainers() -> str:
    return "\n".join(f"{s.name:22s} {s.description} [{s.reference}]" for s in EXPLAINERS.values())


def applies(spec: ExplainerSpec, adapter: Adapter | type, classes: tuple[str, ...] | None = None) -> str | None:
    """None when `spec` applies to the adapter (an instance, or an adapter class with the model `classes` it
    serves), else the reason why not."""
    if classes is None and isinstance(adapter, Adapter):
        classes = tuple(c.__name__ for c in type(adapter.model).__mro__)  # a subclass counts as its parent
    if spec.model_classes and classes is not None and not set(classes) & set(spec.model_classes):
        return f"explainer {spec.name!r} applies to {', '.join(spec.model_classes)} only, got {classes[0]}"
    if adapter.modality not in spec.modalities:
        return f"explainer {spec.name!r} does not apply to {adapter.modality} models"
    if adapter.readout not in spec.readouts:
        where = {"last": "at the last token (a causal LM's next-token prediction)",
                 "first_two": "from two tokens ([CLS] and DeiT's distillation token)"}.get(adapter.readout, "")
        return (f"explainer {spec.name!r} reads the attention row of [CLS]; this model predicts {where}: use one of "
                + ", ".join(s.name for s in EXPLAINERS.values() if adapter.readout in s.readouts))
    return None


def support_table() -> str:
    """Which explainer applies to which architecture (`lab.models.adapters.ARCHITECTURES`), from `applies`."""
    names = [a.name for a in ARCHITECTURES]
    width = max(map(len, EXPLAINERS))
    lines = [" " * width + "  " + "  ".join(names)]
    for spec in EXPLAINERS.values():
        marks = ["yes" if applies(spec, a.adapter, a.classes) is None else "-" for a in ARCHITECTURES]
        lines.append((f"{spec.name:{width}s}  " + "  ".join(m.center(len(n)) for m, n in zip(marks, names))).rstrip())
    return "\n".join(lines)


# ---- model state guard -------------------------------------------------------------------------------


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")
# transformers 5 lazily installs (inactive) output-capturing hooks the first time attentions are requested
_HF_HOOK_FLAG = "_output_capturing_hooks_installed"
_MISSING = object()


def _hook_state(model: nn.Module):
    return [(tuple(tuple(getattr(m, d, {})) for d in _HOOK_DICTS), "forward" in m.__dict__,
             m.__dict__.get(_HF_HOOK_FLAG, _MISSING)) for m in model.modules()]


def _remove_new_hooks(model: nn.Module, before) -> None:
    """Remove hooks added since `before` (a _hook_state), including transformers' output-capturing hooks."""
    for m, (dicts, _, flag) in zip(model.modules(), before):
        for name, keys in zip(_HOOK_DICTS, dicts):
            hooks = getattr(m, name, None)
            if hooks is not None:
                for key in set(hooks) - set(keys):
                    del hooks[key]
        if flag is _MISSING:
            m.__dict__.pop(_HF_HOOK_FLAG, None)
        else:
            m.__dict__[_HF_HOOK_FLAG] = flag


@contextlib.contextmanager
def model_guard(model: nn.Module):
    """Run an explainer in eval mode and leave the model exactly as found (mode, requires_grad, .grad, attention
    implementation, hooks), also when the explainer raises."""
    training = model.training
    requires = [p.requires_grad for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]
    attn = getattr(model.config, "_attn_implementation", None)
    hooks = _hook_state(model)
    model.eval()
    try:
        yield
    finally:
        model.train(training)
        for p, r, g in zip(model.parameters(), requires, grads):
            p.requires_grad_(r)
            p.grad = g
        if attn is not None and getattr(model.config, "_attn_implementation", None) != attn:
            model.set_attn_implementation(attn)
        _remove_new_hooks(model, hooks)
        if _hook_state(model) != hooks:  # pragma: no cover - would be a bug in an explainer
            raise ExplainerError("an explainer left patched forwards on the model")


# ---- explain() ----------------------------------------------------------------------------------------


_SIMPLE_TYPES = (bool, int, float, str, type(None))


def _accepted_types(fn, name: str, default) -> tuple[type, ...] | None:
    """The simple types (bool, int, float, str, None) parameter `name` of `fn` takes, from its annotation (else
    its default); None when the parameter takes something richer (a tensor, a model), which is not checked here."""
    hint = typing.get_type_hints(fn).get(name)
    if hint is None:
        return None if default is None else (type(default),)
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return kinds if all(k in _SIMPLE_TYPES for k in kinds) else None


def _as_type(value, kinds: tuple[type, ...]):
    """`value` as one of `kinds`, or _MISSING: ints take integral floats (1.0 -> 1), floats take any real number,
    bools only bools (True is not a number here)."""
    if isinstance(value, bool) or value is None:
        return value if type(value) in kinds else _MISSING
    if int in kinds and isinstance(value, Real) and float(value).is_integer():
        return int(value)
    if float in kinds and isinstance(value, Real):
        return value
    return value if str in kinds and isinstance(value, str) else _MISSING


def _check_params(spec: ExplainerSpec, params: dict) -> dict:
    """The method parameters with names and simple types checked against the explainer's signature."""
    accepted = dict(list(inspect.signature(spec.fn).parameters.items())[3:])  # after (adapter, inputs, target)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        names = ", ".join(f"{n}={p.default!r}" for n, p in accepted.items()) or "no parameters"
        raise ExplainInputError(f"explainer {spec.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                                f"it accepts: {names}")
    checked = dict(params)
    for name, value in params.items():
        kinds = _accepted_types(spec.fn, name, accepted[name].default)
        if kinds is None:
            continue
        checked[name] = _as_type(value, kinds)
        if checked[name] is _MISSING:
            wanted = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
            raise ExplainInputError(f"explainer {spec.name!r}: parameter {name!r} must be {wanted}, got {value!r} "
                                    f"({type(value).__name__})")
    return checked


def _class_index(value, id2label: dict) -> int:
    """One target entry as a class index: an int, an integral float (1.0), or a label name of config.id2label."""
    if isinstance(value, str):
        by_name = {str(name).lower(): int(i) for i, name in (id2label or {}).items()}
        if value.lower() in by_name:
            return by_name[value.lower()]
        if not by_name or all(re.fullmatch(r"label_\d+", n) for n in by_name):
            raise ExplainInputError(f"target {value!r}: the model has no label names (config.id2label); "
                                    "pass a class index")
        raise ExplainInputError(f"target {value!r} is not a label of the model; labels: "
                                + ", ".join(f"{i}={n!r}" for i, n in sorted(id2label.items())))
    index = _as_type(value.item() if hasattr(value, "item") else value, (int,))
    if index is _MISSING:
        raise ExplainInputError(f"target {value!r} ({type(value).__name__}) is not a class index: pass an int, a "
                                "label name, a list of them (one per example), or None for the predicted class")
    return index


def _check_target(target, batch: int, n_classes: int, id2label: dict | None = None) -> torch.Tensor | None:
    """The given target as a [batch] long tensor (None stays None: the predicted class)."""
    if target is None:
        return None
    entries = target.reshape(-1).tolist() if hasattr(target, "tolist") else target  # tensors, numpy arrays
    if isinstance(entries, (str, bytes)) or not hasattr(entries, "__iter__"):
        entries = [entries]
    target = torch.tensor([_class_index(v, id2label) for v in entries], dtype=torch.long)
    if target.numel() == 1 and batch > 1:
        target = target.expand(batch)
    if target.numel() != batch:
        raise ExplainInputError(f"target has {target.numel()} entries for a batch of {batch}")
    if (target < 0).any() or (target >= n_classes).any():
        raise ExplainInputError(f"target {target.tolist()} out of range: the model has {n_classes} classes (0..{n_classes - 1})")
    return target


def _check_tokens(adapter: Adapter, prepared: dict) -> None:
    """Text inputs: token ids inside the vocabulary, and every row with at least one content token."""
    if adapter.modality != "text":
        return
    ids, vocab = prepared["input_ids"], adapter.config.vocab_size
    bad = ids[(ids < 0) | (ids >= vocab)]
    if bad.numel():
        raise ExplainInputError(f"input_ids {sorted(set(bad.tolist()))[:5]} outside the vocabulary (0..{vocab - 1}); "
                                "tokenize with the model's own tokenizer")
    empty = (~(adapter.valid_mask(prepared) & ~adapter.special_mask(prepared))).all(-1).nonzero().flatten()
    if empty.numel():
        raise ExplainInputError(f"input_ids row(s) {empty.tolist()} hold only special tokens or padding: nothing "
                                "to explain; every example needs at least one content token")


def _tokens(inputs, tokenizer):
    if tokenizer is None:
        return None
    return [tokenizer.convert_ids_to_tokens(row.tolist()) for row in inputs["input_ids"]]


def explain(model: nn.Module, inputs, method: str, target=None, *, tokenizer=None, truncate: bool = True,
            **params) -> Explanation:
    """Explain `model`'s prediction(s) on a batch with the registered `method`.

    inputs: a tokenizer output (text) or pixel values / an image-processor output (vision).
    target: class index or label name (`config.id2label`, case-insensitive) per example, or one for all; an
    integral float (1.0) counts as its int, any other float is an error; default the predicted class.
    params: method parameters (see `lab.EXPLAINERS[method].fn`), checked against its signature (names, and the
    types bool/int/float/str of its annotations); all are recorded in the Explanation.
    Bad input raises ExplainInputError naming the parameter, before any model work.
    """
    if method not in EXPLAINERS:
        raise ExplainInputError(f"unknown explainer {method!r}; available: {', '.join(EXPLAINERS)}")
    spec = EXPLAINERS[method]
    adapter = get_adapter(model, tokenizer)
    reason = applies(spec, adapter)
    if reason:
        raise ExplainInputError(reason)
    params = _check_params(spec, params)
    try:
        prepared = adapter.prepare(inputs)
    except ExplainInputError as exc:
        if truncate and "exceeds the model's maximum" in str(exc):
            warnings.warn(f"{exc}; truncating", stacklevel=2)
            prepared = adapter.prepare(adapter.truncate({k: torch.as_tensor(v) for k, v in inputs.items()}))
        else:
            raise
    _check_tokens(adapter, prepared)
    valid, special = adapter.valid_mask(prepared), adapter.special_mask(prepared)
    tgt = _check_target(target, valid.shape[0], adapter.num_labels, getattr(adapter.config, "id2label", None))
    if tgt is not None:
        tgt = tgt.to(adapter.device)
    with model_guard(model):
        logits = None
        if not spec.own_forward:  # the explainer needs the target before its own passes
            with torch.no_grad():
                logits = adapter.forward(prepared).logits
            tgt = logits.argmax(-1) if tgt is None else tgt
        try:
            out = spec.fn(adapter, prepared, tgt, **params)
        except NonFiniteError as exc:
            raise ExplainerError(f"explainer {method!r} produced NaN/inf in {exc}; check the model's weights and "
                                 "inputs, or run in float64") from None
        if logits is None:  # logits of the explainer's own forward; target=None resolved from them the same way
            logits = out["logits"].detach()
            tgt = logits.argmax(-1) if tgt is None else tgt
    scores = out["scores"]
    if not torch.isfinite(scores).all():
        where = out.get("where", "the final scores")
        raise ExplainerError(f"explainer {method!r} produced NaN/inf in {where}; try float64 or another parameter")
    if scores.shape == valid.shape:
        scores = scores.masked_fill(~valid, 0.0)
    unit = out.get("unit", "patch" if isinstance(adapter, ViTAdapter) else "token")
    return Explanation(
        method=method, scores=scores.detach(), target=tgt, logits=logits.detach(), params=dict(out.get("params", params)),
        valid=valid, special=special, tokens=_tokens(prepared, tokenizer) if adapter.modality == "text" else None,
        delta=out.get("delta"), unit=unit, grid=getattr(adapter, "grid", None), extras=out.get("extras", {}),
    )


def explain_text(model: nn.Module, tokenizer, texts, method: str, target=None, *, text_pairs=None,
                 max_length: int = 512, **params) -> Explanation:
    """`explain` on raw text: tokenises (padding, truncation to max_length, with a warning naming the lengths when
    it cuts) and keeps the tokens."""
    if isinstance(texts, str):
        texts = [texts]
        text_pairs = [text_pairs] if isinstance(text_pairs, str) else text_pairs
    if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
        raise ExplainInputError(f"texts must be a str or a list of str, got {type(texts).__name__}")
    if not texts or any(not t.strip() for t in texts):
        raise ExplainInputError("empty input: every text must contain at least one non-space character")
    full = [len(ids) for ids in tokenizer(list(texts), text_pairs, verbose=False)["input_ids"]]
    if max(full) > max_length:
        warnings.warn(f"sequence length {max(full)} (text {full.index(max(full))}) exceeds max_length={max_length}; "
                      "truncating (pass a larger max_length, up to the model's maximum)", stacklevel=2)
    inputs = tokenizer(list(texts), text_pairs, padding=True, truncation=True, max_length=max_length,
                       return_tensors="pt")
    return explain(model, inputs, method, target, tokenizer=tokenizer, **params)
