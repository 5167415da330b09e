"""The routing index: exact names, patterns, disabled destinations, and refresh on change."""

from __future__ import annotations

from hookgate.destinations import DestinationStore
from hookgate.routing import Router, RoutingIndex


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
