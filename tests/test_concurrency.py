"""The engine (issue 16): many requests in flight per worker, adaptive, ordered when asked, stopped at once.

Through real RQ workers (the in-process burst worker, which runs the same engine as ``hookgate worker``)
and real receivers on 127.0.0.1 that count the requests they hold at once. No test asserts a duration.
"""

from __future__ import annotations

import json
import threading
import time

from .receiver import Receiver, Reply


def names(requests) -> list[str]:
    return [json.loads(r.body)["name"] for r in requests]


def statuses(client, admin, destination_id: str) -> set[str]:
    """Every status the destination's deliveries have, over all pages."""
    found: set[str] = set()
    cursor = ""
    while True:
        page = client.get(f"/v1/deliveries?destination_id={destination_id}&limit=200&cursor={cursor}",
                          headers=admin).get_json()
        found |= {d["status"] for d in page["items"]}
        cursor = page.get("next_cursor") or ""
        if not cursor:
            return found


def test_many_requests_are_in_flight_to_one_destination_up_to_its_max_in_flight(
        client, admin, make_source, make_destination, post_events, work):
    receiver = Receiver(lambda r: Reply(delay=0.2)).start()
    try:
        source_id, key = make_source()
        destination = make_destination(receiver.url, max_in_flight=48)
        post_events(source_id, key, [{"name": f"e{n}"} for n in range(400)])
        work()
        assert sorted(names(receiver.requests)) == sorted(f"e{n}" for n in range(400))  # each once
        assert 24 <= receiver.max_in_flight <= 48  # the limit grew well past its start, and stayed under the cap
        assert statuses(client, admin, destination["id"]) == {"delivered"}
    finally:
        receiver.stop()


def test_a_small_max_in_flight_is_never_exceeded(make_source, make_destination, post_events, work):
    receiver = Receiver(lambda r: Reply(delay=0.05)).start()
    try:
        source_id, key = make_source()
        make_destination(receiver.url, max_in_flight=3)
        post_events(source_id, key, [{"name": f"e{n}"} for n in range(120)])
        work()
        assert len(receiver.requests) == 120
        assert receiver.max_in_flight == 3  # it went concurrent, and no further
    finally:
        receiver.stop()


def test_ordered_sends_one_at_a_time_and_a_retry_holds_the_ones_behind_it(
        client, admin, make_source, make_destination, post_events, work):
    failures = {"e3": 2, "e7": 1}  # e3 fails twice, e7 once

    def reply(request):
        name = json.loads(request.body)["name"]
        if failures.get(name, 0) > 0:
            failures[name] -= 1
            return Reply(503, delay=0.01)
        return Reply(delay=0.01)

    receiver = Receiver(reply).start()
    try:
        source_id, key = make_source()
        destination = make_destination(receiver.url, ordered=True, max_in_flight=32, retry_schedule=[0.3, 0.3, 0.3])
        post_events(source_id, key, [{"name": f"e{n}"} for n in range(12)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and statuses(client, admin, destination["id"]) != {"delivered"}:
            work()
            time.sleep(0.1)
        sent = names(receiver.requests)
        assert sent == ["e0", "e1", "e2", "e3", "e3", "e3", "e4", "e5", "e6", "e7", "e7", "e8", "e9", "e10", "e11"]
        assert receiver.max_in_flight == 1
        shown = client.get(f"/v1/destinations/{destination['id']}/stats", headers=admin).get_json()["concurrency"]
        assert shown["ordered"] is True and shown["max_in_flight"] == 1
    finally:
        receiver.stop()


def test_the_adaptive_limit_settles_near_what_the_receiver_takes_and_nothing_is_lost(
        client, admin, make_source, make_destination, post_events, work):
    """A receiver that answers 429 to whatever comes above 8 at once: hookgate backs off to about 8."""
    capacity = 8
    lock = threading.Lock()
    holding = [0]
    answers: list[int] = []

    def reply(request):
        with lock:
            holding[0] += 1
            over = holding[0] > capacity
        try:
            time.sleep(0.03)
            answers.append(429 if over else 200)
            return Reply(429 if over else 200)
        finally:
            with lock:
                holding[0] -= 1

    receiver = Receiver(reply).start()
    seen_limits: list[int] = []
    running = threading.Event()

    def watch(destination_id: str) -> None:
        while not running.is_set():
            shown = client.get(f"/v1/destinations/{destination_id}/stats", headers=admin).get_json()["concurrency"]
            seen_limits.extend(w["limit"] for w in shown["workers"].values())
            time.sleep(0.05)

    try:
        source_id, key = make_source()
        destination = make_destination(receiver.url, max_in_flight=64, retry_schedule=[0.2] * 20)
        post_events(source_id, key, [{"name": f"e{n}"} for n in range(800)])
        watcher = threading.Thread(target=watch, args=(destination["id"],), daemon=True)
        watcher.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and statuses(client, admin, destination["id"]) != {"delivered"}:
            work()
        running.set()
        watcher.join()
        assert statuses(client, admin, destination["id"]) == {"delivered"}  # nothing lost
        assert sorted(set(names(receiver.requests))) == sorted(f"e{n}" for n in range(800))
        late = answers[len(answers) // 2:]
        assert late.count(429) / len(late) < 0.35  # it settled: most of the later requests were taken
        assert seen_limits and max(seen_limits) <= 64
        settled = seen_limits[len(seen_limits) // 2:]
        assert settled and sum(settled) / len(settled) <= 4 * capacity  # near 8, far from the 64 it may use
    finally:
        receiver.stop()


def test_a_410_stops_every_lane_before_its_next_request(client, admin, make_source, make_destination, post_events,
                                                        work):
    receiver = Receiver(lambda r: Reply(410, delay=0.1)).start()
    try:
        source_id, key = make_source()
        destination = make_destination(receiver.url, max_in_flight=16)
        post_events(source_id, key, [{"name": f"e{n}"} for n in range(300)])
        work()
        shown = client.get(f"/v1/destinations/{destination['id']}", headers=admin).get_json()
        assert shown["enabled"] is False and shown["disabled_reason"] == "gone"
        assert receiver.arrived <= 16  # at most the requests already in flight when the first 410 came
    finally:
        receiver.stop()


def test_a_delete_stops_sends_within_one_request_per_lane(client, admin, make_source, make_destination,
                                                          post_events, work):
    receiver = Receiver(lambda r: Reply(delay=0.1)).start()
    try:
        source_id, key = make_source()
        destination = make_destination(receiver.url, max_in_flight=8)
        post_events(source_id, key, [{"name": f"e{n}"} for n in range(500)])
        at_delete = []

        def delete_after_40() -> None:
            deadline = time.monotonic() + 20
            while receiver.arrived < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert client.delete(f"/v1/destinations/{destination['id']}", headers=admin).status_code == 204
            at_delete.append(receiver.arrived)

        deleter = threading.Thread(target=delete_after_40, daemon=True)
        deleter.start()
        work()  # RQ's worker wants the main thread
        deleter.join(timeout=30)
        [at_delete_n] = at_delete
        assert at_delete_n >= 40
        # In flight when it returned (≤ 8), and what the lanes started before the engine saw it (its
        # watcher looks every 0.1 s: about one more request per lane).
        assert receiver.arrived - at_delete_n <= 2 * 8
        assert receiver.arrived < 500
    finally:
        receiver.stop()
