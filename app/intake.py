"""Intake: from validated events to stored events and deliveries, exactly once per event id.

Idempotency: an event's own id (``external_id``) or the request's ``Idempotency-Key`` seen within
the retention window is not delivered twice; the repeat answers with the original ids. A first
writer reserves the id for a short time before its transaction and confirms it inside it, so two
concurrent copies cannot both be stored, and a copy that arrives while the first is still being
written gets a 409 instead of an id that does not exist yet.

Routing then decides each delivery: pending, or ``skipped`` at once when the event lacks a field the
destination requires (Xtremepush's "external_message_id required").
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import redis

from .filters import missing_required
from .runtime import Runtime
from .store import keys, new_id, now_ms

__all__ = ["Intake", "Outcome"]

log = logging.getLogger(__name__)
RESERVATION_S = 60


@dataclass
class Outcome:
    """The answer to one ingest request."""

    results: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r["status"] == status)

    def body(self) -> dict[str, Any]:
        return {
            "accepted": self.count("accepted"),
            "duplicates": self.count("duplicate"),
            "rejected": self.count("rejected") + self.count("conflict"),
            "ids": [r["id"] for r in self.results if "id" in r and r["status"] in ("accepted", "duplicate")],
            "results": self.results,
        }


class Intake:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.db: redis.Redis = rt.db
        self.retention = int(rt.settings.event_retention_s)

    def accept(self, source_id: str, events: list[tuple[int, dict[str, Any]]], *,
               from_request: bool = False) -> Outcome:
        """Store each new event and its deliveries in one transaction; report every event's fate."""
        outcome = Outcome()
        fresh: list[tuple[int, dict[str, Any], str | None]] = []
        reserved: list[str] = []
        with_ids = [(i, e) for i, e in events if e.get("external_id")]
        if with_ids:
            with self.db.pipeline(transaction=False) as pipe:
                for _, event in with_ids:
                    pipe.set(keys.idempotency(source_id, event["external_id"]), event["id"], nx=True, ex=RESERVATION_S)
                claims = dict(zip((e["id"] for _, e in with_ids), pipe.execute()))
        else:
            claims = {}
        taken = [(i, e) for i, e in with_ids if not claims[e["id"]]]
        originals = self._originals(source_id, [e for _, e in taken])
        for index, event in events:
            external = event.get("external_id")
            if external and not claims[event["id"]]:
                original = originals.get(external)
                if original:
                    outcome.results.append({"index": index, "status": "duplicate", "id": original})
                else:
                    outcome.results.append({"index": index, "status": "conflict",
                                            "errors": {"id": ["An event with this id is being stored; retry."]}})
                continue
            if external:
                reserved.append(keys.idempotency(source_id, external))
            fresh.append((index, event, external))
            outcome.results.append({"index": index, "status": "accepted", "id": event["id"]})
        if fresh:
            try:
                woken = self._store(source_id, [event for _, event, _ in fresh], from_request=from_request)
            except redis.RedisError:
                if reserved:
                    self.db.delete(*reserved)
                raise
            self._wake(woken)
        outcome.results.sort(key=lambda r: r["index"])
        return outcome

    def deliver_to(self, event: dict[str, Any], destinations: list[dict[str, Any]]) -> None:
        """New pending deliveries of a stored event to these destinations (the fail branch)."""
        woken = self._store("hookgate", [event], destinations=destinations, store_event=False)
        self._wake(woken)

    def _originals(self, source_id: str, events: list[dict[str, Any]]) -> dict[str, str]:
        """For ids already claimed: the original event id, when that event is really stored."""
        if not events:
            return {}
        with self.db.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.get(keys.idempotency(source_id, event["external_id"]))
            ids = pipe.execute()
        with self.db.pipeline(transaction=False) as pipe:
            for original in ids:
                pipe.exists(keys.event(original or "-"))
            stored = pipe.execute()
        return {e["external_id"]: original for e, original, ok in zip(events, ids, stored) if original and ok}

    def _store(self, source_id: str, events: list[dict[str, Any]], destinations: list[dict[str, Any]] | None = None,
               store_event: bool = True, from_request: bool = False) -> list[str]:
        index = self.rt.router.cached_index() if from_request else self.rt.router.index()
        created = now_ms()
        ttl = self.retention
        woken: dict[str, None] = {}
        with self.db.pipeline(transaction=True) as pipe:
            for event in events:
                event_id = event["id"]
                if store_event:
                    pipe.set(keys.event(event_id), json.dumps(event, separators=(",", ":")), ex=ttl)
                if store_event and event.get("external_id"):
                    pipe.set(keys.idempotency(source_id, event["external_id"]), event_id, ex=ttl)
                matched = index.match(event) if destinations is None else destinations
                for destination in matched:
                    did = destination["id"]
                    delivery_id = new_id("dlv")
                    missing = missing_required(destination, event)
                    status = "skipped" if missing else "pending"
                    record = {"id": delivery_id, "event_id": event_id, "destination_id": did, "status": status,
                              "attempts": 0, "created_at": created, "updated_at": created,
                              "next_attempt_at": "" if missing else created}
                    if missing:
                        record["last_error"] = "required field missing: " + ", ".join(missing)
                    pipe.hset(keys.delivery(delivery_id), mapping=record)
                    pipe.expire(keys.delivery(delivery_id), ttl)
                    pipe.rpush(keys.event_deliveries(event_id), delivery_id)
                    pipe.zadd(keys.deliveries, {delivery_id: created})
                    pipe.zadd(keys.destination_deliveries(did), {delivery_id: created})
                    pipe.zadd(keys.status(status), {delivery_id: created})
                    if not missing:
                        pipe.zadd(keys.pending(did), {delivery_id: created})
                        woken[did] = None
                if matched:
                    pipe.expire(keys.event_deliveries(event_id), ttl)
            for did in woken:
                pipe.zadd(keys.due, {did: created}, lt=True)
            pipe.execute()
        return list(woken)

    def _wake(self, destination_ids: list[str]) -> None:
        from .delivery.queue import wake

        try:
            wake(self.db, self.rt.queue, destination_ids, self.rt.settings)
        except redis.RedisError as exc:  # stored already: the ticker wakes them; do not fail an accepted request
            log.warning("could not wake drain jobs (the ticker will): %s", exc)
