"""Experiment functions behind the notebooks: each module computes one paper's tables and figures from `lab`.

Every study declares its settings as data, one `ExperimentSettings` (profiles, the shared protocol values and the
checks), and calls it like a function: `settings("smoke", n_examples=8) -> dict`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from lab.explainers import EXPLAINERS


class ExperimentError(ValueError):
    """Bad experiment settings or selections; the message says what is allowed."""


def merge_settings(profiles: Mapping, common: Mapping, profile: str, overrides: Mapping) -> dict:
    """The profile's sizes plus the shared protocol settings; `None` overrides keep the profile's value."""
    if profile not in profiles:
        raise ExperimentError(f"unknown profile {profile!r}; choose one of {', '.join(profiles)}")
    cfg = {"profile": profile, **common, **profiles[profile]}
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ExperimentError(f"unknown setting(s) {sorted(unknown)}; known: {', '.join(sorted(cfg))}")
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


@dataclass(frozen=True)
class ExperimentSettings:
    """One study's settings: `profiles` (smoke / default / paper sizes), `common` (the protocol values every profile
    shares) and the checks every study needs, as data: `methods` names the keys holding explainer names (each must be
    registered in `lab.EXPLAINERS`; tuples are kept as tuples), `choices` maps a key to its allowed values,
    `positive` names integer keys that must be >= 1 (None allowed: "all"), and `check(cfg)` raises
    `ExperimentError` for what is particular to the study. Calling it merges and checks:
    `settings(profile="default", **overrides) -> dict` (`None` overrides keep the profile's value)."""

    profiles: Mapping[str, Mapping[str, Any]]
    common: Mapping[str, Any]
    methods: Sequence[str] = ()
    choices: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    positive: Sequence[str] = ()
    check: Callable[[dict], None] | None = None

    def __call__(self, profile: str = "default", **overrides) -> dict:
        cfg = merge_settings(self.profiles, self.common, profile, overrides)
        for key in self.methods:
            self._check_methods(key, cfg)
        for key, allowed in self.choices.items():
            if cfg[key] not in allowed:
                raise ExperimentError(f"{key} must be one of {', '.join(map(repr, allowed))}, got {cfg[key]!r}")
        for key in self.positive:
            if cfg[key] is not None and int(cfg[key]) < 1:
                raise ExperimentError(f"{key} must be >= 1 or None (all), got {cfg[key]}")
        if self.check is not None:
            self.check(cfg)
        return cfg

    @staticmethod
    def _check_methods(key: str, cfg: dict) -> None:
        cfg[key] = tuple(cfg[key])
        bad = [m for m in cfg[key] if m not in EXPLAINERS]
        if bad:
            raise ExperimentError(f"unknown method(s) {bad} in {key}; registered: {', '.join(EXPLAINERS)}")
