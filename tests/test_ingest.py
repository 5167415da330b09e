"""Ingest: each platform's payloads as sent (JSON and XML), bulk requests, duplicates, idempotency keys
and retention, all through the real HTTP ingest path into deliveries a local receiver sees (signed
sources are in test_sources.py)."""

from __future__ import annotations

import json

import pytest

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


def test_events_expire_after_the_retention_window(post_events, make_source, make_destination, receiver, db, rt):
    source_id, key = make_source()
    make_destination(receiver.url)
    event_id = post_events(source_id, key, {"id": "x1", "name": "a"}).get_json()["ids"][0]
    retention = rt.settings.event_retention_s
    assert retention - 5 <= db.ttl(keys.event(event_id)) <= retention
    assert retention - 5 <= db.ttl(keys.idempotency(source_id, "x1")) <= retention
    [delivery_id] = db.lrange(keys.event_deliveries(event_id), 0, -1)
    assert retention - 5 <= db.ttl(keys.delivery(delivery_id)) <= retention


