"""The pending-delivery queue in Redis, and waking a destination's drain job in RQ.

Each destination has a sorted set of pending delivery ids scored by when they are due (first
attempt: now; a retry: later). A drain job leases a chunk (moves it to ``hookgate:leases`` with an
expiry) before sending, so a worker that dies mid-drain loses nothing: the reaper puts expired
leases back. ``hookgate:dest:<id>:wake`` is set while a drain job for the destination is queued or
running; whoever sets it (ingest, the ticker, a retry coming due) enqueues the job, so a destination
has one drain job at a time, and a drain job only ends after seeing nothing due, atomically with
clearing the flag. A destination whose circuit breaker is open is *held* (``hold``): the flag says
``paused`` and expires when the cool-down ends, so meanwhile nobody enqueues a job for it (ingest and
the ticker find the flag set), and the due set has it at that time, so the ticker wakes it then.

How long a flag lives, so that none outlives its owner's death by more than the lease: while its job
waits in the queue, the job's timeout (it may wait behind many others; the queue, which survives any
worker, owns it then); from the moment an engine takes the destination (``own``), one lease, which
the engine's watcher extends every second while it drains the destination (``keep``) and each chunk
taken extends too. A worker killed (or cut off from the store long enough) stops extending it, and
the flag lapses within the lease; ingest or the ticker then wakes the destination again. A lane that
rode out a store outage takes its flag again if it lapsed meanwhile (``reclaim_flag``). A store
restarted on the same data keeps each flag with its expiry: a live owner keeps extending it, a dead
one's lapses. (Before, the flag was extended to the lease with every chunk and nothing else: a drain
cut short by a store restart left a flag that blocked the destination for up to a lease, 53 s
measured, after the store came back.)

A lease belongs to the job that took it: ``hookgate:lease_holders`` maps each lease to its job's
token, and renewing, releasing and recording check it. A job whose lease lapsed (a receiver slower
than the lease) cannot renew, release or record a delivery another job has taken since.

Each script takes its keys as KEYS (named in its first line) and its other arguments as one JSON
object in ARGV[1] (``args.holder``, ``args.ids``…), so no caller and no script counts positions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, cast

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from rq import Queue

from ..config import Settings
from ..store import keys, now_ms

__all__ = ["take", "renew", "release", "drop", "finish", "reclaim_expired", "wake", "wake_due", "hold", "unhold",
           "own", "keep", "reclaim_flag",
           "drain_job_timeout", "DRAIN_JOB", "HELD", "WAKE_GROUP"]

# The drain job by its dotted path: RQ imports it in the worker, and this module (which the drain
# imports) need not import the drain.
DRAIN_JOB = "hookgate.delivery.drain.drain_destination"
HELD = "paused"  # the wake flag's value while the destination's breaker holds it (a job's flag is "1")
# Destinations one drain job wakes at most: an RQ job costs the store ~65 commands of its own (its
# hash, the worker's heartbeats, the started and finished registries), as many as a delivery's own
# work several times over, so a fan-out to 1,000 destinations is 20 jobs, not 1,000 (bench/redis_cost.py).
# Small enough that the jobs of one wide wake spread over the workers.
WAKE_GROUP = 50

_TAKE = """
local pending, leases, due, wake, holders = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local args = cjson.decode(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', pending, '-inf', args.now, 'LIMIT', 0, tonumber(args.count))
if ids[1] then
  -- one command each for the whole chunk (Redis counts, and pays for, commands more than members)
  local scored, held = {}, {}
  for _, id in ipairs(ids) do
    local lease = args.destination .. '|' .. id
    table.insert(scored, args.lease_until)
    table.insert(scored, lease)
    table.insert(held, lease)
    table.insert(held, args.holder)
  end
  redis.call('ZREM', pending, unpack(ids))
  redis.call('ZADD', leases, unpack(scored))
  redis.call('HSET', holders, unpack(held))
end
local head = redis.call('ZRANGE', pending, 0, 0, 'WITHSCORES')
if head[1] then
  redis.call('ZADD', due, head[2], args.destination)
else
  redis.call('ZREM', due, args.destination)
end
redis.call('PEXPIRE', wake, args.wake_ttl_ms)
return ids
"""

_FINISH = """
local pending, wake = KEYS[1], KEYS[2]
local args = cjson.decode(ARGV[1])
local head = redis.call('ZRANGEBYSCORE', pending, '-inf', args.now, 'LIMIT', 0, 1)
if head[1] then return 0 end
redis.call('DEL', wake)
return 1
"""

_RENEW = """
local leases, wake, holders = KEYS[1], KEYS[2], KEYS[3]
local args = cjson.decode(ARGV[1])
local kept = {}
for _, id in ipairs(args.ids) do
  local lease = args.destination .. '|' .. id
  if redis.call('HGET', holders, lease) == args.holder and redis.call('ZSCORE', leases, lease) then
    redis.call('ZADD', leases, args.lease_until, lease)
    table.insert(kept, id)
  end
end
redis.call('PEXPIRE', wake, args.wake_ttl_ms)
return kept
"""

# The keys of a lease's delivery and destination are learnt here, from the lease: they are built
# with the patterns of keys.lua_patterns() (string.format, the id for %s).
_RECLAIM = """
local leases, due, holders = KEYS[1], KEYS[2], KEYS[3]
local args = cjson.decode(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', args.now, 'LIMIT', 0, tonumber(args.limit))
for _, lease in ipairs(expired) do
  local sep = string.find(lease, '|', 1, true)
  local did = string.sub(lease, 1, sep - 1)
  local id = string.sub(lease, sep + 1)
  redis.call('ZREM', leases, lease)
  redis.call('HDEL', holders, lease)
  if redis.call('EXISTS', string.format(args.delivery_key, id)) == 1 then
    redis.call('ZADD', string.format(args.pending_key, did), args.now, id)
    redis.call('ZADD', due, 'LT', args.now, did)
  end
end
return #expired
"""

# Give leased deliveries back to pending, due at args.due or each at its args.scores[id] (those still
# held by args.holder); or, without either, only drop their leases (the delivery is gone).
_RELEASE = """
local leases, holders, pending, due = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local args = cjson.decode(ARGV[1])
local released = 0
for _, id in ipairs(args.ids) do
  local lease = args.destination .. '|' .. id
  if redis.call('HGET', holders, lease) == args.holder then
    redis.call('ZREM', leases, lease)
    redis.call('HDEL', holders, lease)
    local at = (args.scores and args.scores[id]) or args.due
    if at then
      redis.call('ZADD', pending, at, id)
      redis.call('ZADD', due, 'LT', at, args.destination)
    end
    released = released + 1
  end
end
return released
"""

# A pipeline's command (it may run inside a caller's transaction): end a hold, not a drain job's flag.
_UNHOLD = """
local wake = KEYS[1]
if redis.call('GET', wake) == ARGV[1] then return redis.call('DEL', wake) end
return 0
"""

# The wake flags of destinations an engine is draining (KEYS), each a job's ("1"): extended to
# args.ttl_ms from now (never shortened, unless args.shorten); with args.create, made if it is gone.
# A hold ("paused") is left alone: it ends when the cool-down does.
_KEEP = """
local args = cjson.decode(ARGV[1])
local ttl = tonumber(args.ttl_ms)
for _, wake in ipairs(KEYS) do
  local value = redis.call('GET', wake)
  if value == '1' then
    if args.shorten or redis.call('PTTL', wake) < ttl then redis.call('PEXPIRE', wake, ttl) end
  elseif not value and args.create then
    redis.call('SET', wake, '1', 'PX', ttl)
  end
end
return 1
"""

_SOURCES = {"take": _TAKE, "finish": _FINISH, "renew": _RENEW, "reclaim": _RECLAIM, "release": _RELEASE,
            "keep": _KEEP}


class _Scripts:
    """Lua scripts registered once per client (EVALSHA after the first call)."""

    def __init__(self) -> None:
        self._by_client: dict[int, dict[str, Script]] = {}

    def get(self, db: redis.Redis, name: str) -> Script:
        scripts = self._by_client.get(id(db))
        if scripts is None:
            scripts = {n: db.register_script(source) for n, source in _SOURCES.items()}
            self._by_client[id(db)] = scripts
        return scripts[name]


_scripts = _Scripts()


def _named(**args: Any) -> list[str]:
    """A script's ARGV: its arguments as one JSON object. Numbers go as text, as they would in ARGV
    (what Redis is handed back is then exactly what it was given); a None is left out (nil in Lua)."""
    return [json.dumps({name: repr(value) if isinstance(value, int | float) else value
                        for name, value in args.items() if value is not None})]


def drain_job_timeout(settings: Settings) -> int:
    return int(settings.drain_budget_s + settings.lease_s + 60)


def wake(db: redis.Redis, queue: Queue, destination_ids: Iterable[str], settings: Settings) -> int:
    """Enqueue drain jobs (one for up to ``WAKE_GROUP`` destinations) for the destinations that have
    none queued or running. Returns how many destinations were woken."""
    ids = list(dict.fromkeys(destination_ids))
    if not ids:
        return 0
    # Long enough for the job to wait in a busy queue: a flag that lapsed while its job waited would
    # let a second job for the same destination in. A running drain renews it with every chunk.
    timeout = drain_job_timeout(settings)
    with db.pipeline(transaction=False) as pipe:
        for did in ids:
            pipe.set(keys.wake(did), "1", nx=True, px=timeout * 1000)
        claimed = [did for did, ok in zip(ids, pipe.execute(), strict=True) if ok]
    if claimed:
        groups = [claimed[start:start + WAKE_GROUP] for start in range(0, len(claimed), WAKE_GROUP)]
        with queue.connection.pipeline() as rq_pipe:
            queue.enqueue_many(
                [Queue.prepare_data(DRAIN_JOB, args=tuple(group), timeout=timeout, result_ttl=0, failure_ttl=86400,
                                    description=_described(group)) for group in groups],
                pipeline=rq_pipe,
            )
            rq_pipe.execute()
    return len(claimed)


def _described(group: list[str]) -> str:
    """A drain job's description for ``rq info``: its destinations (the first three, and how many more)."""
    more = f" and {len(group) - 3} more" if len(group) > 3 else ""
    return f"drain {', '.join(group[:3])}{more}"


def wake_due(db: redis.Redis, queue: Queue, settings: Settings, limit: int = 1000) -> int:
    """Wake every destination with a delivery due now (the ticker's job)."""
    due = cast(list[str], db.zrangebyscore(keys.due, "-inf", now_ms(), start=0, num=limit))
    return wake(db, queue, due, settings)


def hold(db: redis.Redis, destination_id: str, until_ms: int) -> None:
    """Send nothing to the destination until ``until_ms`` (its breaker is open): called by its drain
    job, which owns the wake flag and then ends; the ticker wakes the destination at ``until_ms``."""
    with db.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.due, {destination_id: until_ms})
        pipe.set(keys.wake(destination_id), HELD, pxat=until_ms)
        pipe.execute()


def unhold(pipe: Pipeline, destination_id: str) -> None:
    """Queued on ``pipe``: end the destination's hold, if it is held (its breaker was reset, or it was
    deleted), so whatever is due wakes it at once; a drain job's flag is left alone."""
    pipe.eval(_UNHOLD, 1, keys.wake(destination_id), HELD)


def take(db: redis.Redis, destination_id: str, count: int, lease_ms: int, wake_ttl_ms: int, holder: str) -> list[str]:
    """Lease up to ``count`` due deliveries for the job ``holder`` (a token of its own)."""
    now = now_ms()
    return _scripts.get(db, "take")(
        keys=[keys.pending(destination_id), keys.leases, keys.due, keys.wake(destination_id), keys.lease_holders],
        args=_named(destination=destination_id, now=now, count=count, lease_until=now + lease_ms,
                    wake_ttl_ms=wake_ttl_ms, holder=holder),
    )


def renew(db: redis.Redis, destination_id: str, ids: list[str], lease_ms: int, wake_ttl_ms: int,
          holder: str) -> list[str]:
    """Extend ``holder``'s leases of ``ids``; returns those it still holds (a lease that expired may be
    another job's now)."""
    if not ids:
        return []
    return _scripts.get(db, "renew")(
        keys=[keys.leases, keys.wake(destination_id), keys.lease_holders],
        args=_named(destination=destination_id, lease_until=now_ms() + lease_ms, wake_ttl_ms=wake_ttl_ms,
                    holder=holder, ids=ids),
    )


def release(db: redis.Redis, destination_id: str, ids: list[str], holder: str,
            scores: dict[str, int] | None = None) -> int:
    """Give ``holder``'s leased deliveries back to pending (not sent: the job stops early), due now or,
    with ``scores``, each when it was due (it keeps its place in the line)."""
    return _release(db, destination_id, ids, holder, now_ms(), scores)


def drop(db: redis.Redis, destination_id: str, ids: list[str], holder: str) -> int:
    """End ``holder``'s leases of deliveries that no longer exist."""
    return _release(db, destination_id, ids, holder, None)


def _release(db: redis.Redis, destination_id: str, ids: list[str], holder: str, due: int | None,
             scores: dict[str, int] | None = None) -> int:
    if not ids:
        return 0
    return _scripts.get(db, "release")(
        keys=[keys.leases, keys.lease_holders, keys.pending(destination_id), keys.due],
        args=_named(destination=destination_id, due=due, holder=holder, ids=ids,
                    scores={k: str(v) for k, v in scores.items()} if scores else None),
    )


def own(db: redis.Redis, destination_ids: Iterable[str], ttl_ms: int) -> None:
    """A drain job handed its destinations to an engine: their wake flags live ``ttl_ms`` (the lease)
    from now, not as long as a job may wait in the queue, and the engine keeps them alive (``keep``)
    while it drains; so a flag outlives the death of the worker holding it by at most the lease."""
    _keep(db, list(destination_ids), ttl_ms, shorten=True)


def keep(db: redis.Redis, destination_ids: Iterable[str], ttl_ms: int) -> None:
    """Extend the wake flags of the destinations a live engine drains to ``ttl_ms`` from now."""
    _keep(db, list(destination_ids), ttl_ms)


def reclaim_flag(db: redis.Redis, destination_id: str, ttl_ms: int) -> None:
    """After a store outage, a drain that goes on makes its wake flag again if it lapsed meanwhile
    (ingest would otherwise enqueue a second drain for the destination), or extends it."""
    _keep(db, [destination_id], ttl_ms, create=True)


def _keep(db: redis.Redis, destination_ids: list[str], ttl_ms: int, shorten: bool = False,
          create: bool = False) -> None:
    if destination_ids:
        _scripts.get(db, "keep")(keys=[keys.wake(did) for did in destination_ids],
                                 args=_named(ttl_ms=ttl_ms, shorten=shorten or None, create=create or None))


def finish(db: redis.Redis, destination_id: str) -> bool:
    """Clear the wake flag if nothing is due; False means more came in and the drain goes on."""
    return bool(_scripts.get(db, "finish")(keys=[keys.pending(destination_id), keys.wake(destination_id)],
                                           args=_named(now=now_ms())))


def reclaim_expired(db: redis.Redis, limit: int = 1000) -> int:
    """Put deliveries whose lease expired (their worker died) back to pending."""
    patterns = keys.lua_patterns()
    return _scripts.get(db, "reclaim")(
        keys=[keys.leases, keys.due, keys.lease_holders],
        args=_named(now=now_ms(), limit=limit, delivery_key=patterns["delivery"], pending_key=patterns["pending"]),
    )
