"""``hookgate worker``: an RQ worker (in-process jobs), the ticker, and the delivery engine.

The worker runs jobs in its own process (RQ's ``SimpleWorker``) rather than forking per job, so the
HTTP connections, compiled templates and the engine live as long as the worker. A drain job hands its
destination to the engine (engine.py) and ends, so the worker takes the next job at once while the
engine sends to every destination it holds, up to ``HOOKGATE_WORKER_CONCURRENCY`` requests in flight.
On SIGTERM RQ finishes its job and stops; the engine then ends each lane after its current request.

No RQ scheduler: nothing is enqueued for later (a retry waits in its destination's pending set and
the ticker wakes it), and the scheduler was a child process that outlived a killed worker.

A store outage (outage.py) does not end the worker. RQ's loop cannot go on without the store (its
failure handling writes to it), so when the store stops answering the loop is left (``StoreDown``),
the worker waits for the store with the rest of the process, and then enters the loop again under
the same name (the old registration is ended first). A drain job the outage cut short is handed to
the engine then: its destination's wake flag is its own, and nobody else would drain it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job

from ..logs import rq_log_level
from ..runtime import Runtime
from .drain import run_lane
from .engine import Engine, install_engine
from .outage import STORE_ERRORS, Outage, StoreDown
from .queue import DRAIN_JOB
from .ticker import Ticker, tick

__all__ = ["HookgateWorker", "run_worker", "run_burst"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_LEAVING: tuple[type[Exception], ...] = (StoreDown, *STORE_ERRORS)  # out of RQ's loop: the store went


class _Queue(Queue):
    """RQ's queue, whose blocking pop says ``StoreDown`` when the store goes."""

    @classmethod
    def dequeue_any(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().dequeue_any(*args, **kwargs)
        except STORE_ERRORS as exc:
            raise StoreDown(f"{type(exc).__name__}: {exc}") from exc


class HookgateWorker(SimpleWorker):
    """RQ's in-process worker; named so ``rq info`` shows which workers are hookgate's. It leaves
    RQ's loop when the store goes (``store_lost``), remembering the job it was running
    (``interrupted``), and says whether it was asked to stop (``stop_asked``)."""

    outage: Outage | None = None
    store_lost = False
    stop_asked = False
    interrupted: Job | None = None

    def _leave(self, call: Callable[[], T]) -> T:
        """``call()``; a store error out of it leaves RQ's loop (``StoreDown``)."""
        try:
            return call()
        except _LEAVING as exc:
            self._lost(exc)
            raise StoreDown(str(exc)) from exc

    def _lost(self, exc: BaseException) -> None:
        self.store_lost = True
        if self.outage is not None:
            self.outage.lost(exc)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        self._leave(lambda: super(HookgateWorker, self).heartbeat(timeout, pipeline))

    def check_for_suspension(self, burst: bool) -> None:
        self._leave(lambda: super(HookgateWorker, self).check_for_suspension(burst))

    def run_maintenance_tasks(self) -> None:
        self._leave(lambda: super(HookgateWorker, self).run_maintenance_tasks())

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        return self._leave(lambda: super(HookgateWorker, self).dequeue_job_and_maintain_ttl(timeout, max_idle_time))

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            self._leave(lambda: super(HookgateWorker, self).execute_job(job, queue))
        except StoreDown:
            self.interrupted = job
            raise

    def teardown(self) -> None:
        """RQ's; when the store is gone, only what needs no store (the registration is ended when
        it is back)."""
        try:
            super().teardown()
        except STORE_ERRORS as exc:
            self._lost(exc)
            thread = getattr(self, "pubsub_thread", None)
            if thread is not None:
                thread.stop()
                thread.join(timeout=1)
            if self.pubsub is not None:
                with contextlib.suppress(Exception):
                    self.pubsub.close()

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, pubsub_thread: Any) -> None:
        """The command channel's thread waits for the store with the rest of the worker (RQ's own
        handler logs every two seconds)."""
        if not isinstance(exc, STORE_ERRORS) or self.outage is None:
            super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)
        elif not self.outage.wait(exc):
            pubsub_thread.stop()

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_asked = True
        if self.outage is not None:
            self.outage.stopped.set()
        try:
            super().request_stop(signum, frame)
        except STORE_ERRORS:  # RQ asks the store whether a job is running: stop now
            raise StopRequested() from None


def make_worker(rt: Runtime, name: str | None = None, outage: Outage | None = None) -> HookgateWorker:
    worker = HookgateWorker([rt.queue.name], connection=rt.rq_connection, name=name, queue_class=_Queue)
    worker.outage = outage
    return worker


def run_worker(rt: Runtime, name: str | None = None) -> None:
    outage = Outage(rt.settings)
    ticker = Ticker(rt, outage)
    engine = Engine(rt, run_lane, name, outage)
    install_engine(engine)
    ticker.start()
    try:
        _work(rt, name, outage, engine)
    finally:
        outage.stopped.set()  # a wait for the store ends: the worker is stopping
        ticker.stop()
        engine.close(timeout=rt.settings.lease_s)
        install_engine(None)


def _work(rt: Runtime, name: str | None, outage: Outage, engine: Engine) -> None:
    """RQ's loop, entered again after each store outage, until the worker is asked to stop."""
    while True:
        try:
            worker = make_worker(rt, name, outage)  # RQ names its connection: the store may be gone again
        except STORE_ERRORS as exc:
            stop = _SignalsEndTheWait(outage)
            try:
                if not outage.wait(exc):
                    return
            finally:
                stop.restore()
            continue
        name = worker.name
        try:
            worker.work(logging_level=rq_log_level(rt.settings))
        except _LEAVING as exc:  # before the loop (registering the worker)
            worker.store_lost = True
            outage.lost(exc)
        if worker.stop_asked or not worker.store_lost:
            return
        stop = _SignalsEndTheWait(outage)
        try:
            if not _resume(worker, engine, outage):
                return
        finally:
            stop.restore()


class _SignalsEndTheWait:
    """While RQ's loop is left: SIGTERM and SIGINT end the wait (RQ's handlers ask the store)."""

    def __init__(self, outage: Outage):
        self.outage = outage
        self.previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        log.info("stopping (signal %d) while waiting for the store", signum)
        self.outage.stopped.set()

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _resume(worker: HookgateWorker, engine: Engine, outage: Outage) -> bool:
    """Wait for the store, end the old registration, and hand the engine the drain job the outage
    interrupted. False: the worker was asked to stop meanwhile."""
    while outage.wait():
        try:
            worker.register_death()
            job = worker.interrupted
            if job is not None and job.func_name == DRAIN_JOB:
                engine.adopt([str(destination_id) for destination_id in job.args])
                with contextlib.suppress(Exception):  # RQ's record of it; its registries clean up too
                    job.delete()
            return True
        except STORE_ERRORS as exc:  # gone again
            outage.lost(exc)
    return False


class _BurstWorker(HookgateWorker):
    """For ``--burst``: no pub/sub channel (it exists for commands to long-lived workers, and
    stopping its thread costs each burst half a second)."""

    def subscribe(self) -> None:
        self.pubsub_thread = None


def run_burst(rt: Runtime, name: str | None = None, max_rounds: int = 1000) -> None:
    """Work until nothing is due or queued, then return (tests and benchmarks): the engine's lanes
    run as in ``hookgate worker``, and each round waits for them to end."""
    engine = Engine(rt, run_lane, name, Outage(rt.settings, threading.Event()))
    install_engine(engine)
    try:
        for _ in range(max_rounds):
            tick(rt)
            if rt.queue.count == 0:
                return
            _BurstWorker([rt.queue.name], connection=rt.rq_connection, name=name,
                         queue_class=_Queue).work(burst=True, logging_level="WARNING")
            engine.wait_idle()
    finally:
        engine.close()
        install_engine(None)
