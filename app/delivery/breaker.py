"""The circuit breaker: a failing destination pauses, is probed, and recovers by itself.

Its state is a hash, ``keys.breaker(<destination>)`` (absent: closed, never tripped; it expires 8
days after its last change, and goes when the destination is enabled by hand or deleted):

- ``closed``: deliveries flow. After a chunk with failures, the follow-ups (``followups.py``) apply
  the rule: ≥ ``failure_rate`` of ≥ ``min_attempts`` attempts in the last ``window_s`` failed —
  counting only the attempts since the breaker last closed, so the failures of an outage that is
  over do not trip it again — and it trips: ``open``.
- ``open``: nothing is sent until ``paused_until``, a cool-down of ``cooldown_s`` (30 s) that
  doubles on every failed probe, up to ``max_cooldown_s`` (10 min). The drain job that finds it
  open holds the destination's wake flag until then (``queue.hold``), so neither ingest nor the
  ticker enqueues a job meanwhile, and the ticker wakes the destination when the cool-down ends.
  Deliveries held meanwhile are not attempts: they wait, pending, and keep their order.
- ``half_open``: the first drain job after the cool-down sends ONE request, the probe: the delivery
  at the head of the line (for a batch destination, one batch); the others stay pending. Delivered:
  ``closed``, and the backlog flows again in the order it came due. Failed: ``open`` again, the
  cool-down doubled. The probe's attempt is logged and counted like any other, but a failed probe
  keeps its place at the head of the line (the next probe carries it again), so a long outage does
  not reorder the backlog.

Only failing continuously for ``failing_for_s`` disables the destination, or a 410 Gone at once
(``followups.py``); the breaker then stays as it was until the destination is enabled again.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, cast

import redis

from .. import stats
from ..schemas import BreakerSchema
from ..store import keys, now_ms

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "PAUSED", "PROBE", "SEND", "Breaker", "BreakerSettings", "Gate",
           "State"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
SEND, PROBE, PAUSED = "send", "probe", "paused"  # what a drain job may do now (``Breaker.gate``)
TTL_S = 8 * 86400  # as long as the hour statistics: "trips" counts what they can still show

_DEFAULTS: dict[str, Any] = BreakerSchema().load({})


@dataclass(frozen=True)
class BreakerSettings:
    """A destination's ``circuit_breaker`` object, with the schema's defaults for what it lacks."""

    enabled: bool
    failure_rate: float
    min_attempts: int
    window_s: float
    failing_for_s: float
    cooldown_s: float
    max_cooldown_s: float

    @classmethod
    def of(cls, destination: dict[str, Any]) -> BreakerSettings:
        given = destination.get("circuit_breaker") or {}
        return cls(**{name: given.get(name, default) for name, default in _DEFAULTS.items()})


@dataclass(frozen=True)
class State:
    """The stored state (times in ms since the epoch). ``closed_*``: the statistics of the minute in
    which it last closed, as they stood then (the failure rule counts only what came after)."""

    state: str = CLOSED
    paused_until: int | None = None
    opened_at: int | None = None
    cooldown_s: float | None = None
    trips: int = 0
    closed_at: int | None = None
    closed_attempts: int = 0
    closed_failures: int = 0

    @classmethod
    def parse(cls, raw: dict[str, str]) -> State:
        values: dict[str, Any] = {}
        for field in fields(cls):
            text = raw.get(field.name)
            if text is None or text == "":
                continue
            values[field.name] = text if field.name == "state" else (
                float(text) if field.name == "cooldown_s" else int(text))
        return cls(**values)


class Gate(NamedTuple):
    """What the breaker lets a drain job do: SEND (closed), PROBE (one request) or nothing until
    ``until`` (PAUSED, ms)."""

    action: str
    until: int | None = None


def _attempts_and_failures(counts: dict[str, int]) -> tuple[int, int]:
    failures = counts["error"] + counts["bounced"]
    return failures + counts["delivered"], failures


class Breaker:
    def __init__(self, db: redis.Redis):
        self.db = db

    def load(self, destination_id: str) -> State:
        return State.parse(cast(dict[str, str], self.db.hgetall(keys.breaker(destination_id))))

    # -- the drain job asks ----------------------------------------------------------------------------
    def gate(self, destination: dict[str, Any], state: State | None = None) -> Gate:
        """May the destination's drain job send? ``state``: the breaker's, if the caller read it. An
        open breaker whose cool-down ended turns half-open here: the job that asked sends the probe
        (one drain job per destination at a time, so one probe)."""
        if not BreakerSettings.of(destination).enabled:
            return Gate(SEND)
        state = state if state is not None else self.load(destination["id"])
        if state.state == OPEN and state.paused_until is not None and state.paused_until > now_ms():
            return Gate(PAUSED, state.paused_until)
        if state.state == OPEN:
            with self.db.pipeline(transaction=True) as pipe:
                pipe.hset(keys.breaker(destination["id"]), "state", HALF_OPEN)
                pipe.expire(keys.breaker(destination["id"]), TTL_S)
                pipe.execute()
        return Gate(PROBE) if state.state in (OPEN, HALF_OPEN) else Gate(SEND)

    # -- the follow-ups decide -------------------------------------------------------------------------
    def recent(self, destination_id: str, settings: BreakerSettings, state: State) -> tuple[int, int]:
        """(attempts, failures) in the last ``window_s``, by the minute statistics, counting only
        what came after the breaker last closed."""
        now = time.time()
        this_minute = int(now // 60)
        first = this_minute - max(1, math.ceil(settings.window_s / 60)) + 1
        baseline = (0, 0)
        if state.closed_at is not None and state.closed_at // 60_000 >= first:
            first = state.closed_at // 60_000
            baseline = (state.closed_attempts, state.closed_failures)
        # (at least this minute: a close stamped by a host whose clock runs ahead is not in the future)
        counts = stats.read(self.db, destination_id, minutes=max(1, this_minute - first + 1), hours=1,
                            now=now)["last_hour"]
        attempts, failures = _attempts_and_failures(counts)
        return max(0, attempts - baseline[0]), max(0, failures - baseline[1])

    def trip(self, destination_id: str, settings: BreakerSettings) -> State:
        """Closed → open, for the first cool-down."""
        now = now_ms()
        until = now + int(settings.cooldown_s * 1000)
        key = keys.breaker(destination_id)
        with self.db.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"state": OPEN, "opened_at": now, "paused_until": until,
                                    "cooldown_s": settings.cooldown_s})
            pipe.hdel(key, "closed_at", "closed_attempts", "closed_failures")
            pipe.hincrby(key, "trips", 1)
            pipe.expire(key, TTL_S)
            trips = pipe.execute()[2]
        return State(OPEN, until, now, settings.cooldown_s, int(trips))

    def reopen(self, destination_id: str, settings: BreakerSettings, state: State) -> State:
        """A failed probe: open again, the cool-down doubled (at most ``max_cooldown_s``)."""
        cooldown = min(settings.max_cooldown_s, 2 * (state.cooldown_s or settings.cooldown_s))
        until = now_ms() + int(cooldown * 1000)
        with self.db.pipeline(transaction=True) as pipe:
            pipe.hset(keys.breaker(destination_id), mapping={"state": OPEN, "paused_until": until,
                                                             "cooldown_s": cooldown})
            pipe.expire(keys.breaker(destination_id), TTL_S)
            pipe.execute()
        return State(OPEN, until, state.opened_at, cooldown, state.trips)

    def close(self, destination_id: str) -> None:
        """A probe got through: closed, with this minute's statistics as the failure rule's baseline."""
        now = time.time()
        attempts, failures = _attempts_and_failures(
            stats.read(self.db, destination_id, minutes=1, hours=1, now=now)["last_hour"])
        key = keys.breaker(destination_id)
        with self.db.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"state": CLOSED, "closed_at": int(now * 1000), "closed_attempts": attempts,
                                    "closed_failures": failures})
            pipe.hdel(key, "paused_until", "opened_at", "cooldown_s")
            pipe.expire(key, TTL_S)
            pipe.execute()

    # -- the stats answer shows ------------------------------------------------------------------------
    def show(self, destination: dict[str, Any]) -> dict[str, Any]:
        """``state``, ``paused_until`` (seconds since the epoch, as the statistics' buckets; None
        unless open or half-open), ``cooldown_s`` (the current pause's, or the first one a trip
        would take) and ``trips``. A breaker switched off shows closed."""
        settings = BreakerSettings.of(destination)
        state = self.load(destination["id"])
        held = settings.enabled and state.state != CLOSED
        return {
            "state": state.state if held else CLOSED,
            "paused_until": state.paused_until / 1000 if held and state.paused_until is not None else None,
            "cooldown_s": state.cooldown_s if held and state.cooldown_s is not None else settings.cooldown_s,
            "trips": state.trips,
        }
