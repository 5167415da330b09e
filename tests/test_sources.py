"""Sources: created with an ingest key shown once and stored hashed, key rotation without downtime, and
signed sources (HMAC, Standard Webhooks signed by the reference library): replays, tampering and stale
timestamps refused."""

from __future__ import annotations

import json
import time
from datetime import UTC

import pytest
from standardwebhooks import Webhook

from hookgate.signatures import sign_hmac
from hookgate.store import keys


def test_source_is_created_with_a_key_shown_once_and_stored_hashed(client, admin, db):
    response = client.post("/v1/sources", json={"name": "shop", "kind": "generic"}, headers=admin)
    assert response.status_code == 201
    body = response.get_json()
    assert body["id"].startswith("src_") and body["key"].startswith("hgk_")
    stored = db.hget(keys.sources, body["id"])
    assert body["key"] not in stored  # only its hash is kept
    shown = client.get(f"/v1/sources/{body['id']}", headers=admin).get_json()
    assert "key" not in shown and "key_hashes" not in shown
    assert shown["name"] == "shop" and shown["kind"] == "generic"


def test_ingest_keys_rotate_without_downtime(client, admin, make_source, post_events):
    source_id, old_key = make_source()
    rotated = client.post(f"/v1/sources/{source_id}/rotate-key", json={"grace_s": 1}, headers=admin)
    assert rotated.status_code == 200
    new_key = rotated.get_json()["key"]
    assert new_key != old_key and "key_hashes" not in rotated.get_json()
    assert post_events(source_id, new_key, {"name": "x"}).status_code == 202
    assert post_events(source_id, old_key, {"name": "x"}).status_code == 202  # in its grace period
    time.sleep(1.1)
    assert post_events(source_id, old_key, {"name": "x"}).status_code == 401
    assert post_events(source_id, new_key, {"name": "x"}).status_code == 202
    immediate = client.post(f"/v1/sources/{source_id}/rotate-key", json={"grace_s": 0}, headers=admin)
    assert post_events(source_id, new_key, {"name": "x"}).status_code == 401
    assert post_events(source_id, immediate.get_json()["key"], {"name": "x"}).status_code == 202


def test_a_source_must_require_a_key_or_a_signature(client, admin):
    response = client.post("/v1/sources", json={"name": "open", "key_required": False}, headers=admin)
    assert response.status_code == 422 and "key_required" in response.get_json()["error"]["details"]
    response = client.post("/v1/sources", json={"name": "s", "signature": {"type": "standard_webhooks",
                                                                             "secret": "not-a-whsec-secret"}},
                           headers=admin)
    assert response.status_code == 422


@pytest.fixture
def signed_source(client, admin):
    def make(signature: dict, key_required: bool = True):
        response = client.post("/v1/sources", json={"name": "signed", "signature": signature,
                                                    "key_required": key_required}, headers=admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return make


def test_hmac_signed_source(client, signed_source, make_destination, receiver, work, db):
    make_destination(receiver.url)
    source = signed_source({"type": "hmac_sha256"}, key_required=False)
    secret = source["signing_secret"]
    assert "secrets" not in source["signature"] and source["signature"]["secret_hint"] == secret[:8] + "…"
    assert secret not in db.hget(keys.sources, source["id"])  # encrypted at rest
    assert "signing_secret" not in client.get(
        f"/v1/sources/{source['id']}", headers={"Authorization": "Bearer test-admin-token-0123456789"}).get_json()
    url = f"/v1/sources/{source['id']}/events"
    body = b'{"name": "signed"}'

    def post(stamp: int, signature: str):
        return client.post(url, data=body, content_type="application/json",
                           headers={"X-Hookgate-Timestamp": str(stamp), "X-Hookgate-Signature": signature})

    now = int(time.time())
    assert post(now, sign_hmac(secret, now, body)).status_code == 202
    assert post(now, sign_hmac(secret, now, body)).status_code == 401  # replayed
    assert post(now, sign_hmac("wrong-secret-0123456789", now, body)).status_code == 401
    assert post(now, sign_hmac(secret, now, b'{"name": "tampered"}')).status_code == 401
    stale = now - 3600
    assert post(stale, sign_hmac(secret, stale, body)).status_code == 401
    assert post(now + 1, "sha256=" + sign_hmac(secret, now + 1, body)).status_code == 202
    missing = client.post(url, data=body, content_type="application/json")
    assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "unauthorized"
    work()
    assert len(receiver.wait_for(2)) == 2


def test_standard_webhooks_signed_by_the_reference_library_are_accepted(client, signed_source, receiver,
                                                                         make_destination, work):
    make_destination(receiver.url)
    source = signed_source({"type": "standard_webhooks"})
    sender = Webhook(source["signing_secret"])
    url = f"/v1/sources/{source['id']}/events"
    body = '{"name": "order.paid", "user_id": "u1"}'

    def post(msg_id: str, payload: str, signed_payload: str | None = None, key: str = source["key"]):
        stamp = int(time.time())
        from datetime import datetime

        signature = sender.sign(msg_id, datetime.fromtimestamp(stamp, tz=UTC), signed_payload or payload)
        return client.post(url, data=payload, content_type="application/json", headers={
            "webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature,
            "X-Hookgate-Key": key})

    assert post("msg_1", body).status_code == 202
    assert post("msg_1", body).status_code == 401  # the same message id again: a replay
    assert post("msg_2", body, signed_payload='{"name": "other"}').status_code == 401
    assert post("msg_3", body, key="hgk_wrong").status_code == 401  # the key is still required
    work()
    assert json.loads(receiver.wait_for(1)[0].body)["name"] == "order.paid"


def test_a_signed_request_refused_for_its_content_is_not_then_taken_for_a_replay(client, admin, receiver,
                                                                                 make_destination):
    """Regression: a signed request refused with a 422 could not be retried: its retry was a replay."""
    source = client.post("/v1/sources", json={"name": "s", "signature": {"type": "hmac_sha256"},
                                              "key_required": False}, headers=admin).get_json()
    url = f"/v1/sources/{source['id']}/events"
    now = int(time.time())
    bad_body = b'{"data": {}}'  # no name: 422
    headers = {"X-Hookgate-Timestamp": str(now), "X-Hookgate-Signature": sign_hmac(source["signing_secret"], now,
                                                                                    bad_body)}
    assert client.post(url, data=bad_body, content_type="application/json", headers=headers).status_code == 422
    # The sender fixes nothing and retries the same signed request: refused for what it is, not as a replay.
    again = client.post(url, data=bad_body, content_type="application/json", headers=headers)
    assert again.status_code == 422
    good = b'{"name": "ok"}'
    signed = {"X-Hookgate-Timestamp": str(now), "X-Hookgate-Signature": sign_hmac(source["signing_secret"], now,
                                                                                   good)}
    assert client.post(url, data=good, content_type="application/json", headers=signed).status_code == 202
    assert client.post(url, data=good, content_type="application/json", headers=signed).status_code == 401
