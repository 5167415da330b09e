"""The circuit breaker: a failing destination pauses for a cool-down, then one probe request tells
whether its receiver is back; it recovers by itself, in order, and only failing for ``failing_for_s``
(or a 410 Gone) disables it. Notifications and hookgate's own events for each turn, and the state in
``/stats``. Through real RQ workers (``work``), real receivers that the tests switch between failing
and answering, and a real SMTP server."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from hookgate import create_app, runtime
from hookgate.store import keys, now_ms

from .processes import wait_until
from .receiver import Received, Receiver, Reply
from .smtp import SmtpServer

OPS = "ops@example.com"


# -- wiring: these tests' app also sends e-mail, through the SMTP server below -----------------------
@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(user=None, password=None).start()
    yield server
    server.stop()


@pytest.fixture
def app(settings, smtp):  # overrides conftest's ``app``: the same wiring, plus SMTP
    app = create_app(dataclasses.replace(settings, smtp_url=f"smtp://127.0.0.1:{smtp.port}",
                                         smtp_from="hookgate-alerts@example.org"))
    runtime.install(app.extensions["hookgate"])
    yield app
    runtime.install(None)


@pytest.fixture
def answering():
    """Receivers that answer with a fixed status (and headers)."""
    started = []

    def make(status: int = 200, headers: dict | None = None, body: bytes = b'{"ok": true, "id": "r-1"}', delay=0.0):
        receiver = Receiver(lambda request: Reply(status, body=body, delay=delay,
                                                  headers={"Content-Type": "application/json", **(headers or {})}))
        started.append(receiver.start())
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


class Switch:
    """A receiver the test switches between failing (503) and answering (200); it remembers what
    each request got, in the order they came."""

    def __init__(self) -> None:
        self.status = 503
        self.delay = 0.0
        self.answered: list[tuple[Received, int]] = []
        self._lock = threading.Lock()
        self.server = Receiver(self._reply).start()
        self.url = self.server.url

    def _reply(self, request: Received) -> Reply:
        with self._lock:
            self.answered.append((request, self.status))
            return Reply(self.status, delay=self.delay)

    def count(self, status: int | None = None) -> int:
        return sum(1 for _, got in list(self.answered) if status is None or got == status)


@pytest.fixture
def switch() -> Iterator[Switch]:
    receiver = Switch()
    yield receiver
    receiver.server.stop()


def keep_working(work, done: Callable[[], bool], timeout: float) -> bool:
    """Run the worker (ticker included) again and again until ``done()``."""
    return wait_until(lambda: work() or done(), timeout=timeout, interval=0.1)


def shown(client, admin, destination_id: str) -> dict:
    return client.get(f"/v1/destinations/{destination_id}", headers=admin).get_json()


def breaker(client, admin, destination_id: str) -> dict:
    response = client.get(f"/v1/destinations/{destination_id}/stats", headers=admin)
    assert response.status_code == 200
    return response.get_json()["breaker"]


def deliveries(client, admin, destination_id: str) -> list[dict]:
    """The destination's deliveries, oldest first."""
    page = client.get(f"/v1/deliveries?destination_id={destination_id}&limit=200", headers=admin).get_json()
    return sorted(page["items"], key=lambda d: d["id"])


@pytest.fixture
def tripped(make_source, make_destination, post_events, work, switch):
    """A destination at ``switch`` (failing) whose breaker tripped on ``count`` failed events:
    returns it, its events' ids and a function posting more events to it."""

    def make(count: int = 25, **fields) -> tuple[dict, list[str], Callable[[int], list[str]]]:
        source_id, key = make_source()
        settings = {"cooldown_s": 1, "max_cooldown_s": 2, "min_attempts": count, **fields.pop("circuit_breaker", {})}
        # Retries at once and without jitter: the order a delivery came due is the order it was sent.
        # One request at a time, so that it trips on exactly ``count`` (concurrency: the next test).
        fields.setdefault("max_in_flight", 1)
        destination = make_destination(switch.url, retry_schedule=[0] * 30, circuit_breaker=settings, **fields)

        def post(n: int) -> list[str]:
            return post_events(source_id, key, [{"name": f"e{i}"} for i in range(n)]).get_json()["ids"]

        event_ids = post(count)
        work()
        assert switch.count() == count
        return destination, event_ids, post

    return make


# -- pausing instead of giving up -----------------------------------------------------------------
def test_a_receiver_down_for_20_s_ends_with_every_delivery_delivered_in_order_and_the_destination_enabled(
    client, admin, make_source, make_destination, post_events, switch, work
):
    source_id, key = make_source()
    destination = make_destination(switch.url, retry_schedule=[0] * 30, ordered=True,
                                   circuit_breaker={"cooldown_s": 1, "max_cooldown_s": 2})
    back_at = time.monotonic() + 20
    event_ids = post_events(source_id, key, [{"name": f"e{n}"} for n in range(30)]).get_json()["ids"]

    def outage_over() -> bool:
        assert shown(client, admin, destination["id"])["enabled"] is True  # never disabled
        return time.monotonic() >= back_at

    keep_working(work, outage_over, timeout=25)
    # 20 failed attempts (the failure-rate rule trips on them, as each is recorded), then one probe per
    # cool-down (1 s, then 2 s).
    assert 20 + 5 <= switch.count(503) <= 20 + 12
    assert breaker(client, admin, destination["id"])["trips"] == 1
    switch.status = 200
    assert keep_working(work, lambda: all(d["status"] == "delivered"
                                          for d in deliveries(client, admin, destination["id"])), timeout=10)

    assert shown(client, admin, destination["id"])["enabled"] is True
    assert breaker(client, admin, destination["id"])["state"] == "closed"
    delivered = [request.header("webhook-id") for request, status in switch.answered if status == 200]
    assert delivered == event_ids  # each once, in order: the failed probes kept their place
    event_of = {d["id"]: d["event_id"] for d in deliveries(client, admin, destination["id"])}
    assert {request.header("webhook-id") == event_of[request.header("X-Hookgate-Delivery")]
            for request, _ in switch.answered} == {True}  # every copy of a delivery carries its webhook-id


def test_while_open_nothing_is_sent_until_the_cool_down_ends_then_exactly_one_probe(client, admin, tripped,
                                                                                   switch, work, rt):
    destination, event_ids, post = tripped(25, circuit_breaker={"cooldown_s": 2, "max_cooldown_s": 8})
    state = breaker(client, admin, destination["id"])
    assert state["state"] == "open" and state["trips"] == 1 and state["cooldown_s"] == 2
    assert time.time() < state["paused_until"] <= time.time() + 2

    later = post(5)  # stored, pending; the hold keeps ingest from enqueueing a drain job
    assert rt.queue.count == 0
    keep_working(work, lambda: time.time() > state["paused_until"] - 0.2, timeout=5)
    assert switch.count() == 25
    assert keep_working(work, lambda: switch.count() > 25, timeout=5)
    work()
    assert switch.count() == 26  # one probe, and the breaker is open again
    probe, status = switch.answered[25]
    first = deliveries(client, admin, destination["id"])[0]
    assert status == 503 and probe.header("X-Hookgate-Delivery") == first["id"]  # the head of the line
    assert probe.header("X-Hookgate-Attempt") == "2" and probe.header("webhook-id") == event_ids[0]
    held = [d for d in deliveries(client, admin, destination["id"]) if d["event_id"] in later]
    assert len(held) == 5 and {(d["status"], d["attempts"]) for d in held} == {("pending", 0)}  # not attempts
    state = breaker(client, admin, destination["id"])
    assert state["state"] == "open" and state["cooldown_s"] == 4 and state["trips"] == 1


def test_a_failed_probe_doubles_the_cool_down_up_to_its_maximum_and_a_delivered_one_closes_it(
    client, admin, tripped, switch, work
):
    destination, event_ids, _ = tripped(25, circuit_breaker={"cooldown_s": 1, "max_cooldown_s": 2.5})
    did = destination["id"]
    cooldowns = []
    for probes in (26, 27, 28):
        assert keep_working(work, lambda n=probes: switch.count() == n, timeout=5)
        work()
        cooldowns.append(breaker(client, admin, did)["cooldown_s"])
    assert cooldowns == [2, 2.5, 2.5]
    at = [request.at for request, _ in switch.answered[24:]]
    gaps = [later - earlier for earlier, later in zip(at, at[1:], strict=False)]
    assert gaps[0] >= 1 and gaps[1] >= 2 and gaps[2] >= 2.5  # no probe before its cool-down ended

    switch.status = 200
    assert keep_working(work, lambda: switch.count(200) == 25, timeout=5)
    assert breaker(client, admin, did) == {"state": "closed", "paused_until": None, "cooldown_s": 1, "trips": 1}
    assert [request.header("webhook-id") for request, status in switch.answered if status == 200] == event_ids


def test_the_failures_of_an_outage_that_is_over_do_not_trip_it_again(client, admin, make_source, make_destination,
                                                                    post_events, switch, work):
    source_id, key = make_source()
    destination = make_destination(switch.url, retry_schedule=[3600],  # the failed ones wait: they do not count twice
                                   circuit_breaker={"min_attempts": 5, "failure_rate": 0.5, "cooldown_s": 1})

    def post(n: int) -> None:
        post_events(source_id, key, [{"name": f"e{i}"} for i in range(n)])
        work()

    post(5)
    assert breaker(client, admin, destination["id"])["state"] == "open"
    switch.status = 200
    post(4)  # held; when the cool-down ends, one is the probe, then the other 3 flow
    assert keep_working(work, lambda: switch.count(200) == 4, timeout=5)
    assert breaker(client, admin, destination["id"])["state"] == "closed"

    switch.status = 503
    post(2)  # 2 failures in 5 attempts since it closed (with the outage's: 7 in 11)
    assert breaker(client, admin, destination["id"])["state"] == "closed"
    post(2)  # now 4 in 7
    state = breaker(client, admin, destination["id"])
    assert state["state"] == "open" and state["trips"] == 2 and state["cooldown_s"] == 1  # afresh, from the base


def test_a_batch_destination_is_probed_with_one_batch(client, admin, make_source, make_destination, post_events,
                                                      switch, work):
    source_id, key = make_source()
    destination = make_destination(switch.url, retry_schedule=[0] * 30, batch={"size": 10, "max_wait_s": 0},
                                   circuit_breaker={"cooldown_s": 1})
    post_events(source_id, key, [{"name": f"e{n}"} for n in range(30)])
    work()
    assert switch.count() == 2 and breaker(client, admin, destination["id"])["state"] == "open"  # 20 failed
    assert keep_working(work, lambda: switch.count() == 3, timeout=5)
    work()
    assert switch.count() == 3 and breaker(client, admin, destination["id"])["cooldown_s"] == 2  # one batch failed
    switch.status = 200
    assert keep_working(work, lambda: switch.count(200) == 3, timeout=5)
    assert switch.count() == 6 and [len(json.loads(request.body)) for request, _ in switch.answered] == [10] * 6
    assert breaker(client, admin, destination["id"])["state"] == "closed"


# -- disabling: failing too long, or a 410 --------------------------------------------------------
def test_failing_continuously_for_failing_for_s_disables_it_and_reminds_until_enabled(
    client, admin, tripped, switch, receiver, work, rt, db
):
    destination, _, _ = tripped(25, circuit_breaker={"cooldown_s": 1, "failing_for_s": 60},
                                notify={"url": receiver.url + "/notify", "interval_s": 60})
    did = destination["id"]
    assert shown(client, admin, did)["enabled"] is True  # 25 failures: paused, not disabled
    db.set(keys.failing_since(did), now_ms() - 61_000)  # as if it had failed for over a minute
    assert keep_working(work, lambda: shown(client, admin, did)["enabled"] is False, timeout=5)
    state = shown(client, admin, did)
    assert state["disabled_reason"] == "failing" and "failing continuously" in state["disabled_detail"]
    assert switch.count() == 26  # the probe that found it still failing
    assert keep_working(work, lambda: any(json.loads(r.body)["type"] == "destination.disabled"
                                          for r in receiver.requests), timeout=5)
    assert db.zscore(keys.notify, did) > now_ms() + 50_000  # the next reminder, an interval later

    # Enabled by hand: the breaker starts afresh and the backlog flows at once.
    switch.status = 200
    assert client.post(f"/v1/destinations/{did}/enable", headers=admin).status_code == 200
    assert db.zscore(keys.notify, did) is None and db.get(keys.failing_since(did)) is None
    assert breaker(client, admin, did) == {"state": "closed", "paused_until": None, "cooldown_s": 1, "trips": 0}
    assert keep_working(work, lambda: switch.count(200) == 25, timeout=5)


def test_the_breaker_trips_on_a_destination_failing_continuously(client, admin, make_source, make_destination,
                                                                post_events, answering, work, db):
    source_id, key = make_source()
    failing = make_destination(answering(503).url, retry_schedule=[], circuit_breaker={"failing_for_s": 3600})
    db.set(keys.failing_since(failing["id"]), now_ms() - 2 * 3600 * 1000)  # failing for two hours already
    post_events(source_id, key, {"name": "x"})
    work()
    shown = client.get(f"/v1/destinations/{failing['id']}", headers=admin).get_json()
    assert shown["enabled"] is False and shown["disabled_reason"] == "failing"


def test_a_success_resets_the_continuous_failure_clock(make_source, make_destination, post_events, answering,
                                                      work, db):
    source_id, key = make_source()
    destination = make_destination(answering(200).url)
    db.set(keys.failing_since(destination["id"]), now_ms() - 1000)
    post_events(source_id, key, {"name": "x"})
    work()
    assert db.get(keys.failing_since(destination["id"])) is None


def test_410_gone_disables_the_destination_and_says_so(client, admin, make_source, make_destination, post_events,
                                                      answering, receiver, work):
    source_id, key = make_source()
    gone = make_destination(answering(410).url, events=["x"], name="gone")
    make_destination(receiver.url + "/ops", events=["destination.disabled"])
    post_events(source_id, key, {"name": "x"})
    work()
    shown = client.get(f"/v1/destinations/{gone['id']}", headers=admin).get_json()
    assert shown["enabled"] is False and shown["disabled_reason"] == "gone"
    [alert] = receiver.wait_for(1)
    alert = json.loads(alert.body)
    assert alert["name"] == "destination.disabled" and alert["data"]["destination_id"] == gone["id"]


def test_a_410_from_a_paused_destination_s_probe_disables_it_at_once(client, admin, tripped, switch, work):
    destination, _, _ = tripped(25)
    switch.status = 410
    assert keep_working(work, lambda: shown(client, admin, destination["id"])["enabled"] is False, timeout=5)
    assert shown(client, admin, destination["id"])["disabled_reason"] == "gone" and switch.count() == 26


# -- telling people --------------------------------------------------------------------------------
def test_pausing_recovering_and_disabling_are_each_told_and_emitted(client, admin, tripped, make_destination,
                                                                    switch, receiver, work, db):
    make_destination(receiver.url + "/events",
                     events=["destination.paused", "destination.recovered", "destination.disabled"])
    destination, _, post = tripped(25, notify={"url": receiver.url + "/notify", "interval_s": 60})
    did = destination["id"]

    def heard(path: str, kind: str) -> list[dict]:
        bodies = [json.loads(r.body) for r in list(receiver.requests) if r.path == path]
        return [b for b in bodies if b.get("type", b.get("name")) == kind]

    assert keep_working(work, lambda: heard("/notify", "destination.paused") and heard("/events", "destination.paused"),
                        timeout=5)
    [paused] = heard("/notify", "destination.paused")
    assert paused["destination"]["id"] == did and "25 of the last 25 attempts failed" in paused["detail"]
    assert paused["cooldown_s"] == 1 and paused["paused_until"] > now_ms() - 2000 and paused["trips"] == 1
    [event] = heard("/events", "destination.paused")
    assert event["category"] == "webhook" and event["data"]["destination_id"] == did
    assert event["data"]["reason"] == "failure_rate" and event["data"]["paused_until"].endswith("Z")

    switch.status = 200
    assert keep_working(work, lambda: heard("/notify", "destination.recovered")
                        and heard("/events", "destination.recovered"), timeout=5)
    [recovered] = heard("/notify", "destination.recovered")
    assert recovered["destination"]["id"] == did and "the backlog flows again" in recovered["detail"]
    assert recovered["paused_for_s"] >= 1
    assert len(heard("/notify", "destination.paused")) == 1  # told once: failed probes are not new trips

    switch.status = 503
    post(25)
    db.set(keys.failing_since(did), now_ms() - 2 * 86400 * 1000)  # as if it had failed for two days
    assert keep_working(work, lambda: heard("/notify", "destination.disabled")
                        and heard("/events", "destination.disabled"), timeout=10)
    assert shown(client, admin, did)["disabled_reason"] == "failing"
    assert [len(heard("/notify", kind)) for kind in ("destination.paused", "destination.recovered")] == [1, 1]


def test_a_pause_and_a_recovery_are_e_mailed_once_each(tripped, switch, smtp, work):
    tripped(25, name="flaky", notify={"email": OPS, "interval_s": 60})
    [mail] = smtp.wait_for(1)
    assert mail.rcpt_to == [OPS] and mail.message["Subject"] == "hookgate: destination flaky was paused"
    assert "25 of the last 25 attempts failed" in mail.body() and '"type": "destination.paused"' in mail.body()
    switch.status = 200
    assert keep_working(work, lambda: len(smtp.messages) == 2, timeout=5)
    assert smtp.messages[1].message["Subject"] == "hookgate: destination flaky recovered"
    work()
    assert len(smtp.messages) == 2


# -- the state, shown and reset -------------------------------------------------------------------
def test_the_stats_answer_shows_the_breaker(client, admin, make_destination, tripped, switch, work):
    untouched = make_destination(switch.url, name="untouched", events=["nothing-routes-here"])
    assert breaker(client, admin, untouched["id"]) == {"state": "closed", "paused_until": None, "cooldown_s": 30,
                                                       "trips": 0}
    destination, _, _ = tripped(25, circuit_breaker={"cooldown_s": 1.5, "max_cooldown_s": 5})
    answer = client.get(f"/v1/destinations/{destination['id']}/stats", headers=admin).get_json()
    state = answer["breaker"]
    assert state["state"] == "open" and state["cooldown_s"] == 1.5 and state["trips"] == 1
    # seconds since the epoch, as the buckets' starts
    assert answer["per_minute"][-1]["start"] <= state["paused_until"] <= time.time() + 1.5

    switch.status, switch.delay = 200, 0.5  # the probe takes a while: long enough to see it in flight
    seen: list[str] = []

    def half_open() -> bool:
        seen.append(breaker(client, admin, destination["id"])["state"])
        if seen[-1] == "half_open":
            switch.delay = 0.0  # the probe was answered slowly; the backlog need not be
        return seen[-1] == "half_open"

    watching = threading.Thread(target=lambda: wait_until(half_open, timeout=10, interval=0.02))
    watching.start()
    try:
        assert keep_working(work, lambda: switch.count(200) == 25, timeout=20)
    finally:
        watching.join()
    assert "half_open" in seen
    assert breaker(client, admin, destination["id"]) == {"state": "closed", "paused_until": None, "cooldown_s": 1.5,
                                                         "trips": 1}


def test_a_destination_enabled_by_hand_starts_afresh_and_its_backlog_flows_at_once(client, admin, tripped, switch,
                                                                                   work, db):
    destination, _, _ = tripped(25, circuit_breaker={"cooldown_s": 60, "max_cooldown_s": 600})
    did = destination["id"]
    assert db.get(keys.wake(did)) == "paused"  # held for the minute's cool-down
    client.post(f"/v1/destinations/{did}/disable", headers=admin)
    client.post(f"/v1/destinations/{did}/enable", headers=admin)
    assert breaker(client, admin, did) == {"state": "closed", "paused_until": None, "cooldown_s": 60, "trips": 0}
    assert db.get(keys.wake(did)) is None
    switch.status = 200
    work()
    assert switch.count(200) == 25


def test_a_paused_destination_deleted_has_its_deliveries_skipped_at_once(client, admin, tripped, switch, work, db):
    destination, _, _ = tripped(25, circuit_breaker={"cooldown_s": 60, "max_cooldown_s": 600})
    did = destination["id"]
    assert client.delete(f"/v1/destinations/{did}", headers=admin).status_code == 204
    assert not db.exists(keys.breaker(did), keys.wake(did), keys.failing_since(did))
    work()
    assert {d["status"] for d in deliveries(client, admin, did)} == {"skipped"} and switch.count() == 25
