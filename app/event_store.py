"""Reading events: the list (by source, name, category and time window, newest first) and one event
with its deliveries.

Events are strings with the retention window as TTL (``keys.event``); ingest adds each to two
sorted sets by received time, every event's (``keys.events``) and its source's
(``keys.source_events``), which the ticker trims to the retention window. A list reads the source's
index when a source is given, else every event's, from the end of the time window down; name and
category are checked on the events read (``paging.scan``: bounded batches a request).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import redis

from .deliveries import DeliveryStore
from .errors import NotFound, ValidationError
from .paging import parse_cursor, scan
from .schemas import CATEGORIES
from .store import keys

__all__ = ["EventStore"]


def _matcher(name: str | None, category: str | None) -> Callable[[dict[str, Any]], bool]:
    def wanted(event: dict[str, Any]) -> bool:
        return (name is None or event.get("name") == name) and (category is None or event.get("category") == category)
    return wanted


class EventStore:
    def __init__(self, db: redis.Redis):
        self.db = db

    def get(self, event_id: str) -> dict[str, Any]:
        """The canonical event and its deliveries (state, not attempt logs), oldest first; 404 once
        it expired."""
        raw = self.db.get(keys.event(event_id))
        if raw is None:
            raise NotFound(f"no event {event_id!r} (unknown, or older than the retention window)", {"id": event_id})
        return {**json.loads(raw), "deliveries": DeliveryStore(self.db).of_event(event_id)}

    def page(self, *, source_id: str | None = None, name: str | None = None, category: str | None = None,
             since_ms: int | None = None, until_ms: int | None = None, limit: int = 50,
             cursor: str | None = None) -> dict[str, Any]:
        """Newest first (by received time), received from ``since_ms`` to ``until_ms`` inclusive when
        given. Returns ``{"items", "next_cursor"}``; pass ``next_cursor`` back for the next page."""
        if category is not None and category not in CATEGORIES:
            raise ValidationError("invalid query", {"category": [f"Must be one of: {', '.join(CATEGORIES)}."]})
        if since_ms is not None and until_ms is not None and since_ms > until_ms:
            raise ValidationError("invalid query", {"until": ["Must not be before since."]})
        index = keys.source_events(source_id) if source_id else keys.events
        return scan(self.db, index, self._load, _matcher(name, category), limit, parse_cursor(cursor),
                    floor=since_ms, ceiling=until_ms)

    def _load(self, ids: list[str]) -> list[dict[str, Any] | None]:
        """The events by id (None for one that expired and is not trimmed from the index yet)."""
        if not ids:
            return []
        raws = cast(list[str | None], self.db.mget([keys.event(event_id) for event_id in ids]))
        return [json.loads(raw) if raw is not None else None for raw in raws]
