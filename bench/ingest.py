"""Ingest throughput: hookgate's real ``POST /v1/sources/<id>/events`` against a bare Flask endpoint, both
driven by wrk under the same gunicorn settings, side by side in one run.

Both servers run the same command line (``python -m gunicorn -c gunicorn.conf.py <app>``, sync workers,
``HOOKGATE_BIND``/``HOOKGATE_WEB_WORKERS`` from this script, default 2 workers each). The baseline
(``bench/_ingest_bare.py``) parses the JSON and answers 202. hookgate is measured with 10
destinations subscribed to the benchmark event ("purchase"), so each accepted event stores 10 pending
deliveries (no worker runs: they pile up), and again once 10,000 other destinations (on other event
names) exist besides those 10.

Load: wrk (a C load generator; installed with ``apt-get install -y wrk`` when missing, after an
``apt-get update`` if that fails), ``--threads`` threads (default 2), ``--connections`` connections
(default 16), one event per request, its POST body and headers set by a small Lua script whose
``done`` hook prints wrk's counts as one JSON line. Only 2xx answers count as events; any other
answer or socket error is printed. gunicorn's sync workers close the connection after each response,
so each request opens a new TCP connection, on both sides alike.

Order: bare, hookgate 10, hookgate 10 + 10,000, hookgate 10, bare (``--duration`` seconds for the
middle row, half of it for each of the others, so each server gets ``--duration`` in all and drift
in the machine's load cancels out), each after a 2 s wrk warm-up that is not counted. Before each
hookgate row the store is flushed and configured again through hookgate's own API (the Flask test
client), so every row starts with an empty queue.

Store: ``HOOKGATE_REDIS_URL`` if set -- **that database is FLUSHDB'ed** -- otherwise an embedded Valkey
in a temporary directory. Every child process is stopped at the end, on errors and Ctrl-C too.
Run: ``/path/to/venv/bin/python bench/ingest.py [--duration 10] [--connections 16] [--web-workers 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
import requests
from _common import EVENT, ROOT, Api, BenchError

ADMIN = "bench"
WARMUP_S = 2.0
STARTUP_TIMEOUT_S = 60.0
MATCHING = 10
OTHERS = 10_000
TARGET_RATIO = 0.5  # issue 16: hookgate (10 matching) ≥ 0.5× the bare endpoint
TARGET_COST = 0.10  # issue 16: 10,000 other destinations cost ≤ 10 %

LUA = """wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Hookgate-Key"] = %(key)s

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %%d, "duration_us": %%d, "non2xx": %%d, "connect": %%d, "read": %%d, "write": %%d, '
    .. '"timeout": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- wrk ---------------------------------------------------------------------------------------------
def ensure_wrk() -> str:
    """The path of ``wrk``, installed with apt-get (after ``apt-get update`` if needed) when missing."""
    if found := shutil.which("wrk"):
        return found
    print("installing wrk (apt-get install -y wrk)…", file=sys.stderr, flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=False, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=False, **quiet)
        subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=False, **quiet)
    if found := shutil.which("wrk"):
        return found
    raise BenchError("wrk is not installed and `apt-get install -y wrk` did not install it")


@dataclass
class Run:
    """What wrk counted over one run (a row may be two runs, added up)."""

    requests: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.requests - self.errors.get("non2xx", 0)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    def add(self, report: dict[str, Any]) -> None:
        self.requests += report["requests"]
        self.seconds += report["duration_us"] / 1e6
        for name in ("non2xx", "connect", "read", "write", "timeout"):
            if report[name]:
                self.errors[name] = self.errors.get(name, 0) + report[name]
        self.p50_ms.append(report["p50_us"] / 1e3)
        self.p99_ms.append(report["p99_us"] / 1e3)


def wrk(binary: str, script: pathlib.Path, url: str, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """One wrk run; its ``done`` hook's JSON report."""
    command = [binary, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s", "--timeout", "10s",
               "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line.removeprefix("BENCH "))
    raise BenchError(f"wrk exited {done.returncode} without a report:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")


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


def configure(url: str, db: redis.Redis, others: int) -> dict[str, Any]:
    """FLUSHDB, then through the API one source, ``MATCHING`` destinations on "purchase" and ``others``
    on event names of their own. Returns the source."""
    db.flushdb()
    never = "http://127.0.0.1:9/never"  # no worker runs: nothing is sent
    with Api(url) as api:
        source = api.source()
        api.destinations({"name": f"m{i}", "url": never, "events": ["purchase"]} for i in range(MATCHING))
        api.destinations({"name": f"o{i}", "url": never, "events": [f"event_{i}"]} for i in range(others))
    return source


@dataclass
class Plan:
    """One row of the run: which server, how many other destinations, which share of ``--duration``."""

    name: str
    others: int | None  # None: the bare server
    share: float


PLAN = [Plan("bare Flask", None, 0.5), Plan(f"hookgate, {MATCHING} matching", 0, 0.5),
        Plan(f"hookgate, {MATCHING} matching + {OTHERS:,} others", OTHERS, 1.0),
        Plan(f"hookgate, {MATCHING} matching", 0, 0.5), Plan("bare Flask", None, 0.5)]


def measure(args: argparse.Namespace, tmp: pathlib.Path) -> dict[str, Run]:
    binary = ensure_wrk()
    from hookgate.store import keys

    runs: dict[str, Run] = {}
    script = tmp / "post.lua"
    with store(tmp) as url, \
            gunicorn("bench._ingest_bare:app", url, args.web_workers, tmp / "bare.log") as bare, \
            gunicorn("wsgi:app", url, args.web_workers, tmp / "hookgate.log") as hook:
        db = redis.Redis.from_url(url, decode_responses=True)
        source: dict[str, Any] = {"id": "src_bench", "key": "none"}
        for plan in PLAN:
            if plan.others is not None:
                print(f"configuring {MATCHING} + {plan.others:,} destinations…", file=sys.stderr, flush=True)
                source = configure(url, db, plan.others)
            script.write_text(LUA % {"body": json.dumps(json.dumps(EVENT)), "key": json.dumps(source["key"])})
            port = bare if plan.others is None else hook
            target = f"http://127.0.0.1:{port}/v1/sources/{source['id']}/events"
            seconds = args.duration * plan.share
            print(f"{plan.name}: wrk {WARMUP_S:g} s warm-up + {seconds:g} s…", file=sys.stderr, flush=True)
            wrk(binary, script, target, args, WARMUP_S)
            stored_before = db.zcard(keys.deliveries)
            report = wrk(binary, script, target, args, seconds)
            runs.setdefault(plan.name, Run()).add(report)
            if plan.others is not None:  # every accepted event stores one delivery per matching destination
                stored = db.zcard(keys.deliveries) - stored_before
                accepted = report["requests"] - report["non2xx"]
                if stored < accepted * MATCHING:
                    raise BenchError(f"{accepted} events were accepted, but {stored} deliveries stored")
        db.close()
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per server and row (10)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn sync workers, both servers (default 2)")
    args = parser.parse_args()
    if args.duration < 2 or min(args.connections, args.threads, args.web_workers) < 1 \
            or args.threads > args.connections:
        parser.error("--duration at least 2; --connections, --threads, --web-workers at least 1; threads ≤ connections")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    try:
        with tempfile.TemporaryDirectory(prefix="hookgate-bench-") as tmpdir:
            runs = measure(args, pathlib.Path(tmpdir))
    except (BenchError, redis.RedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every child process was stopped", file=sys.stderr)
        return 130

    print(f"\ningest, 1 event per request, wrk -t{args.threads} -c{args.connections}; order: bare, hookgate "
          f"{MATCHING}, hookgate {MATCHING} + {OTHERS:,}, hookgate {MATCHING}, bare ({args.duration:g} s per row in "
          f"all, {WARMUP_S:g} s warm-up each); {args.web_workers} gunicorn sync workers per server; "
          f"{os.cpu_count()} CPUs\n")
    print(f"  {'server':<42} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7}  errors")
    for name, run in runs.items():
        errors = ", ".join(f"{kind} {n}" for kind, n in run.errors.items()) or "-"
        print(f"  {name:<42} {run.rate:>9,.0f} {max(run.p50_ms):>7.1f} {max(run.p99_ms):>7.1f}  {errors}")
    bare, plain, crowded = (run.rate for run in runs.values())
    ratio, cost = plain / bare, 1 - crowded / plain
    print(f"\n  hookgate ({MATCHING} matching) / bare Flask: {ratio:.2f}×   "
          f"[issue 16 target ≥ {TARGET_RATIO}×: {'met' if ratio >= TARGET_RATIO else 'NOT met'}]")
    print(f"  cost of {OTHERS:,} other destinations: {cost * 100:.0f} % ({crowded / plain:.2f}× of itself)   "
          f"[issue 16 target ≤ {TARGET_COST * 100:.0f} %: {'met' if cost <= TARGET_COST else 'NOT met'}]")
    return 1 if any(run.errors for run in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
