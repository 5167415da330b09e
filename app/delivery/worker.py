"""``hookgate worker``: an RQ worker (in-process jobs, with RQ's scheduler) plus the ticker.

The worker runs jobs in its own process (RQ's ``SimpleWorker``) rather than forking per job, so the
HTTP connection pool and compiled templates live as long as the worker: a drain job then costs no
connection setup. A job that hangs is still bounded (RQ's job timeout, per-request timeouts).
"""

from __future__ import annotations

import logging

from rq import SimpleWorker

from ..runtime import Runtime
from .ticker import Ticker, tick

__all__ = ["HookgateWorker", "run_worker", "run_burst"]

log = logging.getLogger(__name__)


class HookgateWorker(SimpleWorker):
    """RQ's in-process worker; named so ``rq info`` shows which workers are hookgate's."""


def make_worker(rt: Runtime, name: str | None = None) -> HookgateWorker:
    return HookgateWorker([rt.queue], connection=rt.rq_connection, name=name)


def run_worker(rt: Runtime, name: str | None = None) -> None:
    ticker = Ticker(rt)
    ticker.start()
    try:
        make_worker(rt, name).work(with_scheduler=True, logging_level=rt.settings.log_level.upper())
    finally:
        ticker.stop()


class _BurstWorker(HookgateWorker):
    """For ``--burst``: no pub/sub channel (it exists for commands to long-lived workers, and
    stopping its thread costs each burst half a second)."""

    def subscribe(self) -> None:
        self.pubsub_thread = None


def run_burst(rt: Runtime, name: str | None = None, max_rounds: int = 1000) -> None:
    """Work until nothing is due or queued, then return (tests and benchmarks)."""
    for _ in range(max_rounds):
        tick(rt)
        if rt.queue.count == 0:
            return
        _BurstWorker([rt.queue], connection=rt.rq_connection, name=name).work(burst=True, logging_level="WARNING")
