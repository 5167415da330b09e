"""Per-destination delivery statistics: counts by outcome in minute and hour buckets.

Each outcome adds one to ``hookgate:stats:<destination>:m:<minute>`` and ``…:h:<hour>`` (hashes of
outcome → count), written in the same transaction as the outcome itself. Minute buckets are kept 2
hours and hour buckets 8 days, so reading the last hour or the last week is a handful of HMGETs.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.client import Pipeline

from .store import keys

__all__ = ["OUTCOMES", "count", "read"]

OUTCOMES = ("delivered", "error", "bounced", "failed", "skipped")
MINUTE_TTL = 2 * 3600
HOUR_TTL = 8 * 86400


def count(pipe: Pipeline, destination_id: str, outcome: str, n: int = 1, at: float | None = None) -> None:
    """Add ``n`` of ``outcome`` to the destination's buckets (inside the caller's pipeline)."""
    at = time.time() if at is None else at
    minute, hour = int(at // 60), int(at // 3600)
    pipe.hincrby(keys.stats(destination_id, "m", minute), outcome, n)
    pipe.expire(keys.stats(destination_id, "m", minute), MINUTE_TTL)
    pipe.hincrby(keys.stats(destination_id, "h", hour), outcome, n)
    pipe.expire(keys.stats(destination_id, "h", hour), HOUR_TTL)


def read(db: redis.Redis, destination_id: str, *, minutes: int = 60, hours: int = 24,
         now: float | None = None) -> dict[str, Any]:
    """The last ``minutes`` minute buckets and ``hours`` hour buckets, oldest first, with totals
    (the last buckets are those of ``now``, seconds since the epoch; by default the present)."""
    now = time.time() if now is None else now
    minute_ids = [int(now // 60) - n for n in range(minutes - 1, -1, -1)]
    hour_ids = [int(now // 3600) - n for n in range(hours - 1, -1, -1)]
    with db.pipeline(transaction=False) as pipe:
        for bucket in minute_ids:
            pipe.hmget(keys.stats(destination_id, "m", bucket), OUTCOMES)
        for bucket in hour_ids:
            pipe.hmget(keys.stats(destination_id, "h", bucket), OUTCOMES)
        rows = pipe.execute()

    def shape(buckets: list[int], values: list[list[str | None]], seconds: int) -> list[dict[str, Any]]:
        return [{"start": bucket * seconds, **{o: int(v or 0) for o, v in zip(OUTCOMES, counts, strict=True)}}
                for bucket, counts in zip(buckets, values, strict=True)]

    per_minute = shape(minute_ids, rows[:minutes], 60)
    per_hour = shape(hour_ids, rows[minutes:], 3600)
    return {
        "destination_id": destination_id,
        "last_hour": {o: sum(b[o] for b in per_minute) for o in OUTCOMES},
        "last_day": {o: sum(b[o] for b in per_hour) for o in OUTCOMES},
        "per_minute": per_minute,
        "per_hour": per_hour,
    }
