"""Auth profiles: reusable outbound credentials, stored as JSON in one Redis hash (``keys.auth_profiles``).

Security rules kept here:

- **Secrets at rest.** Every secret field (password, token, secret header values, URL query values,
  client_secret, private_key, signing secrets) is encrypted with the runtime's ``SecretBox`` before it
  reaches Redis. ``public()`` is the only view the API shows: secrets become ``MASK``, never a value or
  a prefix of one. ``reveal()`` decrypts, for the outbound path only; ``scrubber()`` masks the
  revealed secrets, in every encoding they are sent in, out of what is kept of a request's answer.
- **Endpoint prefix.** Every profile is bound to a URL prefix; ``covers()`` decides whether a URL lies
  under it (same scheme, host and port; the URL's path segments start with the prefix's segments; a
  path with ``.``/``..`` segments or backslashes is never covered, so it cannot climb out after the
  receiver normalises it). The outbound path refuses to send credentials anywhere else.
- **mTLS.** A certificate that is expired or not yet valid, or a key that does not belong to it, is
  refused when saved (422) and again at send time.
- **Signing secrets** are generated unless given, shown once. Rotating a Standard Webhooks secret
  keeps the previous ones valid for a grace period (default 24 h) during which every valid secret
  signs; a signed payload's old secret ends at once (one signature header).
- **OAuth 2.0.** Changing ``token_url`` or ``allowed_domains`` requires re-entering ``client_secret``
  (Bloomreach's rule: a changed endpoint must not inherit a secret it was never given). Any change to
  a profile drops its cached access token.
- **Imported without secrets.** A profile brought in by ``POST /v1/import`` carries
  ``needs_secrets`` (the fields to re-enter: ``password``, ``token``, ``client_secret``,
  ``private_key``, ``headers``, ``query``, ``secret``). ``reveal()`` refuses it, so it is never applied;
  a PATCH naming those fields (a signing ``secret`` too, or ``/rotate``) clears the marker.

What a profile of each type may hold is ``SCHEMAS`` (marshmallow, unknown fields refused): the API
checks a body with it, and ``POST /v1/import`` each profile of the document.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from marshmallow import Schema, validate, validates, validates_schema
from marshmallow import ValidationError as SchemaError
from marshmallow import fields as mf

from .errors import NotFound, ValidationError
from .headers import RESERVED, name_validator, validate_items, validate_value
from .oauth import valid_domain
from .scrub import Scrubber
from .secrets import SecretBox
from .signatures import new_hmac_secret, new_whsec
from .store import bump_config, keys, new_id, now_ms
from .tls import check_ca

__all__ = ["MASK", "SCHEMAS", "TYPES", "AuthProfileStore", "ProfileSchema", "check_ca", "check_certificate_pair",
           "check_whsec", "covers", "public", "reveal", "scrubber", "secret_values"]

MASK = "••••••"
TYPES = ("basic", "bearer", "headers", "url", "signed_payload", "standard_webhooks",
         "oauth2_client_credentials", "mtls")
SIGNING_TYPES = ("signed_payload", "standard_webhooks")
SCALAR_SECRETS = {"basic": ("password",), "bearer": ("token",), "url": ("password",),
                  "oauth2_client_credentials": ("client_secret",), "mtls": ("private_key",)}
DEFAULT_GRACE_S = 86400.0
MAX_SIGNING_SECRETS = 10
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_and_segments(url: str, *, prefix: bool) -> tuple[tuple[str, str, int], list[str]] | None:
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname or port is None or "\\" in parts.path:
        return None
    segments = [unquote(s) for s in parts.path.split("/")[1:]]
    if any(s in (".", "..") or "\\" in s for s in segments):
        return None
    if prefix and segments and segments[-1] == "":
        segments.pop()
    return (parts.scheme.lower(), parts.hostname.lower(), port), segments


def covers(prefix: str, url: str) -> bool:
    """Whether ``url`` lies under ``prefix``: same scheme, host and port, and path segment by segment
    (``https://a.com/api`` covers ``https://a.com/api/x``, not ``https://a.com/apix`` nor ``http://…``)."""
    base, target = _origin_and_segments(prefix, prefix=True), _origin_and_segments(url, prefix=False)
    if base is None or target is None or base[0] != target[0]:
        return False
    return target[1][: len(base[1])] == base[1]


def check_certificate_pair(certificate: str, private_key: str, *,
                           at: dt.datetime | None = None) -> dict[str, Any]:
    """Parse a client certificate (leaf first, chain after) and its unencrypted key; raise ``ValueError``
    when either does not parse, the key does not match, or the certificate is not valid at ``at``.
    Returns what may be shown of the certificate."""
    try:
        cert = x509.load_pem_x509_certificates(certificate.encode())[0]
    except ValueError:
        raise ValueError("certificate: not a PEM certificate.") from None
    try:
        key = serialization.load_pem_private_key(private_key.encode(), password=None)
    except TypeError:
        raise ValueError("private_key: encrypted keys are not supported; send it unencrypted.") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("private_key: not a PEM private key.") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise ValueError("private_key: the key does not belong to the certificate.")
    at = at or dt.datetime.now(dt.UTC)
    if at < cert.not_valid_before_utc:
        raise ValueError(f"certificate: not valid before {cert.not_valid_before_utc.isoformat()}.")
    if at > cert.not_valid_after_utc:
        raise ValueError(f"certificate: expired on {cert.not_valid_after_utc.isoformat()}.")
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "not_valid_before": cert.not_valid_before_utc.isoformat(),
            "not_valid_after": cert.not_valid_after_utc.isoformat(),
            "sha256": cert.fingerprint(hashes.SHA256()).hex()}


def _live(entries: list[dict[str, Any]], at_ms: int) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("expires_at") is None or e["expires_at"] > at_ms]


def public(profile: dict[str, Any]) -> dict[str, Any]:
    """What the API shows: every secret masked."""
    shown = dict(profile)
    for name in SCALAR_SECRETS.get(profile["type"], ()):
        if shown.get(name) is not None:
            shown[name] = MASK
    if profile["type"] == "headers":  # an imported secret header has no value until re-entered
        shown["headers"] = [{**h, "value": MASK} if h["secret"] and h.get("value") is not None else h
                            for h in profile["headers"]]
    if profile.get("query") is not None:
        shown["query"] = {name: MASK if value is not None else None for name, value in profile["query"].items()}
    if profile["type"] in SIGNING_TYPES:
        shown["secrets"] = [{"secret": MASK, "created_at": e["created_at"], "expires_at": e["expires_at"]}
                            for e in _live(profile["secrets"], now_ms())]
    return shown


def reveal(profile: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    """The profile with its secrets decrypted (``signing_secrets``: the valid ones, newest first).
    For the outbound path only: never return or log it. Raises ``RuntimeError`` for a profile whose
    secrets were not re-entered after an import (it must not be used without them)."""
    if profile.get("needs_secrets"):
        raise RuntimeError(f"its secrets were not re-entered after an import "
                           f"({', '.join(profile['needs_secrets'])}): PATCH /v1/auth-profiles/{profile.get('id')}")
    plain = dict(profile)
    for name in SCALAR_SECRETS.get(profile["type"], ()):
        if plain.get(name) is not None:
            plain[name] = box.decrypt(plain[name])
    if profile["type"] == "headers":
        plain["headers"] = [{**h, "value": box.decrypt(h["value"])} if h["secret"] else h
                            for h in profile["headers"]]
    if profile.get("query") is not None:
        plain["query"] = {k: box.decrypt(v) for k, v in profile["query"].items()}
    if profile["type"] in SIGNING_TYPES:
        plain["signing_secrets"] = [box.decrypt(e["value"]) for e in _live(profile["secrets"], now_ms())]
    return plain


def secret_values(plain: dict[str, Any]) -> list[str]:
    """Every secret of a revealed profile (a secret header's value with and without the whitespace
    around it: a header parser drops it)."""
    values = [plain.get(n) for n in SCALAR_SECRETS.get(plain["type"], ())]
    values += [v for h in plain.get("headers") or [] if h.get("secret") for v in (h["value"], h["value"].strip())]
    values += list((plain.get("query") or {}).values()) + list(plain.get("signing_secrets") or [])
    return [v for v in values if isinstance(v, str) and v]


def scrubber(plain: dict[str, Any]) -> Scrubber:
    """The ``Scrubber`` of a revealed profile's secrets: each in every encoding, and the pairs that
    travel as one (``basic`` and ``url``: user and password; OAuth 2.0: client id and secret)."""
    if plain["type"] == "oauth2_client_credentials":
        pairs = [(plain.get("client_id"), plain.get("client_secret"))]
    else:
        pairs = [(plain.get("username"), plain.get("password"))] if plain["type"] in ("basic", "url") else []
    return Scrubber(secret_values(plain), pairs)


def _still_needs(profile: dict[str, Any], given: list[str]) -> None:
    """Drop from an imported profile's ``needs_secrets`` the fields just given; the marker goes with the last."""
    needs = [name for name in profile.get("needs_secrets") or () if name not in given]
    if needs:
        profile["needs_secrets"] = needs
    else:
        profile.pop("needs_secrets", None)


class AuthProfileStore:
    def __init__(self, db: redis.Redis, box: SecretBox):
        self.db = db
        self.box = box

    def create(self, fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Returns the stored profile and what is shown once (a generated signing secret)."""
        fields = dict(fields)
        shown_once: dict[str, str] = {}
        stamp = now_ms()
        profile: dict[str, Any] = {"id": new_id("ap"), "created_at": stamp, "updated_at": stamp}
        if fields["type"] in SIGNING_TYPES:
            secret = fields.pop("secret", None)
            if not secret:
                secret = new_whsec() if fields["type"] == "standard_webhooks" else new_hmac_secret()
                shown_once["secret"] = secret
            entry = {"value": self.box.encrypt(secret), "created_at": stamp, "expires_at": None}
            profile["secrets"] = [entry]
        profile.update(self._seal(fields["type"], fields))
        self._check(profile)
        self._save(profile)
        return profile, shown_once

    def find(self, profile_id: str) -> dict[str, Any] | None:
        raw = self.db.hget(keys.auth_profiles, profile_id)
        return json.loads(raw) if raw is not None else None

    def get(self, profile_id: str) -> dict[str, Any]:
        profile = self.find(profile_id)
        if profile is None:
            raise NotFound(f"no auth profile {profile_id!r}", {"id": profile_id})
        return profile

    def all(self) -> list[dict[str, Any]]:
        return sorted((json.loads(v) for v in self.db.hvals(keys.auth_profiles)), key=lambda p: p["id"])

    def update(self, profile_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        profile = self.get(profile_id)
        given = [name for name, value in changes.items() if value is not None]
        if changes.get("secret") and "secret" in (profile.get("needs_secrets") or ()):  # re-entered after an import
            changes = dict(changes)
            profile["secrets"] = [{"value": self.box.encrypt(changes.pop("secret")), "created_at": now_ms(),
                                   "expires_at": None}]
        if "secret" in changes:
            raise ValidationError("invalid fields: secret", {"secret": [
                f"Rotate a signing secret with POST /v1/auth-profiles/{profile_id}/rotate."]})
        if profile["type"] == "oauth2_client_credentials" and "client_secret" not in changes:
            moved = [k for k in ("token_url", "allowed_domains")
                     if k in changes and changes[k] != profile.get(k)]
            if moved:
                raise ValidationError("invalid fields: client_secret", {"client_secret": [
                    f"Re-enter the client secret when {' or '.join(moved)} changes."]})
        profile.update(self._seal(profile["type"], changes), updated_at=now_ms())
        _still_needs(profile, given)
        self._check(profile)
        self._save(profile)
        return profile

    def rotate(self, profile_id: str, *, grace_s: float = DEFAULT_GRACE_S,
               secret: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
        """A new signing secret. Standard Webhooks: the secrets still valid stay valid for ``grace_s``
        more seconds (at most), and every valid one signs. A signed payload carries one signature: its
        old secret ends at once."""
        profile = self.get(profile_id)
        if profile["type"] not in SIGNING_TYPES:
            raise ValidationError("only signing profiles have a secret to rotate",
                                  {"type": ["Rotation applies to signed_payload and standard_webhooks."]})
        standard = profile["type"] == "standard_webhooks"
        stamp = now_ms()
        until = stamp + int(grace_s * 1000) if standard else stamp
        old = [{**e, "expires_at": min(until, e["expires_at"] or until)}
               for e in _live(profile["secrets"], stamp)] if standard else []
        shown_once: dict[str, str] = {}
        if not secret:
            secret = shown_once["secret"] = new_whsec() if standard else new_hmac_secret()
        fresh = {"value": self.box.encrypt(secret), "created_at": stamp, "expires_at": None}
        profile.update(secrets=[fresh, *old][:MAX_SIGNING_SECRETS], updated_at=stamp)
        _still_needs(profile, ["secret"])
        self._save(profile)
        return profile, shown_once

    def delete(self, profile_id: str) -> None:
        with self.db.pipeline() as pipe:
            pipe.hdel(keys.auth_profiles, profile_id)
            pipe.delete(keys.oauth_token(profile_id))
            bump_config(pipe)
            removed = pipe.execute()[0]
        if not removed:
            raise NotFound(f"no auth profile {profile_id!r}", {"id": profile_id})

    def _seal(self, profile_type: str, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` with every secret encrypted."""
        sealed = {k: v for k, v in fields.items() if k != "secret"}
        for name in SCALAR_SECRETS.get(profile_type, ()):
            if sealed.get(name) is not None:
                sealed[name] = self.box.encrypt(sealed[name])
        if "headers" in sealed:
            sealed["headers"] = [{**h, "value": self.box.encrypt(h["value"])} if h["secret"] else h
                                 for h in sealed["headers"]]
        if sealed.get("query") is not None:
            sealed["query"] = {k: self.box.encrypt(v) for k, v in sealed["query"].items()}
        return sealed

    def _check(self, profile: dict[str, Any]) -> None:
        """Rules that need the whole merged record (a partial update sees only part of it)."""
        if profile["type"] == "mtls" and "private_key" not in (profile.get("needs_secrets") or ()):
            try:
                key = self.box.decrypt(profile["private_key"])
                info = check_certificate_pair(profile["certificate"], key)
            except ValueError as exc:
                field, _, message = str(exc).partition(": ")
                raise ValidationError(f"invalid fields: {field}", {field: [message]}) from None
            profile["certificate_info"] = info
        if profile["type"] == "url" and not (profile.get("username") or profile.get("query")):
            raise ValidationError("invalid fields: username, query",
                                  {"username": ["Give a username, query parameters, or both."]})
        if profile["type"] == "url" and profile.get("password") and not profile.get("username"):
            raise ValidationError("invalid fields: username", {"username": ["A password needs a username."]})

    def _save(self, profile: dict[str, Any]) -> None:
        with self.db.pipeline() as pipe:
            pipe.hset(keys.auth_profiles, profile["id"], json.dumps(profile))
            pipe.delete(keys.oauth_token(profile["id"]))  # credentials may have changed: fetch a new token
            bump_config(pipe)
            pipe.execute()


# -- what a profile of each type may hold ---------------------------------------------------------------

_NO_CTL = re.compile(r"^[^\x00-\x1f\x7f]*\Z")  # no CR, LF, NUL or other controls in values (\Z: not $,
# which matches before a final "\n")
# The names a profile's headers may not take (headers.py's rule): the reserved ones, and Content-Type
# (credentials do not change what the body is). Its signature headers may be hookgate's defaults.
PROFILE_RESERVED = RESERVED | {"content-type"}
SIGNATURE_RESERVED = PROFILE_RESERVED - {"x-hookgate-signature", "x-hookgate-timestamp"}


def _text(maximum: int, *, required: bool = True, minimum: int = 1) -> mf.String:
    """A string with no control characters (it ends up in a header, a URL or a form)."""
    checks = [validate.Length(minimum, maximum),
              validate.Regexp(_NO_CTL, error="Control characters (CR, LF, NUL…) are not allowed.")]
    return mf.String(required=required, validate=checks)


def _not_mask(value: Any) -> None:
    if value == MASK:
        raise SchemaError("Send the secret itself; leave the field out to keep the stored one.")


def _secret(maximum: int, *, required: bool = True) -> mf.String:
    return mf.String(required=required, validate=[validate.Length(1, maximum), _not_mask])


class ProfileSchema(Schema):
    """What every profile has; a type's schema adds its fields."""

    name = mf.String(required=True, validate=validate.Length(1, 200))
    type = mf.String(required=True, validate=validate.OneOf(TYPES))
    endpoint_prefix = mf.Url(required=True, schemes={"http", "https"}, require_tld=False,
                             validate=validate.Length(max=2048))
    ca_certificate = mf.String(load_default=None, allow_none=True, validate=validate.Length(max=64 * 1024))

    @validates("endpoint_prefix")
    def _prefix(self, value: str, data_key: str) -> None:
        try:
            urlsplit(value).port  # noqa: B018 -- raises ValueError past 65535
        except ValueError:
            raise SchemaError("Not a valid port.") from None
        if "@" in value.split("/")[2] or "?" in value or "#" in value or "\\" in value:
            raise SchemaError("A prefix is scheme, host, port and path: "
                              "no credentials, query or fragment.")

    @validates("ca_certificate")
    def _ca(self, value: str | None, data_key: str) -> None:
        if value is not None:
            try:
                check_ca(value)
            except ValueError as exc:
                raise SchemaError(str(exc)) from None


class BasicSchema(ProfileSchema):
    username = mf.String(required=True, validate=[validate.Length(0, 256), validate.Regexp(
        re.compile(r"^[^:\x00-\x1f\x7f]*$"), error="No colon or control characters (RFC 7617).")])
    password = mf.String(required=True, validate=[validate.Length(0, 1024), _not_mask, validate.Regexp(
        _NO_CTL, error="No control characters (RFC 7617).")])


class BearerSchema(ProfileSchema):
    token = mf.String(required=True, validate=[validate.Length(1, 8192), _not_mask, validate.Regexp(
        re.compile(r"^[\x21-\x7e]+\Z"), error="Visible ASCII characters only, no spaces.")])


class HeaderItem(Schema):
    name = mf.String(required=True, validate=name_validator(PROFILE_RESERVED))
    value = mf.String(required=True, validate=[_not_mask, validate_value])
    secret = mf.Boolean(load_default=True)


class HeadersSchema(ProfileSchema):
    headers = mf.List(mf.Nested(HeaderItem), required=True, validate=[validate.Length(min=1), validate_items])


class UrlSchema(ProfileSchema):
    username = _text(256, required=False)
    password = _secret(1024, required=False)
    query = mf.Dict(keys=mf.String(validate=validate.Length(1, 200)),
                    values=mf.String(validate=[validate.Length(0, 2048), _not_mask]),
                    validate=validate.Length(1, 20))


class SignedPayloadSchema(ProfileSchema):
    secret = mf.String(validate=validate.Length(16, 512))
    # defaults apply on create only: a partial load skips them
    signature_header = mf.String(load_default="X-Hookgate-Signature", validate=name_validator(SIGNATURE_RESERVED))
    timestamp_header = mf.String(load_default="X-Hookgate-Timestamp", validate=name_validator(SIGNATURE_RESERVED))


class StandardWebhooksSchema(ProfileSchema):
    secret = mf.String(validate=validate.Length(16, 512))

    @validates("secret")
    def _whsec(self, value: str, data_key: str) -> None:
        check_whsec(value)


def check_whsec(value: str) -> None:
    """A Standard Webhooks secret (``whsec_`` and base64 of 24–64 bytes), else a marshmallow error."""
    try:
        if not value.startswith("whsec_") or not 24 <= len(base64.b64decode(value[6:], validate=True)) <= 64:
            raise ValueError
    except ValueError:
        raise SchemaError("A Standard Webhooks secret is whsec_ and base64 of 24–64 bytes.") from None


def _check_domain(value: str) -> None:
    if not valid_domain(value):
        raise SchemaError("Not a host name, *.domain or IP address.")


class OAuth2Schema(ProfileSchema):
    token_url = mf.Url(required=True, schemes={"https"}, require_tld=False, validate=validate.Length(max=2048))
    client_id = _text(512)
    client_secret = _secret(4096)
    scope = mf.String(load_default=None, allow_none=True, validate=validate.Length(max=1024))
    extra_params = mf.Dict(keys=mf.String(validate=validate.NoneOf(
        ("grant_type", "client_id", "client_secret", "scope"), error="Set this with its own field.")),
        values=mf.String(validate=validate.Length(max=2048)), load_default=None, allow_none=True,
        validate=validate.Length(max=20))
    client_auth = mf.String(load_default="header", validate=validate.OneOf(("header", "body", "query")))
    allowed_domains = mf.List(mf.String(validate=[validate.Length(1, 255), _check_domain]),
                              load_default=None, allow_none=True, validate=validate.Length(max=20))


class MtlsSchema(ProfileSchema):
    certificate = mf.String(required=True, validate=validate.Length(1, 64 * 1024))
    private_key = _secret(64 * 1024)

    @validates_schema
    def _pair(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "certificate" in data and "private_key" in data:  # a PATCH of one of them is checked by the store
            try:
                check_certificate_pair(data["certificate"], data["private_key"])
            except ValueError as exc:
                field, _, message = str(exc).partition(": ")
                raise SchemaError(message, field) from None


# Each type's request schema: the API loads a body with it, and an import each profile of the document.
SCHEMAS: dict[str, ProfileSchema] = {
    "basic": BasicSchema(), "bearer": BearerSchema(), "headers": HeadersSchema(), "url": UrlSchema(),
    "signed_payload": SignedPayloadSchema(), "standard_webhooks": StandardWebhooksSchema(),
    "oauth2_client_credentials": OAuth2Schema(), "mtls": MtlsSchema(),
}
