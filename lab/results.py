"""One results file per notebook: ``results/<notebook>.json``.

Format (paper values are copied from the paper texts; ``null`` where the paper gives none)::

    {"notebook": "01_chefer_vit", "profile": "default",
     "meta": {"model": ..., "n_examples": ..., "seed": 0, "elapsed_s": ...,
              "versions": {"torch": ..., "transformers": ..., "captum": ..., "python": ...},
              "provenance": {"commit": ..., "dirty": ..., "code_digest": ..., ...}},  # see lab.provenance
     "tables": {"table1": {"caption": ..., "direction": {"col": "higher" | "lower"},
                           "rows": {"method": {"col": {"paper": 54.16, "ours": 61.2}}}}},
     "claims": [{"claim": "...", "holds": true | false | null, "detail": "..."}]}

Typical use in a notebook::

    res = Results("01_chefer_vit", profile, meta={"model": name, "n_examples": n, "seed": seed})
    res.add_table("table1", "Positive/negative perturbation AUC", rows, direction={"negative": "higher"})
    res.add_claim("chefer best on every column of table 1", holds, detail="...")
    res.save()
"""
from __future__ import annotations

import json
import math
import platform
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from lab import cache, config, provenance, stats

DIRECTIONS = ("higher", "lower")
VERSIONED_PACKAGES = ("torch", "transformers", "captum", "numpy", "datasets")


def versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None when not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def to_jsonable(value: Any) -> Any:
    """Plain-JSON copy of ``value``: numpy/torch scalars -> numbers, arrays -> lists, NaN/inf -> None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    if hasattr(value, "tolist"):  # numpy scalar or array
        return to_jsonable(value.tolist())
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    raise TypeError(f"cannot store a {type(value).__name__} in a results file: {value!r}")


def _cell(value: Any) -> dict[str, Any]:
    """Normalise one table cell to {"paper": ..., "ours": ...}."""
    if isinstance(value, Mapping):
        unknown = set(value) - {"paper", "ours"}
        if unknown:
            raise ValueError(f"table cell has keys {sorted(unknown)}; expected 'paper' and 'ours'")
        return {"paper": to_jsonable(value.get("paper")), "ours": to_jsonable(value.get("ours"))}
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"table cell {value!r} must be a (paper, ours) pair")
        return {"paper": to_jsonable(value[0]), "ours": to_jsonable(value[1])}
    return {"paper": None, "ours": to_jsonable(value)}  # a bare number: ours only


def _as_holds(claim: str, holds: Any) -> bool | None:
    """True / False / None; numpy and torch booleans are accepted."""
    if holds is None:
        return None
    if not isinstance(holds, str):
        try:
            if holds in (True, False):
                return bool(holds)
        except (TypeError, ValueError, RuntimeError):
            pass
    raise ValueError(f"claim {claim!r}: holds must be True, False or None, got {holds!r}")


def claim_verdict(claim: str, holds: Any = None, *, interval: "stats.Interval | None" = None,
                  margin: float | None = None, kind: str | None = None, verdict: str | None = None) -> str:
    """The verdict `Results.add_claim` records for these arguments (before the smoke rule): `lab.stats.decide`'s
    on ``interval``, else ``verdict``, else ``holds`` as "holds" / "fails" / "not evaluated" (None)."""
    if interval is not None:
        if margin is None or kind is None:
            raise ValueError(f"claim {claim!r}: an interval needs a margin and a kind ({', '.join(stats.KINDS)})")
        decided = stats.decide(interval, margin, kind)
        if verdict is not None and verdict != decided:
            raise ValueError(f"claim {claim!r}: verdict {verdict!r} contradicts its interval ({decided})")
        return decided
    if verdict is not None:
        if verdict not in stats.VERDICTS:
            raise ValueError(f"claim {claim!r}: verdict must be one of {stats.VERDICTS}, got {verdict!r}")
        return verdict
    return {True: "holds", False: "fails", None: "not evaluated"}[_as_holds(claim, holds)]


class Results:
    """Tables, claims and run metadata of one notebook run, saved as ``results/<notebook>.json``."""

    def __init__(self, notebook: str, profile: str = "default", meta: Mapping[str, Any] | None = None):
        if not notebook or "/" in notebook or notebook.endswith(".json"):
            raise ValueError(f"notebook name {notebook!r} must be a bare name like '01_chefer_vit'")
        self.notebook = notebook
        self.profile = profile
        self.meta: dict[str, Any] = dict(meta or {})
        self.tables: dict[str, dict[str, Any]] = {}
        self.claims: list[dict[str, Any]] = []
        # elapsed_s counts from the notebook's import cell (see lab.provenance), not from this object (often built last)
        self._started = provenance.STARTED
        self._loaded = False  # read from a file: its run metadata is the file's, never this process's

    def add_table(self, name: str, caption: str, rows: Mapping[str, Mapping[str, Any]],
                  direction: Mapping[str, str] | None = None) -> "Results":
        """Add a table; ``rows[row][col]`` is a (paper, ours) pair, a {"paper", "ours"} dict or a bare ours value.

        ``direction[col]`` says whether "higher" or "lower" values are better.
        """
        direction = dict(direction or {})
        for col, d in direction.items():
            if d not in DIRECTIONS:
                raise ValueError(f"table {name!r}: direction of {col!r} is {d!r}; expected 'higher' or 'lower'")
        self.tables[name] = {
            "caption": caption,
            "direction": direction,
            "rows": {str(r): {str(c): _cell(v) for c, v in cols.items()} for r, cols in rows.items()},
        }
        return self

    def add_claim(self, claim: str, holds: bool | None = None, detail: str = "", *,
                  interval: "stats.Interval | None" = None, margin: float | None = None, kind: str | None = None,
                  verdict: str | None = None, exact: bool = False) -> "Results":
        """Record a claim of the paper and whether it holds here.

        Decided by an interval: pass ``interval`` (a `lab.stats.Interval`), ``margin`` and ``kind`` ("greater" |
        "less" | "within"), and the verdict is `lab.stats.decide`'s; or pass ``verdict`` ("holds" | "fails" |
        "inconclusive") decided elsewhere (e.g. `lab.stats.combine` over parts). A bare ``holds`` (True / False /
        None) is a claim decided without an interval. Under the smoke profile every claim is "not evaluated"
        (samples that small decide nothing; this is the only place that rule lives), except ``exact=True`` ones:
        checks that involve no sampling (the model is left untouched, relevance is conserved)."""
        entry: dict[str, Any] = {"claim": claim, "detail": detail}
        verdict = claim_verdict(claim, holds, interval=interval, margin=margin, kind=kind, verdict=verdict)
        if interval is not None:
            entry["interval"] = {**interval.to_dict(), "margin": margin, "kind": kind}
        holds = {"holds": True, "fails": False}.get(verdict)
        if self.profile == "smoke" and not exact:
            holds, verdict = None, "not evaluated"
        entry.update(holds=holds, verdict=verdict, exact=bool(exact))
        self.claims.append(entry)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The results file's content; a run's metadata (seed, elapsed time, versions, provenance) is filled in
        unless given in ``meta`` or read from a file."""
        meta = dict(self.meta)
        if not self._loaded:
            meta.setdefault("seed", config.default_seed())
            meta.setdefault("elapsed_s", round(time.perf_counter() - self._started, 1))
            meta.setdefault("versions", versions())
            if cache.MEMO_STATS["hits"] or cache.MEMO_STATS["misses"]:  # values reused from LAB_CACHE_DIR
                meta.setdefault("memoized", dict(cache.MEMO_STATS))
            meta.setdefault("provenance", provenance.provenance(self.profile))
        return to_jsonable({"notebook": self.notebook, "profile": self.profile, "meta": meta,
                            "tables": self.tables, "claims": self.claims})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Results":
        missing = {"notebook", "tables", "claims"} - set(data)
        if missing:
            raise ValueError(f"results file lacks {sorted(missing)}")
        res = cls(data["notebook"], data.get("profile", "default"), data.get("meta"))
        res.tables = {k: dict(v) for k, v in data["tables"].items()}
        res.claims = [dict(c) for c in data["claims"]]
        res._loaded = True
        return res

    def save(self, path: str | Path | None = None) -> Path:
        """Write atomically (`lab.cache.atomic_write_bytes`) to ``path`` or ``results_dir(profile)/<notebook>.json``;
        keys keep their order (tables list rows as the notebook added them)."""
        path = Path(path) if path is not None else config.results_dir(self.profile) / f"{self.notebook}.json"
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        return cache.atomic_write_bytes(path, (text + "\n").encode())

    def __repr__(self) -> str:
        return (f"Results({self.notebook!r}, profile={self.profile!r}, tables={list(self.tables)}, "
                f"claims={len(self.claims)})")


def load_results(notebook: str | Path, profile: str | None = None) -> Results:
    """Read ``results_dir(profile)/<notebook>.json`` (default: the current profile's), or an explicit path."""
    path = Path(notebook)
    if path.suffix != ".json":
        path = config.results_dir(profile) / f"{notebook}.json"
    if not path.exists():
        raise FileNotFoundError(f"no results file {path}; run the notebook first (make reproduce)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"results file {path} is not valid JSON: {e}") from None
    return Results.from_dict(data)


def _as_dict(results: Results | Mapping[str, Any]) -> Mapping[str, Any]:
    """Tables and claims of a `Results` (without computing its run metadata and provenance) or a results dict."""
    return {"tables": results.tables, "claims": results.claims} if isinstance(results, Results) else results


_ARROWS = {"higher": " ↑", "lower": " ↓"}


def _table(results: Results | Mapping[str, Any], table: str) -> tuple[Mapping[str, Any], list[str]]:
    """The table's dict and its columns in first-seen order."""
    tables = _as_dict(results)["tables"]
    if table not in tables:
        raise KeyError(f"no table {table!r}; available: {sorted(tables)}")
    t = tables[table]
    cols: list[str] = []
    for row in t["rows"].values():
        cols += [c for c in row if c not in cols]
    return t, cols


def table_frame(results: Results | Mapping[str, Any], table: str, arrows: bool = False):
    """The table as a DataFrame with (column, "paper") and (column, "ours") columns, side by side.

    With ``arrows=True`` column names carry ↑ / ↓ for higher / lower is better.
    """
    import pandas as pd

    t, cols = _table(results, table)
    label = {c: c + (_ARROWS.get(t.get("direction", {}).get(c), "") if arrows else "") for c in cols}
    data = {(label[c], which): [t["rows"][r].get(c, {}).get(which) for r in t["rows"]]
            for c in cols for which in ("paper", "ours")}
    frame = pd.DataFrame(data, index=list(t["rows"]), dtype=float)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["metric", "source"])
    frame.index.name = "method"
    return frame


def export_csv(results: Results, directory: str | Path | None = None) -> list[Path]:
    """Our values of every table as ``<directory>/<table>.csv`` (default: ``results_dir(profile)/<notebook>/``),
    each written atomically; returns the paths."""
    folder = Path(directory) if directory is not None else config.results_dir(results.profile) / results.notebook
    for name in results.tables:
        text = table_frame(results, name).xs("ours", axis=1, level="source").to_csv()
        cache.atomic_write_bytes(folder / f"{name}.csv", text.encode())
    return [folder / f"{name}.csv" for name in results.tables]


def _md_cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.0f}" if 1e4 <= abs(value) < 1e6 else f"{value:.4g}"  # 12345, not 1.234e+04
    return str(value).replace("|", "\\|")


def table_markdown(results: Results | Mapping[str, Any], table: str) -> str:
    """The table as a markdown table: per column the paper's value beside ours (the paper column left out where
    the paper gives no value), ↑ / ↓ for higher / lower is better, — for a missing value."""
    t, cols = _table(results, table)
    rows = t["rows"]
    with_paper = {c: any(rows[r].get(c, {}).get("paper") is not None for r in rows) for c in cols}
    head = ["method"]
    for c in cols:
        label = _md_cell(c) + _ARROWS.get(t.get("direction", {}).get(c), "")
        head += [f"{label} paper", f"{label} ours"] if with_paper[c] else [f"{label} ours"]
    lines = [head, ["---"] + ["---:"] * (len(head) - 1)]
    for r, row in rows.items():
        cells = [_md_cell(r)]
        for c in cols:
            cell = row.get(c, {})
            cells += ([_md_cell(cell.get("paper"))] if with_paper[c] else []) + [_md_cell(cell.get("ours"))]
        lines.append(cells)
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _verdict(claim: Mapping[str, Any]) -> str:
    """A claim's verdict; files written before verdicts existed carry only ``holds``."""
    return claim.get("verdict") or {True: "holds", False: "fails", None: "not evaluated"}[claim.get("holds")]


def verdict_counts(claims: list[Mapping[str, Any]]) -> dict[str, int]:
    """How many claims have each verdict, in `lab.stats.VERDICTS` order."""
    verdicts = [_verdict(c) for c in claims]
    return {v: verdicts.count(v) for v in stats.VERDICTS}


def claims_markdown(results: Results | Mapping[str, Any]) -> str:
    """Markdown stating which of the paper's claims hold here, which do not, which the intervals leave open and
    which were not evaluated, each with its interval when it has one."""
    claims = _as_dict(results)["claims"]
    if not claims:
        return "_No claims were checked._"
    groups = [("holds", "hold", "✅"), ("fails", "do not hold", "❌"),
              ("inconclusive", "are inconclusive (the 95 % interval straddles the margin)", "❔"),
              ("not evaluated", "were not evaluated", "➖")]
    counts = verdict_counts(claims)
    lines = [f"**{counts['holds']} of {len(claims)} claims hold, {counts['fails']} fail, "
             f"{counts['inconclusive']} inconclusive, {counts['not evaluated']} not evaluated.**"]
    for value, heading, mark in groups:
        chosen = [c for c in claims if _verdict(c) == value]
        if not chosen:
            continue
        lines += ["", f"Claims that {heading}:"]
        for c in chosen:
            iv = c.get("interval")
            ci = (f" [{_md_cell(iv.get('estimate'))}, {100 * iv.get('level', 0.95):g} % CI {_md_cell(iv.get('low'))} "
                  f"to {_md_cell(iv.get('high'))}, n={iv.get('n')}, {iv.get('kind', 'margin')} "
                  f"{_md_cell(iv.get('margin'))}]" if iv else "")
            detail = f" — {c['detail']}" if c.get("detail") else ""
            lines.append(f"- {mark} {c['claim']}{ci}{detail}")
    return "\n".join(lines)


# ---- comparing two runs -------------------------------------------------------------------------------------
# Tables and columns that measure time or memory (never compared: they change from run to run).
TIMING_TABLES = re.compile(r"(^|_)(cost|timings?|bench)($|_)")
TIMING_COLUMNS = re.compile(r"^(s_per_example|ratio_fb|peak_mb|seconds|.*_s|.*_seconds|.*_s_per_\w+|m?s_per_instance)$")


def _results_files(path: Path) -> dict[str, Path]:
    """{name: file} of a results file, or of the ``*.json`` files directly inside a results folder."""
    if path.is_file():
        return {path.stem: path}
    if path.is_dir():
        return {p.stem: p for p in sorted(path.glob("*.json"))}
    raise FileNotFoundError(f"{path}: no such results file or folder")


def _close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    return a == b


def _diff_tables(name: str, a: Mapping, b: Mapping, tol: float) -> list[str]:
    out = []
    for table in sorted(set(a) | set(b)):
        if TIMING_TABLES.search(table):
            continue
        if table not in a or table not in b:
            out.append(f"{name}: table {table} only in {'B' if table not in a else 'A'}")
            continue
        ra, rb = a[table]["rows"], b[table]["rows"]
        for row in sorted(set(ra) | set(rb)):
            cols = set(ra.get(row, {})) | set(rb.get(row, {}))
            for col in sorted(c for c in cols if not TIMING_COLUMNS.match(c)):
                ca, cb = ra.get(row, {}).get(col, {}), rb.get(row, {}).get(col, {})
                for part in ("paper", "ours"):
                    x, y = ca.get(part), cb.get(part)
                    if not _close(x, y, tol):
                        out.append(f"{name}: {table}[{row}][{col}].{part}: {x!r} != {y!r}")
    return out


def _claim_view(claim: Mapping) -> dict:
    return {"verdict": _verdict(claim), "interval": claim.get("interval"), "detail": claim.get("detail")}


def _diff_claims(name: str, a: list, b: list, tol: float) -> list[str]:
    ca, cb = {c["claim"]: _claim_view(c) for c in a}, {c["claim"]: _claim_view(c) for c in b}
    out = [f"{name}: claim only in {'B' if c not in ca else 'A'}: {c}" for c in sorted(set(ca) ^ set(cb))]
    for claim in (c for c in ca if c in cb):
        x, y = ca[claim], cb[claim]
        for key in ("verdict", "detail"):
            if x[key] != y[key]:
                out.append(f"{name}: claim {claim!r}: {key} {x[key]!r} != {y[key]!r}")
        ia, ib = x["interval"] or {}, y["interval"] or {}
        for key in sorted(set(ia) | set(ib)):
            if not _close(ia.get(key), ib.get(key), tol):
                out.append(f"{name}: claim {claim!r}: interval {key} {ia.get(key)!r} != {ib.get(key)!r}")
    return out


def diff_results(a: str | Path, b: str | Path, tol: float = 1e-9) -> list[str]:
    """Every difference between two results files or folders (``*.json`` directly inside): table cells (paper and
    ours) and claims (verdict, interval, detail), numbers equal within ``tol`` (relative or absolute). Run metadata,
    provenance and timing tables/columns (`TIMING_TABLES`, `TIMING_COLUMNS`) are ignored. Empty: identical."""
    fa, fb = _results_files(Path(a)), _results_files(Path(b))
    if Path(a).is_file() and Path(b).is_file():
        fb = {next(iter(fa)): next(iter(fb.values()))}
    out = [f"{n}: only in {'B' if n not in fa else 'A'}" for n in sorted(set(fa) ^ set(fb))]
    for name in (n for n in fa if n in fb):
        try:
            da, db = (json.loads(p.read_text()) for p in (fa[name], fb[name]))
        except json.JSONDecodeError as err:
            raise ValueError(f"{name}: not a results file ({err})") from None
        if not all(isinstance(d, Mapping) and {"tables", "claims"} <= set(d) for d in (da, db)):
            raise ValueError(f"{name}: not a results file (no 'tables' and 'claims')")
        out += _diff_tables(name, da["tables"], db["tables"], tol) + _diff_claims(name, da["claims"], db["claims"], tol)
    return out
