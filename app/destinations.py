"""Destinations: where deliveries go, stored as JSON in one Redis hash.

A destination brought in by ``POST /v1/import`` may lack secrets: its preset's secret parameters
(``preset.needs_secrets``) or its auth profile's (the profile's ``needs_secrets``). It stays disabled
until they are re-entered: enabling it before is a 409 (``missing_secrets``).

Enabling a disabled destination has effects beyond its record (``after_enabling``); the store and an
import (which may enable one it overwrites) both write them with the record, in one transaction.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis
from redis.client import Pipeline

from .auth_profiles import covers
from .delivery.queue import unhold
from .errors import Conflict, NotFound, ValidationError
from .rendering import validate_template
from .store import bump_config, keys, new_id, now_ms

__all__ = ["DISABLED_FIELDS", "DestinationStore", "after_enabling", "check_templates", "enabled_again",
           "missing_secrets"]

DISABLED_FIELDS = ("disabled_reason", "disabled_detail", "disabled_at")  # why and since when; gone once enabled


def enabled_again(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """Whether ``after`` enables a destination that was disabled (``before``: as stored, if it was)."""
    return bool(after.get("enabled", True)) and before is not None and not before.get("enabled", True)


def after_enabling(pipe: Pipeline, destination_id: str, at_ms: int) -> None:
    """What enabling a disabled destination sets off, queued on ``pipe``: the deliveries that waited
    while it was disabled are due now, its "disabled" notices stop, and the breaker starts afresh
    (closed, no trips, no pause: a hold it left on the wake flag ends)."""
    pipe.zadd(keys.due, {destination_id: at_ms}, lt=True)
    pipe.zrem(keys.notify, destination_id)
    _forget_failures(pipe, destination_id)


def _forget_failures(pipe: Pipeline, destination_id: str) -> None:
    """The breaker's state and the continuous-failure clock, gone; the breaker's hold with them."""
    pipe.delete(keys.failing_since(destination_id), keys.breaker(destination_id))
    unhold(pipe, destination_id)


def check_templates(fields: dict[str, Any], fmt: str | None = None) -> None:
    """Every template a destination's fields give compiles for its format (``fmt``, else the fields'),
    each placeholder escapable where it stands (a 422 naming the template and the line otherwise)."""
    fmt = fmt or fields.get("format") or "json"
    batch = fields.get("batch") or {}
    for name, source in (("template", fields.get("template")), ("batch.item_template", batch.get("item_template")),
                         ("batch.root_template", batch.get("root_template"))):
        if source is not None:
            validate_template(source, field=name, fmt=fmt)


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

    def find_many(self, destination_ids: list[str]) -> list[dict[str, Any] | None]:
        """``find`` for each of ``destination_ids``, in one read."""
        if not destination_ids:
            return []
        return [json.loads(raw) if raw is not None else None
                for raw in self.db.hmget(keys.destinations, destination_ids)]

    def all(self) -> list[dict[str, Any]]:
        return sorted((json.loads(v) for v in self.db.hvals(keys.destinations)), key=lambda d: d["id"])

    def page(self, after: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """Up to ``limit`` destinations by id after ``after``, and the cursor of the next page (None
        at the end): the ids from their index (``keys.destination_ids``), then those records only."""
        for _ in range(2):
            with self.db.pipeline(transaction=False) as pipe:
                pipe.zcard(keys.destination_ids)
                pipe.hlen(keys.destinations)
                pipe.zrangebylex(keys.destination_ids, f"({after}" if after else "-", "+", start=0, num=limit + 1)
                indexed, stored, ids = pipe.execute()
            if indexed == stored:
                break
            self._reindex()  # written before the index was, or by a writer that missed it
        raws = cast(list[str | None], self.db.hmget(keys.destinations, ids[:limit])) if ids else []
        return [json.loads(raw) for raw in raws if raw is not None], ids[limit - 1] if len(ids) > limit else None

    def _reindex(self) -> None:
        """The index of ids rebuilt from the hash; given up (until the next page) if the hash changes
        meanwhile."""
        with self.db.pipeline() as pipe:
            try:
                pipe.watch(keys.destinations)
                ids = cast(list[str], pipe.hkeys(keys.destinations))
                pipe.multi()
                pipe.delete(keys.destination_ids)
                if ids:
                    pipe.zadd(keys.destination_ids, dict.fromkeys(ids, 0))
                pipe.execute()
            except redis.WatchError:
                pass

    def update(self, destination_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        destination = self.get(destination_id)
        self._check(destination_id, changes, destination)
        still = [n for n in (destination.get("preset") or {}).get("needs_secrets") or ()
                 if n not in ((changes.get("preset") or {}).get("secrets") or {})]
        if changes.get("preset") and still:  # new params keep the marker until every secret is back
            changes = {**changes, "preset": {**changes["preset"], "needs_secrets": still}}
        self._check_secrets(destination_id, changes, {**destination, **changes})
        before = dict(destination)
        destination.update(changes, updated_at=now_ms())
        again = enabled_again(before, destination)
        if again:
            for field in DISABLED_FIELDS:
                destination.pop(field, None)
        with self.db.pipeline() as pipe:
            self._write(pipe, destination)
            if again:
                after_enabling(pipe, destination_id, now_ms())
            pipe.execute()
        return destination

    def _check(self, destination_id: str, fields: dict[str, Any], current: dict[str, Any] | None = None) -> None:
        """What a schema cannot see: templates compile, referenced records exist, and an auth
        profile's credentials would only go under its endpoint prefix."""
        merged = {**(current or {}), **fields}
        check_templates(fields, merged.get("format"))
        problems = {**self._reference_problems(destination_id, fields), **self._shape_problems(merged)}
        if merged.get("auth_profile_id") and ("auth_profile_id" in fields or "url" in fields):
            problems.update(self._profile_problems(merged["auth_profile_id"], merged["url"]))
        if problems:
            raise ValidationError("invalid references: " + ", ".join(problems), problems)

    def _reference_problems(self, destination_id: str, fields: dict[str, Any]) -> dict[str, list[str]]:
        """The policy and the fail branch ``fields`` name, when they do not exist."""
        problems: dict[str, list[str]] = {}
        policy_id = fields.get("policy_id")
        if policy_id and not self.db.hexists(keys.policies, policy_id):
            problems["policy_id"] = [f"No policy {policy_id!r}."]
        fallback = fields.get("fail_destination_id")
        if fallback == destination_id:
            problems["fail_destination_id"] = ["A destination cannot be its own fail branch."]
        elif fallback and not self.db.hexists(keys.destinations, fallback):
            problems["fail_destination_id"] = [f"No destination {fallback!r}."]
        return problems

    def _shape_problems(self, merged: dict[str, Any]) -> dict[str, list[str]]:
        """Rules over the merged record: a batch is not sent as a form; https only when required."""
        problems: dict[str, list[str]] = {}
        if merged.get("batch") and merged.get("format") == "form":
            problems["batch"] = ["Batches are sent as json, xml or text, not form."]
        if (self.https_only or merged.get("https_only")) and str(merged.get("url", "")).lower().startswith("http:"):
            problems["url"] = ["Only https URLs are allowed here (https_only)."]
        return problems

    def _profile_problems(self, profile_id: str, url: str) -> dict[str, list[str]]:
        """The auth profile must exist, and ``url`` lie under its endpoint prefix."""
        raw = self.db.hget(keys.auth_profiles, profile_id)
        if raw is None:
            return {"auth_profile_id": [f"No auth profile {profile_id!r}."]}
        prefix = json.loads(raw)["endpoint_prefix"]
        if not covers(prefix, url):
            return {"url": [f"Outside the auth profile's endpoint prefix {prefix!r}: its credentials are only sent "
                            "under it."]}
        return {}

    def _check_secrets(self, destination_id: str, changes: dict[str, Any], merged: dict[str, Any]) -> None:
        """An imported destination whose secrets were not re-entered is not enabled (409)."""
        if not merged.get("enabled", True) or not ({"enabled", "auth_profile_id", "preset"} & set(changes)):
            return
        missing = missing_secrets(self.db, merged)
        if missing:
            raise Conflict(f"destination {destination_id} cannot be enabled until its secrets are re-entered: "
                           + "; ".join(missing), {"needs_secrets": missing})

    def delete(self, destination_id: str, retention_s: float) -> None:
        """Remove the destination; what it leaves behind (its deliveries and their index) expires after
        ``retention_s`` (HOOKGATE_EVENT_RETENTION), its breaker and failure clock go now."""
        with self.db.pipeline() as pipe:
            pipe.hdel(keys.destinations, destination_id)
            pipe.zrem(keys.destination_ids, destination_id)
            bump_config(pipe)
            # Its pending deliveries are due now: the next drain closes them as skipped.
            pipe.zadd(keys.due, {destination_id: now_ms()})
            _forget_failures(pipe, destination_id)
            # Its index of deliveries goes when the newest of them does (the ticker trims only the
            # indexes of destinations that exist): nothing of a deleted destination outlives retention.
            pipe.expire(keys.destination_deliveries(destination_id), max(1, int(retention_s)))
            # So do its /metrics counters (made now if absent, so that the skips and the answers still to
            # come add to keys that expire).
            for counters, field in ((keys.metrics_attempts(destination_id), "skipped"),
                                    (keys.metrics_latency(destination_id), "count")):
                pipe.hincrby(counters, field, 0)
                pipe.expire(counters, max(1, int(retention_s)))
            removed = pipe.execute()[0]
        if not removed:
            raise NotFound(f"no destination {destination_id!r}", {"id": destination_id})

    def _save(self, destination: dict[str, Any]) -> None:
        with self.db.pipeline() as pipe:
            self._write(pipe, destination)
            pipe.execute()

    @staticmethod
    def _write(pipe: Pipeline, destination: dict[str, Any]) -> None:
        pipe.hset(keys.destinations, destination["id"], json.dumps(destination))
        pipe.zadd(keys.destination_ids, {destination["id"]: 0})
        bump_config(pipe)
