"""Regressions found in review: each of these once looped, leaked, or answered 500."""

from __future__ import annotations

import json
import socket
import time

from hookgate.signatures import sign_hmac
from hookgate.store import keys

from .receiver import Receiver, Reply


def test_a_delivery_that_breaks_its_attempt_is_recorded_not_retried_forever(client, admin, make_source,
                                                                           make_destination, post_events, work):
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


def test_a_patch_cannot_make_a_form_destination_batch(client, admin, make_destination, receiver):
    form = make_destination(receiver.url, format="form")
    response = client.patch(f"/v1/destinations/{form['id']}", json={"batch": {"size": 2}}, headers=admin)
    assert response.status_code == 422 and "batch" in response.get_json()["error"]["details"]


def test_url_credentials_never_reach_the_delivery_log(client, admin, make_source, make_destination, post_events,
                                                     work):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens: the error names the URL
    base = f"http://127.0.0.1:{port}"
    profile = client.post("/v1/auth-profiles", json={"name": "u", "type": "url", "endpoint_prefix": base,
                                                      "query": {"api_key": "TOPSECRET-123"}}, headers=admin)
    assert profile.status_code == 201, profile.get_json()
    source_id, key = make_source()
    make_destination(base + "/hook", auth_profile_id=profile.get_json()["id"])
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    work()
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    shown = json.dumps(client.get(f"/v1/deliveries/{delivery['id']}", headers=admin).get_json())
    assert "connection failed" in shown and "TOPSECRET-123" not in shown


def test_a_delivery_being_sent_cannot_be_replayed(client, admin, make_source, make_destination, post_events, work,
                                                  db):
    source_id, key = make_source()
    destination = make_destination("http://127.0.0.1:9/", retry_schedule=[60])
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    work()
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    assert delivery["status"] == "bounced"
    db.zadd(keys.leases, {f"{destination['id']}|{delivery['id']}": 10**13})  # a worker holds it right now
    assert client.post(f"/v1/deliveries/{delivery['id']}/replay", headers=admin).status_code == 409


def test_a_refused_signed_request_can_be_retried_as_is(client, admin, receiver, make_destination):
    source = client.post("/v1/sources", json={"name": "s", "signature": {"type": "hmac_sha256"},
                                              "key_required": False}, headers=admin).get_json()
    url = f"/v1/sources/{source['id']}/events"
    now = int(time.time())
    bad_body = b'{"data": {}}'  # no name: 422
    headers = {"X-Hookgate-Timestamp": str(now), "X-Hookgate-Signature": sign_hmac(source["signing_secret"], now,
                                                                                    bad_body)}
    assert client.post(url, data=bad_body, content_type="application/json", headers=headers).status_code == 422
    # The sender fixes nothing and retries the same signed request: refused for what it is, not as a replay.
    again = client.post(url, data=bad_body, content_type="application/json", headers=headers)
    assert again.status_code == 422
    good = b'{"name": "ok"}'
    signed = {"X-Hookgate-Timestamp": str(now), "X-Hookgate-Signature": sign_hmac(source["signing_secret"], now,
                                                                                   good)}
    assert client.post(url, data=good, content_type="application/json", headers=signed).status_code == 202
    assert client.post(url, data=good, content_type="application/json", headers=signed).status_code == 401


def test_pending_deliveries_of_a_disabled_then_deleted_destination_are_closed(client, admin, make_source,
                                                                          make_destination, post_events, work, db):
    source_id, key = make_source()
    destination = make_destination("http://127.0.0.1:9/")
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    client.post(f"/v1/destinations/{destination['id']}/disable", headers=admin)
    work()  # disabled: the drain leaves it waiting
    client.delete(f"/v1/destinations/{destination['id']}", headers=admin)
    work()
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    assert delivery["status"] == "skipped" and db.zcard(keys.pending(destination["id"])) == 0


def test_inputs_that_once_answered_500(client, admin, make_source, post_events):
    source_id, key = make_source()
    for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        assert post_events(source_id, key, {"name": "a", "time": moment}).status_code == 422
    mixed = post_events(source_id, key, [{"name": "a"}, {"name": "b", "time": "0001-01-01T00:00:00+01:00"}])
    assert mixed.status_code == 202 and [r["status"] for r in mixed.get_json()["results"]] == ["accepted", "rejected"]
    assert client.get("/v1/deliveries?limit=\u00b2", headers=admin).status_code == 422
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post(f"/v1/sources/{source_id}/events", data=deep, content_type="application/json",
                           headers={"X-Hookgate-Key": key})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_json"


def test_the_recorder_leaves_the_status_set_the_delivery_is_really_in(db):
    from hookgate.delivery.recorder import Recorder, outcome_writes

    db.hset(keys.delivery("dlv_1"), mapping={"id": "dlv_1", "status": "pending"})  # changed since it was read
    db.zadd(keys.status("pending"), {"dlv_1": 1})
    recorder = Recorder(db)
    recorder.submit(outcome_writes("dst_1", "dlv_1", "bounced", "delivered", {"status": "delivered"}, None, 1, None,
                                   60, 50))
    recorder.close()
    assert db.zscore(keys.status("pending"), "dlv_1") is None
    assert db.zscore(keys.status("delivered"), "dlv_1") == 1


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
    recorder.submit(outcome_writes(did, delivery_id, "pending", "error", {"status": "error"}, '{"by": "a"}',
                                   created, None, 60, 50, "job-a"))
    recorder.flush()
    assert db.hget(keys.delivery(delivery_id), "status") == "pending" and not db.llen(keys.attempts(delivery_id))
    recorder.submit(outcome_writes(did, delivery_id, "pending", "delivered", {"status": "delivered"},
                                   '{"by": "b"}', created, None, 60, 50, "job-b"))
    recorder.close()
    assert db.hget(keys.delivery(delivery_id), "status") == "delivered"
    assert db.lrange(keys.attempts(delivery_id), 0, -1) == ['{"by": "b"}']
    assert db.zscore(keys.leases, f"{did}|{delivery_id}") is None
    assert not db.hexists(keys.lease_holders, f"{did}|{delivery_id}")
    assert db.zscore(keys.status("delivered"), delivery_id) is not None
