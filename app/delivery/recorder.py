"""Writing attempt outcomes without waiting for Redis after every request.

A drain job hands each outcome's writes to a thread that writes whatever has queued up in one atomic
call, while the job sends the next request. The job waits for the writes (``flush``) before it takes
more work or decides it is done, so what it reads back is always current. A crash loses at most the
outcomes of the last few milliseconds: those deliveries are still leased, return to pending when the
lease expires, and are sent again (at-least-once, same ``webhook-id``).

Cost, measured on the 2-core benchmark machine: redis-py spends ~60 µs of CPU on a round trip and
~1.5 µs per argument, so a MULTI/EXEC of one outcome's writes (7–9 commands) cost ~210 µs, and the
thread, sharing the GIL and the cores, slowed sending by a third. So a batch is one Lua script call
(atomic, like MULTI/EXEC; the same commands in the same order) whose single argument is the batch as
JSON, and the thread lets a batch gather for up to ``LINGER_S`` (≈ 5–10 outcomes at full speed)
unless the job is waiting for it. Other writes can still be submitted as functions of a pipeline;
a batch holding one is written as one MULTI/EXEC instead (the outcomes' script inside it).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import DataError

from ..store import keys

__all__ = ["Recorder", "outcome_writes"]

log = logging.getLogger(__name__)
MAX_BATCH = 200
LINGER_S = 0.005

# ARGV[1]: a JSON array of outcomes, each [delivery key, attempt log key, previous status key, new
# status key, pending key, retention s, -attempts kept, [field, value, ...], attempt JSON ('' if
# none), lease member, created ms (the score in the status set), delivery id, due ms ('' if not
# rescheduled), destination id, lease holder ('' for none)]. Each outcome's writes are those of the
# MULTI/EXEC this replaces, in the same order. An outcome whose lease another job holds now is left
# out: that job sends the delivery and records it. KEYS[1], KEYS[2], KEYS[3]: the leases and due
# sets, and the lease holders.
_RECORD = """
for _, o in ipairs(cjson.decode(ARGV[1])) do
  local attempts, attempt, created, id, due = o[2], o[9], o[11], o[12], o[13]
  if o[15] == '' or redis.call('HGET', KEYS[3], o[10]) == o[15] then
    -- The status the delivery has now (not the one its worker read): the set it leaves.
    local current = redis.call('HGET', o[1], 'status')
    redis.call('HSET', o[1], unpack(o[8]))
    if attempt ~= '' then
      redis.call('RPUSH', attempts, attempt)
      redis.call('LTRIM', attempts, o[7], -1)
      redis.call('EXPIRE', attempts, o[6])
    end
    redis.call('ZREM', KEYS[1], o[10])
    local current_set = current and string.gsub(o[4], '[^:]+$', current) or o[3]
    if current_set ~= o[4] then
      redis.call('ZREM', current_set, id)
      redis.call('ZADD', o[4], created, id)
    end
    if due ~= '' then
      redis.call('ZADD', o[5], due, id)
      redis.call('ZADD', KEYS[2], 'LT', due, o[14])
    end
    redis.call('HDEL', KEYS[3], o[10])
  end
end
return 1
"""


def _text(value: Any) -> str:
    """A value as redis-py's ``Encoder.encode`` would send it (str as is, int and float by ``repr``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    raise DataError(f"Invalid input of type: '{type(value).__name__}'. Convert to a string, int or float first.")


def outcome_writes(destination_id: str, delivery_id: str, previous: str, status: str, fields: dict[str, Any],
                   attempt_json: str | None, created: int, due: int | None, retention_s: int,
                   attempts_kept: int, holder: str = "") -> list[Any]:
    """One outcome's writes, for ``Recorder.submit``. They are, in this order:

    HSET the delivery's ``fields``; with an attempt: RPUSH it to the attempt log, LTRIM the log to
    the last ``attempts_kept``, EXPIRE it after ``retention_s``; ZREM the lease; if the status
    changed: ZREM the delivery from the set of the status the hash holds when this runs (``previous``
    only if it has none) and ZADD it to the new one (scored by ``created``); with a ``due`` time: ZADD it to the pending set, and the destination to the due
    set (LT); and end the lease. With a ``holder``, all of it only while that job still holds the lease.
    """
    flat: list[str] = []
    for name, value in fields.items():
        flat += (_text(name), _text(value))
    return [keys.delivery(delivery_id), keys.attempts(delivery_id), keys.status(previous), keys.status(status),
            keys.pending(destination_id), _text(retention_s), _text(-attempts_kept), flat,
            attempt_json if attempt_json is not None else "", f"{destination_id}|{delivery_id}",
            _text(created), delivery_id, _text(due) if due is not None else "",
            destination_id, holder]


class Recorder:
    def __init__(self, db: redis.Redis):
        self.db = db
        self._script = db.register_script(_RECORD)
        self._lock = threading.Condition()
        self._queued: list[Any] = []
        self._outstanding = 0  # queued or being written
        self._waiting = 0  # flush() calls waiting: write without lingering
        self._closing = False
        self._thread: threading.Thread | None = None

    def submit(self, record: list[Any] | Callable[[Pipeline], None]) -> None:
        """Queue one outcome's writes: what ``outcome_writes()`` returns, or any function that adds
        commands to a transaction (a batch with such a function is written as one MULTI/EXEC, the
        outcomes' script included, in the order submitted)."""
        if self._thread is None:
            self._closing = False
            self._thread = threading.Thread(target=self._run, name="hookgate-recorder", daemon=True)
            self._thread.start()
        with self._lock:
            self._queued.append(record)
            self._outstanding += 1
            if len(self._queued) == 1 or len(self._queued) >= MAX_BATCH:
                self._lock.notify_all()

    def flush(self) -> None:
        with self._lock:
            self._waiting += 1
            self._lock.notify_all()
            try:
                self._lock.wait_for(lambda: self._outstanding == 0)
            finally:
                self._waiting -= 1

    def close(self) -> None:
        if self._thread is not None:
            self.flush()
            with self._lock:
                self._closing = True
                self._lock.notify_all()
            self._thread.join()
            self._thread = None

    def _next_batch(self) -> list[Any] | None:
        with self._lock:
            while not self._queued:
                if self._closing:
                    return None
                self._lock.wait()
            deadline = time.monotonic() + LINGER_S
            while len(self._queued) < MAX_BATCH and not self._waiting and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
            return batch

    def _write(self, batch: list[Any]) -> None:
        if not any(callable(item) for item in batch):
            self._script(keys=[keys.leases, keys.due, keys.lease_holders],
                         args=[json.dumps(batch, ensure_ascii=False)])
            return
        with self.db.pipeline(transaction=True) as pipe:
            outcomes: list[list[Any]] = []
            for item in [*batch, None]:
                if isinstance(item, list):
                    outcomes.append(item)
                    continue
                if outcomes:
                    self._script(keys=[keys.leases, keys.due, keys.lease_holders],
                                 args=[json.dumps(outcomes, ensure_ascii=False)], client=pipe)
                    outcomes = []
                if item is not None:
                    item(pipe)
            pipe.execute()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._write(batch)
            except redis.RedisError as exc:
                # The deliveries stay leased: when the lease expires they are sent again.
                log.error("could not record %d outcome(s), they will be retried: %s", len(batch), exc)
            except Exception:
                log.exception("recording outcomes failed")
            finally:
                with self._lock:
                    self._outstanding -= len(batch)
                    self._lock.notify_all()
