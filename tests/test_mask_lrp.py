"""lab.experiments.mask_lrp on tiny random models: settings, batching, Table 1/3 rows, the corruption sweep's
exactness check, results and figures (no data directory, no fine-tuning)."""
import numpy as np
import pytest
import torch

import lab
from lab import heads
from lab.experiments import mask_lrp as ml
from lab.models.adapters import get_adapter
from lab.models.training import FineTuned
from tests.models import text_batch, tiny_bert


def _stats(blocks, n_heads, seed=0):
    rng = np.random.default_rng(seed)
    k, w = len(heads.RELATIONS), 5
    n_dep = np.array([10, 10, 10, 10])
    return heads.HeadStats(rng.integers(0, 10, (blocks, n_heads, k)), n_dep, rng.integers(0, 5, (k, 2 * w + 1)),
                           rng.integers(0, 3, (blocks, n_heads, 2 * w + 1)), 20, w, 5)


def _evalset(model, batch, labels):
    adapter = get_adapter(model)
    special = adapter.special_mask(adapter.prepare(batch)).cpu()
    lengths = batch["attention_mask"].sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    batch = {k: v[order] for k, v in batch.items()}
    tokens = [[f"t{i}" for i in row.tolist()] for row in batch["input_ids"]]
    return ml.EvalSet(list(range(len(order))), batch, torch.as_tensor(labels)[order], special[order], tokens,
                      lengths[order])


def _run(name="sst2", model=None, batch=None, labels=(0, 2, 1), tokenizer=None, mask=None):
    model = model or tiny_bert()
    batch = batch or text_batch((9, 6, 7))
    stats = _stats(model.config.num_hidden_layers, model.config.num_attention_heads)
    cfg = ml.settings("smoke", progress=False)
    masks = ml.masks_from(stats, cfg)
    if mask is not None:
        masks["mask_lrp"] = mask
    ft = FineTuned(model, tokenizer, {"eval_accuracy": 0.5, "n_eval": 3, "eval_split": "dev", "hparams": {}}, None,
                   label_names=tuple(f"c{i}" for i in range(model.config.num_labels)))
    return ml.DatasetRun(name, ft, stats, masks["mask_lrp"], masks, _evalset(model, batch, labels), 32), cfg


def test_settings_validate_their_input():
    cfg = ml.settings("default")
    assert cfg["datasets"] == ml.DATASETS and cfg["seeds"] == 5 and cfg["xi_synt"] == 0.1 and cfg["xi_pos"] == 0.8
    assert ml.settings("smoke", datasets=["sst2"])["datasets"] == ("sst2",)
    with pytest.raises(ml.ExperimentError, match="unknown profile"):
        ml.settings("huge")
    with pytest.raises(ml.ExperimentError, match="unknown setting"):
        ml.settings("smoke", n_examples=3)
    with pytest.raises(ml.ExperimentError, match="unknown dataset"):
        ml.settings("smoke", datasets=["mnli"])


def test_paper_numbers_are_copied_into_the_right_columns():
    t = ml.PAPER_TABLE1
    assert t["mask_lrp"]["sst2_AOPC"] == 0.438 and t["mask_lrp"]["snli_LOdds"] == -0.445  # MNLI beside SNLI
    assert t["attcat"]["yelp_LOdds"] == -2.034 and t["chefer"]["imdb_AOPC"] == 0.384
    assert all(len(row) == 8 for row in t.values()) and set(t) == {*ml.BASELINES, "random_mask", "mask_lrp"}
    assert ml.PAPER_TABLE1_STD["random_mask"]["snli_LOdds"] == 0.021


def test_explain_set_batches_like_one_call():
    run, cfg = _run()
    explainer, params = ml.method_params(run, "mask_lrp", cfg)
    batched = ml.explain_set(run, explainer, params, batch_size=1)
    whole = lab.explain(run.model, run.evalset.inputs, explainer, target=run.evalset.labels, **params).scores
    content = run.evalset.inputs["attention_mask"].bool()
    torch.testing.assert_close(batched[content], whole[content].double(), rtol=1e-7, atol=1e-9)
    assert (batched[~content] == 0).all()


def test_evaluate_dataset_rows_and_random_seeds():
    run, cfg = _run()
    ev = ml.evaluate_dataset(run, cfg)
    assert set(ev["methods"]) == {*ml.BASELINES, "mask_lrp", *ml.ABLATIONS, "random_mask"}
    assert len(ev["random"]) == cfg["seeds"]
    assert all(int(r["mask"].sum()) == int(run.mask.sum()) for r in ev["random"])  # same mask rate
    for m in ev["methods"].values():
        assert -1 <= m["AOPC"] <= 1 and len(m["aopc_curve"]) == 9 and np.isfinite(m["LOdds"])
    assert ev["methods"]["random_mask"]["n_seeds"] == cfg["seeds"]
    frame = ml.table1_frame({"sst2": ev})
    assert "±" in frame.loc["Random mask", ("SST-2", "AOPC")]


def test_corruption_sweep_equals_chefer_at_full_rate_and_checks_it(monkeypatch):
    mask = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0]])
    run, cfg = _run(mask=mask)
    sweep = ml.corruption_sweep(run, cfg)
    assert sweep["equals_chefer_at_100"] and sweep["rates"] == [0.5, 1.0]
    assert sweep["summary"][1.0]["AOPC"] == sweep["chefer"]["AOPC"]
    assert len(sweep["per_rate"][0.5]) == cfg["seeds"] and sweep["per_rate"][0.5][0]["n_switched"] == 3
    # the check can fail: a "corruption" that leaves the mask alone must be caught at 100 %
    monkeypatch.setattr(ml.heads, "corrupted_mask", lambda m, rate, seed=0: torch.as_tensor(m))
    with pytest.raises(AssertionError, match="all ones"):
        ml.corruption_sweep(run, cfg)


def test_build_results_smoke_leaves_sample_claims_untested(lab_dirs):
    run, cfg = _run(mask=torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0]]))
    ev = ml.evaluate_dataset(run, cfg)
    sweep = ml.corruption_sweep(run, cfg)
    res = ml.build_results(cfg, {"sst2": run}, {"sst2": ev}, sweep)
    path = res.save()
    assert path.exists()
    t1 = res.tables["table1"]["rows"]["Mask-LRP (ours)"]
    assert t1["sst2_AOPC"]["paper"] == 0.438 and t1["sst2_AOPC"]["ours"] == ev["methods"]["mask_lrp"]["AOPC"]
    assert res.tables["table3"]["rows"]["Mask-LRP w/o M_pos"]["sst2_LOdds"]["paper"] == -1.208
    holds = {c["claim"]: c["holds"] for c in res.claims}
    exact = [c for c in holds if "reproduces GAE" in c]
    assert exact and holds[exact[0]] is True
    assert all(v is None for c, v in holds.items() if c not in exact)


def test_default_profile_claims_are_evaluated(lab_dirs):
    run, cfg = _run()
    cfg = {**cfg, "profile": "default"}
    ev = ml.evaluate_dataset(run, cfg)
    res = ml.build_results(cfg, {"sst2": run}, {"sst2": ev})
    beats = [c for c in res.claims if "beats the random" in c["claim"]][0]
    m = ev["methods"]
    expected = m["mask_lrp"]["AOPC"] > m["random_mask"]["AOPC"] and m["mask_lrp"]["LOdds"] < m["random_mask"]["LOdds"]
    assert beats["holds"] is expected


def test_figures_have_the_expected_panels():
    run, cfg = _run()
    fig5 = ml.head_heatmaps({"sst2": run, "snli": run}, cfg)
    assert len([a for a in fig5.axes if a.get_title()]) == 4
    ev = ml.evaluate_dataset(run, cfg)
    fig3 = ml.curves_figure(ev, cfg)
    assert len(fig3.axes[0].lines) == len(ml.BASELINES) + 2
    depth = ml.head_depth({"sst2": run}, cfg)["sst2"]
    assert set(depth) == {"positional_mean_block", "syntactic_mean_block", "n_positional", "n_syntactic"}


def test_sentence_figure_and_widgets_with_a_real_tokenizer():
    from lab.models.loading import load_tokenizer
    from tests.test_heads import _tiny_text_model

    tok = load_tokenizer("minilm")
    model = _tiny_text_model(tok.vocab_size)
    batch = dict(tok(["a fine film", "a dull , long film"], padding=True, return_tensors="pt"))
    run, cfg = _run(model=model, batch=batch, labels=(1, 0), tokenizer=tok)
    fig6 = ml.sentence_differences(run, ml.FIG6_SENTENCE, cfg)
    assert len(fig6.axes) == 1 + len(ml.FIG6_BASELINES) + 1  # panels + the shared colour bar of the signed Δs
    tokens, scores, _ = ml.sentence_scores(run, ml.FIG6_SENTENCE, ["mask_lrp", "chefer"], cfg)
    assert tokens[:3] == ["it", "'", "s"] and all(float(s.abs().max()) == pytest.approx(1.0) for s in scores.values())
    render = ml.widget_renderer({"sst2": run}, cfg)
    fig = render("sst2", "a fine ||| film", "mask_lrp", "rollout", 0.0, 0.3, False)
    assert len(fig.axes) == 3 + 1  # method, baseline, Δ, and the shared colour bar of the signed Δ
    with pytest.raises(ml.ExperimentError):
        render("sst2", "  ", "mask_lrp", "rollout", 0.1, 0.8, True)
    assert len(ml.heads_renderer({"sst2": run}, cfg)(0.0, 0.5, True).axes) >= 2


def test_table_rows_are_memoised_per_mask_and_model(lab_dirs, monkeypatch):
    run, cfg = _run()
    cfg = {**cfg, "use_cache": True}
    first = ml.evaluate_dataset(run, cfg)
    calls = []
    real = ml.explain_set
    monkeypatch.setattr(ml, "explain_set", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    again = ml.evaluate_dataset(run, cfg)
    assert calls == []
    for key in ("AOPC", "LOdds", "aopc_curve"):
        assert again["methods"]["mask_lrp"][key] == first["methods"]["mask_lrp"][key]
    assert torch.equal(again["scores"]["chefer"], first["scores"]["chefer"])
    # another head mask, or other weights, is computed and not looked up
    ml._run_method(run, "mask_lrp", cfg, mask=torch.ones_like(run.mask))
    assert calls == ["mask_lrp"]
    other, _ = _run(model=tiny_bert(seed=5))
    ml._run_method(other, "chefer", cfg)
    assert calls == ["mask_lrp", "chefer"]
