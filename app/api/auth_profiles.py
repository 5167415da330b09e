"""``/v1/auth-profiles``: reusable outbound credentials — create, list, read, update, delete, test, rotate.

Every body is ``{"name", "type", "endpoint_prefix", "ca_certificate"?, …fields of the type}``, checked by
the type's marshmallow schema (unknown fields refused). Secrets are write-only: every answer masks
them; a generated signing secret is shown once, in the answer that created it. The type of a profile
does not change (PATCH with another ``type`` is a 422); a PATCH replaces the fields it names.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, request
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from ..auth_profiles import (
    DEFAULT_GRACE_S,
    MASK,
    TYPES,
    AuthProfileStore,
    check_ca,
    check_certificate_pair,
    public,
)
from ..destinations import DestinationStore
from ..errors import Conflict
from ..errors import ValidationError as Invalid
from ..oauth import valid_domain
from ..outbound_auth import probe
from . import load, query_limit, read_json, require_admin, runtime

bp = Blueprint("auth_profiles", __name__, url_prefix="/v1/auth-profiles")
bp.before_request(require_admin)

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token: a header name
_NO_CTL = re.compile(r"^[^\x00-\x1f\x7f]*$")  # no CR, LF, NUL or other controls in values
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-type",
                       "webhook-id", "webhook-timestamp", "webhook-signature", "x-hookgate-delivery",
                       "x-hookgate-attempt"})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _text(maximum: int, *, required: bool = True, minimum: int = 1) -> fields.String:
    """A string with no control characters (it ends up in a header, a URL or a form)."""
    checks = [validate.Length(minimum, maximum),
              validate.Regexp(_NO_CTL, error="Control characters (CR, LF, NUL…) are not allowed.")]
    return fields.String(required=required, validate=checks)


def _check_header_name(value: str) -> None:
    if not _TOKEN.match(value):
        raise ValidationError("Not a valid header name (RFC 9110 token).")
    if value.lower() in _RESERVED:
        raise ValidationError("hookgate sets this header itself.")


def _header_name(**kwargs: Any) -> fields.String:
    return fields.String(validate=[validate.Length(1, 128), _check_header_name], **kwargs)


def _not_mask(value: Any) -> None:
    if value == MASK:
        raise ValidationError("Send the secret itself; leave the field out to keep the stored one.")


def _secret(maximum: int, *, required: bool = True) -> fields.String:
    return fields.String(required=required, validate=[validate.Length(1, maximum), _not_mask])


class _Common(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 200))
    type = fields.String(required=True, validate=validate.OneOf(TYPES))
    endpoint_prefix = fields.Url(required=True, schemes={"http", "https"}, require_tld=False,
                                 validate=validate.Length(max=2048))
    ca_certificate = fields.String(load_default=None, allow_none=True,
                                   validate=validate.Length(max=64 * 1024))

    @validates("endpoint_prefix")
    def _prefix(self, value: str, data_key: str) -> None:
        try:
            urlsplit(value).port  # noqa: B018 -- raises ValueError past 65535
        except ValueError:
            raise ValidationError("Not a valid port.") from None
        if "@" in value.split("/")[2] or "?" in value or "#" in value or "\\" in value:
            raise ValidationError("A prefix is scheme, host, port and path: "
                                  "no credentials, query or fragment.")

    @validates("ca_certificate")
    def _ca(self, value: str | None, data_key: str) -> None:
        if value is not None:
            try:
                check_ca(value)
            except ValueError as exc:
                raise ValidationError(str(exc)) from None


class BasicSchema(_Common):
    username = fields.String(required=True, validate=[validate.Length(0, 256), validate.Regexp(
        re.compile(r"^[^:\x00-\x1f\x7f]*$"), error="No colon or control characters (RFC 7617).")])
    password = fields.String(required=True, validate=[validate.Length(0, 1024), _not_mask, validate.Regexp(
        _NO_CTL, error="No control characters (RFC 7617).")])


class BearerSchema(_Common):
    token = fields.String(required=True, validate=[validate.Length(1, 8192), _not_mask, validate.Regexp(
        re.compile(r"^[\x21-\x7e]+$"), error="Visible ASCII characters only, no spaces.")])


class HeaderItem(Schema):
    name = _header_name(required=True)
    value = fields.String(required=True, validate=[validate.Length(0, 8192), _not_mask, validate.Regexp(
        re.compile(r"^[^\r\n\x00]*$"), error="Header values may not contain CR, LF or NUL.")])
    secret = fields.Boolean(load_default=True)


class HeadersSchema(_Common):
    headers = fields.List(fields.Nested(HeaderItem), required=True, validate=validate.Length(1, 50))

    @validates("headers")
    def _unique(self, value: list[dict[str, Any]], data_key: str) -> None:
        names = [str(h.get("name", "")).lower() for h in value if "name" in h]
        if len(set(names)) != len(names):
            raise ValidationError("Each header name once.")


class UrlSchema(_Common):
    username = _text(256, required=False)
    password = _secret(1024, required=False)
    query = fields.Dict(keys=fields.String(validate=validate.Length(1, 200)),
                        values=fields.String(validate=[validate.Length(0, 2048), _not_mask]),
                        validate=validate.Length(1, 20))


class SignedPayloadSchema(_Common):
    secret = fields.String(validate=validate.Length(16, 512))
    signature_header = _header_name(load_default="X-Hookgate-Signature")  # defaults apply on create only:
    timestamp_header = _header_name(load_default="X-Hookgate-Timestamp")  # a partial load skips them


class StandardWebhooksSchema(_Common):
    secret = fields.String(validate=validate.Length(16, 512))

    @validates("secret")
    def _whsec(self, value: str, data_key: str) -> None:
        _check_whsec(value)


def _check_whsec(value: str) -> None:
    try:
        if not value.startswith("whsec_") or not 24 <= len(base64.b64decode(value[6:], validate=True)) <= 64:
            raise ValueError
    except ValueError:
        raise ValidationError("A Standard Webhooks secret is whsec_ and base64 of 24–64 bytes.") from None


def _check_domain(value: str) -> None:
    if not valid_domain(value):
        raise ValidationError("Not a host name, *.domain or IP address.")


class OAuth2Schema(_Common):
    token_url = fields.Url(required=True, schemes={"https"}, require_tld=False,
                           validate=validate.Length(max=2048))
    client_id = _text(512)
    client_secret = _secret(4096)
    scope = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=1024))
    extra_params = fields.Dict(keys=fields.String(validate=validate.NoneOf(
        ("grant_type", "client_id", "client_secret", "scope"), error="Set this with its own field.")),
        values=fields.String(validate=validate.Length(max=2048)), load_default=None, allow_none=True,
        validate=validate.Length(max=20))
    client_auth = fields.String(load_default="header", validate=validate.OneOf(("header", "body", "query")))
    allowed_domains = fields.List(fields.String(validate=[validate.Length(1, 255), _check_domain]),
                                  load_default=None, allow_none=True, validate=validate.Length(max=20))


class MtlsSchema(_Common):
    certificate = fields.String(required=True, validate=validate.Length(1, 64 * 1024))
    private_key = _secret(64 * 1024)

    @validates_schema
    def _pair(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "certificate" in data and "private_key" in data:  # a PATCH of one of them is checked by the store
            try:
                check_certificate_pair(data["certificate"], data["private_key"])
            except ValueError as exc:
                field, _, message = str(exc).partition(": ")
                raise ValidationError(message, field) from None


SCHEMAS: dict[str, _Common] = {
    "basic": BasicSchema(), "bearer": BearerSchema(), "headers": HeadersSchema(), "url": UrlSchema(),
    "signed_payload": SignedPayloadSchema(), "standard_webhooks": StandardWebhooksSchema(),
    "oauth2_client_credentials": OAuth2Schema(), "mtls": MtlsSchema(),
}


class RotateSchema(Schema):
    grace_s = fields.Float(load_default=DEFAULT_GRACE_S, validate=validate.Range(0, 30 * 86400))
    secret = fields.String(load_default=None, allow_none=True, validate=validate.Length(16, 512))


class TestSchema(Schema):
    method = fields.String(load_default="GET", validate=validate.OneOf(METHODS))
    path = fields.String(load_default="/", validate=[validate.Length(max=2048), validate.Regexp(
        re.compile(r"^[^\s#\x00-\x1f\x7f]*$"), error="A path: no spaces, controls or fragment.")])


def _store() -> AuthProfileStore:
    return AuthProfileStore(runtime().db, runtime().secrets)


@bp.post("")
def create():
    body = read_json()
    kind = body.get("type") if isinstance(body, dict) else None
    fields_ = load(SCHEMAS.get(kind) if isinstance(kind, str) and kind in SCHEMAS else _Common(), body)
    profile, shown_once = _store().create(fields_)
    return {**public(profile), **shown_once}, 201


@bp.get("")
def list_profiles():
    limit = query_limit()
    after = request.args.get("cursor", "")
    items = [p for p in _store().all() if p["id"] > after]
    page = items[:limit]
    return {"items": [public(p) for p in page], "next_cursor": page[-1]["id"] if len(items) > limit else None}


@bp.get("/<profile_id>")
def get(profile_id: str):
    return public(_store().get(profile_id))


@bp.patch("/<profile_id>")
def update(profile_id: str):
    store = _store()
    kind = store.get(profile_id)["type"]
    body = read_json()
    if isinstance(body, dict) and body.get("type", kind) != kind:
        raise Invalid("invalid fields: type",
                      {"type": ["The type of a profile does not change; create another."]})
    return public(store.update(profile_id, load(SCHEMAS[kind], body, partial=True)))


@bp.delete("/<profile_id>")
def delete(profile_id: str):
    users = [d["id"] for d in DestinationStore(runtime().db).all() if d.get("auth_profile_id") == profile_id]
    if users:
        raise Conflict("the auth profile is used by destinations", {"destinations": users})
    _store().delete(profile_id)
    return "", 204


@bp.post("/<profile_id>/rotate")
def rotate(profile_id: str):
    options = load(RotateSchema(), read_json(optional=True))
    store = _store()
    if options["secret"] and store.get(profile_id)["type"] == "standard_webhooks":
        try:
            _check_whsec(options["secret"])
        except ValidationError as exc:
            raise Invalid("invalid fields: secret", {"secret": exc.messages}) from None
    profile, shown_once = store.rotate(profile_id, grace_s=options["grace_s"], secret=options["secret"])
    return {**public(profile), **shown_once}


@bp.post("/<profile_id>/test")
def test(profile_id: str):
    options = load(TestSchema(), read_json(optional=True))
    rt = runtime()
    profile = _store().get(profile_id)
    return probe(profile, rt.secrets, rt.db, method=options["method"], path=options["path"],
                 allowed_networks=rt.settings.allowed_networks)
