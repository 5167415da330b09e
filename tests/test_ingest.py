"""Sources in their platforms' shapes, hardened ingestion (signatures, bulk, idempotency, retention),
all through the real HTTP ingest path into deliveries a local receiver sees."""

from __future__ import annotations

import json
import time
from datetime import UTC

import pytest
from standardwebhooks import Webhook

from hookgate.signatures import sign_hmac
from hookgate.store import keys

from .test_adapters import EXAMPLES, SEEDS

XML_EXAMPLES = [("webengage.feedback.xml", "FEEDBACK_SUBMIT", "feedback"),
                ("webengage.survey_response.xml", "SURVEY_RESPONSE_SUBMIT", "survey_response")]


def raw_seed(name: str) -> bytes:
    text = (SEEDS / name).read_text()
    if name == "crossengage.seed001.custom_event.json":
        text = text.replace("xxx:xxx", '"xxx": "xxx"')  # the document's placeholder is not JSON
    return text.encode()


@pytest.mark.parametrize("name,kind,expected", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_each_platform_example_is_accepted_as_sent_and_delivered(
    name, kind, expected, client, make_source, make_destination, receiver, work
):
    source_id, key = make_source(kind=kind)
    make_destination(receiver.url)
    response = client.post(f"/v1/sources/{source_id}/events", data=raw_seed(name),
                           content_type="application/json", headers={"X-Hookgate-Key": key})
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["accepted"] == len(expected)
    work()
    arrived = [json.loads(r.body) for r in receiver.wait_for(len(expected))]
    assert sorted((e["name"], e["category"], e["channel"]) for e in arrived) == \
        sorted((n, c, ch) for n, c, _, _, ch in expected)
    assert all(e["source"] == source_id for e in arrived)


@pytest.mark.parametrize("name,event_name,category", XML_EXAMPLES)
def test_webengage_xml_feedback_and_surveys_are_accepted(name, event_name, category, client, make_source,
                                                         make_destination, receiver, work):
    source_id, key = make_source(kind="webengage")
    make_destination(receiver.url, events=[category])
    response = client.post(f"/v1/sources/{source_id}/events", data=(SEEDS / name).read_bytes(),
                           content_type="application/xml", headers={"X-Hookgate-Key": key})
    assert response.status_code == 202, response.get_json()
    work()
    [request] = receiver.wait_for(1)
    event = json.loads(request.body)
    assert event["name"] == event_name and event["category"] == category


def test_xml_bombs_and_xml_for_json_only_kinds_are_refused(client, make_source):
    source_id, key = make_source(kind="webengage")
    bomb = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><feedback>&b;</feedback>'
    response = client.post(f"/v1/sources/{source_id}/events", data=bomb, content_type="application/xml",
                           headers={"X-Hookgate-Key": key})
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "validation_failed"
    generic_id, generic_key = make_source()
    response = client.post(f"/v1/sources/{generic_id}/events", data=b"<a/>", content_type="application/xml",
                           headers={"X-Hookgate-Key": generic_key})
    assert response.status_code == 415


def test_bulk_reports_each_item_and_one_bad_item_does_not_reject_the_others(
    client, make_source, make_destination, receiver, work, post_events
):
    source_id, key = make_source()
    make_destination(receiver.url)
    response = post_events(source_id, key, [{"name": "a"}, {"name": 5}, {"name": "c"}, "nope"])
    assert response.status_code == 202
    body = response.get_json()
    assert (body["accepted"], body["rejected"]) == (2, 2) and len(body["ids"]) == 2
    assert [(r["index"], r["status"]) for r in body["results"]] == \
        [(0, "accepted"), (1, "rejected"), (2, "accepted"), (3, "rejected")]
    assert "name" in body["results"][1]["errors"]
    work()
    assert sorted(json.loads(r.body)["name"] for r in receiver.wait_for(2)) == ["a", "c"]
    # all or nothing when asked
    atomic = client.post(f"/v1/sources/{source_id}/events?atomic=true", json=[{"name": "a"}, {"name": 5}],
                         headers={"X-Hookgate-Key": key})
    assert atomic.status_code == 422 and set(atomic.get_json()["error"]["details"]) == {"1"}
    work()
    assert len(receiver.requests) == 2


def test_a_thousand_events_in_one_request(post_events, make_source, make_destination, receiver, db):
    source_id, key = make_source()
    destination = make_destination(receiver.url)
    response = post_events(source_id, key, [{"name": "bulk", "data": {"n": n}} for n in range(1000)])
    assert response.status_code == 202 and response.get_json()["accepted"] == 1000
    assert db.zcard(keys.pending(destination["id"])) == 1000


def test_a_repeated_event_id_is_not_delivered_twice(post_events, make_source, make_destination, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url)
    first = post_events(source_id, key, {"id": "order-1", "name": "purchase"}).get_json()
    again = post_events(source_id, key, {"id": "order-1", "name": "purchase"}).get_json()
    assert first["accepted"] == 1 and again["accepted"] == 0 and again["duplicates"] == 1
    assert again["ids"] == first["ids"] and again["results"][0]["status"] == "duplicate"
    mixed = post_events(source_id, key, [{"id": "order-1", "name": "purchase"}, {"id": "order-2", "name": "x"}])
    assert [r["status"] for r in mixed.get_json()["results"]] == ["duplicate", "accepted"]
    other_source, other_key = make_source("other")  # ids are per source
    assert post_events(other_source, other_key, {"id": "order-1", "name": "purchase"}).get_json()["accepted"] == 1
    work()
    names = sorted(json.loads(r.body)["external_id"] for r in receiver.wait_for(3))
    assert names == ["order-1", "order-1", "order-2"]  # one per source, never twice for the same source


def test_an_idempotency_key_replays_the_first_answer(client, make_source, make_destination, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url)
    headers = {"X-Hookgate-Key": key, "Idempotency-Key": "req-42"}
    url = f"/v1/sources/{source_id}/events"
    first = client.post(url, json=[{"name": "a"}, {"name": "b"}], headers=headers)
    again = client.post(url, json=[{"name": "a"}, {"name": "b"}], headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    work()
    receiver.wait_for(2)
    assert len(receiver.requests) == 2


def test_events_expire_after_the_retention_window(post_events, make_source, make_destination, receiver, db, rt):
    source_id, key = make_source()
    make_destination(receiver.url)
    event_id = post_events(source_id, key, {"id": "x1", "name": "a"}).get_json()["ids"][0]
    retention = rt.settings.event_retention_s
    assert retention - 5 <= db.ttl(keys.event(event_id)) <= retention
    assert retention - 5 <= db.ttl(keys.idempotency(source_id, "x1")) <= retention
    [delivery_id] = db.lrange(keys.event_deliveries(event_id), 0, -1)
    assert retention - 5 <= db.ttl(keys.delivery(delivery_id)) <= retention


# --- source signatures --------------------------------------------------------------------------------


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
    assert "signing_secret" not in client.get(f"/v1/sources/{source['id']}",
                                              headers={"Authorization": "Bearer test-admin-token-0123456789"}).get_json()
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


def test_a_source_must_require_a_key_or_a_signature(client, admin):
    response = client.post("/v1/sources", json={"name": "open", "key_required": False}, headers=admin)
    assert response.status_code == 422 and "key_required" in response.get_json()["error"]["details"]
    response = client.post("/v1/sources", json={"name": "s", "signature": {"type": "standard_webhooks",
                                                                             "secret": "not-a-whsec-secret"}},
                           headers=admin)
    assert response.status_code == 422
