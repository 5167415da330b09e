"""Fixtures: a real Redis-compatible server, real HTTP receivers, real RQ workers.

The store is ``HOOKGATE_REDIS_URL`` when set (its database is flushed before each test that uses
it), otherwise an embedded Valkey started once for the session.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hookgate import create_app, runtime
from hookgate.config import Settings, parse_networks
from hookgate.delivery.worker import run_burst
from hookgate.embedded import EmbeddedServer
from hookgate.store import connect

from .receiver import Receiver, Reply

ADMIN_TOKEN = "test-admin-token-0123456789"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    url = os.environ.get("HOOKGATE_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedServer(Path(tmp_path_factory.mktemp("store")))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def db(redis_url):
    client = connect(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(redis_url, db) -> Settings:
    return Settings(
        redis_url=redis_url,
        admin_token=ADMIN_TOKEN,
        secret_key="test-secret-key-0123456789-abcdefghijklmnop",
        allowed_networks=parse_networks("127.0.0.0/8,::1/128"),
        lease_s=30.0,
        drain_budget_s=5.0,
    )


@pytest.fixture
def app(settings):
    app = create_app(settings)
    rt = app.extensions["hookgate"]
    runtime.install(rt)  # jobs run in this process by the in-process worker use the same wiring
    yield app
    runtime.install(None)
    rt.close()


@pytest.fixture
def rt(app) -> runtime.Runtime:
    return app.extensions["hookgate"]


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def work(rt):
    """Run RQ's in-process worker (burst) until nothing is due."""
    return lambda: run_burst(rt)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def make_source(client, admin):
    def make(name: str = "shop", kind: str = "generic") -> tuple[str, str]:
        response = client.post("/v1/sources", json={"name": name, "kind": kind}, headers=admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"], response.get_json()["key"]

    return make


@pytest.fixture
def make_destination(client, admin):
    def make(url: str, **fields) -> dict:
        body = {"name": fields.pop("name", "dest"), "url": url, "events": fields.pop("events", ["*"]), **fields}
        response = client.post("/v1/destinations", json=body, headers=admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return make


@pytest.fixture
def post_events(client):
    def post(source_id: str, key: str, payload, **kwargs):
        return client.post(f"/v1/sources/{source_id}/events", json=payload, headers={"X-Hookgate-Key": key}, **kwargs)

    return post


@pytest.fixture
def answering():
    """Receivers that answer every request with ``reply`` (a ``Reply``, or a function of the request
    giving one); all stopped after the test."""
    started: list[Receiver] = []

    def make(reply: Reply | Callable[..., Reply]) -> Receiver:
        receiver = Receiver(reply if callable(reply) else (lambda request: reply)).start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


@pytest.fixture
def preset_destination(client, admin):
    """Create a destination from a preset (subscribed to every event unless ``events`` is given)."""
    def make(preset: str, params: dict, **fields) -> dict:
        body = {"preset": preset, "params": params, "events": fields.pop("events", ["*"]), **fields}
        response = client.post("/v1/destinations", json=body, headers=admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return make
