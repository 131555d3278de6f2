"""lab.experiments.mask_lrp (+ mask_lrp_results, lab.viz.mask_lrp) on tiny random models: settings, batching,
Table 1/3 rows, the corruption sweep's exactness check, results and figures (no data directory, no fine-tuning)."""
import numpy as np
import pytest
import torch

import lab
from lab import stats
from lab.analysis import heads
from lab.experiments import mask_lrp as ml
from lab.experiments import mask_lrp_results as mr
from lab.explainers import batch as explain_batch
from lab.models.adapters import get_adapter
from lab.models.training import FineTuned
from lab.viz import mask_lrp as mv
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
    return ml.EvalSet({k: v[order] for k, v in batch.items()}, torch.as_tensor(labels)[order], special[order])


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
    return ml.DatasetRun(name, ft, stats, masks, _evalset(model, batch, labels), 32), cfg


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


def test_run_method_batches_like_one_call_and_keeps_float64():
    run, cfg = _run()
    explainer, params = ml.method_params(run, "mask_lrp", cfg)
    batched, metrics = ml.run_method(run, "mask_lrp", {**cfg, "batch_size": 1})
    whole = lab.explain(run.model, run.evalset.inputs, explainer, target=run.evalset.labels, **params).scores
    content = run.evalset.inputs["attention_mask"].bool()
    assert batched.dtype == torch.float64 == whole.dtype  # the explainer's scores bit for bit, not rounded to float32
    torch.testing.assert_close(batched[content], whole[content], rtol=1e-7, atol=1e-9)
    assert (batched[~content] == 0).all()
    single = lab.explain(run.model, {k: v[:1] for k, v in run.evalset.inputs.items()}, explainer,
                         target=run.evalset.labels[:1], **params).scores
    assert torch.equal(batched[0, :single.shape[1]], single[0])
    assert metrics["AOPC"] == ml.scored(run, "mask_lrp", batched, cfg)["AOPC"]


def test_evaluate_dataset_rows_and_random_seeds():
    run, cfg = _run()
    ev = ml.evaluate_dataset(run, cfg)
    assert set(ev["methods"]) == {*ml.BASELINES, "mask_lrp", *ml.ABLATIONS, "random_mask"}
    assert len(ev["random"]) == cfg["seeds"]
    assert all(int(r["mask"].sum()) == int(run.mask.sum()) for r in ev["random"])  # same mask rate
    for m in ev["methods"].values():
        assert -1 <= m["AOPC"] <= 1 and len(m["aopc_curve"]) == 9 and np.isfinite(m["LOdds"])
    assert ev["methods"]["random_mask"]["n_seeds"] == cfg["seeds"]
    frame = mv.table1_frame({"sst2": ev}, ml.LABELS, ml.DATASET_LABELS, ml.TABLE_METHODS)
    assert "±" in frame.loc["Random mask", ("SST-2", "AOPC")]


def test_corruption_sweep_equals_chefer_at_full_rate_and_checks_it(monkeypatch):
    mask = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0]])
    run, cfg = _run(mask=mask)
    sweep = ml.corruption_sweep(run, {**cfg, "reading": "text"})
    assert sweep["equals_chefer_at_100"] and sweep["rates"] == [0.5, 1.0]
    assert sweep["summary"][1.0]["AOPC"] == sweep["chefer"]["AOPC"]
    code = ml.corruption_sweep(run, cfg)  # the authors' MGAE records twice GAE's A relevance: not GAE at 100 %
    assert cfg["reading"] == "code" and not code["equals_chefer_at_100"] and code["max_diff_chefer_at_100"] > 0
    assert len(sweep["per_rate"][0.5]) == cfg["seeds"] and sweep["per_rate"][0.5][0]["n_switched"] == 3
    # the check can fail: a "corruption" that leaves the mask alone must be caught at 100 %
    monkeypatch.setattr(ml.heads, "corrupted_mask", lambda m, rate, seed=0: torch.as_tensor(m))
    with pytest.raises(AssertionError, match="all ones"):
        ml.corruption_sweep(run, cfg)


def test_build_results_smoke_leaves_sample_claims_untested(lab_dirs):
    run, cfg = _run(mask=torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0]]))
    ev = ml.evaluate_dataset(run, cfg)
    sweep = ml.corruption_sweep(run, cfg)
    res = mr.build_results(cfg, {"sst2": run}, {"sst2": ev}, sweep)
    path = res.save()
    assert path.exists()
    t1 = res.tables["table1"]["rows"]["Mask-LRP (ours)"]
    assert t1["sst2_AOPC"]["paper"] == 0.438 and t1["sst2_AOPC"]["ours"] == ev["methods"]["mask_lrp"]["AOPC"]
    assert res.tables["table3"]["rows"]["Mask-LRP w/o M_pos"]["sst2_LOdds"]["paper"] == -1.208
    holds = {c["claim"]: c["holds"] for c in res.claims}
    exact = [c for c in holds if "reproduces GAE" in c]
    assert exact and holds[exact[0]] is False  # code reading: the authors' MGAE with all ones is not their GAE
    assert "recorded_rule" in [c for c in res.claims if c["claim"] == exact[0]][0]["detail"]
    assert all(v is None for c, v in holds.items() if c not in exact)
    assert {c["verdict"] for c in res.claims if c["claim"] not in exact} == {"not evaluated"}
    paired = res.tables["table1_paired"]["rows"]["Mask-LRP (ours) − GAE (chefer) (sst2)"]
    assert paired["ΔAOPC_low"]["ours"] <= paired["ΔAOPC"]["ours"] <= paired["ΔAOPC_high"]["ours"]
    assert paired["n"]["ours"] == len(run.evalset)


def test_default_profile_claims_are_decided_by_paired_intervals(lab_dirs):
    run, cfg = _run()
    cfg = {**cfg, "profile": "default"}
    ev = ml.evaluate_dataset(run, cfg)
    res = mr.build_results(cfg, {"sst2": run}, {"sst2": ev})
    beats = [c for c in res.claims if "beats the random" in c["claim"]][0]
    expected = stats.combine([stats.decide(mr.paired(ev, "mask_lrp", "random_mask", "AOPC"), 0, "greater"),
                              stats.decide(mr.paired(ev, "mask_lrp", "random_mask", "LOdds"), 0, "less")])
    assert beats["verdict"] == expected and "[" in beats["detail"]
    assert all(c["verdict"] in ("holds", "fails", "inconclusive", "not evaluated") for c in res.claims)


def _synthetic(diff_aopc, diff_lodds, n=60, noise=0.05, seed=0):
    """An evaluation dict: GAE (chefer) per-example values, Mask-LRP = GAE + diff + noise, random masks (3 seeds)
    at GAE's level."""
    rng = np.random.default_rng(seed)
    base_a, base_l = rng.uniform(0.2, 0.6, n), rng.uniform(-2, -1, n)

    def row(da, dl):
        return {"aopc": base_a + da + noise * rng.standard_normal(n),
                "lodds": base_l + dl + noise * rng.standard_normal(n)}

    return {"methods": {"chefer": row(0, 0), "mask_lrp": row(diff_aopc, diff_lodds),
                        "mask_lrp_no_pos": row(diff_aopc, diff_lodds), "mask_lrp_no_synt": row(diff_aopc + 0.2, 0)},
            "random": [{**row(0, 0), "seed": s} for s in range(3)]}


@pytest.mark.parametrize("diff, verdict", [((0.1, -0.3), "holds"), ((-0.1, -0.3), "fails"), ((0.0, 0.0), None)])
def test_comparison_verdicts_on_synthetic_examples(diff, verdict):
    ev = _synthetic(*diff)
    got, detail = mr.comparison(ev, "mask_lrp", "chefer")
    if verdict is None:  # no true difference, noise only: never "holds"
        assert got in ("inconclusive", "fails")
    else:
        assert got == verdict
    assert "ΔAOPC" in detail and "ΔLOdds" in detail
    against_random = mr.comparison(ev, "mask_lrp", "random_mask")[0]
    assert against_random == verdict if verdict else against_random != "holds"


def test_random_mask_side_is_paired_seed_by_seed_with_seed_clusters():
    ev = _synthetic(0.1, -0.3, n=10)
    iv = mr.paired(ev, "mask_lrp", "random_mask", "AOPC")
    assert iv.n == 30 and iv.clusters == 3
    expected = np.mean([ev["methods"]["mask_lrp"]["aopc"] - r["aopc"] for r in ev["random"]])
    assert iv.estimate == pytest.approx(expected)
    assert mr.paired(ev, "random_mask", "mask_lrp", "AOPC").estimate == pytest.approx(-expected)


def test_best_ablation_and_corruption_claims_on_synthetic_examples():
    good, bad = _synthetic(0.1, -0.3), _synthetic(-0.1, -0.3)
    assert mr.best_of_all({"sst2": good}, "AOPC", ["chefer", "random_mask", "mask_lrp"])[0] == "holds"
    verdict, detail = mr.best_of_all({"sst2": good, "snli": bad}, "AOPC", ["chefer", "mask_lrp"])
    assert verdict == "fails" and "snli: vs GAE (chefer)" in detail
    # M_synt removed moves AOPC by 0.2 >> 0.005: the ablation claim fails; identical rows hold
    assert mr.ablation_claim(good)[0] == "fails"
    same = {"methods": {m: {"aopc": np.full(5, 0.3)} for m in ("mask_lrp", *ml.ABLATIONS)}}
    assert mr.ablation_claim(same)[0] == "holds"
    n = 40
    falling = {"rates": [0.5, 1.0], "mask_lrp": {"aopc": np.full(n, 0.5) + np.linspace(0, .1, n)},
               "per_rate": {0.5: [{"aopc": np.full(n, 0.4)}], 1.0: [{"aopc": np.full(n, 0.3)}]}}
    assert mr.corruption_claim(falling)[0] == "holds"
    flat = {**falling, "per_rate": {0.5: [{"aopc": np.full(n, 0.6)}], 1.0: [{"aopc": np.full(n, 0.7)}]}}
    assert mr.corruption_claim(flat)[0] == "fails"


@pytest.mark.parametrize("pos_block, synt_block, n, verdict", [(0, 1, 4, "holds"), (1, 0, 4, "fails"),
                                                                (0, 1, 1, "inconclusive")])
def test_depth_interval_over_heads(monkeypatch, pos_block, synt_block, n, verdict):
    run, cfg = _run()
    pos, synt = np.zeros((2, 4), bool), np.zeros((2, 4, 3), bool)
    pos[pos_block, :n] = True
    synt[synt_block, :n, 1] = True
    monkeypatch.setattr(heads, "positional_heads", lambda *a, **k: pos)
    monkeypatch.setattr(heads, "syntactic_heads", lambda *a, **k: synt)
    iv = heads.depth_interval(run.stats, **ml.thresholds(cfg))
    assert iv.estimate == pos_block - synt_block and stats.decide(iv, 0.0, "less") == verdict
    pos[:] = False
    assert heads.depth_interval(run.stats, **ml.thresholds(cfg)) is None


def test_figures_have_the_expected_panels():
    run, cfg = _run()
    fig5 = mv.head_heatmaps({"sst2": run, "snli": run}, cfg, ml.DATASET_LABELS)
    assert len([a for a in fig5.axes if a.get_title()]) == 4
    ev = ml.evaluate_dataset(run, cfg)
    assert "mask_lrp_no_pos" in ev["methods"]  # the ablations are evaluated but not drawn
    fig3 = mv.curves_figure(ev, cfg["fractions"], ml.LABELS, ml.TABLE_METHODS)
    assert len(fig3.axes[0].lines) == len(ml.BASELINES) + 2
    depth = heads.head_depth(run.stats, **ml.thresholds(cfg))
    assert set(depth) == {"positional_mean_block", "syntactic_mean_block", "n_positional", "n_syntactic"}


def test_sentence_figure_and_widgets_with_a_real_tokenizer():
    from lab.models.loading import load_tokenizer
    from tests.test_heads import _tiny_text_model

    tok = load_tokenizer("minilm")
    model = _tiny_text_model(tok.vocab_size)
    batch = dict(tok(["a fine film", "a dull , long film"], padding=True, return_tensors="pt"))
    run, cfg = _run(model=model, batch=batch, labels=(1, 0), tokenizer=tok)
    tokens, scores, tgt = mr.sentence_scores(run, ml.FIG6_SENTENCE, ["mask_lrp", *ml.FIG6_BASELINES], cfg)
    fig6 = mv.sentence_figure(tokens, scores, "mask_lrp", ml.FIG6_BASELINES, ml.LABELS, run.label_names[tgt])
    assert len(fig6.axes) == 1 + len(ml.FIG6_BASELINES) + 1  # panels + the shared colour bar of the signed Δs
    assert tokens[:3] == ["it", "'", "s"] and all(float(s.abs().max()) == pytest.approx(1.0) for s in scores.values())
    render = mv.sentence_renderer(mr.sentence_explainer({"sst2": run}, cfg), ml.LABELS)
    fig = render("sst2", "a fine ||| film", "mask_lrp", "rollout", 0.0, 0.3, False)
    assert len(fig.axes) == 3 + 1  # method, baseline, Δ, and the shared colour bar of the signed Δ
    with pytest.raises(ml.ExperimentError):
        render("sst2", "  ", "mask_lrp", "rollout", 0.1, 0.8, True)
    assert len(mv.heads_renderer({"sst2": run}, cfg, ml.DATASET_LABELS)(0.0, 0.5, True).axes) >= 2


def test_table_rows_are_memoised_per_mask_and_model(lab_dirs, monkeypatch):
    run, cfg = _run()
    cfg = {**cfg, "use_cache": True}
    first = ml.evaluate_dataset(run, cfg)
    calls, scorings = [], []
    real, real_aopc = explain_batch.explain, ml.aopc_lodds
    monkeypatch.setattr(explain_batch, "explain", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    monkeypatch.setattr(ml, "aopc_lodds", lambda *a, **k: scorings.append(1) or real_aopc(*a, **k))
    again = ml.evaluate_dataset(run, cfg)
    assert calls == [] and scorings == []
    for key in ("AOPC", "LOdds", "aopc_curve"):
        assert again["methods"]["mask_lrp"][key] == first["methods"]["mask_lrp"][key]
    assert torch.equal(again["scores"]["chefer"], first["scores"]["chefer"])
    # another head mask, or other weights, is computed and not looked up
    ml.run_method(run, "mask_lrp", cfg, mask=torch.ones_like(run.mask))
    assert calls == ["mask_lrp"]  # (its AOPC is looked up only if the scores are bit-identical to a stored row's)
    other, _ = _run(model=tiny_bert(seed=5))
    before = len(scorings)
    ml.run_method(other, "chefer", cfg)
    assert calls == ["mask_lrp", "chefer"] and len(scorings) == before + 1


# ---- readings, size-matched sweep, head statistics without [CLS]/[SEP] ------------------------------------------


def test_readings_are_named_parameters_with_the_code_as_default():
    cfg = ml.settings("default")
    assert cfg["reading"] == "code" and cfg["n_eval"]["imdb"] >= 100
    assert ml.reading_params("mask_lrp", "code") == {"renormalize": False, "recorded_rule": "naive",
                                                     "rollout_normalize": True, "matmul": "halve",
                                                     "absolute": "abs_sum"}
    assert ml.reading_params("chefer", "text") == {"rollout_normalize": False, "matmul": "normalized",
                                                   "absolute": "sum_abs"}
    assert ml.reading_params("cam", "code") == {}
    run, _ = _run()
    assert ml.method_params(run, "mask_lrp", cfg)[1]["renormalize"] is False
    assert ml.method_params(run, "chefer", {**cfg, "reading": "text"})[1]["rollout_normalize"] is False
    with pytest.raises(ml.ExperimentError, match="reading must be"):
        ml.settings("smoke", reading="both")
    with pytest.raises(ml.ExperimentError, match="head_specials"):
        ml.settings("smoke", head_specials="drop")
    assert set(mv.readings_frame(ml.READINGS, cfg["reading"]).columns) == {"code", "text", "why", "used"}


def test_no_renormalisation_only_multiplies_by_the_mask():
    """renormalize=False is the authors' `cam * head_mask`; True rescales to the incoming total (the text)."""
    from lab.relevance import rules

    r = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    mask = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(rules.mask_heads(r, mask, renormalize=False), r * mask[None, :, None, None])
    kept = rules.mask_heads(r, mask)
    torch.testing.assert_close(kept.sum((1, 2, 3)), r.sum((1, 2, 3)))


@pytest.mark.parametrize("reading", ["code", "text"])
def test_mask_lrp_renormalisation_matters_and_all_ones_is_chefer(reading):
    model, batch = tiny_bert(layers=3), text_batch((9, 6, 7))
    params = ml.reading_params("mask_lrp", reading)
    sparse = torch.tensor([[0.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    a = lab.explain(model, batch, "mask_lrp", target=0, head_mask=sparse, **params).scores
    b = lab.explain(model, batch, "mask_lrp", target=0, head_mask=sparse,
                    **{**params, "renormalize": not params["renormalize"]}).scores
    assert (a - b).abs().max() > 1e-4
    ones = lab.explain(model, batch, "mask_lrp", target=0, head_mask=torch.ones(3, 4), **params).scores
    chefer = lab.explain(model, batch, "chefer", target=0, **ml.reading_params("chefer", reading)).scores
    assert torch.equal(ones, chefer) == (reading == "text")  # code: MGAE records twice GAE's A relevance
    same = lab.explain(model, batch, "mask_lrp", target=0, head_mask=torch.ones(3, 4),
                       **{**params, "recorded_rule": None}).scores
    assert torch.equal(same, chefer)


def test_head_margin_is_positive_exactly_on_the_mask_and_orders_top_m():
    st = _stats(3, 4, seed=2)
    cfg = ml.settings("smoke")
    margin = heads.head_margin(st, **ml.thresholds(cfg))
    mask = heads.head_mask(st, cfg["xi_synt"], cfg["xi_pos"], cfg["include_self"])
    assert np.array_equal(margin > 0, mask.numpy() > 0)
    top = heads.top_mask(margin, 5)
    assert int(top.sum()) == 5 and margin[top.numpy() > 0].min() >= margin[top.numpy() == 0].max()
    assert torch.equal(heads.top_mask(margin, int(mask.sum())), mask)


def test_size_sweep_pairs_top_m_with_random_m_at_every_size():
    run, cfg = _run()
    cfg = {**cfg, "size_sweep_sizes": (2, 4, 99)}
    sweep = ml.size_sweep(run, cfg)
    assert sweep["sizes"] == [2, 4, 8] and sweep["n_examples"] == 3  # 99 is capped at the 8 heads
    table = mr.size_sweep_table(sweep)
    for m in sweep["sizes"]:
        assert len(sweep["per_size"][m]["random"]) == cfg["size_sweep_seeds"]
        assert table[f"m = {m}"]["n"] == cfg["size_sweep_seeds"] * sweep["n_examples"]  # every seed paired
    # at m = all heads every mask is all ones: top and random coincide
    assert table["m = 8"]["ΔAOPC"] == pytest.approx(0.0, abs=1e-12)
    assert set(table) == {"m = 2", "m = 4", "m = 8"} and "ΔLOdds_high" in table["m = 2"]
    fig = mv.size_sweep_figure(sweep, {"AOPC": 0.3, "LOdds": -1.0})
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3  # top, random, GAE reference


@pytest.mark.parametrize("shift, verdict", [(0.1, "holds"), (-0.1, "fails"), (0.0, "inconclusive")])
def test_size_claim_on_synthetic_sweeps(shift, verdict):
    rng = np.random.default_rng(0)
    n = 50

    def rows(d):
        return {"aopc": 0.4 + d + 0.05 * rng.standard_normal(n), "lodds": -1.0 - d + 0.05 * rng.standard_normal(n)}

    per_size = {m: {"top": rows(shift), "random": [{**rows(0.0), "seed": s} for s in range(3)]} for m in (2, 4)}
    sweep = {"sizes": [2, 4], "per_size": per_size}
    verdicts = {col: stats.decide(mr.size_sweep_interval(sweep, col), 0.0, mr.BETTER[col]) for col in mr.BETTER}
    assert set(verdicts.values()) == {verdict}


def test_build_results_adds_the_size_sweep_and_the_other_reading(lab_dirs):
    run, cfg = _run()
    cfg = {**cfg, "profile": "default", "size_sweep_sizes": (2, 4)}
    ev = ml.evaluate_dataset(run, cfg)
    other = ml.evaluate_text_reading({"sst2": run}, cfg)
    assert set(other["sst2"]["methods"]) == {"chefer", "mask_lrp", "random_mask"}
    assert other["sst2"]["methods"]["mask_lrp"]["AOPC"] != ev["methods"]["mask_lrp"]["AOPC"]
    res = mr.build_results(cfg, {"sst2": run}, {"sst2": ev}, sizes=ml.size_sweep(run, cfg), other_reading=other)
    assert {"size_sweep", "readings"} <= set(res.tables)
    claims = {c["claim"]: c for c in res.claims}
    size = [c for c in claims if "top-m heads" in c]
    text = [c for c in claims if "(text reading)" in c]
    assert len(size) == 1 and len(text) == 2 and "[" in claims[size[0]]["detail"]
    assert res.meta["readings"]["renormalize"]["code"] is False and res.meta["reading"] == "code"


def test_positions_without_specials_skip_cls_and_sep():
    """Oracle: the argmax of every content query over content keys, counted per offset by loops."""
    model = tiny_bert(layers=2)
    batch = text_batch((9, 6, 7))
    counts, n_queries, shares = heads.positions_without_specials(model, [batch], max_offset=8)
    att = model(**batch, output_attentions=True).attentions
    valid = batch["attention_mask"].bool()
    special = valid & ((batch["input_ids"] == 2) | (batch["input_ids"] == 3))
    content = valid & ~special
    expected = np.zeros_like(counts)
    to_special = np.zeros(len(att))
    for b, a in enumerate(att):
        for i in range(batch["input_ids"].shape[0]):
            keys = content[i].nonzero()[:, 0]
            for h in range(a.shape[1]):
                for q in keys.tolist():
                    row = a[i, h, q]
                    k = int(keys[row[keys].argmax()])
                    expected[b, h, k - q + 8] += 1
                    to_special[b] += bool(special[i, int(row.masked_fill(~valid[i], -1).argmax())])
    assert np.array_equal(counts, expected) and n_queries == int(content.sum())
    np.testing.assert_allclose(shares, to_special / (int(content.sum()) * att[0].shape[1]))
