"""Perturbation explainers: leave-one-out (TVD), erasure (log-odds difference) and a random control.

Each example is perturbed on its own, unpadded, so a batch gives exactly the scores of its examples one by one;
all perturbed copies of one example go through the model in chunks of `max_batch` rows.
Text: a token is deleted (leave_one_out) or replaced by a special token (erasure); special tokens get score 0.
Vision: a patch is occluded with `fill` (0 by default) in pixel space; [CLS] gets score 0.
"""
from __future__ import annotations

import zlib

import torch

from lab.explainers.base import ANY_READOUT, register
from lab.errors import ExplainInputError

ERASE_TOKENS = ("pad", "unk", "mask", "zero")


def _check_max_batch(max_batch) -> int:
    if int(max_batch) < 1:
        raise ExplainInputError(f"max_batch must be >= 1, got {max_batch}")
    return int(max_batch)


def _probabilities(adapter, rows: dict, max_batch: int) -> torch.Tensor:
    """Softmax outputs of a stack of (unpadded, equal-length) inputs, `max_batch` rows per forward."""
    n = next(iter(rows.values())).shape[0]
    out = []
    with torch.no_grad():
        for start in range(0, n, max_batch):
            chunk = {k: v[start:start + max_batch] for k, v in rows.items()}
            embeds = chunk.pop("embeds", None)
            out.append(adapter.forward(chunk, embeds=embeds).logits.softmax(-1))
    return torch.cat(out)


def _text_row(inputs: dict, i: int, keep: torch.Tensor) -> dict:
    """Example i without its padding, as a batch of one ([1, n] tensors)."""
    return {k: v[i:i + 1, keep] for k, v in inputs.items()}


def _deleted(row: dict, positions: torch.Tensor) -> dict:
    """One copy of `row` ([1, n] tensors) per position, with that token removed: [k, n-1] tensors."""
    n = row["input_ids"].shape[1]
    grid = torch.arange(n, device=positions.device).expand(len(positions), n)
    index = grid[grid != positions[:, None]].view(len(positions), n - 1)
    return {k: v[0][index] for k, v in row.items()}


def _replaced(row: dict, positions: torch.Tensor, token_id: int) -> dict:
    """One copy of `row` per position, with that token's id replaced by `token_id` (mask and types unchanged)."""
    copies = {k: v.expand(len(positions), -1).clone() for k, v in row.items()}
    copies["input_ids"][torch.arange(len(positions)), positions] = token_id
    return copies


def _zeroed(adapter):
    """Perturbation: one copy of `row` per position, with that token's word embedding set to zero ("zero
    erasure"; position and segment embeddings are still added by the model)."""

    def perturb(row: dict, positions: torch.Tensor) -> dict:
        copies = {k: v.expand(len(positions), -1) for k, v in row.items()}
        embeds = adapter.embed(row).expand(len(positions), -1, -1).clone()
        embeds[torch.arange(len(positions)), positions] = 0.0
        return {**copies, "embeds": embeds}

    return perturb


def _occluded(pixels: torch.Tensor, adapter, fill: float) -> torch.Tensor:
    """[N, C, H, W]: one copy of the image [C, H, W] per patch (row-major, like the ViT tokens), set to `fill`."""
    (gh, gw), (ph, pw) = adapter.grid, adapter.patch
    copies = pixels.expand(gh * gw, *pixels.shape).clone()
    for k in range(gh * gw):
        r, c = divmod(k, gw)
        copies[k, :, r * ph:(r + 1) * ph, c * pw:(c + 1) * pw] = fill
    return copies


def _perturbation_scores(adapter, inputs, score_fn, max_batch: int, text_perturb, fill: float) -> torch.Tensor:
    """scores[i, t] = score_fn(p(original), p(perturbed at t), i) for every perturbable position t (else 0)."""
    valid = adapter.valid_mask(inputs)
    special = adapter.special_mask(inputs)
    scores = torch.zeros(valid.shape, dtype=adapter.dtype, device=adapter.device)
    for i in range(valid.shape[0]):
        if adapter.modality == "vision":
            image = inputs["pixel_values"][i]
            rows = {"pixel_values": torch.cat([image[None], _occluded(image, adapter, fill)])}
            positions = torch.arange(valid.shape[1] - rows["pixel_values"].shape[0] + 1, valid.shape[1],
                                     device=adapter.device)  # the patch tokens, after [CLS] (DeiT: + distillation)
            probs = _probabilities(adapter, rows, max_batch)
        else:
            keep = torch.nonzero(valid[i]).flatten()  # real tokens, wherever the padding is
            row = _text_row(inputs, i, keep)
            local = torch.nonzero(~special[i, keep]).flatten()
            if len(local) == 0:
                continue
            original = _probabilities(adapter, row, max_batch)
            probs = torch.cat([original, _probabilities(adapter, text_perturb(row, local), max_batch)])
            positions = keep[local]
        scores[i, positions] = score_fn(probs[:1], probs[1:], i).to(scores.dtype)
    return scores


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """TVD(p, q) = ½ Σ_c |p_c − q_c| along the last dim."""
    return 0.5 * (p - q).abs().sum(-1)


@register("leave_one_out", "TVD between output distributions with and without each token (deleted; images: patch "
          "occluded)", "Jain & Wallace 2019 Sec. 4.1 (leave-one-out Δŷ_t = TVD(ŷ(x_-t), ŷ(x)))",
          class_specific=False, readouts=ANY_READOUT)
def leave_one_out(adapter, inputs, target, max_batch: int = 64, fill: float = 0.0):
    """Text: token t is removed from the sequence (later tokens shift left), not replaced. Vision: patch t is set to
    `fill` in pixel space (a ViT cannot drop a patch without changing its grid)."""
    max_batch = _check_max_batch(max_batch)
    scores = _perturbation_scores(adapter, inputs, lambda p, q, i: total_variation(q, p), max_batch, _deleted,
                                  float(fill))
    return {"scores": scores, "params": {"max_batch": max_batch, "fill": float(fill)}}


def log_odds(probs: torch.Tensor, target: int) -> torch.Tensor:
    """log p_y − log(1 − p_y), with 1 − p_y summed over the other classes (stable for p_y → 1)."""
    logp = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
    others = torch.cat([logp[..., :target], logp[..., target + 1:]], dim=-1)
    return logp[..., target] - torch.logsumexp(others, dim=-1)


def replacement_id(adapter, token: str, token_id: int | None = None) -> int:
    """Id of [PAD]/[UNK]/[MASK] from `token_id`, else the model's special tokens (`adapter.token_ids`: the
    tokenizer's, the config's, the checkpoint tokenizer's)."""
    if token_id is not None:
        return int(token_id)
    if token not in ERASE_TOKENS:
        raise ExplainInputError(f"token must be one of {ERASE_TOKENS}, got {token!r}")
    if token == "zero":
        raise ExplainInputError("token='zero' replaces the word embedding by zeros; it has no token id")
    if token not in adapter.token_ids:
        raise ExplainInputError(f"neither the model config nor its tokenizer names a {token} token id; pass "
                                f"token_id= (e.g. tokenizer.{token}_token_id)")
    return adapter.token_ids[token]


@register("erasure",
          "log-odds drop of the target class when a token is replaced by [PAD]/[UNK]/[MASK]/a zero embedding (images: "
          "patch occluded)",
          "Kim et al. 2020 (input marginalization) erasure baselines; Mask-LRP [PAD] masking",
          readouts=ANY_READOUT)
def erasure(adapter, inputs, target, token: str = "pad", token_id: int | None = None, max_batch: int = 64,
            fill: float = 0.0):
    """a_t = logodds p(y_t | x) − logodds p(y_t | x with token t replaced); positive = the token supports y_t.

    token: "pad" | "unk" | "mask" (ids from `token_id`, else the tokenizer or config) or "zero" (the word
    embedding set to zero, Kim et al.'s zero erasure). Images ignore token/token_id: the patch is set to `fill`."""
    max_batch = _check_max_batch(max_batch)
    if adapter.modality == "text":
        if token not in ERASE_TOKENS:
            raise ExplainInputError(f"token must be one of {ERASE_TOKENS}, got {token!r}")
        tid = None if token == "zero" and token_id is None else replacement_id(adapter, token, token_id)
        if tid is not None and not 0 <= tid < adapter.config.vocab_size:
            raise ExplainInputError(f"token_id {tid} is outside the vocabulary (0..{adapter.config.vocab_size - 1})")
        perturb = _zeroed(adapter) if tid is None else (lambda row, pos: _replaced(row, pos, tid))
    else:
        tid, perturb = None, None
    targets = target.tolist()

    def score(p, q, i):
        return log_odds(p, targets[i]) - log_odds(q, targets[i])

    scores = _perturbation_scores(adapter, inputs, score, max_batch, perturb, float(fill))
    params = dict(token=token, token_id=tid, max_batch=max_batch, fill=float(fill))
    return {"scores": scores, "params": params}


def example_seed(seed: int, values: torch.Tensor) -> int:
    """A seed that depends only on `seed` and one example's content (so batching does not change it)."""
    data = values.detach().cpu().contiguous().numpy().tobytes()
    return (int(seed) * 1_000_003 + zlib.crc32(data)) % (2 ** 63)


@register("random", "control: uniform random scores in [0, 1), reproducible per example (seed + example content)",
          "random baseline of Wu & Ong 2021 (Fig. 1) and Mask-LRP", class_specific=False, readouts=ANY_READOUT)
def random(adapter, inputs, target, seed: int = 0):
    valid = adapter.valid_mask(inputs)
    scores = torch.zeros(valid.shape, dtype=adapter.dtype)
    for i in range(valid.shape[0]):
        keep = valid[i]
        content = inputs["pixel_values"][i] if adapter.modality == "vision" else inputs["input_ids"][i][keep]
        gen = torch.Generator().manual_seed(example_seed(seed, content))
        scores[i, keep.cpu()] = torch.rand(int(keep.sum()), generator=gen, dtype=adapter.dtype)
    return {"scores": scores.to(adapter.device), "params": {"seed": int(seed)}}
