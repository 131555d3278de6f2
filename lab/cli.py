"""python -m lab data | explainers | reproduce | plan | report | cache | bench | benchmark | diff"""
from __future__ import annotations

import argparse
import sys


def _data(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab data", description="status of every offline dataset")
    parser.add_argument("--data-dir", default=None, help="override LAB_DATA_DIR")
    args = parser.parse_args(argv)
    from lab.data import describe, format_status

    rows = describe(args.data_dir)
    print(format_status(rows))
    return 0 if all(r["status"] == "OK" for r in rows) else 1


def _explainers(argv) -> int:
    from lab.explainers import describe_explainers
    from lab.explainers.base import support_table

    print(describe_explainers())
    print("\nWhich explainer applies to which architecture (causal LMs: the next-token prediction):")
    print(support_table())
    return 0


def _reproduce(argv) -> int:
    from lab.runner import main_reproduce

    return main_reproduce(argv)


def _report(argv) -> int:
    from lab.report import main

    return main(argv)


def _plan(argv) -> int:
    from lab.plan import main

    return main(argv)


def _bench(argv) -> int:
    from lab.bench import main

    return main(argv)


def _benchmark(argv) -> int:
    try:
        from lab.experiments.benchmark_results import main
    except ModuleNotFoundError:
        print("python -m lab benchmark: the all-methods x all-metrics protocol (notebook 07) is not built yet",
              file=sys.stderr)
        return 2
    return main(argv)


def _human(n: float) -> str:
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _memo_line(meta: dict | None, current_code: str) -> str:
    if not meta:
        return ""
    key = ", ".join(f"{k}={v}" for k, v in meta.get("key", {}).items())
    code = meta.get("code", "?")
    return f"code {code}{' (current)' if code == current_code else ' (older code)'}; {key[:70]}"


def _cache_list(kind: str | None) -> int:
    import time

    from lab import cache, config

    rows, now, code = cache.entries(kind), time.time(), cache.code_digest()
    print(f"{config.cache_dir()}: {len(rows)} entries, {_human(sum(r.size for r in rows))}")
    for group in dict.fromkeys(r.kind for r in rows):
        mine = [r for r in rows if r.kind == group]
        print(f"\n{group} ({len(mine)} entries, {_human(sum(r.size for r in mine))})")
        for r in mine:
            detail = "; ".join(x for x in (r.detail, _memo_line(r.meta, code)) if x)
            print(f"  {r.name:48s} {_human(r.size):>9s} {_age(now - r.mtime):>8s}  {r.status}"
                  + (f"  ({detail})" if detail else ""))
    return 0


def _cache_verify(kind: str | None) -> int:
    from lab import cache

    counts: dict[str, int] = {}
    for r in cache.entries(kind):
        status = r.status
        if status in ("ok", "legacy", "corrupt"):
            status = "ok" if cache.verify(r.path) else "corrupt (moved aside)"
        counts[status] = counts.get(status, 0) + 1
    print("verified: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing cached"))
    return 1 if "corrupt (moved aside)" in counts else 0


def _cache_clear(kind: str | None) -> int:
    from lab import cache, config

    freed = cache.clear(kind)
    print(f"removed {kind or 'everything'} from {config.cache_dir()} ({_human(freed)} freed)")
    return 0


def _cache(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab cache", description=(
        "list: entries grouped by kind with size, age and status (ok / legacy: no checksums yet / corrupt / "
        "incomplete / temp); verify: check every file's sha256 (corrupt entries are moved aside to .corrupt/, "
        "legacy ones get checksums); clear: delete one kind, or everything"))
    parser.add_argument("action", nargs="?", default="list", choices=("list", "verify", "clear"))
    parser.add_argument("kind", nargs="?", default=None, help="only this kind (models, rnn, mlm, memo kinds ...)")
    args = parser.parse_args(argv)
    from lab import cache

    if args.kind is not None and args.kind not in cache.kinds():
        print(f"python -m lab cache: no kind {args.kind!r} in the cache; present: {', '.join(cache.kinds()) or 'none'}",
              file=sys.stderr)
        return 2
    return {"list": _cache_list, "verify": _cache_verify, "clear": _cache_clear}[args.action](args.kind)


def _diff(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab diff", description=(
        "compare two results folders (their *.json) or two results files: every table cell and claim (verdict, "
        "interval, detail), ignoring run metadata, provenance and timings; exit 0 when identical, 1 otherwise"))
    parser.add_argument("a", help="results folder or file (before)")
    parser.add_argument("b", help="results folder or file (after)")
    parser.add_argument("--tol", type=float, default=1e-9, help="relative or absolute tolerance on numbers")
    parser.add_argument("--max-lines", type=int, default=20, help="differences printed (all are counted)")
    args = parser.parse_args(argv)
    from lab.results import diff_results

    try:
        diffs = diff_results(args.a, args.b, args.tol)
    except (FileNotFoundError, ValueError) as err:
        print(f"python -m lab diff: {err}", file=sys.stderr)
        return 2
    if not diffs:
        print(f"identical: {args.a} and {args.b} (tables and claims, tolerance {args.tol:g}; timings ignored)")
        return 0
    print("\n".join(diffs[:args.max_lines]))
    more = f" ({len(diffs) - args.max_lines} more not shown)" if len(diffs) > args.max_lines else ""
    print(f"{len(diffs)} difference(s) between {args.a} and {args.b}{more}")
    return 1


COMMANDS = {
    "data": (_data, "print path, split sizes, label balance and OK/missing for every dataset"),
    "explainers": (_explainers, "list registered explainers with their paper references and which architectures each supports"),
    "reproduce": (_reproduce, "execute numbered notebooks headless under a profile (smoke|default|paper)"),
    "report": (_report, "write results/REPORT.md, the scorecard: tables beside the paper, claims, provenance"),
    "plan": (_plan, "what reproduce would train and execute, with expected times (trains and loads nothing)"),
    "bench": (_bench, "time every explainer relative to one forward+backward pass"),
    "benchmark": (_benchmark, "every explainer x every metric on the fine-tuned models (notebook 07)"),
    "diff": (_diff, "compare the tables and claims of two results folders or files (timings ignored)"),
    "cache": (_cache, "list | verify | clear [KIND] the cached models and memoised results (LAB_CACHE_DIR)"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m lab COMMAND [options]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:11s} {help_}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    return COMMANDS[argv[0]][0](argv[1:])
