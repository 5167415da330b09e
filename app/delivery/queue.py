"""The pending-delivery queue in Redis, and waking a destination's drain job in RQ.

Each destination has a sorted set of pending delivery ids scored by when they are due (first
attempt: now; a retry: later). A drain job leases a chunk (moves it to ``hookgate:leases`` with an
expiry) before sending, so a worker that dies mid-drain loses nothing: the reaper puts expired
leases back. ``hookgate:dest:<id>:wake`` is set while a drain job for the destination is queued or
running; whoever sets it (ingest, the ticker, a retry coming due) enqueues the job, so a destination
has one drain job at a time, and a drain job only ends after seeing nothing due, atomically with
clearing the flag.

A lease belongs to the job that took it: ``hookgate:lease_holders`` maps each lease to its job's
token, and renewing, releasing and recording check it. A job whose lease lapsed (a receiver slower
than the lease) cannot renew, release or record a delivery another job has taken since.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from rq import Queue

from ..store import PREFIX, keys, now_ms

__all__ = ["take", "renew", "release", "drop", "finish", "reclaim_expired", "wake", "wake_due",
           "drain_job_timeout"]

_TAKE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1] .. '|' .. id)
  redis.call('HSET', KEYS[5], ARGV[1] .. '|' .. id, ARGV[6])
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[1] then
  redis.call('ZADD', KEYS[3], head[2], ARGV[1])
else
  redis.call('ZREM', KEYS[3], ARGV[1])
end
redis.call('PEXPIRE', KEYS[4], ARGV[5])
return ids
"""

_FINISH = """
local head = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if head[1] then return 0 end
redis.call('DEL', KEYS[2])
return 1
"""

_RENEW = """
local kept = {}
for i = 5, #ARGV do
  local member = ARGV[1] .. '|' .. ARGV[i]
  if redis.call('HGET', KEYS[3], member) == ARGV[4] and redis.call('ZSCORE', KEYS[1], member) then
    redis.call('ZADD', KEYS[1], ARGV[2], member)
    table.insert(kept, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return kept
"""

_RECLAIM = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(expired) do
  local sep = string.find(member, '|', 1, true)
  local did = string.sub(member, 1, sep - 1)
  local id = string.sub(member, sep + 1)
  redis.call('ZREM', KEYS[1], member)
  redis.call('HDEL', KEYS[3], member)
  if redis.call('EXISTS', ARGV[2] .. 'delivery:' .. id) == 1 then
    redis.call('ZADD', ARGV[2] .. 'dest:' .. did .. ':pending', ARGV[1], id)
    redis.call('ZADD', KEYS[2], 'LT', ARGV[1], did)
  end
end
return #expired
"""


# Give leased deliveries back to pending, due at ARGV[2] (those still held by ARGV[3]); or, with
# ARGV[2] = '', only drop their leases (the delivery is gone).
_RELEASE = """
local released = 0
for i = 4, #ARGV do
  local member = ARGV[1] .. '|' .. ARGV[i]
  if redis.call('HGET', KEYS[2], member) == ARGV[3] then
    redis.call('ZREM', KEYS[1], member)
    redis.call('HDEL', KEYS[2], member)
    if ARGV[2] ~= '' then
      redis.call('ZADD', KEYS[3], ARGV[2], ARGV[i])
      redis.call('ZADD', KEYS[4], 'LT', ARGV[2], ARGV[1])
    end
    released = released + 1
  end
end
return released
"""


class _Scripts:
    """Lua scripts registered once per client (EVALSHA after the first call)."""

    def __init__(self) -> None:
        self._by_client: dict[int, dict[str, Any]] = {}

    def get(self, db: redis.Redis, name: str):
        scripts = self._by_client.get(id(db))
        if scripts is None:
            scripts = {n: db.register_script(src) for n, src in (("take", _TAKE), ("finish", _FINISH),
                                                                  ("renew", _RENEW), ("reclaim", _RECLAIM),
                                                                  ("release", _RELEASE))}
            self._by_client[id(db)] = scripts
        return scripts[name]


_scripts = _Scripts()


def drain_job_timeout(settings) -> int:
    return int(settings.drain_budget_s + settings.lease_s + 60)


def wake(db: redis.Redis, queue: Queue, destination_ids: Iterable[str], settings) -> int:
    """Enqueue a drain job for each destination that has none queued or running. Returns how many."""
    ids = list(dict.fromkeys(destination_ids))
    if not ids:
        return 0
    # Long enough for the job to wait in a busy queue: a flag that lapsed while its job waited would
    # let a second job for the same destination in. A running drain renews it with every chunk.
    ttl_ms = int(drain_job_timeout(settings) * 1000)
    with db.pipeline(transaction=False) as pipe:
        for did in ids:
            pipe.set(keys.wake(did), "1", nx=True, px=ttl_ms)
        claimed = [did for did, ok in zip(ids, pipe.execute()) if ok]
    if claimed:
        from .drain import drain_destination

        timeout = drain_job_timeout(settings)
        with queue.connection.pipeline() as rq_pipe:
            queue.enqueue_many(
                [Queue.prepare_data(drain_destination, args=(did,), timeout=timeout, result_ttl=0,
                                    failure_ttl=86400, description=f"drain {did}") for did in claimed],
                pipeline=rq_pipe,
            )
            rq_pipe.execute()
    return len(claimed)


def wake_due(db: redis.Redis, queue: Queue, settings, limit: int = 1000) -> int:
    """Wake every destination with a delivery due now (the ticker's job)."""
    due = db.zrangebyscore(keys.due, "-inf", now_ms(), start=0, num=limit)
    return wake(db, queue, due, settings)


def take(db: redis.Redis, destination_id: str, count: int, lease_ms: int, wake_ttl_ms: int, holder: str) -> list[str]:
    """Lease up to ``count`` due deliveries for the job ``holder`` (a token of its own)."""
    now = now_ms()
    return _scripts.get(db, "take")(
        keys=[keys.pending(destination_id), keys.leases, keys.due, keys.wake(destination_id), keys.lease_holders],
        args=[destination_id, now, count, now + lease_ms, wake_ttl_ms, holder],
    )


def renew(db: redis.Redis, destination_id: str, ids: list[str], lease_ms: int, wake_ttl_ms: int,
          holder: str) -> list[str]:
    """Extend ``holder``'s leases of ``ids``; returns those it still holds (a lease that expired may be
    another job's now)."""
    if not ids:
        return []
    return _scripts.get(db, "renew")(keys=[keys.leases, keys.wake(destination_id), keys.lease_holders],
                                     args=[destination_id, now_ms() + lease_ms, wake_ttl_ms, holder, *ids])


def release(db: redis.Redis, destination_id: str, ids: list[str], holder: str) -> int:
    """Give ``holder``'s leased deliveries back to pending, due now (not sent: the job stops early)."""
    return _release(db, destination_id, ids, holder, now_ms())


def drop(db: redis.Redis, destination_id: str, ids: list[str], holder: str) -> int:
    """End ``holder``'s leases of deliveries that no longer exist."""
    return _release(db, destination_id, ids, holder, "")


def _release(db: redis.Redis, destination_id: str, ids: list[str], holder: str, due: int | str) -> int:
    if not ids:
        return 0
    return _scripts.get(db, "release")(
        keys=[keys.leases, keys.lease_holders, keys.pending(destination_id), keys.due],
        args=[destination_id, due, holder, *ids])


def finish(db: redis.Redis, destination_id: str) -> bool:
    """Clear the wake flag if nothing is due; False means more came in and the drain goes on."""
    return bool(_scripts.get(db, "finish")(keys=[keys.pending(destination_id), keys.wake(destination_id)],
                                           args=[now_ms()]))


def reclaim_expired(db: redis.Redis, limit: int = 1000) -> int:
    """Put deliveries whose lease expired (their worker died) back to pending."""
    return _scripts.get(db, "reclaim")(keys=[keys.leases, keys.due, keys.lease_holders],
                                       args=[now_ms(), PREFIX, limit])
