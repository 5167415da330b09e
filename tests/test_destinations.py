"""Destinations: the API (create, show, list by page, patch, delete), and what disabling, enabling and
deleting a destination does to its pending deliveries."""

from __future__ import annotations

import json

from hookgate.deliveries import STATUSES
from hookgate.delivery.ticker import trim_indexes
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


def _keys_without_ttl(db) -> set[str]:
    with db.pipeline(transaction=False) as pipe:
        names = list(db.scan_iter(count=1000))
        for name in names:
            pipe.ttl(name)
        return {name for name, ttl in zip(names, pipe.execute(), strict=True) if ttl == -1}


def test_a_long_run_leaves_no_key_without_a_ttl_but_configuration_and_bounded_indexes(
    client, admin, make_source, make_destination, post_events, receiver, work, db, rt
):
    """Issue 12, point 4: every key is configuration, an index bounded by the retention window or by the
    destinations that exist, RQ's own, or expires. A deleted destination's delivery index expired with
    retention (it was kept forever: the trimmer visits only the destinations that exist)."""
    source_id, key = make_source()
    kept = make_destination(receiver.url, name="kept")
    failing = make_destination("http://127.0.0.1:9/", name="failing")
    deleted = make_destination(receiver.url, name="deleted")
    for round_ in range(3):
        post_events(source_id, key, [{"name": f"r{round_}-{i}"} for i in range(5)])
        work()
    assert client.delete(f"/v1/destinations/{deleted['id']}", headers=admin).status_code == 204
    post_events(source_id, key, {"name": "after"})
    work()
    trim_indexes(rt)
    configuration = {keys.sources, keys.destinations, keys.destination_ids, keys.auth_profiles, keys.policies,
                     keys.presets, keys.admin_tokens, keys.admin_token_hashes, keys.config_version}
    queue = {keys.deliveries, keys.leases, keys.lease_holders, keys.due, keys.notify,
             *(keys.status(status) for status in STATUSES), keys.events, keys.source_events(source_id),
             keys.metrics_ingest(source_id)}
    per_destination = {name for d in (kept, failing)
                       for name in (keys.destination_deliveries(d["id"]), keys.pending(d["id"]),
                                    keys.failing_since(d["id"]), keys.metrics_attempts(d["id"]),
                                    keys.metrics_latency(d["id"]))}
    unbounded = {name for name in _keys_without_ttl(db) - configuration - queue - per_destination
                 if not name.startswith("rq:")}
    assert unbounded == set()
    assert db.zcard(keys.destination_deliveries(kept["id"])) == 16
    left = db.ttl(keys.destination_deliveries(deleted["id"]))
    assert 0 < left <= rt.settings.event_retention_s and db.exists(keys.failing_since(deleted["id"])) == 0
    for counters in (keys.metrics_attempts(deleted["id"]), keys.metrics_latency(deleted["id"])):
        assert 0 < db.ttl(counters) <= rt.settings.event_retention_s


def _sent_by_redis(db) -> int:
    return int(db.info("stats")["total_net_output_bytes"])


def test_a_page_of_destinations_reads_only_the_destinations_it_returns(client, admin, make_destination, receiver,
                                                                        db):
    """Issue 13: listing read every destination for each page (5,000: 3.7 MB a page). A page of 10 of
    400 now reads those 10 records (and 11 ids), not the 400; every one is listed once, in id order,
    also those written before the index existed, and a deleted one is gone from the list."""
    made = make_destination(receiver.url, name="made")
    template = json.loads(db.hget(keys.destinations, made["id"]))
    with db.pipeline(transaction=False) as pipe:  # as an older hookgate stored them: no index
        for i in range(399):
            ident = f"dst_{i:04d}legacy"
            pipe.hset(keys.destinations, ident, json.dumps({**template, "id": ident, "name": f"d{i}"}))
        pipe.execute()
    client.get("/v1/destinations?limit=10", headers=admin)  # the first page after an upgrade rebuilds the index
    before = _sent_by_redis(db)
    page = client.get("/v1/destinations?limit=10", headers=admin).get_json()
    record = len(db.hget(keys.destinations, made["id"]))
    assert len(page["items"]) == 10 and _sent_by_redis(db) - before < 20 * record  # was 400 records
    assert client.delete("/v1/destinations/dst_0005legacy", headers=admin).status_code == 204
    seen, cursor = [], ""
    for _ in range(50):
        body = client.get(f"/v1/destinations?limit=50&cursor={cursor}", headers=admin).get_json()
        seen += [d["id"] for d in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(set(db.hkeys(keys.destinations))) and len(seen) == 399


def test_a_trial_renders_the_sample_as_a_real_event_is_rendered(client, admin, make_source, make_destination,
                                                                  post_events, receiver, work):
    """The trial's sample has the canonical shape (source, external_id, received_at; it had source_id),
    so the default body has the same keys and {{ event.source }} renders in a test as in production."""
    source_id, key = make_source()
    canonical = make_destination(receiver.url + "/canonical")
    templated = make_destination(receiver.url + "/templated",
                                 template='{"source": {{ event.source }}, "received": {{ event.received_at }}}')
    post_events(source_id, key, {"id": "order-1", "name": "order_completed"})
    work()
    real = {r.path: json.loads(r.body) for r in receiver.wait_for(2)}
    trials = [client.post(f"/v1/destinations/{d['id']}/test", json={}, headers=admin) for d in (canonical, templated)]
    assert all(t.status_code == 200 for t in trials), [t.get_json() for t in trials]
    sample, sample_templated = (json.loads(t.get_json()["request"]["body"]) for t in trials)
    assert set(sample) == set(real["/canonical"])
    assert real["/templated"]["source"] == source_id and real["/templated"]["received"]
    assert set(sample_templated) == {"source", "received"}
    assert sample_templated["source"] == sample["source"] == "src_sample" and sample_templated["received"]
