"""Notebook 07 (the benchmark): protocol settings, explanations + cost, metrics, token sweep, randomisation check,
results — on tiny random models (seconds)."""
import dataclasses
import json

import numpy as np
import pytest
import torch

import lab
from lab.analysis.randomisation import randomised_copy
from lab.experiments import ExperimentError
from lab.experiments import benchmark as B
from lab.experiments import benchmark_results as BR
from lab.metrics import MetricInputError
from lab.metrics import ranking as R
from lab.results import export_csv
from lab.viz import benchmark as vb
from tests.models import MASK_ID, PAD_ID, UNK_ID, text_batch, tiny_bert, tiny_vit

TEXT_METHODS = ["saliency", "rollout", "leave_one_out", "erasure", "random", "mask_lrp"]


def _cfg(methods, **kw):
    return B.settings("smoke", methods=methods, progress=False, threads=1, batch_size=2, perturb_batch=32,
                      deletion_max=2, **kw)


@pytest.fixture(scope="module")
def text_setup():
    model = tiny_bert(num_labels=2, dtype=torch.float32)
    batch = text_batch(lengths=(10, 8, 9, 7), seed=1)
    rationale = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    rationale[:, 2:4] = True
    task = B.text_task("movies", model, batch, labels=[0, 1, 1, 0], rationale=rationale)
    cfg = _cfg(TEXT_METHODS, n={"movies": 4}, n_sweep={"movies": 3}, n_random={"movies": 2}, ks=(2, 3))
    run = B.explain_task(task, cfg)
    return task, cfg, run


@pytest.fixture(scope="module")
def image_setup():
    from lab.data import images as img_data

    model = tiny_vit(num_labels=8, dtype=torch.float32)
    test = img_data.make_dataset("test", 6, seed=0, image_size=16)
    cfg = _cfg(["rollout", "leave_one_out", "random"], n={"vit": 6}, n_random={"vit": 3})
    task = B.image_task("vit", model, test, cfg)
    return task, cfg, B.explain_task(task, cfg)


# ---- settings -------------------------------------------------------------------------------------------


def test_settings_defaults_and_validation():
    cfg = B.settings("default")
    assert cfg["methods"] == tuple(lab.EXPLAINERS) and cfg["token"] == "pad" and cfg["mode"] == "replace"
    partial = B.settings("default", n={"sst2": 5, "vit": None})  # a dict names some tasks; None keeps the profile's
    assert partial["n"] == {**B.PROFILES["default"]["n"], "sst2": 5}
    assert B.settings("default", n=7)["n"] == {t: 7 for t in B.TASKS}
    for bad in (dict(token="cls"), dict(tokens=["pad", "sep"]), dict(methods=["nope"]), dict(tasks=["imagenet"]),
                dict(mode="mask"), dict(n={"sst2": 0}), dict(sweep_metrics=["kendall_loo"]), dict(randomise_layers=0)):
        with pytest.raises(ExperimentError):
            B.settings("smoke", **bad)
    with pytest.raises(ExperimentError, match="unknown profile"):
        B.settings("huge")


# ---- explanations and cost ---------------------------------------------------------------------------------


def test_explain_task_scores_cost_and_skips(text_setup):
    task, cfg, run = text_setup
    assert set(run.scores) == set(TEXT_METHODS) - {"mask_lrp"}
    assert "head statistics" in run.skipped["mask_lrp"]
    for method, scores in run.scores.items():
        assert scores.shape == task.inputs["input_ids"].shape
        assert torch.all(scores[~task.valid] == 0), method  # padding carries no score
        cost = run.cost[method]
        assert cost["s_per_example"] > 0 and cost["ratio_fb"] > 0 and np.isfinite(cost["peak_mb"])
    assert run.fb_seconds > 0 and run.timings["explain_s"] >= 0
    # batched explanations equal one-by-one explanations of the predicted class
    single = lab.explain(task.model, task.rows([1]), "saliency", target=task.targets[1:2]).scores[0]
    assert torch.allclose(run.scores["saliency"][1, :single.shape[0]], single.float(), atol=1e-5)


def test_head_mask_enables_mask_lrp(text_setup):
    task, cfg, _ = text_setup
    cfg_params = B.method_params(dataclasses.replace(task, head_mask=torch.ones(2, 4)), "mask_lrp", cfg)
    assert cfg_params["head_mask"].shape == (2, 4)
    assert B.method_params(task, "erasure", B.settings("smoke", token="unk"))["token"] == "unk"


def test_token_ids_follow_the_model():
    task = B.text_task("sst2", tiny_bert(num_labels=2, dtype=torch.float32), text_batch(), labels=[0, 1, 0])
    assert [B.token_id(task, t) for t in ("pad", "mask", "unk")] == [PAD_ID, MASK_ID, UNK_ID]
    with pytest.raises(ExperimentError):
        B.token_id(task, "sep")


# ---- metrics --------------------------------------------------------------------------------------------


def test_quality_table_text(text_setup):
    task, cfg, run = text_setup
    quality = B.quality_table(task, run, cfg)
    assert set(quality) == set(run.scores)
    for method, row in quality.items():
        expected = set(B.TEXT_METRICS) - ({"kendall_loo"} if method == "leave_one_out" else set())
        assert set(run.per_example[method]) == expected and len(run.per_example[method]["aopc"]) == len(task)
        assert set(row) == expected, method
        assert 0 <= row["token_f1"] <= 1 and 0 <= row["auc_rep"] <= 1
        assert method == "leave_one_out" or -1 <= row["kendall_loo"] <= 1
    # a method whose scores equal leave-one-out's has Kendall τ = 1 with it
    run.scores["loo_copy"] = run.scores["leave_one_out"].clone()
    try:
        tau = B.method_metrics(task, run, "loo_copy", cfg, metrics=["kendall_loo"])[0]["kendall_loo"]
        assert tau == pytest.approx(1.0)
    finally:
        del run.scores["loo_copy"]


def test_replacement_token_changes_the_metric(text_setup):
    task, cfg, run = text_setup
    pad = B.method_metrics(task, run, "saliency", cfg, "pad", metrics=["aopc", "lodds"])[0]
    mask = B.method_metrics(task, run, "saliency", cfg, "mask", metrics=["aopc", "lodds"])[0]
    assert set(pad) == {"aopc", "lodds"} and pad["aopc"] != pytest.approx(mask["aopc"])
    two = B.method_metrics(task, run, "saliency", cfg, "pad", n=2, metrics=["aopc"])[0]
    assert two["aopc"] != pytest.approx(pad["aopc"])  # a subset is a different average


def test_token_sweep_structure(text_setup):
    task, cfg, run = text_setup
    sweep = B.token_sweep(task, run, cfg)
    assert sweep["n"] == 3 and set(sweep["values"]) == set(B.TOKENS)
    assert sweep["token_ids"] == {"pad": PAD_ID, "mask": MASK_ID, "unk": UNK_ID}
    for metric in cfg["sweep_metrics"]:
        assert set(sweep["tau"][metric]) == {"pad~mask", "pad~unk", "mask~unk"}
        assert all(-1 <= v <= 1 for v in sweep["tau"][metric].values())
        assert sweep["best"][metric]["pad"] in run.scores
    assert list(vb.sweep_frame(sweep, B.TOKEN_LABELS).index) == list(cfg["sweep_metrics"])


def test_rank_frame_and_agreement():
    quality = {"a": {"aopc": 0.3, "lodds": -1.0, "auc_rep": 0.2},
               "b": {"aopc": 0.2, "lodds": -0.5, "auc_rep": 0.4},
               "c": {"aopc": 0.1, "lodds": -0.1, "auc_rep": 0.3}}
    ranks = R.rank_frame(quality)
    assert list(ranks.index) == ["a", "b", "c"]
    assert ranks.loc["a", "lodds"] == 1 and ranks.loc["c", "aopc"] == 3 and ranks.loc["c", "auc_rep"] == 2
    assert list(R.ranked_table(quality, "auc_rep")["method"]) == ["a", "c", "b"]
    agree = R.metric_agreement(quality)
    assert agree.loc["aopc", "lodds"] == pytest.approx(1.0)  # lodds is "lower is better": same ranking
    assert agree.loc["aopc", "auc_rep"] == pytest.approx(1 / 3)
    assert R.ranking_overview(quality).loc[1].tolist() == ["a", "a", "a"]
    with pytest.raises(MetricInputError, match="unknown metric"):
        R.ranked_table(quality, "nope")


def test_image_task_metrics(image_setup):
    task, cfg, run = image_setup
    assert run.scores["rollout"].shape == (6, 4, 4)  # the patch grid
    quality = B.quality_table(task, run, cfg)
    assert set(quality["rollout"]) == set(B.IMAGE_METRICS)
    assert "kendall_loo" not in quality["leave_one_out"]
    for row in quality.values():
        assert 0 <= row["positive_auc"] <= 100 and 0 <= row["mIoU"] <= 100


# ---- model randomisation --------------------------------------------------------------------------------


def test_randomised_copy_reinitialises_only_the_top(text_setup):
    task, _, _ = text_setup
    model = task.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone = randomised_copy(model, n_layers=1, seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    after = clone.state_dict()
    top = "bert.encoder.layer.1.attention.self.query.weight"
    assert not torch.equal(after[top], before[top]) and not torch.equal(after["classifier.weight"],
                                                                         before["classifier.weight"])
    bottom = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(after[bottom], before[bottom]) and torch.equal(
        after["bert.embeddings.word_embeddings.weight"], before["bert.embeddings.word_embeddings.weight"])


def test_randomisation_check(text_setup):
    task, cfg, run = text_setup
    before = [p.clone() for p in task.model.parameters()]
    rand = B.randomisation_check(task, run, cfg)
    assert rand["original_untouched"] and all(torch.equal(p, q) for p, q in zip(before, task.model.parameters()))
    assert rand["n"] == 2 and set(rand["rows"]) == set(run.scores)
    assert rand["rows"]["random"]["spearman"] == pytest.approx(1.0)  # input-only scores ignore the weights
    assert rand["rows"]["leave_one_out"]["spearman"] < 0.99
    # re-running the explanations of the trained model is unchanged (the check did not alter it)
    again = B.explain_all(task, "saliency", cfg, n=2)
    assert torch.allclose(again, run.scores["saliency"][:2])


# ---- results, figures, widget, CLI -----------------------------------------------------------------------


def test_build_results_tables_claims_and_exports(text_setup, image_setup, lab_dirs):
    tasks = {"movies": text_setup[0], "vit": image_setup[0]}
    runs = {"movies": text_setup[2], "vit": image_setup[2]}
    cfg = text_setup[1]
    quality = {t: B.quality_table(tasks[t], runs[t], cfg) for t in tasks}
    sweep = {t: B.token_sweep(tasks[t], runs[t], cfg, quality[t]) for t in tasks}
    rand = {t: B.randomisation_check(tasks[t], runs[t], {**cfg, "n_random": {"movies": 2, "vit": 2}}) for t in tasks}
    res = BR.build_results(cfg, tasks, runs, quality, sweep, rand, {"sst2": "not cached"})
    for name in ("movies_quality", "movies_quality_half_widths", "movies_ranks", "movies_cost",
                 "movies_metric_agreement", "movies_token_sweep", "movies_randomisation", "vit_quality",
                 "vit_quality_half_widths", "vit_randomisation"):
        assert name in res.tables, name
    assert "vit_token_sweep" not in res.tables  # images have no replacement token
    assert res.tables["movies_quality"]["direction"]["lodds"] == "lower"
    assert res.meta["skipped_methods"]["movies"]["mask_lrp"]
    smoke_claims = [c for c in res.claims if "untouched" not in c["claim"]]
    assert smoke_claims and all(c["holds"] is None for c in smoke_claims)  # smoke: sample sizes say nothing
    assert all(c["holds"] is True for c in res.claims if "untouched" in c["claim"])
    path = res.save()
    assert json.loads(path.read_text())["tables"]["movies_cost"]["rows"]["saliency"]["ratio_fb"]["ours"] > 0
    written = export_csv(res, lab_dirs["results"] / "csv")
    assert {p.name for p in written} >= {"movies_quality.csv", "vit_cost.csv", "movies_token_sweep.csv"}
    costs = {t: r.cost for t, r in runs.items()}
    md = vb.summary_markdown(quality, costs, sweep, rand, B.TASK_LABELS, B.TOKEN_LABELS)
    assert B.TASK_LABELS["movies"] in md and "Token sweep" in md and "Randomisation" in md

    figs = vb.figures(quality, costs, B.TASK_LABELS)
    assert set(figs) == {"ranks", "metric_agreement", "cost_quality"}
    assert [len(f.axes) >= len(quality) for f in figs.values()] == [True] * 3
    assert vb.randomisation_figure(rand).axes


def test_widget_renderer(text_setup):
    task, cfg, run = text_setup
    render = BR.widget_renderer({"movies": task}, {"movies": run}, cfg)
    fig = render("movies", "aopc", 2, "mask")
    assert "[MASK]" in fig.axes[0].get_title() and len(fig.axes[0].patches) == len(run.scores)
    with pytest.raises(ExperimentError, match="does not apply"):
        render("movies", "mIoU", 2, "pad")
    with pytest.raises(ExperimentError, match="not run"):
        render("sst2", "aopc", 2, "pad")


def test_cli_rejects_bad_arguments_without_loading_models(capsys):
    assert BR.main(["--profile", "smoke", "--methods", "nope"]) == 2
    assert "unknown method" in capsys.readouterr().err
    from lab.cli import main as cli_main

    assert cli_main(["benchmark", "--profile", "smoke", "--tasks", "imagenet"]) == 2


@pytest.mark.skipif("input_marginalization" not in lab.EXPLAINERS, reason="explainer not registered")
def test_input_marginalization_is_skipped_with_a_reason(text_setup):
    task, cfg, _ = text_setup
    with pytest.raises(B.MethodSkipped, match="marginalization=False"):
        B.method_params(task, "input_marginalization", cfg)
    with pytest.raises(B.MethodSkipped, match="no cached masked LM"):
        B.method_params(task, "input_marginalization", {**cfg, "marginalization": True})
    mlm = object()
    params = B.method_params(dataclasses.replace(task, mlm=mlm), "input_marginalization",
                             {**cfg, "marginalization": True})
    assert params["mlm"] is mlm


def test_missing_dataset_skips_the_task(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))  # no datasets at all
    cfg = B.settings("smoke", tasks=["movies"], train_missing=False, progress=False)
    tasks, skipped = B.load_tasks(cfg)
    assert tasks == {} and "movies" in skipped["movies"] and "missing" in skipped["movies"]


def test_memoised_stages_reuse_values_and_follow_their_inputs(text_setup, lab_dirs, monkeypatch):
    task, _, _ = text_setup
    cfg = _cfg(["saliency", "leave_one_out", "random"], n={"movies": 4}, n_sweep={"movies": 2},
               n_random={"movies": 2}, ks=(2, 3), use_cache=True)
    run = B.explain_task(task, cfg)
    quality, sweep = B.quality_table(task, run, cfg), B.token_sweep(task, run, cfg)
    rand = B.randomisation_check(task, run, cfg)
    stored = sorted(p.name.split("-")[0] for p in (lab_dirs["cache"] / "benchmark").iterdir())
    assert stored.count("explain") == 3 and stored.count("metrics") == 3 and stored.count("randomised") == 3

    def recomputed(*args, **kwargs):
        raise AssertionError("a memoised value was recomputed")

    for name in ("explain_all", "method_metrics"):
        monkeypatch.setattr(B, name, recomputed)
    again = B.explain_task(task, cfg)
    assert all(torch.equal(again.scores[m], run.scores[m]) for m in run.scores)
    assert again.cost == run.cost  # the cost of the run that measured it
    assert B.quality_table(task, again, cfg) == quality and B.token_sweep(task, again, cfg)["values"] == sweep["values"]
    assert B.randomisation_check(task, again, cfg)["rows"] == rand["rows"]
    # other scores (or a changed protocol setting) are computed, not looked up
    again.scores["saliency"] = again.scores["saliency"] * 2
    with pytest.raises(AssertionError, match="recomputed"):
        B.quality_table(task, again, cfg)
    with pytest.raises(AssertionError, match="recomputed"):
        B.explain_task(task, {**cfg, "token": "unk"})


# ---- claims decided by paired bootstrap intervals over examples ---------------------------------------------------


def synthetic_per_example(means, n=80, noise=0.05, seed=0):
    """{method: {metric: [n]}} around `means[method][metric]`, with a shared per-example offset (pairing matters)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.3, n)
    return {m: {c: base + v + rng.normal(0, noise, n) for c, v in cols.items()} for m, cols in means.items()}


def quality_of(pe):
    return {m: {c: float(np.nanmean(v)) for c, v in cols.items()} for m, cols in pe.items()}


def test_benchmark_claims_hold_fail_or_stay_open_on_their_intervals():
    # aopc: higher is better; auc_rep: lower is better
    means = {"good": {"aopc": 0.5, "auc_rep": 0.2}, "ok": {"aopc": 0.3, "auc_rep": 0.4},
             "random": {"aopc": 0.0, "auc_rep": 0.6}}
    pe = synthetic_per_example(means)
    assert R.no_single_best_claim("t", quality_of(pe), pe)["verdict"] == "fails"  # "good" is best everywhere
    assert R.beats_random_claim("t", pe)["verdict"] == "holds"
    agree = R.metric_agreement_claim("t", pe, n_boot=50)
    assert agree["interval"].low > 0.5  # both metrics rank good > ok > random
    means["ok"] = {"aopc": 0.7, "auc_rep": 0.4}  # ok best on aopc, good best on auc_rep
    pe = synthetic_per_example(means)
    assert R.no_single_best_claim("t", quality_of(pe), pe)["verdict"] == "holds"
    means["ok"] = {"aopc": 0.0, "auc_rep": 0.6}  # no better than random
    pe = synthetic_per_example(means, n=10, noise=0.3)
    claim = R.beats_random_claim("t", pe)
    assert claim["verdict"] in ("inconclusive", "fails") and "ok" in claim["detail"]
    pe["good"]["aopc"][:3] = np.nan  # undefined values are left out pairwise
    assert R.paired_advantage(pe, "good", "random", "aopc").n == 7
    half = R.half_widths(pe)
    assert 0 < half["good"]["aopc"] < half["good"]["auc_rep"] * 2 and half["ok"]["aopc"] is not None


def test_benchmark_randomisation_and_sweep_claims():
    rng = np.random.default_rng(0)
    rho = {"saliency": rng.normal(0.1, 0.05, 30), "lrp": rng.normal(0.9, 0.05, 30), "random": np.ones(30)}
    change, untouched = R.randomisation_claims("t", rho, 2, True)
    assert change["verdict"] == "fails" and "lrp" in change["detail"] and untouched["exact"]
    rho["lrp"] = rng.normal(0.1, 0.05, 30)
    assert R.randomisation_claims("t", rho, 2, True)[0]["verdict"] == "holds"
    means = {m: {"aopc": v} for m, v in (("a", 0.6), ("b", 0.4), ("c", 0.2), ("d", 0.0))}
    per = {"pad": synthetic_per_example(means, seed=1), "mask": synthetic_per_example(means, seed=2)}
    sweep = {"per_example": per, "tau": {"aopc": {"pad~mask": 1.0}}, "n": 80}
    claim = BR.sweep_claim("t", sweep, ["pad", "mask"], n_boot=50)
    assert claim["interval"].estimate == pytest.approx(1.0) and claim["kind"] == "greater"


def test_conservative_rows_rank_attnlrp_against_the_baselines_paired_and_oriented():
    means = {"attnlrp": {"aopc": 0.5, "auc_rep": 0.2}, "chefer": {"aopc": 0.3, "auc_rep": 0.4},
             "integrated_gradients": {"aopc": 0.6}, "random": {"aopc": 0.0, "auc_rep": 0.6}}
    rows = R.paired_rows(synthetic_per_example(means), BR.CONSERVATIVE, BR.CONSERVATIVE_BASELINES)
    assert set(rows) == {"attnlrp vs chefer | aopc", "attnlrp vs chefer | auc_rep",
                         "attnlrp vs integrated_gradients | aopc"}  # no cp_lrp, no gae, random never a baseline
    aopc, rep, ig = (rows[k] for k in ("attnlrp vs chefer | aopc", "attnlrp vs chefer | auc_rep",
                                       "attnlrp vs integrated_gradients | aopc"))
    assert 0.17 < aopc["estimate"] < 0.23 and aopc["low"] > 0 and aopc["n"] == 80
    assert 0.17 < rep["estimate"] < 0.23 and rep["low"] > 0  # auc_rep: lower is better, so attnlrp's 0.2 wins
    assert ig["high"] < 0  # integrated gradients is better on aopc
