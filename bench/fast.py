"""Delivery to a fast local receiver: one ``hookgate worker`` against an aiohttp client holding 32 requests
in flight, and a plain ``requests`` loop, side by side in one run.

The receiver is ``_common``'s asyncio HTTP/1.1 keep-alive server in a process of its own (answers
``200 {"ok":true}`` at once). Every client posts the same canonical-event body (~370 bytes):

- aiohttp: one ``ClientSession`` (``TCPConnector(limit=--in-flight)``) and ``--in-flight`` tasks
  (default 32) that post until ``--events`` requests are done; aiohttp is pip-installed into this
  interpreter's environment if it is missing (issue 16's engine will make it a dependency).
- requests loop: one ``requests.Session`` posting ``--events`` times, one after another.
- hookgate: a source and a catch-all destination, ``--events`` events ingested through hookgate's own
  API (Flask test client, not timed), then one ``python -m hookgate.cli worker --burst``;
  deliveries/s = events / (worker start until the receiver counted them all), start-up included.

Each row shows the receiver's CPU use over the phase: near 100 % means the receiver, not the client,
set the pace (it is one Python process). Rounds (``--rounds``) repeat the three; with more than one,
a row of medians follows.

Redis: ``HOOKGATE_REDIS_URL`` if set (it is FLUSHDB'ed!), otherwise an embedded Valkey in a temp dir.
Run: ``/path/to/venv/bin/python bench/fast.py [--events 10000] [--in-flight 32] [--rounds 1]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time

import redis
import requests
from _common import (
    WORKER_TIMEOUT_S,
    BenchError,
    Receiver,
    canonical_body,
    ensure_module,
    ingest,
    redis_server,
    run_capped,
    tail,
    worker_env,
)

TARGET_RATIO = 0.5  # issue 16: one worker ≥ 0.5× the aiohttp client
WARMUP_REQUESTS = 500
HEADERS = {"Content-Type": "application/json"}


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _aiohttp_posts(url: str, body: bytes, n: int, in_flight: int) -> float:
    aiohttp = ensure_module("aiohttp", "aiohttp>=3.9,<4")
    remaining = n

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url, data=body, headers=HEADERS) as response:
                await response.read()
                if response.status != 200:
                    raise BenchError(f"the receiver answered {response.status}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(sender(session) for _ in range(in_flight)))
        return time.perf_counter() - started


def aiohttp_posts(url: str, body: bytes, n: int, in_flight: int) -> float:
    """Seconds for one aiohttp session holding ``in_flight`` requests to POST ``body`` ``n`` times."""
    return asyncio.run(_aiohttp_posts(url, body, n, in_flight))


def requests_loop(url: str, body: bytes, n: int) -> float:
    """Seconds to POST ``body`` ``n`` times, one after another, over one ``requests.Session``."""
    with requests.Session() as session:
        started = time.perf_counter()
        for _ in range(n):
            if session.post(url, data=body, headers=HEADERS, timeout=5).status_code != 200:
                raise BenchError("the receiver did not answer 200")
        return time.perf_counter() - started


class Phase:
    """Measures a phase's wall time and the receiver's and a client's CPU over it."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def __enter__(self) -> Phase:
        self.count, self.receiver_cpu, self.cpu = self.receiver.count, self.receiver.cpu_s(), self_cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        self.answered = self.receiver.count - self.count
        self.receiver_cpu = self.receiver.cpu_s() - self.receiver_cpu
        self.cpu = self_cpu_s() - self.cpu


def prepare(url: str, receiver: Receiver, n: int) -> None:
    """FLUSHDB, then ingest ``n`` events for one catch-all destination on ``receiver`` (not timed)."""
    with redis.Redis.from_url(url) as db:
        db.flushdb()
    ingest(url, {"name": "fast", "url": receiver.url, "events": ["*"]}, n)


def hookgate_worker(url: str, receiver: Receiver, n: int, log_path: pathlib.Path) -> tuple[float, float, float]:
    """One burst worker until the receiver counted ``n`` more. Returns (seconds, seconds to the first
    request, the worker's CPU seconds)."""
    before = receiver.count
    seconds, done, first, cpu = run_capped([sys.executable, "-m", "hookgate.cli", "worker", "--burst"],
                                           worker_env(url), log_path, lambda: receiver.count - before, n,
                                           WORKER_TIMEOUT_S)
    if done < n:
        raise BenchError(f"the worker delivered {done}/{n} in {seconds:.0f} s" + tail(log_path))
    return seconds, first, cpu


Result = dict[str, tuple[float, float, float]]  # client → (requests/s, receiver CPU %, client CPU µs a request)


def one_round(url: str, receiver: Receiver, body: bytes, args: argparse.Namespace, log_path: pathlib.Path) -> Result:
    n = args.events
    result: Result = {}
    with Phase(receiver) as phase:
        seconds = aiohttp_posts(receiver.url, body, n, args.in_flight)
    result["aiohttp"] = (n / seconds, phase.receiver_cpu / seconds * 100, phase.cpu / n * 1e6)
    if args.requests_loop:
        with Phase(receiver) as phase:
            seconds = requests_loop(receiver.url, body, n)
        result["requests"] = (n / seconds, phase.receiver_cpu / seconds * 100, phase.cpu / n * 1e6)
    prepare(url, receiver, n)
    with Phase(receiver) as phase:
        seconds, first, cpu = hookgate_worker(url, receiver, n, log_path)
    result["hookgate"] = (n / seconds, phase.receiver_cpu / seconds * 100, cpu / n * 1e6)
    result["hookgate, from 1st request"] = (n / (seconds - first), phase.receiver_cpu / seconds * 100,
                                            cpu / n * 1e6)
    return result


def print_rounds(rounds: list[Result], in_flight: int) -> None:
    names = {"aiohttp": f"aiohttp client, {in_flight} in flight", "requests": "requests.Session loop",
             "hookgate": "hookgate worker (1 process)", "hookgate, from 1st request": "  same, from its 1st request"}
    rows = [(str(i), result) for i, result in enumerate(rounds, 1)]
    if len(rounds) > 1:
        rows.append(("median", {key: tuple(statistics.median(r[key][k] for r in rounds) for k in range(3))
                                for key in rounds[0]}))  # type: ignore[misc]
    print(f"{'round':>6}  {'client':<34} {'req/s':>8}  {'receiver CPU':>12}  {'client CPU µs/req':>17}  "
          f"{'÷ aiohttp':>9}")
    for name, result in rows:
        aio = result["aiohttp"][0]
        for key, (rate, receiver_cpu, cpu_us) in result.items():
            print(f"{name:>6}  {names[key]:<34} {rate:>8.0f}  {receiver_cpu:>11.0f}%  {cpu_us:>17.0f}  "
                  f"{rate / aio:>8.2f}×")
        hook = result["hookgate"][0]
        verdict = "met" if hook / aio >= TARGET_RATIO else "NOT met"
        print(f"{'':>6}  ratio hookgate / aiohttp: {hook / aio:.2f}×  (issue 16 target ≥ {TARGET_RATIO}×: {verdict})"
              + (f";  hookgate / requests loop: {hook / result['requests'][0]:.2f}×" if "requests" in result else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=10_000, help="requests per client and round (default 10000)")
    parser.add_argument("--in-flight", type=int, default=32, help="the aiohttp client's requests in flight (32)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; medians are reported (default 1)")
    parser.add_argument("--no-requests-loop", dest="requests_loop", action="store_false",
                        help="leave out the plain requests loop")
    args = parser.parse_args()
    if min(args.events, args.in_flight, args.rounds) < 1:
        parser.error("--events, --in-flight and --rounds must be at least 1")

    ensure_module("aiohttp", "aiohttp>=3.9,<4")
    body = canonical_body()
    rounds: list[Result] = []
    receiver: Receiver | None = None
    with tempfile.TemporaryDirectory(prefix="hookgate-bench-") as tmp, \
            redis_server(pathlib.Path(tmp)) as (url, store):
        try:
            receiver = Receiver()
            aiohttp_posts(receiver.url, body, WARMUP_REQUESTS, args.in_flight)
            for round_no in range(1, args.rounds + 1):
                print(f"round {round_no}: aiohttp, requests loop, hookgate worker…", file=sys.stderr, flush=True)
                rounds.append(one_round(url, receiver, body, args, pathlib.Path(tmp) / f"worker-{round_no}.log"))
        except (BenchError, redis.RedisError, requests.RequestException) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            if receiver is not None:
                receiver.stop()

    print(f"fast receiver (asyncio HTTP/1.1, own process, answers at once): {args.events} requests per client, "
          f"body {len(body)} bytes, store: {store}, {os.cpu_count()} CPUs; hookgate's time includes its start-up")
    print_rounds(rounds, args.in_flight)
    return 0


if __name__ == "__main__":
    sys.exit(main())
