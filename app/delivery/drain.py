"""``drain_destination``: the RQ job that sends a destination's pending deliveries.

One job drains many deliveries (DESIGN.md: RQ costs ~60 Redis commands per job; a pooled session
sends far faster than RQ can run jobs). It leases a chunk, renders and sends each delivery, hands
each outcome to the recorder (written in the background while the next request goes out), and stops
when nothing is due (atomically with clearing the destination's wake flag) or when its time budget
is spent, in which case it enqueues its successor so other destinations get their turn.

Each delivery goes through the same steps, each a method here or a module of its own:
breaker (``breaker.py``: a paused destination's job ends at once; a half-open one sends one probe) →
take (``queue.take``, ``_load``) → render (``_render``, ``request.py``; a batch: ``batch.py``) →
authenticate and send (``dispatch.py``) → classify (``classify.classify_attempt``) → record (``_record``,
``recorder.py``) → follow-ups (``followups.py``: outcome events, fail branch, breaker, statistics).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

from .. import runtime
from ..deliveries import as_record, queue_read
from ..destinations import DestinationStore
from ..logs import log_attempt
from ..policies import PolicyStore, Throttle
from ..presets import Verdict
from ..rendering import Rendered, RenderError, render_delivery
from ..store import keys, now_ms
from . import queue as pending
from .batch import render_batch
from .breaker import OPEN, PAUSED, PROBE, Breaker, State
from .classify import classify_attempt
from .dispatch import Dispatcher
from .engine import Engine, Lanes, current_engine
from .followups import FAILURES, FollowUps
from .http import Response
from .outage import STORE_ERRORS
from .recorder import Recorder, outcome_writes
from .request import Outgoing, PresetRequest, Presets, outgoing, request_headers

__all__ = ["drain_destination", "run_lane", "Drainer"]

log = logging.getLogger(__name__)

ATTEMPTS_KEPT = 50
LEASE_MARGIN_S = 5.0
MIN_LANE_CHUNK = 10  # a round's Redis work (take, load, settle) is shared by at least this many deliveries

Member = tuple[dict[str, str], dict[str, Any]]  # a leased delivery of a batch, and its event


def drain_destination(*destination_ids: str) -> dict[str, int]:
    """RQ job: send what is due for these destinations (a wake groups up to ``queue.WAKE_GROUP`` in one
    job). In a worker with an engine (``hookgate worker``) each destination is handed to it and the job
    ends at once; otherwise (a bare RQ worker) the job drains them here, one after another, one request
    at a time. Returns counts by outcome."""
    engine = current_engine()
    if engine is not None:
        engine.adopt(list(destination_ids))
        return {"adopted": len(destination_ids)}
    counts: Counter[str] = Counter()
    for destination_id in destination_ids:
        counts.update(Drainer(runtime.current()).drain(destination_id))
    return dict(counts)


def run_lane(engine: Engine, lanes: Lanes, lane: int) -> None:
    """One of a destination's lanes in the engine (engine.py): rounds until it leaves or the run ends.
    A store outage does not end it: it waits for the store (outage.py), gives back what it had taken
    and not sent, takes the wake flag again if it lapsed meanwhile, and goes on."""
    did = lanes.destination_id
    while True:
        drainer = Drainer(engine.rt, lanes=lanes, lane=lane, recorder=engine.recorder)
        try:
            drainer.drain(did)
            return
        except STORE_ERRORS as exc:
            if not engine.outage.wait(exc):
                return
        with contextlib.suppress(*STORE_ERRORS):  # gone again: the next round waits once more
            drainer.give_back(did)
            pending.reclaim_flag(engine.rt.db, did, engine.flag_ttl_ms)


def _unsent(error: str) -> Response:
    """The response of a request that could not be made (it did not render, the job failed)."""
    return Response(None, error=error, error_kind="invalid")


def _place(delivery: dict[str, str], ordered: bool = False) -> int:
    """Where a delivery stands in its destination's line: when it came due (an ordered destination's
    line is the order events came in, whatever their retries)."""
    return int(delivery["created_at"] if ordered else delivery.get("next_attempt_at") or delivery["created_at"])


def _congested(response: Response) -> bool:
    """An answer that says the receiver has too much: the lanes' limit is cut."""
    return response.status_code in (429, 503) or response.error_kind in ("timeout", "connection")


def _ids(destination: dict[str, Any], delivery: dict[str, str], event: dict[str, Any]) -> dict[str, Any]:
    """The ids a log line about this delivery carries (``extra=``)."""
    return {"delivery_id": delivery["id"], "destination_id": destination["id"], "event_id": event.get("id")}


def _tally(counts: dict[str, int], outcomes: list[str]) -> None:
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1


class Drainer:
    def __init__(self, rt: runtime.Runtime, *, lanes: Lanes | None = None, lane: int = 0,
                 recorder: Recorder | None = None):
        self.rt = rt
        self.db = rt.db
        self.settings = rt.settings
        self.lanes = lanes  # in the engine: the destination's lanes, this one numbered ``lane``
        self.lane = lane
        self.destinations = DestinationStore(rt.db)
        self.own_recorder = recorder is None
        self.recorder = recorder if recorder is not None else Recorder(rt.db)
        self.followups = FollowUps(rt)
        self.breaker = Breaker(rt.db)
        self.probing = False  # this round is the half-open breaker's one request
        self.presets = Presets(rt)
        self.dispatcher = Dispatcher(rt)
        self.throttle: Throttle | None = None
        self.holder = secrets.token_hex(8)  # this job's leases are its own (queue.py)
        self.settled: list[str] = []  # outcomes of this chunk, for statistics and the breaker
        self.latencies: list[float] = []  # its attempts' durations (ms), for /metrics
        self.hold_until: int | None = None  # ordered: a retry holds the line behind it until then (ms)
        self.chunk: dict[str, dict[str, str]] = {}  # the records of the chunk being sent, by id
        self.taken: list[str] = []  # the ids of the last chunk or batch leased
        self.ordered = False
        self._deadline = float("inf")

    @property
    def deadline(self) -> float:
        return self.lanes.deadline if self.lanes is not None else self._deadline

    def drain(self, destination_id: str) -> dict[str, int]:
        try:
            return self._drain(destination_id)
        finally:
            if self.own_recorder:
                self.recorder.close()
            else:
                self.recorder.flush()
            if self.throttle is not None:
                self.throttle.release()

    # -- the job: one round after another until nothing is due or the budget is spent ---------------
    def _drain(self, destination_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        self._deadline = time.monotonic() + self.settings.drain_budget_s
        while True:
            if self.lanes is not None and not self.lanes.stays(self.lane):
                return counts
            destination, breaker = self._round_start(destination_id)
            if destination is not None and not self._may_send(destination, breaker):
                return counts
            timeout = float(destination["timeout_s"]) if destination else 1.0
            lease_s = max(self.settings.lease_s, timeout + LEASE_MARGIN_S)
            if destination is not None and not self._admitted(destination, lease_s):
                return counts
            if destination is not None and destination.get("batch"):
                going_on = self._batch_round(destination, lease_s, counts)
            else:
                going_on = self._chunk_round(destination_id, destination, timeout, lease_s, counts)
            if not going_on:
                return counts

    def _round_start(self, destination_id: str) -> tuple[dict[str, Any] | None, State]:
        """What a round starts from, in one round trip: the configuration's version (routing for
        outcome events and the fail branch, once per chunk), the destination and its breaker."""
        with self.db.pipeline(transaction=False) as pipe:
            pipe.get(keys.config_version)
            pipe.hget(keys.destinations, destination_id)
            pipe.hgetall(keys.breaker(destination_id))
            version, raw, breaker = pipe.execute()
        self.rt.router.refresh(version)
        return (json.loads(raw) if raw is not None else None), State.parse(breaker)

    def _may_send(self, destination: dict[str, Any], breaker: State) -> bool:
        """Whether this round may send: not if the destination is disabled (its backlog waits;
        enabling it puts it back on the due list) or its breaker is open (held until the cool-down
        ends). A half-open breaker lets this round send its probe."""
        if not destination.get("enabled", True):
            self.db.zrem(keys.due, destination["id"])
            self.db.delete(keys.wake(destination["id"]))
            return False
        gate = self.breaker.gate(destination, breaker)
        if gate.action == PAUSED and gate.until is not None:
            if self.lanes is not None and not self.lanes.last(self.lane):
                return False  # the last lane holds the destination
            pending.hold(self.db, destination["id"], gate.until)
            return False
        self.probing = gate.action == PROBE
        # A half-open breaker's one probe: the one lane left sends it, the others leave.
        return not (self.probing and self.lanes is not None and not self.lanes.last(self.lane))

    def _chunk_round(self, destination_id: str, destination: dict[str, Any] | None, timeout: float,
                     lease_s: float, counts: dict[str, int]) -> bool:
        """Take a chunk of due deliveries (one: a probe) and send them one by one. False: the job ends."""
        lease_ms = int(lease_s * 1000)
        count = 1 if self.probing else self._chunk_size()
        ids = self.taken = pending.take(self.db, destination_id, count, lease_ms, lease_ms, self.holder)
        if not ids:
            return self._more_came(destination_id)
        if self.lanes is not None and not self.probing:
            self.lanes.grow(len(ids) == count)  # a full chunk: there is a backlog other lanes can share
        self._send_all(destination_id, destination, ids, timeout, lease_s, counts)
        self.recorder.flush()  # what comes next reads the state these outcomes wrote
        if self.hold_until is not None:  # ordered: the line waits for its head's retry
            until, self.hold_until = self.hold_until, None
            if until > now_ms():
                pending.hold(self.db, destination_id, until)
                return False
        if destination is not None:
            self._settle(destination)
            current = self.destinations.find(destination_id)
            if current is None or not current.get("enabled", True):
                self._stop_lanes()
                return True  # disabled (failing too long) or a 410: the next round's first check ends the job
        if self._yielded(destination_id):
            return False
        # All that was due: end now rather than after a round that takes nothing, and hand over (a job
        # at the back of the queue) only when more came due past the budget.
        if len(ids) < count and not self._more_came(destination_id):
            return False
        return not self._handed_over(destination_id, lease_s)

    def _more_came(self, destination_id: str) -> bool:
        """The chunk was all that was due: the last lane ends the run unless more came due meanwhile
        (the others leave to it). True: go on."""
        if self.lanes is not None and not self.lanes.last(self.lane):
            return False
        return not pending.finish(self.db, destination_id)

    def _send_all(self, destination_id: str, destination: dict[str, Any] | None, ids: list[str], timeout: float,
                  lease_s: float, counts: dict[str, int]) -> None:
        """Send the chunk; in the engine, the breaker hears of each failure as it comes."""
        early = destination is not None and self.lanes is not None and not self.probing
        for outcome in self._send_chunk(destination_id, destination, ids, timeout, lease_s):
            _tally(counts, [outcome])
            if early and outcome in FAILURES and destination is not None:
                self._settle_now(destination)

    def _settle_now(self, destination: dict[str, Any]) -> None:
        """In the engine, the breaker hears of each failure at once: a trip stops every lane of the
        destination before its next request, not at the end of their chunks."""
        self._settle(destination)
        if self.breaker.load(destination["id"]).state == OPEN:
            self._stop_lanes()

    def _chunk_size(self) -> int:
        """A chunk per round: all of ``HOOKGATE_DRAIN_CHUNK`` for a lone lane, a share of it per lane
        when several send to one destination (so that they share its backlog)."""
        chunk = self.settings.drain_chunk
        if self.lanes is None:
            return chunk
        return min(chunk, max(MIN_LANE_CHUNK, chunk // max(1, self.lanes.limit)))

    def _stop_lanes(self) -> None:
        if self.lanes is not None:
            self.lanes.stop()

    def _batch_round(self, destination: dict[str, Any], lease_s: float, counts: dict[str, int]) -> bool:
        """Send one batch, if one is due. False: the job ends."""
        sent = self._drain_batch(destination, lease_s)
        if sent is None:
            return False  # nothing due, or a partial batch waiting for more
        if self._yielded(destination["id"]):
            return False
        _tally(counts, sent)
        self.recorder.flush()
        self._settle(destination)
        return not self._handed_over(destination["id"], lease_s)

    def _settle(self, destination: dict[str, Any]) -> None:
        """Follow-ups of a chunk (statistics, the breaker), once its outcomes are written."""
        self.followups.after_chunk(destination, self.settled, probe=self.probing, latencies_ms=self.latencies)
        self.settled = []
        self.latencies = []
        self.probing = False

    def _yielded(self, destination_id: str) -> bool:
        """The policy's rate is spent: wait for it (the ticker wakes the destination), do not spin."""
        if self.throttle is None or not self.throttle.yielded:
            return False
        self._yield(destination_id, self.throttle.yielded)
        return True

    def _handed_over(self, destination_id: str, lease_s: float) -> bool:
        """Budget spent: hand over to a fresh job at the back of the queue (the wake flag stays ours;
        in the engine, the last lane hands over, the others leave)."""
        if time.monotonic() <= self.deadline:
            return False
        if self.lanes is not None and not self.lanes.last(self.lane):
            return True
        self.db.pexpire(keys.wake(destination_id), int(lease_s * 1000))
        self._enqueue_successor(destination_id)
        return True

    # -- take ------------------------------------------------------------------------------------------
    def _load(self, ids: list[str]) -> tuple[list[dict[str, str]], dict[str, str | None]]:
        """The leased deliveries (empty where one expired) and their events' JSON by event id."""
        with self.db.pipeline(transaction=False) as pipe:
            for delivery_id in ids:
                queue_read(pipe, delivery_id)
            deliveries = [as_record(values) for values in pipe.execute()]
        event_ids = list(dict.fromkeys(d["event_id"] for d in deliveries if d))
        found = cast(list[str | None], self.db.mget([keys.event(e) for e in event_ids])) if event_ids else []
        events = dict(zip(event_ids, found, strict=True))
        return deliveries, events

    # -- throughput policy -------------------------------------------------------------------------------
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
        if self.lanes is not None and not self.lanes.last(self.lane):
            return False  # the policy is full: this lane leaves, the others go on with their slots
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
        """Give leased deliveries that were not sent back to pending, each due when it was, so that
        it keeps its place in the line (``self.chunk``: the records of the chunk being sent)."""
        self.recorder.flush()
        scores = {i: _place(self.chunk[i], self.ordered) for i in remaining if self.chunk.get(i)}
        pending.release(self.db, destination_id, remaining, self.holder, scores=scores)

    def give_back(self, destination_id: str) -> None:
        """After a store outage cut the job short: what it leased and did not record goes back to
        pending, each in its place (what it recorded is no longer its lease, and stays as recorded)."""
        self._release(destination_id, self.taken)

    def _enqueue_successor(self, destination_id: str) -> None:
        self.rt.queue.enqueue_call(
            drain_destination, args=(destination_id,), timeout=pending.drain_job_timeout(self.settings),
            result_ttl=0, failure_ttl=86400, description=f"drain {destination_id}",
        )

    # -- one delivery at a time ------------------------------------------------------------------------
    def _send_chunk(self, destination_id: str, destination: dict[str, Any] | None, ids: list[str],
                    timeout: float, lease_s: float) -> Iterator[str]:
        deliveries, events = self._load(ids)
        self.chunk = dict(zip(ids, deliveries, strict=True))
        self.ordered = bool(destination and destination.get("ordered"))
        lease_until = time.monotonic() + lease_s
        lost: set[str] = set()
        for position, (delivery_id, delivery) in enumerate(zip(ids, deliveries, strict=True)):
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
            if self._stops_before(position):
                self._release(destination_id, ids[position:])
                return
            if not delivery:  # expired under retention while it waited
                pending.drop(self.db, destination_id, [delivery_id], self.holder)
                continue
            raw_event = events.get(delivery["event_id"])
            if destination is not None and raw_event is not None and not self._gate(destination_id, ids[position:]):
                return
            if destination is None:
                yield self._close(destination_id, delivery, "skipped", "the destination was deleted")
            elif raw_event is None:
                yield self._close(destination_id, delivery, "failed", "the event expired before it was delivered")
            else:
                yield self._attempt_safely(destination, delivery, json.loads(raw_event))

    def _stops_before(self, position: int) -> bool:
        """Whether the chunk stops before its delivery at ``position`` (the rest go back to pending,
        in their places): ordered, the line waits behind a retry; the destination stopped (a 410, a
        DELETE, a trip); or the budget is spent (the rest wait for the successor)."""
        return (self.hold_until is not None or (self.lanes is not None and self.lanes.stopped)
                or (position > 0 and time.monotonic() > self.deadline))

    def _attempt_safely(self, destination: dict[str, Any], delivery: dict[str, str], event: dict[str, Any]) -> str:
        """An attempt whose unexpected failure is recorded as an error, not left to loop: a delivery
        that crashed its job would come back with its lease, crash it again, and never end."""
        try:
            return self._attempt(destination, delivery, event)
        except Exception as exc:
            log.exception("delivery %s failed unexpectedly", delivery["id"], extra=_ids(destination, delivery, event))
            return self._attempt_done(destination, delivery, event, _unsent(f"internal: {type(exc).__name__}: {exc}"),
                                      destination["method"], destination["url"])

    def _attempt(self, destination: dict[str, Any], delivery: dict[str, str], event: dict[str, Any]) -> str:
        """One delivery: render, authenticate and send, then classify, record and follow up."""
        try:
            preset = self.presets.request(destination)
            reason = preset.screen(event, preset.params) if preset.screen is not None else None
            if reason:
                return self._close(destination["id"], delivery, "skipped", reason)
            request = self._render(destination, delivery, event, preset)
        except RenderError as exc:
            return self._attempt_done(destination, delivery, event, _unsent(f"render: {exc}"), destination["method"],
                                      destination["url"])
        response, log_url = self.dispatcher.send(destination, request.method, request.url, request.headers,
                                                 request.body, event["id"], request.log_url, preset.hidden)
        verdict = self.presets.verdict(preset, response, [event["id"]])
        return self._attempt_done(destination, delivery, event, response, request.method, log_url,
                                  verdict.for_item(event["id"]) if verdict is not None else None)

    def _render(self, destination: dict[str, Any], delivery: dict[str, str], event: dict[str, Any],
                preset: PresetRequest) -> Outgoing:
        """The request of one delivery; every copy of it carries the event's id as ``webhook-id``."""
        rendered = render_delivery(destination, event, max_bytes=self.settings.template_max_bytes,
                                   timeout_s=self.settings.template_timeout_s, params=preset.params)
        headers = request_headers(rendered.content_type, preset.headers, destination.get("headers", {}), {
            "webhook-id": event["id"],
            "X-Hookgate-Delivery": delivery["id"],
            "X-Hookgate-Attempt": str(int(delivery["attempts"]) + 1),
        })
        return outgoing(destination, preset, rendered, headers)

    # -- batches ---------------------------------------------------------------------------------------
    def _drain_batch(self, destination: dict[str, Any], lease_s: float) -> list[str] | None:
        """Send one batch if a full one is due, or a partial one that waited ``max_wait_s``.
        Returns the outcomes, [] to look again, or None when the job should end."""
        state = self._batch_state(destination)
        if state != "due":
            return [] if state == "again" else None
        did = destination["id"]
        lease_ms = int(lease_s * 1000)
        ids = self.taken = pending.take(self.db, did, int(destination["batch"]["size"]), lease_ms, lease_ms,
                                        self.holder)
        outcomes: list[str] = []
        members = self._batch_members(did, ids, outcomes)
        try:
            preset = self.presets.request(destination)
        except RenderError as exc:  # its secrets do not decrypt, or its URL does not render
            return outcomes + [self._attempt_done(destination, delivery, event, _unsent(f"render: {exc}"),
                                                  destination["method"], destination["url"])
                               for delivery, event in members]
        members = self._screened(did, preset, members, outcomes)
        if not members:
            return outcomes
        rendered, included = self._render_batch(destination, preset, members, outcomes)
        if rendered is None or not included:
            return outcomes
        if not self._gate(did, [delivery["id"] for delivery, _ in included]):
            return outcomes  # the policy's rate: the batch goes back to pending and waits
        self._send_batch(destination, preset, rendered, included, outcomes)
        return outcomes

    def _batch_state(self, destination: dict[str, Any]) -> str:
        """``due`` (a batch is to be sent now), ``again`` (look again: more came in) or ``end``
        (nothing due, or a partial batch waits for more: the destination is woken when it is due)."""
        did = destination["id"]
        batch = destination["batch"]
        size, max_wait_ms = int(batch["size"]), int(float(batch.get("max_wait_s", 5.0)) * 1000)
        now = now_ms()
        with self.db.pipeline(transaction=False) as pipe:
            pipe.zcount(keys.pending(did), "-inf", now)
            pipe.zrange(keys.pending(did), 0, 0, withscores=True)
            due_count, head = pipe.execute()
        if not due_count:
            return "end" if pending.finish(self.db, did) else "again"
        oldest = int(head[0][1])
        if due_count < size and now - oldest < max_wait_ms:
            self._yield(did, oldest + max_wait_ms - now)
            return "end"
        return "due"

    def _batch_members(self, destination_id: str, ids: list[str], outcomes: list[str]) -> list[Member]:
        """The leased deliveries that can go in the batch; those that cannot are settled here."""
        deliveries, raw_events = self._load(ids)
        members: list[Member] = []
        for delivery_id, delivery in zip(ids, deliveries, strict=True):
            raw_event = raw_events.get(delivery["event_id"]) if delivery else None
            if not delivery:
                pending.drop(self.db, destination_id, [delivery_id], self.holder)
            elif raw_event is None:
                outcomes.append(self._close(destination_id, delivery, "failed",
                                            "the event expired before it was delivered"))
            else:
                members.append((delivery, json.loads(raw_event)))
        return members

    def _screened(self, destination_id: str, preset: PresetRequest, members: list[Member],
                  outcomes: list[str]) -> list[Member]:
        """The members the preset's plugin lets through; the others are skipped, with its reason."""
        if preset.screen is None:
            return members
        kept = []
        for delivery, event in members:
            reason = preset.screen(event, preset.params)
            if reason:
                outcomes.append(self._close(destination_id, delivery, "skipped", reason))
            else:
                kept.append((delivery, event))
        return kept

    def _render_batch(self, destination: dict[str, Any], preset: PresetRequest, members: list[Member],
                      outcomes: list[str]) -> tuple[Rendered | None, list[Member]]:
        """The batch body and the members in it; a member whose item did not render records the error."""
        try:
            rendered, item_errors = render_batch(destination, [event for _, event in members],
                                                 max_bytes=self.settings.template_max_bytes,
                                                 timeout_s=self.settings.template_timeout_s, params=preset.params)
        except RenderError as exc:
            rendered, item_errors = None, {n: f"render: root: {exc}" for n in range(len(members))}
        for position, error in item_errors.items():
            outcomes.append(self._attempt_done(destination, *members[position], _unsent(error),
                                               destination["method"], destination["url"]))
        return rendered, [member for n, member in enumerate(members) if n not in item_errors]

    def _send_batch(self, destination: dict[str, Any], preset: PresetRequest, rendered: Rendered,
                    included: list[Member], outcomes: list[str]) -> None:
        """Send the batch, then classify, record and follow up each of its deliveries."""
        # The same deliveries batched again (a retry) carry the same webhook-id.
        batch_id = "bat_" + hashlib.sha256("|".join(sorted(d["id"] for d, _ in included)).encode()).hexdigest()[:24]
        headers = request_headers(rendered.content_type, preset.headers, destination.get("headers", {}),
                                  {"webhook-id": batch_id, "X-Hookgate-Batch-Size": str(len(included))})
        method = destination["method"]
        response, url = self.dispatcher.send(destination, method, preset.url or destination["url"], headers,
                                             rendered.body, batch_id, preset.log_url, preset.hidden)
        verdict = self.presets.verdict(preset, response, [event["id"] for _, event in included])
        for delivery, event in included:
            try:
                outcomes.append(self._attempt_done(destination, delivery, event, response, method, url,
                                                   verdict.for_item(event["id"]) if verdict is not None else None))
            except Exception as exc:
                log.exception("recording delivery %s of a batch failed", delivery["id"],
                              extra=_ids(destination, delivery, event))
                outcomes.append(self._attempt_done(destination, delivery, event,
                                                   _unsent(f"internal: {type(exc).__name__}: {exc}"), method, url))

    # -- classify, record, follow up -------------------------------------------------------------------
    def _attempt_done(self, destination: dict[str, Any], delivery: dict[str, str], event: dict[str, Any],
                      response: Response, method: str, url: str, verdict: Verdict | None = None) -> str:
        """Record one delivery's attempt, schedule its retry, and do what follows it. ``verdict`` is a
        preset's classification of the response, which wins over hookgate's rule by status code."""
        attempt_no = int(delivery["attempts"]) + 1
        stamp = now_ms()
        decision = classify_attempt(response, verdict, attempt_no, destination.get("retry_schedule"), stamp)
        due = shown_due = decision.due
        ordered = bool(destination.get("ordered"))
        if due is not None and self.probing:
            # A failed probe keeps its place at the head of the line: the next probe carries it again.
            due = shown_due = _place(delivery, ordered)
        elif due is not None and ordered:
            # An ordered destination's retry keeps its place too, and the line waits behind it.
            due = _place(delivery, ordered)
            self.hold_until = shown_due
        if self.lanes is not None:
            self.lanes.answered(_congested(response))
            if response.status_code == 410:
                self.lanes.stop()
        attempt = {
            "attempt": attempt_no,
            "at": stamp,
            "method": method,
            "url": url,
            "status_code": response.status_code,
            "latency_ms": response.latency_ms,
            "outcome": decision.outcome,
            "error": decision.error,
            "response_body": response.body,
            "response_headers": response.headers,
        }
        self._record(destination["id"], delivery, decision.status, attempt, due, shown_due=shown_due)
        log_attempt(destination["id"], delivery, event, decision.status, attempt)
        self.settled.append(decision.outcome)
        self.latencies.append(response.latency_ms)
        if decision.status == "failed":
            self.settled.append("failed")
        self.followups.after_attempt(destination, delivery, event, attempt, decision.status, decision.outcome)
        return decision.outcome

    def _close(self, destination_id: str, delivery: dict[str, str], status: str, reason: str) -> str:
        """End a delivery without an attempt (skipped, or failed: its event expired)."""
        self._record(destination_id, delivery, status, None, None, reason=reason)
        return status

    def _record(self, destination_id: str, delivery: dict[str, str], status: str, attempt: dict[str, Any] | None,
                due: int | None, reason: str | None = None, shown_due: int | None = None) -> None:
        """``due``: its place in pending (when it is due, or where it waits in line); ``shown_due``: when
        it is next tried, if that differs."""
        delivery_id = delivery["id"]
        fields: dict[str, Any] = {"status": status, "updated_at": now_ms(),
                                  "next_attempt_at": (shown_due if shown_due is not None else due) or ""}
        if attempt is not None:
            fields.update(attempts=attempt["attempt"], last_status_code=attempt["status_code"] or "",
                          last_error=attempt["error"] or "")
        if reason is not None:
            fields["last_error"] = reason
        logged = (attempt["attempt"], json.dumps(attempt, separators=(",", ":"))) if attempt is not None else None
        self.recorder.submit(outcome_writes(destination_id, delivery_id, status, fields, logged,
                                            int(delivery["created_at"]), due, ATTEMPTS_KEPT, self.holder))
        delivery["status"] = status
