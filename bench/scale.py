"""Running at scale: what one Redis primary carries, and the API and worker processes it takes to feed it.

Each row is one run on a flushed store: ``--destinations`` destinations (each subscribed to an event
name of its own, on one fast receiver: ``_common``'s asyncio HTTP/1.1 keep-alive server in a process
of its own, answering 200 at once) get ``--events`` events between them, **one event a request**, as a
platform's webhook sends them. Two phases, measured apart:

- **ingest**: the events posted through hookgate's ingest route (the Flask test client, in this
  process, no worker running). Per event: Redis commands (INFO commandstats), Redis CPU µs
  (``used_cpu_user + used_cpu_sys``), Redis memory (``used_memory``, the event and its pending
  delivery) and the API's CPU µs (this process's, the test client's own share included; HTTP parsing
  and gunicorn are not: ``bench/ingest.py`` measures those with wrk).
- **delivery**: then ``--workers`` long-running ``hookgate worker`` processes are started, and
  measured from the receiver's first delivery to its last (their start-up is not a cost per
  delivery). Per delivery: Redis commands, Redis CPU µs, the workers' CPU µs; and deliveries/s, and
  the share of one core Redis was busy.

A Redis (or Valkey) primary runs its commands on one thread, so what it can carry is its one core's
time divided by its CPU time per event delivered (ingest + delivery): that ceiling is printed with the
API and worker cores it takes at that rate (each process's CPU per event, times the rate). On a
machine with few cores the workers, the receiver and Redis share them, so the measured rate is the
machine's, not Redis's: Redis's busy share says how far it was from its own limit.

Redis: ``HOOKGATE_REDIS_URL`` if set (it is FLUSHDB'ed!), otherwise an embedded Valkey in a temp dir.
Run: ``/path/to/venv/bin/python bench/scale.py [--events 10000] [--destinations 20] [--workers 1,2]``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time
from dataclasses import dataclass

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


@dataclass
class Phase:
    n: int
    wall_s: float
    commands: float
    store_cpu_s: float
    memory: float
    process_cpu_s: float  # the API's (this process) or the workers'

    def per(self, value: float, scale: float = 1.0) -> float:
        return value * scale / self.n


def commands(spent: dict[str, float]) -> float:
    return sum(value for key, value in spent.items() if key.startswith("calls:"))


def ingest(api: Api, db: redis.Redis, n: int, names: int) -> Phase:
    source = api.source()
    batch = [event for i in range(n) for event in events(1, f"e{i % names}", i)]
    before, cpu, started = store_counters(db), time.process_time(), time.perf_counter()
    api.send(source, batch, per_request=1)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    spent = delta(before, store_counters(db))
    return Phase(n, wall, commands(spent), spent["cpu_s"], spent["used_memory"], cpu)


def deliver(url: str, db: redis.Redis, receiver: Receiver, n: int, workers: int, tmp: pathlib.Path) -> Phase:
    """Start ``workers`` workers and measure from their first delivery to their last (their start-up,
    ~2 s of CPU each, is not a cost per delivery)."""
    counted = receiver.count
    logs = [tmp / f"worker-{workers}-{i}.log" for i in range(workers)]
    started = time.perf_counter()
    children = [start_child([sys.executable, "-m", "hookgate.cli", "worker", "--name", f"bench-scale-{i}"],
                            worker_env(url), log) for i, log in enumerate(logs)]
    try:
        first: tuple[int, float, dict[str, float], float] | None = None
        while (done := receiver.count - counted) < n:
            elapsed = time.perf_counter() - started
            if elapsed > WORKER_TIMEOUT_S or any(child.poll() is not None for child in children):
                raise BenchError(f"{workers} workers delivered {done}/{n} in {elapsed:.0f} s" + tail(logs[0]))
            if done and first is None:
                first = (done, time.perf_counter(), store_counters(db), sum(process_cpu_s(c.pid) for c in children))
            time.sleep(0.002)
        if first is None:  # all of them before the first look
            raise BenchError(f"{n} deliveries were too few to measure: give more --events")
        wall = time.perf_counter() - first[1]
        cpu = sum(process_cpu_s(child.pid) for child in children) - first[3]
        spent = delta(first[2], store_counters(db))
    finally:
        for child in children:
            child.terminate()  # all at once: each one's warm shutdown runs in parallel
        for child in children:
            stop_child(child)
    return Phase(n - first[0], wall, commands(spent), spent["cpu_s"], spent["used_memory"], cpu)


def run(url: str, receiver: Receiver, args: argparse.Namespace, workers: int, tmp: pathlib.Path) -> tuple[Phase, Phase]:
    with redis.Redis.from_url(url) as db:
        db.flushdb()
        with Api(url) as api:
            api.destinations({"name": f"d{i}", "url": f"{receiver.url}/d{i}", "events": [f"e{i}"]}
                             for i in range(args.destinations))
            taken = ingest(api, db, args.events, args.destinations)
        return taken, deliver(url, db, receiver, args.events, workers, tmp)


def report(store: str, args: argparse.Namespace, rows: list[tuple[int, Phase, Phase]]) -> None:
    print(f"running at scale: {args.events:,} events, one a request, to {args.destinations} destinations "
          f"(fast receiver); store: {store}; {os.cpu_count()} CPUs")
    print(f"  {'workers':>7} {'ingest/s':>8} {'deliveries/s':>12} {'Redis busy':>10}   per event: "
          f"{'cmds':>5} {'Redis µs':>8} {'bytes':>6} {'API µs':>6}   per delivery: {'cmds':>5} {'Redis µs':>8} "
          f"{'worker µs':>9}")
    for workers, taken, sent in rows:
        print(f"  {workers:>7} {taken.n / taken.wall_s:>8.0f} {sent.n / sent.wall_s:>12.0f} "
              f"{sent.store_cpu_s / sent.wall_s:>10.0%}   {'':>10}{taken.per(taken.commands):>5.1f} "
              f"{taken.per(taken.store_cpu_s, 1e6):>8.0f} {taken.per(taken.memory):>6.0f} "
              f"{taken.per(taken.process_cpu_s, 1e6):>6.0f}   {'':>14}{sent.per(sent.commands):>5.1f} "
              f"{sent.per(sent.store_cpu_s, 1e6):>8.0f} {sent.per(sent.process_cpu_s, 1e6):>9.0f}")
    _, taken, sent = rows[-1]
    redis_us = taken.per(taken.store_cpu_s, 1e6) + sent.per(sent.store_cpu_s, 1e6)
    ceiling = 1e6 / redis_us
    api_cores = ceiling * taken.per(taken.process_cpu_s)
    worker_cores = ceiling * sent.per(sent.process_cpu_s)
    print(f"  one primary's ceiling (last row): {redis_us:.0f} Redis CPU µs per event delivered (ingest + delivery) "
          f"-> about {ceiling:,.0f} events/s on its one core,")
    print(f"  fed by about {api_cores:.1f} cores of API processes and {worker_cores:.1f} cores of workers "
          f"at that rate (each process's CPU per event x the rate)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=10000, help="events, one a request (10000)")
    parser.add_argument("--destinations", type=int, default=20, help="destinations sharing them (20)")
    parser.add_argument("--workers", default="1,2", help="a row per worker count, comma-separated (1,2)")
    args = parser.parse_args()
    counts = [int(value) for value in args.workers.split(",") if value.strip()]
    if min([args.events, args.destinations, *counts], default=0) < 1:
        parser.error("--events, --destinations and each --workers count must be at least 1")

    rows: list[tuple[int, Phase, Phase]] = []
    receiver: Receiver | None = None
    with tempfile.TemporaryDirectory(prefix="hookgate-bench-") as tmp, \
            redis_server(pathlib.Path(tmp)) as (url, store):
        try:
            receiver = Receiver()
            for workers in counts:
                print(f"{workers} workers: ingesting {args.events:,} events…", file=sys.stderr, flush=True)
                rows.append((workers, *run(url, receiver, args, workers, pathlib.Path(tmp))))
        except (BenchError, redis.RedisError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            if receiver is not None:
                receiver.stop()
    report(store, args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
