"""Delivery throughput: one ``hookgate worker`` against a plain ``requests.Session`` loop, side by side,
and against an RQ-job-per-delivery design.

All clients POST to the same local receiver, a minimal asyncio HTTP/1.1 keep-alive server in a
process of its own that answers 200 with a small JSON body and counts requests in shared memory.

- baseline: N sequential POSTs of a canonical-event-sized JSON body over one ``requests.Session``.
- hookgate: N events are ingested first (Flask test client, hookgate's own code), then one
  ``hookgate worker --burst`` subprocess is started; deliveries/s = N / (time from starting the
  worker until the receiver has counted N requests). Worker start-up is part of that time.
- RQ job per delivery (after the rounds, ``--rq-jobs`` jobs, default 2,000): each job is
  ``rq_jobs.post_one`` (one POST with ``requests``), run by RQ's stock forking ``rq worker --burst``
  (one process); jobs/s is measured the same way. Printed: hookgate's median deliveries/s ÷ that.

Redis: ``HOOKGATE_REDIS_URL`` if set (it is FLUSHDB'ed!), otherwise an embedded Valkey in a temp dir.
Run: ``/path/to/venv/bin/python bench/deliver.py [--events N] [--rounds R] [--rq-jobs N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import redis
import requests
from _common import BENCH, EVENT, INGEST_BATCH, BenchError, Receiver, ingest, redis_server, run_burst, tail, worker_env

WARMUP_REQUESTS = 500
TARGET_RATIO = 0.70
TARGET_RQ_FACTOR = 10.0


# --- the two measured clients ---------------------------------------------------------------------
def post_loop(url: str, body: bytes, n: int) -> float:
    """Seconds to POST ``body`` ``n`` times, one after another, over one pooled session."""
    headers = {"Content-Type": "application/json"}
    with requests.Session() as session:
        started = time.perf_counter()
        for _ in range(n):
            response = session.post(url, data=body, headers=headers, timeout=5)
            if response.status_code != 200:
                raise BenchError(f"the receiver answered {response.status_code}")
        return time.perf_counter() - started


def run_worker(redis_url: str, receiver: Receiver, n: int, log_path: pathlib.Path) -> tuple[float, float]:
    """Start one burst worker; return (seconds until the receiver counted ``n``, seconds to the first)."""
    return _run_until_counted([sys.executable, "-m", "hookgate.cli", "worker", "--burst"], worker_env(redis_url),
                              receiver, n, log_path, "the worker")


def run_rq_baseline(redis_url: str, receiver: Receiver, body: bytes, n: int,
                    log_path: pathlib.Path) -> tuple[float, float]:
    """Enqueue ``n`` RQ jobs (one POST each), run RQ's forking ``rq worker --burst``; same return value."""
    import rq_jobs
    from rq import Queue

    with redis.Redis.from_url(redis_url) as connection:
        queue = Queue(rq_jobs.QUEUE, connection=connection)
        for start in range(0, n, INGEST_BATCH):
            with connection.pipeline() as pipe:
                queue.enqueue_many([Queue.prepare_data(rq_jobs.post_one, args=(receiver.url, body))
                                    for _ in range(start, min(n, start + INGEST_BATCH))], pipeline=pipe)
                pipe.execute()
    command = [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", redis_url, "--path", str(BENCH),
               "-c", "rq_jobs", "--logging_level", "WARNING", rq_jobs.QUEUE]
    return _run_until_counted(command, dict(os.environ), receiver, n, log_path, "rq worker")


def _run_until_counted(command: list[str], env: dict[str, str], receiver: Receiver, n: int,
                       log_path: pathlib.Path, what: str) -> tuple[float, float]:
    """Run ``command``; return (seconds until the receiver counted ``n`` more, seconds to the first)."""
    before = receiver.count

    def progress() -> tuple[int, int]:
        done = receiver.count - before
        return done, done

    elapsed, first, _, code = run_burst(command, env, log_path, what, progress, n)
    if code != 0 or receiver.count - before != n:
        raise BenchError(f"{what}: exit code {code}, {receiver.count - before} requests for {n}" + tail(log_path))
    return elapsed, first


def print_table(events: int, rows: list[tuple[float, float, float]]) -> None:
    """One line per round (baseline req/s, hookgate deliveries/s, seconds to first delivery), then medians."""
    print(f"{'round':>6}  {'deliveries':>10}  {'baseline req/s':>14}  {'hookgate deliveries/s':>21}  "
          f"{'ratio':>5}  (target ≥ {TARGET_RATIO:.2f})  {'worker start→1st delivery':>25}")
    named = [(str(i), row) for i, row in enumerate(rows, 1)]
    if len(rows) > 1:
        baseline, hookgate, first = (statistics.median(column) for column in zip(*rows, strict=True))
        named.append(("median", (baseline, hookgate, first)))
    for name, (baseline, hookgate, first) in named:
        ratio = hookgate / baseline
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(f"{name:>6}  {events:>10}  {baseline:>14.0f}  {hookgate:>21.0f}  {ratio:>5.2f}  "
              f"{verdict:>16}  {first:>23.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=10_000, help="deliveries per round (default 10000)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; medians are reported (default 1)")
    parser.add_argument("--rq-jobs", type=int, default=2000,
                        help="jobs for the RQ-job-per-delivery baseline (default 2000; 0 skips it)")
    args = parser.parse_args()
    if args.events < 1 or args.rounds < 1 or args.rq_jobs < 0:
        parser.error("--events and --rounds must be at least 1, --rq-jobs at least 0")

    from hookgate.events import canonical_event

    event = canonical_event("src_" + "0" * 28, EVENT, received_at=dt.datetime.now(dt.UTC))
    body = json.dumps(event, ensure_ascii=False).encode()  # what hookgate's default JSON template sends
    rows: list[tuple[float, float, float]] = []
    rq_row: tuple[float, float] | None = None
    receiver: Receiver | None = None
    with tempfile.TemporaryDirectory(prefix="hookgate-bench-") as tmp, \
            redis_server(pathlib.Path(tmp)) as (url, store):
        try:
            receiver = Receiver()
            post_loop(receiver.url, body, WARMUP_REQUESTS)
            db = redis.Redis.from_url(url)  # a throwaway store: flushed before each round's ingest
            for round_no in range(1, args.rounds + 1):
                print(f"round {round_no}: baseline…", file=sys.stderr, flush=True)
                baseline = args.events / post_loop(receiver.url, body, args.events)
                print(f"round {round_no}: ingesting {args.events} events…", file=sys.stderr, flush=True)
                db.flushdb()
                ingest(url, {"name": "recv", "url": receiver.url, "events": ["*"]}, args.events)
                print(f"round {round_no}: hookgate worker…", file=sys.stderr, flush=True)
                log_path = pathlib.Path(tmp) / f"worker-{round_no}.log"
                elapsed, first = run_worker(url, receiver, args.events, log_path)
                rows.append((baseline, args.events / elapsed, first))
            if args.rq_jobs:
                print(f"RQ job per delivery: {args.rq_jobs} jobs, rq worker --burst…", file=sys.stderr, flush=True)
                db.flushdb()
                elapsed, first = run_rq_baseline(url, receiver, body, args.rq_jobs, pathlib.Path(tmp) / "rq-worker.log")
                rq_row = (args.rq_jobs / elapsed, first)
            db.close()
        except (BenchError, redis.RedisError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            if receiver is not None:
                receiver.stop()

    print(f"delivery throughput: {args.events} deliveries x {args.rounds} round(s), body {len(body)} bytes, "
          f"store: {store}, receiver: asyncio HTTP/1.1 (own process), {os.cpu_count()} CPUs")
    print_table(args.events, rows)
    if rq_row is not None:
        hookgate = statistics.median(row[1] for row in rows)
        factor = hookgate / rq_row[0]
        verdict = "met" if factor >= TARGET_RQ_FACTOR else "NOT met"
        print(f"\nRQ job per delivery (stock forking `rq worker --burst`, one process, {args.rq_jobs} jobs): "
              f"{rq_row[0]:.0f} jobs/s (worker start→1st delivery {rq_row[1]:.2f} s)")
        print(f"hookgate {hookgate:.0f} deliveries/s ÷ RQ {rq_row[0]:.0f} jobs/s = {factor:.1f}×  "
              f"(target ≥ {TARGET_RQ_FACTOR:.0f}×) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
