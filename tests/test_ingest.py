"""Ingest: each platform's payloads as sent (JSON and XML), bulk requests, duplicates, idempotency keys
and retention, all through the real HTTP ingest path into deliveries a local receiver sees (signed
sources are in test_sources.py)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

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
    bomb = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            b'<feedback>&b;</feedback>')
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


def test_a_standard_webhooks_retry_under_the_same_webhook_id_is_a_duplicate(client, admin, make_destination,
                                                                            receiver, work):
    """As Svix retries: the same webhook-id and body, a fresh timestamp and signature. A 2xx with the
    original ids (a 401 made senders retry again, or disable the endpoint); delivered once."""
    make_destination(receiver.url)
    source = client.post("/v1/sources", json={"name": "svix", "signature": {"type": "standard_webhooks"},
                                              "key_required": False}, headers=admin).get_json()
    sender = Webhook(source["signing_secret"])
    url = f"/v1/sources/{source['id']}/events"
    body = '{"name": "order.paid"}'  # no event id of its own: only the webhook-id tells a repeat

    def post(msg_id: str, stamp: int):
        return client.post(url, data=body, content_type="application/json", headers={
            "webhook-id": msg_id, "webhook-timestamp": str(stamp),
            "webhook-signature": sender.sign(msg_id, datetime.fromtimestamp(stamp, tz=UTC), body)})

    now = int(time.time())
    first = post("msg_2b", now - 30)
    retry = post("msg_2b", now)  # a fresh timestamp, so a new signature
    exact = post("msg_2b", now)  # the very same request again
    assert first.status_code == 202 and first.get_json()["accepted"] == 1
    for again in (retry, exact):
        assert again.status_code == 202, again.get_json()
        assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    other = post("msg_other", now).get_json()  # another message is new
    assert other["accepted"] == 1 and other["ids"] != first.get_json()["ids"]
    work()
    receiver.wait_for(2)
    assert sorted(json.loads(r.body)["id"] for r in receiver.requests) == sorted(first.get_json()["ids"] + other["ids"])


def test_an_exact_repeat_of_an_hmac_signed_request_is_a_duplicate(client, admin, make_destination, receiver, work):
    make_destination(receiver.url)
    source = client.post("/v1/sources", json={"name": "h", "signature": {"type": "hmac_sha256"},
                                              "key_required": False}, headers=admin).get_json()
    body, now = b'{"name": "signed"}', int(time.time())
    headers = {"X-Hookgate-Timestamp": str(now), "X-Hookgate-Signature": sign_hmac(source["signing_secret"], now, body)}
    url = f"/v1/sources/{source['id']}/events"
    first = client.post(url, data=body, content_type="application/json", headers=headers)
    again = client.post(url, data=body, content_type="application/json", headers=headers)
    assert first.status_code == again.status_code == 202, again.get_json()
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    work()
    receiver.wait_for(1)
    assert len(receiver.requests) == 1


def test_events_expire_after_the_retention_window(post_events, make_source, make_destination, receiver, db, rt):
    source_id, key = make_source()
    make_destination(receiver.url)
    event_id = post_events(source_id, key, {"id": "x1", "name": "a"}).get_json()["ids"][0]
    retention = rt.settings.event_retention_s
    assert retention - 5 <= db.ttl(keys.event(event_id)) <= retention
    assert retention - 5 <= db.ttl(keys.idempotency(source_id, "x1")) <= retention
    [delivery_id] = db.lrange(keys.event_deliveries(event_id), 0, -1)
    assert retention - 5 <= db.ttl(keys.delivery(delivery_id)) <= retention


