"""``/v1/events``: list (filter by source, name, category, time window; cursor pagination) and read
one with its deliveries."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from ..event_store import EventStore
from . import query_limit, query_moment_ms, require_admin, runtime

bp = Blueprint("events", __name__, url_prefix="/v1/events")
bp.before_request(require_admin)


@bp.get("")
def list_events() -> dict[str, Any]:
    args = request.args
    return EventStore(runtime().db).page(
        source_id=args.get("source_id") or None,
        name=args.get("name") or None,
        category=args.get("category") or None,
        since_ms=query_moment_ms("since"),
        until_ms=query_moment_ms("until"),
        limit=query_limit(),
        cursor=args.get("cursor") or None,
    )


@bp.get("/<event_id>")
def get(event_id: str) -> dict[str, Any]:
    return EventStore(runtime().db).get(event_id)
