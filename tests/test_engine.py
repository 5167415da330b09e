"""The delivery engine beyond one attempt: outcome events, stats, Retry-After, 410, the fail branch,
the circuit breaker and its notifications, throughput policies, batching, and fairness."""

from __future__ import annotations

import json
import threading
import time

import pytest

from hookgate.policies import Throttle
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


def test_the_breaker_disables_a_failing_destination_and_notifies_until_enabled(
    client, admin, make_source, make_destination, post_events, answering, receiver, work, rt, db
):
    source_id, key = make_source()
    failing = make_destination(answering(500).url, retry_schedule=[], name="flaky",
                               circuit_breaker={"min_attempts": 5, "failure_rate": 0.6},
                               notify={"url": receiver.url + "/notify", "interval_s": 60})
    post_events(source_id, key, [{"name": f"e{n}"} for n in range(8)])
    work()
    shown = client.get(f"/v1/destinations/{failing['id']}", headers=admin).get_json()
    assert shown["enabled"] is False and shown["disabled_reason"] == "failure_rate"
    [note] = receiver.wait_for(1)
    message = json.loads(note.body)
    assert message["type"] == "destination.disabled" and message["destination"]["id"] == failing["id"]
    assert db.zscore(keys.notify, failing["id"]) > now_ms() + 50_000  # the next reminder, an interval later
    client.post(f"/v1/destinations/{failing['id']}/enable", headers=admin)
    assert db.zscore(keys.notify, failing["id"]) is None
    assert "disabled_reason" not in client.get(f"/v1/destinations/{failing['id']}", headers=admin).get_json()


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


def test_policy_concurrency_is_shared_across_destinations_and_workers(client, admin, make_source, make_destination,
                                                                     post_events, rt):
    active, peak, lock = [0], [0], threading.Lock()

    def reply(request):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return Reply()

    receiver = Receiver(reply).start()
    try:
        policy = client.post("/v1/policies", json={"name": "one-at-a-time", "concurrency": 1},
                             headers=admin).get_json()
        source_id, key = make_source()
        destinations = [make_destination(receiver.url + f"/d{n}", policy_id=policy["id"], name=f"d{n}")
                        for n in range(3)]
        post_events(source_id, key, [{"name": f"e{n}"} for n in range(8)])
        from hookgate.delivery.drain import Drainer
        from hookgate.store import keys

        def drain_until_done(destination_id: str) -> None:  # one drain job after another, concurrently
            for _ in range(400):
                Drainer(rt).drain(destination_id)
                if not rt.db.zcard(keys.pending(destination_id)):
                    return
                time.sleep(0.02)

        workers = [threading.Thread(target=drain_until_done, args=(d["id"],)) for d in destinations]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        receiver.wait_for(24, timeout=30)
        assert len(receiver.requests) == 24 and peak[0] == 1
    finally:
        receiver.stop()


def test_policy_rate_spaces_requests(client, admin, make_source, make_destination, post_events, receiver, work):
    policy = client.post("/v1/policies", json={"name": "slow", "concurrency": 5, "rate_per_s": 10},
                         headers=admin).get_json()
    source_id, key = make_source()
    make_destination(receiver.url, policy_id=policy["id"])
    post_events(source_id, key, [{"name": f"e{n}"} for n in range(12)])
    work()
    arrived = receiver.wait_for(12, timeout=30)
    assert len(arrived) == 12
    assert arrived[-1].at - arrived[0].at >= 0.9  # 12 requests at 10/s (a burst of 2 allowed) take ≥ 1 s


def test_a_dead_holder_does_not_leak_its_slot(db):
    policy = {"id": "pol_test", "concurrency": 1}
    dead = Throttle(db, policy, hold_ms=300)
    assert dead.acquire()
    other = Throttle(db, policy, hold_ms=300)
    assert not other.acquire()
    time.sleep(0.4)  # the dead holder never renews or releases
    assert other.acquire()


def test_lowering_a_limit_takes_effect_for_holders(db):
    policy = {"id": "pol_low", "concurrency": 3}
    holders = [Throttle(db, policy, hold_ms=10_000) for _ in range(3)]
    assert all(h.acquire() for h in holders)
    for holder in holders:
        holder.refresh({"id": "pol_low", "concurrency": 1})
    assert [h.acquire() for h in holders] == [False, False, True]


def test_policies_api(client, admin, receiver, make_destination):
    assert client.post("/v1/policies", json={"name": "p", "concurrency": 0}, headers=admin).status_code == 422
    policy = client.post("/v1/policies", json={"name": "p", "concurrency": 2}, headers=admin).get_json()
    assert client.patch(f"/v1/policies/{policy['id']}", json={"concurrency": 4},
                        headers=admin).get_json()["concurrency"] == 4
    make_destination(receiver.url, policy_id=policy["id"])
    assert client.delete(f"/v1/policies/{policy['id']}", headers=admin).status_code == 409
    assert client.post("/v1/destinations", json={"name": "x", "url": receiver.url, "policy_id": "pol_nope"},
                       headers=admin).status_code == 422


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


def test_a_policy_rate_holds_for_batches(client, admin, make_source, make_destination, post_events, receiver,
                                         work):
    policy = client.post("/v1/policies", json={"name": "slow", "concurrency": 1, "rate_per_s": 4},
                         headers=admin).get_json()
    source_id, key = make_source()
    make_destination(receiver.url, policy_id=policy["id"], batch={"size": 1, "max_wait_s": 0})
    post_events(source_id, key, [{"name": f"e{n}"} for n in range(6)])
    work()
    arrived = receiver.wait_for(6, timeout=30)
    assert len(arrived) == 6 and arrived[-1].at - arrived[0].at >= 0.9  # 6 at 4/s (a burst of 2 allowed)
