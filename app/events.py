"""The canonical event: what every source kind's adapter produces, and what routing and templates see."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .errors import ValidationError
from .store import new_id

__all__ = ["MAX_EVENTS_PER_REQUEST", "OWN_SOURCE", "canonical_event", "check_count", "infer_category", "isoformat",
           "received_ms"]

MAX_EVENTS_PER_REQUEST = 1000
OWN_SOURCE = "hookgate"  # the source of the events hookgate emits itself (delivery outcomes)

# Names that are a category by themselves (``survey_response``), or a prefix naming one (``journey.created``).
_CATEGORY_PREFIXES = {
    "feedback_reply": "feedback_reply",
    "feedback": "feedback",
    "survey_response": "survey_response",
    "journey": "journey",
    "subscription": "subscription",
    "system": "system",
    "webhook": "webhook",
    "destination": "webhook",
}


def isoformat(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def received_ms(event: dict[str, Any]) -> int:
    """When hookgate received the event (its ``received_at``), in epoch milliseconds: its score in
    the event indexes."""
    return int(dt.datetime.fromisoformat(event["received_at"]).timestamp() * 1000)


def infer_category(name: str) -> str:
    """``survey_response`` → survey_response, ``journey.created`` → journey, anything else → activity."""
    head = name.split(".", 1)[0].lower()
    return _CATEGORY_PREFIXES.get(head, "activity")


def canonical_event(source_id: str, fields: dict[str, Any], *, received_at: dt.datetime) -> dict[str, Any]:
    """See ``_canonical``; a time that cannot be shown in UTC (year 1 or 9999 with an offset) is a 422."""
    try:
        return _canonical(source_id, fields, received_at=received_at)
    except OverflowError:
        raise ValidationError("the event's time is out of range", {"time": ["Out of range in UTC."]}) from None


def _canonical(source_id: str, fields: dict[str, Any], *, received_at: dt.datetime) -> dict[str, Any]:
    """Give the event its own id (a source's id is kept as ``external_id``) and fill in category and time."""
    name = fields["name"]
    moment = fields.get("time") or received_at
    return {
        "id": new_id("evt"),
        "external_id": fields.get("id"),
        "source": source_id,
        "category": fields.get("category") or infer_category(name),
        "name": name,
        "time": isoformat(moment),
        "received_at": isoformat(received_at),
        "user_id": fields.get("user_id"),
        "anonymous_id": fields.get("anonymous_id"),
        "profile": fields.get("profile") or {},
        "data": fields.get("data") or {},
        "system": fields.get("system") or {},
        "origin": fields.get("origin") or "api",
        "channel": fields.get("channel"),
    }


def check_count(items: list[Any]) -> None:
    """One request carries 1 to ``MAX_EVENTS_PER_REQUEST`` events (422 otherwise)."""
    if not items:
        raise ValidationError("no events in the request", {"_body": ["Send one event or a non-empty list."]})
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise ValidationError(
            f"at most {MAX_EVENTS_PER_REQUEST} events per request",
            {"_body": [f"Got {len(items)} events; split them into requests of {MAX_EVENTS_PER_REQUEST}."]},
        )
