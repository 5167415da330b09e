"""Destinations: the API (create, show, list by page, patch, delete), and what disabling, enabling and
deleting a destination does to its pending deliveries."""

from __future__ import annotations

import json

from hookgate.store import keys


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


def test_a_patch_cannot_make_a_form_destination_batch(client, admin, make_destination, receiver):
    """Regression: a PATCH could give a form destination a batch, which a POST refuses."""
    form = make_destination(receiver.url, format="form")
    response = client.patch(f"/v1/destinations/{form['id']}", json={"batch": {"size": 2}}, headers=admin)
    assert response.status_code == 422 and "batch" in response.get_json()["error"]["details"]


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


def test_pending_deliveries_of_a_disabled_then_deleted_destination_are_closed(client, admin, make_source,
                                                                          make_destination, post_events, work, db):
    """Regression: deleting a destination while it was disabled left its deliveries pending."""
    source_id, key = make_source()
    destination = make_destination("http://127.0.0.1:9/")
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    client.post(f"/v1/destinations/{destination['id']}/disable", headers=admin)
    work()  # disabled: the drain leaves it waiting
    client.delete(f"/v1/destinations/{destination['id']}", headers=admin)
    work()
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    assert delivery["status"] == "skipped" and db.zcard(keys.pending(destination["id"])) == 0
