"""Throughput policies: a concurrency limit, and optionally a rate, shared by every destination that
names the policy — across all worker processes and hosts.

Slots are members of a sorted set scored by when they expire: a drain job holds one slot while it
sends and renews it with each request, so a worker that dies leaks nothing (its slot expires). A
renewal also checks the limit, so lowering it takes effect for work already running: holders past
the new limit give their slot up at their next request. The rate is GCRA (one key per policy: the
theoretical arrival time of the next request).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import redis

from .errors import Conflict, NotFound
from .store import bump_config, keys, new_id, now_ms

__all__ = ["PolicyStore", "Throttle"]


_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  if redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[4]) then
    redis.call('ZREM', KEYS[1], ARGV[3])
    return 0
  end
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
return 1
"""

# GCRA: returns 0 when the request may go now, else the milliseconds to wait.
_RATE = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > interval then return tat - now - interval end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(interval * 2) + 1000)
return 0
"""


class PolicyStore:
    def __init__(self, db: redis.Redis):
        self.db = db

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        stamp = now_ms()
        policy = {"id": new_id("pol"), **fields, "created_at": stamp, "updated_at": stamp}
        self._save(policy)
        return policy

    def get(self, policy_id: str) -> dict[str, Any]:
        raw = self.db.hget(keys.policies, policy_id)
        if raw is None:
            raise NotFound(f"no policy {policy_id!r}", {"id": policy_id})
        return json.loads(raw)

    def find(self, policy_id: str) -> dict[str, Any] | None:
        raw = self.db.hget(keys.policies, policy_id)
        return json.loads(raw) if raw else None

    def all(self) -> list[dict[str, Any]]:
        return sorted((json.loads(v) for v in self.db.hvals(keys.policies)), key=lambda p: p["id"])

    def update(self, policy_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        policy = self.get(policy_id)
        policy.update(changes, updated_at=now_ms())
        self._save(policy)
        return policy

    def delete(self, policy_id: str, in_use_by: list[str]) -> None:
        if in_use_by:
            raise Conflict("the policy is in use", {"destinations": in_use_by})
        if not self.db.hdel(keys.policies, policy_id):
            raise NotFound(f"no policy {policy_id!r}", {"id": policy_id})

    def _save(self, policy: dict[str, Any]) -> None:
        with self.db.pipeline() as pipe:
            pipe.hset(keys.policies, policy["id"], json.dumps(policy))
            bump_config(pipe)
            pipe.execute()


class Throttle:
    """One drain job's hold on a policy: ``acquire`` before each request, ``release`` when done."""

    def __init__(self, db: redis.Redis, policy: dict[str, Any], hold_ms: int):
        self.db = db
        self.policy = policy
        self.hold_ms = hold_ms
        self.holder = secrets.token_hex(8)
        self.yielded = 0  # set when the drain job gave way: how long until it may go on (ms)
        self._acquire = db.register_script(_ACQUIRE)
        self._rate = db.register_script(_RATE)

    def refresh(self, policy: dict[str, Any]) -> None:
        self.policy = policy

    def acquire(self) -> bool:
        """Take (or keep) a slot; False when the policy is full (the caller yields)."""
        now = now_ms()
        return bool(self._acquire(keys=[keys.policy_slots(self.policy["id"])],
                                  args=[now, now + self.hold_ms, self.holder, int(self.policy["concurrency"])]))

    def wait_ms(self) -> int:
        """0 when a request may go now under the policy's rate, else how long to wait."""
        rate = self.policy.get("rate_per_s")
        if not rate:
            return 0
        return int(self._rate(keys=[keys.policy_rate(self.policy["id"])], args=[now_ms(), 1000.0 / float(rate)]))

    def release(self) -> None:
        self.db.zrem(keys.policy_slots(self.policy["id"]), self.holder)
