"""``hookgate worker``: an RQ worker (in-process jobs, with RQ's scheduler), the ticker, and the
delivery engine.

The worker runs jobs in its own process (RQ's ``SimpleWorker``) rather than forking per job, so the
HTTP connections, compiled templates and the engine live as long as the worker. A drain job hands its
destination to the engine (engine.py) and ends, so the worker takes the next job at once while the
engine sends to every destination it holds, up to ``HOOKGATE_WORKER_CONCURRENCY`` requests in flight.
On SIGTERM RQ finishes its job and stops; the engine then ends each lane after its current request.
"""

from __future__ import annotations

import logging

from rq import SimpleWorker

from ..runtime import Runtime
from .drain import run_lane
from .engine import Engine, install_engine
from .ticker import Ticker, tick

__all__ = ["HookgateWorker", "run_worker", "run_burst"]

log = logging.getLogger(__name__)


class HookgateWorker(SimpleWorker):
    """RQ's in-process worker; named so ``rq info`` shows which workers are hookgate's."""


def make_worker(rt: Runtime, name: str | None = None) -> HookgateWorker:
    return HookgateWorker([rt.queue], connection=rt.rq_connection, name=name)


def run_worker(rt: Runtime, name: str | None = None) -> None:
    ticker = Ticker(rt)
    engine = Engine(rt, run_lane, name)
    install_engine(engine)
    ticker.start()
    try:
        make_worker(rt, name).work(with_scheduler=True, logging_level=rt.settings.log_level.upper())
    finally:
        ticker.stop()
        engine.close(timeout=rt.settings.lease_s)
        install_engine(None)


class _BurstWorker(HookgateWorker):
    """For ``--burst``: no pub/sub channel (it exists for commands to long-lived workers, and
    stopping its thread costs each burst half a second)."""

    def subscribe(self) -> None:
        self.pubsub_thread = None


def run_burst(rt: Runtime, name: str | None = None, max_rounds: int = 1000) -> None:
    """Work until nothing is due or queued, then return (tests and benchmarks): the engine's lanes
    run as in ``hookgate worker``, and each round waits for them to end."""
    engine = Engine(rt, run_lane, name)
    install_engine(engine)
    try:
        for _ in range(max_rounds):
            tick(rt)
            if rt.queue.count == 0:
                return
            _BurstWorker([rt.queue], connection=rt.rq_connection, name=name).work(burst=True, logging_level="WARNING")
            engine.wait_idle()
    finally:
        engine.close()
        install_engine(None)
