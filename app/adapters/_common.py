"""Helpers shared by the platform adapters (webengage, xtremepush, crossengage, bloomreach).

An adapter parses one item (a JSON object) into raw canonical fields; ``collect`` runs it over every
item of a request, validates each result with ``EventSchema`` (so what comes out is exactly what
``EventSchema().load()`` produces) and raises one ``ValidationError`` whose details are keyed by item
index, like the generic kind. Nothing here lets a ``KeyError``/``TypeError`` escape: an item that is
not what the platform sends is an ``ItemError``, reported against its index.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import marshmallow

from ..errors import ValidationError
from ..events import MAX_EVENTS_PER_REQUEST, check_count
from ..schemas import EventSchema, decode_json

__all__ = [
    "ItemError", "fail", "collect", "parse_items", "parse_time", "text", "required", "scalar", "obj",
    "extras", "safe_id", "channel", "known_channel", "origin", "compact", "loads_lenient",
    "is_subscription_name", "is_message_action",
]

_schema = EventSchema()
_ID_OK = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")
_STRING_OR_COMMENT = re.compile(r'"(?:\\.|[^"\\])*+"?|//[^\r\n]*')

# A subscription change (not the ``unsubscribe`` message event, which is a campaign event → system).
_SUBSCRIPTION = re.compile(r"opt[_\-\s.]?(in|out)|subscription|preference|consent", re.IGNORECASE)
# Words naming what happened to a message: send, delivery, open, click, bounce, unsubscribe, failure…
MESSAGE_ACTIONS = frozenset(
    ["send", "sent", "delivery", "delivered", "deliver", "open", "opened", "click", "clicked", "bounce", "bounced",
     "hard_bounce", "soft_bounce", "unsubscribe", "unsubscribed", "failure", "failed", "fail", "error", "errors",
     "impression", "view", "viewed", "read", "accepted", "rejected", "dismissed", "close", "closed", "complaint",
     "complained", "spam", "dropped", "deferred", "queued", "received", "shown", "reply", "replied", "undelivered"]
)

_CHANNELS = {
    "email": "email", "e_mail": "email", "mail": "email",
    "sms": "sms", "text_message": "sms", "mms": "sms",
    "push": "push", "mobile_push": "push", "push_notification": "push", "app_push": "push",
    "mobile_notification": "push", "ios": "push", "android": "push",
    "webpush": "webpush", "web_push": "webpush", "browser_push": "webpush", "web_notification": "webpush",
    "inapp": "inapp", "in_app": "inapp", "in_app_message": "inapp", "app_inline": "inapp",
    "whatsapp": "whatsapp", "wa": "whatsapp",
    "onsite": "onsite", "on_site": "onsite", "inbox": "inbox", "app_inbox": "inbox", "webhook": "webhook",
}
_ORIGINS = {
    "ui": "ui", "dashboard": "ui", "manual": "ui", "user_interface": "ui", "platform": "ui", "admin": "ui",
    "import": "import", "imports": "import", "csv": "import", "csv_import": "import", "file": "import",
    "api_import": "import", "bulk": "import",
    "api": "api", "rest": "api", "rest_api": "api", "external_api": "api",
    "sdk": "sdk", "mobile_sdk": "sdk", "web_sdk": "sdk",
    "integration": "integration", "integrations": "integration", "connector": "integration",
}


class ItemError(Exception):
    """One item is not what the platform sends; ``messages`` is marshmallow-style ``{field: [msg]}``."""

    def __init__(self, messages: dict[str, Any]):
        super().__init__(str(messages))
        self.messages = messages


def fail(field: str, message: str) -> NoReturn:
    raise ItemError({field: [message]})


def parse_items(payload: Any, parse_item: Callable[[Any], Iterable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One object or a list of them (the shape every platform here sends)."""
    if isinstance(payload, list):
        return collect(payload, parse_item, single=False)
    return collect([payload], parse_item, single=True)


def collect(
    items: list[Any], parse_item: Callable[[Any], Iterable[dict[str, Any]]], *, single: bool
) -> list[dict[str, Any]]:
    check_count(items)
    events: list[dict[str, Any]] = []
    errors: dict[str, Any] = {}
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                fail("_schema", "An event is a JSON object.")
            loaded = [_schema.load(_drop_none(raw)) for raw in parse_item(item)]
        except ItemError as exc:
            errors[str(index)] = exc.messages
        except marshmallow.ValidationError as exc:
            errors[str(index)] = exc.messages
        else:
            events.extend(loaded)
    if errors:
        if single:
            raise ValidationError("the event is not valid", errors["0"])
        raise ValidationError(f"{len(errors)} of {len(items)} events are not valid", errors)
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise ValidationError(
            f"at most {MAX_EVENTS_PER_REQUEST} events per request",
            {"_body": [f"The request holds {len(events)} events; split it."]},
        )
    return events


def _drop_none(raw: dict[str, Any]) -> dict[str, Any]:
    # What the platform did not say is left out (id, time and category may not even be null).
    return {k: v for k, v in raw.items() if v is not None}


def parse_time(value: Any, field: str) -> dt.datetime | None:
    """ISO 8601 (``Z``, ``+00:00``, ``+0000``; naive → UTC) or epoch s/ms/µs (number or digits) → aware."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and _NUMERIC.match(value.strip()):
        value = float(value)
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, (int, float)):
            seconds = float(value)
            if abs(seconds) >= 1e14:
                seconds /= 1_000_000
            elif abs(seconds) >= 1e11:
                seconds /= 1000
            return dt.datetime.fromtimestamp(seconds, dt.UTC)
        if isinstance(value, str):
            iso = value.strip()
            iso = iso[:-1] + "+00:00" if iso.endswith(("Z", "z")) else _OFFSET.sub(r"\1:\2", iso)
            moment = dt.datetime.fromisoformat(iso)
            return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError, OSError, TypeError):
        pass
    fail(field, "Not a valid time: send an ISO 8601 string or a UNIX timestamp (seconds or milliseconds).")


def text(item: dict[str, Any], key: str, *, required: bool = False, field: str | None = None) -> str | None:
    """A string (numbers are accepted and turned into strings: platforms send ids either way)."""
    value = item.get(key)
    if value is None or value == "":
        if required:
            fail(field or key, "Missing data for required field.")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        fail(field or key, "Not a valid string.")
    return str(value)


def required(item: dict[str, Any], key: str) -> str:
    """The event name every shape has: a non-empty string."""
    value = text(item, key, required=True)
    return value if value is not None else fail(key, "Missing data for required field.")


def scalar(item: dict[str, Any], key: str, *, field: str | None = None) -> str | int | float | None:
    """A metadata value kept as sent (``"channelConfigId": 31`` stays 31): a string or a number."""
    value = item.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        fail(field or key, "Not a valid string or number.")
    return value


def extras(item: dict[str, Any], consumed: Iterable[str]) -> dict[str, Any]:
    """Top-level keys an adapter does not map itself: kept in ``system`` so nothing sent is lost."""
    skip = set(consumed)
    return {k: v for k, v in item.items() if k not in skip}


def obj(item: dict[str, Any], key: str, *, field: str | None = None) -> dict[str, Any]:
    """A JSON object (null or absent → ``{}``)."""
    value = item.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        fail(field or key, "Not a valid object.")
    return dict(value)


def safe_id(value: str | None) -> str | None:
    """The platform's id if hookgate can use it as an event id, else a stable digest of it."""
    if value is None:
        return None
    if _ID_OK.match(value):
        return value
    return "sha1:" + hashlib.sha1(value.encode("utf-8")).hexdigest()


def _token(value: str) -> str:
    return re.sub(r"[\s\-]+", "_", value.strip().lower())


def _normalised(value: Any, table: dict[str, str]) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    token = _token(value)
    return table.get(token, token[:64])


def channel(value: Any) -> str | None:
    """A platform's channel/message type → hookgate's channel names (unknown ones kept, normalised)."""
    return _normalised(value, _CHANNELS)


def known_channel(value: str) -> str | None:
    """Only a name hookgate knows as a channel (for channel prefixes of event names: ``whatsapp.read``)."""
    return _CHANNELS.get(_token(value))


def origin(value: Any) -> str | None:
    """A change's source → ui, import, api, sdk, integration (unknown ones kept, normalised)."""
    return _normalised(value, _ORIGINS)


def is_subscription_name(name: str) -> bool:
    return bool(_SUBSCRIPTION.search(name))


def is_message_action(word: str) -> bool:
    return _token(word) in MESSAGE_ACTIONS


def compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def loads_lenient(body: str | bytes) -> Any:
    """JSON that may carry ``//`` line comments, as the platforms' documented examples do.

    WebEngage's own example bodies annotate a value with ``// …``; strict JSON refuses them. Comments
    are removed only outside strings (a URL's ``//`` is kept), then the text is read by the API's one
    decoder (``schemas.decode_json``: its ``InvalidJSON`` and ``ValidationError``); a body that is
    not UTF-8 raises ``UnicodeDecodeError``.
    """
    source = body.decode("utf-8") if isinstance(body, bytes) else body
    return decode_json(_STRING_OR_COMMENT.sub(_keep_strings, source))


def _keep_strings(match: re.Match[str]) -> str:
    return match.group(0) if match.group(0).startswith('"') else ""
