"""The ``xtremepush`` kind: Xtremepush's webhooks integration (seed 002, Xtremepush "Webhooks
integration": Settings > Integrations > Marketplace > Webhooks).

Shape, one object or a list of them: ``{"event": "message_send", "time": <UNIX timestamp>,
"properties": {message_type, campaign_id, profile_id, device_id, trigger_id, error_message, user_id,
email, external_message_id}}``.

- ``properties`` → ``data`` as sent; ``user_id`` → user_id; ``email`` → ``profile.email``;
  ``message_type`` → ``channel`` (normalised: email, sms, push, webpush, inapp, whatsapp…);
  ``campaign_id``, ``profile_id``, ``device_id``, ``trigger_id``, ``error_message``,
  ``external_message_id`` and ``message_type`` → ``system``, with any other top-level key.
- Category: message/preference opt-in/out and subscription events → subscription, with ``origin`` from
  the change's ``source`` (UI, import, API, SDK, integration); ``message_*`` events (send, delivery,
  open, click, unsubscribe, failure…) and other message actions → system; anything else (a custom
  format's own event) → activity.
- ``time``: UNIX seconds as documented; milliseconds and ISO strings are accepted too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ._common import (
    channel,
    compact,
    extras,
    fail,
    is_message_action,
    is_subscription_name,
    obj,
    origin,
    parse_items,
    parse_time,
    required,
    scalar,
    text,
)

__all__ = ["parse"]

_SYSTEM_KEYS = (
    "campaign_id", "profile_id", "device_id", "trigger_id", "error_message", "external_message_id",
    "message_type",
)
_ORIGIN_KEYS = ("source", "origin", "subscription_source")


def parse(payload: Any) -> list[dict[str, Any]]:
    return parse_items(payload, _parse_item)


def _category(name: str) -> str:
    if is_subscription_name(name):
        return "subscription"
    words = [word for word in re.split(r"[_.\s\-]+", name.lower()) if word]
    if name.lower().startswith("message_") or any(is_message_action(word) for word in words):
        return "system"
    return "activity"


def _parse_item(item: dict[str, Any]) -> Iterable[dict[str, Any]]:
    name = required(item, "event")
    properties = obj(item, "properties")
    message_type = properties.get("message_type")
    if message_type is not None and not isinstance(message_type, str):
        fail("properties.message_type", "Not a valid string.")
    found = (where.get(key) for where in (properties, item) for key in _ORIGIN_KEYS)
    source = next((value for value in found if value is not None), None)
    if source is not None and not isinstance(source, str):
        fail("properties.source", "Not a valid string.")
    category = _category(name)
    system = compact({key: scalar(properties, key, field=f"properties.{key}") for key in _SYSTEM_KEYS})
    return [{
        "name": name,
        "category": category,
        "time": parse_time(item.get("time"), "time"),
        "user_id": text(properties, "user_id", field="properties.user_id"),
        "profile": compact({"email": text(properties, "email", field="properties.email")}),
        "data": properties,
        "system": {**system, **extras(item, ("event", "time", "properties"))},
        "origin": origin(source) if category == "subscription" else None,
        "channel": channel(message_type),
    }]
