"""The events API (issue 13, point 4): ``GET /v1/events`` filtered by source, name, category and time
window (RFC 3339 or epoch seconds or milliseconds), newest first behind a cursor; ``GET /v1/events/<id>``
with its deliveries; the event indexes bounded by the retention window. Events come in through the
ingest route and go out to real receivers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

from hookgate import create_app
from hookgate.delivery.ticker import trim_indexes
from hookgate.store import keys

from .receiver import Reply


def received_ms(event: dict) -> int:
    return int(dt.datetime.fromisoformat(event["received_at"]).timestamp() * 1000)


def _ingest(post_events, source_id: str, key: str, payload) -> list[str]:
    response = post_events(source_id, key, payload)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["ids"]


def _list(client, admin, query: str = "") -> dict:
    response = client.get(f"/v1/events?{query}", headers=admin)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _all_pages(client, admin, query: str, cursor: str = "") -> list[str]:
    seen = []
    for _ in range(100):
        body = _list(client, admin, f"{query}&cursor={cursor}")
        seen += [e["id"] for e in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the cursor never ended")


def test_events_are_listed_newest_first_and_filtered_by_source_name_and_category(client, admin, make_source,
                                                                                 post_events):
    shop, shop_key = make_source("shop")
    crm, crm_key = make_source("crm")
    first = _ingest(post_events, shop, shop_key, [{"name": "order.paid"}, {"name": "journey.started"}])
    second = _ingest(post_events, crm, crm_key, [{"name": "order.paid"}, {"name": "survey_response"}])
    third = _ingest(post_events, shop, shop_key, {"name": "order.paid", "category": "feedback"})
    everything = _list(client, admin)
    # newest first: by received time, and within one request in the order the events came
    assert [e["id"] for e in everything["items"]] == (first + second + third)[::-1]
    assert everything["next_cursor"] is None
    shown = client.get(f"/v1/events/{third[0]}", headers=admin).get_json()
    assert everything["items"][0] == {k: v for k, v in shown.items() if k != "deliveries"}  # the canonical event
    assert [e["id"] for e in _list(client, admin, f"source_id={shop}")["items"]] == (first + third)[::-1]
    assert [e["id"] for e in _list(client, admin, "name=order.paid")["items"]] == [third[0], second[0], first[0]]
    assert [e["id"] for e in _list(client, admin, f"name=order.paid&source_id={crm}")["items"]] == [second[0]]
    assert [e["id"] for e in _list(client, admin, "category=journey")["items"]] == [first[1]]
    assert [e["id"] for e in _list(client, admin, "category=feedback&name=order.paid")["items"]] == third
    assert _list(client, admin, "source_id=src_unknown")["items"] == []


def test_pages_cover_every_event_once_while_events_keep_arriving(client, admin, make_source, post_events):
    source_id, key = make_source()
    old = _ingest(post_events, source_id, key, [{"name": f"old-{i}"} for i in range(8)])
    first = _list(client, admin, "limit=3")
    assert [e["id"] for e in first["items"]] == old[::-1][:3] and first["next_cursor"]
    new = _ingest(post_events, source_id, key, [{"name": f"new-{i}"} for i in range(5)])
    second = _list(client, admin, f"limit=3&cursor={first['next_cursor']}")
    _ingest(post_events, source_id, key, {"name": "newer"})
    third = _list(client, admin, f"limit=3&cursor={second['next_cursor']}")
    assert [e["id"] for e in second["items"] + third["items"]] == old[::-1][3:] and third["next_cursor"] is None
    assert _all_pages(client, admin, "limit=200")[1:6] == new[::-1]  # a new list starts at the newest


def test_a_time_window_is_taken_as_rfc_3339_or_epoch_seconds_or_milliseconds(client, admin, make_source,
                                                                             post_events, db):
    source_id, key = make_source()
    early = _ingest(post_events, source_id, key, [{"name": "early"}, {"name": "early too"}])
    time.sleep(0.05)
    late = _ingest(post_events, source_id, key, {"name": "late"})
    early_ms = received_ms(client.get(f"/v1/events/{early[0]}", headers=admin).get_json())
    late_ms = received_ms(client.get(f"/v1/events/{late[0]}", headers=admin).get_json())
    assert late_ms > early_ms
    late_rfc = dt.datetime.fromtimestamp(late_ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
    late_plus_one = dt.datetime.fromtimestamp(late_ms / 1000, dt.timezone(dt.timedelta(hours=1))).isoformat()

    def ids(query: str) -> list[str]:
        return [e["id"] for e in _list(client, admin, query)["items"]]

    assert ids(f"since={late_rfc}".replace("+", "%2B")) == late
    assert ids(f"since={late_plus_one}".replace("+", "%2B")) == late  # any offset: the same moment
    assert ids(f"until={early_ms}") == early[::-1]  # epoch milliseconds, inclusive
    assert ids(f"since={early_ms}&until={late_ms - 1}&limit=1") == [early[1]]
    assert ids(f"since={early_ms // 1000 - 1}&until={late_ms // 1000 + 1}") == (early + late)[::-1]  # seconds
    assert ids(f"until={early_ms // 1000 - 1}") == []
    # a page of a window goes on inside it
    page = _list(client, admin, f"until={late_ms}&since={early_ms}&limit=2")
    assert _all_pages(client, admin, f"until={late_ms}&since={early_ms}&limit=2", page["next_cursor"]) == [early[0]]


def test_bad_queries_are_a_422_naming_the_field(client, admin):
    for query, field in (("since=yesterday", "since"), ("until=2026-11-20T00:00:00", "until"),
                         ("since=2026-11-20T00:00:00Z&until=2026-11-19T00:00:00Z", "until"),
                         ("category=nope", "category"), ("limit=0", "limit"), ("limit=201", "limit"),
                         ("cursor=garbage", "cursor"), ("since=true", "since")):
        response = client.get(f"/v1/events?{query}", headers=admin)
        assert response.status_code == 422, query
        error = response.get_json()["error"]
        assert error["code"] == "validation_failed" and list(error["details"]) == [field], (query, error)
    assert client.get("/v1/events").status_code == 401


def test_one_event_with_its_deliveries_and_their_statuses(client, admin, make_source, make_destination, post_events,
                                                         receiver, answering, work, db):
    source_id, key = make_source()
    good = make_destination(receiver.url, name="good")
    bad = make_destination(answering(Reply(status=503)).url, name="bad")
    [event_id] = _ingest(post_events, source_id, key, {"name": "order.paid", "id": "ext-1", "data": {"n": 1}})
    work()
    shown = client.get(f"/v1/events/{event_id}", headers=admin).get_json()
    assert shown["id"] == event_id and shown["external_id"] == "ext-1" and shown["data"] == {"n": 1}
    assert shown["source"] == source_id and shown["name"] == "order.paid"
    by_destination = {d["destination_id"]: d for d in shown["deliveries"]}
    assert set(by_destination) == {good["id"], bad["id"]}
    assert by_destination[good["id"]]["status"] == "delivered"
    assert by_destination[good["id"]]["attempts"] == 1 and by_destination[good["id"]]["last_status_code"] == 200
    assert by_destination[bad["id"]]["status"] == "bounced" and by_destination[bad["id"]]["attempts"] == 1
    assert by_destination[bad["id"]]["last_status_code"] == 503 and by_destination[bad["id"]]["next_attempt_at"]
    for delivery in shown["deliveries"]:
        assert delivery["id"].startswith("dlv_") and delivery["created_at"] and delivery["updated_at"]
        assert "attempt_log" not in delivery


def test_an_unknown_or_expired_event_is_a_404_and_leaves_the_list(client, admin, make_source, post_events, db):
    source_id, key = make_source()
    kept, gone = _ingest(post_events, source_id, key, [{"name": "kept"}, {"name": "gone"}])
    missing = client.get("/v1/events/evt_nope", headers=admin)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    db.pexpire(keys.event(gone), 1)
    for _ in range(100):
        if not db.exists(keys.event(gone)):
            break
        time.sleep(0.01)
    assert client.get(f"/v1/events/{gone}", headers=admin).status_code == 404
    assert [e["id"] for e in _list(client, admin)["items"]] == [kept]  # its index entry waits for the trimmer


def test_the_event_indexes_keep_only_the_retention_window(settings, make_source, post_events, admin, client, db):
    """Every event's index and each source's are trimmed to the retention window like the delivery
    indexes (an index without a TTL must be bounded); a deleted source's index expires with it."""
    short = create_app(dataclasses.replace(settings, event_retention_s=1.0))
    rt = short.extensions["hookgate"]
    try:
        short_client = short.test_client()
        source_id, key = make_source()
        other_id, other_key = make_source("other")

        def ingest(source: str, secret: str, name: str) -> list[str]:
            response = short_client.post(f"/v1/sources/{source}/events", json={"name": name},
                                         headers={"X-Hookgate-Key": secret})
            assert response.status_code == 202
            return response.get_json()["ids"]

        ingest(source_id, key, "old")
        ingest(other_id, other_key, "old")
        time.sleep(1.1)
        [fresh] = ingest(source_id, key, "fresh")
        assert db.zcard(keys.events) == 3 and db.zcard(keys.source_events(source_id)) == 2
        trim_indexes(rt)
        assert db.zrange(keys.events, 0, -1) == [fresh]
        assert db.zrange(keys.source_events(source_id), 0, -1) == [fresh]
        assert db.zcard(keys.source_events(other_id)) == 0
        ingest(other_id, other_key, "before its source goes")
        assert short_client.delete(f"/v1/sources/{other_id}", headers=admin).status_code == 204
        assert 0 < db.ttl(keys.source_events(other_id)) <= 1
    finally:
        rt.close()


def test_a_filter_that_matches_little_reads_a_bounded_part_of_the_index_a_request(client, admin, make_source,
                                                                                 post_events):
    """A name few events have: one request reads at most ``SCAN_ROUNDS`` batches and hands back a
    cursor to go on from, rather than reading every event kept."""
    source_id, key = make_source()
    [rare] = _ingest(post_events, source_id, key, {"name": "rare"})
    for _ in range(3):
        _ingest(post_events, source_id, key, [{"name": "common"} for _ in range(1000)])
    first = _list(client, admin, "name=rare&limit=1")
    assert first["items"] == [] and first["next_cursor"]
    rest = _all_pages(client, admin, "name=rare&limit=1", first["next_cursor"])
    assert rest == [rare]
