"""A store outage under a real `hookgate worker` (issue 12, points 1 and 3): the store, a Valkey of the
test's own with the append-only file on, is SIGKILLed mid-drain and restarted on the same port and data;
and a worker SIGKILLed with render processes leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from hookgate import create_app
from hookgate.embedded import EmbeddedServer

from .processes import alive, descendants, free_port, hookgate, spawn, stop_group, wait_until
from .receiver import Receiver, Reply

pytestmark = pytest.mark.e2e

ADMIN = "outage-admin-token"
OUTAGE_LOGGED = "the store is not answering"
RECOVERY_LOGGED = "the store answers again"
RESUME_WITHIN_S = 5.0  # the bound: deliveries resume within 5 s of the store answering


def worker_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKGATE_")}
    env.update(HOOKGATE_REDIS_URL=url, HOOKGATE_ADMIN_TOKEN=ADMIN, HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8",
               HOOKGATE_LOG_LEVEL="WARNING", **extra)
    return env


class Ingest(threading.Thread):
    """Posts a batch of events every few milliseconds until stopped; keeps the ids answered 202."""

    def __init__(self, client, source: dict):
        super().__init__(daemon=True)
        self.client, self.source = client, source
        self.acknowledged: list[tuple[float, str]] = []  # (when, event id)
        self.refused = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopped.wait(0.05):
            batch = [{"name": "e", "data": {"n": n + i}} for i in range(10)]
            n += len(batch)
            try:
                response = self.client.post(f"/v1/sources/{self.source['id']}/events", json=batch,
                                            headers={"X-Hookgate-Key": self.source["key"]})
            except redis.RedisError:
                self.refused += 1
                continue
            if response.status_code == 202:
                self.acknowledged += [(time.time(), i) for i in response.get_json()["ids"]]
            else:
                self.refused += 1


def test_a_worker_rides_out_a_store_killed_mid_drain_and_delivers_everything_acknowledged(tmp_path):
    # Every write on disk before it is answered: what it acknowledged survives the SIGKILL.
    store = EmbeddedServer(tmp_path / "store", port=free_port(), appendfsync="always")
    store.start()
    url = store.url
    receiver = Receiver(lambda request: Reply(delay=0.02)).start()
    client = create_app({"redis_url": url, "admin_token": ADMIN}).test_client()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    source = client.post("/v1/sources", json={"name": "shop"}, headers=auth).get_json()
    assert client.post("/v1/destinations", json={"name": "recv", "url": receiver.url, "events": ["*"]},
                       headers=auth).status_code == 201
    log = tmp_path / "worker.log"
    worker = spawn(hookgate("worker", "--name", "rider"), worker_env(url), log)
    ingest = Ingest(client, source)
    try:
        ingest.start()
        assert wait_until(lambda: len(receiver.requests) >= 200, timeout=60), log.read_text()
        store.kill()  # mid-drain: the receiver is being sent to, ingest is posting
        killed = len(receiver.requests)
        time.sleep(3)
        store.start()
        answering = time.time()
        time.sleep(3)  # ingest goes on after the store is back
        ingest.stopped.set()
        ingest.join(10)
        acknowledged = {event_id for _, event_id in ingest.acknowledged}
        assert ingest.refused > 0  # ingest did meet the outage

        def delivered() -> set[str]:
            return {json.loads(r.body)["id"] for r in list(receiver.requests)}

        assert wait_until(lambda: delivered() >= acknowledged, timeout=120), \
            (len(acknowledged - delivered()), log.read_text())
        assert worker.poll() is None, log.read_text()  # the worker lived through it

        after = sorted(r.at for r in receiver.requests[killed:] if r.at >= answering)
        assert after and after[0] - answering <= RESUME_WITHIN_S, (after[:1], answering, log.read_text())
        # and once going again, deliveries do not stop until everything is delivered
        gaps = [later - earlier for earlier, later in zip(after, after[1:], strict=False)]
        assert max(gaps, default=0.0) <= RESUME_WITHIN_S, (max(gaps), log.read_text())

        output = log.read_text()
        assert output.count(OUTAGE_LOGGED) == 1, output  # once per outage, not once per retry
        assert output.count(RECOVERY_LOGGED) == 1, output
        assert "Traceback" not in output, output
        # nothing the outage cut short is left over once everything is delivered
        db = redis.Redis.from_url(url, decode_responses=True)
        assert wait_until(lambda: db.zcard("hookgate:leases") == 0, timeout=30)
        assert wait_until(lambda: not db.keys("hookgate:dest:*:wake"), timeout=30), db.keys("hookgate:dest:*:wake")
    finally:
        ingest.stopped.set()
        stop_group(worker)
        receiver.stop()
        store.stop()


def test_a_worker_killed_leaves_no_process_behind(tmp_path):
    """SIGKILL to the worker alone (not its group): every process it started ends with it, its render
    processes included (they are in sessions of their own)."""
    # Every write on disk before it is answered: what it acknowledged survives the SIGKILL.
    store = EmbeddedServer(tmp_path / "store", port=free_port(), appendfsync="always")
    store.start()
    url = store.url
    receiver = Receiver().start()
    client = create_app({"redis_url": url, "admin_token": ADMIN}).test_client()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    source = client.post("/v1/sources", json={"name": "shop"}, headers=auth).get_json()
    loop = "{% for key in event.data %}{{ key }};{% endfor %}"  # not bounded: renders in a render process
    assert client.post("/v1/destinations", json={"name": "recv", "url": receiver.url, "events": ["*"],
                                                 "format": "text", "template": loop},
                       headers=auth).status_code == 201
    log = tmp_path / "worker.log"
    worker = spawn(hookgate("worker", "--name", "doomed"), worker_env(url), log)
    try:
        client.post(f"/v1/sources/{source['id']}/events", json={"name": "e", "data": {"a": 1}},
                    headers={"X-Hookgate-Key": source["key"]})
        [request] = receiver.wait_for(1, timeout=60)
        assert request.body == b"a;", log.read_text()
        children = descendants(worker.pid)
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children if alive(pid)]
        assert any(b"serve_renders" in c for c in commands), commands  # a render process is running
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        assert wait_until(lambda: not any(alive(pid) for pid in children), timeout=10), \
            [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children if alive(pid)]
    finally:
        stop_group(worker, signal.SIGKILL)
        receiver.stop()
        store.stop()


SPAWNER = """
import sys, threading, time
from hookgate.lifetime import spawn
started = []
thread = threading.Thread(target=lambda: started.append(spawn(["sleep", "120"])))
thread.start()
thread.join()  # the thread that asked for the child is gone; the child must not go with it
print(started[0].pid, flush=True)
time.sleep(120)
"""


def test_a_child_started_from_a_passing_thread_lives_with_its_process_and_dies_with_it(tmp_path):
    """``lifetime.spawn``: the kernel's parent-death signal follows the forking thread, so children are
    forked by one long-lived thread: one asked for by a thread that ended lives on, and a SIGKILL of
    the process ends it, though it reads no pipe that could tell it."""
    log = tmp_path / "spawner.log"
    parent = spawn([sys.executable, "-c", SPAWNER], dict(os.environ), log)
    try:
        assert wait_until(lambda: log.read_text().strip().isdigit(), timeout=30), log.read_text()
        child = int(log.read_text().strip())
        time.sleep(0.5)
        assert alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert wait_until(lambda: not alive(child), timeout=5)
    finally:
        stop_group(parent, signal.SIGKILL)
