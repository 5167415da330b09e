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

from ..deliveries import STATUSES, attempt_field
from ..store import keys
from .outage import STORE_ERRORS, Outage

__all__ = ["Recorder", "outcome_writes"]

log = logging.getLogger(__name__)
MAX_BATCH = 200
LINGER_S = 0.005

# ARGV[1]: {"status_sets": every status set's key by status, "outcomes": [what outcome_writes() returns, ...]}.
# An outcome whose lease another job holds now is left out: that job sends the delivery and records it.
# Each delivery costs its HSET (its attempt, if any, is a field of it: the attempt log is part of the
# delivery's hash; past the kept number, an HDEL of the oldest); everything else is one command for
# the whole batch per key (Redis counts, and pays for, commands more than
# their members): whose leases these are (HMGET), ending them (ZREM, HDEL), the status sets (a delivery
# leaves every set but its new one, whatever status it was read with: ZREM per set, ZADD per status;
# a batch of one or two reads each one's status as stored instead, HGET, and leaves just that set),
# the pending sets of retries (ZADD per destination) and the due set (ZADD LT per destination).
_RECORD = """
local leases, due_set, holders = KEYS[1], KEYS[2], KEYS[3]
local args = cjson.decode(ARGV[1])
local function push(into, key, ...)
  local list = into[key]
  if not list then list = {}; into[key] = list end
  for _, value in ipairs({...}) do table.insert(list, value) end
end
local asked = {}
for _, o in ipairs(args.outcomes) do
  if o.holder then table.insert(asked, o.lease) end
end
local holding = {}
if asked[1] then
  local got = redis.call('HMGET', holders, unpack(asked))
  for i, lease in ipairs(asked) do holding[lease] = got[i] end
end
local ended, final, retries, dues = {}, {}, {}, {}
local order, was = {}, {}
local few = #args.outcomes <= 2
for _, o in ipairs(args.outcomes) do
  if not o.holder or holding[o.lease] == o.holder then
    if few and was[o.id] == nil then was[o.id] = redis.call('HGET', o.delivery, 'status') or false end
    redis.call('HSET', o.delivery, unpack(o.fields))
    if o.forget then redis.call('HDEL', o.delivery, o.forget) end
    table.insert(ended, o.lease)
    if not final[o.id] then table.insert(order, o.id) end
    final[o.id] = o  -- a delivery recorded twice in one batch ends in the status of the last
    if o.due then
      push(retries, o.pending, o.due, o.id)
      local at = tonumber(o.due)
      if not dues[o.destination] or at < dues[o.destination] then dues[o.destination] = at end
    end
  end
end
if ended[1] then
  redis.call('ZREM', leases, unpack(ended))
  redis.call('HDEL', holders, unpack(ended))
end
local into, leaving = {}, {}
for _, id in ipairs(order) do
  local o = final[id]
  push(into, o.status_set, o.created, id)
  if few then
    local set = was[id] and args.status_sets[was[id]]
    if set and set ~= o.status_set then push(leaving, set, id) end
  else
    for _, set in pairs(args.status_sets) do
      if set ~= o.status_set then push(leaving, set, id) end
    end
  end
end
for set, ids in pairs(leaving) do redis.call('ZREM', set, unpack(ids)) end
for set, members in pairs(into) do redis.call('ZADD', set, unpack(members)) end
for set, members in pairs(retries) do redis.call('ZADD', set, unpack(members)) end
for destination, at in pairs(dues) do redis.call('ZADD', due_set, 'LT', at, destination) end
return 1
"""
_STATUS_SETS = {status: keys.status(status) for status in STATUSES}


def _text(value: Any) -> str:
    """A value as redis-py's ``Encoder.encode`` would send it (str as is, int and float by ``repr``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    raise DataError(f"Invalid input of type: '{type(value).__name__}'. Convert to a string, int or float first.")


def outcome_writes(destination_id: str, delivery_id: str, status: str, fields: dict[str, Any],
                   attempt: tuple[int, str] | None, created: int, due: int | None, attempts_kept: int,
                   holder: str = "") -> dict[str, Any]:
    """One outcome's writes, for ``Recorder.submit``. They are, in this order:

    HSET the delivery's ``fields`` and, with an ``attempt`` (its number and JSON), that attempt as the
    field ``attempt_field(number)`` of its log (HDEL the attempt that falls out of the last
    ``attempts_kept``); ZREM the lease; ZREM the delivery from every status set but the new one
    (whatever status it had when read) and ZADD it to that one (scored by ``created``); with a ``due``
    time: ZADD it to the pending set, and the destination to the due set (LT); and end the lease. With
    a ``holder``, all of it only while that job still holds the lease. The script does each of these
    for a whole batch in one command per key.
    """
    flat: list[str] = []
    for name, value in fields.items():
        flat += (_text(name), _text(value))
    writes = {"delivery": keys.delivery(delivery_id), "status_set": keys.status(status),
              "pending": keys.pending(destination_id), "fields": flat, "lease": f"{destination_id}|{delivery_id}",
              "created": _text(created), "id": delivery_id, "destination": destination_id}
    # absent, not empty: nil in the script
    if attempt is not None:
        number, attempt_json = attempt
        flat += (attempt_field(number), attempt_json)
        if number > attempts_kept:
            writes["forget"] = attempt_field(number - attempts_kept)
    if due is not None:
        writes["due"] = _text(due)
    if holder:
        writes["holder"] = holder
    return writes


class Recorder:
    """With an ``outage`` (the engine's), a batch the store did not take is written again when it
    answers (the script ends only leases their jobs still hold, so a batch written twice, its answer
    lost with the connection, does nothing the second time); without, it is dropped (logged) and its
    deliveries go out again when their leases expire."""

    def __init__(self, db: redis.Redis, outage: Outage | None = None):
        self.db = db
        self.outage = outage
        self._script = db.register_script(_RECORD)
        self._lock = threading.Condition()
        self._queued: list[Any] = []
        self._outstanding = 0  # queued or being written
        self._waiting = 0  # flush() calls waiting: write without lingering
        self._closing = False
        self._thread: threading.Thread | None = None

    def submit(self, record: dict[str, Any] | Callable[[Pipeline], None]) -> None:
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

    def _record(self, outcomes: list[dict[str, Any]], pipe: Pipeline | None = None) -> None:
        """The outcomes' script, on its own or inside ``pipe``."""
        self._script(keys=[keys.leases, keys.due, keys.lease_holders],
                     args=[json.dumps({"status_sets": _STATUS_SETS, "outcomes": outcomes}, ensure_ascii=False)],
                     client=pipe)

    def _write(self, batch: list[Any]) -> None:
        if not any(callable(item) for item in batch):
            self._record(batch)
            return
        with self.db.pipeline(transaction=True) as pipe:
            outcomes: list[dict[str, Any]] = []
            for item in [*batch, None]:
                if isinstance(item, dict):
                    outcomes.append(item)
                    continue
                if outcomes:
                    self._record(outcomes, pipe)
                    outcomes = []
                if item is not None:
                    item(pipe)
            pipe.execute()

    def _write_through(self, batch: list[Any]) -> None:
        """``_write``, again after each store outage (until the worker stops)."""
        while True:
            try:
                self._write(batch)
                return
            except STORE_ERRORS as exc:
                if self.outage is None or not self.outage.wait(exc):
                    raise

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._write_through(batch)
            except redis.RedisError as exc:
                # The deliveries stay leased: when the lease expires they are sent again.
                log.error("could not record %d outcome(s), they will be retried: %s", len(batch), exc)
            except Exception:
                log.exception("recording outcomes failed")
            finally:
                with self._lock:
                    self._outstanding -= len(batch)
                    self._lock.notify_all()
