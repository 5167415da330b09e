"""A full store (``maxmemory`` reached, ``noeviction``): ingest refuses with a JSON 503 and keeps every
event it acknowledged; once there is room again it accepts and delivers. The README's "Running at
scale" tells operators to run the store this way, so the answer it promises is tested here, against
a Valkey of the test's own (the session's store is shared)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hookgate import create_app, runtime
from hookgate.config import Settings, parse_networks
from hookgate.delivery.worker import run_burst
from hookgate.embedded import EmbeddedServer
from hookgate.store import connect, keys

from .conftest import ADMIN_TOKEN
from .receiver import Receiver

ROOM = 400_000  # bytes of headroom above what the store holds once configured


@pytest.fixture
def full_store(tmp_path: Path) -> Iterator[str]:
    server = EmbeddedServer(tmp_path / "store")
    server.start()
    yield server.url
    server.stop()


def test_a_full_store_is_a_json_503_and_loses_nothing_it_acknowledged(full_store):
    settings = Settings(redis_url=full_store, admin_token=ADMIN_TOKEN,
                        secret_key="test-secret-key-0123456789-abcdefghijklmnop",
                        allowed_networks=parse_networks("127.0.0.0/8"))
    app = create_app(settings)
    rt = app.extensions["hookgate"]
    runtime.install(rt)
    receiver = Receiver().start()
    db = connect(full_store)
    try:
        client, admin = app.test_client(), {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        source = client.post("/v1/sources", json={"name": "shop"}, headers=admin).get_json()
        assert client.post("/v1/destinations", json={"name": "d", "url": receiver.url, "events": ["*"]},
                           headers=admin).status_code == 201
        db.config_set("maxmemory-policy", "noeviction")
        db.config_set("maxmemory", int(db.info("memory")["used_memory"]) + ROOM)

        accepted, refused = [], []
        for i in range(2000):
            response = client.post(f"/v1/sources/{source['id']}/events", headers={"X-Hookgate-Key": source["key"]},
                                   json={"name": "purchase", "user_id": f"u{i}", "data": {"note": "x" * 2000}})
            assert response.status_code in (202, 503), response.get_data(as_text=True)
            if response.status_code == 503:
                refused.append(response.get_json())
                if len(refused) == 5:
                    break
            else:
                accepted += response.get_json()["ids"]
        assert accepted and len(refused) == 5, f"{len(accepted)} accepted, {len(refused)} refused"
        for answer in refused:
            assert set(answer) == {"error"} and answer["error"]["code"] == "unavailable"
            assert set(answer["error"]) == {"code", "message", "details"}
        assert all(db.exists(keys.event(event_id)) for event_id in accepted)
        assert all(db.llen(keys.event_deliveries(event_id)) == 1 for event_id in accepted)

        db.config_set("maxmemory", 0)
        late = client.post(f"/v1/sources/{source['id']}/events", headers={"X-Hookgate-Key": source["key"]},
                           json={"name": "purchase", "user_id": "late"})
        assert late.status_code == 202
        run_burst(rt)
        delivered = {request.header("webhook-id") for request in receiver.requests}
        assert delivered == {*accepted, *late.get_json()["ids"]}
    finally:
        db.close()
        receiver.stop()
        runtime.install(None)
        rt.close()
