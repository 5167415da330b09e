"""Riding out a store outage: a worker waits for Redis to answer again, and then goes on.

Every thread of ``hookgate worker`` that finds the store gone (RQ's loop, the ticker, each lane of
the engine, the recorder) waits in ``Outage.wait``: a PING after 0.1 s, then after twice as long
each time, up to ``MAX_DELAY_S``, so the worker delivers again within that of the store answering,
and a long outage costs the store one PING per thread every couple of seconds. The process logs the
outage once, when a thread first finds the store gone, and once when one finds it back, with how
long it lasted; not once per retry, nor for the stale connections that fail once right after.

What is in flight when the store goes stays with its owner: a lane keeps its leases, and when the
store is back it gives back what it took and did not send (``Drainer.give_back``) and goes on; an
outcome the recorder could not write is written when the store is back (the recorder's script does
nothing for a lease its job no longer holds, so writing one twice is harmless). Whatever a dead
process held comes back when its lease expires.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from rq.exceptions import StopRequested

from ..config import Settings
from ..store import open_probe

__all__ = ["Outage", "StoreDown", "STORE_ERRORS", "FIRST_DELAY_S", "MAX_DELAY_S"]

log = logging.getLogger(__name__)

# What says the store is not answering (a restart replaying its append-only file answers LOADING:
# redis-py's BusyLoadingError is a ConnectionError).
STORE_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 2.0
QUIET_S = 5.0  # a failure this soon after the store came back is the same outage (see ``Outage``)


class StoreDown(StopRequested):
    """The store stopped answering in the middle of RQ's loop: the worker leaves the loop, waits for
    the store, and enters it again. To RQ it is a stop (it leaves quietly): a ``redis`` error it
    would retry on its own schedule (one second, then two, four… up to a minute), logging each time,
    and any other error it would log as unhandled and quit."""


class Outage:
    """This process's view of the store: answering, or gone since when. ``stopped`` (the worker was
    asked to stop) ends every wait.

    Right after the store is back, a connection made before it went (idle in a pool meanwhile) still
    fails once: that is the same outage, not a new one, and is not logged unless the store is still
    not answering ``QUIET_S`` later."""

    def __init__(self, settings: Settings, stopped: threading.Event | None = None):
        self.probe = open_probe(settings)
        self.stopped = stopped or threading.Event()
        self._lock = threading.Lock()
        self._since: float | None = None  # gone since (monotonic), or None: answering
        self._announced = False  # this outage was logged (so its end is too)
        self._back_at = -QUIET_S  # when the last one ended
        self.outages = 0  # how many were logged (statistics, tests)

    @property
    def down(self) -> bool:
        return self._since is not None

    def lost(self, exc: BaseException) -> None:
        """A thread found the store gone: logged if it is the first to, and the store had been back
        for ``QUIET_S`` (or is gone for that long now)."""
        if isinstance(exc, StoreDown) and exc.__cause__ is not None:
            exc = exc.__cause__  # the store's own error, not how RQ's loop was left
        now = time.monotonic()
        with self._lock:
            if self._since is None:
                self._since = now
            if self._announced or (now - self._back_at < QUIET_S and now - self._since < QUIET_S):
                return
            self._announced = True
            self.outages += 1
        log.warning("the store is not answering (%s: %s); waiting for it, deliveries resume when it answers",
                    type(exc).__name__, exc)

    def back(self) -> None:
        """A thread found the store answering: logged if its outage was."""
        with self._lock:
            if self._since is None:
                return
            lasted, self._since = time.monotonic() - self._since, None
            announced, self._announced = self._announced, False
            self._back_at = time.monotonic()
        if announced:
            log.warning("the store answers again after %.1f s; delivering", lasted)

    def wait(self, exc: BaseException | None = None) -> bool:
        """Block until the store answers a PING (False: the worker was asked to stop first)."""
        if exc is not None:
            self.lost(exc)
        delay = FIRST_DELAY_S
        while not self.stopped.is_set():
            try:
                self.probe.ping()
            except STORE_ERRORS as error:
                self.lost(error)
            else:
                self.back()
                return True
            self.stopped.wait(delay)
            delay = min(delay * 2, MAX_DELAY_S)
        return False
