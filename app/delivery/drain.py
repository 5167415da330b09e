"""``drain_destination``: the RQ job that sends a destination's pending deliveries.

One job drains many deliveries (DESIGN.md: RQ costs ~60 Redis commands per job; a pooled session
sends far faster than RQ can run jobs). It leases a chunk, renders and sends each delivery, hands
each outcome to the recorder (written in the background while the next request goes out), and stops
when nothing is due (atomically with clearing the destination's wake flag) or when its time budget
is spent, in which case it enqueues its successor so other destinations get their turn.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .. import runtime
from ..destinations import DestinationStore
from ..rendering import RenderError, render_delivery
from ..store import keys, now_ms
from . import queue as pending
from .http import Response
from .outcomes import DEFAULT_RETRY_SCHEDULE, classify, is_retryable, next_delay
from .recorder import Recorder

__all__ = ["drain_destination", "Drainer"]

log = logging.getLogger(__name__)

ATTEMPTS_KEPT = 50
LEASE_MARGIN_S = 5.0


def drain_destination(destination_id: str) -> dict[str, int]:
    """RQ job: send what is due for one destination. Returns counts by outcome."""
    return Drainer(runtime.current()).drain(destination_id)


class Drainer:
    def __init__(self, rt: runtime.Runtime):
        self.rt = rt
        self.db = rt.db
        self.settings = rt.settings
        self.destinations = DestinationStore(rt.db)
        self.recorder = Recorder(rt.db)

    def drain(self, destination_id: str) -> dict[str, int]:
        try:
            return self._drain(destination_id)
        finally:
            self.recorder.close()

    def _drain(self, destination_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        deadline = time.monotonic() + self.settings.drain_budget_s
        while True:
            destination = self.destinations.find(destination_id)
            if destination is not None and not destination.get("enabled", True):
                # Its backlog waits; enabling it puts it back on the due list.
                self.db.zrem(keys.due, destination_id)
                self.db.delete(keys.wake(destination_id))
                return counts
            timeout = float(destination["timeout_s"]) if destination else 1.0
            lease_s = max(self.settings.lease_s, timeout + LEASE_MARGIN_S)
            ids = pending.take(self.db, destination_id, self.settings.drain_chunk, int(lease_s * 1000),
                               int(lease_s * 1000))
            if not ids:
                if pending.finish(self.db, destination_id):
                    return counts
                continue
            for outcome in self._send_chunk(destination_id, destination, ids, timeout, lease_s):
                counts[outcome] = counts.get(outcome, 0) + 1
            self.recorder.flush()  # what comes next reads the state these outcomes wrote
            if time.monotonic() > deadline:
                # Budget spent: hand over to a fresh job at the back of the queue (the wake flag stays ours).
                self.db.pexpire(keys.wake(destination_id), int(lease_s * 1000))
                self._enqueue_successor(destination_id)
                return counts

    def _enqueue_successor(self, destination_id: str) -> None:
        self.rt.queue.enqueue_call(
            drain_destination, args=(destination_id,), timeout=pending.drain_job_timeout(self.settings),
            result_ttl=0, failure_ttl=86400, description=f"drain {destination_id}",
        )

    def _send_chunk(self, destination_id: str, destination: dict[str, Any] | None, ids: list[str],
                    timeout: float, lease_s: float):
        with self.db.pipeline(transaction=False) as pipe:
            for delivery_id in ids:
                pipe.hgetall(keys.delivery(delivery_id))
            deliveries = pipe.execute()
        event_ids = list(dict.fromkeys(d["event_id"] for d in deliveries if d))
        events = dict(zip(event_ids, self.db.mget([keys.event(e) for e in event_ids]))) if event_ids else {}
        lease_until = time.monotonic() + lease_s
        lost: set[str] = set()
        for position, (delivery_id, delivery) in enumerate(zip(ids, deliveries)):
            if time.monotonic() + timeout + LEASE_MARGIN_S > lease_until:
                # A slow receiver ate into the lease: extend it for what is left, and let go of any
                # delivery whose lease already lapsed (another worker may be sending it).
                remaining = ids[position:]
                kept = set(pending.renew(self.db, destination_id, remaining, int(lease_s * 1000),
                                         int(lease_s * 1000)))
                lost |= set(remaining) - kept
                lease_until = time.monotonic() + lease_s
            if delivery_id in lost:
                continue
            if not delivery:  # expired under retention while it waited
                self.db.zrem(keys.leases, f"{destination_id}|{delivery_id}")
                continue
            raw_event = events.get(delivery["event_id"])
            if destination is None:
                yield self._close(destination_id, delivery, "skipped", "the destination was deleted")
            elif raw_event is None:
                yield self._close(destination_id, delivery, "failed", "the event expired before it was delivered")
            else:
                yield self._attempt(destination, delivery, json.loads(raw_event))

    def _attempt(self, destination: dict[str, Any], delivery: dict[str, str], event: dict[str, Any]) -> str:
        attempt_no = int(delivery["attempts"]) + 1
        method = destination["method"]
        url = destination["url"]
        try:
            rendered = render_delivery(destination, event, max_bytes=self.settings.template_max_bytes,
                                       timeout_s=self.settings.template_timeout_s)
        except RenderError as exc:
            response = Response(None, error=f"render: {exc}", error_kind="invalid")
        else:
            headers = {
                **destination.get("headers", {}),
                "Content-Type": rendered.content_type,
                "webhook-id": event["id"],
                "X-Hookgate-Delivery": delivery["id"],
                "X-Hookgate-Attempt": str(attempt_no),
            }
            body: bytes | None = rendered.body
            if method == "GET":
                if destination["format"] == "form" and rendered.body:
                    url = url + ("&" if "?" in url else "?") + rendered.body.decode()
                body = None
                headers.pop("Content-Type")
            response = self.rt.sender.send(method, url, headers, body, float(destination["timeout_s"]))
        outcome = classify(response)
        attempt = {
            "attempt": attempt_no,
            "at": now_ms(),
            "method": method,
            "url": url,
            "status_code": response.status_code,
            "latency_ms": response.latency_ms,
            "outcome": outcome,
            "error": response.error,
            "response_body": response.body,
            "response_headers": response.headers,
        }
        status, due = outcome, None
        if outcome != "delivered" and is_retryable(outcome, response.status_code):
            delay = next_delay(attempt_no, destination.get("retry_schedule") or DEFAULT_RETRY_SCHEDULE)
            if delay is None:
                status = "failed"
            else:
                due = now_ms() + int(delay * 1000)
        self._record(destination["id"], delivery, status, attempt, due)
        return outcome

    def _close(self, destination_id: str, delivery: dict[str, str], status: str, reason: str) -> str:
        self._record(destination_id, delivery, status, None, None, reason=reason)
        return status

    def _record(self, destination_id: str, delivery: dict[str, str], status: str,
                attempt: dict[str, Any] | None, due: int | None, reason: str | None = None) -> None:
        delivery_id = delivery["id"]
        stamp = now_ms()
        created = int(delivery["created_at"])
        fields: dict[str, Any] = {"status": status, "updated_at": stamp, "next_attempt_at": due or ""}
        if attempt is not None:
            fields.update(attempts=attempt["attempt"], last_status_code=attempt["status_code"] or "",
                          last_error=attempt["error"] or "")
        if reason is not None:
            fields["last_error"] = reason
        retention = int(self.settings.event_retention_s)
        previous = delivery["status"]

        def writes(pipe) -> None:
            pipe.hset(keys.delivery(delivery_id), mapping=fields)
            if attempt is not None:
                pipe.rpush(keys.attempts(delivery_id), json.dumps(attempt, separators=(",", ":")))
                pipe.ltrim(keys.attempts(delivery_id), -ATTEMPTS_KEPT, -1)
                pipe.expire(keys.attempts(delivery_id), retention)
            pipe.zrem(keys.leases, f"{destination_id}|{delivery_id}")
            if previous != status:
                pipe.zrem(keys.status(previous), delivery_id)
                pipe.zadd(keys.status(status), {delivery_id: created})
            if due is not None:
                pipe.zadd(keys.pending(destination_id), {delivery_id: due})
                pipe.zadd(keys.due, {destination_id: due}, lt=True)

        self.recorder.submit(writes)
        delivery["status"] = status
