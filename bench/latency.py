"""End-to-end delivery latency at a steady rate, through real processes, next to its floor.

- hookgate: ``gunicorn wsgi:app`` (2 sync workers) and one ``python -m hookgate.cli worker``, against one
  store; a paced client POSTs one event per request to ``/v1/sources/<id>/events`` (one
  ``requests.Session``), each carrying its send time in ``data.sent_at``; a catch-all destination
  delivers to the receiver, which records arrival time − ``sent_at``.
- floor: the same paced client POSTs the same kind of body straight to the receiver.

The receiver is an asyncio HTTP/1.1 server in a process of its own that parses each body and keeps
latencies in shared memory. Everything is on 127.0.0.1; every child process is stopped at the end,
on errors and Ctrl-C too.

Redis: ``HOOKGATE_REDIS_URL`` if set (it is FLUSHDB'ed!), otherwise an embedded Valkey in a temp dir.
Run: ``/path/to/venv/bin/python bench/latency.py [--rate 200] [--duration 20]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import redis
import requests
from _common import BenchError, Receiver, redis_server, start_child, tail

ADMIN_TOKEN = "bench-latency-admin-token"
TARGET_P50_MS = 20.0
TARGET_P99_MS = 150.0
WARMUP_EVENTS = 40
START_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 60.0


# --- hookgate's processes -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Child processes, each in a session of its own, all stopped by ``stop()``."""

    def __init__(self, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        self.children: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        process = start_child(command, env, self.workdir / f"{name}.log")
        self.children.append((name, process))
        return process

    def check(self) -> None:
        for name, process in self.children:
            if process.poll() is not None:
                raise BenchError(f"{name} exited ({process.returncode})" + self.tail(name))

    def tail(self, name: str, chars: int = 2000) -> str:
        return tail(self.workdir / f"{name}.log", name, chars)

    def stop(self) -> None:
        for _, process in self.children:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)  # gunicorn: graceful; RQ: warm shutdown
        deadline = time.monotonic() + 15
        for _, process in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever is left of its session
            process.wait()


def hookgate_env(redis_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKGATE_")}
    env.update(HOOKGATE_REDIS_URL=redis_url, HOOKGATE_ADMIN_TOKEN=ADMIN_TOKEN,
               HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8", HOOKGATE_BIND=f"127.0.0.1:{port}",
               HOOKGATE_WEB_WORKERS="2", HOOKGATE_LOG_LEVEL="WARNING")
    return env


def wait_for_api(api: str, processes: Processes) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        processes.check()
        try:
            if requests.get(f"{api}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise BenchError(f"the API did not answer /healthz within {START_TIMEOUT_S:.0f} s" + processes.tail("web"))


def create_flow(api: str, receiver_url: str) -> tuple[str, str]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    source = requests.post(f"{api}/v1/sources", json={"name": "latency"}, headers=admin, timeout=10)
    if source.status_code != 201:
        raise BenchError(f"POST /v1/sources: {source.status_code} {source.text[:500]}")
    created = requests.post(f"{api}/v1/destinations", headers=admin, timeout=10,
                            json={"name": "receiver", "url": receiver_url, "events": ["*"]})
    if created.status_code != 201:
        raise BenchError(f"POST /v1/destinations: {created.status_code} {created.text[:500]}")
    return source.json()["id"], source.json()["key"]


# --- the paced client -----------------------------------------------------------------------------
def paced_posts(url: str, headers: dict[str, str], expect: int, rate: float, count: int, first_seq: int,
                senders: int = 1) -> tuple[float, list[float]]:
    """POST ``count`` bodies, one per request, on a fixed schedule of ``rate``/s; returns (seconds it
    took, each request's round trip in seconds). Each body's ``data`` has ``sent_at`` (time.time(),
    just before its POST) and ``seq``. ``senders`` threads (a keep-alive session each) take turns, so
    one slow request does not hold up the next one's send time."""
    interval = 1.0 / rate
    round_trips: list[float] = []
    failures: list[BaseException] = []
    started = time.perf_counter() + 0.05

    def sender(offset: int) -> None:
        try:
            with requests.Session() as session:
                for i in range(offset, count, senders):
                    if failures:
                        return
                    if (wait := started + i * interval - time.perf_counter()) > 0:
                        time.sleep(wait)
                    data = {"sent_at": time.time(), "seq": first_seq + i}
                    body = json.dumps({"name": "latency_probe", "user_id": f"u{i % 100}", "data": data}).encode()
                    before = time.perf_counter()
                    response = session.post(url, data=body, headers=headers, timeout=10)
                    round_trips.append(time.perf_counter() - before)
                    if response.status_code != expect:
                        raise BenchError(f"POST {url}: expected {expect}, got {response.status_code}: "
                                         f"{response.text[:500]}")
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            failures.append(exc)

    threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return time.perf_counter() - started, round_trips


def collect(receiver: Receiver, seqs: range, processes: Processes | None) -> list[tuple[int, float]]:
    """Wait until every seq arrived (or the timeout), then take what arrived."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while receiver.arrived < len(seqs) and time.monotonic() < deadline:
        if processes is not None:
            processes.check()
        time.sleep(0.05)
    time.sleep(0.2)  # a late duplicate, if any
    return [(seq, latency) for seq, latency in receiver.take() if seq in seqs]


def summarise(name: str, sent: int, took: float, got: list[tuple[int, float]],
              round_trips: list[float]) -> dict[str, Any]:
    unique: dict[int, float] = {}
    for seq, latency in got:
        unique.setdefault(seq, latency)  # the first arrival of each
    values = sorted(v * 1000 for v in unique.values())

    def pct(p: float) -> float:
        return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")

    rtt = sorted(r * 1000 for r in round_trips)
    return {"name": name, "sent": sent, "rate": sent / took if took else 0.0, "received": len(unique),
            "duplicates": len(got) - len(unique), "p50": pct(50), "p90": pct(90), "p99": pct(99),
            "max": values[-1] if values else float("nan"),
            "post_p50": statistics.median(rtt) if rtt else float("nan"),
            "post_p99": rtt[min(len(rtt) - 1, int(round(0.99 * (len(rtt) - 1))))] if rtt else float("nan")}


def print_report(rows: list[dict[str, Any]], rate: float, duration: float, senders: int) -> None:
    print(f"end-to-end latency at {rate:.0f} events/s for {duration:.0f} s, 1 event per request ({senders} paced "
          f"client threads), "
          f"{os.cpu_count()} CPUs; latency = receiver arrival − data.sent_at (set just before the POST)")
    print(f"{'':>10}  {'sent':>6}  {'rate/s':>7}  {'received':>8}  {'dup':>4}  {'p50 ms':>7}  {'p90 ms':>7}  "
          f"{'p99 ms':>7}  {'max ms':>7}  {'POST p50/p99 ms':>16}")
    for row in rows:
        print(f"{row['name']:>10}  {row['sent']:>6}  {row['rate']:>7.1f}  {row['received']:>8}  "
              f"{row['duplicates']:>4}  "
              f"{row['p50']:>7.1f}  {row['p90']:>7.1f}  {row['p99']:>7.1f}  {row['max']:>7.1f}  "
              f"{row['post_p50']:>7.1f}/{row['post_p99']:<8.1f}")
    hookgate = rows[-1]
    p50_ok = hookgate["p50"] <= TARGET_P50_MS
    p99_ok = hookgate["p99"] <= TARGET_P99_MS
    print(f"hookgate p50 {hookgate['p50']:.1f} ms (target ≤ {TARGET_P50_MS:.0f} ms) {'met' if p50_ok else 'NOT met'}; "
          f"p99 {hookgate['p99']:.1f} ms (target ≤ {TARGET_P99_MS:.0f} ms) {'met' if p99_ok else 'NOT met'}; "
          f"lost {hookgate['sent'] - hookgate['received']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase (default 20)")
    parser.add_argument("--senders", type=int, default=4,
                        help="client threads taking turns on the schedule (default 4)")
    args = parser.parse_args()
    if args.rate <= 0 or not 0 < args.duration <= 600 or args.senders < 1:
        parser.error("--rate must be > 0, --duration in (0, 600], --senders at least 1")
    count = int(args.rate * args.duration)
    receiver: Receiver | None = None
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hookgate-latency-") as tmp, \
            redis_server(pathlib.Path(tmp)) as (url, _store):
        processes = Processes(pathlib.Path(tmp))
        try:
            receiver = Receiver(arrivals=2 * count + 2 * WARMUP_EVENTS + 1000, name="bench-latency-receiver")
            with redis.Redis.from_url(url) as db:
                db.flushdb()
            json_headers = {"Content-Type": "application/json"}

            print(f"floor: {count} direct POSTs…", file=sys.stderr, flush=True)
            paced_posts(receiver.url, json_headers, 200, args.rate, WARMUP_EVENTS, -WARMUP_EVENTS, args.senders)
            collect(receiver, range(-WARMUP_EVENTS, 0), None)
            took, rtts = paced_posts(receiver.url, json_headers, 200, args.rate, count, 0, args.senders)
            rows.append(summarise("floor", count, took, collect(receiver, range(0, count), None), rtts))

            print("starting gunicorn and a worker…", file=sys.stderr, flush=True)
            port = free_port()
            env = hookgate_env(url, port)
            processes.start("web", [sys.executable, "-m", "gunicorn", "wsgi:app"], env)
            processes.start("worker", [sys.executable, "-m", "hookgate.cli", "worker"], env)
            api = f"http://127.0.0.1:{port}"
            wait_for_api(api, processes)
            source_id, key = create_flow(api, receiver.url)
            ingest = f"{api}/v1/sources/{source_id}/events"
            ingest_headers = {**json_headers, "X-Hookgate-Key": key}

            print(f"hookgate: {WARMUP_EVENTS} warm-up events, then {count}…", file=sys.stderr, flush=True)
            first = 1_000_000
            paced_posts(ingest, ingest_headers, 202, args.rate, WARMUP_EVENTS, first - WARMUP_EVENTS, args.senders)
            collect(receiver, range(first - WARMUP_EVENTS, first), processes)
            took, rtts = paced_posts(ingest, ingest_headers, 202, args.rate, count, first, args.senders)
            rows.append(summarise("hookgate", count, took, collect(receiver, range(first, first + count), processes),
                                  rtts))
        except (BenchError, redis.RedisError, requests.RequestException) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted: stopping every child process", file=sys.stderr)
            return 130
        finally:
            processes.stop()
            if receiver is not None:
                receiver.stop()
    print_report(rows, args.rate, args.duration, args.senders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
