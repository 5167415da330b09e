"""What follows an attempt, beyond recording it: outcome events, the fail branch, statistics, and
the circuit breaker's decisions (``breaker.py`` keeps its state).

- Outcome events: each attempt re-enters hookgate as ``webhook.delivered`` / ``webhook.error`` /
  ``webhook.bounced`` (and ``webhook.failed`` when retries run out), category ``webhook``, with the
  destination, delivery and event ids, status code, and the response (text and parsed JSON, first
  64 KB), so other destinations can subscribe and a follow-up template can use ``webhook.json``.
  They are only made when some destination subscribes to them, and never for deliveries of
  ``webhook`` events themselves (no loops).
- Fail branch: a destination's ``fail_destination_id`` gets the event of every delivery that ends
  ``failed``.
- Breaker: after a chunk with failures, ≥ ``failure_rate`` of ≥ ``min_attempts`` attempts in the last
  ``window_s`` failed → it trips: the destination pauses (a ``destination.paused`` event, told once
  to ``notify``). After the probe: delivered → closed (``destination.recovered``, told once), failed
  → paused again for twice as long. A destination is disabled only when it has failed continuously
  for ``failing_for_s``, or at once on a 410 Gone: a ``destination.disabled`` event is emitted and
  notifications repeat until it is enabled.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import Counter
from typing import Any

from .. import metrics, stats
from ..destinations import DestinationStore
from ..events import isoformat
from ..intake import Intake
from ..notify import enqueue_notice, notice
from ..runtime import Runtime
from ..store import keys, new_id, now_ms
from .breaker import CLOSED, HALF_OPEN, Breaker, BreakerSettings, State

__all__ = ["FollowUps"]

log = logging.getLogger(__name__)
FAILURES = ("error", "bounced")


def _own_event(name: str, data: dict[str, Any], about: dict[str, Any] | None = None) -> dict[str, Any]:
    """An event hookgate emits itself (category ``webhook``), about the user of ``about`` if given."""
    about = about or {}
    received = isoformat(dt.datetime.now(dt.UTC))
    return {
        "id": new_id("evt"), "external_id": None, "source": "hookgate", "category": "webhook", "name": name,
        "time": received, "received_at": received, "user_id": about.get("user_id"),
        "anonymous_id": about.get("anonymous_id"), "profile": about.get("profile") or {}, "origin": "hookgate",
        "channel": about.get("channel"), "data": data, "system": {},
    }


def _iso(ms: int | None) -> str | None:
    return isoformat(dt.datetime.fromtimestamp(ms / 1000, dt.UTC)) if ms is not None else None


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


class FollowUps:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.db = rt.db
        self.intake = Intake(rt)
        self.breaker = Breaker(rt.db)

    # -- called by the drain job ---------------------------------------------------------------------
    def after_attempt(self, destination: dict[str, Any], delivery: dict[str, str], event: dict[str, Any],
              attempt: dict[str, Any] | None, status: str, outcome: str) -> None:
        """Right after one attempt: outcome events, the fail branch, 410 Gone."""
        try:
            if attempt is not None and event.get("category") != "webhook":
                self._emit_outcomes(destination, delivery, event, attempt, status, outcome)
            if status == "failed" and destination.get("fail_destination_id"):
                self._fail_branch(destination, event)
            if attempt is not None and attempt.get("status_code") == 410:
                self.disable(destination, "gone", "the destination answered 410 Gone")
        except Exception:  # what follows must never lose the outcome already recorded
            log.exception("after-attempt work failed for delivery %s", delivery.get("id"),
                          extra={"delivery_id": delivery.get("id"), "destination_id": destination["id"]})

    def after_chunk(self, destination: dict[str, Any], outcomes: list[str], probe: bool = False,
                    latencies_ms: list[float] | None = None) -> None:
        """After a chunk of attempts: statistics, the continuous-failure clock, the breaker. ``probe``:
        the chunk was the half-open breaker's one request; ``latencies_ms``: its attempts' durations."""
        if not outcomes:
            return
        try:
            self._count(destination["id"], outcomes, latencies_ms or [])
            settings = BreakerSettings.of(destination)
            if not settings.enabled:
                return
            if probe:
                self._after_probe(destination, settings, outcomes)
            elif any(o in FAILURES for o in outcomes):
                self._check_breaker(destination, settings)
        except Exception:
            log.exception("settling outcomes failed for destination %s", destination["id"],
                          extra={"destination_id": destination["id"]})

    def _count(self, did: str, outcomes: list[str], latencies_ms: list[float]) -> None:
        """The chunk's statistics and /metrics counters, and the continuous-failure clock: it starts at
        the first failure after the last success, and stops at a success that no failure followed."""
        with self.db.pipeline(transaction=False) as pipe:
            for outcome, n in Counter(outcomes).items():
                stats.count(pipe, did, outcome, n)
            metrics.count_attempts(pipe, did, Counter(outcomes), latencies_ms)
            last_success = max((i for i, o in enumerate(outcomes) if o == "delivered"), default=-1)
            if last_success == len(outcomes) - 1:
                pipe.delete(keys.failing_since(did))
            elif any(o in FAILURES for o in outcomes[last_success + 1:]):
                if last_success >= 0:
                    pipe.delete(keys.failing_since(did))
                pipe.set(keys.failing_since(did), now_ms(), nx=True)
            pipe.execute()

    def _emit_outcomes(self, destination, delivery, event, attempt, status, outcome) -> None:
        index = self.rt.router.cached_index()  # the drain job refreshes it once per chunk
        names = [n for n in [f"webhook.{outcome}"] + (["webhook.failed"] if status == "failed" else [])
                 if index.names_subscribed(n, "webhook")]
        if not names:  # nobody listens: build nothing
            return
        emitted = []
        for name in names:
            outcome_event = _own_event(name, {
                "destination_id": destination["id"], "delivery_id": delivery["id"], "event_id": event["id"],
                "event_name": event["name"], "attempt": attempt["attempt"], "outcome": outcome,
                "status": status, "status_code": attempt["status_code"], "error": attempt["error"],
                "response": attempt["response_body"], "json": _json_or_none(attempt["response_body"]),
            }, about=event)
            if index.match(outcome_event):
                emitted.append((0, outcome_event))
        if emitted:
            self.intake.accept("hookgate", emitted)

    def _fail_branch(self, destination: dict[str, Any], event: dict[str, Any]) -> None:
        fallback = DestinationStore(self.db).find(destination["fail_destination_id"])
        if fallback is None or not fallback.get("enabled", True):
            return
        self.intake.deliver_to(event, [fallback])

    # -- the breaker --------------------------------------------------------------------------------
    def _check_breaker(self, destination: dict[str, Any], settings: BreakerSettings) -> None:
        """A closed breaker trips when the failure rule holds (unless the destination has failed so
        long that it is disabled instead)."""
        if self._failed_too_long(destination, settings):
            return
        state = self.breaker.load(destination["id"])
        if state.state != CLOSED:  # open or half-open: only a probe changes that
            return
        attempts, failures = self.breaker.recent(destination["id"], settings, state)
        if attempts >= settings.min_attempts and failures / attempts >= settings.failure_rate:
            tripped = self.breaker.trip(destination["id"], settings)
            self._paused(destination, settings, tripped,
                         f"{failures} of the last {attempts} attempts failed ({failures / attempts:.0%})")

    def _after_probe(self, destination: dict[str, Any], settings: BreakerSettings, outcomes: list[str]) -> None:
        """The probe's answer: delivered closes the breaker, a failure opens it again for twice as
        long; a probe that sent nothing (skipped, or its event expired) leaves it half-open."""
        did = destination["id"]
        state = self.breaker.load(did)
        failed = any(o in FAILURES for o in outcomes)
        if state.state != HALF_OPEN:  # reset meanwhile (enabled by hand): an ordinary chunk
            if failed:
                self._check_breaker(destination, settings)
        elif "delivered" in outcomes:
            self.breaker.close(did)
            self._recovered(destination, state)
        elif failed and not self._failed_too_long(destination, settings):
            reopened = self.breaker.reopen(did, settings, state)
            log.warning("destination %s: the probe failed, paused for %.0f s", did, reopened.cooldown_s or 0,
                        extra={"destination_id": did})

    def _failed_too_long(self, destination: dict[str, Any], settings: BreakerSettings) -> bool:
        """Disable the destination if it has failed continuously for ``failing_for_s``."""
        since = self.db.get(keys.failing_since(destination["id"]))
        failing_for = time.time() - int(since) / 1000 if since else 0.0
        if failing_for < settings.failing_for_s:
            return False
        self.disable(destination, "failing", f"failing continuously for {failing_for / 3600:.1f} h")
        return True

    def _paused(self, destination: dict[str, Any], settings: BreakerSettings, state: State, detail: str) -> None:
        log.warning("destination %s paused for %.0f s: %s", destination["id"], state.cooldown_s or 0, detail,
                    extra={"destination_id": destination["id"]})
        self._tell(destination, "destination.paused", detail, reason="failure_rate", paused_until=state.paused_until,
                   cooldown_s=state.cooldown_s, trips=state.trips,
                   action=f"none needed: one probe request goes when the cool-down ends, and the backlog flows "
                          f"again once it is delivered; the destination is disabled if it keeps failing for "
                          f"{settings.failing_for_s / 3600:.1f} h")

    def _recovered(self, destination: dict[str, Any], state: State) -> None:
        paused_for = (now_ms() - state.opened_at) / 1000 if state.opened_at is not None else 0.0
        detail = f"a probe was delivered after {paused_for:.0f} s paused: the backlog flows again"
        log.warning("destination %s recovered: %s", destination["id"], detail,
                    extra={"destination_id": destination["id"]})
        self._tell(destination, "destination.recovered", detail, paused_at=state.opened_at,
                   paused_for_s=round(paused_for, 3), trips=state.trips)

    def _tell(self, destination: dict[str, Any], name: str, detail: str, **facts: Any) -> None:
        """hookgate's own event ``name`` (times in ISO 8601, as an event's), and the notification
        (times in ms, as ``disabled_at``), sent once."""
        data = {key: _iso(value) if key in ("paused_until", "paused_at") else value for key, value in facts.items()}
        self.intake.accept("hookgate", [(0, _own_event(name, {
            "destination_id": destination["id"], "name": destination["name"], "url": destination["url"],
            "detail": detail, **data}))])
        if destination.get("notify"):
            enqueue_notice(self.rt, destination["id"], notice(name, destination, detail, **facts))

    # -- disabling and notifying ---------------------------------------------------------------------
    def disable(self, destination: dict[str, Any], reason: str, detail: str) -> None:
        store = DestinationStore(self.db)
        current = store.find(destination["id"])
        if current is None or not current.get("enabled", True):
            return
        store.update(destination["id"], {"enabled": False, "disabled_reason": reason, "disabled_detail": detail,
                                         "disabled_at": now_ms()})
        log.warning("destination %s disabled: %s", destination["id"], detail,
                    extra={"destination_id": destination["id"]})
        disabled_event = _own_event("destination.disabled", {
            "destination_id": destination["id"], "name": destination["name"], "url": destination["url"],
            "reason": reason, "detail": detail})
        self.intake.accept("hookgate", [(0, disabled_event)])
        if destination.get("notify"):
            self.db.zadd(keys.notify, {destination["id"]: now_ms()})
