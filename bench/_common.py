"""What the benchmarks share: the receiver (an asyncio HTTP/1.1 server in a process of its own, fast or
with a fixed latency), the store and its counters, hookgate's own API through the Flask test client,
child-process helpers, and the installers of what a benchmark needs beyond the project's venv.

A plain module: importing it starts nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import datetime as dt
import importlib
import json
import multiprocessing as mp
import os
import pathlib
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = pathlib.Path(__file__).resolve().parent
EVENT = {"name": "purchase", "user_id": "u1", "data": {"sku": "A1", "price": 9.99}}
INGEST_BATCH = 1000
WORKER_TIMEOUT_S = 300.0
REPLY = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
_ERROR_PAGE = (b"<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n"
               b"<center><h1>500 Internal Server Error</h1></center>\r\n<hr><center>nginx</center>\r\n"
               b"</body>\r\n</html>\r\n")
FAILURE = (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n"
           % len(_ERROR_PAGE)) + _ERROR_PAGE  # what a receiver behind nginx answers when it is failing
NO_LENGTH = b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

# Slots of the receiver's shared counters (``Receiver.snapshot()``).
REQUESTS, ITEMS, DISTINCT, BAD_BODIES, SIZE_MISMATCH, MAX_ITEMS, IN_FLIGHT, MAX_IN_FLIGHT = range(8)


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to measure."""


# --- the receiver (its own process) ---------------------------------------------------------------
class ReceiverHTTP(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; bodies framed by Content-Length; 200 (or ``status`` 500).

    Every request is counted in ``counters[REQUESTS]`` when it is answered (last: once it moves, the
    request's items and arrival are recorded). Options:

    - ``count_items``: parse each body and count its items (the length of a JSON array, 1 for an
      object), distinct event ids, the largest request, bodies that are neither, and requests whose
      ``X-Hookgate-Batch-Size`` does not match. A request without Content-Length is then counted as a
      bad body and answered 400; otherwise a chunked one is answered 411 (no Content-Length: no body).
    - ``latencies``/``seqs`` (shared arrays): for each body with ``data.sent_at`` and ``data.seq``,
      record arrival time − ``sent_at`` and ``seq`` while there is room; ``arrived`` counts them.
    - ``latency_s`` > 0: each answer is sent that long after its request arrived (a timer, so one
      connection's wait does not hold the others'); ``counters[IN_FLIGHT]`` counts the requests that
      arrived and are not answered yet, ``counters[MAX_IN_FLIGHT]`` the most at once. The latency is
      the same for every request, so a connection's answers leave in the order its requests came.
    - ``status`` 500: every answer is a ``500`` with nginx's error page (a receiver that is failing).
    """

    transport: asyncio.Transport

    def __init__(self, counters: Any, seen: set[str], count_items: bool, arrived: Any,
                 latencies: Any, seqs: Any, latency_s: float = 0.0, status: int = 200) -> None:
        self.counters, self.seen, self.count_items = counters, seen, count_items
        self.arrived, self.latencies, self.seqs = arrived, latencies, seqs
        self.parse = count_items or latencies is not None
        self.latency_s, self.reply = latency_s, FAILURE if status == 500 else REPLY
        self.held: collections.deque[bool] = collections.deque()  # per request waiting: close after it?
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
            close = b"\r\nconnection: close" in head
            if self.latency_s:
                self._hold(close)
                if close:
                    return
                continue
            self.counters[REQUESTS] += 1
            self.transport.write(self.reply)
            if close:
                self.transport.close()
                return

    def _hold(self, close: bool) -> None:
        counters = self.counters
        counters[IN_FLIGHT] += 1
        counters[MAX_IN_FLIGHT] = max(counters[MAX_IN_FLIGHT], counters[IN_FLIGHT])
        self.held.append(close)
        asyncio.get_running_loop().call_later(self.latency_s, self._answer)

    def _answer(self) -> None:
        close = self.held.popleft()
        self.counters[IN_FLIGHT] -= 1
        self.counters[REQUESTS] += 1
        if self.transport.is_closing():
            return  # the client gave up (a timeout, or a worker stopped at the time cap)
        self.transport.write(self.reply)
        if close:
            self.transport.close()

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
          port_out: Connection, latency_s: float = 0.0, status: int = 200) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark stops us, also on Ctrl-C

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: set[str] = set()
        # A large backlog: a client opening hundreds of connections at once is not refused.
        server = await loop.create_server(
            lambda: ReceiverHTTP(counters, seen, count_items, arrived, latencies, seqs, latency_s, status),
            "127.0.0.1", 0, backlog=4096)
        port_out.send(server.sockets[0].getsockname()[1])
        await asyncio.Future()

    asyncio.run(main())


class Receiver:
    """``serve`` in a spawned process; its counters and arrivals are in shared memory.

    ``count`` is the number of requests answered, ``snapshot()`` every counter; with ``arrivals`` > 0
    (room for that many), ``take()`` returns (and forgets) the arrivals so far: [(seq, latency s)].
    With ``latency_s``, ``in_flight`` and ``max_in_flight`` are what it holds (``settle()`` between
    phases); ``status=500`` makes it fail every request. ``cpu_s()`` is the CPU time it has used.
    """

    def __init__(self, *, count_items: bool = False, arrivals: int = 0, name: str = "bench-receiver",
                 latency_s: float = 0.0, status: int = 200) -> None:
        if status not in (200, 500):
            raise ValueError("status is 200 or 500")
        ctx = mp.get_context("spawn")
        self._counters = ctx.RawArray(ctypes.c_longlong, 8)
        self._arrived = ctx.RawValue(ctypes.c_longlong, 0)
        self._latencies = ctx.RawArray(ctypes.c_double, arrivals) if arrivals else None
        self._seqs = ctx.RawArray(ctypes.c_longlong, arrivals) if arrivals else None
        port_in, port_out = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=serve, name=name, args=(
            self._counters, count_items, self._arrived, self._latencies, self._seqs, port_out, latency_s, status))
        self._process.start()
        if not port_in.poll(30):
            self.stop()
            raise BenchError("the receiver did not start within 30 s")
        self.url = f"http://127.0.0.1:{port_in.recv()}/hook"

    @property
    def count(self) -> int:
        return self._counters[REQUESTS]

    @property
    def in_flight(self) -> int:
        return self._counters[IN_FLIGHT]

    @property
    def max_in_flight(self) -> int:
        return self._counters[MAX_IN_FLIGHT]

    def settle(self, timeout_s: float = 60.0) -> None:
        """Between phases: wait until nothing is in flight (a stopped client's last requests are still
        answered, and counted), then count the most in flight from zero."""
        deadline = time.monotonic() + timeout_s
        while self._counters[IN_FLIGHT]:
            if time.monotonic() > deadline:
                raise BenchError(f"the receiver still holds {self.in_flight} requests after {timeout_s:.0f} s")
            time.sleep(0.01)
        self._counters[MAX_IN_FLIGHT] = 0

    def cpu_s(self) -> float:
        assert self._process.pid is not None
        return process_cpu_s(self._process.pid)

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


def store_counters(db: Any) -> dict[str, float]:
    """The store's cumulative counters: ``calls:<command>`` and ``usec:<command>`` (time spent in it) from
    INFO commandstats (without INFO itself, which is how the benchmark reads them; commands a Lua script
    runs are counted too, besides its EVALSHA, and their time is part of the EVALSHA's), ``used_memory``
    and ``cpu_s`` (the server's user + system CPU seconds)."""
    counters: dict[str, float] = {}
    for name, stats in db.info("commandstats").items():
        command = name.removeprefix("cmdstat_")
        if command != "info":
            counters[f"calls:{command}"] = float(stats["calls"])
            counters[f"usec:{command}"] = float(stats["usec"])
    info = db.info()
    counters["used_memory"] = float(info["used_memory"])
    counters["cpu_s"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return counters


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after.keys() | before.keys()}


def events(n: int, name: str = "purchase", start: int = 0) -> list[dict[str, Any]]:
    """``n`` copies of ``EVENT`` named ``name``, each with a user id of its own."""
    return [dict(EVENT, name=name, user_id=f"u{i}") for i in range(start, start + n)]


def canonical_body() -> bytes:
    """``EVENT`` as hookgate's default JSON template sends it (~370 bytes): what the baselines post."""
    from hookgate.events import canonical_event

    event = canonical_event("src_" + "0" * 28, EVENT, received_at=dt.datetime.now(dt.UTC))
    return json.dumps(event, ensure_ascii=False).encode()


class Api:
    """hookgate's own API through the Flask test client: the code a request runs, without a server.

    Creating thousands of destinations this way takes about 1 ms each, and goes through the same
    validation and indexes as ``POST /v1/destinations``."""

    def __init__(self, redis_url: str) -> None:
        from hookgate import create_app

        self.app = create_app({"redis_url": redis_url, "admin_token": "bench",
                               "allowed_networks": "127.0.0.0/8", "log_level": "WARNING"})
        self.client = self.app.test_client()
        self.admin = {"Authorization": "Bearer bench"}

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.app.extensions["hookgate"].db.close()

    def try_create(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST ``body`` to ``path`` as the admin: (status, JSON answer)."""
        response = self.client.post(path, json=body, headers=self.admin)
        return response.status_code, response.get_json()

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return _expect(self.client.post(path, json=body, headers=self.admin), 201)

    def source(self, name: str = "bench") -> dict[str, Any]:
        return self.create("/v1/sources", {"name": name})

    def destinations(self, specs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.create("/v1/destinations", spec) for spec in specs]

    def send(self, source: dict[str, Any], batch: list[dict[str, Any]], per_request: int = INGEST_BATCH,
             timeout_s: float | None = None) -> None:
        """Ingest ``batch``, ``per_request`` events a request (a list, or one object when 1); every
        request must be a 202. BenchError after ``timeout_s``, if given."""
        headers = {"X-Hookgate-Key": source["key"]}
        path = f"/v1/sources/{source['id']}/events"
        started = time.monotonic()
        for start in range(0, len(batch), per_request):
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                raise BenchError(f"ingest took more than {timeout_s:.0f} s ({start}/{len(batch)} events)")
            chunk = batch[start: start + per_request]
            _expect(self.client.post(path, json=chunk[0] if per_request == 1 else chunk, headers=headers), 202)


def _expect(response: Any, status: int) -> Any:
    if response.status_code != status:
        raise BenchError(f"{response.request.path}: expected {status}, got {response.status_code}: "
                         f"{response.get_data(as_text=True)[:500]}")
    return response.get_json()


def ingest(redis_url: str, destination: dict[str, Any], n: int, timeout_s: float | None = None) -> None:
    """Create a source and ``destination``, then ingest ``n`` events through the Flask test client,
    ``INGEST_BATCH`` a request (this enqueues the drain job); BenchError after ``timeout_s``, if given."""
    with Api(redis_url) as api:
        source = api.source()
        api.destinations([destination])
        api.send(source, events(n), timeout_s=timeout_s)


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


def run_capped(command: list[str], env: dict[str, str], log_path: pathlib.Path, progress: Callable[[], int],
               n: int, cap_s: float) -> tuple[float, int, float, float]:
    """Start ``command`` (a burst worker) and poll ``progress()`` (deliveries so far) until it reaches
    ``n`` or ``cap_s`` seconds have passed; then SIGKILL its session at once if it is still running
    (the store is thrown away after the phase, so nothing needs a clean stop). Returns (seconds,
    deliveries by then, seconds until the first, its CPU seconds), from its start. BenchError if it
    exits before ``n``."""
    first = 0.0
    cpu_before = children_cpu_s()
    started = time.perf_counter()
    worker = start_child(command, env, log_path)
    try:
        while True:
            done, elapsed = progress(), time.perf_counter() - started
            if done and not first:
                first = elapsed
            if done >= n or elapsed >= cap_s:
                return elapsed, done, first, _killed_cpu_s(worker, cpu_before)
            if worker.poll() is not None:
                raise BenchError(f"the worker exited ({worker.returncode}) after {done}/{n} deliveries"
                                 + tail(log_path))
            time.sleep(0.005)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def _killed_cpu_s(worker: subprocess.Popen, cpu_before: float) -> float:
    """Stop ``worker`` now (SIGKILL to its session) and return the CPU seconds it used."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    return children_cpu_s() - cpu_before


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's children that have exited (and been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_child(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM (RQ: warm shutdown), then after ``grace_s`` SIGKILL to its whole session."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- what a benchmark installs for itself ---------------------------------------------------------
def ensure_module(module: str, requirement: str) -> ModuleType:
    """Import ``module``; if it is missing, ``pip install requirement`` into this interpreter's
    environment first (the project's venv: a benchmark may need what the project does not)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pass
    print(f"installing {requirement} into {sys.prefix} (pip)…", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", requirement], check=True)
    importlib.invalidate_caches()
    return importlib.import_module(module)
