"""The one batching loop: `explain_many(model, inputs, method, targets, **params) -> ExplanationSet`.

`lab.explain` explains one batch; `explain_many` explains a whole data set in batches of trimmed rows (text: each
batch is cut to its longest real sequence, so padding never reaches the explainer; optionally the rows are sorted
by length first so that a batch holds sequences of similar length), with a progress bar, and memoises the result
in `lab.cache` (key: weights, inputs, targets, method, parameters, batching and the code digest).

`Examples` holds what a study explains and scores: a classifier, its examples and the predicted class of each
(`text_examples`, `image_examples`); the metric protocols (`lab.metrics.protocols.examples_protocols`) read it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import functools

import torch

from lab import cache
from lab.progress import progress as progress_bar

from .base import ExplainerError, Predictions, explain, get_adapter

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class ExplanationSet(Predictions):
    """Explanations of N examples by one method. Text: ``scores`` [N, S] over the padded inputs (0 on padding),
    ``valid`` / ``special`` [N, S] (padding is special); vision: ``scores`` the native maps [N, h, w] (patch grid or
    pixels) and no masks. ``deltas`` [N] where the method defines a conservation delta; ``seconds`` the compute
    time of each batch (those of the run that computed them when memoised); ``extras`` each batch's row indices and
    its explainer's extras (e.g. costs), whose row indices are local to the batch."""

    method: str
    params: dict
    scores: torch.Tensor
    targets: torch.Tensor
    logits: torch.Tensor
    valid: torch.Tensor | None = None
    special: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None
    tokens: list[list[str]] | None = None
    deltas: torch.Tensor | None = None
    unit: str = "token"
    seconds: list[float] = field(default_factory=list)
    extras: list[tuple[torch.Tensor, dict]] = field(default_factory=list)

    @property
    def content(self) -> torch.Tensor | None:
        """Real tokens that are not special ([N, S]; None for images)."""
        return None if self.valid is None else self.valid & ~self.special

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))


def trim_rows(inputs: Mapping[str, torch.Tensor], idx, trim: bool = True) -> dict:
    """The rows `idx` of a padded text batch, cut to their longest real sequence when `trim`."""
    idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
    rows = {k: v[idx] for k, v in inputs.items()}
    if trim:
        width = max(int(rows["attention_mask"].sum(1).max()), 1)
        rows = {k: v[:, :width] for k, v in rows.items()}
    return rows


def _as_inputs(model, inputs) -> tuple[str, dict]:
    """(modality, {name: tensor}) of a padded text batch or of pixel values."""
    modality = get_adapter(model).modality
    if modality == "vision":
        pixels = inputs["pixel_values"] if isinstance(inputs, Mapping) else inputs
        return modality, {"pixel_values": torch.as_tensor(pixels)}
    if not isinstance(inputs, Mapping) or "input_ids" not in inputs:
        raise ExplainerError("text inputs must be a mapping with 'input_ids' and 'attention_mask' (a tokenizer "
                             "output padded to one length)")
    rows = {k: torch.as_tensor(v) for k, v in inputs.items() if k in TEXT_KEYS}
    rows.setdefault("attention_mask", torch.ones_like(rows["input_ids"]))
    return modality, rows


def batch_order(inputs: Mapping[str, torch.Tensor], batch_size: int, sort: bool) -> list[torch.Tensor]:
    """Row indices of each batch: consecutive rows, or (``sort``, text) rows sorted by length, longest first."""
    n = next(iter(inputs.values())).shape[0]
    order = torch.arange(n)
    if sort and "attention_mask" in inputs:
        order = torch.sort(inputs["attention_mask"].sum(1), descending=True, stable=True).indices
    return [order[s:s + int(batch_size)] for s in range(0, n, int(batch_size))]


def _targets(targets, n: int) -> torch.Tensor | None:
    if targets is None:
        return None
    t = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ExplainerError(f"{t.numel()} targets for {n} examples")
    return t


def _compute(model, modality: str, inputs: dict, method: str, targets, batch_size: int, sort: bool,
             progress: bool, desc: str | None, params: dict, dtype: torch.dtype = torch.float32) -> ExplanationSet:
    n = next(iter(inputs.values())).shape[0]
    batches = batch_order(inputs, batch_size, sort and modality == "text")
    parts = []
    for idx in progress_bar(batches, desc or method, progress, total=len(batches)):
        rows = trim_rows(inputs, idx) if modality == "text" else {"pixel_values": inputs["pixel_values"][idx]}
        t0 = time.perf_counter()
        e = explain(model, rows, method, target=None if targets is None else targets[idx], **params)
        parts.append((idx, e, time.perf_counter() - t0))
    return _assemble(modality, inputs, n, method, parts, dtype)


def _assemble(modality: str, inputs: dict, n: int, method: str, parts: list,
              dtype: torch.dtype = torch.float32) -> ExplanationSet:
    """One ExplanationSet from the batches' Explanations, every row back at its own position."""
    first = parts[0][1]
    logits = torch.zeros(n, first.logits.shape[-1])
    targets = torch.zeros(n, dtype=torch.long)
    deltas = None if first.delta is None else torch.zeros(n)
    if modality == "vision":
        scores = torch.zeros(n, *first.patch_map().shape[1:])
        valid = special = None
    else:
        width = inputs["input_ids"].shape[1]
        scores, valid = torch.zeros(n, width, dtype=dtype), torch.zeros(n, width, dtype=torch.bool)
        special = torch.ones(n, width, dtype=torch.bool)
    for idx, e, _ in parts:
        if modality == "vision":
            scores[idx] = e.patch_map().detach().float().cpu()
        else:
            w = e.scores.shape[1]
            scores[idx, :w] = e.scores.detach().to(dtype).cpu()
            valid[idx, :w], special[idx, :w] = e.valid.cpu(), e.special.cpu()
        logits[idx], targets[idx] = e.logits.detach().float().cpu(), e.target.cpu()
        if deltas is not None:
            deltas[idx] = e.delta.detach().float().cpu().reshape(-1)
    return ExplanationSet(method, dict(first.params), scores, targets, logits, valid, special,
                          inputs.get("input_ids"), None, deltas, "map" if modality == "vision" else first.unit,
                          [s for _, _, s in parts], [(idx, e.extras) for idx, e, _ in parts])


def explain_many(model, inputs, method: str, targets=None, *, batch_size: int = 8, sort: bool = True,
                 progress: bool = False, desc: str | None = None, tokenizer=None, use_cache: bool = False,
                 key: str | None = None, dtype: torch.dtype = torch.float32, **params) -> ExplanationSet:
    """Explain every example of `inputs` (text: a padded tokenizer output [N, S]; vision: pixel values
    [N, C, H, W]) with `method`, explaining class `targets[i]` (one int for all; None: the predicted class).

    Batches of `batch_size` trimmed rows (`sort`: by length, longest first; results are in the input order).
    `tokenizer` adds the word pieces; `use_cache` memoises the set in `lab.cache` under the weights (or `key`, a
    digest the caller already holds of the model and inputs), inputs, targets, method, parameters and batching.
    `dtype`: of the stored text scores (float64 keeps a float64 explainer's scores bit for bit).
    """
    modality, rows = _as_inputs(model, inputs)
    n = next(iter(rows.values())).shape[0]
    if n == 0:
        raise ExplainerError("explain_many: no examples")
    if int(batch_size) < 1:
        raise ExplainerError(f"batch_size must be >= 1, got {batch_size}")
    tgt = _targets(targets, n)

    def compute():
        return _compute(model, modality, rows, method, tgt, int(batch_size), sort, progress, desc, params, dtype)

    out = cache.memoize("explanations", method, compute, enabled=use_cache,
                        model=key or cache.digest(model) if use_cache else None,
                        inputs=cache.digest(rows) if use_cache else None,
                        targets=cache.digest(tgt) if use_cache else None,  # no key without the cache: params
                        params=cache.digest(params) if use_cache else None,  # may be undigestible (a callable MLM)
                        batch_size=int(batch_size), sort=bool(sort), dtype=str(dtype))
    if tokenizer is not None and out.input_ids is not None:
        out.tokens = [tokenizer.convert_ids_to_tokens(r[v].tolist()) for r, v in zip(out.input_ids, out.valid)]
    return out


def predict_logits(model, inputs, batch_size: int = 16, progress: bool = False) -> torch.Tensor:
    """Logits [N, C] of a classifier on a padded text batch or on pixel values, without gradients, in batches of
    trimmed rows."""
    modality, rows = _as_inputs(model, inputs)
    n = next(iter(rows.values())).shape[0]
    out = []
    model.eval()
    with torch.no_grad():
        for start in progress_bar(range(0, n, batch_size), "predict", progress, total=-(-n // batch_size)):
            idx = torch.arange(start, min(start + batch_size, n))
            batch = trim_rows(rows, idx) if modality == "text" else {"pixel_values": rows["pixel_values"][idx]}
            out.append(model(**batch).logits.float().cpu())
    return torch.cat(out)


@dataclass
class Examples:
    """A classifier and the examples it is explained on: padded text inputs [N, S] or pixel values [N, C, H, W],
    gold labels and the predicted classes (the targets every method explains). Text: special / valid masks [N, S]
    and optional rationales [N, S]; vision: the `lab.data.images.ImageDataset` (object masks) and the fill value of
    removed pixels. `head_mask` (Mask-LRP) and `mlm` (input marginalisation) are explainer inputs when available."""

    name: str
    modality: str  # "text" | "vision"
    model: torch.nn.Module
    inputs: dict
    labels: torch.Tensor  # gold [N]
    targets: torch.Tensor  # predicted classes [N]
    label_names: tuple[str, ...] = ()
    tokenizer: Any = None
    special: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    rationale: torch.Tensor | None = None
    images: Any = None  # vision: the ImageDataset (images, labels, masks)
    fill: Any = None  # vision: the value removed pixels get
    head_mask: torch.Tensor | None = None
    mlm: Any = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def rows(self, idx) -> dict:
        """Model inputs of examples `idx` (text: cut to their longest sequence)."""
        if self.modality == "vision":
            return {"pixel_values": self.inputs["pixel_values"][torch.as_tensor(idx, dtype=torch.long)]}
        return trim_rows(self.inputs, idx)

    @property
    def content(self) -> torch.Tensor:
        return self.valid & ~self.special

    @functools.cached_property
    def fingerprint(self) -> str:
        """Digest of the model weights, examples, targets and masks: the key of values memoised on them."""
        return cache.digest([self.name, self.modality, self.model, self.inputs, self.labels, self.targets,
                             self.rationale, self.head_mask, None if self.images is None else self.images.masks])


def _predicted(model, inputs: Mapping, labels, info: Mapping | None) -> tuple[torch.Tensor, dict]:
    logits = predict_logits(model.eval(), inputs, 64)
    info = dict(info or {})
    info.setdefault("accuracy_on_examples", float((logits.argmax(-1) == labels).double().mean()))
    return logits.argmax(-1), info


def text_examples(name: str, model, inputs: Mapping, labels, tokenizer=None, rationale=None, label_names=(),
                  info: Mapping | None = None, head_mask=None) -> Examples:
    """Examples of a text classifier from a padded batch (any BERT-family model), explaining its predictions."""
    inputs = {k: torch.as_tensor(v) for k, v in inputs.items() if k in TEXT_KEYS}
    adapter = get_adapter(model)
    prepared = adapter.prepare(inputs)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    targets, info = _predicted(model, inputs, labels, info)
    return Examples(name, "text", model, inputs, labels, targets, tuple(label_names), tokenizer,
                    adapter.special_mask(prepared).cpu(), adapter.valid_mask(prepared).cpu(),
                    None if rationale is None else torch.as_tensor(rationale).bool(), head_mask=head_mask, info=info)


def image_examples(name: str, model, images, fill, info: Mapping | None = None) -> Examples:
    """Examples of an image classifier on an ImageDataset (masks for segmentation); `fill`: removed pixels' value."""
    targets, info = _predicted(model, {"pixel_values": images.images}, images.labels, info)
    return Examples(name, "vision", model, {"pixel_values": images.images}, images.labels, targets,
                    tuple(images.class_names), images=images, fill=fill, info=info)
