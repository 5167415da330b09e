"""Batch delivery: one destination in batch mode against the non-batched path, side by side.

A source and a catch-all destination with ``"batch": {"size": --batch-size, "max_wait_s": 5}`` (the
default item and root templates: each event as JSON, the items as a JSON array) are created, and
``--events`` events are ingested through hookgate's own API (the Flask test client, 1,000 events a
request; not timed). Then one ``python -m app.cli worker --burst`` subprocess sends them; it must do so
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
import asyncio
import ctypes
import json
import multiprocessing as mp
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any

import redis

# Helpers shared with deliver.py (a plain module: everything it runs is under `if __name__ == "__main__"`).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from deliver import EVENT, INGEST_BATCH, ROOT, WORKER_TIMEOUT_S, BenchError, _expect, _tail, redis_server  # noqa: E402

INGEST_TIMEOUT_S = 900.0
MAX_WAIT_S = 5
REPLY = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

# Slots of the receiver's shared counters.
REQUESTS, ITEMS, DISTINCT, BAD_BODIES, SIZE_MISMATCH, MAX_ITEMS = range(6)


# --- the receiver (its own process) ---------------------------------------------------------------
class ItemCountingHTTP(asyncio.Protocol):
    """HTTP/1.1 keep-alive, bodies framed by Content-Length; parses each body and counts its items."""

    transport: asyncio.Transport

    def __init__(self, counters: Any, seen: set[str]) -> None:
        self.counters = counters
        self.seen = seen
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            length, batch_size = None, None
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip()
                if name == b"content-length":
                    length = int(value)
                elif name == b"x-hookgate-batch-size":
                    batch_size = int(value)
            if length is None:  # chunked or no body framing: not what hookgate sends
                self.counters[BAD_BODIES] += 1
                self.transport.write(BAD_REQUEST)
                self.transport.close()
                return
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            body = bytes(self.buffer[end + 4: end + 4 + length])
            del self.buffer[: end + 4 + length]
            self._count(body, batch_size)
            self.transport.write(REPLY)
            if b"\r\nconnection: close" in head:
                self.transport.close()
                return

    def _count(self, body: bytes, batch_size: int | None) -> None:
        counters = self.counters
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        items = parsed if isinstance(parsed, list) else [parsed] if isinstance(parsed, dict) else None
        if items is None:
            counters[BAD_BODIES] += 1
        else:
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    self.seen.add(item["id"])
            if batch_size is not None and batch_size != len(items):
                counters[SIZE_MISMATCH] += 1
            counters[DISTINCT] = len(self.seen)
            counters[MAX_ITEMS] = max(counters[MAX_ITEMS], len(items))
            counters[ITEMS] += len(items)
        counters[REQUESTS] += 1  # last: once it moves, this request's items are counted


def serve(counters: Any, port_out: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark stops us, also on Ctrl-C

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: set[str] = set()
        server = await loop.create_server(lambda: ItemCountingHTTP(counters, seen), "127.0.0.1", 0, backlog=256)
        port_out.send(server.sockets[0].getsockname()[1])
        await asyncio.Future()

    asyncio.run(main())


class Receiver:
    """``serve`` in a spawned process; ``snapshot()`` reads its counters (shared memory)."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._counters = ctx.RawArray(ctypes.c_longlong, 6)
        port_in, port_out = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=serve, args=(self._counters, port_out), name="bench-batch-receiver")
        self._process.start()
        if not port_in.poll(30):
            self.stop()
            raise BenchError("the receiver did not start within 30 s")
        self.url = f"http://127.0.0.1:{port_in.recv()}/hook"

    def snapshot(self) -> list[int]:
        return list(self._counters)

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
        self._process.join()


# --- one phase: ingest, then one burst worker -------------------------------------------------------
def ingest(redis_url: str, destination: dict[str, Any], n: int) -> None:
    """Create a source and ``destination``, then ingest ``n`` events (this enqueues the drain job)."""
    from app import create_app

    flask_app = create_app({"redis_url": redis_url, "admin_token": "bench",
                            "allowed_networks": "127.0.0.0/8", "log_level": "WARNING"})
    try:
        client = flask_app.test_client()
        admin = {"Authorization": "Bearer bench"}
        source = _expect(client.post("/v1/sources", json={"name": "bench"}, headers=admin), 201)
        _expect(client.post("/v1/destinations", headers=admin, json=destination), 201)
        started = time.monotonic()
        for start in range(0, n, INGEST_BATCH):
            if time.monotonic() - started > INGEST_TIMEOUT_S:
                raise BenchError(f"ingest took more than {INGEST_TIMEOUT_S:.0f} s ({start}/{n} events)")
            batch = [dict(EVENT, user_id=f"u{i}") for i in range(start, min(n, start + INGEST_BATCH))]
            _expect(client.post(f"/v1/sources/{source['id']}/events", json=batch,
                                headers={"X-Hookgate-Key": source["key"]}), 202)
    finally:
        flask_app.extensions["hookgate"].db.close()


class Phase:
    """What one burst worker did, as the receiver counted it."""

    def __init__(self, events: int, counts: list[int], wall: float, first: float, exited: float) -> None:
        self.events = events
        self.requests, self.items, self.distinct, self.bad, self.mismatch, self.max_items = counts
        self.wall, self.first, self.exited = wall, first, exited

    @property
    def us_per_event(self) -> float:
        return self.wall / self.events * 1e6

    @property
    def us_per_event_sending(self) -> float:
        return (self.wall - self.first) / self.events * 1e6


def run_worker(redis_url: str, receiver: Receiver, events: int, log_path: pathlib.Path) -> Phase:
    """One ``app.cli worker --burst``: time from its start until the receiver counted ``events`` items."""
    env = dict(os.environ, HOOKGATE_REDIS_URL=redis_url, HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8",
               HOOKGATE_LOG_LEVEL="WARNING")
    before = receiver.snapshot()
    first = 0.0
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--burst"], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            now = receiver.snapshot()
            requests_, items = now[REQUESTS] - before[REQUESTS], now[ITEMS] - before[ITEMS]
            elapsed = time.perf_counter() - started
            if requests_ and not first:
                first = elapsed
            if items >= events:
                break
            if worker.poll() is not None or elapsed > WORKER_TIMEOUT_S:
                state = "running" if worker.returncode is None else f"exited ({worker.returncode})"
                raise BenchError(f"the worker delivered {items}/{events} items in {requests_} requests in "
                                 f"{elapsed:.0f} s (limit {WORKER_TIMEOUT_S:.0f} s) and is {state}" + _tail(log_path))
            time.sleep(0.002)
        wall = time.perf_counter() - started
        try:
            code = worker.wait(60)
        except subprocess.TimeoutExpired:
            raise BenchError("the worker (burst) did not exit within 60 s of its last delivery") from None
        exited = time.perf_counter() - started
        if code != 0:
            raise BenchError(f"the worker exited with code {code}" + _tail(log_path))
        after = receiver.snapshot()
        counts = [a - b for a, b in zip(after, before)]
        counts[MAX_ITEMS] = after[MAX_ITEMS]  # a maximum, not a counter (phases are run smallest batches first)
        return Phase(events, counts, wall, first, exited)
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


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
    print(f"batch delivery: one `app.cli worker --burst` per row, store: {store}, "
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
            receiver = Receiver()
            db = redis.Redis.from_url(url)  # a throwaway store: flushed before each phase's ingest
            try:
                print(f"plain: ingesting {args.plain_events} events…", file=sys.stderr, flush=True)
                db.flushdb()
                ingest(url, {"name": "plain", "url": receiver.url, "events": ["*"]}, args.plain_events)
                print("plain: hookgate worker…", file=sys.stderr, flush=True)
                plain = run_worker(url, receiver, args.plain_events, pathlib.Path(tmp) / "worker-plain.log")
                problems += check(plain, "plain", args.plain_events)

                print(f"batch: ingesting {args.events} events…", file=sys.stderr, flush=True)
                db.flushdb()
                ingest(url, {"name": "batch", "url": receiver.url, "events": ["*"],
                             "batch": {"size": args.batch_size, "max_wait_s": MAX_WAIT_S}}, args.events)
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
