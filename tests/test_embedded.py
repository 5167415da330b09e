"""The embedded store keeps what it accepted across a restart (append-only file); ``hookgate up``
restarts it when it dies, and stops with the store's own reason when it cannot start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest
import requests

from hookgate.embedded import EmbeddedServer
from hookgate.store import connect

from .processes import alive, free_port, hookgate, spawn, stop_group, wait_until
from .receiver import Receiver, Reply
from .test_e2e import base_env, create_flow


def test_data_survives_a_restart_of_the_embedded_server(tmp_path):
    server = EmbeddedServer(tmp_path)
    server.start()
    try:
        db = connect(server.url)
        db.set("hookgate:event:evt_1", '{"name": "kept"}')
        db.zadd("hookgate:dest:dst_1:pending", {"dlv_1": 1})
        db.close()
    finally:
        server.stop()  # SIGTERM: Valkey flushes its append-only file
    assert (tmp_path / "valkey").exists()
    again = EmbeddedServer(tmp_path, port=None)
    again.start()
    try:
        db = connect(again.url)
        assert db.get("hookgate:event:evt_1") == '{"name": "kept"}'
        assert db.zrange("hookgate:dest:dst_1:pending", 0, -1) == ["dlv_1"]
        assert db.config_get("appendonly")["appendonly"] == "yes"
    finally:
        again.stop()


def children(pid: int) -> dict[int, bytes]:
    """The live direct children of ``pid`` and their command lines (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue
    return found


def child_named(pid: int, word: bytes) -> int | None:
    return next((child for child, command in children(pid).items() if word in command), None)


class Ingest(threading.Thread):
    """Posts batches of events until stopped; keeps the ids of those answered 202, counts the 503s."""

    def __init__(self, url: str, key: str, batch: int = 10, pause: float = 0.02):
        super().__init__(daemon=True)
        self.url, self.key, self.batch, self.pause = url, key, batch, pause
        self.acknowledged: list[str] = []
        self.unavailable = 0
        self.other: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            body = [{"name": "order", "data": {"n": n + i}} for i in range(self.batch)]
            n += self.batch
            try:
                response = requests.post(self.url, json=body, headers={"X-Hookgate-Key": self.key}, timeout=10)
            except requests.RequestException as exc:
                self.other.append(repr(exc))
                continue
            if response.status_code == 202:
                self.acknowledged += response.json()["ids"]
            elif response.status_code == 503 and response.headers["Content-Type"].startswith("application/json"):
                self.unavailable += 1
            else:
                self.other.append(f"{response.status_code} {response.text[:200]}")
            self.halt.wait(self.pause)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


@pytest.mark.e2e
def test_up_restarts_its_embedded_valkey_after_a_sigkill_and_delivers_everything_acknowledged(tmp_path):
    """SIGKILL the embedded Valkey while a worker is draining: ``up`` says it restarts it (on the same
    port and data), /healthz answers 200 again, the web process is the same one, and every event
    acknowledged before the kill (ingest paused 2 s before it: more than appendfsync everysec's second)
    and after it is delivered."""
    receiver = Receiver(lambda request: Reply(delay=0.05)).start()
    port = free_port()
    log = tmp_path / "up.log"
    up = spawn(hookgate("up", "--port", str(port), "--data-dir", str(tmp_path / "data"), "--web-workers", "1"),
               base_env(HOOKGATE_TICK="0.2s"), log)
    api = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: "admin token:" in log.read_text(), timeout=90), log.read_text()
        token = log.read_text().split("admin token:")[1].split()[0]
        source_id, key = create_flow(api, token, receiver.url, max_in_flight=4)
        before = Ingest(f"{api}/v1/sources/{source_id}/events", key)
        before.start()
        assert wait_until(lambda: len(before.acknowledged) >= 400, timeout=60)
        before.stop()
        time.sleep(2.0)  # appendfsync everysec: what was acknowledged is on disk after a second
        valkey, web = child_named(up.pid, b"valkey-server"), child_named(up.pid, b"web")
        assert valkey and web, children(up.pid)
        assert len(receiver.requests) < len(before.acknowledged)  # the worker is still draining: busy
        os.kill(valkey, signal.SIGKILL)
        killed = time.time()
        during = Ingest(f"{api}/v1/sources/{source_id}/events", key)
        during.start()
        assert wait_until(lambda: "Valkey is back" in log.read_text(), timeout=30), log.read_text()
        back = time.time()  # within 50 ms of up saying the store answers again
        assert wait_until(lambda: requests.get(f"{api}/healthz", timeout=2).status_code == 200, timeout=30)
        restarted = child_named(up.pid, b"valkey-server")
        assert restarted and restarted != valkey
        assert wait_until(lambda: len(during.acknowledged) >= 100, timeout=30), during.other
        during.stop()
        acknowledged = set(before.acknowledged) | set(during.acknowledged)
        assert wait_until(lambda: {json.loads(r.body)["id"] for r in receiver.requests} >= acknowledged,
                          timeout=120), log.read_text()
        assert up.poll() is None, log.read_text()
        assert child_named(up.pid, b"web") == web  # the API rode the outage out
        assert child_named(up.pid, b"worker")
        said = log.read_text().split("admin token:")[1]
        store_port = next(line.split()[1] for line in (tmp_path / "data/valkey/valkey.conf").read_text().splitlines()
                          if line.startswith("port "))
        assert f"the embedded Valkey (pid {valkey}) was killed by SIGKILL; restarting it on 127.0.0.1:{store_port}" \
            in said, said
        assert "keeps exiting" not in said, said

        delivered = [json.loads(r.body)["id"] for r in receiver.requests]
        after = [back] + sorted(r.at for r in receiver.requests if r.at >= back)
        print(f"\nembedded Valkey SIGKILL: acknowledged {len(acknowledged)} ({len(before.acknowledged)} before, "
              f"{len(during.acknowledged)} after; {during.unavailable} batches answered 503), delivered "
              f"{len(set(delivered) & acknowledged)}, duplicates {len(delivered) - len(set(delivered))}, "
              f"store back {back - killed:.2f} s after the kill, first delivery {after[1] - back:.2f} s after that, "
              f"longest pause after it {max(b - a for a, b in pairwise(after)):.2f} s")
        print(said)
    finally:
        stop_group(up)
        receiver.stop()


def _taken_port(tmp_path: Path) -> tuple[list[str], str, socket.socket | None]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return ["--store-port", str(holder.getsockname()[1])], "Address already in use", holder


def _aof_dir_is_a_file(tmp_path: Path) -> tuple[list[str], str, socket.socket | None]:
    (tmp_path / "data" / "valkey").mkdir(parents=True)
    (tmp_path / "data" / "valkey" / "appendonlydir").write_text("not a directory")
    return [], "append-only dir appendonlydir: Not a directory", None


@pytest.mark.e2e
@pytest.mark.parametrize("breakage", [_taken_port, _aof_dir_is_a_file], ids=["port-taken", "aof-dir-is-a-file"])
def test_up_stops_with_the_store_s_reason_when_the_embedded_valkey_cannot_start(tmp_path, breakage):
    options, reason, holder = breakage(tmp_path)
    try:
        done = subprocess.run(hookgate("up", "--port", str(free_port()), "--data-dir", str(tmp_path / "data"),
                                       *options), env=base_env(), capture_output=True, text=True, timeout=90)
    finally:
        if holder is not None:
            holder.close()
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert "the embedded Valkey" in said and reason in said, said
    assert "Traceback" not in said, said


@pytest.mark.e2e
def test_up_stops_with_the_store_s_reason_when_the_embedded_valkey_cannot_restart(tmp_path):
    """The store dies and its port is taken before ``up`` restarts it (``up`` held with SIGSTOP meanwhile,
    so the order is certain): ``up`` stops everything and exits non-zero, naming the store and the reason."""
    port = free_port()
    log = tmp_path / "up.log"
    up = spawn(hookgate("up", "--port", str(port), "--data-dir", str(tmp_path / "data"), "--web-workers", "1"),
               base_env(), log)
    holder = socket.socket()
    try:
        assert wait_until(lambda: "admin token:" in log.read_text(), timeout=90), log.read_text()
        started = set(children(up.pid))
        valkey = child_named(up.pid, b"valkey-server")
        assert valkey, children(up.pid)
        conf = (tmp_path / "data/valkey/valkey.conf").read_text().splitlines()
        store_port = int(next(line.split()[1] for line in conf if line.startswith("port ")))
        up.send_signal(signal.SIGSTOP)
        os.kill(valkey, signal.SIGKILL)
        assert wait_until(lambda: not alive(valkey), timeout=10)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # its connections linger in TIME_WAIT
        # A child Valkey forked (its append-only file's rewrite) may hold the port a moment longer.
        assert wait_until(lambda: _bound(holder, store_port), timeout=15), f"port {store_port} stays taken"
        holder.listen()
        up.send_signal(signal.SIGCONT)
        assert up.wait(60) != 0, log.read_text()
        said = log.read_text().split("admin token:")[1]
        assert f"the embedded Valkey (pid {valkey}) was killed by SIGKILL; restarting it" in said, said
        assert f"the embedded Valkey could not start on 127.0.0.1:{store_port}" in said, said
        assert "Address already in use" in said and "Traceback" not in said, said
        assert wait_until(lambda: not any(alive(pid) for pid in started), timeout=20)  # it stopped the rest
    finally:
        holder.close()
        up.send_signal(signal.SIGCONT)
        stop_group(up, signal.SIGKILL)


def _bound(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


LOSES_ITS_STORE = """
import sys, redis
from redis.backoff import NoBackoff
from redis.retry import Retry
db = redis.Redis.from_url(sys.argv[1], retry=Retry(NoBackoff(), 0))
db.ping()
while True:
    try:
        db.blpop(["never"], 1)
    except (redis.ConnectionError, redis.TimeoutError):
        sys.exit(3)
"""


def test_exits_caused_by_the_store_do_not_count_towards_keeps_exiting(tmp_path, capsys):
    """A child that exits whenever the store goes away (as a worker may): five store kills in a minute
    make it exit five times, and an exit of its own after that is restarted, not the sixth strike."""
    from hookgate import cli

    server = EmbeddedServer(tmp_path)
    cli._start_store(server)
    supervisor = cli._Supervisor({"child": [sys.executable, "-c", LOSES_ITS_STORE, server.url]}, dict(os.environ),
                                 server)
    def checked(predicate) -> bool:
        supervisor.check()
        return predicate()

    probe = connect(server.url)  # redis-py reconnects it after each restart
    try:
        supervisor.start("child")
        for _ in range(5):
            child, valkey = supervisor.children["child"], server.process
            assert wait_until(lambda: any(c["cmd"] == "blpop" for c in probe.client_list()),
                              timeout=20)  # the child is connected, waiting in BLPOP
            os.kill(valkey.pid, signal.SIGKILL)
            assert wait_until(lambda c=child: checked(lambda: c.poll() is not None  # noqa: B023
                                                      and supervisor.children["child"] is not c), timeout=20)
        time.sleep(cli.STORE_GRACE_S + 0.5)
        supervisor.check()
        last = supervisor.children["child"]
        os.kill(last.pid, signal.SIGKILL)  # its own exit, long after the store's return
        assert wait_until(lambda: checked(lambda: supervisor.children["child"] is not last), timeout=10)
    finally:
        probe.close()
        supervisor.stop()
        server.stop()
    said = capsys.readouterr().err
    assert said.count("the embedded Valkey (pid") == 5 and said.count("while the embedded Valkey was away") == 5, said
    assert "child was killed by SIGKILL; restarting it" in said, said
