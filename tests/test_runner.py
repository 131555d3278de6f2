import json

import nbformat
import pytest

from lab import config, runner
from lab.runner import (PROFILES, NotebookError, discover_notebooks, main_reproduce, parameter_defaults,
                        profile_settings, reproduce, resolve_notebooks)


@pytest.fixture
def executed_dir(tmp_path, monkeypatch):
    """LAB_EXECUTED_DIR in a temporary folder (the default profile's executed copies; others in /<profile>)."""
    path = tmp_path / "executed"
    monkeypatch.setenv("LAB_EXECUTED_DIR", str(path))
    return path


def test_profiles_and_unknown_profile():
    assert profile_settings("smoke")["name"] == "smoke"
    assert list(PROFILES) == list(config.PROFILES) == ["smoke", "default", "paper"]
    assert all(profile_settings(p)["description"] == config.PROFILES[p] for p in PROFILES)
    with pytest.raises(ValueError, match="unknown profile 'fast'; choose one of smoke, default, paper"):
        profile_settings("fast")


def test_discovery_prefers_the_paired_script(tmp_path, fixtures_dir):
    for name in ("01_a.py", "01_a.ipynb", "02_b.ipynb", "03_c.py", "notes.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "_executed").mkdir()
    (tmp_path / "_executed" / "04_d.ipynb").write_text("")
    assert [p.name for p in discover_notebooks(tmp_path)] == ["01_a.py", "02_b.ipynb", "03_c.py"]
    assert [p.name for p in resolve_notebooks(["02", "c", "01_a"], tmp_path)] == ["02_b.ipynb", "03_c.py", "01_a.py"]
    with pytest.raises(ValueError, match="'zz' matches no notebook; available: 01_a, 02_b, 03_c"):
        resolve_notebooks(["zz"], tmp_path)


@pytest.mark.slow
def test_reproduce_injects_profile_writes_outputs_and_shows_progress(lab_dirs, executed_dir, fixtures_dir, capsys):
    source = fixtures_dir / "runner_ok.py"
    before = source.read_text()
    records = reproduce([source], profile="smoke", overrides={"n_points": 4})
    assert [(r.notebook, r.status) for r in records] == [("runner_ok", "ok")]
    out = capsys.readouterr().out
    assert "[1/1] runner_ok  ok" in out  # one summary line per notebook
    assert "[runner_ok] cell 1/5 (" in out and "[runner_ok] cell 5/5 (" in out  # 4 cells + injected parameters
    assert "| fixture stderr line" in out  # the kernel's stderr, streamed
    assert "| fixture bar: 100%|" in out and "4/4" in out  # tqdm.auto draws a console bar, not a widget

    assert not (lab_dirs["results"] / "runner_ok.json").exists()  # smoke never overwrites default results
    results_file = lab_dirs["results"] / "smoke" / "runner_ok.json"
    results = json.loads(results_file.read_text())
    assert results["profile"] == "smoke"  # the injected profile reached the notebook
    assert results["claims"][0]["holds"] is True
    assert results["meta"]["n_points"] == 4  # overrides too
    assert (lab_dirs["figures"] / "smoke" / "runner_ok" / "curve.png").exists()
    assert (lab_dirs["figures"] / "smoke" / "runner_ok" / "curve.pdf").exists()

    output = executed_dir / "smoke" / "runner_ok.ipynb"
    assert records[0].output == output.resolve() and not (executed_dir / "runner_ok.ipynb").exists()
    executed = nbformat.read(output, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert executed.metadata["lab"]["profile"] == "smoke" and executed.metadata["lab"]["overrides"] == {"n_points": 4}
    stamp = json.loads((executed_dir / "smoke" / "runner_ok.stamp.json").read_text())
    assert stamp["profile"] == "smoke" and stamp["overrides"] == {"n_points": 4}
    assert stamp["results"]["path"] == str(results_file) and len(stamp["results"]["sha256"]) == 64
    assert {"fingerprint", "seconds", "finished"} <= set(stamp)
    assert source.read_text() == before  # the committed source is untouched
    assert not (fixtures_dir / "_executed").exists()

    # the executed smoke copy opened and run in JupyterLab: a kernel without LAB_PROFILE, the notebook decides
    from nbclient import NotebookClient

    results_file.unlink()
    NotebookClient(executed, kernel_manager_class=runner._kernel_manager_class(),
                   resources={"metadata": {"path": str(fixtures_dir)}}).execute()
    assert json.loads(results_file.read_text())["profile"] == "smoke"
    assert not list(lab_dirs["results"].glob("*.json")) and not (lab_dirs["figures"] / "runner_ok").exists()


@pytest.mark.slow
def test_failing_notebook_is_named_with_its_failing_line(tmp_path, lab_dirs, fixtures_dir):
    with pytest.raises(NotebookError) as err:
        reproduce([fixtures_dir / "runner_fails.ipynb"], profile="smoke", output_dir=tmp_path)
    message = str(err.value)
    assert message.splitlines()[0] == "1 of 1 notebooks failed:"
    assert "runner_fails failed at In [" in message
    assert "line 2 `raise ValueError(f\"fixture failure under profile {profile}\")`" in message  # not `y = 2`
    assert "ValueError: fixture failure under profile smoke" in message
    assert err.value.records[0].status == "failed"
    assert not runner.stamp_path(tmp_path / "runner_fails.ipynb").exists()
    # the committed notebook keeps no outputs; the executed copy shows where it stopped
    committed = nbformat.read(fixtures_dir / "runner_fails.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")
    assert (tmp_path / "runner_fails.ipynb").exists()


def test_missing_parameters_cell_and_cli_exit_codes(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    path = tmp_path / "01_noparams.ipynb"
    nbformat.write(nb, path)
    assert parameter_defaults(nb) is None
    # fails before any kernel starts, with the notebook named
    assert main_reproduce([str(path), "--output-dir", str(tmp_path / "out")]) == 1
    assert "01_noparams has no cell tagged 'parameters'" in capsys.readouterr().err
    assert main_reproduce(["does_not_exist"]) == 2
    assert "matches no notebook" in capsys.readouterr().err


def test_parameter_defaults_read_the_tagged_cell(fixtures_dir):
    from lab.runner import load_source

    assert parameter_defaults(load_source(fixtures_dir / "runner_ok.py")) == {
        "profile": "default", "n_points": 3, "stop_early": False}
    assert parameter_defaults(load_source(fixtures_dir / "runner_fails.ipynb")) == {"profile": "default"}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "profile = 'default'\nn: int = 2\nsizes = list(range(3))", metadata={"tags": ["parameters"]})])
    assert parameter_defaults(nb) == {"profile": "default", "n": 2, "sizes": runner.NO_LITERAL}


BAD_OVERRIDES = [
    (["--set", "n_pionts=4"], "runner_ok has no parameter 'n_pionts'; its parameters: n_points, stop_early"),
    (["--set", "profile=default"], "--set profile=...: the profile is chosen with --profile"),
    (["--set", "=3"], "--set '=3': expected NAME=VALUE"),
    (["--set", "x"], "--set 'x': expected NAME=VALUE"),
    (["--set", "n_points=many"], "runner_ok: --set n_points=many: n_points expects an int, e.g. n_points=3"),
    (["--set", "n_points=2.5"], "n_points expects an int"),
    (["--set", "stop_early=1"], "stop_early expects True or False, e.g. stop_early=False"),
    (["--set", "n_points=1", "--set", "n_points=2"], "--set n_points=... is given twice"),
    # valid for the first notebook, unknown to the second: the first does not run either
    (["runner_fails.ipynb", "--set", "n_points=4"], "runner_fails has no parameter 'n_points'; its parameters: "
                                                    "none besides profile"),
]


@pytest.mark.parametrize("argv, message", BAD_OVERRIDES, ids=[" ".join(a) for a, _ in BAD_OVERRIDES])
def test_bad_overrides_exit_2_before_any_kernel_starts(argv, message, tmp_path, lab_dirs, fixtures_dir, capsys,
                                                       monkeypatch):
    monkeypatch.setattr(runner, "_execute", lambda *a, **k: pytest.fail("a kernel was started"))
    out = tmp_path / "out"
    notebooks = [str(fixtures_dir / a) for a in argv if a.endswith(".ipynb")]
    options = [a for a in argv if not a.endswith(".ipynb")]
    code = main_reproduce([str(fixtures_dir / "runner_ok.py"), *notebooks, "--profile", "smoke", "--output-dir",
                           str(out), *options])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()  # nothing executed


def test_overrides_are_typed_by_the_defaults():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "profile = 'default'\nmethods = ['chefer', 'rollout']\nalpha = 0.5\nmodel = 'minilm'\ndatasets = None\n"
        "pairs = (1, 2)", metadata={"tags": ["parameters"]})])
    U = runner.Unparsed
    with pytest.raises(ValueError, match=r"methods expects a list, e.g. methods=\['chefer'\]$"):
        runner.check_overrides("01_x", nb, {"methods": U("chefer")})
    with pytest.raises(ValueError, match=r"methods expects a list, e.g. methods=\['chefer'\]$"):
        runner.check_overrides("01_x", nb, {"methods": U("'chefer'")})
    with pytest.raises(ValueError, match="datasets=sst2: not a Python literal; quote a string, e.g. datasets='sst2'"):
        runner.check_overrides("01_x", nb, {"datasets": U("sst2")})
    with pytest.raises(ValueError, match="alpha expects a number, e.g. alpha=0.5"):
        runner.check_overrides("01_x", nb, {"alpha": "0.3"})  # the Python API gets no parsing
    assert runner.check_overrides("01_x", nb, {
        "methods": U("['chefer']"), "alpha": U("1"), "model": U("bert-base"), "datasets": U("['sst2']"),
        "pairs": U("[3, 4]")}) == {"methods": ["chefer"], "alpha": 1.0, "model": "bert-base",
                                   "datasets": ["sst2"], "pairs": [3, 4]}
    assert runner.check_overrides("01_x", nb, {"model": U("123"), "alpha": 2}) == {"model": "123", "alpha": 2.0}


@pytest.mark.slow
def test_if_changed_skips_a_notebook_whose_inputs_are_unchanged(tmp_path, lab_dirs, fixtures_dir):
    out = tmp_path / "executed"
    first = reproduce([fixtures_dir / "runner_ok.py"], profile="smoke", overrides={"n_points": 4}, output_dir=out)
    assert first[0].status == "ok"
    results = lab_dirs["results"] / "smoke" / "runner_ok.json"
    written = results.stat().st_mtime_ns
    again = reproduce([fixtures_dir / "runner_ok.py"], profile="smoke", overrides={"n_points": 4}, output_dir=out,
                      force=False)
    assert again[0].status == "up-to-date" and again[0].ok and "inputs unchanged" in again[0].error
    assert results.stat().st_mtime_ns == written  # nothing was executed
    changed = reproduce([fixtures_dir / "runner_ok.py"], profile="smoke", overrides={"n_points": 5}, output_dir=out,
                        force=False)
    assert changed[0].status == "ok"  # another override is another input
    assert json.loads(results.read_text())["meta"]["n_points"] == 5


@pytest.mark.slow
def test_smoke_then_default_if_changed_runs_the_default_and_an_interrupted_run_is_not_up_to_date(
        lab_dirs, executed_dir, fixtures_dir, capsys):
    source = fixtures_dir / "runner_ok.py"
    assert reproduce([source], profile="smoke")[0].status == "ok"
    assert reproduce([source], profile="default", force=False)[0].status == "ok"
    assert json.loads((lab_dirs["results"] / "runner_ok.json").read_text())["profile"] == "default"
    assert nbformat.read(executed_dir / "runner_ok.ipynb", as_version=4).metadata["lab"]["profile"] == "default"
    # both runs keep their own executed copy, stamp and results: each is up to date
    assert reproduce([source], profile="smoke", force=False)[0].status == "up-to-date"
    assert reproduce([source], profile="default", force=False)[0].status == "up-to-date"
    # an executed copy of another profile in the default slot (the old shared layout) is not trusted
    saved = (executed_dir / "runner_ok.ipynb").read_bytes()
    (executed_dir / "runner_ok.ipynb").write_bytes((executed_dir / "smoke" / "runner_ok.ipynb").read_bytes())
    fingerprint = runner.input_fingerprint(source.resolve(), "default", {})
    assert "is of profile 'smoke'" in runner.stale_reason(
        executed_dir / "runner_ok.ipynb", "default", fingerprint, lab_dirs["results"] / "runner_ok.json")
    (executed_dir / "runner_ok.ipynb").write_bytes(saved)

    stamp = executed_dir / "runner_ok.stamp.json"
    with pytest.raises(NotebookError, match="KeyboardInterrupt"):  # Ctrl-C in the middle of a cell
        reproduce([source], profile="default", overrides={"stop_early": True})
    assert not stamp.exists()  # removed when the run started, not written back
    capsys.readouterr()
    rerun = reproduce([source], profile="default", force=False)  # the inputs of the complete run before
    assert rerun[0].status == "ok" and stamp.exists()
    assert "[runner_ok] runs: no stamp of a complete run" in capsys.readouterr().out


def _complete_run(tmp_path, profile="smoke"):
    """A stamp, an executed copy and a results file as a complete run of profile leaves them (no kernel)."""
    output, results = tmp_path / "01_x.ipynb", tmp_path / "01_x.json"
    cells = [nbformat.v4.new_code_cell(f"x = {i}", execution_count=i + 1) for i in range(3)]
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"lab": {"profile": profile}}), output)
    results.write_text(json.dumps({"notebook": "01_x", "profile": profile}))
    runner._write_stamp(output, profile, "f" * 64, {}, 1.0, results)
    return output, results


def test_stale_reason_trusts_only_complete_intact_runs(tmp_path):
    output, results = _complete_run(tmp_path)
    assert runner.stale_reason(output, "smoke", "f" * 64, results) is None
    assert runner.stale_reason(output, "smoke", "e" * 64, results) == "inputs changed since its last complete run"
    assert runner.stale_reason(output, "default", "f" * 64, results) == "the stamp is of profile 'smoke'"
    nb = nbformat.read(output, as_version=4)
    nb.cells[2].execution_count = None  # interrupted after 2 of 3 cells, with the stamp of an earlier run
    nbformat.write(nb, output)
    assert "is partial (2 of 3 cells ran)" in runner.stale_reason(output, "smoke", "f" * 64, results)
    output, results = _complete_run(tmp_path)
    nb = nbformat.read(output, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="E", evalue="", traceback=[])]
    nbformat.write(nb, output)
    assert "shows an error" in runner.stale_reason(output, "smoke", "f" * 64, results)
    output, results = _complete_run(tmp_path)
    results.write_text(json.dumps({"notebook": "01_x", "profile": "default"}))  # e.g. rewritten from JupyterLab
    assert "is of profile 'default'" in runner.stale_reason(output, "smoke", "f" * 64, results)
    results.write_text(json.dumps({"notebook": "01_x", "profile": "smoke", "meta": {}}))
    assert "was rewritten" in runner.stale_reason(output, "smoke", "f" * 64, results)
    results.unlink()
    assert "no results file" in runner.stale_reason(output, "smoke", "f" * 64, results)
    runner.stamp_path(output).write_text("{trunc")
    assert "unreadable stamp" in runner.stale_reason(output, "smoke", "f" * 64, results)


def test_console_progress_rate_limits_redrawn_bars(capsys, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(runner.time, "perf_counter", lambda: now[0])
    progress = runner.ConsoleProgress("01_x", 3)
    for t, text in [(0, "warning: something\n"),  # complete lines always
                    (1, "\rtrain:  10%|#   | 1/10"),
                    (2, "\rtrain:  20%|##  | 2/10\x1b[A"),  # 1 s later: not shown
                    (6, "\rtrain:  60%|######| 6/10"),  # 5 s after the first: shown
                    (7, "\rtrain: 100%|##########| 10/10\n")]:  # the final state of a bar that stays
        now[0] = float(t)
        progress.write(text)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["[01_x] 0.0 s | warning: something", "[01_x] 1.0 s | train:  10%|#   | 1/10",
                     "[01_x] 6.0 s | train:  60%|######| 6/10", "[01_x] 7.0 s | train: 100%|##########| 10/10"]


def test_fingerprint_covers_source_profile_overrides_and_lab_code(tmp_path, fixtures_dir, monkeypatch):
    source = tmp_path / "01_x.py"
    source.write_text("# %% tags=['parameters']\nprofile = 'default'\n")
    base = runner.input_fingerprint(source, "smoke", {})
    assert runner.input_fingerprint(source, "smoke", {}) == base
    assert runner.input_fingerprint(source, "default", {}) != base
    assert runner.input_fingerprint(source, "smoke", {"n": 1}) != base
    source.write_text("# %% tags=['parameters']\nprofile = 'smoke'\n")
    assert runner.input_fingerprint(source, "smoke", {}) != base
    changed_source = runner.input_fingerprint(source, "smoke", {})
    fake_repo = tmp_path / "repo"
    (fake_repo / "lab").mkdir(parents=True)
    (fake_repo / "lab" / "x.py").write_text("a = 1\n")
    monkeypatch.setattr(runner, "REPO_ROOT", fake_repo)
    code_a = runner.input_fingerprint(source, "smoke", {})
    (fake_repo / "lab" / "x.py").write_text("a = 2\n")
    assert code_a != runner.input_fingerprint(source, "smoke", {}) != changed_source
