import json
import re
import shutil
import subprocess

import pytest

from lab import config
from lab.cli import main as cli_main
from lab.report import PUBLISH_COMMAND, publish, summary_lines, write_report
from lab.results import Results
from lab.runner import discover_notebooks
from lab.stats import Interval


def save_demo(profile="default", notebook="01_demo"):
    res = Results(notebook, profile, meta={"model": "tiny"})
    res.add_table("table1", "Perturbation AUC",
                  {"chefer": {"neg": (54.16, 61.25), "pos": (17.03, 12.9)}, "rollout": {"neg": (53.1, 50.0)}},
                  direction={"neg": "higher", "pos": "lower"})
    res.add_table("cost", "Seconds per example", {"chefer": {"seconds": 0.5}})
    res.add_claim("chefer best on negative perturbation", True, detail="61.2 vs 50.0")
    res.add_claim("chefer best on positive perturbation", False)
    res.add_claim("A beats B", interval=Interval(0.1, -0.1, 0.3, 40), margin=0.0, kind="greater")
    res.add_claim("segmentation mAP ordering", None)
    return res.save()


def test_tables_show_the_paper_beside_ours_with_direction_arrows(lab_dirs):
    save_demo()
    md = write_report().read_text()
    assert "### table1: Perturbation AUC" in md
    assert "| method | neg ↑ paper | neg ↑ ours | pos ↓ paper | pos ↓ ours |" in md
    assert "| chefer | 54.16 | 61.25 | 17.03 | 12.9 |" in md
    assert "| rollout | 53.1 | 50 | — | — |" in md
    assert "| method | seconds ours |" in md and "| chefer | 0.5 |" in md  # the paper gives no value: ours only


def test_claims_are_counted_by_verdict(lab_dirs):
    save_demo()
    md = (lab_dirs["results"] / "REPORT.md")
    write_report()
    text = md.read_text()
    assert "**1 of 4 claims hold, 1 fail, 1 inconclusive, 1 not evaluated.**" in text
    assert "95 % CI -0.1 to 0.3" in text
    assert "| 01_demo | 1 | 1 | 1 | 1 |" in text
    line = next(s for s in summary_lines() if "01_demo" in s)
    assert "1 holds, 1 fails, 1 inconclusive, 1 not evaluated" in line
    assert summary_lines()[0].startswith("profile default: 1 of ")


def test_a_file_without_provenance_still_renders(lab_dirs):
    old = {"notebook": "01_demo", "profile": "default", "meta": {"elapsed_s": 130.0},
           "tables": {"t": {"caption": "c", "rows": {"m": {"acc": {"paper": 0.9, "ours": 0.8}}}}},
           "claims": [{"claim": "old style", "holds": True, "detail": ""}]}
    (lab_dirs["results"] / "01_demo.json").write_text(json.dumps(old))
    text = write_report().read_text()
    section = text[text.index("## 01_demo"):]
    assert section.split("\n")[2] == "provenance: not recorded · elapsed 2.2 min"
    assert "✅ old style" in section and "| m | 0.9 | 0.8 |" in section
    assert "commit not recorded" in next(s for s in summary_lines() if "01_demo" in s)


def test_provenance_line_names_commit_data_and_load(lab_dirs):
    save_demo()
    prov = json.loads((lab_dirs["results"] / "01_demo.json").read_text())["meta"]["provenance"]
    line = next(s for s in write_report().read_text().split("\n") if s.startswith("provenance:"))
    assert f"code `{prov['code_digest']}`" in line and f"`{prov['data']['digest']}`" in line
    assert f"{prov['started']} → {prov['finished']}" in line and f"threads {prov['threads']}" in line
    assert prov["commit"] is None or f"`{prov['commit']}`" in line


def test_another_profiles_file_is_flagged_not_mixed_in(lab_dirs, capsys):
    save_demo()
    smoke = save_demo("smoke", "02_demo")
    shutil.copy(smoke, lab_dirs["results"] / "02_demo.json")  # a smoke file in the default folder
    (lab_dirs["results"] / "03_demo.json").write_text("{truncated")
    assert cli_main(["report"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"02_demo +ERROR: 02_demo.json holds profile 'smoke' results, not 'default'", out)
    assert re.search(r"03_demo +ERROR: 03_demo.json cannot be read", out)
    text = (lab_dirs["results"] / "REPORT.md").read_text()
    assert text.count("### table1") == 1  # only 01_demo's tables
    assert "**error:** 02_demo.json holds profile 'smoke'" in text
    assert cli_main(["report", "--profile", "smoke"]) == 0  # its own folder reports it
    assert (lab_dirs["results"] / "smoke" / "REPORT.md").exists()


def test_figures_are_linked_relative_to_the_report(lab_dirs):
    save_demo("smoke")
    fig = lab_dirs["figures"] / "smoke" / "01_demo" / "curves.png"
    fig.parent.mkdir(parents=True)
    fig.write_bytes(b"png")
    out = write_report("smoke")
    link = re.search(r"\[curves\]\(([^)]+)\)", out.read_text()).group(1)
    assert link == "../../figures/smoke/01_demo/curves.png" and (out.parent / link).resolve() == fig.resolve()


def test_publish_writes_a_header_and_repository_figure_links(lab_dirs, tmp_path):
    path = save_demo()
    data = json.loads(path.read_text())
    prov = {**data["meta"]["provenance"], "commit": "a" * 40, "dirty": True, "finished": "2026-12-01T10:00:00Z",
            "machine": {"hostname": "box", "cpu": "AMD EPYC", "cores": 2}}
    data["meta"].update(elapsed_s=90.0, provenance=prov)
    path.write_text(json.dumps(data))
    old = {"notebook": "02_demo", "meta": {"elapsed_s": 60}, "tables": {}, "claims": []}  # before provenance
    (lab_dirs["results"] / "02_demo.json").write_text(json.dumps(old))
    (lab_dirs["figures"] / "01_demo").mkdir()
    (lab_dirs["figures"] / "01_demo" / "curves.png").write_bytes(b"png")
    out = tmp_path / "REPRODUCTION.md"
    text = publish(out=out).read_text()
    assert text.startswith("# Reproduction scorecard (profile `default`)")
    n = len(discover_notebooks()) + 2
    assert parse_header(text) == {"commit": f"`{'a' * 40}` (dirty); 1 results files record none",
                                  "date": "2026-12-01T10:00:00Z", "machine": "box (AMD EPYC, 2 cores)",
                                  "run time": f"2.5 min (sum of elapsed_s over 2 of {n} notebooks)"}
    assert "Figures: [curves](figures/01_demo/curves.png)" in text  # relative to the repository root
    assert publish(out=out, commit="aaaaaaa") == out
    with pytest.raises(ValueError, match="commit hash"):
        publish(out=out, commit="HEAD")
    with pytest.raises(ValueError, match="not the commit the results files record"):
        publish(out=out, commit="bbbbbbb")


def test_publish_takes_the_commit_from_the_command_line_when_files_record_none(lab_dirs, tmp_path):
    old = {"notebook": "01_demo", "meta": {"elapsed_s": 60}, "tables": {}, "claims": []}
    (lab_dirs["results"] / "01_demo.json").write_text(json.dumps(old))
    header = parse_header(publish(out=tmp_path / "R.md", commit="f2a507f").read_text())
    assert header["commit"] == "`f2a507f` (given with --commit: the results files record none)"
    assert header["machine"] == "not recorded" and header["run time"].startswith("60 s")
    assert "modification time" in header["date"]


def parse_header(text):
    """The header fields of a published report; fails when one is missing."""
    fields = dict(re.findall(r"^- (commit|date|machine|run time): (.+)$", text, flags=re.M))
    assert set(fields) == {"commit", "date", "machine", "run time"}, fields
    assert f"Generated by `{PUBLISH_COMMAND}`; do not edit." in text
    return fields


def test_committed_reproduction_md_parses_and_names_an_ancestor_commit():
    text = (config.REPO_ROOT / "REPRODUCTION.md").read_text()
    header = parse_header(text)
    sections = re.findall(r"^## (\S+)$", text, flags=re.M)
    assert sections == sorted(p.stem for p in discover_notebooks())  # one section per notebook
    commits = re.findall(r"`([0-9a-f]{7,40})`", header["commit"])
    assert commits, f"REPRODUCTION.md names no commit: {header['commit']!r}"
    if shutil.which("git") is None or not (config.REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot check that the commit is an ancestor of HEAD")
    shallow = subprocess.run(["git", "-C", str(config.REPO_ROOT), "rev-parse", "--is-shallow-repository"],
                             capture_output=True, text=True).stdout.strip()
    if shallow == "true":
        pytest.skip("a shallow clone lacks the history to check that the commit is an ancestor of HEAD")
    for commit in commits:
        check = subprocess.run(["git", "-C", str(config.REPO_ROOT), "merge-base", "--is-ancestor", commit, "HEAD"],
                               capture_output=True, text=True)
        assert check.returncode == 0, f"REPRODUCTION.md names {commit}, not an ancestor of HEAD {check.stderr}"


def test_report_and_provenance_code_do_not_change_the_code_digest(tmp_path, monkeypatch):
    from lab import cache

    root = tmp_path / "lab"
    for rel in ("cache.py", "report.py", "provenance.py", "metrics/x.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x = 1\n")
    monkeypatch.setattr(cache, "__file__", str(root / "cache.py"))
    monkeypatch.setattr(cache, "_CODE_DIGESTS", {})
    base = cache.code_digest()
    (root / "report.py").write_text("x = 2\n")
    (root / "provenance.py").write_text("x = 2\n")
    cache._CODE_DIGESTS.clear()  # the digest is computed once per process: clear it as a new process would
    assert cache.code_digest() == base  # memoised numbers stay valid when only the scorecard changes
    (root / "metrics/x.py").write_text("x = 2\n")
    cache._CODE_DIGESTS.clear()
    assert cache.code_digest() != base


def test_malformed_files_are_error_lines_and_missing_interval_values_render(lab_dirs):
    def write(name, **fields):
        data = {"notebook": name, "profile": "default", "meta": {}, "tables": {}, "claims": [], **fields}
        (lab_dirs["results"] / f"{name}.json").write_text(json.dumps(data))

    write("01_demo", claims=[{"claim": "c", "verdict": "maybe"}])
    write("02_demo", tables={"t": {"caption": "c", "rows": [1, 2]}})
    write("03_demo", claims=[{"claim": "nan estimate", "verdict": "inconclusive", "holds": None,
                              "interval": {"estimate": None, "low": None, "high": 0.2, "n": 0, "margin": 0.0}}])
    lines = {s.split()[0]: s for s in summary_lines()[1:]}
    assert "unknown verdict: ['c']" in lines["01_demo"] and "malformed meta or table" in lines["02_demo"]
    assert "ERROR" not in lines["03_demo"]
    assert "nan estimate [—, 95 % CI — to 0.2, n=0, margin 0]" in write_report().read_text()
