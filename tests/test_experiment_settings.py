"""`ExperimentSettings`: one declaration of a study's profiles and checks, called like the old settings()."""
import pytest

from lab.experiments import ExperimentError, ExperimentSettings

PROFILES = {"smoke": dict(n=2, methods=["rollout"]), "default": dict(n=50, methods=["rollout", "chefer"])}
COMMON = dict(fill="mean", k=None, seed=0)


def _settings(check=None):
    return ExperimentSettings(PROFILES, COMMON, methods=("methods",), choices={"fill": ("mean", "zero")},
                              positive=("n", "k"), check=check)


def test_merges_profile_common_and_overrides():
    cfg = _settings()("smoke", seed=3, fill=None)
    assert cfg == {"profile": "smoke", "n": 2, "methods": ("rollout",), "fill": "mean", "k": None, "seed": 3}
    assert _settings()()["n"] == 50  # default profile


@pytest.mark.parametrize("profile, overrides, message", [
    ("huge", {}, "unknown profile 'huge'; choose one of smoke, default"),
    ("smoke", {"nn": 3}, r"unknown setting\(s\) \['nn'\]"),
    ("smoke", {"methods": ["rollout", "nope"]}, r"unknown method\(s\) \['nope'\] in methods"),
    ("smoke", {"fill": "blur"}, "fill must be one of 'mean', 'zero', got 'blur'"),
    ("smoke", {"n": 0}, r"n must be >= 1 or None \(all\), got 0"),
    ("smoke", {"k": -1}, "k must be >= 1"),
])
def test_bad_settings_get_one_clear_message(profile, overrides, message):
    with pytest.raises(ExperimentError, match=message):
        _settings()(profile, **overrides)


def test_study_check_runs_after_the_shared_ones():
    def check(cfg):
        if cfg["n"] > 10 and cfg["fill"] == "zero":
            raise ExperimentError("fill='zero' needs n <= 10")

    settings = _settings(check)
    assert settings("smoke", fill="zero")["fill"] == "zero"
    with pytest.raises(ExperimentError, match="needs n <= 10"):
        settings("default", fill="zero")
