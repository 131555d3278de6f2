"""`python -m lab diff`: two results folders/files compared on tables and claims, timings and provenance ignored."""
import json

import pytest

from lab import cli, stats
from lab.results import Results, diff_results


def _results(ours=61.25, verdict_value=0.3, seconds=1.0, elapsed=5.0):
    res = Results("01_demo", "default", meta={"elapsed_s": elapsed})
    res.add_table("table1", "AUC", {"chefer": {"neg": (54.16, ours), "pos": 20.5}}, {"neg": "higher"})
    res.add_table("sst2_cost", "timings", {"chefer": {"s_per_example": seconds}})
    res.add_table("quality", "with a timing column", {"chefer": {"aopc": 0.5, "s_per_example": seconds}})
    iv = stats.Interval(verdict_value, verdict_value - 0.1, verdict_value + 0.1, 10)
    res.add_claim("chefer beats rollout", interval=iv, margin=0.0, kind="greater", detail="paired")
    return res


def _folder(tmp_path, name, **kw):
    folder = tmp_path / name
    folder.mkdir()
    _results(**kw).save(folder / "01_demo.json")
    return folder


def test_identical_runs_differ_only_in_timings_and_meta(tmp_path, capsys):
    a = _folder(tmp_path, "a")
    b = _folder(tmp_path, "b", seconds=9.0, elapsed=99.0)
    assert diff_results(a, b) == []
    assert cli.main(["diff", str(a), str(b)]) == 0
    assert "identical" in capsys.readouterr().out


def test_a_changed_cell_and_claim_are_reported(tmp_path, capsys):
    a = _folder(tmp_path, "a")
    b = _folder(tmp_path, "b", ours=61.26, verdict_value=-0.5)
    diffs = diff_results(a, b)
    assert any("table1[chefer][neg].ours" in d for d in diffs)
    assert any("verdict 'holds' != 'fails'" in d for d in diffs)
    assert any("interval estimate" in d for d in diffs)
    assert cli.main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert f"{len(diffs)} difference(s)" in out


def test_tolerance_and_files(tmp_path):
    a = _folder(tmp_path, "a", ours=1.0)
    b = _folder(tmp_path, "b", ours=1.0 + 1e-7)
    assert diff_results(a, b) != []
    assert diff_results(a / "01_demo.json", b / "01_demo.json", tol=1e-5) == []
    assert cli.main(["diff", "--tol", "1e-5", str(a), str(b)]) == 0


def test_missing_notebook_table_and_claim(tmp_path):
    a = _folder(tmp_path, "a")
    b = tmp_path / "b"
    b.mkdir()
    assert diff_results(a, b) == ["01_demo: only in A"]
    data = json.loads((a / "01_demo.json").read_text())
    del data["tables"]["table1"]
    data["claims"] = []
    (b / "01_demo.json").write_text(json.dumps(data))
    diffs = diff_results(a, b)
    assert "01_demo: table table1 only in A" in diffs
    assert any(d.startswith("01_demo: claim only in A") for d in diffs)


def test_bad_input_is_one_line(tmp_path, capsys):
    a = _folder(tmp_path, "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "01_demo.json").write_text('{"x": 1}')
    assert cli.main(["diff", str(a), str(tmp_path / "b")]) == 2
    assert cli.main(["diff", str(a), str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "not a results file" in err and "no such results file or folder" in err
    with pytest.raises(ValueError):
        diff_results(a, tmp_path / "b")
