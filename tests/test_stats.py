"""lab.stats: bootstrap intervals against analytic ones, pairing, clusters, and the three-way verdicts."""
import numpy as np
import pytest

from lab import stats
from lab.stats import Interval, StatsInputError, bootstrap, combine, decide, paired_difference


def test_bootstrap_mean_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 1.0, size=400)
    iv = bootstrap(x, n_boot=4000)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert iv.estimate == pytest.approx(x.mean())
    assert iv.low == pytest.approx(x.mean() - 1.96 * se, abs=0.25 * se)
    assert iv.high == pytest.approx(x.mean() + 1.96 * se, abs=0.25 * se)
    assert iv.n == 400 and bootstrap(x, n_boot=500, seed=3) == bootstrap(x, n_boot=500, seed=3)


def test_pairing_removes_the_shared_per_example_variation():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 5.0, size=200)  # examples differ a lot; the two methods differ by a small constant
    a, b = base + 0.3 + rng.normal(0, 0.1, 200), base + rng.normal(0, 0.1, 200)
    paired = paired_difference(a, b)
    unpaired_width = 2 * 1.96 * np.sqrt(a.var() / 200 + b.var() / 200)
    assert paired.low > 0.25 and paired.high < 0.35
    assert paired.high - paired.low < 0.1 * unpaired_width
    with pytest.raises(StatsInputError, match="pairs must match"):
        paired_difference(a, b[:-1])


def test_clusters_widen_the_interval_when_seeds_disagree():
    rng = np.random.default_rng(0)
    seeds = np.repeat(np.arange(3), 100)
    x = rng.normal(0, 0.1, 300) + np.array([-1.0, 0.0, 1.0])[seeds]  # seed offsets dominate
    flat, clustered = bootstrap(x), bootstrap(x, clusters=seeds)
    assert clustered.clusters == 3 and flat.clusters is None
    assert clustered.high - clustered.low > 3 * (flat.high - flat.low)


def test_bad_values_are_named():
    with pytest.raises(StatsInputError, match="NaN"):
        bootstrap([1.0, float("nan")])
    with pytest.raises(StatsInputError, match="at least one"):
        bootstrap([])
    with pytest.raises(StatsInputError, match="cluster labels"):
        bootstrap([1.0, 2.0], clusters=[0])


@pytest.mark.parametrize("low, high, margin, kind, expected", [
    (0.1, 0.5, 0.0, "greater", "holds"), (-0.1, 0.5, 0.0, "greater", "inconclusive"),
    (-0.5, 0.0, 0.0, "greater", "fails"), (-0.5, -0.1, 0.0, "less", "holds"),
    (0.1, 0.5, 0.0, "less", "fails"), (-0.01, 0.02, 0.05, "within", "holds"),
    (0.01, 0.09, 0.05, "within", "inconclusive"), (0.06, 0.09, 0.05, "within", "fails"),
])
def test_decide(low, high, margin, kind, expected):
    assert decide(Interval(0.0, low, high, 10), margin, kind) == expected


def test_combine_and_bad_kinds():
    assert combine(["holds", "holds"]) == "holds"
    assert combine(["holds", "inconclusive"]) == "inconclusive"
    assert combine(["inconclusive", "fails"]) == "fails"
    assert combine(["holds", "not evaluated"]) == "not evaluated"
    with pytest.raises(StatsInputError):
        combine(["maybe"])
    with pytest.raises(StatsInputError, match="kind"):
        decide(Interval(0, 0, 1, 2), 0.0, "bigger")


def test_majority_verdict():
    assert stats.majority(["holds", "holds", "fails"]) == "holds"
    assert stats.majority(["holds", "inconclusive", "fails"]) == "inconclusive"
    assert stats.majority(["holds", "fails", "fails", "inconclusive"]) == "fails"
    with pytest.raises(stats.StatsInputError):
        stats.majority([])


def test_vectorised_mean_matches_the_generic_path():
    x = np.random.default_rng(3).normal(size=50)
    assert bootstrap(x) == bootstrap(x, lambda v: float(np.mean(v)))


def test_proportion_bootstraps_the_indicator():
    iv = stats.proportion(0.9, 400)
    assert iv.estimate == pytest.approx(0.9) and iv.n == 400 and 0.86 < iv.low < 0.9 < iv.high < 0.94
    with pytest.raises(stats.StatsInputError, match="rate"):
        stats.proportion(None, 10)


def test_a_single_example_decides_nothing():
    assert decide(bootstrap([0.9]), 0.5, "greater") == "inconclusive"  # its interval is the point 0.9
    assert decide(bootstrap([0.9, 0.95]), 0.5, "greater") == "holds"
