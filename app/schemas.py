"""marshmallow schemas for everything the API takes in.

Unknown fields are refused (marshmallow's default ``RAISE``), so a misspelt option is a 422 that
names it, not a silently ignored setting.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from .filters import validate_condition
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

# RFC 9110 token for header names; values may not hold CR, LF or NUL (header injection).
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\r\n\x00]")
# Headers hookgate sets itself, or that would make the request lie about its own framing.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "webhook-id", "webhook-timestamp"}
)
_EVENT_PATTERN = re.compile(r"^[A-Za-z0-9_.:*?\-\[\]!/ ]+$")
_EVENT_ID = re.compile(r"^[A-Za-z0-9_.:\-]+$")
_FIELD_PATH = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


class SignatureSchema(Schema):
    """A signature every request of the source must carry, besides (or instead of) its key."""

    type = fields.String(required=True, validate=validate.OneOf(SIGNATURE_TYPES))
    secret = fields.String(load_default=None, allow_none=True, validate=validate.Length(16, 512))
    header = fields.String(load_default="X-Hookgate-Signature", validate=validate.Regexp(_HEADER_NAME))
    timestamp_header = fields.String(load_default="X-Hookgate-Timestamp", validate=validate.Regexp(_HEADER_NAME))

    @validates_schema
    def _secret_fits(self, data: dict[str, Any], **kwargs: Any) -> None:
        secret = data.get("secret")
        if secret and data["type"] == "standard_webhooks":
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
        problems = {}
        for name, header_value in value.items():
            if not _HEADER_NAME.match(name):
                problems[name] = "Not a valid header name."
            elif name.lower() in RESERVED_HEADERS:
                problems[name] = "hookgate sets this header itself."
            elif _HEADER_VALUE_FORBIDDEN.search(header_value) or len(header_value) > 8192:
                problems[name] = "Header values may not contain CR, LF or NUL, or exceed 8192 characters."
        if len(value) > 50:
            problems["_"] = "At most 50 headers."
        if problems:
            raise ValidationError(problems)

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
