"""Logs (issue 13, point 3), through real processes: ``HOOKGATE_LOG_FORMAT=json`` makes every line of
gunicorn (error and access logs, the app's lines), ``hookgate worker`` (RQ's loggers too) and
``hookgate up`` one JSON object; one INFO line per delivery attempt with its outcome and ids; RQ's
per-job chatter below INFO; plain text stays the default; the start-up line names no blocked plugin."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from hookgate.config import Settings

from .processes import free_port, hookgate, spawn, stop_group, wait_http, wait_until
from .receiver import Receiver, Reply

pytestmark = pytest.mark.e2e

ADMIN = "logs-admin-token-0123456789"
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RQ_CHATTER = ("Job OK", "result is kept", "Result is kept", "hookgate: ")


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKGATE_")}
    env.update(extra)
    return env


def json_lines(path: Path) -> list[dict]:
    """Every line of ``path`` as a JSON object: a line that is not one fails the test."""
    objects = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            item = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path.name} line {number} is not JSON: {line!r}") from None
        assert isinstance(item, dict), line
        assert RFC3339_MS.match(item["time"]), item
        assert {"level", "logger", "message"} <= item.keys(), item
        objects.append(item)
    return objects


def flow(api: str, receiver: Receiver) -> tuple[str, str, dict[str, str]]:
    """A source, and two destinations on ``receiver``: /ok answers 200, /fail 500 (no retries)."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    source = requests.post(f"{api}/v1/sources", json={"name": "logs"}, headers=auth, timeout=10)
    assert source.status_code == 201, source.text
    destinations = {}
    for name in ("ok", "fail"):
        created = requests.post(f"{api}/v1/destinations",
                                json={"name": name, "url": f"{receiver.url}/{name}", "events": ["*"],
                                      "retry_schedule": []}, headers=auth, timeout=10)
        assert created.status_code == 201, created.text
        destinations[name] = created.json()["id"]
    return source.json()["id"], source.json()["key"], destinations


def attempts_of(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == "hookgate.attempts"]


@contextlib.contextmanager
def api_and_worker(tmp_path: Path, redis_url: str, receiver: Receiver, **env: str) -> Iterator[str]:
    """A real ``gunicorn wsgi:app`` (one worker) and a real ``hookgate worker``, output in web.log and
    worker.log; yields the API's URL. Everything, ``receiver`` too, is stopped afterwards."""
    port = free_port()
    env = base_env(HOOKGATE_REDIS_URL=redis_url, HOOKGATE_ADMIN_TOKEN=ADMIN, HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8",
                   HOOKGATE_BIND=f"127.0.0.1:{port}", HOOKGATE_WEB_WORKERS="1", **env)
    web_log = tmp_path / "web.log"
    web = spawn([sys.executable, "-m", "gunicorn", "wsgi:app"], env, web_log)
    worker = spawn(hookgate("worker", "--name", tmp_path.name), env, tmp_path / "worker.log")
    try:
        api = f"http://127.0.0.1:{port}"
        wait_http(f"{api}/healthz", process=web, log=web_log)
        yield api
    finally:
        stop_group(worker)
        stop_group(web)
        receiver.stop()


def test_json_logs_from_gunicorn_and_a_worker_carry_one_attempt_line_per_attempt(tmp_path, redis_url, db):
    receiver = Receiver(lambda request: Reply(500 if request.path.startswith("/fail") else 200)).start()
    web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
    with api_and_worker(tmp_path, redis_url, receiver, HOOKGATE_LOG_FORMAT="json", HOOKGATE_ACCESS_LOG="-",
                        HOOKGATE_BLOCK_PLUGINS="sms") as api:
        source_id, key, destinations = flow(api, receiver)
        event_ids = []
        for n in range(3):
            accepted = requests.post(f"{api}/v1/sources/{source_id}/events",
                                     json={"name": "signup", "user_id": f"u{n}"}, headers={"X-Hookgate-Key": key},
                                     timeout=10)
            assert accepted.status_code == 202, accepted.text
            event_ids += accepted.json()["ids"]
        assert requests.get(f"{api}/nowhere", timeout=10).status_code == 404
        receiver.wait_for(6, timeout=60)
        assert wait_until(lambda: len(attempts_of(json_lines(worker_log))) >= 6, timeout=30), worker_log.read_text()
        def settled() -> list[dict]:  # the recorder writes outcomes a moment after the attempt
            items = requests.get(f"{api}/v1/deliveries?limit=100", headers={"Authorization": f"Bearer {ADMIN}"},
                                 timeout=10).json()["items"]
            return items if len(items) == 6 and all(d["status"] != "pending" for d in items) else []

        assert wait_until(settled, timeout=30)
        stored = settled()

    web_lines, worker_lines = json_lines(web_log), json_lines(worker_log)
    # gunicorn's own error log, its access log and the app's lines are all JSON
    loggers = {line["logger"] for line in web_lines}
    assert {"gunicorn.error", "gunicorn.access", "hookgate.plugins"} <= loggers, loggers
    assert any("Starting gunicorn" in line["message"] for line in web_lines)
    assert any("/nowhere" in line["message"] for line in web_lines if line["logger"] == "gunicorn.access")

    # one attempt line per attempt: 3 events x 2 destinations, with the right ids and outcome
    found = attempts_of(worker_lines)
    assert len(found) == 6, found
    deliveries = {}
    for line in found:
        assert line["level"] == "INFO"
        assert line["event_id"] in event_ids and line["source_id"] == source_id
        assert line["delivery_id"].startswith("dlv_") and line["attempt"] == 1
        assert isinstance(line["latency_ms"], (int, float))
        assert line["delivery_id"] in line["message"]
        if line["destination_id"] == destinations["ok"]:
            assert (line["outcome"], line["status"], line["status_code"]) == ("delivered", "delivered", 200)
        else:
            assert line["destination_id"] == destinations["fail"]
            assert (line["outcome"], line["status"], line["status_code"]) == ("bounced", "failed", 500)
        deliveries[line["delivery_id"]] = line
        assert "url" not in line and receiver.url not in line["message"]  # ids and numbers only
    in_store = {d["id"]: (d["event_id"], d["destination_id"], d["status"], d["last_status_code"]) for d in stored}
    assert in_store == {i: (line["event_id"], line["destination_id"], line["status"], line["status_code"])
                        for i, line in deliveries.items()}
    assert sorted(line["event_id"] for line in found) == sorted(event_ids * 2)

    # RQ's per-job chatter is below INFO, and no worker line is a plain-text line
    rq_lines = [line for line in worker_lines if line["logger"].startswith("rq.")]
    assert all(line["level"] not in ("DEBUG", "INFO") for line in rq_lines), rq_lines
    assert not [line for line in worker_lines if any(chatter in line["message"] for chatter in RQ_CHATTER[:3])]

    # the start-up line lists the plugins loaded, not the one HOOKGATE_BLOCK_PLUGINS blocked
    for lines in (web_lines, worker_lines):
        [startup] = [line for line in lines if line["message"].startswith("plugins:")]
        named = startup["message"].split(";")[0].removeprefix("plugins:").replace(",", " ").split()
        assert "sms" not in named and "slack" in named, startup


def test_text_stays_the_default_and_the_attempt_line_is_there_too(tmp_path, redis_url, db):
    receiver = Receiver().start()
    web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
    with api_and_worker(tmp_path, redis_url, receiver) as api:
        source_id, key, _ = flow(api, receiver)
        accepted = requests.post(f"{api}/v1/sources/{source_id}/events", json={"name": "signup"},
                                 headers={"X-Hookgate-Key": key}, timeout=10)
        assert accepted.status_code == 202
        receiver.wait_for(2, timeout=60)
        assert wait_until(lambda: worker_log.read_text().count("hookgate.attempts") >= 2, timeout=30)
    for path in (web_log, worker_log):
        text = path.read_text()
        assert text.strip() and not any(line.startswith("{") for line in text.splitlines()), text
    assert "[INFO] Starting gunicorn" in web_log.read_text()
    attempt_lines = [line for line in worker_log.read_text().splitlines() if "hookgate.attempts" in line]
    assert len(attempt_lines) == 2
    assert any(" INFO hookgate.attempts: delivery dlv_" in line and "delivered" in line for line in attempt_lines)
    assert "Job OK" not in worker_log.read_text()


def test_at_debug_rq_speaks_and_its_lines_are_json_too(tmp_path, redis_url, db):
    """RQ's own loggers go through hookgate's formatter: at HOOKGATE_LOG_LEVEL=DEBUG its per-job lines
    are back, each a JSON object."""
    receiver = Receiver().start()
    env = base_env(HOOKGATE_REDIS_URL=redis_url, HOOKGATE_ADMIN_TOKEN=ADMIN, HOOKGATE_LOG_FORMAT="json",
                   HOOKGATE_LOG_LEVEL="DEBUG", HOOKGATE_ALLOWED_NETWORKS="127.0.0.0/8")
    from hookgate import create_app

    client = create_app({"redis_url": redis_url, "admin_token": ADMIN}).test_client()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    source = client.post("/v1/sources", json={"name": "debug"}, headers=auth).get_json()
    client.post("/v1/destinations", json={"name": "r", "url": receiver.url, "events": ["*"]}, headers=auth)
    assert client.post(f"/v1/sources/{source['id']}/events", json={"name": "signup"},
                       headers={"X-Hookgate-Key": source["key"]}).status_code == 202
    log = tmp_path / "worker.log"
    worker = spawn(hookgate("worker", "--name", "debug"), env, log)
    try:
        receiver.wait_for(1, timeout=60)
        assert wait_until(lambda: "Job OK" in log.read_text(), timeout=30), log.read_text()
    finally:
        stop_group(worker)
        receiver.stop()
    lines = json_lines(log)
    assert any(line["logger"] == "rq.worker" and "Job OK" in line["message"] for line in lines)
    assert len(attempts_of(lines)) == 1


def test_hookgate_up_in_json_every_line_of_it_and_its_children(tmp_path):
    receiver = Receiver().start()
    port = free_port()
    log = tmp_path / "up.log"
    up = spawn(hookgate("up", "--port", str(port), "--data-dir", str(tmp_path / "data"), "--web-workers", "1"),
               base_env(HOOKGATE_LOG_FORMAT="json"), log)
    try:
        api = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: "hookgate is up" in log.read_text(), timeout=90), log.read_text()
        token = (tmp_path / "data" / "admin_token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        source = requests.post(f"{api}/v1/sources", json={"name": "up"}, headers=auth, timeout=10).json()
        requests.post(f"{api}/v1/destinations", json={"name": "r", "url": receiver.url, "events": ["*"]},
                      headers=auth, timeout=10).raise_for_status()
        accepted = requests.post(f"{api}/v1/sources/{source['id']}/events", json={"name": "signup"},
                                 headers={"X-Hookgate-Key": source["key"]}, timeout=10)
        assert accepted.status_code == 202
        receiver.wait_for(1, timeout=30)
        assert wait_until(lambda: '"hookgate.attempts"' in log.read_text(), timeout=30)
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    finally:
        stop_group(up, signal.SIGKILL)
        receiver.stop()
    lines = json_lines(log)
    loggers = {line["logger"] for line in lines}
    assert {"hookgate.cli", "gunicorn.error", "hookgate.attempts"} <= loggers, loggers
    messages = [line["message"] for line in lines if line["logger"] == "hookgate.cli"]
    assert any(m.startswith("hookgate is up") for m in messages) and "hookgate: stopped" in messages
    assert token not in log.read_text()  # a log keeps no secret: the token's file is named instead
    [attempt] = attempts_of(lines)
    assert attempt["event_id"] == accepted.json()["ids"][0] and attempt["outcome"] == "delivered"


def test_a_worker_that_cannot_boot_says_why_in_json_lines_too(tmp_path):
    """gunicorn logs the exception of a worker that failed to boot, then prints it past logging: both
    are JSON lines, the traceback inside its line."""
    log = tmp_path / "web.log"
    env = base_env(HOOKGATE_LOG_FORMAT="json", HOOKGATE_CA_BUNDLE=str(tmp_path / "missing.pem"),
                   HOOKGATE_BIND=f"127.0.0.1:{free_port()}", HOOKGATE_WEB_WORKERS="1")
    web = spawn([sys.executable, "-m", "gunicorn", "wsgi:app"], env, log)
    try:
        assert web.wait(60) != 0
    finally:
        stop_group(web)
    lines = json_lines(log)
    [failed] = [line for line in lines if line["message"] == "Exception in worker process"]
    assert "Traceback" in failed["exc_info"] and "HOOKGATE_CA_BUNDLE" in failed["exc_info"]
    assert any(line["logger"] == "stderr" and "HOOKGATE_CA_BUNDLE" in line["message"] for line in lines)
    assert any("Worker failed to boot" in line["message"] for line in lines)


def test_the_json_formatter_keeps_an_exception_inside_its_line():
    from hookgate.logs import JsonFormatter  # here, so that the process tests above run on code without it

    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "failed %s", ("dlv_1",),
                                                   sys.exc_info(), extra={"delivery_id": "dlv_1"})
    text = JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "failed dlv_1" and line["delivery_id"] == "dlv_1" and line["level"] == "ERROR"
    assert "Traceback" in line["exc_info"] and "ValueError: boom" in line["exc_info"]


def test_rq_logs_below_info_unless_debug_and_the_format_is_checked():
    from hookgate.logs import rq_log_level

    assert rq_log_level(Settings()) == "WARNING"
    assert rq_log_level(Settings(log_level="debug")) == "DEBUG"
    assert rq_log_level(Settings(log_level="ERROR")) == "ERROR"
    assert Settings().log_format == "text"
    with pytest.raises(ValueError, match="HOOKGATE_LOG_FORMAT"):
        Settings.from_env({"HOOKGATE_LOG_FORMAT": "xml"})


def test_the_start_up_line_names_no_blocked_plugin(caplog):
    from hookgate.plugins import load

    load.cache_clear()  # type: ignore[attr-defined]
    try:
        with caplog.at_level(logging.INFO, logger="hookgate.plugins"):
            plugins = load(("sms",))
        [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("plugins:")]
        named = line.split(";")[0].removeprefix("plugins:").replace(",", " ").split()
        assert named == ["meta", "slack", "zapier"] == plugins.names(), line
        assert not any(name.startswith("sms.") for name in plugins.presets)
    finally:
        load.cache_clear()  # type: ignore[attr-defined]


def test_a_line_about_a_destination_carries_its_id(caplog, make_source, make_destination, post_events, work,
                                                   answering):
    """Beyond the attempt line: the breaker's and the disabling's lines name their destination as a key."""
    gone = answering(Reply(410))
    destination = make_destination(gone.url)
    source_id, key = make_source()
    assert post_events(source_id, key, {"name": "signup"}).status_code == 202
    with caplog.at_level(logging.INFO):
        work()
    [disabled] = [r for r in caplog.records if "disabled" in r.getMessage() and r.name.startswith("hookgate")]
    assert disabled.destination_id == destination["id"]  # type: ignore[attr-defined]
    [attempt] = [r for r in caplog.records if r.name == "hookgate.attempts"]
    assert (attempt.destination_id, attempt.outcome, attempt.status_code) == (  # type: ignore[attr-defined]
        destination["id"], "error", 410)
