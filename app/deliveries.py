"""Reading deliveries: listing with filters and cursors, and one delivery with its attempts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import redis
from redis.client import Pipeline

from .errors import NotFound, ValidationError
from .paging import parse_cursor, scan
from .store import keys

__all__ = ["DeliveryStore", "STATUSES", "FIELDS", "attempt_field", "queue_read", "as_record"]

STATUSES = ("pending", "delivered", "error", "bounced", "failed", "skipped")
# A delivery's hash holds these fields, and its attempt log: one field an attempt, ``log:<number>``
# (its JSON), the last ``ATTEMPTS_KEPT`` of them (the recorder writes an attempt in the same HSET as
# the delivery's new state and drops the one that falls out). What reads the delivery's state asks
# for FIELDS only (HMGET), so the log is read only when the delivery is shown.
FIELDS = ("id", "event_id", "destination_id", "status", "attempts", "created_at", "updated_at",
          "next_attempt_at", "last_status_code", "last_error")
_LOG = "log:"


def attempt_field(number: int) -> str:
    """The hash field of a delivery's attempt ``number`` (1, 2, …)."""
    return f"{_LOG}{number}"


def queue_read(pipe: Pipeline, delivery_id: str) -> None:
    """Queued on ``pipe``: read the delivery's state (FIELDS, not its attempt log); ``as_record`` reads
    the answer."""
    pipe.hmget(keys.delivery(delivery_id), FIELDS)


def as_record(values: list[str | None]) -> dict[str, str]:
    """The answer of ``queue_read`` as the stored hash would be: its fields that are there ({} when
    the delivery is not)."""
    return {name: value for name, value in zip(FIELDS, values, strict=True) if value is not None}


def _attempt_log(raw: dict[str, str]) -> list[dict[str, Any]]:
    numbered = [(int(name[len(_LOG):]), value) for name, value in raw.items() if name.startswith(_LOG)]
    return [json.loads(value) for _, value in sorted(numbered)]


def _shape(raw: dict[str, str]) -> dict[str, Any]:
    def number(value: str | None) -> int | None:
        return int(value) if value not in (None, "") else None

    return {
        "id": raw["id"],
        "event_id": raw["event_id"],
        "destination_id": raw["destination_id"],
        "status": raw["status"],
        "attempts": int(raw.get("attempts") or 0),
        "created_at": number(raw.get("created_at")),
        "updated_at": number(raw.get("updated_at")),
        "next_attempt_at": number(raw.get("next_attempt_at")),
        "last_status_code": number(raw.get("last_status_code")),
        "last_error": raw.get("last_error") or None,
    }


def _matcher(destination_id: str | None, status: str | None,
             event_id: str | None) -> Callable[[dict[str, Any]], bool]:
    """Whether a delivery passes every filter given."""
    def wanted(item: dict[str, Any]) -> bool:
        return ((destination_id is None or item["destination_id"] == destination_id)
                and (status is None or item["status"] == status)
                and (event_id is None or item["event_id"] == event_id))
    return wanted


class DeliveryStore:
    def __init__(self, db: redis.Redis):
        self.db = db

    def get(self, delivery_id: str) -> dict[str, Any]:
        raw = cast(dict[str, str], self.db.hgetall(keys.delivery(delivery_id)))
        if not raw:
            raise NotFound(f"no delivery {delivery_id!r}", {"id": delivery_id})
        delivery = _shape(raw)
        delivery["attempt_log"] = _attempt_log(raw)
        event = self.db.get(keys.event(delivery["event_id"]))
        delivery["event"] = json.loads(event) if event else None
        return delivery

    def page(self, *, destination_id: str | None = None, status: str | None = None,
             event_id: str | None = None, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """Newest first. Returns ``{"items", "next_cursor"}``; pass ``next_cursor`` back for the next page."""
        if status is not None and status not in STATUSES:
            raise ValidationError("invalid query", {"status": [f"Must be one of: {', '.join(STATUSES)}."]})
        wanted = _matcher(destination_id, status, event_id)
        if event_id is not None:  # the event's own list of its deliveries: one page
            items = [d for d in reversed(self.of_event(event_id)) if wanted(d)]
            return {"items": items[:limit], "next_cursor": None}
        if status is not None:
            index = keys.status(status)
        elif destination_id is not None:
            index = keys.destination_deliveries(destination_id)
        else:
            index = keys.deliveries
        return scan(self.db, index, self._load, wanted, limit, parse_cursor(cursor))

    def of_event(self, event_id: str) -> list[dict[str, Any]]:
        """Every delivery of the event that is still kept, in the order they were made."""
        ids = cast(list[str], self.db.lrange(keys.event_deliveries(event_id), 0, -1))
        items = [d for d in self._load(ids) if d is not None]
        return sorted(items, key=lambda d: (d["created_at"], d["id"]))

    def _load(self, ids: list[str]) -> list[dict[str, Any] | None]:
        with self.db.pipeline(transaction=False) as pipe:
            for delivery_id in ids:
                queue_read(pipe, delivery_id)
            return [_shape(raw) if (raw := as_record(values)) else None for values in pipe.execute()]
