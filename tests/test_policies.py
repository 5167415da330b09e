"""Throughput policies: a concurrency limit shared across destinations and workers, a rate that spaces
requests (batches too), a dead holder's slot, a lowered limit, and the policies API."""

from __future__ import annotations

import threading
import time

from hookgate.policies import Throttle

from .receiver import Receiver, Reply


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
