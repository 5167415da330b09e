"""What ``deliver.py``, ``latency.py`` and ``batch.py`` share: the receiver (an asyncio HTTP/1.1 server
in a process of its own), the store, ingest through hookgate's own API, and child-process helpers.

A plain module: importing it starts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import multiprocessing as mp
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = pathlib.Path(__file__).resolve().parent
EVENT = {"name": "purchase", "user_id": "u1", "data": {"sku": "A1", "price": 9.99}}
INGEST_BATCH = 1000
WORKER_TIMEOUT_S = 300.0
REPLY = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
NO_LENGTH = b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

# Slots of the receiver's shared counters (``Receiver.snapshot()``).
REQUESTS, ITEMS, DISTINCT, BAD_BODIES, SIZE_MISMATCH, MAX_ITEMS = range(6)


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to measure."""


# --- the receiver (its own process) ---------------------------------------------------------------
class ReceiverHTTP(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; bodies framed by Content-Length; always 200.

    Every request is counted in ``counters[REQUESTS]`` (last: once it moves, the request's items and
    arrival are recorded). Options:

    - ``count_items``: parse each body and count its items (the length of a JSON array, 1 for an
      object), distinct event ids, the largest request, bodies that are neither, and requests whose
      ``X-Hookgate-Batch-Size`` does not match. A request without Content-Length is then counted as a
      bad body and answered 400; otherwise a chunked one is answered 411 (no Content-Length: no body).
    - ``latencies``/``seqs`` (shared arrays): for each body with ``data.sent_at`` and ``data.seq``,
      record arrival time − ``sent_at`` and ``seq`` while there is room; ``arrived`` counts them.
    """

    transport: asyncio.Transport

    def __init__(self, counters: Any, seen: set[str], count_items: bool, arrived: Any,
                 latencies: Any, seqs: Any) -> None:
        self.counters, self.seen, self.count_items = counters, seen, count_items
        self.arrived, self.latencies, self.seqs = arrived, latencies, seqs
        self.parse = count_items or latencies is not None
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            length, batch_size, chunked = None, None, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = True
                elif name == b"x-hookgate-batch-size":
                    batch_size = int(value)
            if self.count_items and length is None:  # chunked or no body framing: not what hookgate sends
                self.counters[BAD_BODIES] += 1
                self.transport.write(BAD_REQUEST)
                self.transport.close()
                return
            if chunked and not self.count_items:
                self.transport.write(NO_LENGTH)
                self.transport.close()
                return
            length = length or 0
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            if self.parse:
                self._record(bytes(self.buffer[end + 4: end + 4 + length]), batch_size)
            del self.buffer[: end + 4 + length]
            self.counters[REQUESTS] += 1
            self.transport.write(REPLY)
            if b"\r\nconnection: close" in head:
                self.transport.close()
                return

    def _record(self, body: bytes, batch_size: int | None) -> None:
        arrived = time.time()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if self.count_items:
            self._count_items(parsed, batch_size)
        if self.latencies is not None:
            self._record_latency(parsed, arrived)

    def _count_items(self, parsed: Any, batch_size: int | None) -> None:
        counters = self.counters
        items = parsed if isinstance(parsed, list) else [parsed] if isinstance(parsed, dict) else None
        if items is None:
            counters[BAD_BODIES] += 1
            return
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                self.seen.add(item["id"])
        if batch_size is not None and batch_size != len(items):
            counters[SIZE_MISMATCH] += 1
        counters[DISTINCT] = len(self.seen)
        counters[MAX_ITEMS] = max(counters[MAX_ITEMS], len(items))
        counters[ITEMS] += len(items)

    def _record_latency(self, parsed: Any, arrived: float) -> None:
        try:
            data = parsed["data"]
            sent_at, seq = float(data["sent_at"]), int(data["seq"])
        except (ValueError, KeyError, TypeError):
            return  # not one of ours
        n = self.arrived.value
        if n < len(self.latencies):
            self.latencies[n] = arrived - sent_at
            self.seqs[n] = seq
            self.arrived.value = n + 1


def serve(counters: Any, count_items: bool, arrived: Any, latencies: Any, seqs: Any,
          port_out: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark stops us, also on Ctrl-C

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: set[str] = set()
        server = await loop.create_server(
            lambda: ReceiverHTTP(counters, seen, count_items, arrived, latencies, seqs),
            "127.0.0.1", 0, backlog=256)
        port_out.send(server.sockets[0].getsockname()[1])
        await asyncio.Future()

    asyncio.run(main())


class Receiver:
    """``serve`` in a spawned process; its counters and arrivals are in shared memory.

    ``count`` is the number of requests, ``snapshot()`` every counter; with ``arrivals`` > 0 (room for
    that many), ``take()`` returns (and forgets) the arrivals so far: [(seq, latency s)].
    """

    def __init__(self, *, count_items: bool = False, arrivals: int = 0, name: str = "bench-receiver") -> None:
        ctx = mp.get_context("spawn")
        self._counters = ctx.RawArray(ctypes.c_longlong, 6)
        self._arrived = ctx.RawValue(ctypes.c_longlong, 0)
        self._latencies = ctx.RawArray(ctypes.c_double, arrivals) if arrivals else None
        self._seqs = ctx.RawArray(ctypes.c_longlong, arrivals) if arrivals else None
        port_in, port_out = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=serve, name=name, args=(
            self._counters, count_items, self._arrived, self._latencies, self._seqs, port_out))
        self._process.start()
        if not port_in.poll(30):
            self.stop()
            raise BenchError("the receiver did not start within 30 s")
        self.url = f"http://127.0.0.1:{port_in.recv()}/hook"

    @property
    def count(self) -> int:
        return self._counters[REQUESTS]

    def snapshot(self) -> list[int]:
        return list(self._counters)

    @property
    def arrived(self) -> int:
        return self._arrived.value

    def take(self) -> list[tuple[int, float]]:
        assert self._seqs is not None and self._latencies is not None, "Receiver(arrivals=...) not set"
        n = self._arrived.value
        got = list(zip(self._seqs[:n], self._latencies[:n], strict=True))
        self._arrived.value = 0  # only between phases, when nothing is in flight
        return got

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
        self._process.join()


# --- the store, and events through hookgate's own API ---------------------------------------------
@contextlib.contextmanager
def redis_server(workdir: pathlib.Path) -> Iterator[tuple[str, str]]:
    """(url, description): HOOKGATE_REDIS_URL if set, else an embedded Valkey stopped on exit."""
    if url := os.environ.get("HOOKGATE_REDIS_URL"):
        yield url, "HOOKGATE_REDIS_URL"  # not the URL itself: it may hold a password
        return
    from hookgate.embedded import EmbeddedServer

    server = EmbeddedServer(workdir)
    server.start()
    try:
        yield server.url, "embedded Valkey (appendonly, fsync everysec)"
    finally:
        server.stop()


def _expect(response: Any, status: int) -> Any:
    if response.status_code != status:
        raise BenchError(f"{response.request.path}: expected {status}, got {response.status_code}: "
                         f"{response.get_data(as_text=True)[:500]}")
    return response.get_json()


def ingest(redis_url: str, destination: dict[str, Any], n: int, timeout_s: float | None = None) -> None:
    """Create a source and ``destination``, then ingest ``n`` events through the Flask test client,
    ``INGEST_BATCH`` a request (this enqueues the drain job); BenchError after ``timeout_s``, if given."""
    from hookgate import create_app

    flask_app = create_app({"redis_url": redis_url, "admin_token": "bench",
                            "allowed_networks": "127.0.0.0/8", "log_level": "WARNING"})
    try:
        client = flask_app.test_client()
        admin = {"Authorization": "Bearer bench"}
        source = _expect(client.post("/v1/sources", json={"name": "bench"}, headers=admin), 201)
        _expect(client.post("/v1/destinations", headers=admin, json=destination), 201)
        started = time.monotonic()
        for start in range(0, n, INGEST_BATCH):
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                raise BenchError(f"ingest took more than {timeout_s:.0f} s ({start}/{n} events)")
            batch = [dict(EVENT, user_id=f"u{i}") for i in range(start, min(n, start + INGEST_BATCH))]
            _expect(client.post(f"/v1/sources/{source['id']}/events", json=batch,
                                headers={"X-Hookgate-Key": source["key"]}), 202)
    finally:
        flask_app.extensions["hookgate"].db.close()


# --- child processes ------------------------------------------------------------------------------
def worker_env(redis_url: str) -> dict[str, str]:
    """The environment of a ``python -m hookgate.cli worker`` against ``redis_url``."""
    return dict(os.environ, HOOKGATE_REDIS_URL=redis_url, HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8",
                HOOKGATE_LOG_LEVEL="WARNING")


def start_child(command: list[str], env: dict[str, str], log_path: pathlib.Path) -> subprocess.Popen:
    """``command`` in the repository root, in a session of its own, its output in ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def tail(path: pathlib.Path, name: str = "worker", chars: int = 2000) -> str:
    """The end of a child's log, for an error message ("" if it is empty)."""
    text = path.read_text(errors="replace")[-chars:]
    return f"\n--- {name} log (last {chars} characters) ---\n{text}" if text else ""


def run_burst(command: list[str], env: dict[str, str], log_path: pathlib.Path, what: str,
              progress: Callable[[], tuple[int, int]], n: int, unit: str = "") -> tuple[float, float, float, int]:
    """Start ``command`` (a burst worker) and poll ``progress()`` -> (requests, delivered) until
    ``delivered`` reaches ``n``; then wait for it to exit. Returns (seconds until ``n``, seconds until
    the first request, seconds until it exited, exit code), all from its start. BenchError if it exits
    or runs over ``WORKER_TIMEOUT_S`` first, or does not exit within 60 s; it is stopped in any case."""
    first = 0.0
    started = time.perf_counter()
    worker = start_child(command, env, log_path)
    try:
        while True:
            requests_, delivered = progress()
            elapsed = time.perf_counter() - started
            if requests_ and not first:
                first = elapsed
            if delivered >= n:
                break
            if worker.poll() is not None or elapsed > WORKER_TIMEOUT_S:
                state = "running" if worker.returncode is None else f"exited ({worker.returncode})"
                count = f"{delivered}/{n} {unit} in {requests_} requests" if unit else f"{delivered}/{n}"
                raise BenchError(f"{what} delivered {count} in {elapsed:.0f} s "
                                 f"(limit {WORKER_TIMEOUT_S:.0f} s) and is {state}" + tail(log_path))
            time.sleep(0.002)
        wall = time.perf_counter() - started
        try:
            code = worker.wait(60)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{what} (burst) did not exit within 60 s of its last delivery") from None
        return wall, first, time.perf_counter() - started, code
    finally:
        stop_child(worker)


def stop_child(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM (RQ: warm shutdown), then after ``grace_s`` SIGKILL to its whole session."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
