"""Redis work per delivery: commands (``INFO commandstats`` deltas) for a single delivery, a batched one and
fan-out, ingest and delivery apart and together; and the store's memory per pending delivery.

Commands. Each scenario runs on a flushed store: the source and destinations are created through
hookgate's own API (the Flask test client; not counted), then the events are ingested through the
same client (counted as **ingest**), then one ``python -m hookgate.cli worker --burst`` delivers
them to a local receiver and exits (counted as **delivery**, the worker's start and exit included):

- ``single``: ``--events`` events (default 1,000) × 1 destination.
- ``batch``: the same events × 1 destination with ``"batch": {"size": 100}``: ``--events / 100`` requests.
- ``fan-out``: 1 event → ``--fanout`` destinations (default 1,000).

Events go in ``--per-request`` a request (default 1, as most sources send them). The sums are every
command the server counted except INFO (the benchmark's own reads): a command a Lua script runs is
counted as well as the EVALSHA that ran it. An idle burst worker's own commands (start, one look
at the queue, exit) are printed too: they are part of each delivery figure, spread over its
deliveries. The server's CPU per delivery is the ``used_cpu_user + used_cpu_sys`` delta.

Memory: ``INFO memory`` ``used_memory`` before ingest and after, divided by the deliveries it stored,
with no worker running (``pending``); then, on the same store, after one burst worker made one
attempt at each against a receiver answering 500 (``after one failed attempt``: the destination's
circuit breaker is off and its retry an hour away, so every delivery gets exactly one attempt); and
for 1 event → ``--fanout`` destinations, pending. The event (one per delivery in the single case),
the queue entries and the drain job's RQ job are all in the figure.

Redis: ``HOOKGATE_REDIS_URL`` if set (it is FLUSHDB'ed!), otherwise an embedded Valkey in a temp dir.
Run: ``/path/to/venv/bin/python bench/redis_cost.py [--events 1000] [--fanout 1000] [--per-request 1]``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import redis
from _common import (
    ITEMS,
    Api,
    BenchError,
    Receiver,
    delta,
    events,
    redis_server,
    run_burst,
    store_counters,
    tail,
    worker_env,
)

BATCH_SIZE = 100
TOP = 12
# issue 16: "a single delivery costs ≤ 8 Redis commands from pending to delivered, a batched one (size 100)
# ≤ 2, and 1 event to 1,000 destinations ≤ 20 commands per delivery in total (ingest + delivery)"
TARGETS = {"single": ("delivery", 8), "batch": ("delivery", 2), "fan-out": ("total", 20)}
MEMORY_TARGET = 700  # issue 16: bytes per pending delivery
FAILING = {"circuit_breaker": {"enabled": False}, "retry_schedule": [3600]}


@dataclass
class Cost:
    name: str
    deliveries: int
    ingest: dict[str, float]
    delivery: dict[str, float]

    def calls(self, part: dict[str, float]) -> float:
        return sum(value for key, value in part.items() if key.startswith("calls:"))

    def per_delivery(self, part: dict[str, float]) -> float:
        return self.calls(part) / self.deliveries

    def total(self) -> dict[str, float]:
        return {key: self.ingest.get(key, 0.0) + self.delivery.get(key, 0.0)
                for key in self.ingest.keys() | self.delivery.keys()}

    def top(self, what: str = "calls", part: dict[str, float] | None = None) -> str:
        """The commands with the most ``what`` (calls, or usec: server time) per delivery, in total (or in
        ``part``: the ingest or the delivery phase)."""
        total = self.total() if part is None else part
        found = sorted(((value, key.removeprefix(f"{what}:")) for key, value in total.items()
                        if key.startswith(f"{what}:") and value), reverse=True)
        return ", ".join(f"{name} {value / self.deliveries:.{2 if what == 'calls' else 0}f}"
                         for value, name in found[:TOP])


class Bench:
    """The store, a receiver that answers 200 and counts items, and how to run a phase on them."""

    def __init__(self, url: str, receiver: Receiver, tmp: pathlib.Path, per_request: int) -> None:
        self.url, self.receiver, self.tmp, self.per_request = url, receiver, tmp, per_request
        self.db = redis.Redis.from_url(url, decode_responses=True)
        self.runs = 0

    def configure(self, specs: list[dict[str, Any]]) -> tuple[Api, dict[str, Any]]:
        """FLUSHDB, then a source and ``specs`` through the API; the caller closes the Api."""
        self.db.flushdb()
        api = Api(self.url)
        source = api.source()
        api.destinations(specs)
        return api, source

    def ingest(self, api: Api, source: dict[str, Any], batch: list[dict[str, Any]]) -> dict[str, float]:
        before = store_counters(self.db)
        api.send(source, batch, per_request=self.per_request)
        return delta(before, store_counters(self.db))

    def worker(self, receiver: Receiver, items: int) -> dict[str, float]:
        """One burst worker until ``receiver`` counted ``items`` more items, and until it exited."""
        self.runs += 1
        log = self.tmp / f"worker-{self.runs}.log"
        before, start = store_counters(self.db), receiver.snapshot()[ITEMS]

        def progress() -> tuple[int, int]:
            counts = receiver.snapshot()
            return counts[0], counts[ITEMS] - start

        _, _, _, code = run_burst([sys.executable, "-m", "hookgate.cli", "worker", "--burst"], worker_env(self.url),
                                  log, "the worker", progress, items, "items")
        if code != 0 or receiver.snapshot()[ITEMS] - start != items:
            raise BenchError(f"the worker exited {code} with {receiver.snapshot()[ITEMS] - start}/{items} items"
                             + tail(log))
        return delta(before, store_counters(self.db))

    def cost(self, name: str, specs: list[dict[str, Any]], batch: list[dict[str, Any]], deliveries: int) -> Cost:
        api, source = self.configure(specs)
        with api:
            ingest = self.ingest(api, source, batch)
        return Cost(name, deliveries, ingest, self.worker(self.receiver, deliveries))

    def memory(self, specs: list[dict[str, Any]], batch: list[dict[str, Any]],
               failing: Receiver | None = None) -> tuple[float, float | None]:
        """Bytes per delivery pending, and (with ``failing``) after one burst worker tried each once."""
        api, source = self.configure(specs)
        deliveries = len(specs) * len(batch)
        with api:
            used = self.ingest(api, source, batch)["used_memory"]
        after_attempt = None
        if failing is not None:
            after_attempt = (used + self.worker(failing, deliveries)["used_memory"]) / deliveries
        return used / deliveries, after_attempt


def print_costs(costs: list[Cost], idle: dict[str, float], per_request: int) -> None:
    print(f"Redis commands per delivery (INFO commandstats deltas; events ingested {per_request} a request; "
          "commands run inside Lua scripts count too)")
    print(f"  {'scenario':<28} {'deliveries':>10} {'ingest':>8} {'delivery':>9} {'total':>8}  {'Redis CPU µs':>12}  "
          "issue 16 target")
    for cost in costs:
        figures = {"ingest": cost.per_delivery(cost.ingest), "delivery": cost.per_delivery(cost.delivery),
                   "total": cost.per_delivery(cost.total())}
        part, target = TARGETS[cost.name.split(" ")[0]]
        verdict = "met" if figures[part] <= target else "NOT met"
        cpu_us = cost.total()["cpu_s"] / cost.deliveries * 1e6
        print(f"  {cost.name:<28} {cost.deliveries:>10,} {figures['ingest']:>8.1f} {figures['delivery']:>9.1f} "
              f"{figures['total']:>8.1f}  {cpu_us:>12.0f}  {part} ≤ {target} ({verdict})")
    print("  top commands per delivery (ingest + delivery), by calls:")
    for cost in costs:
        print(f"    {cost.name}: {cost.top()}")
    print("  top commands per delivery, delivery phase only, by calls:")
    for cost in costs:
        print(f"    {cost.name}: {cost.top(part=cost.delivery)}")
    print("  top commands per delivery by server time (µs; a script's commands are in its EVALSHA's time):")
    for cost in costs:
        print(f"    {cost.name}: {cost.top('usec')}")
    idle_calls = sum(value for key, value in idle.items() if key.startswith("calls:"))
    print(f"  an idle burst worker (start, nothing to do, exit) costs {idle_calls:.0f} commands; "
          "each delivery column above includes one")


def print_memory(rows: list[tuple[str, int, float]]) -> None:
    print("\nRedis memory per delivery (INFO memory used_memory delta ÷ deliveries)")
    print(f"  {'state':<58} {'deliveries':>10} {'bytes each':>10}  issue 16 target")
    for state, deliveries, size in rows:
        verdict = "met" if size <= MEMORY_TARGET else "NOT met"
        target = f"≤ {MEMORY_TARGET} ({verdict})" if state.startswith("pending") else "-"
        print(f"  {state:<58} {deliveries:>10,} {size:>10,.0f}  {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1000,
                        help=f"events of the single and batch scenarios (a multiple of {BATCH_SIZE}; default 1000)")
    parser.add_argument("--fanout", type=int, default=1000, help="destinations of the fan-out scenario (1000)")
    parser.add_argument("--per-request", type=int, default=1, help="events per ingest request (default 1)")
    args = parser.parse_args()
    if args.events < BATCH_SIZE or args.events % BATCH_SIZE or args.fanout < 1 or args.per_request < 1:
        parser.error(f"--events must be a positive multiple of {BATCH_SIZE}; --fanout and --per-request ≥ 1")

    receiver: Receiver | None = None
    failing: Receiver | None = None
    with tempfile.TemporaryDirectory(prefix="hookgate-bench-") as tmp, \
            redis_server(pathlib.Path(tmp)) as (url, store):
        try:
            receiver, failing = Receiver(count_items=True), Receiver(count_items=True, status=500)
            bench = Bench(url, receiver, pathlib.Path(tmp), args.per_request)

            def plain(name: str, **extra: Any) -> dict[str, Any]:
                return {"name": name, "url": f"{receiver.url}/{name}", "events": ["*"], **extra}

            fanout = [plain(f"d{i}") for i in range(args.fanout)]
            print("idle worker, single, batch, fan-out…", file=sys.stderr, flush=True)
            bench.configure([])
            idle = bench.worker(receiver, 0)
            costs = [
                bench.cost(f"single ({args.events:,} × 1)", [plain("single")], events(args.events), args.events),
                bench.cost(f"batch (size {BATCH_SIZE})", [plain("batch", batch={"size": BATCH_SIZE})],
                           events(args.events), args.events),
                bench.cost(f"fan-out (1 → {args.fanout:,})", fanout, events(1), args.fanout),
            ]
            print("memory…", file=sys.stderr, flush=True)
            failing_spec = dict(plain("failing"), url=f"{failing.url}/failing", **FAILING)
            pending, after = bench.memory([failing_spec], events(args.events), failing)
            fanout_pending, _ = bench.memory(fanout, events(1))
            bench.db.close()
        except (BenchError, redis.RedisError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            for child in (receiver, failing):
                if child is not None:
                    child.stop()

    print(f"store: {store}; {os.cpu_count()} CPUs\n")
    print_costs(costs, idle, args.per_request)
    assert after is not None
    print_memory([(f"pending ({args.events:,} events × 1 destination)", args.events, pending),
                  ("after one failed attempt (500 + nginx's error page)", args.events, after),
                  (f"pending fan-out (1 event → {args.fanout:,} destinations)", args.fanout, fanout_pending)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
