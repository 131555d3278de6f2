"""`python -m lab plan`: what a `make reproduce` would train and execute, with expected times, without training or
loading any weights (only presets, cache keys and paths are read).

A cached model's time is its own `metrics.json` `train_seconds`; otherwise the `TIMINGS` table below, measured on this
2-core machine. Models found by name only (RNN, CNN/LSTM: their keys hash the tokenised data) say so.
"""
from __future__ import annotations

import argparse
import sys
import json
from pathlib import Path

from lab import cache, config

# One place for every recorded timing (seconds, this 2-core machine). "notebook": execution with models cached, the
# README's column A (2026-11-23, idle, 2 threads). "model": training times recorded in the README (2026-11-23, some
# under load: upper bounds) except imdb 236 s (issue 20's quiet cold run, 2026-12); "mlm" (3,000 steps) and "causal_lm"
# (1,500 steps): CPU seconds of the 2026-12-03 trainings at load 6-9 (3,293 and ~1,000). Replace with a quiet cold
# run's metrics.json values.
TIMINGS = {
    "notebook": {"00_tour": 16, "01_chefer_vit": 138, "02_chefer_bert": 780, "03_mask_lrp": 648, "04_wu_ong": 74,
                 "05_jain_wallace": 342, "06_input_marginalization": 318, "07_benchmark": 516},
    "model": {"sst2": 894, "movies": 1138, "imdb": 236, "yelp": 800, "snli": 975, "sst5": 215, "pair": 215,
              "vit": 726, "mlm": 3300, "causal_lm": 1000, "cnn": 472, "lstm": 910, "rnn": 2070},
}
NOTEBOOKS = tuple(TIMINGS["notebook"])
# The smoke profile's notebook times (README, models cached, 2026-11-23); its tiny models train in seconds.
SMOKE_NOTEBOOK_SECONDS = {"00_tour": 18, "01_chefer_vit": 24, "02_chefer_bert": 51, "03_mask_lrp": 50, "04_wu_ong": 24,
                          "05_jain_wallace": 42, "06_input_marginalization": 27, "07_benchmark": 46}


def _fine_tune(dataset: str, profile: str, label: str, seed: int = 0, **overrides):
    from lab.models.training import checkpoint_path

    return label, checkpoint_path(dataset, profile=profile, seed=seed, **overrides), dataset, False


def _by_name(kind: str, prefix: str, label: str, timing: str):
    """A model whose key hashes its data: cached when a complete `cache_dir()/kind/prefix-*` exists."""
    found = [p for p in sorted((config.cache_dir() / kind).glob(f"{prefix}-*")) if cache.is_complete(p)]
    return label, (found[0] if found else config.cache_dir() / kind / f"{prefix}-?"), timing, True


def models_for(notebook: str, profile: str = "default") -> list[tuple[str, Path, str, bool]]:
    """(label, cache path, timing key, matched by name only) of every model `notebook` needs."""
    from lab.experiments import mask_lrp, wu_ong
    from lab.models import causal_lm, mlm, vit

    mp = "smoke" if profile == "smoke" else "default"
    sst2 = _fine_tune("sst2", mp, "SST-2 MiniLM")
    vit_model = ("ViT (shapes)", vit.cache_path(vit.vit_settings(mp), 0), "vit", False)
    movies = _fine_tune("movies", mp, "Movies MiniLM")
    if notebook == "00_tour":
        return [sst2]
    if notebook == "01_chefer_vit":
        return [vit_model]
    if notebook == "02_chefer_bert":
        return [sst2, movies]
    if notebook == "03_mask_lrp":
        return [_fine_tune(d, mp, f"{d} MiniLM", **(mask_lrp.MODEL_OVERRIDES[d] if mp != "smoke" else {}))
                for d in mask_lrp.settings(profile)["datasets"]]
    if notebook == "04_wu_ong":
        cfg = wu_ong.settings(profile)
        out = []
        for d in cfg["datasets"]:
            for role, seed in (("main", 0), ("pair", 0), ("pair", 1)):
                prof, over = wu_ong.model_recipe(d, cfg, role, seed)
                label, path, timing, approx = _fine_tune(d, prof, f"{d} MiniLM ({role}, seed {seed})", seed, **over)
                out.append((label, path, timing if role == "main" else "pair", approx))
        return list({o[1]: o for o in out}.values())
    if notebook == "05_jain_wallace":
        return [sst2, _by_name("rnn", "", "J&W RNN encoders (10)", "rnn")]
    if notebook == "06_input_marginalization":
        return [sst2, ("masked LM", mlm.mlm_path(mp), "mlm", False),
                ("causal LM", causal_lm.causal_lm_path(mp), "causal_lm", False),
                _by_name("textclf", "sst2-cnn", "SST-2 CNN", "cnn"),
                _by_name("textclf", "sst2-lstm", "SST-2 BiLSTM", "lstm"),
                _by_name("textclf", "snli-lstm", "SNLI BiLSTM", "lstm")]
    if notebook == "07_benchmark":
        return [sst2, movies, vit_model]
    raise ValueError(f"unknown notebook {notebook!r}; choose from {', '.join(NOTEBOOKS)}")


def _train_seconds(path: Path, timing: str) -> tuple[float, str]:
    if cache.is_complete(path):
        return 0.0, "cached"
    return float(TIMINGS["model"][timing]), "to train"


def _recorded(path: Path) -> float | None:
    try:
        metrics = json.loads((Path(path) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return metrics.get("train_seconds", metrics.get("train_wall_s"))


def _resolve(names) -> list[str]:
    out = []
    for name in names or NOTEBOOKS:
        match = [n for n in NOTEBOOKS if n == name or n.startswith(f"{name}_") or n.startswith(name)]
        if not match:
            raise ValueError(f"unknown notebook {name!r}; choose from {', '.join(NOTEBOOKS)}")
        out.append(match[0])
    return out


def plan_lines(notebooks=None, profile: str = "default") -> list[str]:
    """The plan as printable lines: per notebook its models (cached, with their recorded training time, or to be
    trained, with the expected time) and the expected notebook time; then the total. A model shared by several
    notebooks is trained once, by the first."""
    lines, seen, total = [f"plan for profile {profile} (times: seconds on this 2-core machine)"], set(), 0.0
    known = profile == "default"  # the recorded training times are the default profile's
    for nb in _resolve(notebooks):
        run = float(TIMINGS["notebook"][nb] if known else SMOKE_NOTEBOOK_SECONDS[nb] if profile == "smoke" else 0)
        lines.append(f"{nb}: execute ~{run:.0f} s")
        total += run
        for label, path, timing, approx in models_for(nb, profile):
            note = " (matched by name only)" if approx else ""
            if path in seen:
                lines.append(f"  {label}: trained by an earlier notebook")
                continue
            seen.add(path)
            expect, state = _train_seconds(path, timing)
            if state == "cached":
                rec = _recorded(path)
                lines.append(f"  {label}: cached{note} (trained in {rec:.0f} s)" if rec is not None else
                             f"  {label}: cached{note}")
            elif known:
                lines.append(f"  {label}: to train, expected ~{expect:.0f} s{note}")
                total += expect
            else:
                lines.append(f"  {label}: to train (no recorded time for profile {profile}){note}")
    lines.append(f"total expected: ~{total:.0f} s ({total / 60:.1f} min)" if known or profile == "smoke" else
                 "total expected: not recorded for this profile")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab plan", description="what `make reproduce` would do")
    parser.add_argument("notebooks", nargs="*", help="numbers or names (default: all)")
    parser.add_argument("--profile", default="default", choices=("smoke", "default", "paper"))
    args = parser.parse_args(argv)
    try:
        print("\n".join(plan_lines(args.notebooks, args.profile)))
    except (ValueError, OSError) as err:  # an unknown notebook, a missing dataset: one line, no traceback
        print(f"python -m lab plan: {err}", file=sys.stderr)
        return 2
    return 0
