"""python -m lab data | explainers | reproduce | plan | report | cache | bench | benchmark"""
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

    print(describe_explainers())
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
        from lab.experiments.benchmark import main
    except ModuleNotFoundError:
        print("python -m lab benchmark: the all-methods x all-metrics protocol (notebook 07) is not built yet",
              file=sys.stderr)
        return 2
    return main(argv)


COMMANDS = {
    "data": (_data, "print path, split sizes, label balance and OK/missing for every dataset"),
    "explainers": (_explainers, "list registered explainers with their paper references"),
    "reproduce": (_reproduce, "execute numbered notebooks headless under a profile (smoke|default|paper)"),
    "report": (_report, "write results/REPORT.md, the scorecard: tables beside the paper, claims, provenance"),
    "plan": (_plan, "what reproduce would train and execute, with expected times (trains and loads nothing)"),
    "bench": (_bench, "time every explainer relative to one forward+backward pass"),
    "benchmark": (_benchmark, "every explainer x every metric on the fine-tuned models (notebook 07)"),
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
