"""Management access and transport: admin tokens (hashed, listed masked, revocable) and https_only
(ingest keys and their rotation are in test_sources.py)."""

from __future__ import annotations

import dataclasses

from hookgate import create_app, runtime
from hookgate.store import keys


def test_admin_tokens_are_hashed_listed_masked_and_revocable(client, admin, db):
    created = client.post("/v1/admin-tokens", json={"name": "ci"}, headers=admin)
    assert created.status_code == 201
    token = created.get_json()["token"]
    assert token.startswith("hga_") and token not in str(db.hgetall(keys.admin_tokens)) and token not in str(
        db.hgetall(keys.admin_token_hashes))
    mine = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/destinations", headers=mine).status_code == 200
    listed = client.get("/v1/admin-tokens", headers=mine).get_json()["items"]
    assert [t["name"] for t in listed] == ["ci"] and "token" not in listed[0] and "hash" not in listed[0]
    assert listed[0]["hint"] == token[:8] + "…"
    assert client.delete(f"/v1/admin-tokens/{listed[0]['id']}", headers=admin).status_code == 204
    assert client.get("/v1/destinations", headers=mine).status_code == 401
    assert client.delete(f"/v1/admin-tokens/{listed[0]['id']}", headers=admin).status_code == 404


def test_https_only_destinations_refuse_http(client, admin, receiver):
    response = client.post("/v1/destinations", json={"name": "x", "url": receiver.url, "https_only": True},
                           headers=admin)
    assert response.status_code == 422 and "url" in response.get_json()["error"]["details"]
    assert client.post("/v1/destinations", json={"name": "x", "url": "https://example.com/h", "https_only": True},
                       headers=admin).status_code == 201


def test_https_only_for_every_destination(settings, receiver, make_source, post_events):
    strict = create_app(dataclasses.replace(settings, https_only=True))
    client = strict.test_client()
    headers = {"Authorization": f"Bearer {settings.admin_token}"}
    response = client.post("/v1/destinations", json={"name": "x", "url": receiver.url}, headers=headers)
    assert response.status_code == 422


def test_an_http_destination_saved_before_https_only_is_refused_at_send_time(
    settings, client, admin, receiver, make_source, make_destination, post_events
):
    source_id, key = make_source()
    make_destination(receiver.url)
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    strict = runtime.Runtime(dataclasses.replace(settings, https_only=True))
    runtime.install(strict)
    from hookgate.delivery.worker import run_burst

    run_burst(strict)
    assert receiver.requests == []
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    assert delivery["status"] == "error" and "https_only" in delivery["last_error"]
