"""The walk of an event: source → ingest → route → RQ drain job → receiver, and what is recorded."""

from __future__ import annotations

import json

import pytest

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


def test_an_event_reaches_its_destination_rendered_with_a_webhook_id(
    client, make_source, make_destination, post_events, receiver, work, db
):
    source_id, key = make_source()
    destination = make_destination(
        receiver.url + "/hook",
        events=["survey_response", "journey.*"],
        template='{"who": {{ event.user_id | tojson }}, "score": {{ event.data.score }}, "to": {{ destination.name | tojson }}}',
    )
    response = post_events(source_id, key, {"name": "survey_response", "user_id": "u1", "data": {"score": 9}})
    assert response.status_code == 202
    body = response.get_json()
    assert body["accepted"] == 1 and len(body["ids"]) == 1
    event_id = body["ids"][0]
    # Acknowledged only once stored: the event and its pending delivery are in Redis before any worker ran.
    assert json.loads(db.get(keys.event(event_id)))["name"] == "survey_response"
    assert db.zcard(keys.pending(destination["id"])) == 1
    assert receiver.requests == []

    work()
    [request] = receiver.wait_for(1)
    assert request.method == "POST" and request.path == "/hook"
    assert json.loads(request.body) == {"who": "u1", "score": 9, "to": "dest"}
    assert request.header("webhook-id") == event_id
    assert request.header("Content-Type") == "application/json"


def test_a_list_of_events_fans_out_to_every_subscribed_destination(
    make_source, make_destination, post_events, receiver, work
):
    source_id, key = make_source()
    surveys = make_destination(receiver.url + "/surveys", events=["survey_response"])
    journeys = make_destination(receiver.url + "/journeys", events=["journey.*"])
    everything = make_destination(receiver.url + "/all", events=["*"])
    make_destination(receiver.url + "/never", events=["feedback"])
    events = [
        {"name": "survey_response", "user_id": "u1"},
        {"name": "journey.created", "user_id": "u2"},
        {"name": "journey.deleted", "user_id": "u3"},
        {"name": "journeys_overview"},  # not journey.*: only "*" gets it
    ]
    response = post_events(source_id, key, events)
    assert response.status_code == 202 and response.get_json()["accepted"] == 4
    work()
    arrived = receiver.wait_for(7)
    by_path: dict[str, list[str]] = {}
    for request in arrived:
        by_path.setdefault(request.path, []).append(json.loads(request.body)["name"])
    assert sorted(by_path["/surveys"]) == ["survey_response"]
    assert sorted(by_path["/journeys"]) == ["journey.created", "journey.deleted"]
    assert sorted(by_path["/all"]) == sorted(e["name"] for e in events)
    assert "/never" not in by_path
    assert surveys["id"] != journeys["id"] != everything["id"]


def test_default_body_is_the_canonical_event_as_json(make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url)
    event_id = post_events(source_id, key, {"name": "purchase", "user_id": "u9", "data": {"sku": "A1"},
                                            "profile": {"email": "a@example.com"}}).get_json()["ids"][0]
    work()
    [request] = receiver.wait_for(1)
    event = json.loads(request.body)
    assert event["id"] == event_id and event["source"] == source_id
    assert event["name"] == "purchase" and event["category"] == "activity"
    assert event["data"] == {"sku": "A1"} and event["profile"] == {"email": "a@example.com"}
    assert event["time"].endswith("Z")


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_each_method_is_sent_as_configured(method, make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url + "/m", method=method.lower())
    post_events(source_id, key, {"name": "ping"})
    work()
    [request] = receiver.wait_for(1)
    assert request.method == method
    if method == "GET":
        assert request.body == b""
    else:
        assert json.loads(request.body)["name"] == "ping"


def test_each_format_renders_and_declares_its_content_type(
    make_source, make_destination, post_events, receiver, work
):
    source_id, key = make_source()
    make_destination(receiver.url + "/json", format="json")
    make_destination(receiver.url + "/xml", format="xml")
    make_destination(receiver.url + "/text", format="text")
    make_destination(receiver.url + "/form", format="form")
    make_destination(receiver.url + "/form-custom", format="form",
                     template='{"To": {{ event.data.phone | tojson }}, "Body": "Hi {{ event.profile.first_name }}"}')
    post_events(source_id, key, {"name": "signup", "user_id": "u<1>", "data": {"phone": "+15550001"},
                                 "profile": {"first_name": "Ada"}})
    work()
    arrived = {r.path: r for r in receiver.wait_for(5)}
    assert arrived["/json"].header("Content-Type") == "application/json"
    assert json.loads(arrived["/json"].body)["user_id"] == "u<1>"
    assert arrived["/xml"].header("Content-Type") == "application/xml"
    assert b"<user_id>u&lt;1&gt;</user_id>" in arrived["/xml"].body and arrived["/xml"].body.startswith(b"<event>")
    assert arrived["/text"].header("Content-Type").startswith("text/plain")
    assert arrived["/text"].body.startswith(b"signup (activity) user=u<1>")
    assert arrived["/form"].header("Content-Type") == "application/x-www-form-urlencoded"
    assert b"name=signup" in arrived["/form"].body and b"data.phone=%2B15550001" in arrived["/form"].body
    assert arrived["/form-custom"].body == b"To=%2B15550001&Body=Hi+Ada"


def test_destination_headers_are_sent(make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url, headers={"X-Team": "growth", "Authorization": "Bearer abc"})
    post_events(source_id, key, {"name": "ping"})
    work()
    [request] = receiver.wait_for(1)
    assert request.header("X-Team") == "growth" and request.header("Authorization") == "Bearer abc"


def test_disabled_destination_gets_nothing_and_its_backlog_flows_when_enabled(
    client, admin, make_source, make_destination, post_events, receiver, work
):
    source_id, key = make_source()
    destination = make_destination(receiver.url)
    post_events(source_id, key, {"name": "first"})  # pending before it was disabled
    assert client.post(f"/v1/destinations/{destination['id']}/disable", headers=admin).get_json()["enabled"] is False
    post_events(source_id, key, {"name": "second"})  # not routed: disabled
    work()
    assert receiver.requests == []
    assert client.post(f"/v1/destinations/{destination['id']}/enable", headers=admin).get_json()["enabled"] is True
    work()
    names = [json.loads(r.body)["name"] for r in receiver.wait_for(1)]
    assert names == ["first"]


def test_routing_follows_destination_changes(client, admin, make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    destination = make_destination(receiver.url, events=["a"])
    post_events(source_id, key, {"name": "b"})
    response = client.patch(f"/v1/destinations/{destination['id']}", json={"events": ["b"]}, headers=admin)
    assert response.status_code == 200 and response.get_json()["events"] == ["b"]
    post_events(source_id, key, {"name": "b"})
    work()
    assert len(receiver.wait_for(1)) == 1
    client.delete(f"/v1/destinations/{destination['id']}", headers=admin)
    post_events(source_id, key, {"name": "b"})
    work()
    assert len(receiver.requests) == 1


def test_pending_deliveries_of_a_deleted_destination_are_skipped_not_sent(
    client, admin, make_source, make_destination, post_events, receiver, work
):
    source_id, key = make_source()
    destination = make_destination(receiver.url)
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    client.delete(f"/v1/destinations/{destination['id']}", headers=admin)
    work()
    assert receiver.requests == []
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    assert delivery["status"] == "skipped" and "deleted" in delivery["last_error"]


def test_destination_crud(client, admin, receiver):
    created = client.post("/v1/destinations", json={
        "name": "crm", "url": receiver.url, "events": ["feedback"], "method": "put", "format": "xml",
    }, headers=admin)
    assert created.status_code == 201
    destination = created.get_json()
    assert destination["method"] == "PUT" and destination["timeout_s"] == 5.0 and destination["enabled"] is True
    assert destination["template"] is None and "toxml" in destination["template_in_use"]
    did = destination["id"]
    assert client.get(f"/v1/destinations/{did}", headers=admin).get_json()["name"] == "crm"
    listed = client.get("/v1/destinations", headers=admin).get_json()
    assert [d["id"] for d in listed["items"]] == [did] and listed["next_cursor"] is None
    patched = client.patch(f"/v1/destinations/{did}", json={"timeout_s": 2.5}, headers=admin).get_json()
    assert patched["timeout_s"] == 2.5 and patched["method"] == "PUT"  # untouched fields stay
    assert client.delete(f"/v1/destinations/{did}", headers=admin).status_code == 204
    assert client.get(f"/v1/destinations/{did}", headers=admin).status_code == 404


def test_destination_list_is_paginated(client, admin, make_destination, receiver):
    ids = [make_destination(receiver.url, name=f"d{i}")["id"] for i in range(5)]
    first = client.get("/v1/destinations?limit=2", headers=admin).get_json()
    second = client.get(f"/v1/destinations?limit=2&cursor={first['next_cursor']}", headers=admin).get_json()
    third = client.get(f"/v1/destinations?limit=2&cursor={second['next_cursor']}", headers=admin).get_json()
    seen = [d["id"] for page in (first, second, third) for d in page["items"]]
    assert seen == sorted(ids) and third["next_cursor"] is None


def test_events_posted_together_are_delivered_in_order(make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url)
    post_events(source_id, key, [{"name": f"e{n:03d}"} for n in range(200)])  # one transaction, one timestamp
    work()
    names = [json.loads(r.body)["name"] for r in receiver.wait_for(200)]
    assert names == [f"e{n:03d}" for n in range(200)]
