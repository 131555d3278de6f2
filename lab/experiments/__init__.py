"""Experiment functions behind the notebooks: each module computes one paper's tables and figures from `lab`."""
from __future__ import annotations


class ExperimentError(ValueError):
    """Bad experiment settings or selections; the message says what is allowed."""


def merge_settings(profiles: dict, common: dict, profile: str, overrides: dict) -> dict:
    """The profile's sizes plus the shared protocol settings; `None` overrides keep the profile's value."""
    if profile not in profiles:
        raise ExperimentError(f"unknown profile {profile!r}; choose one of {', '.join(profiles)}")
    cfg = {"profile": profile, **common, **profiles[profile]}
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ExperimentError(f"unknown setting(s) {sorted(unknown)}; known: {', '.join(sorted(cfg))}")
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg
