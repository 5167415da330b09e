"""End to end with real processes: `hookgate up`; gunicorn + `hookgate worker`; a worker killed mid-drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from hookgate.store import connect

from .processes import alive, descendants, free_port, hookgate, spawn, stop_group, wait_http, wait_until
from .receiver import Receiver, Reply

pytestmark = pytest.mark.e2e

ADMIN = "e2e-admin-token"


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKGATE_")}
    env.update(HOOKGATE_LOG_LEVEL="WARNING", **extra)
    return env


def create_flow(api: str, token: str, receiver_url: str, events=("*",), **destination) -> tuple[str, str]:
    auth = {"Authorization": f"Bearer {token}"}
    source = requests.post(f"{api}/v1/sources", json={"name": "e2e"}, headers=auth, timeout=10)
    assert source.status_code == 201, source.text
    created = requests.post(f"{api}/v1/destinations", json={"name": "recv", "url": receiver_url,
                                                             "events": list(events), **destination},
                            headers=auth, timeout=10)
    assert created.status_code == 201, created.text
    return source.json()["id"], source.json()["key"]


def test_hookgate_up_runs_everything_and_stops_every_child(tmp_path, receiver):
    port = free_port()
    data_dir = tmp_path / "data"
    log = tmp_path / "up.log"
    up = spawn(hookgate("up", "--port", str(port), "--data-dir", str(data_dir), "--web-workers", "1"),
               base_env(), log)
    try:
        api = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: "admin token:" in log.read_text(), timeout=90), log.read_text()
        output = log.read_text()
        token = output.split("admin token:")[1].split()[0]
        assert token == (data_dir / "admin_token").read_text().strip()
        assert api in output and "loopback" in output  # says it allows loopback for local testing

        source_id, key = create_flow(api, token, receiver.url + "/up")
        accepted = requests.post(f"{api}/v1/sources/{source_id}/events", json={"name": "survey_response",
                                 "user_id": "u1"}, headers={"X-Hookgate-Key": key}, timeout=10)
        assert accepted.status_code == 202
        [request] = receiver.wait_for(1, timeout=30)
        assert json.loads(request.body)["id"] == accepted.json()["ids"][0]

        children = descendants(up.pid)
        commands = {Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children if alive(pid)}
        assert any(b"valkey-server" in c for c in commands) and any(b"worker" in c for c in commands)
        assert any(b"web" in c for c in commands)
        up.send_signal(signal.SIGTERM)  # only to `up` itself: it must stop the rest
        assert up.wait(60) == 0, log.read_text()
        assert wait_until(lambda: not any(alive(pid) for pid in children), timeout=10)
        assert [pid for pid in children if alive(pid)] == []
    finally:
        stop_group(up, signal.SIGKILL)


def test_gunicorn_and_workers_against_a_shared_store(tmp_path, redis_url, db, receiver):
    port = free_port()
    env = base_env(HOOKGATE_REDIS_URL=redis_url, HOOKGATE_ADMIN_TOKEN=ADMIN,
                   HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8", HOOKGATE_BIND=f"127.0.0.1:{port}",
                   HOOKGATE_WEB_WORKERS="2")
    processes = [spawn([sys.executable, "-m", "gunicorn", "wsgi:app"], env, tmp_path / "web.log")]
    processes += [spawn(hookgate("worker", "--name", f"w{n}"), env, tmp_path / f"worker{n}.log") for n in range(2)]
    try:
        api = f"http://127.0.0.1:{port}"
        wait_http(f"{api}/healthz", process=processes[0], log=tmp_path / "web.log")
        source_id, key = create_flow(api, ADMIN, receiver.url)
        ids = []
        for n in range(10):
            batch = [{"name": "purchase", "user_id": f"u{n}-{i}"} for i in range(10)]
            response = requests.post(f"{api}/v1/sources/{source_id}/events", json=batch,
                                     headers={"X-Hookgate-Key": key}, timeout=10)
            assert response.status_code == 202
            ids += response.json()["ids"]
        receiver.wait_for(100, timeout=60)
        assert sorted(json.loads(r.body)["id"] for r in receiver.requests) == sorted(ids)

        info = subprocess.run([sys.executable, "-m", "rq.cli", "info", "-u", redis_url], capture_output=True,
                              text=True, timeout=30, env=env)
        assert info.returncode == 0, info.stderr
        assert "hookgate" in info.stdout and "w0" in info.stdout and "w1" in info.stdout
    finally:
        for process in processes:
            stop_group(process)


def test_a_worker_killed_with_hundreds_of_requests_in_flight_loses_nothing(tmp_path, redis_url, db):
    """SIGKILL while the receiver holds hundreds of a worker's requests: every event is delivered, and
    the only ones sent twice (same webhook-id) are those whose outcome the dead worker had not recorded."""
    receiver = Receiver(lambda request: Reply(delay=0.5)).start()
    env = base_env(HOOKGATE_REDIS_URL=redis_url, HOOKGATE_ADMIN_TOKEN=ADMIN,
                   HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8", HOOKGATE_LEASE="3s", HOOKGATE_TICK="0.2s")
    from hookgate import create_app

    client = create_app({"redis_url": redis_url, "admin_token": ADMIN}).test_client()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    source = client.post("/v1/sources", json={"name": "crash"}, headers=auth).get_json()
    client.post("/v1/destinations", json={"name": "slow", "url": receiver.url, "events": ["*"], "timeout_s": 2,
                                          "max_in_flight": 400}, headers=auth)
    count = 3000
    ids: set[str] = set()
    for start in range(0, count, 500):
        response = client.post(f"/v1/sources/{source['id']}/events",
                               json=[{"name": "e", "data": {"n": n}} for n in range(start, start + 500)],
                               headers={"X-Hookgate-Key": source["key"]})
        ids |= set(response.get_json()["ids"])
    first = spawn(hookgate("worker", "--name", "doomed"), env, tmp_path / "doomed.log")
    second = None
    store = connect(redis_url)
    try:
        assert wait_until(lambda: receiver.in_flight >= 128, timeout=60), (tmp_path / "doomed.log").read_text()
        in_flight = receiver.in_flight
        os.killpg(first.pid, signal.SIGKILL)  # the worker, hundreds of requests in flight
        first.wait()
        arrived = receiver.arrived
        recorded = store.zcard("hookgate:deliveries:status:delivered")
        assert arrived < count and in_flight >= 128  # it really died in the middle, with hundreds in flight
        second = spawn(hookgate("worker", "--name", "survivor"), env, tmp_path / "survivor.log")
        assert wait_until(lambda: {json.loads(r.body)["id"] for r in receiver.requests} >= ids, timeout=120), \
            (tmp_path / "survivor.log").read_text()
        received = [r.header("webhook-id") for r in receiver.requests]
        assert set(received) == ids
        duplicates = len(received) - len(ids)
        assert duplicates <= arrived - recorded  # only what was sent and not yet recorded went twice
        assert [json.loads(r.body)["id"] for r in receiver.requests] == received  # under the same webhook-id
        assert wait_until(lambda: store.zcard("hookgate:deliveries:status:delivered") == count, timeout=30)
        assert store.zcard("hookgate:leases") == 0
    finally:
        stop_group(first, signal.SIGKILL)
        if second is not None:
            stop_group(second)
        receiver.stop()


def test_a_policy_s_concurrency_holds_across_two_workers(tmp_path, redis_url, db):
    """Two ``hookgate worker`` processes, three destinations of one policy (concurrency 3), each allowing
    16 in flight: the receiver, which counts what it holds, never holds more than 3, and all arrive."""
    receiver = Receiver(lambda request: Reply(delay=0.05)).start()
    env = base_env(HOOKGATE_REDIS_URL=redis_url, HOOKGATE_ADMIN_TOKEN=ADMIN,
                   HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8", HOOKGATE_TICK="0.2s")
    from hookgate import create_app

    client = create_app({"redis_url": redis_url, "admin_token": ADMIN}).test_client()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    policy = client.post("/v1/policies", json={"name": "shared", "concurrency": 3}, headers=auth).get_json()
    source = client.post("/v1/sources", json={"name": "shop"}, headers=auth).get_json()
    for n in range(3):
        assert client.post("/v1/destinations", json={
            "name": f"d{n}", "url": receiver.url + f"/{n}", "events": ["*"], "policy_id": policy["id"],
            "max_in_flight": 16}, headers=auth).status_code == 201
    client.post(f"/v1/sources/{source['id']}/events", json=[{"name": "e", "data": {"n": n}} for n in range(150)],
                headers={"X-Hookgate-Key": source["key"]})
    workers = [spawn(hookgate("worker", "--name", f"w{n}"), env, tmp_path / f"w{n}.log") for n in range(2)]
    try:
        assert wait_until(lambda: len(receiver.requests) >= 450, timeout=90), (tmp_path / "w0.log").read_text()
        assert len(receiver.requests) == 450  # 150 events × 3 destinations, each once
        assert 2 <= receiver.max_in_flight <= 3  # concurrent, and never past the policy
        assert {r.path for r in receiver.requests} == {"/0", "/1", "/2"}
    finally:
        for worker in workers:
            stop_group(worker)
        receiver.stop()
