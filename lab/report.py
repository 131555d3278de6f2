"""The scorecard: ``python -m lab report`` writes ``results[/<profile>]/REPORT.md``, the page a reviewer reads first.

For every notebook it shows the claims with their verdicts, every table beside the paper's values, the
provenance line (which commit, code, settings, data and models produced the numbers, when, and under what load)
and links to the figures. A results file that cannot be read, or that belongs to another profile, is reported as
an error, never mixed in. ``--publish`` writes the default report as ``REPRODUCTION.md`` at the repository root,
under a header naming the commit, date, machine and total run time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lab import cache, config
from lab.results import _verdict, claims_markdown, table_markdown, verdict_counts
from lab.stats import VERDICTS

PUBLISHED = config.REPO_ROOT / "REPRODUCTION.md"
PUBLISH_COMMAND = "python -m lab report --publish"


@dataclass
class Entry:
    """One notebook's results file under a profile: its content, or why it cannot be reported."""
    notebook: str
    path: Path | None = None
    data: dict[str, Any] | None = None
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


def _well_formed(tables: Any) -> bool:
    """Every table has rows[method][column] = a {"paper", "ours"} dict."""
    if not isinstance(tables, dict):
        return False
    for table in tables.values():
        rows = table.get("rows") if isinstance(table, dict) else None
        if not isinstance(rows, dict):
            return False
        if not all(isinstance(row, dict) and all(isinstance(c, dict) for c in row.values()) for row in rows.values()):
            return False
    return True


def _problem(data: Any, profile: str) -> str | None:
    """Why ``data`` cannot be reported as a results file of ``profile`` (None: it can)."""
    if not isinstance(data, dict):
        return "is not a results file (not a JSON object)"
    missing = sorted({"notebook", "tables", "claims"} - set(data))
    if missing:
        return f"is not a results file (lacks {', '.join(missing)})"
    if data.get("profile", "default") != profile:
        return f"holds profile {data.get('profile')!r} results, not {profile!r}: left out of this report"
    if not isinstance(data.get("meta", {}), dict) or not _well_formed(data["tables"]):
        return 'has a malformed meta or table (tables: rows[method][column] = {"paper": ..., "ours": ...})'
    try:
        bad = [c.get("claim") for c in data["claims"] if _verdict(c) not in VERDICTS]
    except (AttributeError, KeyError, TypeError):
        return "has a claim without a valid verdict or holds"
    return f"has claims with an unknown verdict: {bad}" if bad else None


def collect(profile: str = "default", results_dir: str | os.PathLike | None = None) -> list[Entry]:
    """An entry per notebook of the workbook and per results file found, sorted by notebook name."""
    from lab.runner import discover_notebooks

    folder = Path(results_dir) if results_dir is not None else config.results_dir(profile)
    entries = {p.stem: Entry(p.stem) for p in discover_notebooks()}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name.startswith("."):
            continue
        entry = entries.setdefault(path.stem, Entry(path.stem))
        entry.path = path
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            entry.error = f"{path.name} cannot be read: {e}"
            continue
        problem = _problem(data, profile)
        if problem:
            entry.error = f"{path.name} {problem}"
        else:
            entry.data, entry.counts = data, verdict_counts(data["claims"])
    return [entries[name] for name in sorted(entries)]


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _meta(entry: Entry) -> tuple[dict[str, Any], dict[str, Any] | None]:
    meta = entry.data.get("meta") or {}
    return meta, meta.get("provenance")


def _commit(prov: dict[str, Any] | None, full: bool = False) -> str:
    """The commit (7 digits unless ``full``, in backticks if ``full``) and whether tracked files differed."""
    if not prov or not prov.get("commit"):
        return "not recorded"
    commit = f"`{prov['commit']}`" if full else prov["commit"][:7]
    return commit + (" (dirty)" if prov.get("dirty") else "")


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)


def summary_lines(profile: str = "default", results_dir: str | os.PathLike | None = None,
                  entries: Sequence[Entry] | None = None) -> list[str]:
    """The short version: a total, then one line per notebook (claim verdicts, elapsed time, commit)."""
    entries = collect(profile, results_dir) if entries is None else entries
    done = [e for e in entries if e.data is not None]
    total = {v: sum(e.counts[v] for e in done) for v in VERDICTS}
    lines = [f"profile {profile}: {len(done)} of {len(entries)} notebooks have results; claims: "
             f"{_counts_text(total)}"]
    width = max((len(e.notebook) for e in entries), default=0)
    for e in entries:
        if e.error:
            text = f"ERROR: {e.error}"
        elif e.data is None:
            text = "no results"
        else:
            meta, prov = _meta(e)
            text = (f"{_counts_text(e.counts)} | {_duration(meta.get('elapsed_s'))} | "
                    f"commit {_commit(prov)}")
        lines.append(f"  {e.notebook:{width}s}  {text}")
    return lines


def provenance_line(meta: dict[str, Any]) -> str:
    """One line saying where a notebook's numbers came from ("provenance: not recorded" for older files)."""
    prov, elapsed = meta.get("provenance"), _duration(meta.get("elapsed_s"))
    if not prov:
        return f"provenance: not recorded · elapsed {elapsed}"
    data, machine, load = prov.get("data") or {}, prov.get("machine") or {}, prov.get("load") or {}
    overrides = prov.get("overrides") or "none"
    if isinstance(overrides, dict):
        overrides = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    size = (data.get("bytes") or 0) / 1e6
    return (f"provenance: commit {_commit(prov, full=True)} · code `{prov.get('code_digest')}` · "
            f"profile {prov.get('profile')} · overrides {overrides} · data {data.get('files', 0)} files "
            f"({size:.1f} MB, {data.get('scope', '?')}) `{data.get('digest')}` · "
            f"{len(prov.get('checkpoints') or {})} checkpoints · {prov.get('started')} → {prov.get('finished')} "
            f"(elapsed {elapsed}) · threads {prov.get('threads')} · "
            f"load {load.get('start')} → {load.get('end')} · "
            f"{machine.get('hostname')} ({machine.get('cpu')}, {machine.get('cores')} cores)")


def _section(entry: Entry, figures_dir: Path, link_base: Path, out_dir: Path) -> list[str]:
    lines = [f"## {entry.notebook}", ""]
    if entry.error:
        return lines + [f"**error:** {entry.error}", ""]
    if entry.data is None:
        return lines + ["_No results file: the notebook has not run under this profile._", ""]
    lines += [provenance_line(entry.data.get("meta") or {}), "", claims_markdown(entry.data), ""]
    for name, table in entry.data["tables"].items():
        lines += [f"### {name}: {table.get('caption', '')}", "", table_markdown(entry.data, name), ""]
    figures = sorted((figures_dir / entry.notebook).glob("*.png"))
    if figures:
        links = [f"[{p.stem}]({Path(os.path.relpath(link_base / entry.notebook / p.name, out_dir)).as_posix()})"
                 for p in figures]
        lines += ["Figures: " + " · ".join(links), ""]
    return lines


def render(entries: Sequence[Entry], figures_dir: Path, link_base: Path, out_dir: Path) -> str:
    """The report's body: a summary table, then one ``## <notebook>`` section per entry. Figures are found in
    ``figures_dir`` and linked as ``link_base/<notebook>/<name>.png`` relative to ``out_dir``."""
    lines = ["| notebook | " + " | ".join(VERDICTS) + " | elapsed | commit |",
             "|---|" + "---:|" * len(VERDICTS) + "---|---|"]
    for e in entries:
        if e.data is None:
            lines.append(f"| {e.notebook} | " + " | ".join(["—"] * len(VERDICTS))
                         + f" | — | {'error' if e.error else 'no results'} |")
            continue
        meta, prov = _meta(e)
        lines.append(f"| {e.notebook} | " + " | ".join(str(e.counts[v]) for v in VERDICTS)
                     + f" | {_duration(meta.get('elapsed_s'))} | {_commit(prov)} |")
    lines.append("")
    for e in entries:
        lines += _section(e, figures_dir, link_base, out_dir)
    return "\n".join(lines)


def _dirs(profile: str, results_dir, figures_dir) -> tuple[Path, Path]:
    config.check_profile(profile)
    return (Path(results_dir) if results_dir is not None else config.results_dir(profile),
            Path(figures_dir) if figures_dir is not None else config.figures_dir(profile))


def write_report(profile: str = "default", results_dir: str | os.PathLike | None = None,
                 figures_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None) -> Path:
    """Write the scorecard of ``profile`` to ``out`` (default ``results_dir/REPORT.md``); returns its path."""
    results, figures = _dirs(profile, results_dir, figures_dir)
    out = Path(out) if out is not None else results / "REPORT.md"
    entries = collect(profile, results)
    text = (f"# Reproduction scorecard: profile `{profile}`\n\n"
            f"Written by `python -m lab report` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n"
            + render(entries, figures, figures.resolve(), out.resolve().parent))
    return cache.atomic_write_bytes(out, text.encode())


def _header(entries: Sequence[Entry], commit: str | None) -> list[str]:
    """REPRODUCTION.md's header: the commit, date, machine and total run time that produced the results."""
    done = [e for e in entries if e.data is not None]
    provs = [p for p in (_meta(e)[1] for e in done) if p]
    commits = sorted({p["commit"] for p in provs if p.get("commit")})
    if commit and commits and not any(c.startswith(commit) for c in commits):
        raise ValueError(f"--commit {commit} is not the commit the results files record ({', '.join(commits)})")
    if commits:
        named = ", ".join(f"`{c}`" for c in commits) + (" (dirty)" if any(p.get("dirty") for p in provs) else "")
        if len(provs) < len(done):
            named += f"; {len(done) - len(provs)} results files record none"
    else:
        named = f"`{commit}` (given with --commit: the results files record none)" if commit else "not recorded"
    finished = [p["finished"] for p in provs if p.get("finished")]
    if finished:
        date = max(finished)
    elif done:
        mtime = max(e.path.stat().st_mtime for e in done)
        date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime)) + " (results files' modification time)"
    else:
        date = "no results"
    machines = sorted({f"{m.get('hostname')} ({m.get('cpu')}, {m.get('cores')} cores)"
                       for m in (p.get("machine") for p in provs) if m})
    elapsed = [(_meta(e)[0].get("elapsed_s") or 0) for e in done]
    return ["# Reproduction scorecard (profile `default`)", "",
            f"Generated by `{PUBLISH_COMMAND}`; do not edit.", "",
            f"- commit: {named}", f"- date: {date}", f"- machine: {'; '.join(machines) or 'not recorded'}",
            f"- run time: {_duration(sum(elapsed))} (sum of elapsed_s over {len(done)} of {len(entries)} notebooks)",
            ""]


def publish(results_dir: str | os.PathLike | None = None, figures_dir: str | os.PathLike | None = None,
            out: str | os.PathLike | None = None, commit: str | None = None) -> Path:
    """Write the default profile's report, under :func:`_header`, to ``out`` (default: REPRODUCTION.md at the
    repository root), linking figures as ``figures/<notebook>/<name>.png`` (relative to the repository root).
    ``commit`` names the commit that produced results files that record none (written before provenance existed)."""
    if commit is not None and not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        raise ValueError(f"--commit must be a commit hash (7 to 40 hex digits), got {commit!r}")
    results, figures = _dirs("default", results_dir, figures_dir)
    out = Path(out) if out is not None else PUBLISHED
    entries = collect("default", results)
    text = "\n".join(_header(entries, commit)) + "\n" + render(entries, figures, Path("figures"), Path("."))
    return cache.atomic_write_bytes(out, text.encode())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lab report``: write the scorecard and print its short version; 1 when a file was in error."""
    parser = argparse.ArgumentParser(prog="python -m lab report", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="default", choices=config.PROFILES)
    parser.add_argument("--results-dir", help="read results from here (default: the profile's results folder)")
    parser.add_argument("--figures-dir", help="find figures here (default: the profile's figures folder)")
    parser.add_argument("--out", help="write here (default: REPORT.md in the results folder; REPRODUCTION.md "
                                      "at the repository root with --publish)")
    parser.add_argument("--publish", action="store_true",
                        help="write the default report as REPRODUCTION.md with a header (commit, date, machine)")
    parser.add_argument("--commit", help="with --publish: the commit that produced results files that record none")
    args = parser.parse_args(argv)
    if args.publish and args.profile != "default":
        parser.error("--publish writes the default profile's report only")
    if args.commit and not args.publish:
        parser.error("--commit goes with --publish")
    try:
        if args.publish:
            path = publish(args.results_dir, args.figures_dir, args.out, args.commit)
        else:
            path = write_report(args.profile, args.results_dir, args.figures_dir, args.out)
    except ValueError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    entries = collect(args.profile, _dirs(args.profile, args.results_dir, None)[0])
    print("\n".join(summary_lines(args.profile, entries=entries)))
    print(f"wrote {path}")
    return 1 if any(e.error for e in entries) else 0
