"""SMS: Twilio (``sms.twilio``), CM.com Business Messaging (``sms.cm``, a batch) and Vonage (``sms.vonage``).

Each preset sends one text to the event's phone number (``profile.phone``, else ``data.phone``); an
event without one (or with something that is not a phone number: 6 to 15 digits, ``+`` or ``00``
before the country code) is skipped with that reason, never sent. The text is ``data.message``, else
the event's name made readable (``order_completed`` → ``Order completed``), cut to 1,600 characters.

How each destination answers, and how hookgate reads it:

- **Twilio** answers ``201`` with the message (``sid``, ``status: queued``) → delivered, or an error
  ``{"code": 21211, "message": ..., "more_info": ..., "status": 400}`` → error with the reason
  ``twilio 21211: <message>`` (21211, 21212, 21610, 21608 and every other 4xx code are permanent);
  ``429`` / code 20429 (too many concurrent requests) and 5xx bounce (retried).
- **CM.com** answers a whole batch at once, message by message: ``{"details", "errorCode",
  "messages": [{"to", "status": "Accepted"|"Rejected", "reference", "parts", "messageDetails",
  "messageErrorCode"}]}`` (``200``, or ``400`` with errorCode 201 when every message was rejected).
  Each message is matched to its event by ``reference`` (the event id: CM allows 1–32 alphanumeric
  characters, so the id is sent without its ``_``), and by position when a message carries no
  reference; Accepted → delivered, Rejected → error with ``cm <messageErrorCode>: <messageDetails>``.
  A request CM refused as a whole (errorCode 101 bad token, 102 no balance, 103, 202, 203) is an error
  for every event; 5xx (and errorCode 500) bounce. An event the answer does not mention is an error
  (not retried, so it cannot be sent twice).
- **Vonage** always answers HTTP 200; the outcome is each ``messages[].status`` (a string):
  ``"0"`` delivered; ``"1"`` throttled, ``"5"`` internal error, ``"10"`` too many binds bounce
  (retried); any other status is an error with Vonage's ``error-text``. A long text goes out as
  several parts: if some were sent and others failed, it is an error (a retry would resend the
  parts that went).

Template filters (prefixed ``sms_``; any template may use them):

- ``text | sms_b64``: base64 of the UTF-8 text (Twilio's ``Authorization: Basic``).
- ``event | sms_phone(style)``: the event's phone number (or a number) normalised: ``e164``
  (``+15555550100``, Twilio), ``00`` (``0015555550100``, CM.com) or ``digits`` (``15555550100``,
  Vonage); a number without a country prefix keeps its digits. None when there is none.
- ``event | sms_text(limit=1600)``: the text to send (see above), cut to ``limit`` characters with ``…``.
- ``event.id | sms_reference``: the id as CM.com's reference (alphanumeric, at most 32 characters).
- ``text | sms_gsm7``: whether every character is in the GSM 03.38 alphabet (or its extension table).

And one global, ``sms_fail(message)``, which stops the render with ``message``. ``sms.twilio`` needs
``from`` or ``messaging_service_sid``: ``check_sender`` refuses a destination without either (422),
and its template still fails a render without one (a template edited by hand).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from hookgate import Verdict, hookimpl, load_preset

__all__ = ["TWILIO", "CM", "VONAGE", "classify_cm", "classify_twilio", "classify_vonage", "screen", "sms_b64",
           "sms_fail", "sms_gsm7", "sms_phone", "sms_reference", "sms_text"]

TWILIO = "sms.twilio"
CM = "sms.cm"
VONAGE = "sms.vonage"

TEXT_LIMIT = 1600
REASON_MAX = 300

# Twilio: the errors the reference names as permanent (21211 invalid To, 21212 invalid From, 21610
# unsubscribed recipient, 21608 unverified number on a trial account); every other 4xx is an error
# too. 20429: too many concurrent requests, safe to retry.
TWILIO_PERMANENT = frozenset({21211, 21212, 21610, 21608})
TWILIO_RETRY = frozenset({20429})

# CM.com errorCode of a request refused as a whole (text-sdk's TextClientStatusCodes).
CM_REQUEST_ERRORS = {101: "authentication failed", 102: "balance insufficient", 103: "product token incorrect",
                     202: "request malformed", 203: "msg array incorrect"}
CM_RETRY = frozenset({500})

# Vonage SMS API statuses worth another try: 1 throttled, 5 internal error, 10 too many binds.
VONAGE_RETRY = frozenset({"1", "5", "10"})

_SEPARATORS = re.compile(r"[\s\-().\/]")
_DIGITS = re.compile(r"[0-9]{6,15}")
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
    "\f^{}\\[~]|€"  # the extension table (two septets each)
)


class SmsTemplateError(Exception):
    """Raised by ``sms_fail``: the render stops with this message."""


# -- helpers (template filters and globals) ------------------------------------------------------------

def sms_b64(value: Any) -> str:
    return base64.b64encode(str(value).encode()).decode("ascii")


def _raw_phone(event: dict[str, Any]) -> tuple[str, str] | None:
    """(where, value) of the event's phone number: profile.phone, else data.phone."""
    for where in ("profile", "data"):
        section = event.get(where)
        value = section.get("phone") if isinstance(section, dict) else None
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return f"{where}.phone", str(value).strip()
    return None


def _split_number(value: str) -> tuple[bool, str] | None:
    """(has a country prefix, digits) of a phone number, or None if it is not one."""
    text = _SEPARATORS.sub("", value)
    international = text.startswith(("+", "00"))
    digits = text[1:] if text.startswith("+") else text[2:] if text.startswith("00") else text
    if not _DIGITS.fullmatch(digits):
        return None
    return international, digits


def sms_phone(value: Any, style: str = "e164") -> str | None:
    """An event's (or a number's) phone number in ``style``: ``e164`` (+…), ``00`` (00…) or ``digits``."""
    if isinstance(value, dict):
        found = _raw_phone(value)
        value = found[1] if found else None
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    parts = _split_number(str(value))
    if parts is None:
        return None
    international, digits = parts
    if not international or style == "digits":
        return digits
    return ("00" if style == "00" else "+") + digits


def sms_text(event: Any, limit: int = TEXT_LIMIT) -> str:
    """``data.message``, else the event's name made readable; at most ``limit`` characters."""
    event = event if isinstance(event, dict) else {}
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    message = data.get("message")
    if isinstance(message, (int, float)) and not isinstance(message, bool):
        message = str(message)
    if not isinstance(message, str) or not message.strip():
        name = re.sub(r"[._\-]+", " ", str(event.get("name") or "")).strip()
        message = (name[:1].upper() + name[1:]) if name else "Notification"
    limit = max(1, int(limit))
    return message if len(message) <= limit else message[: limit - 1] + "…"


def sms_reference(value: Any) -> str:
    """An event id as CM.com's message reference: 1–32 alphanumeric characters."""
    return re.sub(r"[^A-Za-z0-9]", "", str(value))[:32]


def sms_gsm7(value: Any) -> bool:
    return all(ch in GSM7 for ch in str(value))


def sms_fail(message: Any) -> str:
    raise SmsTemplateError(str(message))


FILTERS = {"sms_b64": sms_b64, "sms_phone": sms_phone, "sms_text": sms_text, "sms_reference": sms_reference,
           "sms_gsm7": sms_gsm7}


def screen(event: dict[str, Any], params: dict[str, Any]) -> str | None:
    """Skip an event that has no phone number to send to."""
    found = _raw_phone(event)
    if found is None:
        return "no phone number: the event has neither profile.phone nor data.phone"
    where, value = found
    if _split_number(value) is None:
        return f"{where} is not a phone number (6 to 15 digits, + or 00 before the country code)"
    return None


def check_sender(values: dict[str, Any]) -> dict[str, list[str]] | None:
    """Twilio needs a sender: a ``from`` number or a messaging service."""
    if values.get("from") or values.get("messaging_service_sid"):
        return None
    return {"from": ["Give from or messaging_service_sid: Twilio needs a sender."]}


# -- hooks --------------------------------------------------------------------------------------------

@hookimpl
def register_presets(register):
    for name in (TWILIO, CM, VONAGE):
        register(load_preset(name, screen=screen, check=check_sender if name == TWILIO else None))


@hookimpl
def register_template_filters():
    return dict(FILTERS)


@hookimpl
def register_template_globals():
    return {"sms_fail": sms_fail}


@hookimpl
def classify_response(preset, response, references):
    if preset.name == TWILIO:
        return classify_twilio(response)
    if preset.name == CM:
        return classify_cm(response, references)
    if preset.name == VONAGE:
        return classify_vonage(response)
    return None


def _short(text: Any) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _json_object(response: Any) -> dict[str, Any] | None:
    answer = response.json()
    return answer if isinstance(answer, dict) else None


def classify_twilio(response: Any) -> Verdict | None:
    status = response.status_code
    if status is None:
        return None
    answer = _json_object(response) or {}
    if 200 <= status < 300:
        error_code = answer.get("error_code")
        if error_code not in (None, "", 0) or answer.get("status") in ("failed", "undelivered"):
            detail = answer.get("error_message") or answer.get("status")
            return Verdict("error", reason=_short(f"twilio {error_code}: {detail}"))
        return None
    code = _int(answer.get("code"))
    message = answer.get("message")
    reason = None if code is None else _short(f"twilio {code}: {message}" if message else f"twilio {code}")
    if status == 429 or code in TWILIO_RETRY:
        return Verdict("bounced", reason=reason or "twilio: 429 too many requests")
    if status >= 500:
        return Verdict("bounced", reason=reason) if reason else None
    if reason:
        return Verdict("error", reason=reason)
    return None


def _cm_message_verdict(message: dict[str, Any]) -> Verdict:
    status = str(message.get("status") or "").strip().lower()
    if status == "accepted":
        return Verdict("delivered")
    code = _int(message.get("messageErrorCode"))
    details = message.get("messageDetails") or (f"status {message.get('status')!r}" if status != "rejected"
                                                else "rejected")
    reason = _short(f"cm {code}: {details}" if code is not None else f"cm: {details}")
    return Verdict("bounced" if code in CM_RETRY else "error", reason=reason)


def classify_cm(response: Any, references: list[str]) -> Verdict | None:
    status = response.status_code
    if status is None:
        return None
    answer = _json_object(response)
    if status >= 500:
        return _cm_server_error(answer)
    if answer is None:
        return None  # not CM's JSON: hookgate's rule by status code
    error_code = _int(answer.get("errorCode"))
    details = answer.get("details") or CM_REQUEST_ERRORS.get(error_code or 0, "")
    messages = _cm_messages(answer)
    if messages and error_code not in CM_REQUEST_ERRORS:
        return Verdict("error", reason="cm: the answer has no outcome for this message",
                       items=_cm_items(messages, references))
    if error_code in CM_RETRY:
        return Verdict("bounced", reason=_short(f"cm {error_code}: {details}"))
    if error_code not in (None, 0) or status >= 400:
        return Verdict("error", reason=_short(f"cm {error_code}: {details}" if error_code is not None
                                              else f"cm: HTTP {status}"))
    return None


def _cm_server_error(answer: dict[str, Any] | None) -> Verdict | None:
    """A 5xx: retried with CM's reason when its JSON gives one, else hookgate's rule by status code."""
    if answer is not None and answer.get("details"):
        return Verdict("bounced", reason=_short(f"cm {answer.get('errorCode')}: {answer['details']}"))
    return None


def _cm_messages(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-message answers (objects only; none unless ``messages`` is a list)."""
    messages = answer.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _cm_items(messages: list[dict[str, Any]], references: list[str]) -> dict[str, Verdict]:
    """Each answered message's verdict under its event id: by reference, else by position."""
    by_reference: dict[str, str] = {}
    for event_id in references:
        by_reference.setdefault(sms_reference(event_id), event_id)
        by_reference[event_id] = event_id
    items: dict[str, Verdict] = {}
    unreferenced: list[tuple[int, dict[str, Any]]] = []
    for position, message in enumerate(messages):
        reference = message.get("reference")
        if reference in (None, ""):
            unreferenced.append((position, message))
            continue
        matched = by_reference.get(str(reference))
        if matched is not None and matched not in items:
            items[matched] = _cm_message_verdict(message)
    for position, message in unreferenced:
        if position < len(references) and references[position] not in items:
            items[references[position]] = _cm_message_verdict(message)
    return items


def classify_vonage(response: Any) -> Verdict | None:
    status = response.status_code
    if status is None or not 200 <= status < 300:
        return None  # 5xx bounce, 4xx are errors: hookgate's rule
    answer = _json_object(response)
    messages = answer.get("messages") if answer is not None else None
    if not isinstance(messages, list) or not messages:
        return Verdict("error", reason="vonage: the answer has no messages[]")
    parts = [m if isinstance(m, dict) else {} for m in messages]
    failed = [m for m in parts if str(m.get("status", "")).strip() != "0"]
    if not failed:
        return None
    return _vonage_failure(parts, failed)


def _vonage_failure(parts: list[dict[str, Any]], failed: list[dict[str, Any]]) -> Verdict:
    """Some part was not sent: the first failure's reason; retried only if no part was sent and every
    failure is one Vonage says to retry."""
    first = failed[0]
    code = str(first.get("status", "")).strip() or "?"
    reason = _short(f"vonage {code}: {first.get('error-text') or 'no error-text'}")
    if len(failed) < len(parts):
        return Verdict("error", reason=f"{reason} ({len(parts) - len(failed)} of {len(parts)} parts were sent)")
    if all(str(m.get("status", "")).strip() in VONAGE_RETRY for m in failed):
        return Verdict("bounced", reason=reason)
    return Verdict("error", reason=reason)
