"""Dead letters and replay: one delivery, or many as a background job with progress."""

from __future__ import annotations

import datetime as dt

from hookgate.store import keys

from .receiver import Receiver, Reply


def test_a_failed_delivery_is_replayed_with_the_same_webhook_id(client, admin, make_source, make_destination,
                                                               post_events, work):
    answers = {"code": 500}
    receiver = Receiver(lambda request: Reply(answers["code"])).start()
    try:
        source_id, key = make_source()
        make_destination(receiver.url, retry_schedule=[0])
        event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
        work()
        [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
        assert delivery["status"] == "failed" and delivery["attempts"] == 2
        answers["code"] = 200
        response = client.post(f"/v1/deliveries/{delivery['id']}/replay", headers=admin)
        assert response.status_code == 202 and response.get_json()["status"] == "pending"
        again = client.post(f"/v1/deliveries/{delivery['id']}/replay", headers=admin)
        assert again.status_code == 409  # already pending
        work()
        shown = client.get(f"/v1/deliveries/{delivery['id']}", headers=admin).get_json()
        assert shown["status"] == "delivered" and shown["attempts"] == 3
        assert [a["status_code"] for a in shown["attempt_log"]] == [500, 500, 200]
        assert len({r.header("webhook-id") for r in receiver.requests}) == 1
    finally:
        receiver.stop()


def test_a_delivery_being_sent_cannot_be_replayed(client, admin, make_source, make_destination, post_events, work,
                                                  db):
    """Regression: a delivery a worker held under lease could be replayed."""
    source_id, key = make_source()
    destination = make_destination("http://127.0.0.1:9/", retry_schedule=[60])
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    work()
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    assert delivery["status"] == "bounced"
    db.zadd(keys.leases, {f"{destination['id']}|{delivery['id']}": 10**13})  # a worker holds it right now
    assert client.post(f"/v1/deliveries/{delivery['id']}/replay", headers=admin).status_code == 409


def test_bulk_replay_by_status_and_window_reports_progress(client, admin, make_source, make_destination,
                                                          post_events, work):
    answers = {"code": 400}
    receiver = Receiver(lambda request: Reply(answers["code"])).start()
    try:
        source_id, key = make_source()
        destination = make_destination(receiver.url, circuit_breaker={"enabled": False})  # 30 errors in a row
        before = dt.datetime.now(dt.UTC)
        post_events(source_id, key, [{"name": f"e{n}"} for n in range(30)])
        work()
        assert len(client.get("/v1/deliveries?status=error&limit=100", headers=admin).get_json()["items"]) == 30
        answers["code"] = 200
        empty = client.post(f"/v1/destinations/{destination['id']}/replay", headers=admin,
                            json={"status": "error", "until": before.isoformat()})
        started = client.post(f"/v1/destinations/{destination['id']}/replay", headers=admin,
                              json={"status": "error", "since": before.isoformat()})
        assert started.status_code == 202 and started.get_json()["state"] == "queued"
        work()
        progress = client.get(f"/v1/replays/{started.get_json()['id']}", headers=admin).get_json()
        assert progress["state"] == "done" and progress["replayed"] == 30 and progress["scanned"] == 30
        assert client.get(f"/v1/replays/{empty.get_json()['id']}", headers=admin).get_json()["replayed"] == 0
        delivered = client.get("/v1/deliveries?status=delivered&limit=100", headers=admin).get_json()["items"]
        assert len(delivered) == 30 and len(receiver.requests) == 60
    finally:
        receiver.stop()


def test_replay_errors(client, admin, receiver, make_destination):
    assert client.post("/v1/deliveries/dlv_nope/replay", headers=admin).status_code == 404
    assert client.post("/v1/destinations/dst_nope/replay", headers=admin, json={}).status_code == 404
    destination = make_destination(receiver.url)
    bad = client.post(f"/v1/destinations/{destination['id']}/replay", headers=admin, json={"status": "pending"})
    assert bad.status_code == 422
    assert client.get("/v1/replays/rpl_nope", headers=admin).status_code == 404
