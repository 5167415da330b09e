"""Sentinel failover with real processes: Debian's redis-server (a primary and a replica) and three
redis-sentinel processes on loopback ports, a real gunicorn and a real ``hookgate worker`` configured
with HOOKGATE_REDIS_SENTINELS, and a real receiver. The primary is SIGKILLed during continuous ingest:
ingest answers JSON 503s while there is no primary and then 202s again on the promoted replica, by
itself, and the worker delivers after the failover. With HOOKGATE_DURABILITY=replicated no event that
got a 202 is lost; with the default (local) the figures of what was lost are printed, not asserted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests

from hookgate import Settings, create_app
from hookgate.store import describe

from .processes import free_port, hookgate, spawn, stop_group, wait_http, wait_until
from .receiver import Receiver

pytestmark = pytest.mark.e2e

ADMIN = "sentinel-admin-token"
MASTER = "hookgate-primary"
PASSWORD = "store-password-7f3a9c"  # the primary's and the replica's (HOOKGATE_REDIS_PASSWORD); sentinels have none


@pytest.fixture(scope="module")
def redis_binaries() -> dict[str, str]:
    """Debian's redis-server and redis-sentinel, installed with apt-get when missing (we run as root)."""
    if not (shutil.which("redis-server") and shutil.which("redis-sentinel")):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update"], check=True, env=env, timeout=300, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "redis-server", "redis-sentinel"], check=True, env=env,
                       timeout=600, capture_output=True)
    found = {name: shutil.which(name) for name in ("redis-server", "redis-sentinel")}
    assert all(found.values()), f"apt-get did not install them: {found}"
    return found  # type: ignore[return-value]


@dataclass
class Cluster:
    """One primary, one replica, three sentinels (quorum 2), each with its own directory and config."""

    root: Path
    binaries: dict[str, str]
    primary_port: int = field(default_factory=free_port)
    replica_port: int = field(default_factory=free_port)
    sentinel_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def _server(self, name: str, port: int, *extra: str) -> None:
        directory = self.root / name
        directory.mkdir()
        config = directory / f"{name}.conf"
        config.write_text("\n".join([
            f"port {port}", "bind 127.0.0.1", f"dir {directory}", "daemonize no", 'save ""', "appendonly yes",
            "appendfsync everysec", "protected-mode no", "logfile \"\"", "repl-diskless-sync-delay 0",
            f"requirepass {PASSWORD}", f"masterauth {PASSWORD}", *extra]) + "\n")
        self.processes[name] = spawn([self.binaries["redis-server"], str(config)], dict(os.environ),
                                     directory / "log")

    def _sentinel(self, name: str, port: int) -> None:
        directory = self.root / name
        directory.mkdir()
        config = directory / "sentinel.conf"  # sentinel rewrites it: its own, writable copy
        config.write_text("\n".join([
            f"port {port}", "bind 127.0.0.1", f"dir {directory}", "daemonize no", "protected-mode no",
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2",
            f"sentinel auth-pass {MASTER} {PASSWORD}",
            f"sentinel down-after-milliseconds {MASTER} 1000",
            f"sentinel failover-timeout {MASTER} 3000",
            f"sentinel parallel-syncs {MASTER} 1"]) + "\n")
        self.processes[name] = spawn([self.binaries["redis-sentinel"], str(config)], dict(os.environ),
                                     directory / "log")

    def start(self) -> Cluster:
        self._server("primary", self.primary_port)
        self._server("replica", self.replica_port, f"replicaof 127.0.0.1 {self.primary_port}")
        replica = redis.Redis(port=self.replica_port, password=PASSWORD, decode_responses=True)
        assert wait_until(lambda: _quiet(lambda: replica.info("replication")["master_link_status"] == "up"),
                          timeout=20), (self.root / "replica" / "log").read_text()
        for n, port in enumerate(self.sentinel_ports):
            self._sentinel(f"sentinel{n}", port)
        return self

    def wait_ready(self) -> None:
        """Until every sentinel knows the other two and the replica (a failover needs them)."""
        sentinels = [redis.Redis(port=port, decode_responses=True) for port in self.sentinel_ports]

        def ready() -> bool:
            states = [_quiet(lambda s=s: s.sentinel_master(MASTER)) for s in sentinels]
            return all(st and st["num-other-sentinels"] == 2 and st["num-slaves"] == 1 for st in states)

        assert wait_until(ready, timeout=30), (self.root / "sentinel0" / "log").read_text()

    @property
    def env(self) -> dict[str, str]:
        return {"HOOKGATE_REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports),
                "HOOKGATE_REDIS_SENTINEL_MASTER": MASTER, "HOOKGATE_REDIS_PASSWORD": PASSWORD}

    def restart_primary(self) -> None:
        """The killed primary again, on its directory, config and port, as a replica of the promoted one
        (as an operator brings a failed node back; the sentinels would demote it too, ~10 s later)."""
        directory = self.root / "primary"
        self.processes["primary"] = spawn([self.binaries["redis-server"], str(directory / "primary.conf"),
                                           "--replicaof", "127.0.0.1", str(self.replica_port)],
                                          dict(os.environ), directory / "log")

    def promoted(self) -> bool:
        """Whether the sentinels name the replica as the primary now."""
        client = redis.Redis(port=self.sentinel_ports[0], decode_responses=True)
        address = _quiet(lambda: client.sentinel_get_master_addr_by_name(MASTER))
        return bool(address) and int(address[1]) == self.replica_port

    def stop(self) -> None:
        for process in self.processes.values():
            stop_group(process, signal.SIGKILL)


def _quiet(call):
    try:
        return call()
    except redis.RedisError:
        return None


@dataclass
class Answer:
    at: float
    status: int
    body: dict
    ids: list[str]

    @property
    def code(self) -> str | None:
        return (self.body.get("error") or {}).get("code")


class Ingest:
    """Posts one event at a time from ``threads`` threads until stopped; keeps every answer."""

    def __init__(self, url: str, key: str, threads: int = 2):
        self.url, self.key = url, key
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def start(self) -> Ingest:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, lane: int) -> None:
        session = requests.Session()
        n = 0
        while not self._stop.is_set():
            n += 1
            event = {"id": f"ext-{lane}-{n}", "name": "order.created", "data": {"lane": lane, "n": n}}
            try:
                response = session.post(self.url, json=event, headers={"X-Hookgate-Key": self.key}, timeout=15)
                body = response.json()
            except (requests.RequestException, ValueError) as exc:
                self.errors.append(repr(exc))
                time.sleep(0.05)
                continue
            self.answers.append(Answer(time.monotonic(), response.status_code, body, body.get("ids", [])))
            if response.status_code != 202:
                time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def acknowledged(self) -> set[str]:
        return {i for a in self.answers if a.status == 202 for i in a.ids}

    def longest_refusal(self) -> float:
        """The longest time from a first non-202 answer to the next 202 (seconds)."""
        longest, since = 0.0, None
        for answer in sorted(self.answers, key=lambda a: a.at):
            if answer.status != 202 and since is None:
                since = answer.at
            elif answer.status == 202 and since is not None:
                longest, since = max(longest, answer.at - since), None
        return longest


def _env(cluster: Cluster, port: int, durability: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKGATE_")}
    env.update(cluster.env, HOOKGATE_LOG_LEVEL="WARNING", HOOKGATE_ADMIN_TOKEN=ADMIN,
               HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8", HOOKGATE_BIND=f"127.0.0.1:{port}", HOOKGATE_WEB_WORKERS="2",
               HOOKGATE_TICK="0.2s", HOOKGATE_LEASE="5s", HOOKGATE_DURABILITY=durability,
               HOOKGATE_DURABILITY_TIMEOUT="500ms")
    return env


@pytest.mark.parametrize("durability", ["replicated", "local"])
def test_sentinel_failover_during_ingest(tmp_path, redis_binaries, durability):
    began = time.monotonic()
    cluster = Cluster(tmp_path, redis_binaries).start()
    phases = {"cluster": time.monotonic() - began}
    receiver = Receiver().start()
    port = free_port()
    env = _env(cluster, port, durability)
    web = spawn([sys.executable, "-m", "gunicorn", "wsgi:app"], env, tmp_path / "web.log")
    worker = spawn(hookgate("worker", "--name", "follower"), env, tmp_path / "worker.log")
    ingest = None
    try:
        api = f"http://127.0.0.1:{port}"
        wait_http(f"{api}/healthz", process=web, log=tmp_path / "web.log")
        auth = {"Authorization": f"Bearer {ADMIN}"}
        source = requests.post(f"{api}/v1/sources", json={"name": "shop"}, headers=auth, timeout=10).json()
        created = requests.post(f"{api}/v1/destinations", json={"name": "recv", "url": receiver.url,
                                                                 "events": ["*"]}, headers=auth, timeout=10)
        assert created.status_code == 201, created.text
        assert "via Sentinel 127.0.0.1:" in (tmp_path / "worker.log").read_text()  # where it connects, shown

        ingest = Ingest(f"{api}/v1/sources/{source['id']}/events", source["key"]).start()
        assert wait_until(lambda: len(receiver.requests) >= 20, timeout=30), (tmp_path / "worker.log").read_text()
        cluster.wait_ready()
        killed_at, killed_wall = time.monotonic(), time.time()
        phases["killed"] = killed_at - began
        os.killpg(cluster.processes["primary"].pid, signal.SIGKILL)
        cluster.processes["primary"].wait()

        # no primary: 503s with a JSON error; then 202s again, on the promoted replica, by itself
        assert wait_until(lambda: any(a.status == 503 and a.at > killed_at for a in ingest.answers), timeout=20)
        assert wait_until(cluster.promoted, timeout=30), (tmp_path / "sentinel0" / "log").read_text()
        if durability == "replicated":
            # the promoted replica has no replica of its own: nothing is acknowledged (503 not_replicated)
            # until the old primary comes back, on its data, as a replica of the promoted one
            promoted_at = time.monotonic()
            assert wait_until(lambda: any(a.code == "not_replicated" and a.at > promoted_at + 0.5
                                          for a in ingest.answers), timeout=20)
            assert not any(a.status == 202 and a.at > promoted_at + 0.5 for a in ingest.answers)
            cluster.restart_primary()
        assert wait_until(lambda: sum(a.status == 202 and a.at > killed_at for a in ingest.answers) >= 100,
                          timeout=30), (tmp_path / "web.log").read_text()[-3000:]
        resumed_at = max(a.at for a in ingest.answers if a.status != 202)
        assert wait_until(lambda: time.monotonic() - resumed_at > 2, timeout=10)
        ingest.stop()
        phases["ingest_stopped"] = time.monotonic() - began

        acknowledged = ingest.acknowledged()
        refusals = [a for a in ingest.answers if a.status != 202]
        assert {a.status for a in refusals} == {503}, {a.status for a in refusals}  # never a 500
        assert all(a.at > killed_at for a in refusals)  # before the kill (a replica up) every answer was a 202
        assert all(set(a.body["error"]) == {"code", "message", "details"} for a in refusals)
        after = {i for a in ingest.answers if a.status == 202 and a.at > resumed_at for i in a.ids}

        # the worker delivers after the failover (what was acknowledged after it, at least)
        def delivered() -> set[str]:
            return {json.loads(r.body)["id"] for r in receiver.requests}

        assert wait_until(lambda: after <= delivered(), timeout=60), (tmp_path / "worker.log").read_text()
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()

        phases["delivered_after"] = time.monotonic() - began
        exported = subprocess.run(hookgate("export"), env=env, capture_output=True, text=True, timeout=60)
        assert exported.returncode == 0, exported.stderr  # the CLI finds the promoted primary too
        assert [d["name"] for d in json.loads(exported.stdout)["destinations"]] == ["recv"]
        for log in ("web.log", "worker.log"):
            assert PASSWORD not in (tmp_path / log).read_text()
        promoted = redis.Redis(port=cluster.replica_port, password=PASSWORD, decode_responses=True)
        stored = {i for i in acknowledged if promoted.exists(f"hookgate:event:{i}")}
        if durability == "replicated":  # nothing that got a 202 is lost: stored on the new primary, delivered
            assert stored == acknowledged, sorted(acknowledged - stored)[:10]
            assert wait_until(lambda: acknowledged <= delivered(), timeout=60), \
                sorted(acknowledged - delivered())[:10]
        else:
            wait_until(lambda: stored <= delivered(), timeout=30)
        received = [r.header("webhook-id") for r in receiver.requests]
        arrivals = sorted(r.at for r in receiver.requests)
        pauses = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False) if b > killed_wall]
        unavailable = [a.at for a in refusals if a.code == "unavailable"]
        not_replicated = [a.at for a in refusals if a.code == "not_replicated" and a.at > killed_at]
        print(f"\n[sentinel failover, durability={durability}] acknowledged={len(acknowledged)} "
              f"lost={len(acknowledged - stored)} delivered={len(delivered() & acknowledged)} "
              f"delivered_total={len(set(received))} duplicates={len(received) - len(set(received))} "
              f"answers_503={len(refusals)} longest_503_window={ingest.longest_refusal():.2f}s "
              f"longest_delivery_pause={max(pauses, default=0):.2f}s client_errors={len(ingest.errors)} "
              f"resumed_after_kill={resumed_at - killed_at:.2f}s "
              f"no_primary_503s={len(unavailable)} over {max(unavailable) - min(unavailable):.2f}s "
              f"not_replicated_503s={len(not_replicated)} over "
              f"{(max(not_replicated) - min(not_replicated)) if not_replicated else 0:.2f}s "
              f"phases={ {k: round(v, 1) for k, v in phases.items()} } total={time.monotonic() - began:.1f}s")
    finally:
        if ingest is not None:
            ingest.stop()
        stop_group(worker, signal.SIGKILL)  # how they stop is not what this test is about
        stop_group(web, signal.SIGKILL)
        receiver.stop()
        cluster.stop()


def test_replicated_durability_without_a_replica_answers_503_not_replicated(settings, db):
    """The embedded Valkey has no replica: ``WAIT 1`` gets none, so nothing is acknowledged; the
    events are on the primary all the same (and delivered). ``local`` answers 202 on the same store."""
    answers = {}
    for durability in ("replicated", "local"):
        app = create_app(dataclasses.replace(settings, durability=durability, durability_timeout_s=0.1))
        client = app.test_client()
        auth = {"Authorization": f"Bearer {settings.admin_token}"}
        source = client.post("/v1/sources", json={"name": durability}, headers=auth).get_json()
        started = time.monotonic()
        response = client.post(f"/v1/sources/{source['id']}/events", json={"id": "x-1", "name": "order.created"},
                               headers={"X-Hookgate-Key": source["key"]})
        answers[durability] = (response.status_code, response.get_json(), time.monotonic() - started)
        app.extensions["hookgate"].close()
    status, body, took = answers["replicated"]
    assert status == 503, body
    assert body == {"error": {"code": "not_replicated", "message": body["error"]["message"], "details": {
        "replicas_required": 1, "replicas_acknowledged": 0, "timeout_ms": 100}}}
    assert took >= 0.1  # it waited for a replica
    assert len(db.keys("hookgate:event:*")) == 2  # stored on the primary all the same
    assert answers["local"][0] == 202


def test_sentinel_settings_go_together_and_no_password_is_shown():
    sentinels = {"HOOKGATE_REDIS_SENTINELS": "127.0.0.1:26379, [::1]:26380"}
    with pytest.raises(ValueError, match="go together"):
        Settings.from_env(sentinels)
    with pytest.raises(ValueError, match="not host:port"):
        Settings.from_env({"HOOKGATE_REDIS_SENTINELS": "127.0.0.1", "HOOKGATE_REDIS_SENTINEL_MASTER": "m"})
    with pytest.raises(ValueError, match="HOOKGATE_DURABILITY"):
        Settings.from_env({"HOOKGATE_DURABILITY": "paranoid"})
    settings = Settings.from_env({**sentinels, "HOOKGATE_REDIS_SENTINEL_MASTER": "hg",
                                  "HOOKGATE_REDIS_PASSWORD": "s3cret-pw"})
    assert settings.redis_sentinels == (("127.0.0.1", 26379), ("::1", 26380))
    assert "s3cret-pw" not in repr(settings)
    assert describe(settings) == "primary 'hg' via Sentinel 127.0.0.1:26379,[::1]:26380"
    assert describe(Settings(redis_url="redis://:s3cret-pw@h:6379/0")) == "redis://:***@h:6379/0"
    assert describe(Settings(redis_url="redis://u:s3cret-pw@h:6379/0")) == "redis://u:***@h:6379/0"
