"""The ``crossengage`` kind: CrossEngage webhook events (seed 001, CrossEngage "Response Data and Custom
Events"; seed 000, "Set up Batch Webhook Integration", for batches).

Shape, one object or a list of them (a batch webhook sends 50 to 1000 at once):
``{"campaignId", "campaignExternalReferenceId", "messageId", "channelConfigExternalReferenceId",
"channelConfigId", "event": "whatsapp.xxx", "properties": {…}}``.

- ``properties`` → ``data`` as sent; the campaign/message references → ``system`` as ``campaign_id``,
  ``campaign_external_reference_id``, ``message_id``, ``channel_config_id``,
  ``channel_config_external_reference_id`` (with any other top-level key, kept under its own name).
- ``event`` is ``<channel>.<action>``: a known channel prefix (whatsapp, email, sms, push…) → ``channel``.
- Category: CrossEngage's webhook message events "Webhook Delivered" (2xx), "Webhook Bounced" (5xx)
  and "Errors" (4xx) → system (channel webhook); ``<channel>.<message action>`` (sent, delivered, read,
  opened, clicked, bounced, unsubscribed, failed…) → system; opt-in/out or subscription names →
  subscription; every other custom event (``whatsapp.xxx``) → activity.
- The seed shows no user or time fields; ``userId``/``externalId`` (top level or in ``properties``) →
  user_id, ``email`` → ``profile.email`` and ``timestamp``/``time`` (ISO or epoch) → time when present.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ._common import (
    compact,
    extras,
    is_message_action,
    is_subscription_name,
    known_channel,
    obj,
    parse_items,
    parse_time,
    required,
    scalar,
    text,
)

__all__ = ["parse"]

_REFERENCES = {
    "campaignId": "campaign_id",
    "campaignExternalReferenceId": "campaign_external_reference_id",
    "messageId": "message_id",
    "channelConfigId": "channel_config_id",
    "channelConfigExternalReferenceId": "channel_config_external_reference_id",
}
_WEBHOOK_EVENTS = {
    "webhook_delivered", "webhook_bounced", "errors", "error", "webhook_error", "webhook_errors",
}
_USER_KEYS = ("userId", "externalId", "user_id")
_CONSUMED = ("event", "properties", "timestamp", "time", "email", *_USER_KEYS, *_REFERENCES)


def parse(payload: Any) -> list[dict[str, Any]]:
    return parse_items(payload, _parse_item)


def _classify(name: str) -> tuple[str, str | None]:
    """(category, channel) of a CrossEngage event name."""
    token = re.sub(r"[\s.\-]+", "_", name.strip().lower())
    if token in _WEBHOOK_EVENTS:
        return "system", "webhook"
    head, dot, action = name.partition(".")
    channel = known_channel(head) if dot else None
    if is_subscription_name(name):
        return "subscription", channel
    if channel and any(is_message_action(word) for word in re.split(r"[_.\s\-]+", action) if word):
        return "system", channel
    return "activity", channel


def _first_text(where: list[tuple[dict[str, Any], str]], keys: Iterable[str]) -> str | None:
    for source, prefix in where:
        for key in keys:
            value = text(source, key, field=prefix + key)
            if value is not None:
                return value
    return None


def _parse_item(item: dict[str, Any]) -> Iterable[dict[str, Any]]:
    name = required(item, "event")
    properties = obj(item, "properties")
    where = [(item, ""), (properties, "properties.")]
    category, channel = _classify(name)
    moment = next((item[key] for key in ("timestamp", "time") if item.get(key) is not None), None)
    references = compact({ours: scalar(item, theirs) for theirs, ours in _REFERENCES.items()})
    return [{
        "name": name,
        "category": category,
        "time": parse_time(moment, "timestamp"),
        "user_id": _first_text(where, _USER_KEYS),
        "profile": compact({"email": _first_text(where, ("email",))}),
        "data": properties,
        "system": {**references, **extras(item, _CONSUMED)},
        "channel": channel,
    }]
