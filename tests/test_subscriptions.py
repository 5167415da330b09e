"""Subscriptions and routing: names and patterns, categories, channels, sources, excluded origins, payload
conditions and required fields — through real ingest, real workers and a real receiver; fan-out; and the
routing index (exact names, patterns, disabled destinations, rebuilt when the configuration changes)."""

from __future__ import annotations

import json

import pytest

from hookgate.destinations import DestinationStore
from hookgate.filters import compile_condition, validate_condition
from hookgate.routing import Router, RoutingIndex

from .test_adapters import SEEDS

PURCHASE = {"name": "purchase", "user_id": "u1", "origin": "api", "channel": "email",
            "data": {"amount": 120, "currency": "EUR", "tags": ["vip"], "sku": "A-1"},
            "profile": {"tier": "gold", "email": "a@example.com"}, "system": {"campaign_id": "c9"}}


def arrived_names(receiver, count):
    return sorted(json.loads(r.body)["name"] for r in receiver.wait_for(count, timeout=5))


def test_subscribing_by_category_or_by_platform_name(client, make_source, make_destination, receiver, work):
    source_id, key = make_source(kind="webengage")
    make_destination(receiver.url + "/by-category", events=["survey_response"])
    make_destination(receiver.url + "/by-name", events=["SURVEY_RESPONSE_SUBMIT"])
    make_destination(receiver.url + "/by-filter", categories=["survey_response", "feedback"])
    body = {"response": {"data": {"surveyId": "s1", "questionResponses": [],
                                  "activity": {"time": "2024-03-06T08:00:00Z"}}}}
    response = client.post(f"/v1/sources/{source_id}/events", json=body, headers={"X-Hookgate-Key": key})
    assert response.status_code == 202, response.get_json()
    work()
    paths = sorted(r.path for r in receiver.wait_for(3))
    assert paths == ["/by-category", "/by-filter", "/by-name"]


def test_a_category_pattern_takes_every_event_of_the_category(client, make_source, make_destination, receiver,
                                                             work):
    """README's "journey.*" ("every journey event"): WebEngage's journey_activated (category journey)
    as well as journey.created; not an event of another category."""
    webengage, webengage_key = make_source("webengage", kind="webengage")
    shop, shop_key = make_source("shop")
    make_destination(receiver.url, events=["survey_response", "journey.*"])
    seed = (SEEDS / "webengage.seed003.journey_activated.json").read_bytes()
    response = client.post(f"/v1/sources/{webengage}/events", data=seed, content_type="application/json",
                           headers={"X-Hookgate-Key": webengage_key})
    assert response.status_code == 202 and response.get_json()["accepted"] == 1, response.get_json()
    response = client.post(f"/v1/sources/{shop}/events", json=[{"name": "journey.created"}, {"name": "purchase"}],
                           headers={"X-Hookgate-Key": shop_key})
    assert response.get_json()["accepted"] == 2
    work()
    assert arrived_names(receiver, 2) == ["journey.created", "journey_activated"]
    assert len(receiver.requests) == 2


def test_channels_sources_and_excluded_origins(make_source, make_destination, post_events, receiver, work):
    shop, shop_key = make_source("shop")
    crm, crm_key = make_source("crm")
    make_destination(receiver.url + "/sms", channels=["sms"])
    make_destination(receiver.url + "/shop", sources=[shop])
    make_destination(receiver.url + "/people", categories=["subscription"], exclude_origins=["integration"])
    post_events(shop, shop_key, [{"name": "message_send", "channel": "sms", "category": "system"},
                                 {"name": "message_send", "channel": "email", "category": "system"}])
    post_events(crm, crm_key, [{"name": "opt_out", "category": "subscription", "origin": "ui"},
                               {"name": "opt_out", "category": "subscription", "origin": "integration"}])
    work()
    arrived = receiver.wait_for(4)
    seen = sorted((r.path, json.loads(r.body)["channel"], json.loads(r.body)["origin"]) for r in arrived)
    assert seen == [("/people", None, "ui"), ("/shop", "email", "api"), ("/shop", "sms", "api"),
                    ("/sms", "sms", "api")]


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


CONDITIONS = [
    ({"field": "data.amount", "op": "eq", "value": 120}, True),
    ({"field": "data.amount", "op": "eq", "value": "120"}, False),
    ({"field": "data.currency", "op": "neq", "value": "USD"}, True),
    ({"field": "data.missing", "op": "neq", "value": "USD"}, False),
    ({"field": "data.amount", "op": "gt", "value": 100}, True),
    ({"field": "data.amount", "op": "gt", "value": 120}, False),
    ({"field": "data.amount", "op": "gte", "value": 120}, True),
    ({"field": "data.amount", "op": "lt", "value": 120}, False),
    ({"field": "data.amount", "op": "lte", "value": 120}, True),
    ({"field": "profile.tier", "op": "in", "value": ["gold", "platinum"]}, True),
    ({"field": "profile.tier", "op": "nin", "value": ["gold"]}, False),
    ({"field": "system.campaign_id", "op": "exists", "value": True}, True),
    ({"field": "system.trigger_id", "op": "exists", "value": False}, True),
    ({"field": "data.sku", "op": "regex", "value": "^A-\\d+$"}, True),
    ({"field": "profile.email", "op": "regex", "value": "@example\\.org$"}, False),
    ({"field": "data.tags.0", "op": "eq", "value": "vip"}, True),
    ({"and": [{"field": "data.amount", "op": "gt", "value": 100},
              {"field": "data.currency", "op": "eq", "value": "EUR"}]}, True),
    ({"and": [{"field": "data.amount", "op": "gt", "value": 100},
              {"field": "data.currency", "op": "eq", "value": "USD"}]}, False),
    ({"or": [{"field": "data.currency", "op": "eq", "value": "USD"},
             {"and": [{"field": "channel", "op": "eq", "value": "email"},
                      {"field": "origin", "op": "in", "value": ["api", "ui"]}]}]}, True),
]


@pytest.mark.parametrize("condition, matches", CONDITIONS, ids=[json.dumps(c)[:60] for c, _ in CONDITIONS])
def test_payload_conditions_route_through_ingest(condition, matches, make_source, make_destination, post_events,
                                                 receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url, conditions=condition)
    assert post_events(source_id, key, PURCHASE).status_code == 202
    work()
    assert len(receiver.wait_for(1, timeout=1 if not matches else 5)) == (1 if matches else 0)


@pytest.mark.parametrize("condition", [
    {"field": "data.x", "op": "like", "value": 1},
    {"field": "password", "op": "eq", "value": 1},
    {"field": "data.x", "op": "in", "value": "notalist"},
    {"field": "data.x", "op": "regex", "value": "("},
    {"field": "data.x", "op": "exists", "value": "yes"},
    {"field": "data.x", "op": "gt", "value": [1]},
    {"and": []},
    {"and": [{"field": "data.x", "op": "eq", "value": 1}], "or": []},
    "data.x == 1",
])
def test_invalid_conditions_are_422_at_save(condition, client, admin, receiver):
    response = client.post("/v1/destinations", json={"name": "d", "url": receiver.url, "conditions": condition},
                           headers=admin)
    assert response.status_code == 422 and "conditions" in response.get_json()["error"]["details"]


def test_condition_trees_are_bounded():
    deep = {"field": "data.x", "op": "eq", "value": 1}
    for _ in range(12):
        deep = {"and": [deep]}
    assert validate_condition(deep)
    assert compile_condition({"field": "data.n", "op": "gt", "value": 5})({"data": {"n": "7"}}) is True


def test_required_fields_skip_with_a_reason(client, admin, make_source, make_destination, post_events, receiver,
                                            work):
    source_id, key = make_source()
    make_destination(receiver.url, required_fields=["system.external_message_id"])
    with_id = post_events(source_id, key, {"name": "m", "system": {"external_message_id": "x-1"}}).get_json()
    without = post_events(source_id, key, {"name": "m", "system": {"external_message_id": ""}}).get_json()
    work()
    assert len(receiver.wait_for(1)) == 1
    [skipped] = client.get(f"/v1/deliveries?event_id={without['ids'][0]}", headers=admin).get_json()["items"]
    assert skipped["status"] == "skipped" and "system.external_message_id" in skipped["last_error"]
    [sent] = client.get(f"/v1/deliveries?event_id={with_id['ids'][0]}", headers=admin).get_json()["items"]
    assert sent["status"] == "delivered"
    listed = client.get("/v1/deliveries?status=skipped", headers=admin).get_json()["items"]
    assert [d["id"] for d in listed] == [skipped["id"]]


def test_one_destination_many_subscriptions_and_many_destinations_one_event(make_source, make_destination,
                                                                          post_events, receiver, work):
    source_id, key = make_source()
    for n in range(5):
        make_destination(receiver.url + f"/d{n}", events=["signup"])
    make_destination(receiver.url + "/many", events=["signup", "journey.*", "feedback"])
    post_events(source_id, key, [{"name": "signup"}, {"name": "journey.created"}, {"name": "feedback"},
                                 {"name": "other"}])
    work()
    arrived = receiver.wait_for(8)
    assert sorted(r.path for r in arrived) == ["/d0", "/d1", "/d2", "/d3", "/d4", "/many", "/many", "/many"]


def test_routing_follows_destination_changes(client, admin, make_source, make_destination, post_events, receiver,
                                             work):
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


# -- the routing index ---------------------------------------------------------------------------------

def dest(did, events, enabled=True):
    return {"id": did, "events": events, "enabled": enabled}


def ids(index, name):
    return [d["id"] for d in index.match({"name": name})]


def test_exact_names_and_patterns():
    index = RoutingIndex([
        dest("a", ["survey_response"]), dest("b", ["journey.*"]), dest("c", ["*"]), dest("d", ["push_*", "x?z"]),
        dest("e", ["journey.created", "journey.*"]), dest("off", ["*"], enabled=False), dest("f", ["*.deleted"]),
    ])
    assert ids(index, "survey_response") == ["a", "c"]
    assert sorted(ids(index, "journey.created")) == ["b", "c", "e"]
    assert sorted(ids(index, "journey.deleted")) == ["b", "c", "e", "f"]
    assert sorted(ids(index, "push_notification_accepted")) == ["c", "d"]
    assert sorted(ids(index, "xyz")) == ["c", "d"]
    assert ids(index, "journey") == ["c"]  # journey.* needs the dot


def test_many_destinations_match_only_their_own():
    index = RoutingIndex([dest(f"d{n}", [f"event_{n}", f"group{n % 10}.*"]) for n in range(10_000)])
    assert ids(index, "event_1234") == ["d1234"]
    assert len(ids(index, "group3.anything")) == 1000


def test_router_rebuilds_only_when_configuration_changes(db):
    store = DestinationStore(db)
    router = Router(db)
    first = store.create({"name": "a", "url": "http://example.com", "events": ["a"], "enabled": True,
                          "method": "POST", "format": "json", "headers": {}, "timeout_s": 5.0})
    index = router.index()
    assert [d["id"] for d in index.match({"name": "a"})] == [first["id"]]
    assert router.index() is index  # unchanged: no rebuild
    store.update(first["id"], {"events": ["b"]})
    assert router.index() is not index
    assert router.match({"name": "a"}) == [] and len(router.match({"name": "b"})) == 1
