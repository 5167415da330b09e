"""Redis killed under load (issue 12): ``gunicorn wsgi:app`` (2 web workers) and 2 ``hookgate worker``
processes against a Valkey of the script's own (append-only file on), which is SIGKILLed during
continuous ingest and started again on the same port and data.

A client posts 10 events a request, ``--rate`` requests a second, for ``--seconds``; the store is
killed ``--kill-at`` seconds in and started again ``--down`` seconds later. Each event carries
``data.seq`` and ``data.sent_at``; the receiver records every arrival. Printed: events acknowledged
(202), events delivered (of those acknowledged), duplicates (requests past the first of an event),
the first delivery after the store answered, the longest pause between deliveries after it, and
whether both workers are still alive.

``--fsync always`` makes the store write every command to disk before answering (nothing it
acknowledged can be lost to the kill); the default, ``everysec``, is Valkey's and the embedded
store's: a kill can lose the last second of writes, acknowledged events included (point 6 of issue 12).

Run: ``/path/to/venv/bin/python bench/outage.py [--seconds 24] [--kill-at 8] [--down 4] [--rate 40]
[--fsync everysec|always]``. Runtime ≤ 2 min.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import threading
import time

import requests
from _common import DISTINCT, REQUESTS, BenchError, Receiver
from latency import Processes, create_flow, free_port, hookgate_env, wait_for_api

from hookgate.embedded import EmbeddedServer

OUTAGE_LOGGED, RECOVERY_LOGGED = "the store is not answering", "the store answers again"
DRAIN_TIMEOUT_S = 70.0  # a lease (60 s) and the ticker: what the kill cut short and did not give back


def post_continuously(url: str, key: str, rate: float, seconds: float, acknowledged: set[int],
                      refused: list[int], sent: dict[int, float]) -> None:
    """10 events a request, ``rate`` requests a second, for ``seconds``; ``sent``: each seq's send time."""
    seq = 0
    started = time.monotonic()
    with requests.Session() as session:
        while time.monotonic() - started < seconds:
            now = time.time()
            batch = [{"name": "e", "data": {"seq": seq + i, "sent_at": now}} for i in range(10)]
            sent.update((seq + i, now) for i in range(10))
            seq += len(batch)
            try:
                response = session.post(url, json=batch, headers={"X-Hookgate-Key": key}, timeout=5)
                if response.status_code == 202:
                    acknowledged.update(item["data"]["seq"] for item in batch)
                else:
                    refused.append(response.status_code)
            except requests.RequestException:
                refused.append(0)
            time.sleep(max(0.0, (seq / 10) / rate - (time.monotonic() - started)))


def measure(args: argparse.Namespace, workdir: pathlib.Path) -> None:
    store = EmbeddedServer(workdir / "store", port=free_port(), appendfsync=args.fsync)
    receiver = Receiver(count_items=True, arrivals=int(args.rate * args.seconds * 10 * 2) + 1000)
    processes = Processes(workdir)
    try:
        port = free_port()
        store.start()
        env = hookgate_env(store.url, port)
        processes.start("web", [sys.executable, "-m", "gunicorn", "wsgi:app"], env)
        for n in range(2):
            processes.start(f"worker{n}", [sys.executable, "-m", "hookgate.cli", "worker", "--name", f"w{n}"], env)
        api = f"http://127.0.0.1:{port}"
        wait_for_api(api, processes)
        source_id, key = create_flow(api, receiver.url)
        acknowledged: set[int] = set()
        refused: list[int] = []
        sent: dict[int, float] = {}
        client = threading.Thread(target=post_continuously, daemon=True, args=(
            f"{api}/v1/sources/{source_id}/events", key, args.rate, args.seconds, acknowledged, refused, sent))
        started = time.time()
        client.start()
        time.sleep(args.kill_at)
        store.kill()
        print(f"store killed at {time.time() - started:.1f} s", file=sys.stderr, flush=True)
        time.sleep(args.down)
        store.start()
        answering = time.time()
        print(f"store answering at {answering - started:.1f} s", file=sys.stderr, flush=True)
        client.join(args.seconds + 30)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline and receiver.snapshot()[DISTINCT] < len(acknowledged):
            time.sleep(0.5)
        time.sleep(2)  # what is still on its way
        receiver.settle()
        arrivals = [(seq, sent[seq] + latency) for seq, latency in receiver.take()]
        print(f"events posted:                   {len(sent)} in {args.seconds:.0f} s")
        report(args, acknowledged, refused, arrivals, receiver.snapshot()[REQUESTS], answering, processes)
    finally:
        processes.stop()
        receiver.stop()
        store.stop()


def report(args: argparse.Namespace, acknowledged: set[int], refused: list[int], arrivals: list[tuple[int, float]],
           requests_seen: int, answering: float, processes: Processes) -> None:
    """``arrivals``: (seq, when it arrived)."""
    seen = {seq for seq, _ in arrivals}
    delivered = len(acknowledged & seen)
    alive = sum(process.poll() is None for name, process in processes.children if name.startswith("worker"))
    print(f"fsync {args.fsync}; {args.seconds:.0f} s of ingest at up to {args.rate * 10:.0f} events/s (one "
          f"client, a request at a time); store down {args.down:.0f} s from {args.kill_at:.0f} s")
    print(f"refused during the outage:       {len(refused)} requests ({sorted(set(refused))})")
    print(f"events acknowledged (202):       {len(acknowledged)}")
    print(f"events delivered (of those):     {delivered}   lost: {len(acknowledged - seen)}")
    print(f"duplicates:                      {requests_seen - len(seen)}")
    print(f"workers alive at the end:        {alive} of 2")
    logs = [(processes.workdir / f"worker{n}.log").read_text(errors="replace") for n in range(2)]
    print(f"outage logged by each worker:    {[log.count(OUTAGE_LOGGED) for log in logs]} time(s), "
          f"recovery {[log.count(RECOVERY_LOGGED) for log in logs]}; lines logged: "
          f"{[len(log.splitlines()) for log in logs]}")
    if args.logs:
        for n, log in enumerate(logs):
            print(f"--- worker{n}.log\n{log.rstrip()}")
    print_pauses(sorted(at for _, at in arrivals), answering)


def print_pauses(times: list[float], answering: float) -> None:
    after = [t for t in times if t >= answering]
    if not after:
        raise BenchError("nothing was delivered after the store came back")
    pauses = [b - a for a, b in zip([answering, *after], after, strict=False)]
    print(f"first delivery after recovery:   {after[0] - answering:.2f} s")
    print(f"longest pause after recovery:    {max(pauses):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=24.0)
    parser.add_argument("--kill-at", type=float, default=8.0)
    parser.add_argument("--down", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests a second, 10 events each")
    parser.add_argument("--fsync", choices=["everysec", "always"], default="everysec")
    parser.add_argument("--logs", action="store_true", help="print the workers' logs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hookgate-outage-") as workdir:
        measure(args, pathlib.Path(workdir))


if __name__ == "__main__":
    main()
