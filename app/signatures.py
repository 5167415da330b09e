"""Signed requests: HMAC-SHA256 of timestamp and body, and Standard Webhooks (standardwebhooks.com).

Verification compares in constant time, refuses timestamps outside the tolerance window, and (with
``seen``) refuses a signature or message id it has already accepted inside that window (replay).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping

from .errors import Unauthorized

__all__ = [
    "new_hmac_secret",
    "new_whsec",
    "sign_hmac",
    "sign_standard",
    "verify_hmac",
    "verify_standard",
]

SeenCheck = Callable[[str], bool]  # marks a value seen; False when it was seen already


def new_hmac_secret() -> str:
    return "hgs_" + secrets.token_urlsafe(32)


def new_whsec() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _whsec_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign_hmac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(_whsec_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _timestamp(value: str | None, tolerance_s: float, header: str) -> int:
    if not value or not value.strip().isdigit():
        raise Unauthorized(f"missing or invalid {header} header", {"header": header})
    stamp = int(value.strip())
    if abs(time.time() - stamp) > tolerance_s:
        raise Unauthorized("the signature's timestamp is outside the tolerance window (stale or from the future)",
                           {"header": header, "tolerance_s": tolerance_s})
    return stamp


def verify_hmac(secrets_: list[str], headers: Mapping[str, str], body: bytes, *, signature_header: str,
                timestamp_header: str, tolerance_s: float, seen: SeenCheck | None = None) -> None:
    stamp = _timestamp(headers.get(timestamp_header), tolerance_s, timestamp_header)
    given = (headers.get(signature_header) or "").strip().removeprefix("sha256=")
    if not given:
        raise Unauthorized(f"missing {signature_header} header", {"header": signature_header})
    matched = False
    for secret in secrets_:
        matched |= hmac.compare_digest(sign_hmac(secret, stamp, body), given)
    if not matched:
        raise Unauthorized("the signature does not match", {"header": signature_header})
    if seen is not None and not seen(f"hmac:{given}"):
        raise Unauthorized("this signed request was already received (replay)", {"header": signature_header})


def verify_standard(secrets_: list[str], headers: Mapping[str, str], body: bytes, *, tolerance_s: float,
                    seen: SeenCheck | None = None) -> None:
    msg_id = (headers.get("webhook-id") or "").strip()
    if not msg_id:
        raise Unauthorized("missing webhook-id header", {"header": "webhook-id"})
    stamp = _timestamp(headers.get("webhook-timestamp"), tolerance_s, "webhook-timestamp")
    offered = [part.strip() for part in (headers.get("webhook-signature") or "").split(" ") if part.strip()]
    if not offered:
        raise Unauthorized("missing webhook-signature header", {"header": "webhook-signature"})
    matched = False
    for secret in secrets_:
        expected = sign_standard(secret, msg_id, stamp, body)
        for signature in offered:
            matched |= hmac.compare_digest(expected, signature)
    if not matched:
        raise Unauthorized("the signature does not match", {"header": "webhook-signature"})
    if seen is not None and not seen(f"std:{msg_id}"):
        raise Unauthorized("this webhook-id was already received (replay)", {"header": "webhook-id"})
