"""What ``GET /metrics`` shows (Prometheus text format), read from the store at scrape time.

Every number comes from Redis, never from a process's memory, so a scrape answered by any gunicorn
process sees what every worker on every host did:

- counters are cumulative hashes without a TTL: delivery outcomes and attempt latencies per
  destination (written by ``delivery/followups.py`` in the pipeline that writes the statistics,
  ``count_attempts``), ingested events per source (written by ``api/ingest.py`` once the answer is
  known, ``count_ingest``);
- gauges are read as they stand: the pending backlog and its oldest due delivery, the breaker's
  state, the requests the workers have in flight (``keys.concurrency``, each worker's own entry).

A scrape reads at most ``MAX_DESTINATIONS`` destinations (``hookgate_metrics_truncated`` says when
more exist), in pipelines of ``PIPELINE_DESTINATIONS``.
"""

from __future__ import annotations

import bisect
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from redis.client import Pipeline

from .store import keys

__all__ = ["ATTEMPT_OUTCOMES", "BREAKER_VALUES", "LATENCY_BUCKETS_MS", "MAX_DESTINATIONS", "StoreCollector",
           "count_attempts", "count_ingest", "registry"]

log = logging.getLogger(__name__)

ATTEMPT_OUTCOMES = ("delivered", "error", "bounced")  # an attempt's outcome (a request was made)
SETTLED_OUTCOMES = ("failed", "skipped")  # a delivery ended without (another) attempt
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
INGEST_RESULTS = {"accepted": "accepted", "duplicates": "duplicate", "rejected": "rejected"}
MAX_DESTINATIONS = 5000
PIPELINE_DESTINATIONS = 500


def count_attempts(pipe: Pipeline, destination_id: str, outcomes: Counter[str], latencies_ms: Iterable[float]) -> None:
    """A chunk's outcomes (one HINCRBY per outcome) and attempt latencies (one HINCRBY per bucket
    hit, and the count and sum), added to the destination's cumulative hashes in ``pipe``."""
    for outcome, n in outcomes.items():
        pipe.hincrby(keys.metrics_attempts(destination_id), outcome, n)
    latencies = list(latencies_ms)
    if not latencies:
        return
    buckets = Counter(bisect.bisect_left(LATENCY_BUCKETS_MS, ms) for ms in latencies)
    for index, n in buckets.items():
        field = str(LATENCY_BUCKETS_MS[index]) if index < len(LATENCY_BUCKETS_MS) else "inf"
        pipe.hincrby(keys.metrics_latency(destination_id), field, n)
    pipe.hincrby(keys.metrics_latency(destination_id), "count", len(latencies))
    pipe.hincrbyfloat(keys.metrics_latency(destination_id), "sum_ms", sum(latencies))


def count_ingest(db: redis.Redis, source: dict[str, Any], body: dict[str, Any]) -> None:
    """An ingest request's events by result (the 202's counts), one HINCRBY per result it had. Never
    raises: the events are stored already, and a lost count must not turn their 202 into an error."""
    try:
        with db.pipeline(transaction=False) as pipe:
            for field, result in INGEST_RESULTS.items():
                if body.get(field):
                    pipe.hincrby(keys.metrics_ingest(source["id"]), f"{source['kind']}|{result}", int(body[field]))
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not count the events of source %s for /metrics: %s", source["id"], exc)


def _in_flight(raw: dict[str, str]) -> int:
    total = 0
    for state in raw.values():
        try:
            total += int(json.loads(state).get("in_flight", 0))
        except (ValueError, TypeError, AttributeError):
            continue
    return total


class _Families:
    """The metric families of one scrape, filled destination by destination."""

    def __init__(self) -> None:
        did = ["destination_id"]
        self.attempts = CounterMetricFamily("hookgate_delivery_attempts", "Delivery attempts by outcome.",
                                            labels=did + ["outcome"])
        self.settled = CounterMetricFamily("hookgate_deliveries_settled", "Deliveries that ended failed "
                                           "(retries exhausted) or skipped (not sent).", labels=did + ["outcome"])
        self.latency = HistogramMetricFamily("hookgate_delivery_attempt_duration_seconds",
                                             "Duration of delivery attempts.", labels=did)
        self.backlog = GaugeMetricFamily("hookgate_pending_deliveries", "Deliveries waiting (due or retrying).",
                                         labels=did)
        self.oldest = GaugeMetricFamily("hookgate_oldest_pending_age_seconds", "Seconds since the earliest "
                                        "pending delivery came due (0 when none is due).", labels=did)
        self.breaker = GaugeMetricFamily("hookgate_breaker_state", "Circuit breaker: 0 closed, 1 half-open, "
                                         "2 open.", labels=did)
        self.in_flight = GaugeMetricFamily("hookgate_requests_in_flight", "Requests the workers have in flight.",
                                           labels=did)

    def add(self, did: str, row: list[Any], now_ms: float) -> None:
        """One destination's six replies: attempts, latency, pending count, its head, breaker state,
        concurrency."""
        attempts, latency, pending, head, breaker, concurrency = row
        for outcome in ATTEMPT_OUTCOMES:
            self.attempts.add_metric([did, outcome], int(attempts.get(outcome, 0)))
        for outcome in SETTLED_OUTCOMES:
            self.settled.add_metric([did, outcome], int(attempts.get(outcome, 0)))
        cumulative, buckets = 0, []
        for bound in LATENCY_BUCKETS_MS:
            cumulative += int(latency.get(str(bound), 0))
            buckets.append((repr(bound / 1000), cumulative))
        buckets.append(("+Inf", cumulative + int(latency.get("inf", 0))))
        self.latency.add_metric([did], buckets, float(latency.get("sum_ms", 0)) / 1000)
        self.backlog.add_metric([did], pending)
        self.oldest.add_metric([did], max(0.0, (now_ms - head[0][1]) / 1000) if head else 0.0)
        self.breaker.add_metric([did], BREAKER_VALUES.get(breaker or "closed", 0))
        self.in_flight.add_metric([did], _in_flight(concurrency))

    def all(self) -> list[Metric]:
        return [self.attempts, self.settled, self.latency, self.backlog, self.oldest, self.breaker, self.in_flight]


class StoreCollector(Collector):
    """A custom collector: every metric read from the store when scraped."""

    def __init__(self, db: redis.Redis, max_destinations: int = MAX_DESTINATIONS):
        self.db = db
        self.max_destinations = max_destinations

    def collect(self) -> Iterator[Metric]:
        total = int(self.db.zcard(keys.destination_ids))
        ids = [str(i) for i in self.db.zrange(keys.destination_ids, 0, self.max_destinations - 1)]
        families = _Families()
        for start in range(0, len(ids), PIPELINE_DESTINATIONS):
            self._read(ids[start:start + PIPELINE_DESTINATIONS], families)
        yield from families.all()
        yield self._ingested()
        truncated = GaugeMetricFamily("hookgate_metrics_truncated", "1 when more destinations exist than a scrape "
                                      f"reads ({self.max_destinations}).")
        truncated.add_metric([], 1 if total > len(ids) else 0)
        yield truncated
        yield GaugeMetricFamily("hookgate_destinations", "Destinations configured.", value=total)

    def _read(self, ids: list[str], families: _Families) -> None:
        with self.db.pipeline(transaction=False) as pipe:
            for did in ids:
                pipe.hgetall(keys.metrics_attempts(did))
                pipe.hgetall(keys.metrics_latency(did))
                pipe.zcard(keys.pending(did))
                pipe.zrange(keys.pending(did), 0, 0, withscores=True)
                pipe.hget(keys.breaker(did), "state")
                pipe.hgetall(keys.concurrency(did))
            rows = pipe.execute()
        now_ms = time.time() * 1000
        for n, did in enumerate(ids):
            families.add(did, rows[n * 6:n * 6 + 6], now_ms)

    def _ingested(self) -> Metric:
        family = CounterMetricFamily("hookgate_events_ingested", "Events received by source, kind and result.",
                                     labels=["source_id", "kind", "result"])
        source_ids = sorted(str(s) for s in self.db.hkeys(keys.sources))
        with self.db.pipeline(transaction=False) as pipe:
            for sid in source_ids:
                pipe.hgetall(keys.metrics_ingest(sid))
            rows = pipe.execute()
        for sid, counts in zip(source_ids, rows, strict=True):
            for field, value in sorted(counts.items()):
                kind, _, result = field.partition("|")
                family.add_metric([sid, kind, result], int(value))
        return family


def registry(db: redis.Redis) -> CollectorRegistry:
    """A registry holding only the store's collector (nothing of the process answering)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(db))
    return reg
