"""Notebook 00: explain one sentence with several methods, plot, export, explore with a widget; explain a causal
LM's next-token prediction."""
from __future__ import annotations

import warnings

from lab import cache, stats
from lab.explainers import EXPLAINERS, explain, explain_text
from lab.results import Results
from lab.viz import token_heatmap_panels


def explain_sentence(model, tokenizer, text: str, methods, target=None, **params) -> dict:
    """{method: Explanation} for one sentence (same target for every method; default the prediction)."""
    return {m: explain_text(model, tokenizer, text, m, target=target, **params.get(m, {})) for m in methods}


def explanation_panels(explanations: dict, label_names=None, content_only: bool = True):
    """One token-heatmap panel per method: the figure of notebook 00."""
    panels = []
    for method, exp in explanations.items():
        tokens, scores = exp.example(0, content_only=content_only)
        target = int(exp.target[0])
        name = label_names[target] if label_names else target
        prob = float(exp.probabilities[0, target])
        panels.append((f"{method}  (target {name}, p={prob:.2f})", tokens, scores))
    return token_heatmap_panels(panels)


def render_sentence(model, tokenizer, label_names=None):
    """A render function for `lab.widgets.controls`: (text, method, target) -> Figure."""

    def render(text: str, method: str, target: str):
        tgt = None if target == "predicted" else list(label_names).index(target)
        return explanation_panels(explain_sentence(model, tokenizer, text, [method], target=tgt), label_names)

    return render


def tour_results(profile: str, fine_tuned, explanations: dict, meta: dict | None = None) -> Results:
    """Results file of notebook 00: the classifier's accuracy and each method's conservation delta."""
    res = Results("00_tour", profile, meta={"model": str(fine_tuned.path), **fine_tuned.metrics, **(meta or {})})
    rows = {}
    for method, exp in explanations.items():
        delta = None if exp.delta is None else float(exp.delta.abs().max())
        rows[method] = {"abs_conservation_delta": (None, delta), "reference": (None, EXPLAINERS[method].reference)}
    res.add_table("methods", "methods run on the tour sentence, with their conservation delta where defined", rows)
    acc, n = fine_tuned.accuracy, fine_tuned.metrics.get("n_eval")
    claim = "the fine-tuned classifier reaches > 88% SST-2 dev accuracy (issue target, default profile)"
    if acc is None or not n:
        res.add_claim(claim, None, detail="no evaluation recorded")
    else:
        res.add_claim(claim, interval=stats.proportion(acc, n), margin=0.88, kind="greater",
                      detail=f"accuracy {acc:.4f} on {n} dev sentences (bootstrap of the correct/incorrect indicator)")
    if "chefer" in explanations:
        delta = float(explanations["chefer"].delta.abs().max())
        res.add_claim("Chefer's LRP conserves relevance to the input (|delta| < 1e-2 with biases kept)",
                      delta < 1e-2, detail=f"|delta|={delta:.2e} (an exact rule on one sentence: no sampling)",
                      exact=True)
    return res


def tour_causal_lm(profile: str, seed: int = 0):
    """(model, tokenizer, note): notebook 06's causal LM of this profile if it is cached, else a tiny randomly
    initialised GPT-2-shaped model with a warning saying so. Never trains and never downloads."""
    from transformers import GPT2LMHeadModel

    from lab.models.causal_lm import PROFILES, build_causal_lm, causal_lm_path
    from lab.models.loading import load_tokenizer

    tokenizer = load_tokenizer("minilm")  # the causal LM's vocabulary ([CLS] begins a sentence)
    lm_profile = profile if profile in PROFILES else "default"
    path = causal_lm_path(lm_profile, seed)
    if cache.verify(path):
        return GPT2LMHeadModel.from_pretrained(path / "model").eval(), tokenizer, f"notebook 06's causal LM ({path})"
    note = (f"notebook 06's causal LM ({lm_profile} profile) is not cached: using a tiny RANDOMLY INITIALISED "
            "GPT-2-shaped model instead, so its prediction and explanations mean nothing (run notebook 06 first)")
    warnings.warn(note, stacklevel=2)
    return build_causal_lm(tokenizer.vocab_size, d_model=32, layers=1, heads=2, seed=seed), tokenizer, note


def explain_next_token(model, tokenizer, prompt: str, methods, **params) -> dict:
    """{method: Explanation} of a causal LM's prediction of the token after `prompt` ([CLS] + its word pieces)."""
    ids = [tokenizer.cls_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    inputs = {"input_ids": [ids], "attention_mask": [[1] * len(ids)]}
    return {m: explain(model, inputs, m, tokenizer=tokenizer, **params.get(m, {})) for m in methods}


def next_token_panels(explanations: dict, tokenizer):
    """`explanation_panels` with the predicted token's word piece as the target's name."""
    return explanation_panels(explanations, tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))),
                              content_only=False)
