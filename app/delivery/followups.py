"""What follows an attempt, beyond recording it: outcome events, the fail branch, and the circuit
breaker (which disables a failing destination, says so, and keeps notifying until it is enabled).

- Outcome events: each attempt re-enters hookgate as ``webhook.delivered`` / ``webhook.error`` /
  ``webhook.bounced`` (and ``webhook.failed`` when retries run out), category ``webhook``, with the
  destination, delivery and event ids, status code, and the response (text and parsed JSON, first
  64 KB), so other destinations can subscribe and a follow-up template can use ``webhook.json``.
  They are only made when some destination subscribes to them, and never for deliveries of
  ``webhook`` events themselves (no loops).
- Fail branch: a destination's ``fail_destination_id`` gets the event of every delivery that ends
  ``failed``.
- Breaker: a 410 Gone disables at once; otherwise a destination is disabled when it has failed
  continuously for ``failing_for_s`` or ≥ ``failure_rate`` of ≥ ``min_attempts`` attempts in the
  last ``window_s`` failed. A ``destination.disabled`` event is emitted and notifications repeat.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections import Counter
from typing import Any

from .. import stats
from ..destinations import DestinationStore
from ..events import isoformat
from ..intake import Intake
from ..runtime import Runtime
from ..store import keys, new_id, now_ms

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
            log.exception("after-attempt work failed for delivery %s", delivery.get("id"))

    def after_chunk(self, destination: dict[str, Any], outcomes: list[str]) -> None:
        """After a chunk of attempts: statistics, the continuous-failure clock, the breaker."""
        if not outcomes:
            return
        did = destination["id"]
        try:
            with self.db.pipeline(transaction=False) as pipe:
                for outcome, n in Counter(outcomes).items():
                    stats.count(pipe, did, outcome, n)
                last_success = max((i for i, o in enumerate(outcomes) if o == "delivered"), default=-1)
                if last_success == len(outcomes) - 1:
                    pipe.delete(keys.failing_since(did))
                elif any(o in FAILURES for o in outcomes[last_success + 1:]):
                    if last_success >= 0:
                        pipe.delete(keys.failing_since(did))
                    pipe.set(keys.failing_since(did), now_ms(), nx=True)
                pipe.execute()
            if any(o in FAILURES for o in outcomes) and (destination.get("circuit_breaker") or {}).get("enabled", True):
                self._check_breaker(destination)
        except Exception:
            log.exception("settling outcomes failed for destination %s", did)

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

    def _check_breaker(self, destination: dict[str, Any]) -> None:
        settings = destination.get("circuit_breaker") or {}
        did = destination["id"]
        since = self.db.get(keys.failing_since(did))
        failing_for = time.time() - int(since) / 1000 if since else 0.0
        if failing_for >= float(settings.get("failing_for_s", 86400)):
            self.disable(destination, "failing", f"failing continuously for {failing_for / 3600:.1f} h")
            return
        recent = stats.read(self.db, did, minutes=max(1, math.ceil(float(settings.get("window_s", 300)) / 60)),
                            hours=1)["last_hour"]
        failures = recent["error"] + recent["bounced"]
        attempts = failures + recent["delivered"]
        if attempts >= int(settings.get("min_attempts", 20)) and failures / attempts >= float(
                settings.get("failure_rate", 0.7)):
            self.disable(destination, "failure_rate",
                         f"{failures} of the last {attempts} attempts failed ({failures / attempts:.0%})")

    # -- disabling and notifying ---------------------------------------------------------------------
    def disable(self, destination: dict[str, Any], reason: str, detail: str) -> None:
        store = DestinationStore(self.db)
        current = store.find(destination["id"])
        if current is None or not current.get("enabled", True):
            return
        store.update(destination["id"], {"enabled": False, "disabled_reason": reason, "disabled_detail": detail,
                                         "disabled_at": now_ms()})
        log.warning("destination %s disabled: %s", destination["id"], detail)
        disabled_event = _own_event("destination.disabled", {
            "destination_id": destination["id"], "name": destination["name"], "url": destination["url"],
            "reason": reason, "detail": detail})
        self.intake.accept("hookgate", [(0, disabled_event)])
        if destination.get("notify"):
            self.db.zadd(keys.notify, {destination["id"]: now_ms()})
