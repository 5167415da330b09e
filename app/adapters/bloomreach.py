"""The ``bloomreach`` kind: Bloomreach Engagement customer events, as a Bloomreach webhook (seed 004,
Bloomreach "Webhooks": scenario webhooks, presets, batching) posts them in the Tracking API's event shape.

Shapes:

- one event or a list of them: ``{"customer_ids": {"registered": "…", "cookie": "…"}, "event_type":
  "purchase", "timestamp": 1614941503.5, "properties": {…}}``;
- a batch (seed 004: "Batch webhook", up to 1000 customers per request) in the Tracking API's batch
  form: ``{"commands": [{"name": "customers/events", "command_id": "…", "data": <event>}, …]}``;
  ``command_id`` becomes the event id; commands other than ``customers/events`` are refused per index.

Mapping: ``customer_ids.registered`` → user_id, ``customer_ids.cookie`` → anonymous_id (the first, if a
list), all ids → ``system.customer_ids``; ``properties`` → ``data`` as sent, with ``campaign_id``,
``campaign_name``, ``action_id``, ``action_type``, ``message_id`` copied to ``system``;
``properties.message_type`` → channel. Category: ``campaign`` events (send, delivered, open, click,
bounce, unsubscribe…) → system; ``consent`` events and opt-in/out names → subscription, with
``properties.source`` → origin; ``survey`` answers → survey_response; other events → activity.
``timestamp`` is epoch seconds (float); milliseconds and ISO strings are accepted too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import ValidationError
from ._common import (
    channel,
    collect,
    compact,
    extras,
    fail,
    is_subscription_name,
    obj,
    origin,
    parse_items,
    parse_time,
    required,
    safe_id,
    scalar,
    text,
)

__all__ = ["parse"]

_SYSTEM_KEYS = ("campaign_id", "campaign_name", "action_id", "action_type", "message_id")
_SURVEY_ACTIONS = {"answer", "answered", "submit", "submitted", "response", "completed", "complete"}


def parse(payload: Any) -> list[dict[str, Any]]:
    if isinstance(payload, dict) and "commands" in payload:
        commands = payload["commands"]
        if not isinstance(commands, list):
            raise ValidationError("the batch is not valid", {"commands": ["Not a valid list."]})
        return collect(commands, _parse_command, single=False)
    return parse_items(payload, _parse_item)


def _parse_command(command: dict[str, Any]) -> Iterable[dict[str, Any]]:
    if command.get("name") != "customers/events":
        fail("name", "Only customers/events commands carry events.")
    data = command.get("data")
    if not isinstance(data, dict):
        fail("data", "Not a valid object.")
    event = _event(data)
    event["id"] = safe_id(text(command, "command_id"))
    return [event]


def _parse_item(item: dict[str, Any]) -> Iterable[dict[str, Any]]:
    return [_event(item)]


def _category(event_type: str, properties: dict[str, Any]) -> str:
    kind = event_type.lower()
    action = str(properties.get("action") or "").lower()
    if kind == "campaign":
        return "system"
    if kind == "consent" or is_subscription_name(kind):
        return "subscription"
    if kind == "survey" and (not action or action in _SURVEY_ACTIONS):
        return "survey_response"
    return "activity"


def _customer_ids(item: dict[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
    ids = item.get("customer_ids")
    if not isinstance(ids, dict) or not ids:
        fail("customer_ids", "Send a non-empty object of customer ids, e.g. {\"registered\": \"…\"}.")
    cookie = ids.get("cookie")
    if isinstance(cookie, list):
        cookie = cookie[0] if cookie else None
    return ids, text(ids, "registered", field="customer_ids.registered"), text(
        {"cookie": cookie}, "cookie", field="customer_ids.cookie"
    )


def _event(item: dict[str, Any]) -> dict[str, Any]:
    ids, registered, cookie = _customer_ids(item)
    event_type = required(item, "event_type")
    properties = obj(item, "properties")
    source = properties.get("source")
    category = _category(event_type, properties)
    return {
        "name": event_type,
        "category": category,
        "time": parse_time(item.get("timestamp"), "timestamp"),
        "user_id": registered,
        "anonymous_id": cookie,
        "data": properties,
        "system": {
            "customer_ids": ids,
            **compact({key: scalar(properties, key, field=f"properties.{key}") for key in _SYSTEM_KEYS}),
            **extras(item, ("customer_ids", "event_type", "timestamp", "properties")),
        },
        "origin": origin(source) if category == "subscription" else None,
        "channel": channel(properties.get("message_type")),
    }
