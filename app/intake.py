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
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from .delivery.queue import wake
from .errors import ServiceUnavailable
from .events import received_ms
from .filters import missing_required
from .runtime import Runtime
from .store import NotReplicated, keys, new_id, now_ms, replicated_transaction

__all__ = ["Intake", "IngestResult"]

log = logging.getLogger(__name__)
RESERVATION_S = 60


@dataclass
class IngestResult:
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


def _repeated(index: int, original: str | None) -> dict[str, Any]:
    """The fate of an event whose id was seen: a duplicate of the stored original, or a conflict
    with one still being stored."""
    if original:
        return {"index": index, "status": "duplicate", "id": original}
    return {"index": index, "status": "conflict", "errors": {"id": ["An event with this id is being stored; retry."]}}


def _not_replicated(exc: NotReplicated) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"the events were stored on the primary but no replica acknowledged them within {exc.timeout_ms} ms, so "
        "they are not acknowledged; retry (give each event its id, so that a retry is not stored twice)",
        {"replicas_required": exc.required, "replicas_acknowledged": exc.acknowledged,
         "timeout_ms": exc.timeout_ms}, code="not_replicated")


class Intake:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.db: redis.Redis = rt.db
        self.retention = int(rt.settings.event_retention_s)
        # HOOKGATE_DURABILITY=replicated: an ingest request's transaction is followed by WAIT 1 <timeout>
        self.replicas = 1 if rt.settings.durability == "replicated" else 0
        self.timeout_ms = max(1, round(rt.settings.durability_timeout_s * 1000))

    def accept(self, source_id: str, events: list[tuple[int, dict[str, Any]]], *,
               from_request: bool = False) -> IngestResult:
        """Store each new event and its deliveries in one transaction; report every event's fate."""
        claims = self._claim(source_id, events)
        originals = self._originals(source_id, [e for _, e in events if e.get("external_id") and not claims[e["id"]]])
        result = IngestResult()
        fresh: list[dict[str, Any]] = []
        reserved: list[str] = []
        for index, event in events:
            external = event.get("external_id")
            if external and not claims[event["id"]]:
                result.results.append(_repeated(index, originals.get(external)))
                continue
            if external:
                reserved.append(keys.idempotency(source_id, external))
            fresh.append(event)
            result.results.append({"index": index, "status": "accepted", "id": event["id"]})
        if fresh:
            try:
                woken = self._store(source_id, fresh, from_request=from_request)
            except NotReplicated as exc:  # stored on the primary (the ticker wakes them), not on a replica
                raise _not_replicated(exc) from None
            except redis.RedisError:
                if reserved:  # not stored: a retry must not meet this request's reservations (a 409)
                    self.db.delete(*reserved)
                raise
            self._wake(woken)
        result.results.sort(key=lambda r: r["index"])
        return result

    def _claim(self, source_id: str, events: list[tuple[int, dict[str, Any]]]) -> dict[str, bool]:
        """Reserve the ids of events that carry one (``external_id``): event id → whether this request
        is the first to (else another one stored, or is storing, an event with that id)."""
        with_ids = [e for _, e in events if e.get("external_id")]
        if not with_ids:
            return {}
        with self.db.pipeline(transaction=False) as pipe:
            for event in with_ids:
                pipe.set(keys.idempotency(source_id, event["external_id"]), event["id"], nx=True, ex=RESERVATION_S)
            return {e["id"]: bool(ok) for e, ok in zip(with_ids, pipe.execute(), strict=True)}

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
        return {e["external_id"]: original for e, original, ok in zip(events, ids, stored, strict=True)
                if original and ok}

    def _store(self, source_id: str, events: list[dict[str, Any]], destinations: list[dict[str, Any]] | None = None,
               store_event: bool = True, from_request: bool = False) -> list[str]:
        index = self.rt.router.cached_index() if from_request else self.rt.router.index()
        created = now_ms()
        ttl = self.retention
        indexes = _Indexes(created)
        replicas = self.replicas if from_request else 0  # what is acknowledged to a sender waits for a replica
        with replicated_transaction(self.db, replicas, self.timeout_ms) as pipe:
            if store_event and events:  # the indexes GET /v1/events reads: one ZADD each for all the events
                received = {event["id"]: received_ms(event) for event in events}
                pipe.zadd(keys.events, received)
                pipe.zadd(keys.source_events(source_id), received)
            for event in events:
                event_id = event["id"]
                if store_event:
                    pipe.set(keys.event(event_id), json.dumps(event, separators=(",", ":")), ex=ttl)
                if store_event and event.get("external_id"):
                    pipe.set(keys.idempotency(source_id, event["external_id"]), event_id, ex=ttl)
                matched = index.match(event) if destinations is None else destinations
                for destination in matched:
                    self._add_delivery(pipe, destination, event, indexes, ttl)
            indexes.write(pipe, ttl)
        return list(indexes.woken)

    @staticmethod
    def _add_delivery(pipe: Pipeline, destination: dict[str, Any], event: dict[str, Any], indexes: _Indexes,
                      ttl: int) -> None:
        """One delivery of ``event`` to ``destination``, in the caller's transaction: pending, or skipped
        at once when the event lacks a field the destination requires. Its hash is written here, its
        index entries gathered into ``indexes``."""
        did, event_id, delivery_id, created = destination["id"], event["id"], new_id("dlv"), indexes.created
        missing = missing_required(destination, event)
        status = "skipped" if missing else "pending"
        record: dict[FieldT, EncodableT] = {
            "id": delivery_id, "event_id": event_id, "destination_id": did, "status": status, "attempts": 0,
            "created_at": created, "updated_at": created, "next_attempt_at": "" if missing else created}
        if missing:
            record["last_error"] = "required field missing: " + ", ".join(missing)
        pipe.hset(keys.delivery(delivery_id), mapping=record)
        pipe.expire(keys.delivery(delivery_id), ttl)
        indexes.add(event_id, did, delivery_id, status)

    def _wake(self, destination_ids: list[str]) -> None:
        try:
            wake(self.db, self.rt.queue, destination_ids, self.rt.settings)
        except redis.RedisError as exc:  # stored already: the ticker wakes them; do not fail an accepted request
            log.warning("could not wake drain jobs (the ticker will): %s", exc)


class _Indexes:
    """The index entries of one ingest transaction's deliveries, written as one command per key (Redis
    counts, and pays for, commands more than members: a fan-out to 1,000 destinations is one RPUSH to
    its event's list, one ZADD to the delivery and status indexes and the due set, and per destination
    one ZADD to its index and its pending set)."""

    def __init__(self, created: int) -> None:
        self.created = created
        self.of_event: dict[str, list[str]] = {}
        self.everything: dict[str, int] = {}
        self.by_status: dict[str, dict[str, int]] = {}
        self.by_destination: dict[str, dict[str, int]] = {}
        self.pending: dict[str, dict[str, int]] = {}
        self.woken: dict[str, None] = {}

    def add(self, event_id: str, destination_id: str, delivery_id: str, status: str) -> None:
        self.of_event.setdefault(event_id, []).append(delivery_id)
        self.everything[delivery_id] = self.created
        self.by_status.setdefault(status, {})[delivery_id] = self.created
        self.by_destination.setdefault(destination_id, {})[delivery_id] = self.created
        if status == "pending":
            self.pending.setdefault(destination_id, {})[delivery_id] = self.created
            self.woken[destination_id] = None

    def write(self, pipe: Pipeline, ttl: int) -> None:
        for event_id, ids in self.of_event.items():
            pipe.rpush(keys.event_deliveries(event_id), *ids)
            pipe.expire(keys.event_deliveries(event_id), ttl)
        if self.everything:
            pipe.zadd(keys.deliveries, self.everything)
        for status, members in self.by_status.items():
            pipe.zadd(keys.status(status), members)
        for did, members in self.by_destination.items():
            pipe.zadd(keys.destination_deliveries(did), members)
        for did, members in self.pending.items():
            pipe.zadd(keys.pending(did), members)
        if self.woken:
            pipe.zadd(keys.due, dict.fromkeys(self.woken, self.created), lt=True)
