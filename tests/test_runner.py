import json

import nbformat
import pytest

from lab.runner import (PROFILES, NotebookError, discover_notebooks, main_reproduce, parameter_names, profile_settings,
                        reproduce, resolve_notebooks)


def test_profiles_and_unknown_profile():
    assert profile_settings("smoke")["name"] == "smoke"
    assert list(PROFILES) == ["smoke", "default", "paper"]
    assert all(profile_settings(p)["description"] for p in PROFILES)
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
def test_reproduce_injects_profile_and_writes_outputs(tmp_path, lab_dirs, fixtures_dir, capsys):
    source = fixtures_dir / "runner_ok.py"
    before = source.read_text()
    records = reproduce([source], profile="smoke", overrides={"n_points": 4}, output_dir=tmp_path / "executed")
    assert [(r.notebook, r.status) for r in records] == [("runner_ok", "ok")]
    assert "runner_ok" in capsys.readouterr().out  # one progress line per notebook

    assert not (lab_dirs["results"] / "fixture_runner.json").exists()  # smoke never overwrites default results
    results = json.loads((lab_dirs["results"] / "smoke" / "fixture_runner.json").read_text())
    assert results["profile"] == "smoke"  # the injected profile reached the notebook
    assert results["claims"][0]["holds"] is True
    assert results["meta"]["n_points"] == 4  # overrides too
    assert (lab_dirs["figures"] / "smoke" / "fixture_runner" / "curve.png").exists()
    assert (lab_dirs["figures"] / "smoke" / "fixture_runner" / "curve.pdf").exists()

    executed = nbformat.read(records[0].output, as_version=4)
    assert records[0].output == (tmp_path / "executed" / "runner_ok.ipynb").resolve()
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert any(o.get("output_type") == "execute_result" for c in executed.cells if c.cell_type == "code"
               for o in c.outputs)
    assert source.read_text() == before  # the committed source is untouched
    assert not (fixtures_dir / "_executed").exists()


@pytest.mark.slow
def test_failing_notebook_is_named_with_its_error(tmp_path, lab_dirs, fixtures_dir):
    with pytest.raises(NotebookError) as err:
        reproduce([fixtures_dir / "runner_fails.ipynb"], profile="smoke", output_dir=tmp_path)
    message = str(err.value)
    assert message.splitlines()[0] == "1 of 1 notebooks failed:"
    assert "runner_fails failed at In [" in message
    assert "ValueError: fixture failure under profile smoke" in message
    assert err.value.records[0].status == "failed"
    # the committed notebook keeps no outputs; the executed copy shows where it stopped
    committed = nbformat.read(fixtures_dir / "runner_fails.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")
    assert (tmp_path / "runner_fails.ipynb").exists()


def test_missing_parameters_cell_and_cli_exit_codes(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    path = tmp_path / "01_noparams.ipynb"
    nbformat.write(nb, path)
    assert parameter_names(nb) is None
    # fails before any kernel starts, with the notebook named
    assert main_reproduce([str(path), "--output-dir", str(tmp_path / "out")]) == 1
    assert "01_noparams has no cell tagged 'parameters'" in capsys.readouterr().err
    assert main_reproduce(["does_not_exist"]) == 2
    assert "matches no notebook" in capsys.readouterr().err


def test_parameter_names_reads_the_tagged_cell(fixtures_dir):
    from lab.runner import load_source

    assert parameter_names(load_source(fixtures_dir / "runner_ok.py")) == {"profile", "n_points"}
    assert parameter_names(load_source(fixtures_dir / "runner_fails.ipynb")) == {"profile"}


@pytest.mark.slow
def test_if_changed_skips_a_notebook_whose_inputs_are_unchanged(tmp_path, lab_dirs, fixtures_dir):
    out = tmp_path / "executed"
    first = reproduce([fixtures_dir / "runner_ok.py"], profile="smoke", overrides={"n_points": 4}, output_dir=out)
    assert first[0].status == "ok"
    results = lab_dirs["results"] / "smoke" / "fixture_runner.json"
    written = results.stat().st_mtime_ns
    again = reproduce([fixtures_dir / "runner_ok.py"], profile="smoke", overrides={"n_points": 4}, output_dir=out,
                      force=False)
    assert again[0].status == "up-to-date" and again[0].ok and "inputs unchanged" in again[0].error
    assert results.stat().st_mtime_ns == written  # nothing was executed
    changed = reproduce([fixtures_dir / "runner_ok.py"], profile="smoke", overrides={"n_points": 5}, output_dir=out,
                        force=False)
    assert changed[0].status == "ok"  # another override is another input
    assert json.loads(results.read_text())["meta"]["n_points"] == 5
    forced = reproduce([fixtures_dir / "runner_ok.py"], profile="smoke", overrides={"n_points": 5}, output_dir=out)
    assert forced[0].status == "ok"  # force (the default) always executes


def test_fingerprint_covers_source_profile_overrides_and_lab_code(tmp_path, fixtures_dir, monkeypatch):
    from lab import runner

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
