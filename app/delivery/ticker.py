"""The ticker: a thread in every worker that keeps deliveries moving when nobody posts.

Each tick it returns expired leases to pending (a worker died mid-drain), wakes destinations whose
retries came due, sends the notifications of disabled destinations that came due, and about once a
minute trims the delivery and event indexes past the retention window.
Several workers ticking at once is harmless: waking is claim-once and reclaiming is atomic. A store
outage does not end the ticker: it waits for the store (outage.py), logged once by the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import cast

import redis

from ..deliveries import STATUSES
from ..events import OWN_SOURCE
from ..notify import send_due
from ..runtime import Runtime
from ..store import keys, now_ms
from .outage import STORE_ERRORS, Outage
from .queue import reclaim_expired, wake_due

__all__ = ["Ticker", "tick", "trim_indexes"]

log = logging.getLogger(__name__)
TRIM_EVERY_S = 60.0


def tick(rt: Runtime) -> tuple[int, int]:
    """One tick: (leases reclaimed, drain jobs enqueued). Also sends notifications that came due."""
    reclaimed = reclaim_expired(rt.db)
    woken = wake_due(rt.db, rt.queue, rt.settings)
    send_due(rt)
    return reclaimed, woken


def trim_indexes(rt: Runtime) -> None:
    """Drop what the retention window let expire from the delivery and event indexes (their hashes
    and events expire alone). A deleted source's index expires by itself (``SourceStore.delete``)."""
    cutoff = now_ms() - int(rt.settings.event_retention_s * 1000)
    db = rt.db
    with db.pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(keys.deliveries, "-inf", cutoff)
        pipe.zremrangebyscore(keys.events, "-inf", cutoff)
        for sid in [OWN_SOURCE, *cast(list[str], db.hkeys(keys.sources))]:
            pipe.zremrangebyscore(keys.source_events(sid), "-inf", cutoff)
        for status in STATUSES:
            pipe.zremrangebyscore(keys.status(status), "-inf", cutoff)
        for did in cast(list[str], db.hkeys(keys.destinations)):
            pipe.zremrangebyscore(keys.destination_deliveries(did), "-inf", cutoff)
        pipe.execute()


class Ticker(threading.Thread):
    """Ticks until stopped; through a store outage it waits for the store (``outage``: the worker's)
    and ticks at once when it is back (expired leases go back, due destinations wake)."""

    def __init__(self, rt: Runtime, outage: Outage | None = None):
        super().__init__(name="hookgate-ticker", daemon=True)
        self.rt = rt
        self.stopped = threading.Event()
        self.outage = outage or Outage(rt.settings, self.stopped)

    def run(self) -> None:
        last_trim = 0.0
        while not self.stopped.is_set():
            try:
                tick(self.rt)
                if time.monotonic() - last_trim > TRIM_EVERY_S:
                    trim_indexes(self.rt)
                    last_trim = time.monotonic()
            except STORE_ERRORS as exc:
                if self.outage.wait(exc):
                    continue
            except redis.RedisError as exc:
                log.warning("ticker: redis failed: %s", exc)
            except Exception:  # the ticker must outlive any one bad tick
                log.exception("ticker failed")
            self.stopped.wait(self.rt.settings.tick_interval_s)

    def stop(self) -> None:
        self.stopped.set()
