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
import secrets
import time
from typing import Any, NamedTuple

from .. import runtime
from ..auth_profiles import AuthProfileStore
from ..destinations import DestinationStore
from ..errors import DeliveryError
from ..outbound_auth import apply_auth, handle_unauthorized
from ..policies import PolicyStore, Throttle
from ..preset_destinations import request_parts, scrub
from ..presets import Preset, Verdict
from ..rendering import RenderError, render_delivery
from ..store import keys, now_ms
from . import queue as pending
from .aftermath import Aftermath
from .batch import render_batch
from .http import Response
from .outcomes import DEFAULT_RETRY_SCHEDULE, MAX_RETRY_AFTER_S, classify, is_retryable, next_delay, retry_after_s
from .recorder import Recorder, outcome_writes

__all__ = ["drain_destination", "Drainer"]

log = logging.getLogger(__name__)

ATTEMPTS_KEPT = 50
LEASE_MARGIN_S = 5.0


class PresetRequest(NamedTuple):
    """A preset destination's request parts: real URL, URL to log, headers, parameter values, the
    plugin's preset (None for a user preset or a removed plugin) and its screening of events."""

    url: str | None
    log_url: str | None
    headers: dict[str, str]
    params: dict[str, Any]
    plugin: Preset | None
    skip: Any
    hidden: tuple[str, ...]  # secret texts an error message must not show


NO_PRESET = PresetRequest(None, None, {}, {}, None, None, ())


def request_headers(content_type: str, *layers: dict[str, str]) -> dict[str, str]:
    """A request's headers: the format's Content-Type, then each layer in turn (the preset's, the
    destination's, hookgate's own), a later one winning; a layer may set its own Content-Type
    (``application/json; charset=utf-8``) whatever the case of its name."""
    headers = {"Content-Type": content_type}
    for layer in layers:
        for name, value in layer.items():
            headers["Content-Type" if name.lower() == "content-type" else name] = value
    return headers


def _safe_screen(preset_name: str, screen: Any) -> Any:
    """A plugin's screen whose failure skips the event with the reason, instead of crashing the drain
    job (whose leases would bring the same batch back, and crash it again, forever)."""
    def screened(event: dict[str, Any], params: dict[str, Any]) -> str | None:
        try:
            return screen(event, params)
        except Exception as exc:
            log.exception("the screen of preset %s failed", preset_name)
            return f"preset {preset_name} could not screen the event: {type(exc).__name__}: {exc}"
    return screened


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
        self._presets: dict[tuple[str, Any], PresetRequest] = {}
        self.holder = secrets.token_hex(8)  # this job's leases are its own (queue.py)
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
                               int(lease_s * 1000), self.holder)
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
        ids = pending.take(self.db, did, size, lease_ms, lease_ms, self.holder)
        deliveries, raw_events = self._load(ids)
        members: list[tuple[dict[str, str], dict[str, Any]]] = []
        outcomes: list[str] = []
        for delivery_id, delivery in zip(ids, deliveries):
            if not delivery:
                pending.drop(self.db, did, [delivery_id], self.holder)
            elif raw_events.get(delivery["event_id"]) is None:
                outcomes.append(self._close(did, delivery, "failed", "the event expired before it was delivered"))
            else:
                members.append((delivery, json.loads(raw_events[delivery["event_id"]])))
        try:
            preset = self.preset_request(destination)
        except RenderError as exc:  # its secrets do not decrypt, or its URL does not render
            failed = Response(None, error=f"render: {exc}", error_kind="invalid")
            return outcomes + [self._attempt_done(destination, delivery, event, failed, destination["method"],
                                                  destination["url"]) for delivery, event in members]
        if preset.skip is not None:
            kept = []
            for delivery, event in members:
                reason = preset.skip(event, preset.params)
                if reason:
                    outcomes.append(self._close(did, delivery, "skipped", reason))
                else:
                    kept.append((delivery, event))
            members = kept
        if not members:
            return outcomes
        try:
            rendered, item_errors = render_batch(destination, [event for _, event in members],
                                                 max_bytes=self.settings.template_max_bytes,
                                                 timeout_s=self.settings.template_timeout_s, params=preset.params)
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
        headers = request_headers(rendered.content_type, preset.headers, destination.get("headers", {}),
                                  {"webhook-id": batch_id, "X-Hookgate-Batch-Size": str(len(included))})
        url = preset.url or destination["url"]
        response, url = self.send(destination, destination["method"], url, headers,
                                  rendered.body, headers["webhook-id"], preset.log_url, preset.hidden)
        verdict = self.preset_verdict(preset, response, [event["id"] for _, event in included])
        for delivery, event in included:
            try:
                outcomes.append(self._attempt_done(destination, delivery, event, response, destination["method"],
                                                   url, verdict.for_item(event["id"]) if verdict is not None else None))
            except Exception as exc:
                log.exception("recording delivery %s of a batch failed", delivery["id"])
                outcomes.append(self._attempt_done(destination, delivery, event, Response(
                    None, error=f"internal: {type(exc).__name__}: {exc}", error_kind="invalid"),
                    destination["method"], url))
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
        pending.release(self.db, destination_id, remaining, self.holder)

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
                                         int(lease_s * 1000), self.holder))
                lost |= set(remaining) - kept
                lease_until = time.monotonic() + lease_s
            if delivery_id in lost:
                continue
            if not delivery:  # expired under retention while it waited
                pending.drop(self.db, destination_id, [delivery_id], self.holder)
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
        url = log_url = destination["url"]
        verdict = None
        try:
            preset = self.preset_request(destination)
            if preset.skip is not None:
                reason = preset.skip(event, preset.params)
                if reason:
                    return self._close(destination["id"], delivery, "skipped", reason)
            rendered = render_delivery(destination, event, max_bytes=self.settings.template_max_bytes,
                                       timeout_s=self.settings.template_timeout_s, params=preset.params)
        except RenderError as exc:
            response = Response(None, error=f"render: {exc}", error_kind="invalid")
        else:
            headers = request_headers(rendered.content_type, preset.headers, destination.get("headers", {}), {
                "webhook-id": event["id"],
                "X-Hookgate-Delivery": delivery["id"],
                "X-Hookgate-Attempt": str(attempt_no),
            })
            url, log_url = preset.url or url, preset.log_url or url
            body: bytes | None = rendered.body
            if method == "GET":
                if destination["format"] == "form" and rendered.body:
                    url = url + ("&" if "?" in url else "?") + rendered.body.decode()
                    log_url = scrub(log_url + ("&" if "?" in log_url else "?") + rendered.body.decode(), preset.hidden)
                body = None
                headers.pop("Content-Type")
            response, log_url = self.send(destination, method, url, headers, body, event["id"], log_url,
                                          preset.hidden)
            verdict = self.preset_verdict(preset, response, [event["id"]])
            verdict = verdict.for_item(event["id"]) if verdict is not None else None
        return self._attempt_done(destination, delivery, event, response, method, log_url, verdict)

    def preset_request(self, destination: dict[str, Any]) -> PresetRequest:
        """What a preset adds to this destination's requests (nothing for a plain destination); its
        secrets are decrypted once per change of the destination, not once per delivery."""
        if not destination.get("preset"):
            return NO_PRESET
        key = (destination["id"], destination.get("updated_at"))
        cached = self._presets.get(key)
        if cached is None:
            url, log_url, headers, params, hidden = request_parts(destination, self.rt.secrets)
            state = destination["preset"]
            # a user's preset is never read by a plugin that later registers the same name
            plugin_preset = None if state.get("origin") == "user" else self.rt.plugins.presets.get(state["name"])
            screen = plugin_preset.screen if plugin_preset is not None else None
            cached = PresetRequest(url, log_url, headers, params, plugin_preset,
                                   _safe_screen(plugin_preset.name, screen) if screen else None, hidden)
            self._presets = {key: cached}
        return cached

    def preset_verdict(self, preset: PresetRequest, response: Response, references: list[str]) -> Verdict | None:
        """The preset plugin's reading of the answer (a 200 that says it failed; per-message outcomes)."""
        if preset.plugin is None:
            return None
        try:
            return self.rt.plugins.classify(preset.plugin, response, references)
        except Exception:  # a plugin's bug must not lose the attempt: hookgate's own rule applies
            log.exception("classify_response failed for preset %s", preset.plugin.name)
            return None

    def _attempt_done(self, destination: dict[str, Any], delivery: dict[str, str], event: dict[str, Any],
                      response: Response, method: str, url: str, verdict: Verdict | None = None) -> str:
        """Record one delivery's attempt, schedule its retry, and do what follows it. ``verdict`` is a
        preset's classification of the response, which wins over hookgate's rule by status code."""
        attempt_no = int(delivery["attempts"]) + 1
        outcome = verdict.outcome if verdict is not None else classify(response)
        error = response.error
        if verdict is not None and verdict.reason:
            error = verdict.reason if not error else f"{error}; {verdict.reason}"
        attempt = {
            "attempt": attempt_no,
            "at": now_ms(),
            "method": method,
            "url": url,
            "status_code": response.status_code,
            "latency_ms": response.latency_ms,
            "outcome": outcome,
            "error": error,
            "response_body": response.body,
            "response_headers": response.headers,
        }
        status, due = outcome, None
        retryable = (outcome == "bounced" if verdict is not None
                     else is_retryable(outcome, response.status_code) or response.error_kind == "auth")
        if outcome != "delivered" and retryable:
            schedule = destination.get("retry_schedule")  # [] means: no retries
            delay = next_delay(attempt_no, DEFAULT_RETRY_SCHEDULE if schedule is None else schedule)
            if delay is None:
                status = "failed"
            else:
                asked = min(verdict.retry_after_s, MAX_RETRY_AFTER_S) \
                    if verdict is not None and verdict.retry_after_s is not None else retry_after_s(response.headers)
                if asked is not None:  # never sooner than the receiver asked, within a day
                    delay = max(delay, asked)
                due = now_ms() + int(delay * 1000)
        self._record(destination["id"], delivery, status, attempt, due)
        self.settled.append(outcome)
        if status == "failed":
            self.settled.append("failed")
        self.aftermath.after(destination, delivery, event, attempt, status, outcome)
        return outcome

    def send(self, destination: dict[str, Any], method: str, url: str, headers: dict[str, str],
              body: bytes | None, event_id: str, log_url: str | None = None,
              hidden: tuple[str, ...] = ()) -> tuple[Response, str]:
        """Send, with the destination's auth profile applied (and one retry with a fresh OAuth
        token on a 401). Returns the response and the URL to log (never one with credentials):
        ``log_url`` when the caller's URL carries a preset's secrets, which ``hidden`` lists so that
        an error text (a connection error names the URL) does not show them."""
        response, shown_url = self._send(destination, method, url, headers, body, event_id, log_url)
        if hidden:  # a connection error names the URL; a receiver may echo the request
            response.error = scrub(response.error, hidden)
            response.body = scrub(response.body, hidden)
            response.headers = {k: scrub(v, hidden) for k, v in response.headers.items()}
        return response, shown_url

    def _send(self, destination: dict[str, Any], method: str, url: str, headers: dict[str, str],
              body: bytes | None, event_id: str, log_url: str | None = None) -> tuple[Response, str]:
        log_url = log_url or url
        timeout = float(destination["timeout_s"])
        if (self.settings.https_only or destination.get("https_only")) and not url.lower().startswith("https:"):
            return Response(None, error="refused: only https URLs are allowed (https_only)",
                            error_kind="invalid"), log_url
        profile_id = destination.get("auth_profile_id")
        if not profile_id:
            return self.rt.sender.send(method, url, headers, body, timeout), log_url
        profile = AuthProfileStore(self.db, self.rt.secrets).find(profile_id)
        if profile is None:
            return Response(None, error="its auth profile was deleted", error_kind="invalid"), log_url
        for first in (True, False):
            try:
                prepared = apply_auth(profile, self.rt.secrets, self.db, method=method, url=url, headers=dict(headers),
                                      body=body, event_id=event_id,
                                      allowed_networks=self.settings.allowed_networks, timeout=timeout)
            except DeliveryError as exc:
                kind = "auth" if (exc.details or {}).get("retryable") else "invalid"
                return Response(None, error=f"auth: {exc.message}", error_kind=kind), log_url
            response = self.rt.sender.send(method, prepared.url, prepared.headers, body, timeout,
                                           cert=prepared.cert, verify=prepared.verify)
            if first and response.status_code == 401 and handle_unauthorized(profile, self.db, prepared):
                continue
            return response, prepared.safe_url if log_url == url else log_url
        return response, prepared.safe_url if log_url == url else log_url

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
                                            created, due, int(self.settings.event_retention_s), ATTEMPTS_KEPT,
                                            self.holder))
        delivery["status"] = status
