"""Signed requests: HMAC-SHA256 of timestamp and body, and Standard Webhooks (standardwebhooks.com).

Standard Webhooks signatures, made (outbound) and checked (inbound), are computed by the
``standardwebhooks`` package, the specification's reference implementation (``Webhook.sign``).
What hookgate keeps of its own is the reading of the headers, because a verifier faces whatever a
client sends: the library's ``Webhook.verify`` raises ``ValueError``, ``binascii.Error`` or
``UnicodeDecodeError`` on a malformed header and has a fixed 5-minute window, while an ingest
request must always get a 401 with a reason, and the window is ``HOOKGATE_SIGNATURE_TOLERANCE``.

Every problem with a signature — missing, empty, non-ASCII, oversized or repeated headers, a
timestamp that is not a plain number of seconds, a stale one, a mismatch, a replay — is an
``Unauthorized`` (401). Comparisons are constant-time over bytes. A verifier returns what identifies
the message — its HMAC signature, or its ``webhook-id`` (Standard Webhooks) — by which ingest answers
a repeat of a correctly signed message as a duplicate (the first answer again), not as an attack.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from typing import Protocol

from standardwebhooks.webhooks import Webhook

from .errors import Unauthorized

__all__ = [
    "Headers",
    "new_hmac_secret",
    "new_whsec",
    "sign_hmac",
    "sign_standard",
    "verify_hmac",
    "verify_standard",
]

MAX_HEADER = 4096  # longer signature headers are refused before any work is done on them
MAX_SIGNATURES = 16  # signatures offered in one webhook-signature header (a rotation needs 2)
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits: "²" and "١" pass str.isdigit(), not this


class Headers(Protocol):
    """What the verifiers read of a request's headers (werkzeug's ``Headers`` has it)."""

    def getlist(self, key: str) -> list[str]: ...


def new_hmac_secret() -> str:
    return "hgs_" + secrets.token_urlsafe(32)


def new_whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign_hmac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>`` by the reference library. Standard Webhooks signs text: ``body`` is UTF-8."""
    return Webhook(secret).sign(msg_id, dt.datetime.fromtimestamp(timestamp, dt.UTC), body.decode())


def _header(headers: Headers, name: str) -> str:
    """The one value of a header, stripped; '' when absent. Repeated, oversized or non-ASCII: 401."""
    values = headers.getlist(name)
    if len(values) > 1:
        raise Unauthorized(f"the {name} header is repeated", {"header": name})
    value = values[0].strip() if values else ""
    if len(value) > MAX_HEADER:
        raise Unauthorized(f"the {name} header is longer than {MAX_HEADER} characters", {"header": name})
    if not value.isascii():
        raise Unauthorized(f"the {name} header is not ASCII", {"header": name})
    return value


def _timestamp(value: str, tolerance_s: float, header: str) -> int:
    if not _TIMESTAMP.fullmatch(value):
        raise Unauthorized(f"missing or invalid {header} header: seconds since the epoch, in ASCII digits",
                           {"header": header})
    stamp = int(value)
    if abs(time.time() - stamp) > tolerance_s:
        raise Unauthorized("the signature's timestamp is outside the tolerance window (stale or from the future)",
                           {"header": header, "tolerance_s": tolerance_s})
    return stamp


def verify_hmac(secrets_: list[str], headers: Headers, body: bytes, *, signature_header: str,
                timestamp_header: str, tolerance_s: float) -> str:
    """Check an HMAC-signed request; its message key (``hmac:<signature>``)."""
    stamp = _timestamp(_header(headers, timestamp_header), tolerance_s, timestamp_header)
    given = _header(headers, signature_header).removeprefix("sha256=")
    if not given:
        raise Unauthorized(f"missing {signature_header} header", {"header": signature_header})
    matched = False
    for secret in secrets_:
        matched |= hmac.compare_digest(sign_hmac(secret, stamp, body).encode(), given.encode())
    if not matched:
        raise Unauthorized("the signature does not match", {"header": signature_header})
    return f"hmac:{given.lower()}"


def verify_standard(secrets_: list[str], headers: Headers, body: bytes, *, tolerance_s: float) -> str:
    """Check a Standard Webhooks request; its message key (``std:<webhook-id>``)."""
    msg_id = _header(headers, "webhook-id")
    if not msg_id:
        raise Unauthorized("missing webhook-id header", {"header": "webhook-id"})
    stamp = _timestamp(_header(headers, "webhook-timestamp"), tolerance_s, "webhook-timestamp")
    offered = [part for part in _header(headers, "webhook-signature").split(" ") if part]
    if not offered:
        raise Unauthorized("missing webhook-signature header", {"header": "webhook-signature"})
    if len(offered) > MAX_SIGNATURES:
        raise Unauthorized(f"more than {MAX_SIGNATURES} signatures offered", {"header": "webhook-signature"})
    try:
        body.decode()
    except UnicodeDecodeError:
        raise Unauthorized("the body is not UTF-8 text, which Standard Webhooks signs",
                           {"header": "webhook-signature"}) from None
    matched = False
    for secret in secrets_:
        expected = sign_standard(secret, msg_id, stamp, body).encode()
        for signature in offered:
            matched |= hmac.compare_digest(expected, signature.encode())
    if not matched:
        raise Unauthorized("the signature does not match", {"header": "webhook-signature"})
    return f"std:{msg_id}"
