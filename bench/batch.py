"""Batch delivery: one destination in batch mode against the non-batched path, side by side.

A source and a catch-all destination with ``"batch": {"size": --batch-size, "max_wait_s": 5}`` (the
default item and root templates: each event as JSON, the items as a JSON array) are created, and
``--events`` events are ingested through hookgate's own API (the Flask test client, 1,000 events a
request; not timed). Then one ``python -m hookgate.cli worker --burst`` subprocess sends them; it must do so
in exactly ``events / batch-size`` requests. The receiver (an asyncio HTTP/1.1 keep-alive server in a
process of its own) parses every body and counts requests, items (the length of a JSON array, 1 for
an object), distinct event ids, and requests whose ``X-Hookgate-Batch-Size`` does not match the array.

In the same run, ``--plain-events`` events go to a plain (non-batched) catch-all destination on the
same receiver, delivered by another burst worker, one request per event. The table shows the time
per event of both and their ratio. Timing: from starting the worker until the receiver has counted
every item (worker start-up included; the time excluding it, from the first request on, is shown too).

Redis: ``HOOKGATE_REDIS_URL`` if set (it is FLUSHDB'ed!), otherwise an embedded Valkey in a temp dir.
Run: ``/path/to/venv/bin/python bench/batch.py [--events N] [--batch-size B] [--plain-events M]``.
Exits 1 if a count is wrong or a phase does not finish in time.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import sys
import tempfile
from typing import Any

import redis

# Helpers shared with deliver.py and latency.py (a plain module: importing it starts nothing).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import ITEMS, MAX_ITEMS, REQUESTS, BenchError, Receiver, ingest, redis_server, run_burst, tail, worker_env  # noqa: E402

INGEST_TIMEOUT_S = 900.0
MAX_WAIT_S = 5


# --- one phase: ingest, then one burst worker -------------------------------------------------------
class Phase:
    """What one burst worker did, as the receiver counted it."""

    def __init__(self, events: int, counts: list[int], wall: float, first: float, exited: float) -> None:
        self.events = events
        self.requests, self.items, self.distinct, self.bad, self.mismatch, self.max_items = counts[:MAX_ITEMS + 1]
        self.wall, self.first, self.exited = wall, first, exited

    @property
    def us_per_event(self) -> float:
        return self.wall / self.events * 1e6

    @property
    def us_per_event_sending(self) -> float:
        return (self.wall - self.first) / self.events * 1e6


def run_worker(redis_url: str, receiver: Receiver, events: int, log_path: pathlib.Path) -> Phase:
    """One ``hookgate.cli worker --burst``: time from its start until the receiver counted ``events`` items."""
    before = receiver.snapshot()

    def progress() -> tuple[int, int]:
        now = receiver.snapshot()
        return now[REQUESTS] - before[REQUESTS], now[ITEMS] - before[ITEMS]

    wall, first, exited, code = run_burst([sys.executable, "-m", "hookgate.cli", "worker", "--burst"],
                                          worker_env(redis_url), log_path, "the worker", progress, events, "items")
    if code != 0:
        raise BenchError(f"the worker exited with code {code}" + tail(log_path))
    after = receiver.snapshot()
    counts = [a - b for a, b in zip(after, before, strict=True)]
    counts[MAX_ITEMS] = after[MAX_ITEMS]  # a maximum, not a counter (phases are run smallest batches first)
    return Phase(events, counts, wall, first, exited)


def check(phase: Phase, what: str, requests_expected: int) -> list[str]:
    problems = []
    if phase.requests != requests_expected:
        problems.append(f"{what}: {phase.requests} requests received, expected {requests_expected}")
    if phase.items != phase.events:
        problems.append(f"{what}: {phase.items} items received, expected {phase.events}")
    if phase.distinct != phase.events:
        problems.append(f"{what}: {phase.distinct} distinct event ids, expected {phase.events}")
    if phase.bad:
        problems.append(f"{what}: {phase.bad} bodies that are not a JSON array or object")
    if phase.mismatch:
        problems.append(f"{what}: {phase.mismatch} requests whose X-Hookgate-Batch-Size is not their item count")
    return problems


def print_table(batch: Phase, plain: Phase, batch_size: int, store: str) -> None:
    print(f"batch delivery: one `hookgate.cli worker --burst` per row, store: {store}, "
          f"receiver: asyncio HTTP/1.1 (own process, parses every body), {os.cpu_count()} CPUs")
    header = (f"{'path':<22} {'events':>8} {'requests':>9} {'items':>8} {'worker wall':>12} "
              f"{'µs/event':>9} {'events/s':>9} {'start→1st':>10} {'µs/event excl. start':>21}")
    print(header)
    print("-" * len(header))
    for name, phase in ((f"batch (size {batch_size})", batch), ("plain (1 per request)", plain)):
        print(f"{name:<22} {phase.events:>8} {phase.requests:>9} {phase.items:>8} {phase.wall:>10.2f} s "
              f"{phase.us_per_event:>9.1f} {phase.events / phase.wall:>9.0f} {phase.first:>8.2f} s "
              f"{phase.us_per_event_sending:>21.1f}")
    print(f"\nper-event time, plain ÷ batch: {plain.us_per_event / batch.us_per_event:.1f}× "
          f"(excluding worker start-up: {plain.us_per_event_sending / batch.us_per_event_sending:.1f}×)")
    print(f"largest request: {batch.max_items} items; worker exit after its last delivery: "
          f"batch {batch.exited - batch.wall:.2f} s, plain {plain.exited - plain.wall:.2f} s")


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally`s that stop the children


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=100_000, help="events for the batch destination (default 100000)")
    parser.add_argument("--batch-size", type=int, default=1000, help="batch size, 1–1000 (default 1000)")
    parser.add_argument("--plain-events", type=int, default=10_000,
                        help="events for the plain destination (default 10000)")
    args = parser.parse_args()
    if not 1 <= args.batch_size <= 1000:
        parser.error("--batch-size must be 1–1000 (hookgate's limit)")
    if args.events < 1 or args.plain_events < 1:
        parser.error("--events and --plain-events must be at least 1")
    if args.events % args.batch_size:
        # A partial batch waits max_wait_s for more; a burst worker does not wait for it.
        parser.error("--events must be a multiple of --batch-size (a burst worker leaves a partial batch waiting)")
    signal.signal(signal.SIGTERM, _terminate)

    receiver: Receiver | None = None
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hookgate-bench-batch-") as tmp, \
            redis_server(pathlib.Path(tmp)) as (url, store):
        try:
            receiver = Receiver(count_items=True, name="bench-batch-receiver")
            db = redis.Redis.from_url(url)  # a throwaway store: flushed before each phase's ingest
            try:
                print(f"plain: ingesting {args.plain_events} events…", file=sys.stderr, flush=True)
                db.flushdb()
                ingest(url, {"name": "plain", "url": receiver.url, "events": ["*"]}, args.plain_events,
                       INGEST_TIMEOUT_S)
                print("plain: hookgate worker…", file=sys.stderr, flush=True)
                plain = run_worker(url, receiver, args.plain_events, pathlib.Path(tmp) / "worker-plain.log")
                problems += check(plain, "plain", args.plain_events)

                print(f"batch: ingesting {args.events} events…", file=sys.stderr, flush=True)
                db.flushdb()
                ingest(url, {"name": "batch", "url": receiver.url, "events": ["*"],
                             "batch": {"size": args.batch_size, "max_wait_s": MAX_WAIT_S}}, args.events,
                       INGEST_TIMEOUT_S)
                print("batch: hookgate worker…", file=sys.stderr, flush=True)
                batch = run_worker(url, receiver, args.events, pathlib.Path(tmp) / "worker-batch.log")
                problems += check(batch, "batch", args.events // args.batch_size)
            finally:
                db.close()
        except (BenchError, redis.RedisError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            if receiver is not None:
                receiver.stop()

    print_table(batch, plain, args.batch_size, store)
    if problems:
        print("\nWRONG COUNTS:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("counts: all as expected (requests, items, distinct event ids, X-Hookgate-Batch-Size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
