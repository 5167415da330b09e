"""Outcomes of attempts as the receiver answers them, and how deliveries are listed and shown."""

from __future__ import annotations

import json
import socket
from http import HTTPStatus

import pytest

from hookgate.delivery.http import RESPONSE_LIMIT
from hookgate.store import keys

from .receiver import Receiver, Reply


@pytest.fixture
def scripted():
    """A receiver whose answer depends on the request path: /status/<code>, /sleep/<seconds>, /big."""

    def reply(request):
        parts = request.path.strip("/").split("/")
        if parts[0] == "status":
            code = int(parts[1])  # a 204 has no body (RFC 9110 15.3.5)
            return Reply(code, body=b"" if code == 204 else f'{{"answer": {code}}}'.encode())
        if parts[0] == "sleep":
            return Reply(delay=float(parts[1]))
        if parts[0] == "big":
            return Reply(body=b"x" * (RESPONSE_LIMIT * 2), headers={"Content-Type": "text/plain"})
        return Reply()

    server = Receiver(reply).start()
    yield server
    server.stop()


def _only_delivery(client, admin, event_id):
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    return client.get(f"/v1/deliveries/{delivery['id']}", headers=admin).get_json()


@pytest.mark.parametrize(
    "path, status, outcome, retried",
    [
        ("/status/200", 200, "delivered", False),
        ("/status/204", 204, "delivered", False),
        ("/status/302", 302, "error", False),
        ("/status/400", 400, "error", False),
        ("/status/404", 404, "error", False),
        ("/status/429", 429, "error", True),
        ("/status/500", 500, "bounced", True),
        ("/status/503", 503, "bounced", True),
    ],
)
def test_each_answer_is_classified(path, status, outcome, retried, client, admin, scripted, make_source,
                                   make_destination, post_events, work, db):
    source_id, key = make_source()
    destination = make_destination(scripted.url + path)
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    work()
    delivery = _only_delivery(client, admin, event_id)
    [attempt] = delivery["attempt_log"]
    assert attempt["status_code"] == status and attempt["outcome"] == outcome
    assert attempt["method"] == "POST" and attempt["url"] == scripted.url + path
    assert attempt["latency_ms"] > 0
    assert delivery["attempts"] == 1 and delivery["last_status_code"] == status
    # Every non-2xx answer says so in last_error (it was null for a 500): "HTTP 500 Internal Server Error".
    expected_error = None if outcome == "delivered" else f"HTTP {status} {HTTPStatus(status).phrase}"
    assert delivery["last_error"] == expected_error and attempt["error"] == expected_error
    if status not in (204, 302):
        assert str(status) in attempt["response_body"]
    if retried:
        assert delivery["status"] == outcome and delivery["next_attempt_at"] > delivery["updated_at"]
        assert db.zscore(keys.pending(destination["id"]), delivery["id"]) == delivery["next_attempt_at"]
    else:
        assert delivery["status"] == outcome and delivery["next_attempt_at"] is None
        assert db.zcard(keys.pending(destination["id"])) == 0


def test_a_timeout_is_a_bounce(client, admin, scripted, make_source, make_destination, post_events, work):
    source_id, key = make_source()
    make_destination(scripted.url + "/sleep/2", timeout_s=0.3)
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    work()
    delivery = _only_delivery(client, admin, event_id)
    [attempt] = delivery["attempt_log"]
    assert attempt["outcome"] == "bounced" and attempt["status_code"] is None
    assert "timed out" in attempt["error"] and delivery["status"] == "bounced"


def test_a_refused_connection_is_a_bounce(client, admin, make_source, make_destination, post_events, work):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source_id, key = make_source()
    make_destination(f"http://127.0.0.1:{port}/")
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    work()
    [attempt] = _only_delivery(client, admin, event_id)["attempt_log"]
    assert attempt["outcome"] == "bounced" and "connection failed" in attempt["error"]


def test_only_the_first_64_kb_of_a_response_is_kept(client, admin, scripted, make_source, make_destination,
                                                    post_events, work):
    source_id, key = make_source()
    make_destination(scripted.url + "/big")
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    work()
    [attempt] = _only_delivery(client, admin, event_id)["attempt_log"]
    assert attempt["outcome"] == "delivered" and len(attempt["response_body"]) == RESPONSE_LIMIT


def test_a_bounce_is_retried_on_schedule_until_it_is_delivered(client, admin, make_source, make_destination,
                                                               post_events, work):
    answers = iter([503, 502, 200])
    receiver = Receiver(lambda request: Reply(next(answers))).start()
    try:
        source_id, key = make_source()
        make_destination(receiver.url, retry_schedule=[0, 0])
        event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
        work()
        receiver.wait_for(3)
        delivery = _only_delivery(client, admin, event_id)
        assert [a["status_code"] for a in delivery["attempt_log"]] == [503, 502, 200]
        assert [a["attempt"] for a in delivery["attempt_log"]] == [1, 2, 3]
        assert delivery["status"] == "delivered" and delivery["attempts"] == 3
        # every copy carries the same webhook-id, so the receiver can de-duplicate
        assert len({r.header("webhook-id") for r in receiver.requests}) == 1
        assert [r.header("X-Hookgate-Attempt") for r in receiver.requests] == ["1", "2", "3"]
    finally:
        receiver.stop()


def test_exhausted_retries_end_failed(client, admin, scripted, make_source, make_destination, post_events, work):
    source_id, key = make_source()
    make_destination(scripted.url + "/status/500", retry_schedule=[0])
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    work()
    delivery = _only_delivery(client, admin, event_id)
    assert delivery["status"] == "failed" and delivery["attempts"] == 2
    listed = client.get("/v1/deliveries?status=failed", headers=admin).get_json()["items"]
    assert [d["id"] for d in listed] == [delivery["id"]]


def test_the_last_attempt_emits_both_its_outcome_and_failed(client, admin, scripted, receiver, make_source,
                                                            make_destination, post_events, work):
    """README (Outcome events): the last attempt's own outcome (webhook.bounced) and, its retries run
    out, webhook.failed: two events about the same attempt, both true."""
    source_id, key = make_source()
    make_destination(scripted.url + "/status/500", retry_schedule=[])  # no retries: the first is the last
    make_destination(receiver.url, events=["webhook.*"])
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    work()
    arrived = [json.loads(r.body) for r in receiver.wait_for(2)]
    assert sorted(e["name"] for e in arrived) == ["webhook.bounced", "webhook.failed"]
    assert {(e["data"]["event_id"], e["data"]["attempt"], e["data"]["outcome"]) for e in arrived} == {
        (event_id, 1, "bounced")}


def test_a_template_that_fails_or_renders_bad_json_is_an_error_without_a_request(
    client, admin, receiver, make_source, make_destination, post_events, work
):
    source_id, key = make_source()
    # escaping makes {{ event.name }} a JSON string; | safe is the way to write it raw, and so bad JSON
    make_destination(receiver.url, name="not-json", template='{"name": {{ event.name | safe }}}')
    make_destination(receiver.url, name="raises", template="{{ event.data.n / 0 }}")
    ids = post_events(source_id, key, [{"name": "x", "data": {"n": 1}}]).get_json()["ids"]
    work()
    assert receiver.requests == []
    items = client.get(f"/v1/deliveries?event_id={ids[0]}", headers=admin).get_json()["items"]
    errors = sorted(client.get(f"/v1/deliveries/{d['id']}", headers=admin).get_json()["attempt_log"][0]["error"]
                    for d in items)
    assert errors[0].startswith("render: rendered body is not valid JSON")
    assert errors[1].startswith("render: template failed: ZeroDivisionError")
    assert all(d["status"] == "error" for d in items)


def test_deliveries_are_listed_newest_first_with_filters_and_cursor(
    client, admin, receiver, scripted, make_source, make_destination, post_events, work
):
    source_id, key = make_source()
    good = make_destination(receiver.url, name="good")
    bad = make_destination(scripted.url + "/status/400", name="bad")
    ids = []
    for n in range(7):
        ids += post_events(source_id, key, {"name": f"e{n}"}).get_json()["ids"]
    work()
    everything = client.get("/v1/deliveries?limit=200", headers=admin).get_json()
    assert len(everything["items"]) == 14 and everything["next_cursor"] is None
    created = [d["created_at"] for d in everything["items"]]
    assert created == sorted(created, reverse=True)

    pages, cursor = [], None
    while True:
        query = f"/v1/deliveries?destination_id={good['id']}&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query, headers=admin).get_json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    seen = [d for page in pages for d in page]
    assert [len(p) for p in pages][:2] == [3, 3]
    assert len(seen) == 7 and len({d["id"] for d in seen}) == 7
    assert {d["destination_id"] for d in seen} == {good["id"]} and {d["status"] for d in seen} == {"delivered"}
    assert [d["event_id"] for d in seen] == list(reversed(ids))

    errors = client.get(f"/v1/deliveries?status=error&destination_id={bad['id']}", headers=admin).get_json()["items"]
    assert len(errors) == 7 and {d["destination_id"] for d in errors} == {bad["id"]}
    assert client.get(f"/v1/deliveries?status=error&destination_id={good['id']}",
                      headers=admin).get_json()["items"] == []
    by_event = client.get(f"/v1/deliveries?event_id={ids[3]}", headers=admin).get_json()["items"]
    assert {d["destination_id"] for d in by_event} == {good["id"], bad["id"]}


def test_a_delivery_shows_its_event_and_attempts(client, admin, receiver, make_source, make_destination,
                                                 post_events, work):
    source_id, key = make_source()
    make_destination(receiver.url + "/in")
    event_id = post_events(source_id, key, {"name": "x", "user_id": "u7"}).get_json()["ids"][0]
    work()
    delivery = _only_delivery(client, admin, event_id)
    assert delivery["event"]["user_id"] == "u7" and delivery["status"] == "delivered"
    [attempt] = delivery["attempt_log"]
    assert set(attempt) >= {"at", "method", "url", "status_code", "latency_ms", "response_body", "outcome", "error"}
    assert attempt["url"] == receiver.url + "/in" and attempt["response_body"] == '{"ok":true}'


def test_pagination_holds_when_many_deliveries_share_a_timestamp(client, admin, receiver, make_source,
                                                                  make_destination, post_events):
    source_id, key = make_source()
    make_destination(receiver.url)
    post_events(source_id, key, [{"name": f"e{n}"} for n in range(250)])  # one transaction: one created_at
    seen, cursor, pages = [], None, 0
    while True:
        page = client.get("/v1/deliveries?status=pending&limit=100" + (f"&cursor={cursor}" if cursor else ""),
                          headers=admin).get_json()
        seen += [d["id"] for d in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 250 and len(set(seen)) == 250


def test_cookies_from_one_receiver_never_reach_another(client, admin, make_source, make_destination, post_events,
                                                       work):
    setter = Receiver(lambda request: Reply(headers={"Set-Cookie": "session=tenant-a; Path=/",
                                                     "Content-Type": "application/json"})).start()
    try:
        source_id, key = make_source()
        make_destination(setter.url + "/a", events=["a"])
        make_destination(setter.url + "/b", events=["b"])  # same host and port: another customer's endpoint
        post_events(source_id, key, {"name": "a"})
        work()
        post_events(source_id, key, {"name": "b"})
        work()
        arrived = setter.wait_for(2)
        assert [r.path for r in arrived] == ["/a", "/b"] and arrived[1].header("Cookie") is None
    finally:
        setter.stop()


def test_an_unknown_charset_is_read_as_utf8(client, admin, make_source, make_destination, post_events, work):
    odd = Receiver(lambda request: Reply(body="ok ✓".encode(),
                                         headers={"Content-Type": "text/plain; charset=bogus"})).start()
    try:
        source_id, key = make_source()
        make_destination(odd.url)
        event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
        work()
        [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
        shown = client.get(f"/v1/deliveries/{delivery['id']}", headers=admin).get_json()
        assert shown["status"] == "delivered" and shown["attempt_log"][0]["response_body"] == "ok ✓"
    finally:
        odd.stop()
