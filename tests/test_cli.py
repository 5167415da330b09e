"""The ``hookgate`` command as an operator runs it: real processes, a real store, a real receiver."""

from __future__ import annotations

import json
import stat
import subprocess
from importlib.metadata import version

import requests

from .conftest import ADMIN_TOKEN
from .processes import free_port, hookgate, spawn, stop_group, wait_until
from .receiver import Receiver, Reply
from .test_e2e import base_env

SECRET_KEY = "test-secret-key-0123456789-abcdefghijklmnop"  # the settings fixture's


def run(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(hookgate(*args), env=env, capture_output=True, text=True, timeout=timeout)


def test_version_is_the_package_version():
    done = run("--version", env=base_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"hookgate, version {version('hookgate')}"


def test_commands_find_the_embedded_store_of_a_running_up_and_say_so_when_there_is_none(tmp_path):
    data = tmp_path / "data"
    port, store_port = free_port(), free_port()
    log = tmp_path / "up.log"
    env = base_env(HOOKGATE_DATA_DIR=str(data))  # no HOOKGATE_REDIS_URL: only the data directory
    up = spawn(hookgate("up", "--port", str(port), "--store-port", str(store_port), "--data-dir", str(data),
                        "--web-workers", "1"), base_env(), log)
    try:
        assert wait_until(lambda: "admin token:" in log.read_text(), timeout=90), log.read_text()
        token = (data / "admin_token").read_text().strip()
        preset = {"name": "acme.notify", "title": "Acme notifications", "base_url": "https://acme.example/hooks",
                  "params": [{"name": "channel", "required": True, "description": "the channel to post to"},
                             {"name": "api_key", "secret": True, "description": "Acme API key"}]}
        made = requests.post(f"http://127.0.0.1:{port}/v1/presets", json=preset,
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert made.status_code == 201, made.text

        listed = run("presets", "list", env=env)
        assert listed.returncode == 0, listed.stderr
        [line] = [line for line in listed.stdout.splitlines() if line.startswith("acme.notify ")]
        assert "user" in line and "Acme notifications" in line
        address = data / "valkey" / "address"  # where it found the store: 0600, the port `up` was given
        assert stat.S_IMODE(address.stat().st_mode) == 0o600
        assert json.loads(address.read_text())["port"] == store_port

        shown = run("presets", "show", "acme.notify", env=env)
        assert shown.returncode == 0, shown.stderr
        assert "channel (string; required)  the channel to post to" in shown.stdout
        assert "api_key (string; optional, secret)  Acme API key" in shown.stdout
        as_json = json.loads(run("presets", "show", "acme.notify", "--json", env=env).stdout)
        assert [p["name"] for p in as_json["params"]][:2] == ["channel", "api_key"]

        exported = run("export", env=env)
        assert exported.returncode == 0, exported.stderr
        assert "acme.notify" in exported.stdout
        none_yet = run("deliveries", "list", "--json", env=env)
        assert none_yet.returncode == 0 and json.loads(none_yet.stdout) == {"items": []}, none_yet.stderr
        password = (data / "valkey" / "password").read_text().strip()
        assert all(password not in out for out in (listed.stdout, listed.stderr, shown.stdout, exported.stdout,
                                                   exported.stderr))
    finally:
        stop_group(up)
    assert not address.exists()  # a clean stop removes it

    for args in (["presets", "list"], ["deliveries", "list"], ["export"]):
        refused = run(*args, env=env)
        assert refused.returncode != 0 and refused.stdout == "", (args, refused.stdout)
        assert str(data.resolve()) in refused.stderr and "HOOKGATE_REDIS_URL" in refused.stderr, refused.stderr


def test_deliveries_list_show_and_replay_one_and_in_bulk(tmp_path, redis_url, client, admin, make_source,
                                                         make_destination, post_events):
    answers = {"code": 500}
    receiver = Receiver(lambda request: Reply(answers["code"])).start()
    env = base_env(HOOKGATE_REDIS_URL=redis_url, HOOKGATE_SECRET_KEY=SECRET_KEY, HOOKGATE_ADMIN_TOKEN=ADMIN_TOKEN,
                   HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8", HOOKGATE_DATA_DIR=str(tmp_path / "none"))

    def burst() -> None:
        done = run("worker", "--burst", env=env)
        assert done.returncode == 0, done.stderr

    try:
        source_id, key = make_source()
        destination = make_destination(receiver.url, retry_schedule=[0], circuit_breaker={"enabled": False})
        event_ids = post_events(source_id, key, [{"name": f"e{n}"} for n in range(3)]).get_json()["ids"]
        burst()
        assert len(receiver.wait_for(6)) == 6  # 3 events, 2 attempts each, all answered 500

        listed = run("deliveries", "list", "--status", "failed", "--destination", destination["id"], env=env)
        assert listed.returncode == 0, listed.stderr
        header, *rows = listed.stdout.splitlines()
        assert header.split()[:3] == ["ID", "STATUS", "TRIES"] and len(rows) == 3
        assert all(row.split()[1:4] == ["failed", "2", "500"] for row in rows), listed.stdout
        items = json.loads(run("deliveries", "list", "--status", "failed", "--json", env=env).stdout)["items"]
        assert {d["event_id"] for d in items} == set(event_ids)
        one = run("deliveries", "list", "--event", event_ids[0], "--json", env=env)
        [first] = json.loads(one.stdout)["items"]

        shown = run("deliveries", "show", first["id"], env=env)
        assert shown.returncode == 0, shown.stderr
        assert "status:           failed" in shown.stdout and "attempt log:" in shown.stdout
        log_lines = [line.split() for line in shown.stdout.splitlines() if line.startswith("  #")]
        assert [line[0] for line in log_lines] == ["#1", "#2"] and all("500" in line for line in log_lines)
        assert json.loads(run("deliveries", "show", first["id"], "--json", env=env).stdout)["attempts"] == 2
        missing = run("deliveries", "show", "dlv_nope", env=env)
        assert missing.returncode != 0 and "dlv_nope" in missing.stderr

        answers["code"] = 200
        replayed = run("replay", first["id"], env=env)
        assert replayed.returncode == 0 and "pending again" in replayed.stdout, replayed.stderr
        burst()
        assert len(receiver.wait_for(7)) == 7

        bulk = run("replay", "--destination", destination["id"], "--status", "failed",
                   "--since", "2020-01-01T00:00:00Z", env=env)
        assert bulk.returncode == 0, bulk.stderr
        assert "replaying" in bulk.stdout + bulk.stderr and "replayed 2 of 3 scanned" in bulk.stdout
        burst()
        assert len(receiver.wait_for(9)) == 9
        delivered = json.loads(run("deliveries", "list", "--status", "delivered", "--json", env=env).stdout)
        assert {d["event_id"] for d in delivered["items"]} == set(event_ids)
        assert all(d["attempts"] == 3 for d in delivered["items"])
    finally:
        receiver.stop()


def test_replay_needs_a_delivery_or_a_destination_and_status(tmp_path):
    done = run("replay", "--destination", "dst_x", env=base_env(HOOKGATE_DATA_DIR=str(tmp_path)))
    assert done.returncode == 2 and "--status" in done.stderr
