"""Sources: created with an ingest key shown once and stored hashed, key rotation without downtime, and
signed sources (HMAC, Standard Webhooks signed by the reference library): replays, tampering and stale
timestamps refused."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from werkzeug.datastructures import Headers

from hookgate.signatures import sign_hmac, sign_standard, verify_standard
from hookgate.store import keys

SEEDS = Path(__file__).parent / "data" / "seeds"


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
    assert post(now, sign_hmac(secret, now, body)).headers["Idempotent-Replayed"] == "true"  # a repeat: a duplicate
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
        signature = sender.sign(msg_id, datetime.fromtimestamp(stamp, tz=UTC), signed_payload or payload)
        return client.post(url, data=payload, content_type="application/json", headers={
            "webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature,
            "X-Hookgate-Key": key})

    assert post("msg_1", body).status_code == 202
    assert post("msg_1", body).headers["Idempotent-Replayed"] == "true"  # the same message id: a duplicate
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
    repeat = client.post(url, data=good, content_type="application/json", headers=signed)
    assert repeat.status_code == 202 and repeat.headers["Idempotent-Replayed"] == "true"


# -- signatures through the reference library, and headers of any content -----------------------------

# The Standard Webhooks specification's published example (and Svix's): secret, id, timestamp, body → signature.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_outbound_signatures_match_the_specifications_example():
    assert sign_standard(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


@settings(max_examples=200, deadline=None)
@given(msg_id=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
       body=st.text(max_size=300), secret=st.binary(min_size=16, max_size=64))
def test_signatures_agree_with_the_library_both_ways(msg_id, body, secret):
    whsec = "whsec_" + base64.b64encode(secret).decode()
    stamp = int(time.time())
    ours = sign_standard(whsec, msg_id, stamp, body.encode())
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": ours}
    Webhook(whsec).verify(body.encode(), headers, json_parse=False)  # the library accepts what hookgate sends
    theirs = Webhook(whsec).sign(msg_id, datetime.fromtimestamp(stamp, tz=UTC), body)
    verify_standard([whsec], Headers(headers | {"webhook-signature": theirs}), body.encode(), tolerance_s=300)


def _signature_headers(kind: str, secret: str) -> dict[str, str]:
    now = int(time.time())
    if kind == "hmac_sha256":
        return {"X-Hookgate-Timestamp": str(now), "X-Hookgate-Signature": sign_hmac(secret, now, b"{}")}
    return {"webhook-id": "msg_1", "webhook-timestamp": str(now),
            "webhook-signature": sign_standard(secret, "msg_1", now, b"{}")}


MOJIBAKE = "١".encode().decode("latin-1")  # an Arabic-Indic digit as a WSGI server hands it over


@pytest.mark.parametrize("kind", ["hmac_sha256", "standard_webhooks"])
@pytest.mark.parametrize("damage", [
    "non_ascii_signature", "superscript_timestamp", "arabic_digit_timestamp", "huge_timestamp", "huge_signature",
    "empty_values", "no_comma", "bad_base64", "nul", "repeated_signature", "repeated_timestamp", "many_signatures",
])
def test_signature_headers_of_any_content_answer_401_json(client, signed_source, kind, damage):
    source = signed_source({"type": kind}, key_required=False)
    good = _signature_headers(kind, source["signing_secret"])
    stamp_name, signature_name = [name for name in good if "imestamp" in name][0], [
        name for name in good if "ignature" in name][0]
    headers: list[tuple[str, str]] = list(good.items())

    def replace(name: str, value: str) -> list[tuple[str, str]]:
        return [(k, value if k == name else v) for k, v in headers]

    headers = {
        "non_ascii_signature": lambda: replace(signature_name, "v1,é" + "\xff" * 40),
        "superscript_timestamp": lambda: replace(stamp_name, "²"),
        "arabic_digit_timestamp": lambda: replace(stamp_name, MOJIBAKE),
        "huge_timestamp": lambda: replace(stamp_name, "9" * 400),
        "huge_signature": lambda: replace(signature_name, "v1," + "A" * 100_000),
        "empty_values": lambda: [(k, "") for k, _ in headers],
        "no_comma": lambda: replace(signature_name, "v1"),
        "bad_base64": lambda: replace(signature_name, "v1,***not base64***"),
        "nul": lambda: replace(signature_name, "v1,\x00abc"),
        "repeated_signature": lambda: [*headers, (signature_name, "v1,AAAA")],
        "repeated_timestamp": lambda: [*headers, (stamp_name, str(int(time.time()) - 1))],
        "many_signatures": lambda: replace(signature_name, " ".join(["v1,AAAA"] * 40)),
    }[damage]()
    response = client.post(f"/v1/sources/{source['id']}/events", data=b"{}", content_type="application/json",
                           headers=headers)
    assert response.status_code == 401, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == "unauthorized"


def test_a_standard_webhooks_body_that_is_not_utf8_is_refused_not_crashed(client, signed_source):
    source = signed_source({"type": "standard_webhooks"}, key_required=False)
    now = int(time.time())
    body = b'{"name": "\xff"}'
    signature = "v1," + base64.b64encode(b"x" * 32).decode()
    response = client.post(f"/v1/sources/{source['id']}/events", data=body, content_type="application/json",
                           headers={"webhook-id": "m", "webhook-timestamp": str(now), "webhook-signature": signature})
    assert response.status_code == 401 and "UTF-8" in response.get_json()["error"]["message"]


def _signed_post(client, source_id: str, secret: str, header: str = "X-Hookgate-Signature"):
    body = json.dumps({"name": "signed", "data": {"n": time.monotonic_ns()}}).encode()  # no replay of another
    now = int(time.time())
    return client.post(f"/v1/sources/{source_id}/events", data=body, content_type="application/json",
                       headers={"X-Hookgate-Timestamp": str(now), header: sign_hmac(secret, now, body)})


def test_a_patch_changes_a_sources_fields_and_keeps_its_key_and_id(client, admin, make_source, post_events):
    """Issue 13, point 4: PATCH /v1/sources/<id> was a 405."""
    source_id, key = make_source("shop")
    response = client.patch(f"/v1/sources/{source_id}", json={"name": "shop eu", "kind": "webengage"},
                            headers=admin)
    assert response.status_code == 200, response.get_json()
    patched = response.get_json()
    assert patched["id"] == source_id and patched["name"] == "shop eu" and patched["kind"] == "webengage"
    assert patched["key_required"] is True and patched["updated_at"] >= patched["created_at"]
    assert "key" not in patched and "key_hashes" not in patched and "signing_secret" not in patched
    assert client.get(f"/v1/sources/{source_id}", headers=admin).get_json() == patched
    assert client.patch(f"/v1/sources/{source_id}", json={"name": "shop"}, headers=admin).get_json()["kind"] == \
        "webengage"  # what a patch does not name stays
    seed = json.loads((SEEDS / "webengage.seed003.journey_activated.json").read_text())
    response = post_events(source_id, key, seed)  # read as WebEngage sends it now
    assert response.status_code == 202, response.get_json()
    shown = client.get(f"/v1/events/{response.get_json()['ids'][0]}", headers=admin).get_json()
    assert shown["category"] == "journey" and shown["source"] == source_id


def test_a_patched_signature_is_encrypted_masked_and_verified(client, admin, make_source, db):
    source_id, key = make_source()
    secret = "given-hmac-secret-0123456789"
    response = client.patch(f"/v1/sources/{source_id}", json={
        "key_required": False, "signature": {"type": "hmac_sha256", "secret": secret}}, headers=admin)
    assert response.status_code == 200, response.get_json()
    for shown in (response.get_json(), client.get(f"/v1/sources/{source_id}", headers=admin).get_json()):
        assert shown["signature"] == {"type": "hmac_sha256", "secret_hint": f"given, {len(secret)} characters",
                                      "header": "X-Hookgate-Signature", "timestamp_header": "X-Hookgate-Timestamp"}
        assert secret not in json.dumps(shown) and "signing_secret" not in shown
    assert secret not in db.hget(keys.sources, source_id)  # encrypted at rest
    assert _signed_post(client, source_id, secret).status_code == 202
    # a header renamed keeps the secret
    response = client.patch(f"/v1/sources/{source_id}", json={"signature": {"header": "X-Shop-Signature"}},
                            headers=admin)
    assert response.status_code == 200 and response.get_json()["signature"]["secret_hint"].startswith("given")
    assert _signed_post(client, source_id, secret, "X-Shop-Signature").status_code == 202
    assert _signed_post(client, source_id, secret).status_code == 401
    # another type and no secret: a new one, shown once
    response = client.patch(f"/v1/sources/{source_id}", json={"signature": {"type": "standard_webhooks"}},
                            headers=admin)
    generated = response.get_json()["signing_secret"]
    assert generated.startswith("whsec_") and generated not in db.hget(keys.sources, source_id)
    assert "signing_secret" not in client.get(f"/v1/sources/{source_id}", headers=admin).get_json()
    assert "secrets" not in response.get_json()["signature"]


def test_a_patch_that_is_not_valid_is_a_422_naming_the_field_and_changes_nothing(client, admin, make_source, db):
    source_id, _ = make_source()
    stored = db.hget(keys.sources, source_id)
    for body, field in (({"name": ""}, "name"), ({"kind": "nope"}, "kind"), ({"id": "src_x"}, "id"),
                        ({"key": "hgk_mine"}, "key"), ({"key_required": False}, "key_required"),
                        ({"signature": {"type": "standard_webhooks", "secret": "not-a-whsec-secret"}}, "signature"),
                        ({"signature": {"header": "X-Sig"}}, "signature"), ({"key_required": "maybe"}, "key_required")):
        response = client.patch(f"/v1/sources/{source_id}", json=body, headers=admin)
        assert response.status_code == 422, (body, response.get_json())
        error = response.get_json()["error"]
        assert error["code"] == "validation_failed" and field in error["details"], (body, error)
    assert db.hget(keys.sources, source_id) == stored
    assert client.patch("/v1/sources/src_nope", json={"name": "x"}, headers=admin).status_code == 404
    assert client.patch(f"/v1/sources/{source_id}", json=["name"], headers=admin).status_code == 422
    assert client.patch(f"/v1/sources/{source_id}", json={"name": "x"}).status_code == 401
