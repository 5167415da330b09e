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


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


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
    """Key names. One place, so a reader can see the whole data model."""

    sources = PREFIX + "sources"  # hash: source id → source JSON
    destinations = PREFIX + "destinations"  # hash: destination id → destination JSON
    config_version = PREFIX + "config:version"  # random token, replaced on every configuration change
    deliveries = PREFIX + "deliveries"  # zset: delivery id → created ms (every delivery)
    leases = PREFIX + "leases"  # zset: "<destination id>|<delivery id>" → lease expiry ms
    lease_holders = PREFIX + "lease_holders"  # hash: the same member → the token of the job holding it
    due = PREFIX + "due"  # zset: destination id → earliest due ms of its pending deliveries

    @staticmethod
    def event(event_id: str) -> str:  # string: canonical event JSON (TTL: event retention)
        return f"{PREFIX}event:{event_id}"

    @staticmethod
    def event_deliveries(event_id: str) -> str:  # list of delivery ids (TTL: event retention)
        return f"{PREFIX}event:{event_id}:deliveries"

    @staticmethod
    def delivery(delivery_id: str) -> str:  # hash: the delivery's state (TTL: event retention)
        return f"{PREFIX}delivery:{delivery_id}"

    @staticmethod
    def attempts(delivery_id: str) -> str:  # list of attempt JSON, oldest first (TTL: event retention)
        return f"{PREFIX}delivery:{delivery_id}:attempts"

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
    def idempotency(source_id: str, external_id: str) -> str:  # string: event id (TTL: event retention)
        return f"{PREFIX}idem:{source_id}:{external_id}"

    @staticmethod
    def idempotent_request(source_id: str, key: str) -> str:  # string: the answer given (TTL: retention)
        return f"{PREFIX}idemreq:{source_id}:{key}"

    @staticmethod
    def seen_signature(source_id: str, value: str) -> str:  # string: set while a signature is fresh (replays)
        return f"{PREFIX}seen:{source_id}:{value}"

    @staticmethod
    def wake(destination_id: str) -> str:  # string: set while a drain job is queued or running
        return f"{PREFIX}dest:{destination_id}:wake"
