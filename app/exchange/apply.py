"""Writing a checked plan: one Redis transaction, and the report of what it did and what waits for secrets."""

from __future__ import annotations

import json
from typing import Any

import redis
from redis.client import Pipeline

from ..destinations import after_enabling, enabled_again
from ..presets import PresetCatalog
from ..store import bump_config, keys
from .export import NEEDS_SECRETS
from .plan import SECTIONS, Plan, check_document

__all__ = ["import_document", "write"]


def import_document(db: redis.Redis, catalog: PresetCatalog, document: Any, *, mode: str = "overwrite",
                    https_only: bool = False) -> dict[str, Any]:
    """Check the whole document, then write all of it (see the package's docstring)."""
    return write(check_document(db, catalog, document, mode=mode, https_only=https_only))


def write(plan: Plan) -> dict[str, Any]:
    """Write the plan in one transaction; the report."""
    needs = [{"kind": "auth_profile", "id": p["id"], "name": p["name"], "fields": p[NEEDS_SECRETS]}
             for p in plan.records["auth_profiles"].values() if p.get(NEEDS_SECRETS)]
    held, waiting = _destinations_to_write(plan)
    with plan.db.pipeline(transaction=True) as pipe:
        _queue_records(plan, pipe, held)
        bump_config(pipe)
        pipe.execute()
    return {
        "mode": plan.mode,
        "imported": {s: len(plan.records[s]) for s in SECTIONS},
        "replaced": {s: len(set(plan.records[s]) & set(plan.existing[s])) for s in SECTIONS},
        "skipped": plan.skipped,
        "needs_secrets": needs + waiting,
    }


def _destinations_to_write(plan: Plan) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The destinations to write — the document's, and the target's own that use a profile the import
    leaves without secrets — each held disabled while it waits for secrets; and a report entry for each
    that waits."""
    destinations = dict(plan.records["destinations"])
    touched = set(plan.records["auth_profiles"])
    for ident, current in plan.existing["destinations"].items():
        if ident not in destinations and current.get("auth_profile_id") in touched:
            destinations[ident] = current
    held: dict[str, dict[str, Any]] = {}
    waiting: list[dict[str, Any]] = []
    for ident, destination in destinations.items():
        own, profile_id = _waiting_for(plan, destination)
        if not own and not profile_id:
            if ident in plan.records["destinations"]:  # the target's own is written only when it must wait
                held[ident] = destination
            continue
        held[ident] = _hold(plan, destination, own, profile_id)
        entry = {"kind": "destination", "id": ident, "name": destination["name"], "fields": own}
        if profile_id:
            entry["auth_profile_id"] = profile_id
        waiting.append(entry)
    return held, waiting


def _waiting_for(plan: Plan, destination: dict[str, Any]) -> tuple[list[str], str | None]:
    """A destination's own secrets to re-enter, and the auth profile it waits for (if any)."""
    own = [f"params.{n}" for n in (destination.get("preset") or {}).get(NEEDS_SECRETS) or ()]
    profile_id = destination.get("auth_profile_id")
    profile = plan.find("auth_profiles", profile_id) if profile_id else None
    return own, profile_id if profile is not None and profile.get(NEEDS_SECRETS) else None


def _hold(plan: Plan, destination: dict[str, Any], own: list[str], profile_id: str | None) -> dict[str, Any]:
    """The destination disabled until its secrets are back, saying which (a disabled one stays as it is)."""
    if not destination.get("enabled", True):
        return destination
    what = own + ([f"auth profile {profile_id}'s secrets"] if profile_id else [])
    return {**destination, "enabled": False, "disabled_reason": "needs_secrets", "disabled_at": plan.stamp,
            "disabled_detail": f"re-enter {', '.join(what)}, then POST /v1/destinations/"
                               f"{destination['id']}/enable"}


def _queue_records(plan: Plan, pipe: Pipeline, destinations: dict[str, dict[str, Any]]) -> None:
    """Every record on ``pipe``; an overwritten profile's cached token dropped, and a destination the
    import enables again treated as ``DestinationStore.update`` treats one."""
    for policy in plan.records["policies"].values():
        pipe.hset(keys.policies, policy["id"], json.dumps(policy))
    for profile in plan.records["auth_profiles"].values():
        pipe.hset(keys.auth_profiles, profile["id"], json.dumps(profile))
        pipe.delete(keys.oauth_token(profile["id"]))
    for name, preset in plan.records["presets"].items():
        pipe.hset(keys.presets, name, json.dumps(preset))
    for ident, destination in destinations.items():
        pipe.hset(keys.destinations, ident, json.dumps(destination))
        pipe.zadd(keys.destination_ids, {ident: 0})
        if enabled_again(plan.existing["destinations"].get(ident), destination):
            after_enabling(pipe, ident, plan.stamp)
