"""The delivery engine: an event's walk from ingest through the RQ drain job to its receiver, in order;
outcome events, stats, Retry-After, the fail branch, batching, fairness, and leases and the recorder
(the circuit breaker, 410 Gone and their notifications: ``test_breaker.py``)."""

from __future__ import annotations

import json
import time

import pytest

from hookgate.deliveries import DeliveryStore, attempt_field
from hookgate.store import keys, now_ms

from .receiver import Receiver, Reply


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


def test_an_event_reaches_its_destination_rendered_with_a_webhook_id(
    client, make_source, make_destination, post_events, receiver, work, db
):
    source_id, key = make_source()
    destination = make_destination(
        receiver.url + "/hook",
        events=["survey_response", "journey.*"],
        template='{"who": {{ event.user_id | tojson }}, "score": {{ event.data.score }}, '
                 '"to": {{ destination.name | tojson }}}',
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


def test_events_posted_together_are_delivered_in_order(make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url, ordered=True)
    post_events(source_id, key, [{"name": f"e{n:03d}"} for n in range(200)])  # one transaction, one timestamp
    work()
    names = [json.loads(r.body)["name"] for r in receiver.wait_for(200)]
    assert names == [f"e{n:03d}" for n in range(200)]


def test_outcome_events_reach_subscribers_with_the_response(make_source, make_destination, post_events, receiver,
                                                            answering, work):
    source_id, key = make_source()
    target = answering(201)
    make_destination(target.url, events=["order.paid"])
    make_destination(receiver.url + "/outcomes", events=["webhook.*"],
                     template='{"outcome": "{{ event.name }}", "remote_id": {{ webhook.json.id | tojson }}, '
                              '"code": {{ webhook.status_code }}}')
    post_events(source_id, key, {"name": "order.paid"})
    work()
    [followup] = receiver.wait_for(1)
    assert json.loads(followup.body) == {"outcome": "webhook.delivered", "remote_id": "r-1", "code": 201}
    assert len(target.requests) == 1


def test_no_outcome_events_of_outcome_events(make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url + "/plain", events=["*"])  # "*" alone does not get hookgate's own events
    make_destination(receiver.url + "/all", events=["*", "webhook.*"])
    post_events(source_id, key, {"name": "x"})
    work()
    arrived = sorted((r.path, json.loads(r.body)["name"]) for r in receiver.wait_for(4))
    time.sleep(0.2)
    work()
    # /all's delivery of webhook.delivered makes no further outcome event
    assert arrived == [("/all", "webhook.delivered"), ("/all", "webhook.delivered"), ("/all", "x"), ("/plain", "x")]
    assert len(receiver.requests) == 4


def test_stats_count_outcomes_per_minute_and_hour(client, admin, make_source, make_destination, post_events,
                                                  answering, work):
    source_id, key = make_source()
    good = make_destination(answering(200).url, events=["a"])
    bad = make_destination(answering(404).url, events=["a"], name="bad")
    post_events(source_id, key, [{"name": "a"}] * 3)
    work()
    stats = client.get(f"/v1/destinations/{good['id']}/stats", headers=admin).get_json()
    assert stats["last_hour"]["delivered"] == 3 and stats["per_minute"][-1]["delivered"] == 3
    assert stats["last_day"]["delivered"] == 3 and len(stats["per_minute"]) == 60 and len(stats["per_hour"]) == 24
    bad_stats = client.get(f"/v1/destinations/{bad['id']}/stats?minutes=5&hours=2", headers=admin).get_json()
    assert bad_stats["last_hour"]["error"] == 3 and len(bad_stats["per_minute"]) == 5
    assert client.get(f"/v1/destinations/{bad['id']}/stats?minutes=0", headers=admin).status_code == 422


@pytest.mark.parametrize("retry_after", ["7", "HTTP-DATE"])
def test_retry_after_is_honoured(retry_after, client, admin, make_source, make_destination, post_events,
                                 answering, work):
    from email.utils import formatdate

    value = formatdate(time.time() + 8, usegmt=True) if retry_after == "HTTP-DATE" else retry_after
    source_id, key = make_source()
    make_destination(answering(429, {"Retry-After": value}).url, retry_schedule=[1])
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    before = now_ms()
    work()
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    assert delivery["status"] == "error" and delivery["next_attempt_at"] - before >= 6000


def test_retry_after_takes_ascii_digits_only(client, admin, make_source, make_destination, post_events, work):
    """Regression: Retry-After '²' broke the attempt, which then looped; an empty schedule retries none."""
    odd = Receiver(lambda request: Reply(503, headers={"Retry-After": "\u00b2"})).start()  # '²'.isdigit()
    try:
        source_id, key = make_source()
        make_destination(odd.url, retry_schedule=[])
        event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
        work()
        [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
        assert delivery["status"] == "failed" and delivery["attempts"] == 1
    finally:
        odd.stop()


def test_fail_branch_gets_the_event_of_a_delivery_that_finally_fails(make_source, make_destination, post_events,
                                                                    answering, receiver, work):
    source_id, key = make_source()
    fallback = make_destination(receiver.url + "/fallback", events=["nothing-routes-here"], name="fallback")
    make_destination(answering(503).url, events=["x"], retry_schedule=[0], fail_destination_id=fallback["id"],
                     circuit_breaker={"enabled": False})
    event_id = post_events(source_id, key, {"name": "x", "user_id": "u1"}).get_json()["ids"][0]
    work()
    [request] = receiver.wait_for(1)
    assert request.path == "/fallback" and json.loads(request.body)["id"] == event_id


def test_batches_are_sent_as_one_request_per_batch(client, admin, make_source, make_destination, post_events,
                                                   receiver, work):
    source_id, key = make_source()
    destination = make_destination(receiver.url, batch={
        "size": 10, "max_wait_s": 0,
        "item_template": '{"n": {{ event.data.n }}}',
        "root_template": '{"count": {{ items | length }}, "items": [{{ items | join(",") }}]}'})
    post_events(source_id, key, [{"name": "e", "data": {"n": n}} for n in range(25)])
    work()
    bodies = [json.loads(r.body) for r in receiver.wait_for(3)]
    assert sorted(b["count"] for b in bodies) == [5, 10, 10]
    assert sorted(item["n"] for b in bodies for item in b["items"]) == list(range(25))
    delivered = client.get(f"/v1/deliveries?destination_id={destination['id']}&status=delivered&limit=100",
                           headers=admin).get_json()["items"]
    assert len(delivered) == 25


def test_a_partial_batch_waits_for_more_until_its_max_wait(make_source, make_destination, post_events, receiver,
                                                          work, rt):
    source_id, key = make_source()
    make_destination(receiver.url, batch={"size": 10, "max_wait_s": 1})
    post_events(source_id, key, [{"name": "e", "data": {"n": n}} for n in range(3)])
    work()
    assert receiver.requests == []  # 3 of 10, and not old enough yet
    time.sleep(1.1)
    work()
    [request] = receiver.wait_for(1)
    assert len(json.loads(request.body)) == 3


def test_a_slow_destination_does_not_hold_up_the_others(make_source, make_destination, post_events, answering,
                                                       receiver, rt, settings):
    import dataclasses

    from hookgate import runtime as runtime_module
    from hookgate.delivery.worker import run_burst
    from hookgate.runtime import Runtime

    tight = Runtime(dataclasses.replace(settings, drain_budget_s=0.3))
    runtime_module.install(tight)
    slow = answering(200, delay=0.1)
    source_id, key = make_source()
    make_destination(slow.url, events=["slow"], name="slow")
    make_destination(receiver.url, events=["fast"], name="fast")
    post_events(source_id, key, [{"name": "slow"} for _ in range(30)])
    post_events(source_id, key, [{"name": "fast"} for _ in range(5)])
    run_burst(tight)
    assert len(slow.requests) == 30 and len(receiver.requests) == 5
    assert receiver.requests[-1].at < slow.requests[-1].at  # the fast one did not wait for the slow backlog


def test_batch_items_are_what_single_deliveries_would_carry(make_source, make_destination, post_events, receiver,
                                                          work):
    source_id, key = make_source()
    make_destination(receiver.url, payload_style="webengage", extra_properties={"tenant": "acme"},
                     batch={"size": 2, "max_wait_s": 0})
    post_events(source_id, key, [{"name": "a"}, {"name": "b"}])
    work()
    [request] = receiver.wait_for(1)
    items = json.loads(request.body)
    assert [i["event_name"] for i in items] == ["a", "b"] and {i["tenant"] for i in items} == {"acme"}
    assert request.header("webhook-id").startswith("bat_") and request.header("X-Hookgate-Batch-Size") == "2"


def test_a_retried_batch_keeps_its_webhook_id(make_source, make_destination, post_events, work):
    answers = iter([503, 200])
    receiver = Receiver(lambda request: Reply(next(answers))).start()
    try:
        source_id, key = make_source()
        make_destination(receiver.url, retry_schedule=[0], batch={"size": 2, "max_wait_s": 0})
        post_events(source_id, key, [{"name": "a"}, {"name": "b"}])
        work()
        first, second = receiver.wait_for(2)
        assert first.header("webhook-id") == second.header("webhook-id")
    finally:
        receiver.stop()


def test_a_lease_belongs_to_the_job_that_took_it(client, admin, make_source, make_destination, post_events, db):
    """A job whose lease lapsed (its receiver was slower than the lease) can no longer renew, release
    or record the delivery once another job has taken it: only the holder's outcome counts."""
    from hookgate.delivery import queue as pending
    from hookgate.delivery.recorder import Recorder, outcome_writes

    source_id, key = make_source()
    destination = make_destination("http://127.0.0.1:9/never")
    post_events(source_id, key, {"name": "x"})
    did = destination["id"]
    [delivery_id] = pending.take(db, did, 10, 30, 60_000, "job-a")
    time.sleep(0.05)
    assert pending.reclaim_expired(db) == 1  # job A's lease lapsed: back to pending
    assert pending.take(db, did, 10, 60_000, 60_000, "job-b") == [delivery_id]
    assert pending.renew(db, did, [delivery_id], 60_000, 60_000, "job-a") == []
    assert pending.release(db, did, [delivery_id], "job-a") == 0
    assert db.zscore(keys.leases, f"{did}|{delivery_id}") is not None and not db.zcard(keys.pending(did))
    assert pending.renew(db, did, [delivery_id], 60_000, 60_000, "job-b") == [delivery_id]

    created = int(db.hget(keys.delivery(delivery_id), "created_at"))
    recorder = Recorder(db)
    recorder.submit(outcome_writes(did, delivery_id, "error", {"status": "error"}, (1, '{"by": "a"}'),
                                   created, None, 50, "job-a"))
    recorder.flush()
    assert db.hget(keys.delivery(delivery_id), "status") == "pending"
    assert not db.hexists(keys.delivery(delivery_id), attempt_field(1))
    recorder.submit(outcome_writes(did, delivery_id, "delivered", {"status": "delivered"},
                                   (1, '{"by": "b"}'), created, None, 50, "job-b"))
    recorder.close()
    assert db.hget(keys.delivery(delivery_id), "status") == "delivered"
    assert db.hget(keys.delivery(delivery_id), attempt_field(1)) == '{"by": "b"}'
    assert db.zscore(keys.leases, f"{did}|{delivery_id}") is None
    assert not db.hexists(keys.lease_holders, f"{did}|{delivery_id}")
    assert db.zscore(keys.status("delivered"), delivery_id) is not None


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_recorded_delivery_ends_in_its_new_status_set_alone(db, count):
    """A batch of one or two reads each delivery's stored status and leaves that set; a larger one
    leaves every other set: either way each delivery is in exactly one status set, its new one, also
    when it is recorded twice in the batch."""
    from hookgate.deliveries import STATUSES
    from hookgate.delivery.recorder import Recorder, outcome_writes

    before = ["pending", "error", "bounced", "delivered", "failed", "skipped", "pending"]
    for i in range(count):
        db.hset(keys.delivery(f"dlv_{i}"), mapping={"id": f"dlv_{i}", "status": before[i]})
        db.zadd(keys.status(before[i]), {f"dlv_{i}": i})
    recorder = Recorder(db)
    recorder.submit(outcome_writes("dst_1", "dlv_0", "bounced", {"status": "bounced"}, None, 0, None, 50))
    for i in range(count):
        recorder.submit(outcome_writes("dst_1", f"dlv_{i}", "delivered", {"status": "delivered"}, None, i, None, 50))
    recorder.close()
    for i in range(count):
        assert [s for s in STATUSES if db.zscore(keys.status(s), f"dlv_{i}") is not None] == ["delivered"]


def test_the_attempt_log_is_part_of_the_delivery_and_keeps_the_last_attempts_in_order(db):
    """The log is fields of the delivery's hash (no key of its own to expire apart); past the kept
    number the oldest goes, and the API shows the rest oldest first (attempt 10 after 9)."""
    from hookgate.delivery.recorder import Recorder, outcome_writes

    db.hset(keys.delivery("dlv_1"), mapping={"id": "dlv_1", "event_id": "evt_1", "destination_id": "dst_1",
                                             "status": "pending", "created_at": 1})
    recorder = Recorder(db)
    for number in range(1, 13):
        recorder.submit(outcome_writes("dst_1", "dlv_1", "error", {"status": "error", "attempts": number},
                                       (number, json.dumps({"attempt": number})), 1, None, 4))
    recorder.close()
    assert sorted(db.hkeys(keys.delivery("dlv_1"))) == sorted(
        ["id", "event_id", "destination_id", "status", "created_at", "attempts", *map(attempt_field, range(9, 13))])
    assert db.keys("*dlv_1*") == [keys.delivery("dlv_1")]
    shown = DeliveryStore(db).get("dlv_1")
    assert [a["attempt"] for a in shown["attempt_log"]] == [9, 10, 11, 12]
    assert shown["attempts"] == 12 and shown["status"] == "error"


def test_the_recorder_leaves_the_status_set_the_delivery_is_really_in(db):
    """Regression: the recorder cleared the status set its worker read, not the one the delivery was in."""
    from hookgate.delivery.recorder import Recorder, outcome_writes

    db.hset(keys.delivery("dlv_1"), mapping={"id": "dlv_1", "status": "pending"})
    db.zadd(keys.status("pending"), {"dlv_1": 1})
    recorder = Recorder(db)
    recorder.submit(outcome_writes("dst_1", "dlv_1", "delivered", {"status": "delivered"}, None, 1, None, 50))
    recorder.close()
    assert db.zscore(keys.status("pending"), "dlv_1") is None
    assert db.zscore(keys.status("delivered"), "dlv_1") == 1


def test_a_wide_wake_is_one_drain_job_per_group_of_destinations(client, admin, receiver, make_source,
                                                                make_destination, post_events, rt, work):
    """1 event → 120 destinations: 3 RQ jobs (50, 50, 20), not 120 (each RQ job costs the store ~65
    commands of its own); every destination gets its delivery once, through the engine."""
    from hookgate.delivery.queue import WAKE_GROUP

    source_id, key = make_source()
    made = [make_destination(f"{receiver.url}/d{i}", name=f"d{i}")["id"] for i in range(120)]
    [event_id] = post_events(source_id, key, {"name": "purchase"}).get_json()["ids"]
    jobs = rt.queue.get_jobs()
    assert [len(job.args) for job in jobs] == [WAKE_GROUP, WAKE_GROUP, 120 - 2 * WAKE_GROUP]
    assert sorted(did for job in jobs for did in job.args) == sorted(made)
    work()
    assert sorted(request.path for request in receiver.requests) == sorted(f"/d{i}" for i in range(120))
    assert {request.header("webhook-id") for request in receiver.requests} == {event_id}


def test_a_bare_rq_worker_drains_every_destination_of_a_grouped_job(client, admin, receiver, make_source,
                                                                   make_destination, post_events, rt):
    """Without hookgate's engine (RQ's own worker), a job of several destinations drains each in turn."""
    from rq import SimpleWorker

    source_id, key = make_source()
    for i in range(3):
        make_destination(f"{receiver.url}/d{i}", name=f"d{i}")
    post_events(source_id, key, [{"name": "a"}, {"name": "b"}])
    [job] = rt.queue.get_jobs()
    assert len(job.args) == 3
    SimpleWorker([rt.queue], connection=rt.rq_connection).work(burst=True)
    assert sorted(request.path for request in receiver.requests) == sorted(f"/d{i}" for i in range(3) for _ in "ab")
