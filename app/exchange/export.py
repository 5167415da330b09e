"""The export: every policy, auth profile, user preset and destination, with no secret in them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import redis

from ..auth_profiles import SCALAR_SECRETS, SIGNING_TYPES
from ..destinations import DISABLED_FIELDS
from ..presets import Preset, PresetCatalog
from ..store import keys

__all__ = ["NEEDS_SECRETS", "VERSION", "export_destination", "export_document", "export_preset", "export_profile",
           "exported_state"]

VERSION = 1
NEEDS_SECRETS = "needs_secrets"  # the marker, on an auth profile and in a destination's preset state


def export_document(db: redis.Redis, catalog: PresetCatalog) -> dict[str, Any]:
    def every(key: str) -> list[dict[str, Any]]:
        return sorted((json.loads(v) for v in db.hvals(key)), key=lambda item: item["id"])

    return {
        "hookgate_export": VERSION,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "policies": every(keys.policies),
        "auth_profiles": [export_profile(p) for p in every(keys.auth_profiles)],
        "presets": [export_preset(p) for p in catalog.all() if p.origin == "user"],
        "destinations": [export_destination(d) for d in every(keys.destinations)],
    }


def export_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """An auth profile with no secret: ``secrets_needed`` names the fields to re-enter."""
    kind = profile["type"]
    scalars = SCALAR_SECRETS.get(kind, ())
    shown = {k: v for k, v in profile.items() if k not in (*scalars, "secrets", "secret", NEEDS_SECRETS)}
    needed = set(profile.get(NEEDS_SECRETS) or ())
    needed |= {name for name in scalars if profile.get(name) is not None}
    if kind == "headers":
        shown["headers"] = [{"name": h["name"], "secret": True} if h["secret"] else h for h in profile["headers"]]
        needed |= {"headers"} if any(h["secret"] for h in profile["headers"]) else set()
    if profile.get("query") is not None:
        shown["query"] = {name: None for name in profile["query"]}
        needed.add("query")
    if kind in SIGNING_TYPES:
        needed.add("secret")
    shown["secrets_needed"] = sorted(needed)
    return shown


def export_preset(preset: Preset) -> dict[str, Any]:
    """A user preset without its secret parameters' defaults (nor their example values)."""
    data = preset.to_data()
    data["params"] = [{**p, "default": None} if p["secret"] else p for p in data["params"]]
    data["example_params"] = {k: v for k, v in (data.get("example_params") or {}).items()
                              if k not in preset.secret_names}
    return data


def export_destination(destination: dict[str, Any]) -> dict[str, Any]:
    """A destination without runtime state; a preset destination without its encrypted secrets."""
    shown = {k: v for k, v in destination.items() if k != "disabled_at"}
    if destination.get("enabled", True):
        for name in DISABLED_FIELDS:
            shown.pop(name, None)
    state = destination.get("preset")
    if state:
        shown["preset"] = exported_state(state)
    return shown


def exported_state(state: dict[str, Any]) -> dict[str, Any]:
    """A destination's preset state as exported: ``secret_params`` names the secrets it leaves out."""
    public = {k: v for k, v in state.items() if k not in ("secrets", NEEDS_SECRETS)}
    public["secret_params"] = sorted(set(state.get("secrets") or {}) | set(state.get(NEEDS_SECRETS) or ()))
    return public
