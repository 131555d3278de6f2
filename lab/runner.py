"""Execute the notebooks headless with injected parameters (papermill), e.g. ``python -m lab reproduce``.

Notebooks are ``notebooks/NN_name.py`` (jupytext percent scripts, the source of truth when present) and/or
``notebooks/NN_name.ipynb`` (output-free). Each has one cell tagged ``parameters`` that defines at least
``profile = "default"``; the runner injects ``profile="<name>"`` plus any overrides after it and writes
the executed copy to ``notebooks/_executed/NN_name.ipynb`` (git-ignored). Committed notebooks are never
written. The kernel is always this interpreter (the venv's), whatever kernelspecs are installed.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from lab import config
from lab.config import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIRNAME = "_executed"
NOTEBOOK_GLOB = "[0-9][0-9]_*"
PARAMETERS_TAG = "parameters"

# What each profile means; notebooks read ``profile`` in their parameters cell and size themselves.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "description": "tiny models and a handful of examples: checks that every notebook runs end to end",
        "cell_timeout_s": 900,
    },
    "default": {
        "description": "the workbook's numbers: reduced sample sizes that run on a laptop CPU",
        "cell_timeout_s": None,
    },
    "paper": {
        "description": "the papers' sample sizes where the offline data allows (hours on a CPU)",
        "cell_timeout_s": None,
    },
}


def profile_settings(profile: str) -> dict[str, Any]:
    """The settings of ``profile`` (a copy, with its ``name``); ValueError for an unknown profile."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
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


def parameter_names(nb) -> set[str] | None:
    """Names assigned in the cell tagged ``parameters`` (None when there is no such cell)."""
    for cell in nb.cells:
        if cell.cell_type == "code" and PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                return set()
            names = set()
            for node in ast.walk(tree):
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
            return names
    return None


# --- executing -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _kernel_manager_class():
    """An AsyncKernelManager that always starts ``sys.executable -m ipykernel_launcher``."""
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
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name="Python (lab)", language="python",
                    metadata={"supported_encryption": ["curve"]},  # as ipykernel's own kernelspec
                    # `lab` importable without installation; figures inline even if MPLBACKEND=Agg is set
                    env={"PYTHONPATH": path, "MPLBACKEND": "module://matplotlib_inline.backend_inline"})
            return self._kernel_spec

    return CurrentInterpreterKernelManager


@contextlib.contextmanager
def profile_outputs(profile: str):
    """Run with ``LAB_PROFILE=profile`` (the kernel inherits os.environ), so that outputs of a non-default profile
    go to `<dir>/<profile>/` (`lab.config.results_dir`) even before the notebook calls `lab.config.set_profile`."""
    saved = os.environ.get("LAB_PROFILE")
    os.environ["LAB_PROFILE"] = profile
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LAB_PROFILE", None)
        else:
            os.environ["LAB_PROFILE"] = saved


# --- skipping notebooks whose inputs have not changed (like make) -----------------------------------------

STAMP_SUFFIX = ".stamp.json"
FINGERPRINT_PACKAGES = ("torch", "transformers", "captum", "numpy", "scipy", "scikit-learn", "spacy")


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
    data = config.data_dir()
    if data.is_dir():
        for path in sorted(data.rglob("*")):
            if path.is_file():
                st = path.stat()
                digest.update(f"{path.relative_to(data)}:{st.st_size}:{st.st_mtime_ns}".encode())
    for package_name in FINGERPRINT_PACKAGES:
        try:
            digest.update(f"{package_name}=={metadata.version(package_name)}".encode())
        except metadata.PackageNotFoundError:
            pass
    return digest.hexdigest()


def _stamp_path(output: Path, profile: str) -> Path:
    return output.with_name(f"{output.stem}.{profile}{STAMP_SUFFIX}")


def _up_to_date(output: Path, profile: str, fingerprint: str) -> dict | None:
    """The stamp of the last successful run when it had the same inputs and its executed copy is still there."""
    stamp = _stamp_path(output, profile)
    try:
        record = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != fingerprint or not output.exists():
        return None
    return record


def _write_stamp(output: Path, profile: str, fingerprint: str, seconds: float) -> None:
    from lab.cache import atomic_write_json

    atomic_write_json(_stamp_path(output, profile), {"fingerprint": fingerprint, "seconds": round(seconds, 1),
                                                     "finished": time.strftime("%Y-%m-%d %H:%M:%S")})


def _first_line(source: str) -> str:
    line = next((s.strip() for s in source.splitlines() if s.strip()), "")
    return line if len(line) <= 80 else line[:77] + "..."


def run_notebook(source: str | Path, profile: str = "default", overrides: Mapping[str, Any] | None = None,
                 output_dir: str | Path | None = None, force: bool = True) -> RunRecord:
    """Execute one notebook with ``profile`` (and ``overrides``) injected; never raises for notebook errors.

    force=False skips a notebook whose last successful run had the same inputs (`input_fingerprint`); its
    results, figures and executed copy are then those of that run."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    settings = profile_settings(profile)
    source = Path(source).resolve()
    name = source.stem
    out_dir = Path(output_dir) if output_dir is not None else source.parent / EXECUTED_DIRNAME
    output = (out_dir / f"{name}.ipynb").resolve()
    if output == source or output == source.with_suffix(".ipynb"):
        raise ValueError(f"{name}: the executed copy would overwrite the committed notebook {output}")
    started = time.perf_counter()

    def failed(error: str) -> RunRecord:
        return RunRecord(name, source, output, profile, "failed", time.perf_counter() - started, error)

    fingerprint = input_fingerprint(source, profile, overrides)
    if not force:
        stamp = _up_to_date(output, profile, fingerprint)
        if stamp is not None:
            return RunRecord(name, source, output, profile, "up-to-date", time.perf_counter() - started,
                             f"inputs unchanged since its run of {stamp['seconds']} s on {stamp['finished']}")
    paired = source.with_suffix(".ipynb")
    if source.suffix == ".py" and paired.exists() and paired.stat().st_mtime > source.stat().st_mtime + 2:
        print(f"warning: {paired.name} is newer than {source.name}, which is what runs; "
              f"sync them with `jupytext --sync {paired}`", file=sys.stderr)
    nb = load_source(source)
    known = parameter_names(nb)
    if known is None:
        return failed(f"{name} has no cell tagged '{PARAMETERS_TAG}'")
    parameters = {"profile": profile, **dict(overrides or {})}
    unknown = sorted(set(parameters) - known)
    if unknown:
        print(f"warning: {name} does not define {', '.join(unknown)} in its parameters cell", file=sys.stderr)
    nb.metadata["lab"] = {"source": str(source), "profile": profile}
    output.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, output)  # papermill reads the prepared copy and overwrites it as cells complete
    logging.getLogger("papermill").setLevel(logging.ERROR)
    try:
        with profile_outputs(profile):
            papermill.execute_notebook(
                str(output), str(output), parameters=parameters, kernel_name="python3", language="python",
                progress_bar=False, cwd=str(source.parent), start_timeout=180,
                execution_timeout=settings["cell_timeout_s"], kernel_manager_class=_kernel_manager_class())
    except PapermillExecutionError as e:
        return failed(f"{name} failed at In [{e.exec_count}] `{_first_line(e.source)}`: "
                      f"{e.ename}: {e.evalue} (executed copy: {output})")
    except Exception as e:  # kernel died, cell timeout, unreadable notebook ...
        return failed(f"{name} failed: {type(e).__name__}: {_first_line(str(e))} (executed copy: {output})")
    seconds = time.perf_counter() - started
    _write_stamp(output, profile, fingerprint, seconds)
    return RunRecord(name, source, output, profile, "ok", seconds)


def reproduce(notebooks: Sequence[str | Path] | None = None, profile: str = "default",
              overrides: Mapping[str, Any] | None = None, output_dir: str | Path | None = None,
              notebooks_dir: str | Path | None = None, stop_on_error: bool = False,
              force: bool = True) -> list[RunRecord]:
    """Execute ``notebooks`` (default: all of ``notebooks/``) under ``profile``; one progress line each.
    force=False skips notebooks whose inputs are unchanged since their last successful run (see `run_notebook`).

    Raises NotebookError naming every failed notebook and its failing cell once all have run (or at the
    first failure with ``stop_on_error``); the error's ``records`` lists every run.
    """
    profile_settings(profile)
    sources = resolve_notebooks(notebooks, notebooks_dir)
    if not sources:
        raise ValueError(f"no notebooks found in {Path(notebooks_dir or NOTEBOOKS_DIR)}")
    records = []
    width = max(len(s.stem) for s in sources)
    for i, source in enumerate(sources, 1):
        print(f"[{i}/{len(sources)}] {source.stem:<{width}}  profile={profile}  ", end="", flush=True)
        record = run_notebook(source, profile, overrides, output_dir, force=force)
        records.append(record)
        note = f"  ({record.error})" if record.status == "up-to-date" else ""
        print(f"{record.status:<6} {record.seconds:7.1f} s{note}", flush=True)
        if not record.ok and stop_on_error:
            break
    failures = [r for r in records if not r.ok]
    if failures:
        lines = [f"{len(failures)} of {len(sources)} notebooks failed:"] + [f"  {r.error}" for r in failures]
        raise NotebookError("\n".join(lines), records)
    return records


# --- command line (called by lab.cli) -------------------------------------------------------------

def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like name=value")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a bare word is a string
    return key.strip(), value


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m lab reproduce",
                                               description="Execute the notebooks headless.")
    parser.add_argument("notebooks", nargs="*", help="names or numbers (default: all), e.g. 01 03_mask_lrp")
    parser.add_argument("--profile", default="default", choices=list(PROFILES),
                        help="; ".join(f"{k}: {v['description']}" for k, v in PROFILES.items()))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter (Python literal or bare string), repeatable")
    parser.add_argument("--output-dir", default=None, help="where executed notebooks go "
                        "(default: notebooks/_executed)")
    parser.add_argument("--stop-on-error", action="store_true", help="stop at the first failing notebook")
    parser.add_argument("--if-changed", action="store_true",
                        help="skip notebooks whose inputs (notebook, profile, overrides, lab code, data, package "
                             "versions) are unchanged since their last successful run, like make")
    parser.add_argument("--list", action="store_true", help="list notebooks and profiles, run nothing")
    return parser


def main_reproduce(argv: Sequence[str] | None = None) -> int:
    """``python -m lab reproduce [NOTEBOOK ...] [--profile P] [--set name=value]``; returns an exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            for p in resolve_notebooks(args.notebooks):
                print(p.relative_to(REPO_ROOT) if p.is_relative_to(REPO_ROOT) else p)
            for k, v in PROFILES.items():
                print(f"profile {k}: {v['description']}")
            return 0
        overrides = dict(_parse_override(o) for o in args.overrides)
        started = time.perf_counter()
        records = reproduce(args.notebooks, args.profile, overrides, args.output_dir,
                            stop_on_error=args.stop_on_error, force=not args.if_changed)
    except NotebookError as e:
        print(f"reproduce: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"reproduce: {e}", file=sys.stderr)
        return 2
    print(f"{len(records)} notebooks ran under profile {args.profile} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main_reproduce())
