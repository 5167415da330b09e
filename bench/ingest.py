"""Ingest throughput: hookgate's real ``POST /v1/sources/<id>/events`` against a bare Flask endpoint.

Both run under the same gunicorn command line and settings (``python -m gunicorn -c gunicorn.conf.py``,
sync workers, ``HOOKGATE_BIND``/``HOOKGATE_WEB_WORKERS`` from this script), side by side in one run,
once with 10 destinations configured and once with 10,000. One destination subscribes to the
benchmark event ("purchase"), so each accepted event stores one pending delivery; no worker runs, so
deliveries pile up. The baseline (``bench/_ingest_bare.py``) parses the JSON and answers 202.

Load: a separate process runs C threads (``--connections``) posting one event per request; only
202s count, anything else is an error. Each server gets ``--duration`` measured seconds in two
halves, in the order bare, hookgate, hookgate, bare (drift in the machine's load cancels out), each
after a 2 s warm-up. The client is ``http.client``, not ``requests``: on 2 cores a ``requests``
client tops out near 700 req/s and would measure itself, not the servers. gunicorn's sync workers
close the connection after each response, so each request opens a new TCP connection.

Store: ``HOOKGATE_REDIS_URL`` if set -- **that database is FLUSHDB'ed** before each destination count --
otherwise an embedded Valkey in a temporary directory. Every child process is stopped at the end.
Run: ``/path/to/venv/bin/python bench/ingest.py [--duration 10] [--connections 8] [--web-workers 4]``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing as mp
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import redis
import requests

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EVENT = {"name": "purchase", "user_id": "u1", "data": {"sku": "A1", "price": 9.99}}
ADMIN = "bench"
WARMUP_S = 2.0
STARTUP_TIMEOUT_S = 60.0
DESTINATION_COUNTS = (10, 10_000)
API_CREATE_LIMIT = 100  # up to this many destinations are created over HTTP; more go straight to the store


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to measure."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the load generator (its own process) ------------------------------------------------------------
Run = tuple[list[float], Counter[str]]  # latencies (s) of the 202s, and every other answer counted


def merge(runs: list[Run]) -> Run:
    return [x for latencies, _ in runs for x in latencies], sum((errors for _, errors in runs), Counter())


def load(port: int, path: str, headers: dict[str, str], connections: int, duration: float,
         out: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle: it kills this process
    body = json.dumps(EVENT).encode()
    start = time.monotonic() + WARMUP_S
    end = start + duration
    runs: list[Run] = [([], Counter()) for _ in range(connections)]  # one per thread: no locks

    def worker(latencies: list[float], errors: Counter[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while (now := time.monotonic()) < end:
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                reply = response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                status, reply = type(exc).__name__, b""
            done = time.monotonic()
            if start <= done <= end:
                if status == "202":
                    latencies.append(done - now)
                else:
                    errors[f"{status} {reply[:160].decode(errors='replace')}".strip()] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=run, daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + WARMUP_S + 30)
    out.send(merge(runs))


def measure(port: int, source_id: str, key: str, connections: int, seconds: float) -> Run:
    """One load run, in a process of its own."""
    headers = {"Content-Type": "application/json", "X-Hookgate-Key": key}
    receive, send = mp.Pipe(duplex=False)
    proc = mp.Process(target=load, daemon=True, args=(port, f"/v1/sources/{source_id}/events", headers,
                                                      connections, seconds, send))
    proc.start()
    try:
        if not receive.poll(seconds + WARMUP_S + 60):
            raise BenchError("the load generator did not report in time")
        result: Run = receive.recv()
    except BaseException:
        proc.kill()
        raise
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    return result


def summary(runs: list[Run], seconds: float) -> dict[str, Any]:
    latencies, errors = merge(runs)
    latencies.sort()

    def pct(q: float) -> float:  # milliseconds
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else 0.0

    return {"rate": len(latencies) / seconds, "p50": pct(0.50), "p99": pct(0.99), "errors": errors}


# --- servers -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def gunicorn(target: str, redis_url: str, workers: int, log: pathlib.Path) -> Iterator[int]:
    """``python -m gunicorn -c <repo>/gunicorn.conf.py <target>`` in a session of its own; yields its port."""
    port = free_port()
    env = {**os.environ, "HOOKGATE_REDIS_URL": redis_url, "HOOKGATE_ADMIN_TOKEN": ADMIN,
           "HOOKGATE_BIND": f"127.0.0.1:{port}", "HOOKGATE_WEB_WORKERS": str(workers),
           "HOOKGATE_LOG_LEVEL": "WARNING", "HOOKGATE_ALLOWED_NETWORKS": "127.0.0.0/8"}
    env.pop("HOOKGATE_ACCESS_LOG", None)
    with open(log, "ab") as sink:
        command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), target]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        probe, ready = ("/healthz", 200) if target == "wsgi:app" else ("/", 404)  # the bare app has no /
        while True:
            if proc.poll() is not None:
                raise BenchError(f"gunicorn {target} exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
            try:
                if requests.get(f"http://127.0.0.1:{port}{probe}", timeout=1).status_code == ready:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"gunicorn {target} did not answer within {STARTUP_TIMEOUT_S:.0f}s")
            time.sleep(0.1)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@contextlib.contextmanager
def store(tmp: pathlib.Path) -> Iterator[str]:
    url = os.environ.get("HOOKGATE_REDIS_URL")
    if url:
        yield url
        return
    from hookgate.embedded import EmbeddedServer

    server = EmbeddedServer(tmp)
    server.start(preexec_fn=os.setsid)  # a Ctrl-C must not stop the store before the servers
    try:
        yield server.url
    finally:
        server.stop()


def configure(api: str, db: redis.Redis, destinations: int) -> tuple[str, str]:
    """FLUSHDB, then one source and ``destinations`` destinations, exactly one of them on "purchase"."""
    from hookgate.destinations import DestinationStore
    from hookgate.schemas import DestinationSchema
    from hookgate.store import keys

    db.flushdb()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with requests.Session() as session:
        reply = session.post(f"{api}/v1/sources", json={"name": "bench"}, headers=auth, timeout=10)
        reply.raise_for_status()
        source = reply.json()
        specs = [{"name": f"d{i}", "url": "http://127.0.0.1:9/never",
                  "events": ["purchase" if i == 0 else f"event_{i}"]} for i in range(destinations)]
        if destinations <= API_CREATE_LIMIT:
            for spec in specs:
                session.post(f"{api}/v1/destinations", json=spec, headers=auth, timeout=10).raise_for_status()
        else:
            schema, repo = DestinationSchema(), DestinationStore(db)
            for spec in specs:
                repo.create(schema.load(spec))
    if db.hlen(keys.destinations) != destinations:
        raise BenchError(f"expected {destinations} destinations in the store")
    return source["id"], source["key"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per server and row")
    parser.add_argument("--connections", type=int, default=8, help="concurrent client connections")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn sync workers (both servers)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    rows: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="hookgate-bench-") as tmpdir:
            tmp = pathlib.Path(tmpdir)
            with store(tmp) as url, \
                    gunicorn("bench._ingest_bare:app", url, args.web_workers, tmp / "bare.log") as bare, \
                    gunicorn("wsgi:app", url, args.web_workers, tmp / "hookgate.log") as hook:
                from hookgate.store import connect, keys

                db = connect(url)
                for count in DESTINATION_COUNTS:
                    source_id, key = configure(f"http://127.0.0.1:{hook}", db, count)
                    runs: dict[int, list[Run]] = {bare: [], hook: []}
                    for port in (bare, hook, hook, bare):  # ABBA: drift in the machine's load cancels out
                        print(f"{count:,} destinations: {'bare' if port == bare else 'hookgate'} "
                              f"{args.duration / 2:g} s ...", file=sys.stderr, flush=True)
                        runs[port].append(measure(port, source_id, key, args.connections, args.duration / 2))
                    rows.append((count, summary(runs[bare], args.duration),
                                 summary(runs[hook], args.duration)))
                    accepted, stored = sum(len(run) for run, _ in runs[hook]), db.zcard(keys.deliveries)
                    if stored < accepted:  # every accepted event stores its one delivery (warm-ups too)
                        raise BenchError(f"{accepted} events were accepted, but {stored} deliveries stored")
                db.close()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        return 130

    print(f"\ningest, 1 event per request: {args.connections} connections, {args.duration:g} s per server "
          f"(order bare, hookgate, hookgate, bare; {WARMUP_S:g} s warm-up each), {args.web_workers} gunicorn "
          f"sync workers per server, {os.cpu_count()} CPUs\n")
    print(f"{'destinations':>12} | {'bare Flask ev/s':>15} | {'p50/p99 ms':>11} | {'hookgate ev/s':>13} "
          f"| {'p50/p99 ms':>11} | {'ratio':>5}")
    print("-" * 84)
    for count, b, h in rows:
        ratio = h["rate"] / b["rate"] if b["rate"] else float("nan")
        print(f"{count:>12,} | {b['rate']:>15,.0f} | {b['p50']:>5.1f}/{b['p99']:<5.1f} | "
              f"{h['rate']:>13,.0f} | {h['p50']:>5.1f}/{h['p99']:<5.1f} | {ratio:>5.2f}")
    errors = [(name, count, what, n) for count, b, h in rows
              for name, result in (("bare", b), ("hookgate", h)) for what, n in result["errors"].items()]
    for name, count, what, n in errors:
        print(f"  errors ({name}, {count:,} destinations): {n} x {what}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
