"""The Redis connection and the names of every key hookgate writes.

Redis (or Valkey) is the one store. All keys start with ``hookgate:``; RQ keeps its own ``rq:`` keys.
hookgate's own data uses a ``decode_responses=True`` client; RQ gets a bytes client of its own, as RQ
requires.
"""

from __future__ import annotations

import itertools
import secrets
import time

import redis

__all__ = ["bump_config", "connect", "connect_rq", "keys", "new_id", "now_ms"]

PREFIX = "hookgate:"


MAX_CONNECTIONS = 512  # per process: a worker's engine has up to HOOKGATE_WORKER_CONCURRENCY lanes at once


def connect(url: str) -> redis.Redis:
    """A client whose pool waits for a free connection past ``MAX_CONNECTIONS`` rather than failing
    (redis-py's own pool refuses past 100)."""
    pool = redis.BlockingConnectionPool.from_url(url, decode_responses=True, health_check_interval=30,
                                                 max_connections=MAX_CONNECTIONS, timeout=30)
    return redis.Redis(connection_pool=pool)


def connect_rq(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, health_check_interval=30)


def now_ms() -> int:
    return int(time.time() * 1000)


_sequence = itertools.count()


def new_id(prefix: str) -> str:
    """A sortable id: milliseconds since the epoch, a per-process sequence, then 48 random bits
    (``evt_0193ab…``). Ids made by one process sort in the order they were made, also within one
    millisecond, so deliveries stored together are sent in the order they came."""
    return f"{prefix}_{now_ms():012x}{next(_sequence) & 0xFFFF:04x}{secrets.token_hex(6)}"


def bump_config(pipe) -> None:
    """Mark the configuration changed. A random token rather than a counter: a counter restarts
    after FLUSHDB or a restore and could meet a value a process already built its index for."""
    pipe.set(keys.config_version, secrets.token_hex(8))


class keys:
    """Every key hookgate writes, built here and nowhere else, so a reader sees the whole data model.

    Lua scripts that must name keys they learn while running (the lease reclaimer finds delivery ids
    in a sorted set) get the patterns below from ``keys.lua_patterns()`` as arguments, never their own
    copy of a name. ``tests/test_code_health.py`` checks that no other module spells ``hookgate:``.
    """

    # -- configuration (no TTL: it is what the operator made) --------------------------------------
    sources = PREFIX + "sources"  # hash: source id → source JSON
    destinations = PREFIX + "destinations"  # hash: destination id → destination JSON
    destination_ids = PREFIX + "destination_ids"  # zset: destination id → 0 (ids in order, for pages of the list)
    auth_profiles = PREFIX + "auth_profiles"  # hash: profile id → profile JSON (secrets encrypted)
    policies = PREFIX + "policies"  # hash: policy id → policy JSON
    presets = PREFIX + "presets"  # hash: user preset name → preset JSON
    admin_tokens = PREFIX + "admin_tokens"  # hash: token id → token JSON (no secret)
    admin_token_hashes = PREFIX + "admin_token_hashes"  # hash: SHA-256 of a token → token id
    config_version = PREFIX + "config:version"  # random token, replaced on every configuration change

    # -- the delivery queue --------------------------------------------------------------------------
    deliveries = PREFIX + "deliveries"  # zset: delivery id → created ms (every delivery)
    leases = PREFIX + "leases"  # zset: "<destination id>|<delivery id>" → lease expiry ms
    lease_holders = PREFIX + "lease_holders"  # hash: the same member → the token of the job holding it
    due = PREFIX + "due"  # zset: destination id → earliest due ms of its pending deliveries
    notify = PREFIX + "notify"  # zset: destination id → when to notify about it next (ms)

    @staticmethod
    def event(event_id: str) -> str:  # string: canonical event JSON (TTL: event retention)
        return f"{PREFIX}event:{event_id}"

    @staticmethod
    def event_deliveries(event_id: str) -> str:  # list of delivery ids (TTL: event retention)
        return f"{PREFIX}event:{event_id}:deliveries"

    @staticmethod
    def delivery(delivery_id: str) -> str:  # hash: the delivery's state and attempt log (TTL: event retention)
        return f"{PREFIX}delivery:{delivery_id}"

    @staticmethod
    def status(status: str) -> str:  # zset: delivery id → created ms, one per delivery status
        return f"{PREFIX}deliveries:status:{status}"

    @staticmethod
    def destination_deliveries(destination_id: str) -> str:  # zset: delivery id → created ms
        return f"{PREFIX}dest:{destination_id}:deliveries"

    @staticmethod
    def pending(destination_id: str) -> str:  # zset: delivery id → due ms (first attempt or retry)
        return f"{PREFIX}dest:{destination_id}:pending"

    @staticmethod
    def wake(destination_id: str) -> str:  # string: set while a drain job is queued or running
        return f"{PREFIX}dest:{destination_id}:wake"

    @staticmethod
    def failing_since(destination_id: str) -> str:  # string: ms of the first failure of a failing run
        return f"{PREFIX}dest:{destination_id}:failing_since"

    @staticmethod
    def concurrency(destination_id: str) -> str:  # hash: worker → its lanes' limit and in-flight (TTL 30 s)
        return f"{PREFIX}dest:{destination_id}:concurrency"

    @staticmethod
    def breaker(destination_id: str) -> str:  # hash: the circuit breaker's state (TTL: 8 days; see breaker.py)
        return f"{PREFIX}dest:{destination_id}:breaker"

    @staticmethod
    def lua_patterns() -> dict[str, str]:
        """Key patterns for Lua's ``string.format`` (``%s`` is the id), passed to scripts as arguments."""
        return {"delivery": f"{PREFIX}delivery:%s", "pending": f"{PREFIX}dest:%s:pending"}

    # -- ingest --------------------------------------------------------------------------------------
    events = PREFIX + "events"  # zset: event id → received ms (every stored event; trimmed to retention)

    @staticmethod
    def source_events(source_id: str) -> str:  # zset: event id → received ms (trimmed to retention)
        return f"{PREFIX}source:{source_id}:events"

    @staticmethod
    def idempotency(source_id: str, external_id: str) -> str:  # string: event id (TTL: event retention)
        return f"{PREFIX}idem:{source_id}:{external_id}"

    @staticmethod
    def idempotent_request(source_id: str, key: str) -> str:  # string: the answer given (TTL: retention)
        return f"{PREFIX}idemreq:{source_id}:{key}"

    @staticmethod
    def seen_signature(source_id: str, value: str) -> str:  # string: set while a signature is fresh (replays)
        return f"{PREFIX}seen:{source_id}:{value}"

    # -- throughput policies, OAuth tokens, statistics, replays -----------------------------------------
    @staticmethod
    def policy_slots(policy_id: str) -> str:  # zset: slot holder → expiry ms (the concurrency limit)
        return f"{PREFIX}policy:{policy_id}:slots"

    @staticmethod
    def policy_rate(policy_id: str) -> str:  # string: the rate limiter's state (TTL: one window)
        return f"{PREFIX}policy:{policy_id}:rate"

    @staticmethod
    def oauth_token(profile_id: str) -> str:  # string: a cached access token (encrypted; TTL: its expiry)
        return f"{PREFIX}oauth:{profile_id}"

    @staticmethod
    def stats(destination_id: str, unit: str, bucket: int) -> str:  # hash: outcome → count (TTL: 2 h / 8 d)
        return f"{PREFIX}stats:{destination_id}:{unit}:{bucket}"

    @staticmethod
    def replay(replay_id: str) -> str:  # hash: a bulk replay's progress (TTL: 7 days)
        return f"{PREFIX}replay:{replay_id}"
