"""The worker's delivery engine: many destinations at once, many requests in flight to each.

A drain job (RQ) no longer holds its worker for one destination: it hands the destination to this
process's ``Engine`` and ends. The engine runs each destination as a set of *lanes*, each lane a
``Drainer`` sending one request at a time (render → authenticate → send → classify → record →
follow-ups, as before), so a destination has as many requests in flight as it has lanes, and the
process as many as all its lanes together, at most ``HOOKGATE_WORKER_CONCURRENCY``. The requests
themselves are in flight together on the sender's one event loop (``async_http.SyncBridge``); a
lane's thread only waits for its answer.

How many lanes a destination gets is adaptive (``Lanes``), as TCP's window is: it starts at
``START_LIMIT``, doubles each time as many deliveries as the limit succeed in a row until the first
sign of overload, then grows by one; it halves on a 429, a 503, a timeout or a connection failure (once per
window: the answers to what was in flight when it was cut do not cut it again); never above the destination's
``max_in_flight`` (1 when ``ordered``, or batched), and a throughput policy's ``concurrency`` caps
the lanes of every worker together (a lane that gets no slot leaves). The limit and the lanes in
flight are published per worker for ``GET /v1/destinations/<id>/stats``.

Who owns what: the destination's wake flag (queue.py) belongs to its lanes while any runs; only the
last lane to find nothing due clears it (``queue.finish``), so ingest enqueues a new job only once the
engine is done, and a job that arrives meanwhile (``adopt``) makes the lanes look again. The flag
lives a lease from when the engine took it (``queue.own``), and the engine's watcher extends the
flags of every destination in flight here each ``KEEP_EVERY_S`` (``queue.keep``): a flag outlives
the worker that held it by at most the lease, whether it was killed, lost its store, or both. Each lane's
leases are its own (its ``Drainer.holder``). A worker killed with hundreds of requests in flight loses
nothing: their leases expire and the ticker gives them back (at-least-once, same ``webhook-id``).
A store outage stops no thread here: each waits for the store (outage.py) and goes on.

Stopping: a 410, a disable, a DELETE or a breaker trip stops every lane of the destination before its
next request (``Lanes.stopped``, checked before each send); changes made through the API are seen by
the engine's watcher within ``WATCH_EVERY_S`` (one GET of the configuration version per interval).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..destinations import DestinationStore
from ..runtime import Runtime
from ..store import keys
from . import queue as pending
from .outage import STORE_ERRORS, Outage
from .recorder import Recorder

__all__ = ["Engine", "Lanes", "concurrency", "current_engine", "install_engine", "START_LIMIT"]

log = logging.getLogger(__name__)

# One lane's work: drain.run_lane (the drain imports this module; the worker hands its function in).
LaneRunner = Callable[["Engine", "Lanes", int], None]

START_LIMIT = 4
GROW_AT_ONCE = 8
WATCH_EVERY_S = 0.1
KEEP_EVERY_S = 1.0  # how often a live engine extends the wake flags of the destinations it drains
PUBLISH_EVERY_S = 0.5
STATE_TTL_S = 30


def ceiling_of(destination: dict[str, Any] | None) -> int:
    """The most lanes a destination may have in one worker."""
    if destination is None or destination.get("ordered") or destination.get("batch"):
        return 1
    return max(1, int(destination.get("max_in_flight") or 16))


class Lanes:
    """One destination's lanes in this worker, and its adaptive limit."""

    def __init__(self, engine: Engine, destination_id: str, ceiling: int, learnt: tuple[int, bool] | None = None):
        self.engine = engine
        self.destination_id = destination_id
        self.lock = threading.Lock()
        self.members: set[int] = set()
        self.ceiling = ceiling
        self.limit = min(learnt[0] if learnt else START_LIMIT, ceiling)
        self.stopped = False  # every lane stops before its next request (a 410, a DELETE, a trip)
        self.more = False  # a drain job arrived while the lanes ran: look again before ending
        self.backlog = False  # the last chunk taken was full: more is waiting
        self.deadline = time.monotonic() + engine.rt.settings.drain_budget_s
        self._successes = 0
        self._slow_start = learnt[1] if learnt else True  # doubling until the first sign of overload
        self._in_window = 0  # answers still due from before the last cut (they cannot cut it again)
        self._published = 0.0
        self._next_lane = 0

    # -- lanes coming and going ----------------------------------------------------------------------
    def spawn(self) -> None:
        """One more lane (the caller holds the lock)."""
        self._next_lane += 1
        lane = self._next_lane
        self.members.add(lane)
        self.engine.submit(self, lane)

    def start(self) -> None:
        """A run's first lane (the caller holds the lock). If its first chunk is full, ``grow`` adds
        more, and each new lane's full chunk more again, up to the limit the run starts from (what the
        destination's last run here learnt): a destination with one delivery due costs one lane."""
        self.spawn()

    def grow(self, backlog: bool) -> None:
        """After a lane took its chunk: if it was full (``backlog``: more is waiting), more lanes, up to
        the limit (a few at a time: each new lane's first round shows whether the backlog lasts)."""
        with self.lock:
            self.backlog = backlog
            if backlog and time.monotonic() <= self.deadline:
                self._fill()
        self.publish()

    def _fill(self) -> None:
        """Lanes up to the limit, a few at a time (the caller holds the lock)."""
        if not self.stopped:
            for _ in range(min(GROW_AT_ONCE, self.limit - len(self.members))):
                self.spawn()

    def stays(self, lane: int) -> bool:
        """Before a lane's next round: whether it goes on. A lane above the limit leaves, as do all but
        the last once the destination stopped (the last one goes on, to find out why and end it)."""
        with self.lock:
            if lane not in self.members:
                return False
            if len(self.members) == 1:
                self.stopped = False
                return True
            if self.stopped or len(self.members) > self.limit:
                self.members.discard(lane)
                return False
            return True

    def last(self, lane: int) -> bool:
        """Whether ``lane`` is the only one left; if not, it leaves (another lane ends the run)."""
        with self.lock:
            if len(self.members) <= 1:
                return True
            self.members.discard(lane)
            return False

    def exit(self, lane: int) -> None:
        """A lane ended. The run ends with its last lane, unless a job came meanwhile: then a new lane
        looks again (the wake flag is the lanes' until then)."""
        with self.lock:
            self.members.discard(lane)
            if self.members:
                return
            if self.more and not self.engine.closing:
                self.more = False
                self.stopped = False
                self.deadline = time.monotonic() + self.engine.rt.settings.drain_budget_s
                self.start()
                return
        self.engine.ended(self, (self.limit, self._slow_start))
        self.publish(force=True)

    def adopt(self) -> bool:
        """A drain job for a destination already running here: look again at the end. False when the
        run has ended (the caller starts a new one)."""
        with self.lock:
            if not self.members:
                return False
            self.more = True
            return True

    def stop(self) -> None:
        self.stopped = True

    # -- the adaptive limit --------------------------------------------------------------------------
    def answered(self, congested: bool) -> None:
        """One request's answer: a success counts toward growth; a sign of overload halves the limit."""
        with self.lock:
            self._in_window = max(0, self._in_window - 1)
            if congested:
                self._successes = 0
                self._slow_start = False
                if not self._in_window and self.limit > 1:
                    self.limit = max(1, self.limit // 2)
                    # The answers to what was in flight when it was cut say nothing of the new limit.
                    self._in_window = len(self.members)
                return
            self._successes += 1
            if self._successes >= self.limit:
                self._successes = 0
                self.limit = min(self.ceiling, self.limit * 2 if self._slow_start else self.limit + 1)
                if self.backlog:
                    self._fill()  # the lanes the higher limit allows start now, not after a round

    def refresh(self, ceiling: int) -> None:
        with self.lock:
            self.ceiling = ceiling
            self.limit = min(self.limit, ceiling)

    def publish(self, force: bool = False) -> None:
        """This worker's limit and lanes for the destination, for its stats (at most twice a second)."""
        now = time.monotonic()
        if not force and now - self._published < PUBLISH_EVERY_S:
            return
        self._published = now
        state = json.dumps({"limit": self.limit, "in_flight": len(self.members), "max_in_flight": self.ceiling})
        try:
            with self.engine.rt.db.pipeline(transaction=False) as pipe:
                if self.members:
                    pipe.hset(keys.concurrency(self.destination_id), self.engine.name, state)
                else:
                    pipe.hdel(keys.concurrency(self.destination_id), self.engine.name)
                pipe.expire(keys.concurrency(self.destination_id), STATE_TTL_S)
                pipe.execute()
        except Exception as exc:  # statistics must not stop deliveries
            log.debug("could not publish the concurrency of %s: %s", self.destination_id, exc)


class Engine:
    """A worker process's destinations in flight. ``adopt`` takes one from a drain job; ``close``
    waits for every lane to end (each ends its round, so nothing leased is left behind)."""

    def __init__(self, rt: Runtime, run_lane: LaneRunner, name: str | None = None, outage: Outage | None = None):
        self.rt = rt
        self.run_lane = run_lane
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.concurrency = rt.settings.worker_concurrency
        self.outage = outage or Outage(rt.settings)  # every thread here waits out a store outage in it
        self.flag_ttl_ms = int(rt.settings.lease_s * 1000)
        # one writer for every lane: outcomes are written in batches
        self.recorder = Recorder(rt.db, self.outage)
        self._pool = concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="hookgate-lane")
        self._lock = threading.Lock()
        self._runs: dict[str, Lanes] = {}
        self._learnt: dict[str, tuple[int, bool]] = {}  # destination → (limit, slow start) its last run ended with
        self._idle = threading.Condition(self._lock)
        self.closing = False
        self._watcher = threading.Thread(target=self._watch, name="hookgate-engine-watch", daemon=True)
        self._watcher.start()

    def adopt(self, destination_ids: list[str]) -> None:
        """Send what is due for the destinations (a drain job's), alongside every other destination in
        flight here (the job's wake flags are the engine's now: ``queue.own``; one script call and one
        read of their records for the whole job). Through a store outage it waits for the store."""
        while True:
            try:
                pending.own(self.rt.db, destination_ids, self.flag_ttl_ms)
                records = DestinationStore(self.rt.db).find_many(destination_ids)
                break
            except STORE_ERRORS as exc:
                if not self.outage.wait(exc):
                    raise
        for destination_id, destination in zip(destination_ids, records, strict=True):
            self._start(destination_id, destination)

    def _start(self, destination_id: str, destination: dict[str, Any] | None) -> None:
        with self._lock:
            run = self._runs.get(destination_id)
            if run is not None and run.adopt():
                return
            run = Lanes(self, destination_id, ceiling_of(destination), self._learnt.get(destination_id))
            self._runs[destination_id] = run
            with run.lock:
                run.start()

    def submit(self, run: Lanes, lane: int) -> None:
        self._pool.submit(self._lane, run, lane)

    def _lane(self, run: Lanes, lane: int) -> None:
        try:
            self.run_lane(self, run, lane)
        except Exception:
            log.exception("a lane of destination %s failed", run.destination_id,
                          extra={"destination_id": run.destination_id})
        finally:
            run.exit(lane)

    def ended(self, run: Lanes, learnt: tuple[int, bool]) -> None:
        """A destination's run ended; its next run starts from the limit this one learnt."""
        with self._lock:
            if self._runs.get(run.destination_id) is run:
                del self._runs[run.destination_id]
            if len(self._learnt) >= 100_000:
                self._learnt.clear()
            self._learnt[run.destination_id] = learnt
            self._idle.notify_all()

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(run.members) for run in self._runs.values())

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no destination is in flight here (tests, ``--burst``, shutting down)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._runs:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float | None = None) -> None:
        self.closing = True
        self.outage.stopped.set()  # a lane waiting for the store gives up (its leases expire)
        for run in list(self._runs.values()):
            run.deadline = 0.0  # every lane ends after its current request
        self.wait_idle(timeout)
        self._pool.shutdown(wait=True)
        self.recorder.close()

    def _watch(self) -> None:
        """Stop the lanes of a destination deleted or disabled through the API, within WATCH_EVERY_S;
        keep the wake flags of the destinations in flight here alive, every KEEP_EVERY_S."""
        seen = None
        kept = 0.0
        store = DestinationStore(self.rt.db)
        while not self.closing:
            time.sleep(WATCH_EVERY_S)
            try:
                if time.monotonic() - kept >= KEEP_EVERY_S:
                    pending.keep(self.rt.db, list(self._runs), self.flag_ttl_ms)
                    kept = time.monotonic()
                version = self.rt.db.get(keys.config_version)
                if version == seen:
                    continue
                seen = version
                for did, run in list(self._runs.items()):
                    destination = store.find(did)
                    if destination is None or not destination.get("enabled", True):
                        run.stop()
                    else:
                        run.refresh(ceiling_of(destination))
            except STORE_ERRORS as exc:
                self.outage.wait(exc)
            except Exception as exc:
                log.debug("engine watch: %s", exc)


def concurrency(db: Any, destination: dict[str, Any]) -> dict[str, Any]:
    """What ``/stats`` shows: the most in flight per worker, and each worker's limit and lanes now."""
    workers = {name: json.loads(state) for name, state in db.hgetall(keys.concurrency(destination["id"])).items()}
    return {"max_in_flight": ceiling_of(destination), "ordered": bool(destination.get("ordered")),
            "in_flight": sum(w["in_flight"] for w in workers.values()), "workers": workers}


_engine: Engine | None = None


def install_engine(engine: Engine | None) -> None:
    global _engine
    _engine = engine


def current_engine() -> Engine | None:
    return _engine
