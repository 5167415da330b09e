"""Delivery to a receiver with realistic latency: one ``hookgate worker`` against a ``ThreadPoolExecutor``
of ``requests`` sessions, side by side in one run, and the most requests in flight the receiver saw.

The receiver (an asyncio HTTP/1.1 keep-alive server in a process of its own, backlog 4,096) answers
``200`` ``--latency-ms`` after each request arrived (default 100 ms) and counts the requests it holds:
now and the most at once. Scenarios, each with its baseline just before it:

- (a) ``--destinations`` catch-all destinations (default 20, each its own path on the receiver) ×
  ``--events`` events (default 200): 4,000 deliveries through ONE ``python -m hookgate.cli worker
  --burst``; baseline: ``ThreadPoolExecutor(--threads)`` (default 64), a ``requests.Session`` per
  thread, posting the same number of canonical-event bodies.
- (b) 1 destination, ``--single-events`` events (default 2,000), ``max_in_flight: --max-in-flight``
  (default 64) if the API accepts that field (it does since the engine; before it the destination was
  created without it, and the table says so); the same baseline with as many requests.

hookgate's figure is deliveries / seconds from starting the worker (start-up included) until all are
delivered or ``--cap-s`` (default 60 s) has passed; then the worker is SIGKILLed (the engine
before issue 16 sent one request at a time, ~10/s at 100 ms: 4,000 deliveries took 400 s). The rate is over
what arrived. Events are ingested through hookgate's own API (Flask test client) before the worker
starts, and not timed.

Redis: ``HOOKGATE_REDIS_URL`` if set (it is FLUSHDB'ed!), otherwise an embedded Valkey in a temp dir.
Run: ``/path/to/venv/bin/python bench/slow.py [--latency-ms 100] [--cap-s 60] [--events 200] ...``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
import requests
from _common import Api, BenchError, Receiver, canonical_body, events, redis_server, run_capped, worker_env

TARGETS = {"a": (1000.0, 1.7), "b": (400.0, None)}  # issue 16: deliveries/s, and × the baseline


@dataclass
class Row:
    """One measured client in one scenario."""

    client: str
    requests: int  # how many it was to send
    done: int  # how many the receiver answered
    seconds: float
    max_in_flight: int
    cpu_s: float = 0.0  # the client's own CPU (the worker process; the baseline's is not separated)
    first_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


def pooled_posts(url: str, body: bytes, n: int, threads: int) -> float:
    """Seconds for ``threads`` threads, a keep-alive ``requests.Session`` each, to POST ``body`` ``n`` times."""
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()
    headers = {"Content-Type": "application/json"}

    def post(_: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            with lock:
                sessions.append(session)
        response = session.post(url, data=body, headers=headers, timeout=30)
        if response.status_code != 200:
            raise BenchError(f"the receiver answered {response.status_code}")

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(post, range(n)):
                pass
        return time.perf_counter() - started
    finally:
        for session in sessions:
            session.close()


def baseline(receiver: Receiver, body: bytes, n: int, threads: int) -> Row:
    receiver.settle()
    before = receiver.count
    seconds = pooled_posts(receiver.url, body, n, threads)
    return Row(f"ThreadPoolExecutor({threads}) + requests", n, receiver.count - before, seconds,
               receiver.max_in_flight)


def hookgate(url: str, receiver: Receiver, specs: list[dict[str, Any]], per_destination: int, cap_s: float,
             log_path: pathlib.Path) -> Row:
    """FLUSHDB, create a source and ``specs``, ingest ``per_destination`` events (every destination
    takes each), then one burst worker until all are delivered or ``cap_s``."""
    with redis.Redis.from_url(url) as db:
        db.flushdb()
    with Api(url) as api:
        source = api.source()
        api.destinations(specs)
        api.send(source, events(per_destination))
    n = len(specs) * per_destination
    receiver.settle()
    before = receiver.count
    seconds, done, first, cpu = run_capped([sys.executable, "-m", "hookgate.cli", "worker", "--burst"],
                                           worker_env(url), log_path, lambda: receiver.count - before, n, cap_s)
    return Row("hookgate worker (1 process)", n, done, seconds, receiver.max_in_flight, cpu, first)


def destination(receiver: Receiver, name: str, **extra: Any) -> dict[str, Any]:
    # A 100 ms receiver must not look down: the breaker stays out of it, and a timeout is far away.
    return {"name": name, "url": f"{receiver.url}/{name}", "events": ["*"], "timeout_s": 30, **extra}


def single_spec(url: str, receiver: Receiver, max_in_flight: int) -> tuple[dict[str, Any], str]:
    """Scenario (b)'s destination: with ``max_in_flight`` if the API accepts the field, else without.
    Returns the spec and what the table says about the field."""
    spec = destination(receiver, "single", max_in_flight=max_in_flight)
    with redis.Redis.from_url(url) as db:
        db.flushdb()
    with Api(url) as api:
        status, answer = api.try_create("/v1/destinations", spec)
    if status == 201:
        return spec, f"max_in_flight {max_in_flight} set"
    del spec["max_in_flight"]
    message = str((answer or {}).get("error", {}).get("message", answer))[:80]
    return spec, f"max_in_flight NOT set: the API answered {status} ({message})"


def print_scenario(title: str, rows: list[Row], target: tuple[float, float | None]) -> None:
    base, hook = rows
    ratio = hook.rate / base.rate if base.rate else float("nan")
    print(f"\n{title}")
    print(f"  {'client':<36} {'requests':>8} {'answered':>8} {'seconds':>8} {'req/s':>8} {'max in flight':>13}  "
          f"{'worker CPU s':>12}  {'start→1st':>9}")
    for row in rows:
        cpu = f"{row.cpu_s:>12.1f}" if row is hook else f"{'':>12}"
        first = f"{row.first_s:>8.2f}s" if row is hook else ""
        print(f"  {row.client:<36} {row.requests:>8} {row.done:>8} {row.seconds:>8.1f} {row.rate:>8.1f} "
              f"{row.max_in_flight:>13}  {cpu}  {first}")
    rate_target, ratio_target = target
    wanted = f"target ≥ {rate_target:.0f}/s" + (f" and ≥ {ratio_target}×" if ratio_target else "")
    capped = " (capped: rate over what arrived)" if hook.done < hook.requests else ""
    print(f"  ratio hookgate / baseline: {ratio:.3f}×{capped}   [issue 16 {wanted}]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--latency-ms", type=float, default=100.0, help="the receiver's latency (default 100)")
    parser.add_argument("--destinations", type=int, default=20, help="scenario (a): destinations (default 20)")
    parser.add_argument("--events", type=int, default=200, help="scenario (a): events, each to every destination")
    parser.add_argument("--single-events", type=int, default=2000, help="scenario (b): events (default 2000)")
    parser.add_argument("--max-in-flight", type=int, default=64, help="scenario (b): the destination's max_in_flight")
    parser.add_argument("--threads", type=int, default=64, help="the baseline's threads (default 64)")
    parser.add_argument("--cap-s", type=float, default=60.0, help="stop a hookgate worker after this (default 60)")
    parser.add_argument("--only", choices=["a", "b"], help="run one scenario")
    args = parser.parse_args()
    if min(args.destinations, args.events, args.single_events, args.threads, args.max_in_flight) < 1 \
            or args.latency_ms < 0 or args.cap_s <= 0:
        parser.error("counts must be at least 1, --latency-ms at least 0, --cap-s positive")

    body = canonical_body()
    results: dict[str, tuple[str, list[Row]]] = {}
    receiver: Receiver | None = None
    with tempfile.TemporaryDirectory(prefix="hookgate-bench-") as tmp, \
            redis_server(pathlib.Path(tmp)) as (url, store):
        try:
            receiver = Receiver(latency_s=args.latency_ms / 1000)
            if args.only in (None, "a"):
                n = args.destinations * args.events
                print(f"(a) baseline: {n} requests…", file=sys.stderr, flush=True)
                base = baseline(receiver, body, n, args.threads)
                print(f"(a) hookgate: {args.destinations} destinations × {args.events} events…",
                      file=sys.stderr, flush=True)
                specs = [destination(receiver, f"d{i}") for i in range(args.destinations)]
                hook = hookgate(url, receiver, specs, args.events, args.cap_s, pathlib.Path(tmp) / "worker-a.log")
                results["a"] = (f"(a) {args.destinations} destinations × {args.events} events = {n} deliveries, "
                                "one worker process", [base, hook])
            if args.only in (None, "b"):
                n = args.single_events
                print(f"(b) baseline: {n} requests…", file=sys.stderr, flush=True)
                base = baseline(receiver, body, n, args.threads)
                spec, note = single_spec(url, receiver, args.max_in_flight)
                print(f"(b) hookgate: 1 destination × {n} events ({note})…", file=sys.stderr, flush=True)
                hook = hookgate(url, receiver, [spec], n, args.cap_s, pathlib.Path(tmp) / "worker-b.log")
                results["b"] = (f"(b) 1 destination × {n} events, {note}", [base, hook])
        except (BenchError, redis.RedisError, requests.RequestException) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            if receiver is not None:
                receiver.stop()

    print(f"slow receiver: answers 200 after {args.latency_ms:g} ms; hookgate capped at {args.cap_s:g} s "
          f"(worker start-up included); store: {store}; {os.cpu_count()} CPUs; body {len(body)} bytes")
    for key, (title, rows) in results.items():
        print_scenario(title, rows, TARGETS[key])
    return 0


if __name__ == "__main__":
    sys.exit(main())
