import json
import math
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from lab.results import Results, claims_markdown, export_csv, load_results, table_frame, to_jsonable, versions


def make_results(profile="smoke"):
    res = Results("01_demo", profile, meta={"model": "tiny", "n_examples": np.int64(8), "seed": 0})
    res.add_table("table1", "Perturbation AUC",
                  {"chefer": {"neg": (54.16, np.float32(61.25)), "pos": {"paper": 17.03, "ours": float("nan")}},
                   "rollout": {"neg": (53.1, 50.0), "pos": 20.5}},
                  direction={"neg": "higher", "pos": "lower"})
    res.add_claim("chefer best on negative perturbation", np.bool_(True), detail="61.2 vs 50.0")
    res.add_claim("chefer best on positive perturbation", torch.tensor(False))
    res.add_claim("segmentation mAP ordering", None, detail="no ImageNet-segmentation offline")
    return res


def test_round_trip_keeps_tables_claims_and_meta(lab_dirs):
    path = make_results().save()
    assert path == lab_dirs["results"] / "smoke" / "01_demo.json"  # a smoke run never lands in the default slot
    with pytest.raises(FileNotFoundError):
        load_results("01_demo")
    loaded = load_results("01_demo", profile="smoke")
    data = loaded.to_dict()
    assert data["notebook"] == "01_demo" and data["profile"] == "smoke"
    assert data["meta"]["n_examples"] == 8 and isinstance(data["meta"]["n_examples"], int)
    assert set(data["meta"]["versions"]) >= {"torch", "transformers", "captum", "python"}
    assert data["meta"]["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert data["meta"]["elapsed_s"] >= 0
    cell = data["tables"]["table1"]["rows"]["chefer"]["neg"]
    assert cell["paper"] == 54.16 and cell["ours"] == pytest.approx(61.25)
    assert data["tables"]["table1"]["rows"]["rollout"]["pos"] == {"paper": None, "ours": 20.5}
    assert [c["holds"] for c in data["claims"]] == [None, None, None]  # smoke decides nothing
    assert {c["verdict"] for c in data["claims"]} == {"not evaluated"}
    assert [c["holds"] for c in make_results("default").to_dict()["claims"]] == [True, False, None]
    assert load_results(path).to_dict()["tables"] == data["tables"]  # explicit path works too


def test_nan_becomes_null_and_file_is_strict_json(lab_dirs):
    path = make_results().save()
    text = path.read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["tables"]["table1"]["rows"]["chefer"]["pos"] == {"paper": 17.03, "ours": None}
    assert to_jsonable({"a": np.array([1.0, np.inf]), "b": (np.float64("nan"),)}) == {"a": [1.0, None], "b": [None]}


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "x.json"
    make_results().save(target)
    make_results().save(target)  # overwrite
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_table_frame_side_by_side():
    frame = table_frame(make_results(), "table1")
    assert list(frame.columns) == [("neg", "paper"), ("neg", "ours"), ("pos", "paper"), ("pos", "ours")]
    assert list(frame.index) == ["chefer", "rollout"]
    assert frame.loc["chefer", ("neg", "paper")] == 54.16
    assert math.isnan(frame.loc["chefer", ("pos", "ours")])
    arrows = table_frame(make_results().to_dict(), "table1", arrows=True)
    assert [c[0] for c in arrows.columns[::2]] == ["neg ↑", "pos ↓"]
    with pytest.raises(KeyError, match="table1"):
        table_frame(make_results(), "nope")


def test_claims_markdown_says_which_hold():
    md = claims_markdown(make_results("default"))
    assert md.startswith("**1 of 3 claims hold, 1 fail, 0 inconclusive, 1 not evaluated.**")
    hold, fail, untested = md.index("Claims that hold"), md.index("do not hold"), md.index("were not evaluated")
    assert hold < md.index("chefer best on negative") < fail < md.index("chefer best on positive") < untested
    assert "61.2 vs 50.0" in md
    assert claims_markdown(Results("x")) == "_No claims were checked._"


def test_bad_input_gives_clear_errors(lab_dirs):
    res = Results("x")
    with pytest.raises(ValueError, match="direction"):
        res.add_table("t", "c", {"m": {"a": 1.0}}, direction={"a": "up"})
    with pytest.raises(ValueError, match="holds"):
        res.add_claim("c", "yes")
    with pytest.raises(ValueError, match="pair"):
        res.add_table("t", "c", {"m": {"a": (1, 2, 3)}})
    with pytest.raises(ValueError, match="bare name"):
        Results("results/x.json")
    with pytest.raises(FileNotFoundError, match="make reproduce"):
        load_results("missing")
    assert versions()["python"].count(".") == 2


def test_claims_decided_by_intervals_store_the_interval_and_verdict():
    from lab.stats import Interval

    res = Results("x", "default")
    res.add_claim("A beats B", interval=Interval(0.3, 0.1, 0.5, 40), margin=0.0, kind="greater")
    res.add_claim("A beats C", interval=Interval(0.1, -0.1, 0.3, 40), margin=0.0, kind="greater")
    res.add_claim("A equals D", interval=Interval(0.5, 0.3, 0.7, 40), margin=0.05, kind="within")
    res.add_claim("every dataset", verdict="inconclusive")
    got = [(c["verdict"], c["holds"]) for c in res.to_dict()["claims"]]
    assert got == [("holds", True), ("inconclusive", None), ("fails", False), ("inconclusive", None)]
    assert res.claims[0]["interval"] == {"estimate": 0.3, "low": 0.1, "high": 0.5, "n": 40, "level": 0.95,
                                         "margin": 0.0, "kind": "greater"}
    md = claims_markdown(res)
    assert "2 inconclusive" in md and "95 % CI 0.1 to 0.5" in md
    with pytest.raises(ValueError, match="margin"):
        res.add_claim("no margin", interval=Interval(0.3, 0.1, 0.5, 40))
    with pytest.raises(ValueError, match="contradicts"):
        res.add_claim("bad", interval=Interval(0.3, 0.1, 0.5, 40), margin=0.0, kind="greater", verdict="fails")
    with pytest.raises(ValueError, match="verdict"):
        res.add_claim("bad", verdict="maybe")


def test_smoke_marks_sampled_claims_not_evaluated_but_keeps_exact_checks():
    from lab.stats import Interval

    res = Results("x", "smoke")
    res.add_claim("sampled", interval=Interval(0.3, 0.1, 0.5, 4), margin=0.0, kind="greater")
    res.add_claim("model untouched", True, exact=True)
    assert [(c["verdict"], c["holds"]) for c in res.claims] == [("not evaluated", None), ("holds", True)]


def test_results_file_records_provenance(lab_dirs, monkeypatch):
    from lab import cache

    monkeypatch.setenv("LAB_OVERRIDES", '{"n_examples": 50, "methods": ["chefer"]}')
    monkeypatch.setattr(cache, "_CHECKPOINTS", {"models/sst2-abc": "0123abcd"})
    prov = json.loads(make_results().save().read_text())["meta"]["provenance"]
    assert prov["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", prov["commit"])
    assert prov["dirty"] in (None, True, False) and (prov["dirty"] is None) == (prov["commit"] is None)
    assert prov["code_digest"] == cache.code_digest()
    assert prov["profile"] == "smoke"
    assert prov["overrides"] == {"n_examples": 50, "methods": ["chefer"]}
    assert prov["checkpoints"] == {"models/sst2-abc": "0123abcd"}
    assert set(prov["data"]) >= {"dir", "scope", "files", "bytes", "digest"} and isinstance(prov["data"]["files"], int)
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(iso, prov["started"]) and re.fullmatch(iso, prov["finished"])
    assert prov["started"] <= prov["finished"]
    assert isinstance(prov["machine"]["hostname"], str) and isinstance(prov["machine"]["cpu"], str)
    assert prov["machine"]["cores"] >= 1 and prov["threads"] == torch.get_num_threads()
    assert all(v is None or isinstance(v, float) for v in prov["load"].values()) and set(prov["load"]) == {"start",
                                                                                                          "end"}
    monkeypatch.setenv("LAB_OVERRIDES", "not json")  # recorded as given, never an exception at the end of a run
    assert make_results().to_dict()["meta"]["provenance"]["overrides"] == "not json"


def test_data_fingerprint_follows_names_sizes_and_mtimes(tmp_path):
    from lab.provenance import data_fingerprint

    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "dev.tsv").write_text("a\t1\n")
    first = data_fingerprint(tmp_path)
    assert (first["files"], first["bytes"]) == (1, 4) and first["digest"] == data_fingerprint(tmp_path)["digest"]
    (tmp_path / "sst2" / "dev.tsv").write_text("ab\t1\n")
    assert data_fingerprint(tmp_path)["digest"] != first["digest"]
    assert data_fingerprint(tmp_path / "missing")["digest"] is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_dirty_flag_follows_a_modified_tracked_file(tmp_path, monkeypatch):
    from lab.provenance import git_state

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    assert git_state(tmp_path) == (None, None)  # not a checkout
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "one")
    commit, dirty = git_state(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and dirty is False
    (tmp_path / "notes.txt").write_text("untracked files do not count\n")
    assert git_state(tmp_path) == (commit, False)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path) == (commit, True)
    (tmp_path / "sub").mkdir()
    assert git_state(tmp_path / "sub") == (None, None)  # inside a checkout but not its top: not lab's repository
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert git_state(tmp_path) == (None, None)  # git missing


def test_loaded_results_keep_their_own_run_metadata(tmp_path):
    old = {"notebook": "01_demo", "profile": "default", "meta": {"seed": 3}, "tables": {}, "claims": []}
    path = tmp_path / "01_demo.json"
    path.write_text(json.dumps(old))
    assert load_results(path).to_dict()["meta"] == {"seed": 3}  # no versions or provenance of this process


def test_markdown_and_frames_do_not_compute_provenance(monkeypatch):
    from lab import provenance

    monkeypatch.setattr(provenance, "provenance", lambda profile=None: pytest.fail("provenance computed"))
    res = make_results("default")
    assert claims_markdown(res).startswith("**1 of 3") and table_frame(res, "table1").shape == (2, 4)


def test_table_markdown_formats_numbers_and_text():
    from lab.results import table_markdown

    res = Results("x").add_table("t", "c", {"m": {"a": (54.16, 12345.6), "b": 9.05e9, "ref": "Bach | 2015"}},
                                 direction={"a": "higher"})
    assert table_markdown(res, "t").split("\n") == ["| method | a ↑ paper | a ↑ ours | b ours | ref ours |",
                                                    "| --- | ---: | ---: | ---: | ---: |",
                                                    "| m | 54.16 | 12346 | 9.05e+09 | Bach \\| 2015 |"]


def test_export_csv_writes_our_values_of_every_table(tmp_path):
    res = Results("00_toy", "default").add_table("t1", "toy", {"a": {"x": (1.0, 2.0), "y": 3.0}, "b": {"x": 4.0}})
    res.add_table("t2", "toy", {"r": {"z": 5}})
    paths = export_csv(res, tmp_path / "csv")
    assert [p.name for p in paths] == ["t1.csv", "t2.csv"]
    assert paths[0].read_text().splitlines() == ["method,x,y", "a,2.0,3.0", "b,4.0,"]  # ours only, paper left out
    assert not [p for p in (tmp_path / "csv").iterdir() if p.suffix != ".csv"]  # no temp files left
