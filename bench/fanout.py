"""Fan-out: how long until every destination has its delivery, with 2 ``hookgate worker`` processes and a
fast local receiver.

Scenarios (each on a flushed store, with workers started for it):

- ``1 event → 1,000 destinations`` (``--destinations``): 1,000 destinations subscribe to "purchase",
  and one "purchase" event is ingested.
- ``5,000 destinations × 1 event`` (``--many``): 5,000 destinations, each subscribed to an event name
  of its own (``e0`` … ``e4999``), and 5,000 events, one for each (1,000 a request): many quiet
  destinations that each get a little traffic.
- ``1 event → 5,000 destinations`` (``--many``; leave it out with ``--no-wide``): the first
  scenario, wider.

Every destination has its own path on one receiver (``_common``'s asyncio HTTP/1.1 keep-alive server
in a process of its own, answering 200 at once). The destinations and the source are created through
hookgate's own API (the Flask test client, not timed); then ``--workers`` (default 2) long-running
``python -m hookgate.cli worker`` processes are started and warmed up (one "warmup" event to 4
destinations of its own, waited for). The clock starts just before the events are posted (through
the same test client, in this process) and stops when the receiver has counted every delivery; so the
time includes ingest, which is where fan-out enqueues a drain job per destination. Also shown: how
long the ingest requests took, and the first delivery.

Redis: ``HOOKGATE_REDIS_URL`` if set (it is FLUSHDB'ed!), otherwise an embedded Valkey in a temp dir.
Run: ``/path/to/venv/bin/python bench/fanout.py [--destinations 1000] [--many 5000] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from _common import (
    WORKER_TIMEOUT_S,
    Api,
    BenchError,
    Receiver,
    delta,
    events,
    process_cpu_s,
    redis_server,
    start_child,
    stop_child,
    store_counters,
    tail,
    worker_env,
)

WARMUP_DESTINATIONS = 4
TARGETS = {("1k", 1000): 1.5, ("many", 5000): 5.0}  # issue 16: seconds until all delivered, at these sizes


@dataclass
class Scenario:
    key: str
    title: str
    destinations: list[dict[str, Any]]
    events: list[dict[str, Any]]
    deliveries: int


@dataclass
class Timing:
    ingest_s: float
    first_s: float
    all_s: float
    workers_cpu_s: float  # the workers' CPU over the timed window
    store_cpu_s: float  # the store's
    commands: float  # the store's commands (INFO commandstats) over it


class Watch(threading.Thread):
    """Polls the receiver every 2 ms from ``start``: when the first of ``n`` more requests arrived, and
    when the last did."""

    def __init__(self, receiver: Receiver, n: int) -> None:
        super().__init__(daemon=True)
        self.receiver, self.n, self.before = receiver, n, receiver.count
        self.start_at, self.first, self.last = 0.0, 0.0, 0.0
        self.done = threading.Event()

    def run(self) -> None:
        deadline = self.start_at + WORKER_TIMEOUT_S
        while time.perf_counter() < deadline:
            got = self.receiver.count - self.before
            if got and not self.first:
                self.first = time.perf_counter() - self.start_at
            if got >= self.n:
                self.last = time.perf_counter() - self.start_at
                break
            time.sleep(0.002)
        self.done.set()


def scenarios(receiver: Receiver, args: argparse.Namespace) -> list[Scenario]:
    def spec(i: int, event: str) -> dict[str, Any]:
        return {"name": f"d{i}", "url": f"{receiver.url}/d{i}", "events": [event]}

    found = [Scenario("1k", f"1 event → {args.destinations:,} destinations",
                      [spec(i, "purchase") for i in range(args.destinations)], events(1), args.destinations),
             Scenario("many", f"{args.many:,} destinations × 1 event each",
                      [spec(i, f"e{i}") for i in range(args.many)],
                      [event for i in range(args.many) for event in events(1, f"e{i}", i)], args.many)]
    if args.wide:
        found.append(Scenario("wide", f"1 event → {args.many:,} destinations",
                              [spec(i, "purchase") for i in range(args.many)], events(1), args.many))
    return found


def wait_for(receiver: Receiver, n: int, timeout_s: float, workers: list[subprocess.Popen], log: pathlib.Path) -> None:
    deadline, before = time.monotonic() + timeout_s, receiver.count
    while receiver.count - before < n:
        if time.monotonic() > deadline or any(worker.poll() is not None for worker in workers):
            raise BenchError(f"the warm-up delivered {receiver.count - before}/{n}" + tail(log))
        time.sleep(0.01)


def run(url: str, receiver: Receiver, scenario: Scenario, workers: int, tmp: pathlib.Path) -> Timing:
    """Flush, configure, start and warm up the workers, then time the scenario's events."""
    with redis.Redis.from_url(url) as db:
        db.flushdb()
    with Api(url) as api:
        source = api.source()
        api.destinations(scenario.destinations)
        api.destinations({"name": f"warm{i}", "url": f"{receiver.url}/warm{i}", "events": ["warmup"]}
                         for i in range(WARMUP_DESTINATIONS))
        logs = [tmp / f"worker-{scenario.key}-{i}.log" for i in range(workers)]
        children = [start_child([sys.executable, "-m", "hookgate.cli", "worker", "--name", f"bench-{scenario.key}-{i}"],
                                worker_env(url), log) for i, log in enumerate(logs)]
        try:
            api.send(source, events(1, "warmup"))
            wait_for(receiver, WARMUP_DESTINATIONS, 60, children, logs[0])
            with redis.Redis.from_url(url) as db:
                counters, cpu = store_counters(db), sum(process_cpu_s(child.pid) for child in children)
                watch = Watch(receiver, scenario.deliveries)
                watch.start_at = time.perf_counter()
                watch.start()
                api.send(source, scenario.events)
                ingest_s = time.perf_counter() - watch.start_at
                watch.done.wait(WORKER_TIMEOUT_S + 5)
                cpu = sum(process_cpu_s(child.pid) for child in children) - cpu
                spent = delta(counters, store_counters(db))
            if not watch.last:
                raise BenchError(f"{scenario.title}: {receiver.count - watch.before}/{scenario.deliveries} delivered "
                                 f"after {WORKER_TIMEOUT_S:.0f} s" + tail(logs[0]))
            commands = sum(value for key, value in spent.items() if key.startswith("calls:"))
            return Timing(ingest_s, watch.first, watch.last, cpu, spent["cpu_s"], commands)
        finally:
            for child in children:
                child.terminate()  # all at once: each one's warm shutdown runs in parallel
            for child in children:
                stop_child(child)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--destinations", type=int, default=1000, help="destinations of the 1-event fan-out (1000)")
    parser.add_argument("--many", type=int, default=5000, help="destinations of the many-destination rows (5000)")
    parser.add_argument("--workers", type=int, default=2, help="hookgate worker processes (default 2)")
    parser.add_argument("--no-wide", dest="wide", action="store_false", help="leave out 1 event → --many destinations")
    args = parser.parse_args()
    if min(args.destinations, args.many, args.workers) < 1:
        parser.error("--destinations, --many and --workers must be at least 1")

    results: list[tuple[Scenario, Timing]] = []
    receiver: Receiver | None = None
    with tempfile.TemporaryDirectory(prefix="hookgate-bench-") as tmp, \
            redis_server(pathlib.Path(tmp)) as (url, store):
        try:
            receiver = Receiver()
            for scenario in scenarios(receiver, args):
                print(f"{scenario.title}: configuring, starting {args.workers} workers…", file=sys.stderr, flush=True)
                results.append((scenario, run(url, receiver, scenario, args.workers, pathlib.Path(tmp))))
        except (BenchError, redis.RedisError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            if receiver is not None:
                receiver.stop()

    print(f"fan-out: {args.workers} hookgate worker processes (warmed up), fast receiver (asyncio, own process); "
          f"store: {store}; {os.cpu_count()} CPUs; clock from the first ingest request to the last delivery")
    print(f"  {'scenario':<34} {'deliveries':>10} {'ingest s':>8} {'1st s':>6} {'all delivered s':>15} "
          f"{'per s':>6} {'workers CPU s':>13} {'Redis CPU s':>11} {'cmds/delivery':>13}  issue 16 target")
    for scenario, timing in results:
        target = TARGETS.get((scenario.key, scenario.deliveries))
        wanted = f"≤ {target:g} s ({'met' if timing.all_s <= target else 'NOT met'})" if target else "-"
        print(f"  {scenario.title:<34} {scenario.deliveries:>10,} {timing.ingest_s:>8.2f} {timing.first_s:>6.2f} "
              f"{timing.all_s:>15.2f} {scenario.deliveries / timing.all_s:>6.0f} {timing.workers_cpu_s:>13.1f} "
              f"{timing.store_cpu_s:>11.1f} {timing.commands / scenario.deliveries:>13.0f}  {wanted}")
    print("  (CPU and commands over the timed window, ingest included; the bench process ingests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
