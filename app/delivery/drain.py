"""``drain_destination``: the RQ job that sends a destination's pending deliveries.

One job drains many deliveries (DESIGN.md: RQ costs ~60 Redis commands per job; a pooled session
sends far faster than RQ can run jobs). It leases a chunk, renders and sends each delivery, hands
each outcome to the recorder (written in the background while the next request goes out), and stops
when nothing is due (atomically with clearing the destination's wake flag) or when its time budget
is spent, in which case it enqueues its successor so other destinations get their turn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

from .. import runtime
from ..auth_profiles import AuthProfileStore
from ..destinations import DestinationStore
from ..errors import DeliveryError
from ..outbound_auth import apply_auth, handle_unauthorized
from ..policies import PolicyStore, Throttle
from ..rendering import RenderError, render_delivery
from ..store import keys, now_ms
from . import queue as pending
from .aftermath import Aftermath
from .batch import render_batch
from .http import Response
from .outcomes import DEFAULT_RETRY_SCHEDULE, classify, is_retryable, next_delay, retry_after_s
from .recorder import Recorder, outcome_writes

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
        self.aftermath = Aftermath(rt)
        self.throttle: Throttle | None = None
        self.settled: list[str] = []  # outcomes of this chunk, for statistics and the breaker
        self.deadline = float("inf")

    def drain(self, destination_id: str) -> dict[str, int]:
        try:
            return self._drain(destination_id)
        finally:
            self.recorder.close()
            if self.throttle is not None:
                self.throttle.release()

    def _drain(self, destination_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        deadline = self.deadline = time.monotonic() + self.settings.drain_budget_s
        while True:
            self.rt.router.refresh()  # routing for outcome events and the fail branch, once per chunk
            destination = self.destinations.find(destination_id)
            if destination is not None and not destination.get("enabled", True):
                # Its backlog waits; enabling it puts it back on the due list.
                self.db.zrem(keys.due, destination_id)
                self.db.delete(keys.wake(destination_id))
                return counts
            timeout = float(destination["timeout_s"]) if destination else 1.0
            lease_s = max(self.settings.lease_s, timeout + LEASE_MARGIN_S)
            if destination is not None and not self._admitted(destination, lease_s):
                return counts
            if destination is not None and destination.get("batch"):
                sent = self._drain_batch(destination, lease_s)
                if sent is None:
                    return counts  # nothing due, or a partial batch waiting for more
                if self.throttle is not None and self.throttle.yielded:
                    self._yield(destination_id, self.throttle.yielded)  # the policy's rate: wait, do not spin
                    return counts
                for outcome in sent:
                    counts[outcome] = counts.get(outcome, 0) + 1
                self.recorder.flush()
                self.aftermath.settle(destination, self.settled)
                self.settled = []
                if time.monotonic() > deadline:
                    self.db.pexpire(keys.wake(destination_id), int(lease_s * 1000))
                    self._enqueue_successor(destination_id)
                    return counts
                continue
            ids = pending.take(self.db, destination_id, self.settings.drain_chunk, int(lease_s * 1000),
                               int(lease_s * 1000))
            if not ids:
                if pending.finish(self.db, destination_id):
                    return counts
                continue
            for outcome in self._send_chunk(destination_id, destination, ids, timeout, lease_s):
                counts[outcome] = counts.get(outcome, 0) + 1
            self.recorder.flush()  # what comes next reads the state these outcomes wrote
            if destination is not None:
                self.aftermath.settle(destination, self.settled)
                self.settled = []
                current = self.destinations.find(destination_id)
                if current is None or not current.get("enabled", True):
                    continue  # disabled by the breaker or a 410: the loop's first check ends the job
            if self.throttle is not None and self.throttle.yielded:
                self._yield(destination_id, self.throttle.yielded)
                return counts
            if time.monotonic() > deadline:
                # Budget spent: hand over to a fresh job at the back of the queue (the wake flag stays ours).
                self.db.pexpire(keys.wake(destination_id), int(lease_s * 1000))
                self._enqueue_successor(destination_id)
                return counts

    def _drain_batch(self, destination: dict[str, Any], lease_s: float) -> list[str] | None:
        """Send one batch if a full one is due, or a partial one that waited ``max_wait_s``.
        Returns the outcomes, [] to look again, or None when the job should end."""
        did = destination["id"]
        batch = destination["batch"]
        size, max_wait_ms = int(batch["size"]), int(float(batch.get("max_wait_s", 5.0)) * 1000)
        now = now_ms()
        with self.db.pipeline(transaction=False) as pipe:
            pipe.zcount(keys.pending(did), "-inf", now)
            pipe.zrange(keys.pending(did), 0, 0, withscores=True)
            due_count, head = pipe.execute()
        if not due_count:
            return None if pending.finish(self.db, did) else []
        oldest = int(head[0][1])
        if due_count < size and now - oldest < max_wait_ms:
            self._yield(did, oldest + max_wait_ms - now)
            return None
        lease_ms = int(max(lease_s, float(destination["timeout_s"]) + LEASE_MARGIN_S) * 1000)
        ids = pending.take(self.db, did, size, lease_ms, lease_ms)
        deliveries, raw_events = self._load(ids)
        members: list[tuple[dict[str, str], dict[str, Any]]] = []
        outcomes: list[str] = []
        for delivery_id, delivery in zip(ids, deliveries):
            if not delivery:
                self.db.zrem(keys.leases, f"{did}|{delivery_id}")
            elif raw_events.get(delivery["event_id"]) is None:
                outcomes.append(self._close(did, delivery, "failed", "the event expired before it was delivered"))
            else:
                members.append((delivery, json.loads(raw_events[delivery["event_id"]])))
        if not members:
            return outcomes
        try:
            rendered, item_errors = render_batch(destination, [event for _, event in members],
                                                 max_bytes=self.settings.template_max_bytes,
                                                 timeout_s=self.settings.template_timeout_s)
        except RenderError as exc:
            rendered, item_errors = None, {n: f"render: root: {exc}" for n in range(len(members))}
        for position, error in item_errors.items():
            outcomes.append(self._attempt_done(destination, *members[position], Response(None, error=error,
                                               error_kind="invalid"), destination["method"], destination["url"]))
        included = [m for n, m in enumerate(members) if n not in item_errors]
        if rendered is None or not included:
            return outcomes
        if not self._gate(did, [delivery["id"] for delivery, _ in included]):
            return outcomes  # the policy's rate: the batch goes back to pending and waits
        # The same deliveries batched again (a retry) carry the same webhook-id.
        batch_id = "bat_" + hashlib.sha256("|".join(sorted(d["id"] for d, _ in included)).encode()).hexdigest()[:24]
        headers = {**destination.get("headers", {}), "Content-Type": rendered.content_type,
                   "webhook-id": batch_id, "X-Hookgate-Batch-Size": str(len(included))}
        response, url = self._send(destination, destination["method"], destination["url"], headers,
                                   rendered.body, headers["webhook-id"])
        for delivery, event in included:
            outcomes.append(self._attempt_done(destination, delivery, event, response, destination["method"], url))
        return outcomes

    def _admitted(self, destination: dict[str, Any], lease_s: float) -> bool:
        """Hold a slot of the destination's throughput policy, or yield until one is free."""
        policy_id = destination.get("policy_id")
        if not policy_id:
            return True
        policy = PolicyStore(self.db).find(policy_id)
        if policy is None:
            return True
        if self.throttle is None:
            self.throttle = Throttle(self.db, policy, hold_ms=int(lease_s * 1000))
        self.throttle.refresh(policy)  # a changed limit counts from the next request on
        if self.throttle.acquire():
            return True
        self._yield(destination["id"], 250)
        return False

    def _yield(self, destination_id: str, after_ms: int) -> None:
        """Let the destination's backlog wait (the policy is full or its rate is spent): the ticker
        wakes it again in ``after_ms``; other destinations flow meanwhile."""
        with self.db.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.due, {destination_id: now_ms() + after_ms})
            pipe.delete(keys.wake(destination_id))
            pipe.execute()

    def _gate(self, destination_id: str, remaining: list[str]) -> bool:
        """Before each request under a policy: keep the slot and respect the rate. False: stop here,
        the remaining deliveries go back to pending (due now) and the job yields."""
        throttle = self.throttle
        if throttle is None:
            return True
        wait_ms = 0 if throttle.acquire() else 250
        while wait_ms == 0:
            wait_ms = throttle.wait_ms()
            if wait_ms == 0:
                return True
            if wait_ms <= 1000:
                time.sleep(wait_ms / 1000)
                wait_ms = 0
        self._release(destination_id, remaining)
        throttle.yielded = wait_ms
        return False

    def _release(self, destination_id: str, remaining: list[str]) -> None:
        """Give leased deliveries that were not sent back to pending, due now."""
        self.recorder.flush()
        now = now_ms()
        with self.db.pipeline(transaction=True) as pipe:
            for delivery_id in remaining:
                pipe.zrem(keys.leases, f"{destination_id}|{delivery_id}")
                pipe.zadd(keys.pending(destination_id), {delivery_id: now})
                pipe.zadd(keys.due, {destination_id: now}, lt=True)
            pipe.execute()

    def _enqueue_successor(self, destination_id: str) -> None:
        self.rt.queue.enqueue_call(
            drain_destination, args=(destination_id,), timeout=pending.drain_job_timeout(self.settings),
            result_ttl=0, failure_ttl=86400, description=f"drain {destination_id}",
        )

    def _load(self, ids: list[str]) -> tuple[list[dict[str, str]], dict[str, str | None]]:
        """The leased deliveries (empty where one expired) and their events' JSON by event id."""
        with self.db.pipeline(transaction=False) as pipe:
            for delivery_id in ids:
                pipe.hgetall(keys.delivery(delivery_id))
            deliveries = pipe.execute()
        event_ids = list(dict.fromkeys(d["event_id"] for d in deliveries if d))
        events = dict(zip(event_ids, self.db.mget([keys.event(e) for e in event_ids]))) if event_ids else {}
        return deliveries, events

    def _send_chunk(self, destination_id: str, destination: dict[str, Any] | None, ids: list[str],
                    timeout: float, lease_s: float):
        deliveries, events = self._load(ids)
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
            if position and time.monotonic() > self.deadline:
                self._release(destination_id, ids[position:])  # budget spent: the rest wait for the successor
                return
            if destination is not None and raw_event is not None and not self._gate(destination_id, ids[position:]):
                return
            if destination is None:
                yield self._close(destination_id, delivery, "skipped", "the destination was deleted")
            elif raw_event is None:
                yield self._close(destination_id, delivery, "failed", "the event expired before it was delivered")
            else:
                yield self._attempt_safely(destination, delivery, json.loads(raw_event))

    def _attempt_safely(self, destination: dict[str, Any], delivery: dict[str, str], event: dict[str, Any]) -> str:
        """An attempt whose unexpected failure is recorded as an error, not left to loop: a delivery
        that crashed its job would come back with its lease, crash it again, and never end."""
        try:
            return self._attempt(destination, delivery, event)
        except Exception as exc:
            log.exception("delivery %s failed unexpectedly", delivery["id"])
            return self._attempt_done(destination, delivery, event, Response(
                None, error=f"internal: {type(exc).__name__}: {exc}", error_kind="invalid"),
                destination["method"], destination["url"])

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
            response, url = self._send(destination, method, url, headers, body, event["id"])
        return self._attempt_done(destination, delivery, event, response, method, url)

    def _attempt_done(self, destination: dict[str, Any], delivery: dict[str, str], event: dict[str, Any],
                      response: Response, method: str, url: str) -> str:
        """Record one delivery's attempt, schedule its retry, and do what follows it."""
        attempt_no = int(delivery["attempts"]) + 1
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
        if outcome != "delivered" and (is_retryable(outcome, response.status_code) or response.error_kind == "auth"):
            schedule = destination.get("retry_schedule")  # [] means: no retries
            delay = next_delay(attempt_no, DEFAULT_RETRY_SCHEDULE if schedule is None else schedule)
            if delay is None:
                status = "failed"
            else:
                asked = retry_after_s(response.headers)
                if asked is not None:  # never sooner than the receiver asked, within a day
                    delay = max(delay, asked)
                due = now_ms() + int(delay * 1000)
        self._record(destination["id"], delivery, status, attempt, due)
        self.settled.append(outcome)
        if status == "failed":
            self.settled.append("failed")
        self.aftermath.after(destination, delivery, event, attempt, status, outcome)
        return outcome

    def _send(self, destination: dict[str, Any], method: str, url: str, headers: dict[str, str],
              body: bytes | None, event_id: str) -> tuple[Response, str]:
        """Send, with the destination's auth profile applied (and one retry with a fresh OAuth
        token on a 401). Returns the response and the URL to log (never one with credentials)."""
        timeout = float(destination["timeout_s"])
        if (self.settings.https_only or destination.get("https_only")) and not url.lower().startswith("https:"):
            return Response(None, error="refused: only https URLs are allowed (https_only)", error_kind="invalid"), url
        profile_id = destination.get("auth_profile_id")
        if not profile_id:
            return self.rt.sender.send(method, url, headers, body, timeout), url
        profile = AuthProfileStore(self.db, self.rt.secrets).find(profile_id)
        if profile is None:
            return Response(None, error="its auth profile was deleted", error_kind="invalid"), url
        for first in (True, False):
            try:
                prepared = apply_auth(profile, self.rt.secrets, self.db, method=method, url=url, headers=dict(headers),
                                      body=body, event_id=event_id,
                                      allowed_networks=self.settings.allowed_networks, timeout=timeout)
            except DeliveryError as exc:
                kind = "auth" if (exc.details or {}).get("retryable") else "invalid"
                return Response(None, error=f"auth: {exc.message}", error_kind=kind), url
            response = self.rt.sender.send(method, prepared.url, prepared.headers, body, timeout,
                                           cert=prepared.cert, verify=prepared.verify)
            if first and response.status_code == 401 and handle_unauthorized(profile, self.db, prepared):
                continue
            return response, prepared.safe_url
        return response, prepared.safe_url

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
        previous = delivery["status"]
        attempt_json = json.dumps(attempt, separators=(",", ":")) if attempt is not None else None
        self.recorder.submit(outcome_writes(destination_id, delivery_id, previous, status, fields, attempt_json,
                                            created, due, int(self.settings.event_retention_s), ATTEMPTS_KEPT))
        delivery["status"] = status
