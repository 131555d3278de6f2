"""Execute the notebooks headless with injected parameters (papermill), e.g. ``python -m lab reproduce``.

Notebooks are ``notebooks/NN_name.py`` (jupytext percent scripts, the source of truth when present) and/or
``notebooks/NN_name.ipynb`` (output-free). Each has one cell tagged ``parameters`` that defines at least
``profile = "default"``; the runner checks ``--set`` overrides against that cell before any kernel starts,
injects ``profile="<name>"`` plus the overrides after it, and writes the executed copy and its stamp to
``lab.config.executed_dir(profile)`` (``notebooks/_executed/``, or ``notebooks/_executed/<profile>/``).
Committed notebooks are never written. The kernel is always this interpreter (the venv's), whatever
kernelspecs are installed; it gets ``LAB_PROFILE`` and ``LAB_OVERRIDES`` (a JSON object) in its environment.
While a notebook runs, the console shows which cell is executing and the kernel's stderr (progress bars,
warnings). A stamp is written only after a complete, successful run; ``--if-changed`` trusts nothing else.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from lab import config
from lab.config import REPO_ROOT
from lab.provenance import data_fingerprint

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOK_GLOB = "[0-9][0-9]_*"
PARAMETERS_TAG = "parameters"
CELL_TIMEOUT_S = {"smoke": 900}  # per cell; other profiles train for hours on a cold cache

# The profiles of lab.config, with the runner's settings for each.
PROFILES: dict[str, dict[str, Any]] = {
    name: {"description": description, "cell_timeout_s": CELL_TIMEOUT_S.get(name)}
    for name, description in config.PROFILES.items()}


def profile_settings(profile: str) -> dict[str, Any]:
    """The settings of ``profile`` (a copy, with its ``name``); ValueError for an unknown profile."""
    config.check_profile(profile)
    return {"name": profile, **PROFILES[profile]}


@dataclass
class RunRecord:
    notebook: str
    source: Path
    output: Path
    profile: str
    status: str  # "ok" | "failed" | "up-to-date" (skipped: same inputs as its last successful run)
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "up-to-date")


class NotebookError(RuntimeError):
    """One or more notebooks failed; ``records`` holds every run, failed or not."""

    def __init__(self, message: str, records: Sequence[RunRecord] = ()):
        super().__init__(message)
        self.records = list(records)


# --- finding and loading notebooks ---------------------------------------------------------------

def discover_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """Sources ``NN_name.py`` (preferred) or ``NN_name.ipynb`` in ``notebooks_dir``, sorted by name."""
    root = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS_DIR
    stems = {p.stem for ext in ("py", "ipynb") for p in root.glob(f"{NOTEBOOK_GLOB}.{ext}")}
    return [root / f"{s}.py" if (root / f"{s}.py").exists() else root / f"{s}.ipynb" for s in sorted(stems)]


def resolve_notebooks(names: Sequence[str | Path] | None,
                      notebooks_dir: str | Path | None = None) -> list[Path]:
    """Sources for ``names``: paths, full names ("01_chefer_vit"), numbers ("01") or bare names ("chefer_vit")."""
    available = discover_notebooks(notebooks_dir)
    if not names:
        return available
    chosen = []
    for name in names:
        path = Path(name)
        if path.suffix in (".py", ".ipynb") and path.exists():
            chosen.append(path)
            continue
        n = str(name)
        matches = [p for p in available if n in (p.stem, p.stem[:2], p.stem[3:])]
        if len(matches) != 1:
            listing = ", ".join(p.stem for p in available) or "none found"
            problem = "matches several notebooks" if matches else "matches no notebook"
            raise ValueError(f"{n!r} {problem}; available: {listing}")
        chosen.append(matches[0])
    return chosen


def load_source(source: Path):
    """The notebook as an nbformat v4 node; ``.py`` percent scripts are converted with jupytext."""
    import nbformat

    if source.suffix == ".py":
        import jupytext

        nb = jupytext.read(source)
    else:
        nb = nbformat.read(source, as_version=4)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


# --- parameters and overrides (checked before any kernel starts) ---------------------------------------

class Unparsed(str):
    """The text of a ``--set name=value`` override, parsed against the notebook's default (`check_overrides`)."""


class _NoLiteral:
    def __repr__(self) -> str:
        return "<not a literal>"


NO_LITERAL = _NoLiteral()  # the default of a parameter computed by an expression: any value is accepted
_TYPE_NAMES = {bool: "True or False", int: "an int", float: "a number", str: "a string", list: "a list",
               tuple: "a tuple", dict: "a dict"}


def parameter_defaults(nb) -> dict[str, Any] | None:
    """Name -> default value of every top-level assignment in the cell tagged ``parameters`` (``NO_LITERAL``
    where the value is not a Python literal); None when there is no such cell."""
    for cell in nb.cells:
        if cell.cell_type == "code" and PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                return {}
            defaults = {}
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
                for target in targets:
                    if isinstance(target, ast.Name):
                        try:
                            defaults[target.id] = ast.literal_eval(node.value)
                        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                            defaults[target.id] = NO_LITERAL
            return defaults
    return None


def split_override(text: str) -> tuple[str, Unparsed]:
    """``"name=value"`` -> (name, Unparsed(value)); ValueError in one line for anything else."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ValueError(f"--set {text!r}: expected NAME=VALUE with NAME a parameter, e.g. --set seed=1")
    return name, Unparsed(raw.strip())


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default``: Unparsed text is a Python literal (or a bare string where the default
    is a string); ints are accepted for floats; a list default needs a list."""
    if isinstance(value, Unparsed):
        text = str(value)
        try:
            value = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value = text if isinstance(default, str) else Unparsed(text)
        if isinstance(default, str) and not isinstance(value, str):
            value = text  # --set model=123 means the string "123"
    if default is None or default is NO_LITERAL:
        if isinstance(value, Unparsed):
            raise ValueError(f"--set {name}={value}: not a Python literal; quote a string, e.g. {name}={str(value)!r}")
        return value
    expected = type(default)
    accepted = (int, float) if expected is float else (list, tuple) if expected is tuple else (expected,)
    if isinstance(value, accepted) and not (isinstance(value, bool) and expected is not bool):
        return float(value) if expected is float else value
    example = [str(value)] if expected is list and isinstance(value, str) else default
    kind = _TYPE_NAMES.get(expected, f"a {expected.__name__}")
    raise ValueError(f"--set {name}={value}: {name} expects {kind}, e.g. {name}={example!r}")


def check_overrides(notebook: str, nb, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The overrides typed and checked against the parameters cell of ``nb``; ValueError naming the notebook
    for an unknown name, a value of the wrong type, or ``profile`` (chosen with --profile)."""
    overrides = dict(overrides or {})
    if "profile" in overrides:
        raise ValueError(f"--set profile=...: the profile is chosen with --profile ({', '.join(PROFILES)})")
    defaults = parameter_defaults(nb) or {}
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        known = ", ".join(sorted(set(defaults) - {"profile"})) or "none besides profile"
        raise ValueError(f"{notebook} has no parameter {', '.join(map(repr, unknown))}; its parameters: {known}")
    try:
        return {k: _coerce(k, v, defaults[k]) for k, v in overrides.items()}
    except ValueError as e:
        raise ValueError(f"{notebook}: {e}") from None


# --- executing -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _kernel_manager_class():
    """An AsyncKernelManager that always starts ``sys.executable -m ipykernel_launcher`` with this module loaded
    as an IPython extension (console progress bars, see `load_ipython_extension`)."""
    import zmq
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class CurrentInterpreterKernelManager(AsyncKernelManager):
        @default("transport_encryption")
        def _encrypt_when_possible(self):  # local TCP sockets with CurveZMQ keys when zmq supports them
            return "auto" if zmq.has("curve") else "disabled"

        @property
        def kernel_spec(self):
            if self._kernel_spec is None:
                path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
                self._kernel_spec = KernelSpec(
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                          f"--IPKernelApp.extensions={__name__}"],
                    display_name="Python (lab)", language="python",
                    metadata={"supported_encryption": ["curve"]},  # as ipykernel's own kernelspec
                    # `lab` importable without installation; figures inline even if MPLBACKEND=Agg is set
                    env={"PYTHONPATH": path, "MPLBACKEND": "module://matplotlib_inline.backend_inline"})
            return self._kernel_spec

    return CurrentInterpreterKernelManager


def load_ipython_extension(ipython) -> None:
    """In the runner's headless kernels `tqdm.auto` draws console bars on stderr, which the runner streams,
    instead of widgets that nobody sees."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tqdm's "notebook mode" warning
        import tqdm.auto
    import tqdm.std

    tqdm.auto.tqdm, tqdm.auto.trange = tqdm.std.tqdm, tqdm.std.trange


@contextlib.contextmanager
def _environ(**values: str):
    """Set environment variables (inherited by kernels started inside), restoring them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def profile_outputs(profile: str):
    """Run with ``LAB_PROFILE=profile``, so that child processes write `profile`'s folders (`lab.config`)."""
    return _environ(LAB_PROFILE=config.check_profile(profile))


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
UPDATE_EVERY_S = 5.0  # a progress bar redrawn with \r is shown at most this often


def _short(line: str, width: int = 80) -> str:
    line = line.strip()
    return line if len(line) <= width else line[:width - 3] + "..."


def _first_line(source: str) -> str:
    return _short(next((s for s in source.splitlines() if s.strip()), ""))


def _shown_text(text: str) -> str:
    """What a terminal would show of ``text`` after its carriage returns and escape codes."""
    parts = [p for p in _ANSI.sub("", text).split("\r") if p.strip()]
    return parts[-1].rstrip() if parts else ""


class ConsoleProgress:
    """The console view of one notebook run: the code cell being executed (``on_cell_start`` hook) and the
    kernel's stderr (a file-like ``write``), each line prefixed with the notebook's name and elapsed time.
    Complete lines are printed as they come; a bar redrawn with ``\\r`` at most every ``UPDATE_EVERY_S`` s."""

    def __init__(self, name: str, n_cells: int, update_every_s: float = UPDATE_EVERY_S):
        self.name, self.n_cells, self.update_every_s = name, n_cells, update_every_s
        self.started = time.perf_counter()
        self.cells_started = 0
        self.pending = ""  # stderr text after the last newline
        self.last_shown: dict[str, float] = {}

    def say(self, text: str) -> None:
        print(f"[{self.name}] {text}", flush=True)

    def elapsed(self) -> str:
        return f"{time.perf_counter() - self.started:.1f} s"

    def cell_started(self, cell, cell_index: int, **_: Any) -> None:
        if cell.cell_type == "code" and cell.source.strip():
            self.cells_started += 1
            self.say(f"cell {self.cells_started}/{self.n_cells} ({self.elapsed()}) {_first_line(cell.source)}")

    def write(self, text: str) -> None:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if _shown_text(line):
                self.say(f"{self.elapsed()} | {_shown_text(line)}")
        bar = _shown_text(self.pending)
        if bar:
            self.pending = "\r" + bar  # a bar redrawn with \r: keep only what it shows now
            key = bar.split(": ", 1)[0] if ": " in bar else ""
            now = time.perf_counter()
            if now - self.last_shown.get(key, -math.inf) >= self.update_every_s:
                self.last_shown[key] = now
                self.say(f"{self.elapsed()} | {bar}")

    def flush(self) -> None:
        pass


def _failing_line(error) -> str:
    """The line of the cell that failed (the last frame inside the cell in the traceback), else its first line."""
    trace = _ANSI.sub("", "\n".join(error.traceback or []))
    lines = error.source.splitlines()
    found = re.findall(r"(?:Cell In\s*\[\d*\]|<ipython-input-\d+-\w+>|Input In \[\d*\]),? line (\d+)", trace)
    if found and 0 < int(found[-1]) <= len(lines):
        number = int(found[-1])
        return f"line {number} `{_short(lines[number - 1])}`"
    return f"`{_first_line(error.source)}`"


def _execute(nb, source: Path, output: Path, profile: str, overrides: Mapping[str, Any]) -> str | None:
    """Run ``nb`` into ``output`` with the console progress view; the error message, or None on success."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    name = source.stem
    nb.metadata["lab"] = {"source": str(source), "profile": profile, "overrides": _jsonable(overrides)}
    output.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, output)  # papermill reads the prepared copy and overwrites it as cells complete
    logging.getLogger("papermill").setLevel(logging.ERROR)
    n_cells = 1 + sum(c.cell_type == "code" and bool(c.source.strip()) for c in nb.cells)  # + injected parameters
    progress = ConsoleProgress(name, n_cells)
    try:
        with _environ(LAB_PROFILE=profile, LAB_OVERRIDES=json.dumps(_jsonable(overrides), sort_keys=True)):
            papermill.execute_notebook(
                str(output), str(output), parameters={"profile": profile, **overrides}, kernel_name="python3",
                language="python", progress_bar=False, cwd=str(source.parent), start_timeout=180,
                execution_timeout=PROFILES[profile]["cell_timeout_s"], kernel_manager_class=_kernel_manager_class(),
                stderr_file=progress, on_cell_start=progress.cell_started)
    except PapermillExecutionError as e:
        return (f"{name} failed at In [{e.exec_count}] {_failing_line(e)}: {e.ename}: {_short(e.evalue, 200)} "
                f"(executed copy: {output})")
    except Exception as e:  # kernel died, cell timeout, unreadable notebook ...
        return f"{name} failed: {type(e).__name__}: {_first_line(str(e))} (executed copy: {output})"
    return None


# --- stamps: skipping notebooks whose last complete run had the same inputs (like make) -----------------

STAMP_SUFFIX = ".stamp.json"
FINGERPRINT_PACKAGES = ("torch", "transformers", "captum", "numpy", "scipy", "scikit-learn", "spacy")


def _jsonable(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(overrides), sort_keys=True, default=repr))


def input_fingerprint(source: Path, profile: str, overrides: Mapping[str, Any] | None) -> str:
    """Hash of everything a notebook's outputs depend on: its source, profile and overrides, the `lab` package
    source, the data directory (file names, sizes, mtimes) and the versions of the numeric packages. Trained
    models are not hashed: they are a deterministic function of these (seeded training, keyed cache)."""
    from importlib import metadata

    digest = hashlib.sha256()
    digest.update(json.dumps({"profile": profile, "overrides": dict(overrides or {})}, sort_keys=True,
                             default=repr).encode())
    digest.update(Path(source).read_bytes())
    package = REPO_ROOT / "lab"
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    digest.update(str(data_fingerprint()["digest"]).encode())  # names, sizes and mtimes under LAB_DATA_DIR
    for package_name in FINGERPRINT_PACKAGES:
        try:
            digest.update(f"{package_name}=={metadata.version(package_name)}".encode())
        except metadata.PackageNotFoundError:
            pass
    return digest.hexdigest()


def stamp_path(output: Path) -> Path:
    """The stamp beside the executed copy ``output``."""
    return output.with_name(output.stem + STAMP_SUFFIX)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def executed_problem(output: Path, profile: str) -> str | None:
    """Why the executed copy ``output`` is not a complete run of ``profile`` (None: it is)."""
    import nbformat

    try:
        nb = nbformat.read(output, as_version=4)
    except FileNotFoundError:
        return f"no executed copy {output}"
    except Exception as e:  # truncated or not a notebook
        return f"executed copy {output} is unreadable ({type(e).__name__})"
    ran = nb.metadata.get("lab", {}).get("profile")
    if ran != profile:
        return f"executed copy {output} is of profile {ran!r}"
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    done = sum(c.get("execution_count") is not None for c in code)
    if done < len(code):
        return f"executed copy {output} is partial ({done} of {len(code)} cells ran)"
    if any(o.get("output_type") == "error" for c in code for o in c.get("outputs", [])):
        return f"executed copy {output} shows an error"
    return None


def results_problem(results: Path, profile: str) -> str | None:
    """Why ``results`` is not a results file of ``profile`` (None: it is)."""
    try:
        recorded = json.loads(results.read_text()).get("profile")
    except FileNotFoundError:
        return f"no results file {results}"
    except (OSError, ValueError, AttributeError):
        return f"results file {results} is unreadable"
    return None if recorded == profile else f"results file {results} is of profile {recorded!r}"


def stale_reason(output: Path, profile: str, fingerprint: str, results: Path) -> str | None:
    """Why the notebook must run again; None when its stamp records a complete run with these inputs and its
    executed copy and results file are still those of that run."""
    try:
        stamp = json.loads(stamp_path(output).read_text())
    except FileNotFoundError:
        return "no stamp of a complete run"
    except (OSError, ValueError):
        return f"unreadable stamp {stamp_path(output)}"
    if stamp.get("profile") != profile:
        return f"the stamp is of profile {stamp.get('profile')!r}"
    if stamp.get("fingerprint") != fingerprint:
        return "inputs changed since its last complete run"
    problem = executed_problem(output, profile) or results_problem(results, profile)
    if problem:
        return problem
    if _sha256(results) != (stamp.get("results") or {}).get("sha256"):
        return f"results file {results} was rewritten since its last complete run"
    return None


def _write_stamp(output: Path, profile: str, fingerprint: str, overrides: Mapping[str, Any], seconds: float,
                 results: Path) -> None:
    from lab.cache import atomic_write_json

    atomic_write_json(stamp_path(output), {
        "notebook": output.stem, "profile": profile, "fingerprint": fingerprint, "overrides": _jsonable(overrides),
        "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "executed": str(output), "results": {"path": str(results), "sha256": _sha256(results)}})


# --- running notebooks ---------------------------------------------------------------------------

@dataclass
class _Prepared:
    source: Path
    nb: Any
    overrides: dict[str, Any] | None  # None: no parameters cell


def _prepare(source: str | Path, overrides: Mapping[str, Any] | None) -> _Prepared:
    """Load ``source`` and check ``overrides`` against its parameters cell (ValueError when they do not fit)."""
    source = Path(source).resolve()
    nb = load_source(source)
    if parameter_defaults(nb) is None:
        return _Prepared(source, nb, None)
    return _Prepared(source, nb, check_overrides(source.stem, nb, overrides))


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def run_notebook(source: str | Path, profile: str = "default", overrides: Mapping[str, Any] | None = None,
                 output_dir: str | Path | None = None, force: bool = True) -> RunRecord:
    """Execute one notebook with ``profile`` (and ``overrides``, checked first: ValueError when they do not fit
    its parameters cell) into ``output_dir`` (default `lab.config.executed_dir(profile)`); never raises for
    notebook errors. The stamp is removed when the run starts and written only when every cell ran and the
    notebook wrote ``results_dir(profile)/<name>.json`` of this profile.

    force=False skips a notebook whose stamp shows a complete run with the same inputs (`input_fingerprint`)
    whose executed copy and results file are intact (`stale_reason`)."""
    profile_settings(profile)
    prepared = _prepare(source, overrides)
    source, name = prepared.source, prepared.source.stem
    out_dir = Path(output_dir) if output_dir is not None else config.executed_dir(profile)
    output = (out_dir / f"{name}.ipynb").resolve()
    if output == source or output == source.with_suffix(".ipynb"):
        raise ValueError(f"{name}: the executed copy would overwrite the committed notebook {output}")
    started = time.perf_counter()

    def record(status: str, error: str | None = None) -> RunRecord:
        return RunRecord(name, source, output, profile, status, time.perf_counter() - started, error)

    if prepared.overrides is None:
        return record("failed", f"{name} has no cell tagged '{PARAMETERS_TAG}'")
    fingerprint = input_fingerprint(source, profile, prepared.overrides)
    results = config.results_dir(profile) / f"{name}.json"
    if not force:
        reason = stale_reason(output, profile, fingerprint, results)
        if reason is None:
            stamp = json.loads(stamp_path(output).read_text())
            return record("up-to-date", f"inputs unchanged since its run of {stamp['seconds']} s on {stamp['finished']}")
        print(f"[{name}] runs: {reason}", flush=True)
    _warn_if_unsynced(source)
    stamp_path(output).unlink(missing_ok=True)
    before = _file_state(results)
    error = _execute(prepared.nb, source, output, profile, prepared.overrides)
    if error is None and _file_state(results) in (before, None):
        error = f"{name} ran but did not write its results file {results}"
    error = error or results_problem(results, profile) or executed_problem(output, profile)
    if error:
        return record("failed", error)
    _write_stamp(output, profile, fingerprint, prepared.overrides, time.perf_counter() - started, results)
    return record("ok")


def _warn_if_unsynced(source: Path) -> None:
    paired = source.with_suffix(".ipynb")
    if source.suffix == ".py" and paired.exists() and paired.stat().st_mtime > source.stat().st_mtime + 2:
        print(f"warning: {paired.name} is newer than {source.name}, which is what runs; "
              f"sync them with `jupytext --sync {paired}`", file=sys.stderr)


def reproduce(notebooks: Sequence[str | Path] | None = None, profile: str = "default",
              overrides: Mapping[str, Any] | None = None, output_dir: str | Path | None = None,
              notebooks_dir: str | Path | None = None, stop_on_error: bool = False,
              force: bool = True) -> list[RunRecord]:
    """Execute ``notebooks`` (default: all of ``notebooks/``) under ``profile``, showing each one's progress and
    a summary line. The overrides are checked against every notebook before the first runs (ValueError).
    force=False skips notebooks whose inputs are unchanged since their last complete run (see `run_notebook`).

    Raises NotebookError naming every failed notebook and its failing line once all have run (or at the
    first failure with ``stop_on_error``); the error's ``records`` lists every run.
    """
    profile_settings(profile)
    sources = resolve_notebooks(notebooks, notebooks_dir)
    if not sources:
        raise ValueError(f"no notebooks found in {Path(notebooks_dir or NOTEBOOKS_DIR)}")
    for source in sources:
        _prepare(source, overrides)
    records = []
    width = max(len(s.stem) for s in sources)
    for i, source in enumerate(sources, 1):
        print(f"[{i}/{len(sources)}] {source.stem:<{width}}  profile={profile}", flush=True)
        record = run_notebook(source, profile, overrides, output_dir, force=force)
        records.append(record)
        note = f"  ({record.error})" if record.status == "up-to-date" else ""
        print(f"[{i}/{len(sources)}] {source.stem:<{width}}  {record.status:<10} {record.seconds:7.1f} s{note}",
              flush=True)
        if not record.ok and stop_on_error:
            break
    failures = [r for r in records if not r.ok]
    if failures:
        lines = [f"{len(failures)} of {len(sources)} notebooks failed:"] + [f"  {r.error}" for r in failures]
        raise NotebookError("\n".join(lines), records)
    return records


# --- command line (called by lab.cli) -------------------------------------------------------------

def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m lab reproduce",
                                               description="Execute the notebooks headless.")
    parser.add_argument("notebooks", nargs="*", help="names or numbers (default: all), e.g. 01 03_mask_lrp")
    parser.add_argument("--profile", default="default", choices=list(PROFILES),
                        help="; ".join(f"{k}: {v['description']}" for k, v in PROFILES.items()))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter of the notebooks' parameters cell with a Python literal of the "
                             "default's type (a bare word where the default is a string), repeatable")
    parser.add_argument("--output-dir", default=None, help="where executed notebooks and stamps go "
                        "(default: notebooks/_executed, or notebooks/_executed/<profile> for other profiles)")
    parser.add_argument("--stop-on-error", action="store_true", help="stop at the first failing notebook")
    parser.add_argument("--if-changed", action="store_true",
                        help="skip notebooks whose last complete run had the same inputs (notebook, profile, "
                             "overrides, lab code, data, package versions) and left its outputs intact, like make")
    parser.add_argument("--list", action="store_true", help="list notebooks and profiles, run nothing")
    return parser


def _parse_overrides(texts: Sequence[str]) -> dict[str, Unparsed]:
    overrides: dict[str, Unparsed] = {}
    for text in texts:
        name, value = split_override(text)
        if name in overrides:
            raise ValueError(f"--set {name}=... is given twice")
        overrides[name] = value
    return overrides


def main_reproduce(argv: Sequence[str] | None = None) -> int:
    """``python -m lab reproduce [NOTEBOOK ...] [--profile P] [--set name=value]``; returns an exit code
    (0 ok, 1 a notebook failed, 2 bad arguments: nothing ran, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            for p in resolve_notebooks(args.notebooks):
                print(p.relative_to(REPO_ROOT) if p.is_relative_to(REPO_ROOT) else p)
            for k, v in PROFILES.items():
                print(f"profile {k}: {v['description']}")
            return 0
        started = time.perf_counter()
        overrides = _parse_overrides(args.overrides)
        if all(p.parent == NOTEBOOKS_DIR for p in resolve_notebooks(args.notebooks)):
            _print_plan(args.notebooks, args.profile)
        records = reproduce(args.notebooks, args.profile, overrides, args.output_dir,
                            stop_on_error=args.stop_on_error, force=not args.if_changed)
    except NotebookError as e:
        print(f"reproduce: {e}", file=sys.stderr)
        _print_report(args.profile)
        return 1
    except ValueError as e:
        print(f"reproduce: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reproduce: interrupted; the notebook that was running has no stamp and runs again next time",
              file=sys.stderr)
        return 130
    print(f"{len(records)} notebooks ran under profile {args.profile} in {time.perf_counter() - started:.0f} s")
    _print_report(args.profile)
    return 0


def _print_plan(notebooks: Sequence[str], profile: str) -> None:
    """What the run will train and execute, with expected times (`lab.plan`); never stops the run."""
    from lab.plan import plan_lines

    try:
        print("\n".join(plan_lines(notebooks or None, profile)), flush=True)
    except Exception as e:  # a plan is a forecast: a notebook it does not know must not stop the run
        print(f"plan unavailable: {type(e).__name__}: {e}", flush=True)


def _print_report(profile: str) -> None:
    """Write the scorecard (`results[/<profile>]/REPORT.md`) and print its short version."""
    from lab.report import summary_lines, write_report

    try:
        path = write_report(profile)
        print("\n".join(summary_lines(profile)) + f"\nscorecard: {path}", flush=True)
    except Exception as e:
        print(f"report not written: {type(e).__name__}: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main_reproduce())
