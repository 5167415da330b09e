"""The Redis connection and the names of every key hookgate writes.

Redis (or Valkey) is the one store. All keys start with ``hookgate:``; RQ keeps its own ``rq:`` keys.
hookgate's own data uses a ``decode_responses=True`` client; RQ gets a bytes client of its own, as RQ
requires.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["bump_config", "connect", "connect_probe", "connect_rq", "describe", "keys", "new_id", "now_ms",
           "open_probe", "open_rq", "open_store", "replicated_transaction"]

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


class _SentinelBlockingPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool (asks the sentinels where the primary is, drops connections to a demoted one)
    with the blocking pool's waiting for a free connection, as ``connect`` has."""


SENTINEL_TIMEOUT_S = 1.0  # a sentinel that does not answer within this is skipped for the next one


def _sentinel(settings: Settings) -> Sentinel:
    return Sentinel(list(settings.redis_sentinels), socket_connect_timeout=SENTINEL_TIMEOUT_S,
                    sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S,
                                     "socket_connect_timeout": SENTINEL_TIMEOUT_S})


def open_store(settings: Settings) -> redis.Redis:
    """hookgate's client for the configured store: ``HOOKGATE_REDIS_URL``, or the primary that
    ``HOOKGATE_REDIS_SENTINELS`` name for ``HOOKGATE_REDIS_SENTINEL_MASTER``, followed across failovers."""
    if not settings.redis_sentinels:
        return connect(settings.redis_url or "")
    return _sentinel(settings).master_for(
        settings.redis_sentinel_master, connection_pool_class=_SentinelBlockingPool, decode_responses=True,
        health_check_interval=30, max_connections=MAX_CONNECTIONS, timeout=30, password=settings.redis_password)


def open_rq(settings: Settings) -> redis.Redis:
    """RQ's bytes client for the same store."""
    if not settings.redis_sentinels:
        return connect_rq(settings.redis_url or "")
    return _sentinel(settings).master_for(settings.redis_sentinel_master, health_check_interval=30,
                                          password=settings.redis_password)


def describe(settings: Settings) -> str:
    """Where the store is, for a person to read: never a password."""
    if settings.redis_sentinels:
        sentinels = ",".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                             for host, port in settings.redis_sentinels)
        return f"primary {settings.redis_sentinel_master!r} via Sentinel {sentinels}"
    parts = urlsplit(settings.redis_url or "")
    if parts.password is None:
        return settings.redis_url or ""
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{parts.netloc.rpartition('@')[2]}"))


class NotReplicated(redis.RedisError):
    """A write the primary has, that no replica acknowledged in time (``WAIT``)."""

    def __init__(self, acknowledged: int, required: int, timeout_ms: int):
        super().__init__(f"{acknowledged} of {required} replica(s) acknowledged the write within {timeout_ms} ms")
        self.acknowledged, self.required, self.timeout_ms = acknowledged, required, timeout_ms


class _Lent:
    """A pool of one borrowed connection, for a pipeline that must not give it back: ``WAIT`` counts
    the writes of the connection it is sent on, so it must follow the transaction on the same one."""

    def __init__(self, connection) -> None:
        self.connection = connection

    def get_connection(self, *args, **kwargs):
        return self.connection

    def release(self, connection) -> None:
        pass


@contextmanager
def replicated_transaction(db: redis.Redis, replicas: int, timeout_ms: int) -> Iterator[Pipeline]:
    """A transaction (``MULTI``/``EXEC``) executed on leaving the block, then ``WAIT replicas
    timeout_ms`` on its connection; ``NotReplicated`` when fewer replicas acknowledged it in time
    (the primary has the write all the same). ``replicas=0``: just the transaction."""
    if replicas == 0:
        with db.pipeline(transaction=True) as pipe:
            yield pipe
            pipe.execute()
        return
    connection = db.connection_pool.get_connection()
    try:
        with Pipeline(_Lent(connection), db.response_callbacks, True, None) as pipe:  # type: ignore[arg-type]
            yield pipe
            pipe.execute()
        connection.send_command("WAIT", replicas, timeout_ms)
        acknowledged = int(connection.read_response())
    except BaseException:
        connection.disconnect()  # an unread reply must not reach the next user of the connection
        raise
    finally:
        db.connection_pool.release(connection)
    if acknowledged < replicas:
        raise NotReplicated(acknowledged, replicas, timeout_ms)


def connect_probe(url: str) -> redis.Redis:
    """A client that asks once and says at once whether the store answers (no retries of its own:
    the caller chooses when to ask again)."""
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=1, socket_timeout=2)


def open_probe(settings: Settings) -> redis.Redis:
    """``connect_probe`` for the configured store: through the sentinels, the current primary."""
    if not settings.redis_sentinels:
        return connect_probe(settings.redis_url or "")
    return _sentinel(settings).master_for(settings.redis_sentinel_master, retry=Retry(NoBackoff(), 0),
                                          socket_connect_timeout=1, socket_timeout=2,
                                          password=settings.redis_password)


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
    def seen_signature(source_id: str, value: str) -> str:  # string: the answer to a signed message (repeats)
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

    # -- /metrics: cumulative counters (no TTL: a Prometheus counter only goes up) ----------------------
    @staticmethod
    def metrics_attempts(destination_id: str) -> str:  # hash: outcome → count since the start
        return f"{PREFIX}metrics:attempts:{destination_id}"

    @staticmethod
    def metrics_latency(destination_id: str) -> str:  # hash: bucket bound (ms) / "sum_ms" / "count" → value
        return f"{PREFIX}metrics:latency:{destination_id}"

    @staticmethod
    def metrics_ingest(source_id: str) -> str:  # hash: "<kind>|<result>" → events since the start
        return f"{PREFIX}metrics:ingest:{source_id}"


    @staticmethod
    def replay(replay_id: str) -> str:  # hash: a bulk replay's progress (TTL: 7 days)
        return f"{PREFIX}replay:{replay_id}"
