"""Committed notebooks: each .py percent script has an output-free .ipynb twin with the same cells, a
parameters cell defining `profile`, and no function definitions (logic lives in lab/)."""
import ast
import json
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.stem)
def test_ipynb_twin_matches_script_and_has_no_outputs(script):
    twin = script.with_suffix(".ipynb")
    assert twin.exists(), f"{twin.name} missing: run `jupytext --to ipynb {script}`"
    raw = json.loads(twin.read_text())
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{twin.name} has outputs"
    ours = [(c.cell_type, c.source) for c in jupytext.read(script).cells]
    theirs = [(c.cell_type, c.source) for c in jupytext.read(twin).cells]
    assert ours == theirs, f"{twin.name} is out of sync with {script.name}: run `jupytext --sync {script}`"


@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_first_and_no_functions(script):
    cells = jupytext.read(script).cells
    code = [c for c in cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be tagged parameters"
    assert "profile" in code[0].source
    for cell in code:
        tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.startswith(("%", "!"))))
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert not defs, f"{script.name} defines {[d.name for d in defs]}: move them into lab/"
