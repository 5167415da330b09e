"""The ``webengage`` kind: WebEngage's webhooks (seed 003, WebEngage "Webhooks": Data Platform >
Integrations > Webhooks).

Shapes, one object or a list of them:

- **events** (Events, Activity Events, Global System/Application Events and Journey webhooks):
  ``{event_name, event_time, event_data, system_data, category, user_id, anonymous_id, license_code}``
  (journeys add ``resource`` and ``version``). ``event_data`` → ``data``; ``system_data`` and every other
  top-level key (``license_code``, WebEngage's own ``category``, ``resource``…) → ``system``.
  Category: ``journey_*`` (created, updated, activated, deactivated, deleted) or ``resource: Journey`` →
  journey; WebEngage category ``application`` → activity; opt-in/out or subscription names → subscription;
  WebEngage category ``system`` or a campaign-channel name (``email_*``, ``sms_*``,
  ``push_notification_*``…) → system, with that channel; anything else → activity.
- **feedback / feedback reply / survey response** (FEEDBACK_SUBMIT, FEEDBACK_REPLY_SUBMIT,
  SURVEY_RESPONSE_SUBMIT webhooks; JSON or XML): "the same data as the /feedback/<id>,
  /feedback/<id>/replies and /survey/response/<id> API calls" — the API's ``{"response": {"data": …}}``
  container or the bare data object. Told apart by shape: ``questionResponses``/``surveyId`` → survey
  response, ``fields`` → feedback, ``feedbackId``/``replyText``/``repliedBy`` → feedback reply. The data
  object is kept as ``data`` plus ``answers`` (label or question → plain value).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from xml.etree.ElementTree import Element

from ..errors import ValidationError
from . import xml
from ._common import (
    compact,
    extras,
    fail,
    is_subscription_name,
    obj,
    parse_items,
    parse_time,
    required,
    safe_id,
    text,
)

__all__ = ["parse", "parse_xml"]

_SUBMIT_NAMES = {
    "feedback": "FEEDBACK_SUBMIT",
    "feedback_reply": "FEEDBACK_REPLY_SUBMIT",
    "survey_response": "SURVEY_RESPONSE_SUBMIT",
}
_CATEGORY_OF_NAME = {name: category for category, name in _SUBMIT_NAMES.items()}
_EVENT_KEYS = ("event_name", "event_time", "event_data", "system_data", "user_id", "anonymous_id")
# Campaign event names start with their channel: email_open, sms_sent, push_notification_accepted…
_CHANNEL_PREFIXES = (
    ("push_notification", "push"), ("web_push", "webpush"), ("in_app", "inapp"),
    ("app_personalization", "inapp"), ("web_personalization", "onsite"), ("notification", "onsite"),
    ("email", "email"), ("sms", "sms"), ("whatsapp", "whatsapp"), ("inbox", "inbox"),
)
_REPLY_KEYS = ("feedbackId", "replyText", "repliedBy")
_NOT_WEBENGAGE = (
    "Not a WebEngage webhook body: expected an event (event_name), a feedback (fields), "
    "a feedback reply (feedbackId) or a survey response (questionResponses)."
)


def parse(payload: Any) -> list[dict[str, Any]]:
    return parse_items(payload, _parse_item)


def parse_xml(root: Element) -> list[dict[str, Any]]:
    """A feedback, feedback reply or survey response webhook sent as XML (``<response><data>…``)."""
    tag = root.tag.rsplit("}", 1)[-1]
    value = xml.to_dict(root)
    if not isinstance(value, dict):
        raise ValidationError("the XML body is not a WebEngage feedback or survey response",
                              {"_body": [_NOT_WEBENGAGE]})
    if tag == "response":
        return parse({"response": value})
    return parse_items(value, lambda item: [_resource(item, hint=tag)])


def _parse_item(item: dict[str, Any]) -> Iterable[dict[str, Any]]:
    if "event_name" in item:
        return [_event(item)]
    if isinstance(item.get("response"), dict):
        response = item["response"]
        if response.get("status") == "error":
            fail("response", f"WebEngage sent an error response: {response.get('message')!r}.")
        data = response.get("data")
        if isinstance(data, list):
            if not all(isinstance(entry, dict) for entry in data):
                fail("response.data", "Each entry is an object.")
            return [_resource(entry) for entry in data]
        if not isinstance(data, dict):
            fail("response.data", "Expected the feedback, feedback reply or survey response object.")
        return [_resource(data)]
    return [_resource(item)]


def _event(item: dict[str, Any]) -> dict[str, Any]:
    name = required(item, "event_name")
    wcategory = item.get("category") if isinstance(item.get("category"), str) else None
    resource = item.get("resource") if isinstance(item.get("resource"), str) else None
    channel = _channel_of(name) if (wcategory or "").lower() != "application" else None
    return {
        "name": name,
        "category": _category(name, wcategory, resource, channel),
        "time": parse_time(item.get("event_time"), "event_time"),
        "user_id": text(item, "user_id"),
        "anonymous_id": text(item, "anonymous_id"),
        "data": obj(item, "event_data"),
        "system": {**obj(item, "system_data"), **extras(item, _EVENT_KEYS)},
        "channel": channel,
    }


def _channel_of(name: str) -> str | None:
    lowered = name.lower()
    for prefix, channel in _CHANNEL_PREFIXES:
        if lowered.startswith(prefix + "_"):
            return channel
    return None


def _category(name: str, wcategory: str | None, resource: str | None, channel: str | None) -> str:
    if name.upper() in _CATEGORY_OF_NAME:
        return _CATEGORY_OF_NAME[name.upper()]
    if name.lower().startswith("journey_") or (resource or "").lower() == "journey":
        return "journey"
    if (wcategory or "").lower() == "application":
        return "activity"
    if is_subscription_name(name):
        return "subscription"
    if (wcategory or "").lower() == "system" or channel:
        return "system"
    return "activity"


def _kind(data: dict[str, Any], hint: str | None) -> str:
    hint = (hint or "").lower()
    if "survey" in hint or "questionResponses" in data or "surveyId" in data:
        return "survey_response"
    if "reply" in hint or ("fields" not in data and any(key in data for key in _REPLY_KEYS)):
        return "feedback_reply"
    if "feedback" in hint or "fields" in data:
        return "feedback"
    fail("_schema", _NOT_WEBENGAGE)


def _resource(data: dict[str, Any], hint: str | None = None) -> dict[str, Any]:
    kind = _kind(data, hint)
    own_id = text(data, "id")
    activity = data["activity"] if isinstance(data.get("activity"), dict) else {}
    moment = next((data[k] for k in ("creationTime", "time", "timestamp") if data.get(k) is not None), None)
    survey = kind == "survey_response"
    key, label_key = ("questionResponses", "questionText") if survey else ("fields", "label")
    answers, profile = _answers(data.get(key), label_key, key)
    id_key = {"feedback": "feedback_id", "feedback_reply": "reply_id", "survey_response": "response_id"}[kind]
    return {
        "id": safe_id(own_id),
        "name": _SUBMIT_NAMES[kind],
        "category": kind,
        "time": parse_time(moment, "creationTime"),
        "user_id": text(data, "userId") or text(data, "cuid")
        or text(activity, "userId", field="activity.userId"),
        "anonymous_id": text(data, "luid") or text(data, "anonymousId")
        or text(activity, "luid", field="activity.luid"),
        "profile": profile,
        "data": {**data, "answers": answers},
        "system": compact({
            "license_code": data.get("licenseCode"),
            "survey_id": data.get("surveyId"),
            "feedback_id": data.get("feedbackId"),  # a reply's thread
            id_key: own_id,
        }),
    }


def _answers(entries: Any, label_key: str, field: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``[{label, value: {"@class": "email", "text": …}}]`` → ``{label: text}``, and the profile named."""
    answers: dict[str, Any] = {}
    profile: dict[str, Any] = {}
    if isinstance(entries, dict):  # one entry, as XML may give it
        entries = [entries]
    if entries is not None and not isinstance(entries, list):
        fail(field, "Expected a list of answers.")
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        plain = _answer_value(entry.get("value"), profile)
        label = entry.get(label_key) or entry.get("questionId") or entry.get("id")
        if isinstance(label, str):
            answers[label] = plain
    return answers, profile


def _answer_value(value: Any, profile: dict[str, Any]) -> Any:
    """An answer's value as plain data: its ``text`` or ``values``, else the value without its
    ``@class``. A text classed as a name, email, phone or mobile goes into ``profile`` too."""
    if not isinstance(value, dict):
        return value
    plain = next((value[k] for k in ("text", "values") if k in value), {
        k: v for k, v in value.items() if k != "@class"
    })
    if value.get("@class") in ("name", "email", "phone", "mobile") and isinstance(plain, str):
        profile[value["@class"]] = plain
    return plain
