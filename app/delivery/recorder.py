"""Writing attempt outcomes without waiting for Redis after every request.

A drain job hands each outcome's writes to a thread that sends whatever has queued up in one
transaction, while the job sends the next request. The job waits for the writes (``flush``) before
it takes more work or decides it is done, so what it reads back is always current. A crash loses at
most the outcomes of the last few milliseconds: those deliveries are still leased, return to pending
when the lease expires, and are sent again (at-least-once, same ``webhook-id``).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

import redis
from redis.client import Pipeline

__all__ = ["Recorder"]

log = logging.getLogger(__name__)
MAX_BATCH = 200


class Recorder:
    def __init__(self, db: redis.Redis):
        self.db = db
        self._queue: queue.SimpleQueue[Callable[[Pipeline], None] | None] = queue.SimpleQueue()
        self._outstanding = 0
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, writes: Callable[[Pipeline], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hookgate-recorder", daemon=True)
            self._thread.start()
        with self._done:
            self._outstanding += 1
        self._queue.put(writes)

    def flush(self) -> None:
        with self._done:
            self._done.wait_for(lambda: self._outstanding == 0)

    def close(self) -> None:
        if self._thread is not None:
            self.flush()
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            try:
                with self.db.pipeline(transaction=True) as pipe:
                    for writes in batch:
                        writes(pipe)
                    pipe.execute()
            except redis.RedisError as exc:
                # The deliveries stay leased: when the lease expires they are sent again.
                log.error("could not record %d outcome(s), they will be retried: %s", len(batch), exc)
            except Exception:
                log.exception("recording outcomes failed")
            finally:
                with self._done:
                    self._outstanding -= len(batch)
                    self._done.notify_all()
