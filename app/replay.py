"""Replaying deliveries: one at once, or many as a background job whose progress can be read.

A replayed delivery goes back to ``pending`` and is due now; its attempt log goes on (attempt
numbers keep counting) and every copy carries the same ``webhook-id``. Bulk replay selects a
destination's deliveries by status within a since–until window (creation time) and runs as an RQ
job, writing its progress to ``hookgate:replay:<id>``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, cast

import redis
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from . import runtime
from .deliveries import as_record, queue_read
from .delivery.queue import wake
from .errors import Conflict, NotFound
from .store import keys, new_id, now_ms

__all__ = ["replay_delivery", "start_bulk_replay", "new_bulk_replay", "read_replay", "run_bulk_replay",
           "bulk_replay_size"]

REPLAY_TTL = 7 * 86400
BATCH = 200


def _requeue(pipe: Pipeline, delivery: dict[str, str], due: int) -> None:
    delivery_id, did, created = delivery["id"], delivery["destination_id"], int(delivery["created_at"])
    pipe.hset(keys.delivery(delivery_id), mapping={"status": "pending", "next_attempt_at": due, "updated_at": due})
    pipe.zrem(keys.status(delivery["status"]), delivery_id)
    pipe.zadd(keys.status("pending"), {delivery_id: created})
    pipe.zadd(keys.pending(did), {delivery_id: due})
    pipe.zadd(keys.due, {did: due}, lt=True)


def replay_delivery(rt: runtime.Runtime, delivery_id: str) -> dict[str, Any]:
    with rt.db.pipeline(transaction=False) as pipe:
        queue_read(pipe, delivery_id)
        delivery = as_record(pipe.execute()[0])
    if not delivery:
        raise NotFound(f"no delivery {delivery_id!r}", {"id": delivery_id})
    if delivery["status"] == "pending" or rt.db.zscore(keys.leases, f"{delivery['destination_id']}|{delivery_id}"):
        raise Conflict("the delivery is already pending or being sent", {"id": delivery_id})
    if not rt.db.exists(keys.event(delivery["event_id"])):
        raise Conflict("its event has expired and cannot be sent again", {"event_id": delivery["event_id"]})
    with rt.db.pipeline(transaction=True) as pipe:
        _requeue(pipe, delivery, now_ms())
        pipe.execute()
    wake(rt.db, rt.queue, [delivery["destination_id"]], rt.settings)
    return {"id": delivery_id, "status": "pending"}


def start_bulk_replay(rt: runtime.Runtime, destination_id: str, status: str, since: dt.datetime | None,
                      until: dt.datetime | None) -> dict[str, Any]:
    replay_id = new_bulk_replay(rt, destination_id, status, since, until)
    rt.queue.enqueue_call(run_bulk_replay, args=(replay_id,), timeout=3600, result_ttl=0,
                          description=f"replay {destination_id} {status}")
    return read_replay(rt.db, replay_id)


def new_bulk_replay(rt: runtime.Runtime, destination_id: str, status: str, since: dt.datetime | None,
                    until: dt.datetime | None) -> str:
    """Record a bulk replay (state ``queued``) and return its id; ``run_bulk_replay`` runs it."""
    replay_id = new_id("rpl")
    replay: dict[FieldT, EncodableT] = {
        "id": replay_id,
        "destination_id": destination_id,
        "status": status,
        "since": int(since.timestamp() * 1000) if since else 0,
        "until": int(until.timestamp() * 1000) if until else now_ms(),
        "state": "queued",
        "scanned": 0,
        "replayed": 0,
        "created_at": now_ms(),
    }
    rt.db.hset(keys.replay(replay_id), mapping=replay)
    rt.db.expire(keys.replay(replay_id), REPLAY_TTL)
    return replay_id


def read_replay(db: redis.Redis, replay_id: str) -> dict[str, Any]:
    raw = cast(dict[str, str], db.hgetall(keys.replay(replay_id)))
    if not raw:
        raise NotFound(f"no replay {replay_id!r}", {"id": replay_id})
    return {k: (int(v) if k in ("since", "until", "scanned", "replayed", "created_at", "finished_at") else v)
            for k, v in raw.items()}


def bulk_replay_size(db: redis.Redis, replay: dict[str, Any]) -> int:
    """How many deliveries a bulk replay will scan (its destination's, in its window)."""
    return db.zcount(keys.destination_deliveries(replay["destination_id"]), replay["since"], replay["until"])


def run_bulk_replay(replay_id: str, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """RQ job: requeue the selected deliveries in batches, recording progress as it goes (and telling
    ``progress`` how many it scanned after each batch)."""
    rt = runtime.current()
    db = rt.db
    replay = read_replay(db, replay_id)
    key = keys.replay(replay_id)
    db.hset(key, "state", "running")
    index = keys.destination_deliveries(replay["destination_id"])
    start = 0
    while True:
        ids = cast(list[str], db.zrangebyscore(index, replay["since"], replay["until"], start=start, num=BATCH))
        if not ids:
            break
        start += len(ids)
        with db.pipeline(transaction=False) as pipe:
            for delivery_id in ids:
                queue_read(pipe, delivery_id)
                pipe.zscore(keys.leases, f"{replay['destination_id']}|{delivery_id}")
            found = pipe.execute()
        # Not one that a worker is sending right now (it would be sent twice).
        deliveries = [d for values, leased in zip(found[::2], found[1::2], strict=True)
                      if (d := as_record(values)) and d["status"] == replay["status"] and leased is None]
        due = now_ms()
        with db.pipeline(transaction=True) as pipe:
            for delivery in deliveries:
                _requeue(pipe, delivery, due)
            pipe.hincrby(key, "scanned", len(ids))
            pipe.hincrby(key, "replayed", len(deliveries))
            pipe.execute()
        if deliveries:
            wake(db, rt.queue, [replay["destination_id"]], rt.settings)
        if progress is not None:
            progress(len(ids))
    db.hset(key, mapping={"state": "done", "finished_at": now_ms()})
    return read_replay(db, replay_id)
