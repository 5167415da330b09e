"""Destinations: where deliveries go, stored as JSON in one Redis hash.

A destination brought in by ``POST /v1/import`` may lack secrets: its preset's secret parameters
(``preset.needs_secrets``) or its auth profile's (the profile's ``needs_secrets``). It stays disabled
until they are re-entered: enabling it before is a 409 (``missing_secrets``).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from .auth_profiles import covers
from .errors import Conflict, NotFound, ValidationError
from .rendering import validate_template
from .store import bump_config, keys, new_id, now_ms

__all__ = ["DestinationStore", "missing_secrets"]


def missing_secrets(db: redis.Redis, destination: dict[str, Any]) -> list[str]:
    """What must be re-entered before ``destination`` may be enabled: its preset's secret parameters
    (``params.<name>``) and its auth profile's secrets (``auth_profile <id>: <fields>``)."""
    missing = [f"params.{name}" for name in (destination.get("preset") or {}).get("needs_secrets") or ()]
    profile_id = destination.get("auth_profile_id")
    raw = db.hget(keys.auth_profiles, profile_id) if profile_id else None
    if raw is not None and json.loads(raw).get("needs_secrets"):
        missing.append(f"auth_profile {profile_id}: {', '.join(json.loads(raw)['needs_secrets'])}")
    return missing


class DestinationStore:
    def __init__(self, db: redis.Redis, https_only: bool = False):
        self.db = db
        self.https_only = https_only  # HOOKGATE_HTTPS_ONLY: every destination, whatever it says

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        destination_id = new_id("dst")
        self._check(destination_id, fields)
        self._check_secrets(destination_id, fields, fields)
        stamp = now_ms()
        destination = {"id": destination_id, **fields, "created_at": stamp, "updated_at": stamp}
        self._save(destination)
        return destination

    def get(self, destination_id: str) -> dict[str, Any]:
        destination = self.find(destination_id)
        if destination is None:
            raise NotFound(f"no destination {destination_id!r}", {"id": destination_id})
        return destination

    def find(self, destination_id: str) -> dict[str, Any] | None:
        raw = self.db.hget(keys.destinations, destination_id)
        return json.loads(raw) if raw is not None else None

    def all(self) -> list[dict[str, Any]]:
        return sorted((json.loads(v) for v in self.db.hvals(keys.destinations)), key=lambda d: d["id"])

    def update(self, destination_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        destination = self.get(destination_id)
        self._check(destination_id, changes, destination)
        still = [n for n in (destination.get("preset") or {}).get("needs_secrets") or ()
                 if n not in ((changes.get("preset") or {}).get("secrets") or {})]
        if changes.get("preset") and still:  # new params keep the marker until every secret is back
            changes = {**changes, "preset": {**changes["preset"], "needs_secrets": still}}
        self._check_secrets(destination_id, changes, {**destination, **changes})
        was_enabled = destination.get("enabled", True)
        destination.update(changes, updated_at=now_ms())
        enabled_again = destination.get("enabled", True) and not was_enabled
        if enabled_again:
            for field in ("disabled_reason", "disabled_detail", "disabled_at"):
                destination.pop(field, None)
        self._save(destination)
        if enabled_again:
            # Deliveries that waited while it was disabled are due now; the breaker starts afresh.
            with self.db.pipeline() as pipe:
                pipe.zadd(keys.due, {destination_id: now_ms()}, lt=True)
                pipe.zrem(keys.notify, destination_id)
                pipe.delete(keys.failing_since(destination_id))
                pipe.execute()
        return destination

    def _check(self, destination_id: str, fields: dict[str, Any], current: dict[str, Any] | None = None) -> None:
        """What a schema cannot see: templates compile, referenced records exist, and an auth
        profile's credentials would only go under its endpoint prefix."""
        for name, source in (("template", fields.get("template")),
                             ("batch.item_template", (fields.get("batch") or {}).get("item_template")),
                             ("batch.root_template", (fields.get("batch") or {}).get("root_template"))):
            if source is not None:
                validate_template(source, field=name)
        problems: dict[str, list[str]] = {}
        policy_id = fields.get("policy_id")
        if policy_id and not self.db.hexists(keys.policies, policy_id):
            problems["policy_id"] = [f"No policy {policy_id!r}."]
        fallback = fields.get("fail_destination_id")
        if fallback == destination_id:
            problems["fail_destination_id"] = ["A destination cannot be its own fail branch."]
        elif fallback and not self.db.hexists(keys.destinations, fallback):
            problems["fail_destination_id"] = [f"No destination {fallback!r}."]
        merged = {**(current or {}), **fields}
        if merged.get("batch") and merged.get("format") == "form":
            problems["batch"] = ["Batches are sent as json, xml or text, not form."]
        if (self.https_only or merged.get("https_only")) and str(merged.get("url", "")).lower().startswith("http:"):
            problems["url"] = ["Only https URLs are allowed here (https_only)."]
        profile_id = merged.get("auth_profile_id")
        if profile_id and ("auth_profile_id" in fields or "url" in fields):
            raw = self.db.hget(keys.auth_profiles, profile_id)
            if raw is None:
                problems["auth_profile_id"] = [f"No auth profile {profile_id!r}."]
            elif not covers(json.loads(raw)["endpoint_prefix"], merged["url"]):
                problems["url"] = [f"Outside the auth profile's endpoint prefix "
                                   f"{json.loads(raw)['endpoint_prefix']!r}: its credentials are only sent under it."]
        if problems:
            raise ValidationError("invalid references: " + ", ".join(problems), problems)

    def _check_secrets(self, destination_id: str, changes: dict[str, Any], merged: dict[str, Any]) -> None:
        """An imported destination whose secrets were not re-entered is not enabled (409)."""
        if not merged.get("enabled", True) or not ({"enabled", "auth_profile_id", "preset"} & set(changes)):
            return
        missing = missing_secrets(self.db, merged)
        if missing:
            raise Conflict(f"destination {destination_id} cannot be enabled until its secrets are re-entered: "
                           + "; ".join(missing), {"needs_secrets": missing})

    def delete(self, destination_id: str) -> None:
        with self.db.pipeline() as pipe:
            pipe.hdel(keys.destinations, destination_id)
            bump_config(pipe)
            # Its pending deliveries are due now: the next drain closes them as skipped.
            pipe.zadd(keys.due, {destination_id: now_ms()})
            removed = pipe.execute()[0]
        if not removed:
            raise NotFound(f"no destination {destination_id!r}", {"id": destination_id})

    def _save(self, destination: dict[str, Any]) -> None:
        with self.db.pipeline() as pipe:
            pipe.hset(keys.destinations, destination["id"], json.dumps(destination))
            bump_config(pipe)
            pipe.execute()
