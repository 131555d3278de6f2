"""Claims made of parts, and interval cells for tables: the shapes every study's results file repeats.

A *part* is ``(interval, margin, kind)``: one comparison decided by `lab.stats.decide` ("Mask-LRP − GAE on AOPC
> 0", "SST: τ difference > 0"); an interval of None (no values to resample) leaves the part "not evaluated". A
claim over parts ("on every dataset", "on both columns") is decided by a rule over their verdicts
(`lab.stats.combine` by default, `lab.stats.majority` for "on most"):

    parts = {"Δ AOPC": (paired_difference(a, b), 0.0, "greater"), "Δ LOdds": (paired_difference(c, d), 0.0, "less")}
    res.add_claim(**parts_claim("A beats B on both columns", parts))   # detail "Δ AOPC 0.1 [..] (n=..) → holds; .."

A range claim ("mean τ within 0.30–0.45") is a "within" part on the interval shifted by the range's centre
(`range_part`). `interval_cells` writes an interval as three table cells (estimate, low, high).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterable, Mapping

from lab import stats

Part = tuple["stats.Interval | None", float, str]  # (interval, margin, kind)


def part_verdicts(parts: Mapping[Any, Part]) -> dict[Any, str]:
    """{label: verdict} of each part; "not evaluated" where its interval is None."""
    return {k: "not evaluated" if iv is None else stats.decide(iv, margin, kind)
            for k, (iv, margin, kind) in parts.items()}


def said(label: str, interval: "stats.Interval | None", verdict: str) -> str:
    """One part as a claim's detail shows it: ``"<label> <interval> → <verdict>"``."""
    return f"{label} {interval if interval is not None else 'no values'} → {verdict}"


def decide_parts(parts: Mapping[str, Part], rule: Callable[[Iterable[str]], str] = stats.combine
                 ) -> tuple[str | None, str]:
    """(verdict by ``rule`` over the parts' verdicts, None without parts; detail listing every part by `said`)."""
    verdicts = part_verdicts(parts)
    detail = "; ".join(said(k, iv, verdicts[k]) for k, (iv, _, _) in parts.items())
    return (rule(list(verdicts.values())) if verdicts else None), detail


def parts_claim(claim: str, parts: Mapping[str, Part], rule: Callable[[Iterable[str]], str] = stats.combine,
                note: str = "") -> dict:
    """`Results.add_claim` keyword arguments of a claim decided by `decide_parts`; ``note`` ends the detail."""
    verdict, detail = decide_parts(parts, rule)
    return {"claim": claim, "verdict": verdict, "detail": detail + note}


def interval_or_none(make: Callable[[], "stats.Interval"]) -> "stats.Interval | None":
    """``make()``, or None when its values cannot be resampled (`lab.stats.StatsInputError`: none, NaN, ...)."""
    try:
        return make()
    except stats.StatsInputError:
        return None


def range_part(interval: "stats.Interval", low: float, high: float) -> Part:
    """The part "the statistic lies within [low, high]": the interval shifted by the range's centre, "within"
    half its width."""
    c = (low + high) / 2
    shifted = replace(interval, estimate=interval.estimate - c, low=interval.low - c, high=interval.high - c)
    return shifted, (high - low) / 2, "within"


def interval_cells(name: str, interval: "stats.Interval | None", suffixes: tuple[str, str] = ("_low", "_high"),
                   digits: int | None = None) -> dict[str, float | None]:
    """{name: estimate, name + suffixes[0]: low, name + suffixes[1]: high}, rounded to ``digits`` when given; None
    values for a None interval."""
    values = (None,) * 3 if interval is None else (interval.estimate, interval.low, interval.high)
    if digits is not None:
        values = tuple(None if v is None else round(v, digits) for v in values)
    return dict(zip((name, name + suffixes[0], name + suffixes[1]), values))
