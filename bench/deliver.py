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
import asyncio
import contextlib
import ctypes
import datetime as dt
import json
import multiprocessing as mp
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any, Iterator

import redis
import requests

ROOT = pathlib.Path(__file__).resolve().parent.parent
EVENT = {"name": "purchase", "user_id": "u1", "data": {"sku": "A1", "price": 9.99}}
INGEST_BATCH = 1000
WARMUP_REQUESTS = 500
WORKER_TIMEOUT_S = 300.0
TARGET_RATIO = 0.70
TARGET_RQ_FACTOR = 10.0
BENCH = pathlib.Path(__file__).resolve().parent
REPLY = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
NO_LENGTH = b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to measure."""


# --- the receiver (its own process) ---------------------------------------------------------------
class CountingHTTP(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; bodies framed by Content-Length; always 200."""

    transport: asyncio.Transport

    def __init__(self, counter: ctypes.c_longlong) -> None:
        self.counter = counter
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    self.transport.write(NO_LENGTH)
                    self.transport.close()
                    return
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            del self.buffer[: end + 4 + length]
            self.counter.value += 1
            self.transport.write(REPLY)
            if b"\r\nconnection: close" in head:
                self.transport.close()
                return


def serve(counter: ctypes.c_longlong, port_out: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark stops us, also on Ctrl-C

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: CountingHTTP(counter), "127.0.0.1", 0, backlog=256)
        port_out.send(server.sockets[0].getsockname()[1])
        await asyncio.Future()

    asyncio.run(main())


class Receiver:
    """Starts ``serve`` in a spawned process; ``count`` reads its request counter (shared memory)."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._counter = ctx.RawValue(ctypes.c_longlong, 0)
        port_in, port_out = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=serve, args=(self._counter, port_out), name="bench-receiver")
        self._process.start()
        if not port_in.poll(30):
            self.stop()
            raise BenchError("the receiver did not start within 30 s")
        self.url = f"http://127.0.0.1:{port_in.recv()}/hook"

    @property
    def count(self) -> int:
        return self._counter.value

    def stop(self) -> None:
        self._process.terminate()
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


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


def _expect(response: Any, status: int) -> Any:
    if response.status_code != status:
        raise BenchError(f"{response.request.path}: expected {status}, got {response.status_code}: "
                         f"{response.get_data(as_text=True)[:500]}")
    return response.get_json()


def ingest_events(redis_url: str, receiver_url: str, n: int) -> None:
    """Create a source and a catch-all destination, then ingest ``n`` events (this enqueues the drain job)."""
    from app import create_app

    flask_app = create_app({"redis_url": redis_url, "admin_token": "bench",
                            "allowed_networks": "127.0.0.0/8", "log_level": "WARNING"})
    client = flask_app.test_client()
    admin = {"Authorization": "Bearer bench"}
    source = _expect(client.post("/v1/sources", json={"name": "bench"}, headers=admin), 201)
    _expect(client.post("/v1/destinations", headers=admin,
                        json={"name": "recv", "url": receiver_url, "events": ["*"]}), 201)
    for start in range(0, n, INGEST_BATCH):
        batch = [dict(EVENT, user_id=f"u{i}") for i in range(start, min(n, start + INGEST_BATCH))]
        _expect(client.post(f"/v1/sources/{source['id']}/events", json=batch,
                            headers={"X-Hookgate-Key": source["key"]}), 202)
    flask_app.extensions["hookgate"].db.close()


def run_worker(redis_url: str, receiver: Receiver, n: int, log_path: pathlib.Path) -> tuple[float, float]:
    """Start one burst worker; return (seconds until the receiver counted ``n``, seconds to the first)."""
    env = dict(os.environ, HOOKGATE_REDIS_URL=redis_url, HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8",
               HOOKGATE_LOG_LEVEL="WARNING")
    return _run_until_counted([sys.executable, "-m", "app.cli", "worker", "--burst"], env, receiver, n, log_path,
                              "the worker")


def run_rq_baseline(redis_url: str, receiver: Receiver, body: bytes, n: int,
                    log_path: pathlib.Path) -> tuple[float, float]:
    """Enqueue ``n`` RQ jobs (one POST each), run RQ's forking ``rq worker --burst``; same return value."""
    from rq import Queue

    import rq_jobs

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
    before, first = receiver.count, 0.0
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        while (done := receiver.count - before) < n:
            elapsed = time.perf_counter() - started
            first = first or (elapsed if done else 0.0)
            if worker.poll() is not None or elapsed > WORKER_TIMEOUT_S:
                state = "running" if worker.returncode is None else f"exited ({worker.returncode})"
                raise BenchError(f"{what} delivered {done}/{n} in {elapsed:.0f} s "
                                 f"(limit {WORKER_TIMEOUT_S:.0f} s) and is {state}" + _tail(log_path))
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        try:
            code = worker.wait(60)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{what} (burst) did not exit within 60 s of its last delivery") from None
        if code != 0 or receiver.count - before != n:
            raise BenchError(f"{what}: exit code {code}, {receiver.count - before} requests for {n}"
                             + _tail(log_path))
        return elapsed, first
    finally:
        if worker.poll() is None:
            worker.terminate()  # RQ: warm shutdown
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


def _tail(path: pathlib.Path, chars: int = 2000) -> str:
    text = path.read_text(errors="replace")[-chars:]
    return f"\n--- worker log (last {chars} characters) ---\n{text}" if text else ""


@contextlib.contextmanager
def redis_server(workdir: pathlib.Path) -> Iterator[tuple[str, str]]:
    """(url, description): HOOKGATE_REDIS_URL if set, else an embedded Valkey stopped on exit."""
    if url := os.environ.get("HOOKGATE_REDIS_URL"):
        yield url, "HOOKGATE_REDIS_URL"  # not the URL itself: it may hold a password
        return
    from app.embedded import EmbeddedServer

    server = EmbeddedServer(workdir)
    server.start()
    try:
        yield server.url, "embedded Valkey (appendonly, fsync everysec)"
    finally:
        server.stop()


def print_table(events: int, rows: list[tuple[float, float, float]]) -> None:
    """One line per round (baseline req/s, hookgate deliveries/s, seconds to first delivery), then medians."""
    print(f"{'round':>6}  {'deliveries':>10}  {'baseline req/s':>14}  {'hookgate deliveries/s':>21}  "
          f"{'ratio':>5}  (target ≥ {TARGET_RATIO:.2f})  {'worker start→1st delivery':>25}")
    named = [(str(i), row) for i, row in enumerate(rows, 1)]
    if len(rows) > 1:
        baseline, hookgate, first = (statistics.median(column) for column in zip(*rows))
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

    from app.events import canonical_event

    event = canonical_event("src_" + "0" * 28, EVENT, received_at=dt.datetime.now(dt.timezone.utc))
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
                ingest_events(url, receiver.url, args.events)
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
