"""lab.claims: claims made of parts and interval table cells, against hand-computed verdicts."""
import numpy as np
import pytest

from lab import stats
from lab.claims import decide_parts, interval_cells, interval_or_none, part_verdicts, parts_claim, range_part
from lab.results import Results, claim_verdict
from lab.stats import Interval


def toy_parts():
    """Method A against B and C on two columns (AOPC: higher is better, LOdds: lower is better)."""
    return {"A − B AOPC": (Interval(0.1, 0.05, 0.15, 10), 0.0, "greater"),      # above 0: holds
            "A − B LOdds": (Interval(-0.2, -0.3, -0.1, 10), 0.0, "less"),       # below 0: holds
            "A − C AOPC": (Interval(0.01, -0.02, 0.04, 10), 0.0, "greater"),    # straddles 0: inconclusive
            "A − C LOdds": (Interval(0.1, 0.05, 0.2, 10), 0.0, "less")}         # above 0: fails


def test_part_verdicts_and_combination_match_hand_computed_ones():
    parts = toy_parts()
    assert part_verdicts(parts) == {"A − B AOPC": "holds", "A − B LOdds": "holds", "A − C AOPC": "inconclusive",
                                    "A − C LOdds": "fails"}
    b_only = {k: p for k, p in parts.items() if "B" in k}
    c_aopc = {k: p for k, p in parts.items() if k == "A − C AOPC"}
    assert decide_parts(b_only)[0] == "holds"
    assert decide_parts({**b_only, **c_aopc})[0] == "inconclusive"  # one open part leaves the claim open
    assert decide_parts(parts)[0] == "fails"  # one failing part fails it
    assert decide_parts(parts, rule=stats.majority)[0] == "inconclusive"  # 2 of 4 hold, 1 open: no majority yet
    assert decide_parts({}) == (None, "")


def test_parts_claim_detail_names_every_part_and_missing_values():
    parts = {"x": (Interval(0.5, 0.25, 0.75, 4), 0.0, "greater"), "y": (None, 0.0, "greater")}
    claim = parts_claim("A beats B", parts, note=" (toy)")
    assert claim == {"claim": "A beats B", "verdict": "not evaluated",
                     "detail": "x 0.5 [0.25, 0.75] (n=4) → holds; y no values → not evaluated (toy)"}
    res = Results("00_toy", "default").add_claim(**claim)
    assert res.claims[0]["verdict"] == "not evaluated"


def test_parts_from_per_example_arrays():
    a = np.array([[1.0, 0.1], [2.0, 0.2], [3.0, 0.3]])  # columns: AOPC, LOdds of method A on three examples
    b, c = a - [0.5, -0.5], a + [0.5, -0.5]  # A beats B on both columns; C beats A on both
    parts = {f"{m} {col}": (stats.paired_difference(a[:, j], other[:, j]), 0.0, kind)
             for m, other in (("B", b), ("C", c)) for j, (col, kind) in enumerate((("AOPC", "greater"),
                                                                                 ("LOdds", "less")))}
    assert list(part_verdicts(parts).values()) == ["holds", "holds", "fails", "fails"]


def test_range_part_decides_within_the_range():
    iv = Interval(0.4, 0.35, 0.42, 50)
    shifted, margin, kind = range_part(iv, 0.30, 0.45)
    assert (shifted.estimate, shifted.low, shifted.high) == pytest.approx((0.025, -0.025, 0.045))
    assert margin == pytest.approx(0.075) and kind == "within" and shifted.n == 50
    assert stats.decide(*range_part(iv, 0.30, 0.45)) == "holds"
    assert stats.decide(*range_part(iv, 0.38, 0.50)) == "inconclusive"
    assert stats.decide(*range_part(iv, 0.50, 0.60)) == "fails"


def test_interval_cells_and_interval_or_none():
    iv = Interval(0.12345, 0.01234, 0.23456, 7)
    assert interval_cells("Δx", iv) == {"Δx": 0.12345, "Δx_low": 0.01234, "Δx_high": 0.23456}
    assert interval_cells("t", iv, ("_ci_low", "_ci_high"), 2) == {"t": 0.12, "t_ci_low": 0.01, "t_ci_high": 0.23}
    assert interval_cells("Δx", None) == {"Δx": None, "Δx_low": None, "Δx_high": None}
    assert interval_or_none(lambda: stats.bootstrap([])) is None
    assert interval_or_none(lambda: stats.bootstrap([1.0, 1.0])).estimate == 1.0


def test_claim_verdict_is_the_decision_add_claim_records():
    iv = Interval(0.1, 0.05, 0.15, 10)
    cases = [dict(interval=iv, margin=0.0, kind="greater"), dict(interval=iv, margin=0.2, kind="less"),
             dict(interval=iv, margin=0.1, kind="within"), dict(verdict="inconclusive"), dict(holds=False),
             dict(holds=None), dict(holds=np.bool_(True))]
    expected = ["holds", "holds", "inconclusive", "inconclusive", "fails", "not evaluated", "holds"]
    assert [claim_verdict("c", **kw) for kw in cases] == expected
    res = Results("00_toy", "default")
    for kw in cases:
        res.add_claim("c", **kw)
    assert [c["verdict"] for c in res.claims] == expected
    with pytest.raises(ValueError, match="contradicts"):
        claim_verdict("c", interval=iv, margin=0.0, kind="greater", verdict="fails")
    with pytest.raises(ValueError, match="needs a margin"):
        claim_verdict("c", interval=iv)
