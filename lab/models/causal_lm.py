"""A small causal (GPT-2-style) language model p(x) for the generative extension of input marginalisation
(Mehta et al. Sec. 5.2 / Fig. 5), trained here on in-domain text with the BERT word-piece vocabulary:

    lm = causal_lm_preset("default")                     # cached in cache_dir()/causal_lm/<key>
    logp = sequence_log_prob(lm.model, ids, mask)        # [N]: log p(x) = Σ_{t ≥ 1} log p(x_t | x_<t)

`lab.explainers.marginalization.sentence_log_probs_fn(lm)` turns the LM into a two-"class" model whose class 1 is
"the sentence", so the weight of evidence of `marginalize` with target 1 is exactly
a_i = logodds p(x) − logodds Σ_w p(x_{i←w}) p_MLM(w|x_{−i}) (the paper's generative extension). [CLS] serves as
the beginning-of-sequence token and [SEP] as the end (both predicted/conditioned like words; never replaced).
One forward pass gives all T conditionals of a Transformer LM, so the cost is O(|candidates|·T) forward passes, not
the paper's O(|V|·T²) for an autoregressive loop.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lab import cache
from lab.models.profiles import profile_settings

CAUSAL_LM_VERSION = 2  # 2: the budget is the step count alone (no wall-clock stop)
# The budget is `steps` (never wall-clock time), so the weights do not depend on machine load.
PROFILES = {
    "smoke": {"steps": 10, "batch_size": 16, "d_model": 32, "layers": 1, "heads": 2, "max_length": 32, "lr": 3e-3,
              "train_size": 500, "eval_size": 48},
    "default": {"steps": 1500, "batch_size": 16, "d_model": 64, "layers": 2, "heads": 2, "max_length": 24,
                "lr": 3e-3, "train_size": None, "eval_size": 300},
}


class CausalLMError(ValueError):
    """Bad input to the causal LM; the message says what to change."""


@dataclass
class TrainedLM:
    model: object
    tokenizer: object
    metrics: dict
    path: Path | None = None
    from_cache: bool = False


def build_causal_lm(vocab_size: int, d_model: int = 96, layers: int = 2, heads: int = 2, max_positions: int = 64,
                    seed: int = 0):
    """A GPT2LMHeadModel from a config (tied input/output embeddings, no dropout)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_embd=d_model, n_layer=layers, n_head=heads, n_positions=max_positions,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    return GPT2LMHeadModel(cfg).eval()


def token_log_probs(lm, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    double: bool = True) -> torch.Tensor:
    """log p(x_t | x_<t) for t = 1..n-1: [N, n-1] (0 at padding); float64 unless `double=False` (training)."""
    input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise CausalLMError(f"input_ids must be [batch, seq >= 2] (BOS + at least one token), got {list(input_ids.shape)}")
    mask = torch.ones_like(input_ids) if attention_mask is None else torch.as_tensor(attention_mask)
    logits = lm(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
    logits = logits.double() if double else logits
    logp = logits.log_softmax(-1).gather(2, input_ids[:, 1:, None])[..., 0]
    return logp * mask[:, 1:].to(logp.dtype)


def sequence_log_prob(lm, input_ids, attention_mask=None) -> torch.Tensor:
    """log p(x) = Σ_{t ≥ 1} log p(x_t | x_<t), the first token (BOS) given: [N]."""
    return token_log_probs(lm, input_ids, attention_mask).sum(-1)


def _encode(tokenizer, texts, max_length):
    return [s for s in tokenizer(list(texts), truncation=True, max_length=max_length, verbose=False)["input_ids"]
            if len(s) > 2]


def _pad(seqs):
    n = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), n, dtype=torch.long)
    mask = torch.zeros(len(seqs), n, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask


def evaluate_lm(lm, tokenizer, texts, max_length: int = 64, batch_size: int = 64) -> dict:
    """Per-token perplexity exp(−mean log p(x_t|x_<t)) on `texts` (tokens after [CLS], incl. [SEP])."""
    seqs = _encode(tokenizer, texts, max_length)
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            ids, mask = _pad(seqs[start:start + batch_size])
            total += float(token_log_probs(lm.eval(), ids, mask).sum())
            n += int(mask[:, 1:].sum())
    return {"perplexity": math.exp(-total / max(n, 1)), "n_tokens": n, "n_sentences": len(seqs)}


def settings(profile: str = "default", **overrides) -> dict:
    return profile_settings(PROFILES, profile, overrides, CausalLMError, "causal-LM")


def causal_lm_path(profile: str = "default", seed: int = 0, **overrides) -> Path:
    """Where `causal_lm_preset` with these arguments caches its model (complete or not; nothing is trained)."""
    key = cache.cache_key(f"causal-lm-{profile}", version=CAUSAL_LM_VERSION, seed=seed,
                          **settings(profile, **overrides))
    return cache.cached_dir("causal_lm", key)


def causal_lm_preset(profile: str = "default", seed: int = 0, force: bool = False, progress: bool = True,
                     **overrides) -> TrainedLM:
    """Train (or load) the small causal LM of a profile on SST-2 train phrases; held-out perplexity on SST-2 dev."""
    from lab.models.loading import load_tokenizer
    from lab.models.mlm import corpus_texts, heldout_texts
    from lab.models.training import torch_threads

    cfg = settings(profile, **overrides)
    tokenizer = load_tokenizer("minilm")
    final = causal_lm_path(profile, seed, **overrides)
    if not force and cache.verify(final):
        from transformers import GPT2LMHeadModel

        lm = GPT2LMHeadModel.from_pretrained(final / "model").eval()
        cache.record_checkpoint(final)
        return TrainedLM(lm, tokenizer, cache.read_json(final / "metrics.json"), final, from_cache=True)
    lm = build_causal_lm(tokenizer.vocab_size, cfg["d_model"], cfg["layers"], cfg["heads"], 64, seed)
    seqs = _encode(tokenizer, corpus_texts(cfg["train_size"], (), seed), cfg["max_length"])
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg["lr"], weight_decay=0.01)
    steps = cfg["steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / steps))
    start, history, done = time.perf_counter(), [], 0
    bar = range(steps)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc="causal LM training", dynamic_ncols=True)
    with torch_threads(1):
        lm.train()
        for step in bar:
            ids, mask = _pad([seqs[r] for r in rng.integers(0, len(seqs), cfg["batch_size"])])
            loss = -token_log_probs(lm, ids, mask, double=False).sum() / mask[:, 1:].sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            opt.step()
            sched.step()
            done = step + 1
            if done % 50 == 0 or done == steps:
                history.append({"step": done, "loss": round(loss.item(), 4)})
        lm.eval()
        metrics = {**evaluate_lm(lm, tokenizer, heldout_texts(cfg["eval_size"])), "steps_done": done,
                   "train_seconds": round(time.perf_counter() - start, 1), "history": history, "settings": cfg}
    with cache.atomic_dir(final) as tmp:
        lm.save_pretrained(tmp / "model")
        cache.atomic_write_json(tmp / "metrics.json", metrics)
    cache.record_checkpoint(final)
    return TrainedLM(lm, tokenizer, metrics, final, from_cache=False)
