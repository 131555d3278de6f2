"""Named settings profiles (smoke / default / paper) shared by the model modules that train here."""
from __future__ import annotations

from typing import Any, Mapping


def profile_settings(profiles: Mapping[str, Mapping[str, Any]], profile: str, overrides: Mapping[str, Any],
                     error: type[Exception], what: str) -> dict:
    """`profiles[profile]` with the non-None `overrides` applied; an unknown profile or setting raises `error`."""
    if profile not in profiles:
        raise error(f"unknown {what} profile {profile!r}; choose one of {', '.join(profiles)}")
    unknown = set(overrides) - set(profiles[profile])
    if unknown:
        raise error(f"unknown {what} setting(s) {sorted(unknown)}; known: {', '.join(profiles[profile])}")
    return {**profiles[profile], **{k: v for k, v in overrides.items() if v is not None}}
