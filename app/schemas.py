"""marshmallow schemas for everything the API takes in, and the one JSON decoder every body goes through.

Unknown fields are refused (marshmallow's default ``RAISE``), so a misspelt option is a 422 that
names it, not a silently ignored setting. ``decode_json`` reads JSON by RFC 8259 rather than by
Python's ``json`` module, so that what a schema sees, and what is stored, is JSON that can be shown again.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import sys
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from . import errors
from .filters import validate_condition
from .headers import name_validator, validate_headers
from .tls import check_ca

__all__ = [
    "CATEGORIES",
    "SOURCE_KINDS",
    "METHODS",
    "FORMATS",
    "SourceSchema",
    "DestinationSchema",
    "PolicySchema",
    "EventSchema",
    "decode_json",
]

CATEGORIES = (
    "feedback",
    "feedback_reply",
    "survey_response",
    "journey",
    "activity",
    "system",
    "subscription",
    "webhook",
)
SOURCE_KINDS = ("generic", "webengage", "xtremepush", "crossengage", "bloomreach")
SIGNATURE_TYPES = ("hmac_sha256", "standard_webhooks")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
FORMATS = ("json", "xml", "text", "form")
PAYLOAD_STYLES = ("canonical", "webengage", "xtremepush")

_EVENT_PATTERN = re.compile(r"^[A-Za-z0-9_.:*?\-\[\]!/ ]+$")
_EVENT_ID = re.compile(r"^[A-Za-z0-9_.:\-]+$")
_FIELD_PATH = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


class SignatureSchema(Schema):
    """A signature every request of the source must carry, besides (or instead of) its key."""

    type = fields.String(required=True, validate=validate.OneOf(SIGNATURE_TYPES))
    secret = fields.String(load_default=None, allow_none=True, validate=validate.Length(16, 512))
    # names of headers of inbound requests: a token (headers.py), none reserved
    header = fields.String(load_default="X-Hookgate-Signature", validate=name_validator(()))
    timestamp_header = fields.String(load_default="X-Hookgate-Timestamp", validate=name_validator(()))

    @validates_schema
    def _secret_fits(self, data: dict[str, Any], **kwargs: Any) -> None:
        secret = data.get("secret")
        if secret and data.get("type") == "standard_webhooks":  # a partial load may lack the type
            try:
                if not secret.startswith("whsec_") or len(base64.b64decode(secret[6:], validate=True)) < 24:
                    raise ValueError
            except ValueError:
                raise ValidationError("A Standard Webhooks secret is whsec_ and base64 of 24–64 bytes.",
                                      "secret") from None


class SourceSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 200))
    kind = fields.String(load_default="generic", validate=validate.OneOf(SOURCE_KINDS))
    key_required = fields.Boolean(load_default=True)
    signature = fields.Nested(SignatureSchema, load_default=None, allow_none=True)

    @validates_schema
    def _authenticated(self, data: dict[str, Any], **kwargs: Any) -> None:
        if kwargs.get("partial"):  # a change: the rule holds of the record it makes (PATCH loads that too)
            return
        if not data.get("key_required", True) and not data.get("signature"):
            raise ValidationError("A source that does not require its key must require a signature.",
                                  "key_required")


class BatchSchema(Schema):
    """Many events → one request: an item template per event, a root template around the items."""

    size = fields.Integer(required=True, validate=validate.Range(1, 1000))
    max_wait_s = fields.Float(load_default=5.0, validate=validate.Range(0, 3600))
    item_template = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64 * 1024))
    root_template = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64 * 1024))


class BreakerSchema(Schema):
    """When a failing destination pauses, how it is probed, and when it is disabled
    (``delivery/breaker.py``): it trips when ≥ ``failure_rate`` of ≥ ``min_attempts`` attempts in
    ``window_s`` failed (like Svix's and Convoy's rule), pauses ``cooldown_s`` (doubled on every
    failed probe, up to ``max_cooldown_s``), and is disabled only after failing for ``failing_for_s``."""

    enabled = fields.Boolean(load_default=True)
    failure_rate = fields.Float(load_default=0.7, validate=validate.Range(0.01, 1))
    min_attempts = fields.Integer(load_default=20, validate=validate.Range(1, 100000))
    window_s = fields.Float(load_default=300.0, validate=validate.Range(10, 86400))
    failing_for_s = fields.Float(load_default=86400.0, validate=validate.Range(60, 30 * 86400))
    cooldown_s = fields.Float(load_default=30.0, validate=validate.Range(1, 86400))
    max_cooldown_s = fields.Float(load_default=600.0, validate=validate.Range(1, 86400))

    @validates_schema
    def _cooldowns(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("max_cooldown_s", 600.0) < data.get("cooldown_s", 30.0):
            raise ValidationError("Must be at least cooldown_s.", "max_cooldown_s")


class NotifySchema(Schema):
    """Who hears about a disabled destination, repeated every ``interval_s`` until it is enabled."""

    url = fields.Url(load_default=None, allow_none=True, schemes={"http", "https"}, require_tld=False)
    email = fields.Email(load_default=None, allow_none=True)
    interval_s = fields.Float(load_default=3600.0, validate=validate.Range(60, 7 * 86400))


class DestinationSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 200))
    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2048))
    method = fields.String(load_default="POST")
    format = fields.String(load_default="json", validate=validate.OneOf(FORMATS))
    events = fields.List(
        fields.String(validate=[validate.Length(1, 200), validate.Regexp(_EVENT_PATTERN)]),
        load_default=lambda: ["*"],
        validate=validate.Length(1, 200),
    )
    categories = fields.List(fields.String(validate=validate.OneOf(CATEGORIES)), load_default=None,
                             allow_none=True, validate=validate.Length(max=len(CATEGORIES)))
    channels = fields.List(fields.String(validate=validate.Length(1, 64)), load_default=None, allow_none=True,
                           validate=validate.Length(max=50))
    sources = fields.List(fields.String(validate=validate.Length(1, 64)), load_default=None, allow_none=True,
                          validate=validate.Length(max=200))
    exclude_origins = fields.List(fields.String(validate=validate.Length(1, 64)), load_default=None,
                                  allow_none=True, validate=validate.Length(max=20))
    conditions = fields.Dict(load_default=None, allow_none=True)
    required_fields = fields.List(fields.String(validate=[validate.Length(1, 200), validate.Regexp(_FIELD_PATH)]),
                                  load_default=None, allow_none=True, validate=validate.Length(max=50))
    payload_style = fields.String(load_default="canonical", validate=validate.OneOf(PAYLOAD_STYLES))
    extra_properties = fields.Dict(keys=fields.String(validate=validate.Length(1, 100)), load_default=None,
                                   allow_none=True, validate=validate.Length(max=50))
    policy_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    auth_profile_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    https_only = fields.Boolean(load_default=False)
    fail_destination_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    batch = fields.Nested(BatchSchema, load_default=None, allow_none=True)
    circuit_breaker = fields.Nested(BreakerSchema, load_default=lambda: BreakerSchema().load({}))
    notify = fields.Nested(NotifySchema, load_default=None, allow_none=True)
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    template = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64 * 1024))
    timeout_s = fields.Float(load_default=5.0, validate=validate.Range(0.1, 60))
    # requests in flight to it at once, per worker process (the engine's adaptive limit stays below)
    max_in_flight = fields.Integer(load_default=16, strict=True, validate=validate.Range(1, 1024))
    ordered = fields.Boolean(load_default=False)  # one request at a time, in the order they came due
    enabled = fields.Boolean(load_default=True)
    retry_schedule = fields.List(
        fields.Float(validate=validate.Range(0, 7 * 86400)), load_default=None, allow_none=True,
        validate=validate.Length(max=30),
    )
    # a private CA (PEM) this destination's https URL may be signed by, trusted besides the system's
    ca_certificate = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64 * 1024))

    @validates("ca_certificate")
    def _ca(self, value: str | None, data_key: str) -> None:
        if value is not None:
            try:
                check_ca(value)
            except ValueError as exc:
                raise ValidationError(str(exc)) from None

    @validates("method")
    def _method(self, value: str, data_key: str) -> None:
        if value.upper() not in METHODS:
            raise ValidationError(f"Must be one of: {', '.join(METHODS)}.")

    @validates_schema
    def _batch_format(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("batch") and data.get("format") == "form":
            raise ValidationError("Batches are sent as json, xml or text, not form.", "batch")

    @validates("conditions")
    def _conditions(self, value: dict[str, Any] | None, data_key: str) -> None:
        if value is not None:
            problems = validate_condition(value)
            if problems:
                raise ValidationError(problems)

    @validates("headers")
    def _headers(self, value: dict[str, str], data_key: str) -> None:
        validate_headers(value)  # the one header rule (headers.py): problems by header name

    @post_load
    def _normalise(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if "method" in data:
            data["method"] = data["method"].upper()
        return data


class PolicySchema(Schema):
    """A throughput policy: at most ``concurrency`` requests at once, and ``rate_per_s`` if given."""

    name = fields.String(required=True, validate=validate.Length(1, 200))
    concurrency = fields.Integer(required=True, validate=validate.Range(1, 1000))
    rate_per_s = fields.Float(load_default=None, allow_none=True, validate=validate.Range(0.01, 100000))


class EventSchema(Schema):
    """hookgate's canonical event, as a source posts it (the ``generic`` kind)."""

    id = fields.String(validate=[validate.Length(1, 128), validate.Regexp(_EVENT_ID)])
    name = fields.String(required=True, validate=validate.Length(1, 200))
    category = fields.String(validate=validate.OneOf(CATEGORIES))
    time = fields.AwareDateTime(default_timezone=dt.UTC)
    user_id = fields.String(allow_none=True, validate=validate.Length(max=256))
    anonymous_id = fields.String(allow_none=True, validate=validate.Length(max=256))
    profile = fields.Dict(keys=fields.String(), load_default=dict)
    data = fields.Dict(keys=fields.String(), load_default=dict)
    system = fields.Dict(keys=fields.String(), load_default=dict)
    origin = fields.String(allow_none=True, validate=validate.Length(max=64))
    channel = fields.String(allow_none=True, validate=validate.Length(max=64))


# -- JSON as the API reads it -------------------------------------------------------------------------

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # in JSON text: \\ud800 to \\udfff
_SURROGATE = re.compile("[\ud800-\udfff]")  # in a decoded string
MAX_NAMED_PROBLEMS = 20  # a body of a million NaNs is not answered with a million details


class _Refused:
    """Put by the decoder's hooks where a value hookgate refuses stood, to be found and named after."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


class _Hooks:
    """``json.loads``'s hooks for one body: a refused number becomes a ``_Refused``, counted, so that
    only a body that had one is walked for them."""

    def __init__(self) -> None:
        self.refused = 0

    def _refuse(self, reason: str) -> _Refused:
        self.refused += 1
        return _Refused(reason)

    def constant(self, name: str) -> _Refused:
        return self._refuse(f"{name} is not a JSON number.")

    def fraction(self, text: str) -> float | _Refused:
        value = float(text)
        return value if math.isfinite(value) else self._refuse("Too large for a number: it would be Infinity.")

    def whole(self, text: str) -> int | _Refused:
        try:
            return int(text)
        except ValueError:  # Python's int-string limit (CVE-2020-10735)
            return self._refuse(f"A whole number has at most {sys.get_int_max_str_digits()} digits.")


def _as_text(body: bytes | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode(json.detect_encoding(body))  # strictly: json.loads would pass surrogates
    except UnicodeDecodeError as exc:
        raise errors.InvalidJSON("the body is not UTF-8", {"position": exc.start}) from None


def _parse(text: str, hooks: _Hooks, *, bounded_ints: bool) -> Any:
    try:
        return json.loads(text, parse_constant=hooks.constant, parse_float=hooks.fraction,
                          parse_int=hooks.whole if bounded_ints else None)
    except json.JSONDecodeError as exc:
        raise errors.InvalidJSON(f"the body is not valid JSON: {exc.msg}",
                                 {"line": exc.lineno, "column": exc.colno, "position": exc.pos}) from None
    except RecursionError:
        raise errors.InvalidJSON("the body is nested too deeply") from None


def _escapes_a_lone_surrogate(text: str) -> bool:
    """Whether the JSON text has a ``\\uXXXX`` escape of a surrogate that is not half of a pair (a
    pair, high then low, is two escapes the decoder joins into one character). An escape is one
    after an even run of backslashes (``\\\\ud800`` is a backslash, then text). A quick look, so that
    only such a body is walked: a scan in C, then Python only at each surrogate escape."""
    paired_at = -1
    for match in _SURROGATE_ESCAPE.finditer(text):
        start = before = match.start()
        while before and text[before - 1] == "\\":
            before -= 1
        if start == paired_at or (start - before) % 2:
            continue
        if int(match.group()[2:], 16) >= 0xDC00:  # a low surrogate, not after a high one
            return True
        low = _SURROGATE_ESCAPE.match(text, start + 6)
        if low is None or int(low.group()[2:], 16) < 0xDC00:
            return True
        paired_at = start + 6
    return False


def _shown(key: str) -> str:
    """A key as it may be shown back: a lone surrogate written as its escape, ``\\ud800``."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def _lone_surrogate(text: str) -> str | None:
    found = _SURROGATE.search(text)
    return f"Holds a lone surrogate (\\u{ord(found.group()):04x}), which is not a character." if found else None


def _refusals(value: Any) -> list[tuple[tuple[str, ...], str]]:
    """The refused values in ``value`` (a ``_Refused``, a string or key holding a lone surrogate),
    each with its path, the first ``MAX_NAMED_PROBLEMS`` in document order. Iterative: a body may be
    nested as deep as ``json`` goes. A refused key is named, not its value."""
    found: list[tuple[tuple[str, ...], str]] = []
    todo: list[tuple[tuple[str, ...], Any]] = [((), value)]
    while todo and len(found) < MAX_NAMED_PROBLEMS:
        path, item = todo.pop()
        if isinstance(item, dict):
            todo += [((*path, _shown(k)), k if _SURROGATE.search(k) else v) for k, v in reversed(item.items())]
        elif isinstance(item, list):
            todo += [((*path, str(n)), child) for n, child in reversed(list(enumerate(item)))]
        elif isinstance(item, _Refused):
            found.append((path, item.reason))
        elif isinstance(item, str) and (reason := _lone_surrogate(item)):
            found.append((path, reason))
    return found


def _refused(problems: list[tuple[tuple[str, ...], str]]) -> errors.ValidationError:
    """One 422 naming each refused value the way marshmallow does: nested by field, then by index."""
    details: dict[str, Any] = {}
    for path, reason in problems:
        *parents, last = path or ("_body",)
        node: Any = details
        for step in parents:
            node = node.setdefault(step, {}) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.setdefault(last, []), list):
            node[last].append(reason)
    return errors.ValidationError(f"invalid fields: {', '.join('.'.join(p) or '_body' for p, _ in problems)}",
                                  details)


def decode_json(body: bytes | str) -> Any:
    """A request body as JSON by RFC 8259: the one decoder of every body the API reads.

    Refused where Python's ``json`` takes them: bytes that are not UTF-8 (nor the UTF-16/32 ``json``
    detects), UTF-8-encoded surrogates among them (400 ``invalid_json``, with the position); then,
    each a 422 naming the field where it stood (``{"data": {"n": ["…"]}}``): ``NaN``, ``Infinity``,
    ``-Infinity`` and numbers that overflow to them (``1e999``), which no JSON parser reads back and
    which Flask would write out as they are; whole numbers past Python's int-string limit (4,300
    digits: ``int()`` raises a plain ``ValueError``); lone surrogates (``"\\ud800"``), which are not
    characters and fail wherever the text is encoded (a secret's encryption, Redis, a template, a
    request sent on). A body only pays for the walk that names them when it holds one.
    """
    text = _as_text(body)
    maybe_lone = isinstance(body, str) and _SURROGATE.search(text) is not None  # raw: only a str has them
    hooks = _Hooks()
    try:
        value = _parse(text, hooks, bounded_ints=False)
    except ValueError:  # an integer past the limit (JSONDecodeError is handled in _parse): again, to say where
        value = _parse(text, hooks, bounded_ints=True)
    if hooks.refused or maybe_lone or _escapes_a_lone_surrogate(text):
        problems = _refusals(value)
        if problems:
            raise _refused(problems)
    return value
