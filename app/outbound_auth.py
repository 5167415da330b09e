"""Applying an auth profile to one outbound request, and probing a profile (``/test``).

``apply_auth`` is what the delivery path calls after rendering and before sending. Security rules:

- **Prefix first.** Credentials are added only when the profile's endpoint prefix covers the URL
  (``auth_profiles.covers``); otherwise it raises ``DeliveryError`` and nothing is sent with them.
- **No secrets in logs.** ``DeliveryError`` messages carry no secret. ``Prepared.url`` may carry URL
  credentials (``url`` profiles): log ``Prepared.safe_url``. ``Prepared.scrubber`` masks every
  credential the request carries (the profile's, and the OAuth access token as fetched) in every
  encoding it was sent in: the caller scrubs what it keeps of the answer with it, since a receiver
  may echo the request. urllib3's DEBUG request lines get their query strings redacted by a filter
  installed here.
- **mTLS material stays in memory.** The certificate and key go into the request's TLS context
  (``Prepared.trust``, see ``tls.py``), read from memory; no key file is left on disk. An expired or
  not yet valid certificate is never used (``DeliveryError``).
- **Private CAs.** A profile's ``ca_certificate`` is trusted for its requests, in addition to what
  every request trusts (the system store and ``HOOKGATE_CA_BUNDLE``; ``tls.py``).
- **OAuth 2.0.** The token endpoint must be allowed for the URL (``oauth.token_endpoint_allowed``).
  When the destination answers 401, call ``handle_unauthorized``: it drops the cached token and says
  whether one retry (with a fresh ``apply_auth``) is worth it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import redis
import requests

from . import oauth
from .auth_profiles import check_certificate_pair, covers, reveal, scrubber
from .delivery.async_http import SyncBridge
from .delivery.http import USER_AGENT
from .errors import BlockedDestination, DeliveryError
from .headers import FRAMING, check_sent
from .scrub import NOTHING, Scrubber
from .secrets import SecretBox
from .signatures import sign_hmac, sign_standard
from .store import new_id
from .tls import Trust

__all__ = ["Prepared", "apply_auth", "handle_unauthorized", "probe"]

PROBE_RESPONSE_LIMIT = 2048


class _RedactQuery(logging.Filter):
    """urllib3 logs each request line at DEBUG, query string included: URL credentials must not show."""

    _TARGET = re.compile(r"^/\S*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._TARGET.sub("/[redacted]", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactQuery())


@dataclass(frozen=True)
class Prepared:
    """The request to send: ``SyncBridge.send(method, url, headers, body, timeout, trust=trust)``."""

    url: str  # may carry URL credentials: never log it
    headers: dict[str, str]
    trust: Trust | None = None  # the profile's CA and (mTLS) client certificate
    safe_url: str = ""  # the URL without the profile's credentials, for delivery logs
    oauth_token: str | None = field(default=None, repr=False)  # the token sent (see handle_unauthorized)
    scrubber: Scrubber = NOTHING  # masks the credentials this request carries, in every encoding


def _set(headers: dict[str, str], name: str, value: str) -> None:
    for existing in [k for k in headers if k.lower() == name.lower()]:
        del headers[existing]
    headers[name] = value


def apply_auth(profile: dict[str, Any], box: SecretBox, db: redis.Redis, *, method: str, url: str,
               headers: dict[str, str], body: bytes | None, event_id: str, allowed_networks: tuple = (),
               timeout: float = 10.0) -> Prepared:
    """Add ``profile``'s credentials to a request for ``url``. ``body`` is the exact bytes to send
    (signatures cover it); ``event_id`` is the Standard Webhooks message id; ``method`` is taken
    for schemes that sign it (none today). ``allowed_networks`` and ``timeout`` apply to an OAuth 2.0
    token request. Raises ``DeliveryError`` when the profile
    must not (or cannot) be used; ``details["retryable"]`` is True only when a token request failed
    in a way that may pass later (unreachable endpoint, 5xx, 408, 429)."""
    ident = profile.get("id", "?")
    if not covers(profile["endpoint_prefix"], url):
        raise DeliveryError(f"auth profile {ident} is bound to {profile['endpoint_prefix']}: "
                            "its credentials are not sent to this URL", {"auth_profile": ident})
    try:
        plain = reveal(profile, box)
    except RuntimeError as exc:
        raise DeliveryError(f"auth profile {ident}: {exc}", {"auth_profile": ident}) from None
    given, headers = headers, dict(headers)
    kind = plain["type"]
    cas = (plain["ca_certificate"],) if plain.get("ca_certificate") else ()
    trust = Trust(cas) if cas else None
    token: str | None = None
    target = url
    if kind in ("basic", "bearer", "headers"):
        _set_credential_headers(kind, plain, headers)
    elif kind == "url":
        target = _with_credentials(url, plain.get("username"), plain.get("password"), plain.get("query"))
    elif kind in ("signed_payload", "standard_webhooks"):
        _sign(ident, kind, plain, headers, body or b"", event_id)
    elif kind == "oauth2_client_credentials":
        token = _oauth_token(ident, plain, box, db, url=url, allowed_networks=allowed_networks, trust=trust,
                             timeout=timeout)
        _set(headers, "Authorization", "Bearer " + token)
    elif kind == "mtls":
        trust = _client_certificate(ident, plain, cas)
    else:
        raise DeliveryError(f"auth profile {ident} has an unknown type {kind!r}", {"auth_profile": ident})
    # the header rule (headers.py) on what the profile adds, as it goes out (a token as fetched, a
    # profile saved before the rule): HeaderRefused, a DeliveryError, and nothing is sent
    check_sent({k: v for k, v in headers.items() if given.get(k) != v}, f"auth profile {ident}", reserved=FRAMING)
    return Prepared(target, headers, trust, safe_url=url, oauth_token=token,
                    scrubber=scrubber(plain) + Scrubber([token]))


def _set_credential_headers(kind: str, plain: dict[str, Any], headers: dict[str, str]) -> None:
    """``basic`` (RFC 7617: the pair in UTF-8), ``bearer``, or ``headers`` (the profile's own)."""
    if kind == "basic":
        pair = f"{plain['username']}:{plain['password']}".encode()
        _set(headers, "Authorization", "Basic " + base64.b64encode(pair).decode())
    elif kind == "bearer":
        _set(headers, "Authorization", "Bearer " + plain["token"])
    else:
        for item in plain["headers"]:
            _set(headers, item["name"], item["value"])


def _sign(ident: str, kind: str, plain: dict[str, Any], headers: dict[str, str], body: bytes,
          event_id: str) -> None:
    """``signed_payload`` (HMAC with the newest secret) or ``standard_webhooks`` (one signature per
    secret, so a receiver part-way through a rotation accepts either)."""
    if not plain["signing_secrets"]:
        raise DeliveryError(f"auth profile {ident} has no valid signing secret", {"auth_profile": ident})
    stamp = int(time.time())
    if kind == "signed_payload":
        signature = sign_hmac(plain["signing_secrets"][0], stamp, body)
        _set(headers, plain["signature_header"], "sha256=" + signature)
        _set(headers, plain["timestamp_header"], str(stamp))
    else:
        _set(headers, "webhook-id", event_id)
        _set(headers, "webhook-timestamp", str(stamp))
        _set(headers, "webhook-signature",
             " ".join(sign_standard(s, event_id, stamp, body) for s in plain["signing_secrets"]))


def _oauth_token(ident: str, plain: dict[str, Any], box: SecretBox, db: redis.Redis, *, url: str,
                 allowed_networks: tuple, trust: Trust | None, timeout: float) -> str:
    """An OAuth 2.0 access token (cached in the store), from a token endpoint this URL may use."""
    if not oauth.token_endpoint_allowed(plain, url):
        raise DeliveryError(f"auth profile {ident}: the token endpoint must share the webhook URL's "
                            "scheme, host and port, or its host must be in allowed_domains",
                            {"auth_profile": ident})
    return oauth.get_token(plain, db, box, allowed_networks=allowed_networks, trust=trust, timeout=timeout)


def _client_certificate(ident: str, plain: dict[str, Any], cas: tuple[str, ...]) -> Trust:
    """The request's trust with the mTLS pair in it, once the pair is checked valid now."""
    name = fingerprint(plain["id"], plain["certificate"], plain["private_key"])
    _check_validity(ident, name, plain["certificate"], plain["private_key"])
    return Trust(cas, plain["certificate"], plain["private_key"])


_windows: dict[str, tuple[dt.datetime, dt.datetime]] = {}  # material hash → validity (parsed once)


def _check_validity(ident: str, name: str, certificate: str, private_key: str) -> None:
    """Parse and match certificate and key once per process (RSA key checks are slow); check the
    validity window on every use: a certificate that expired since it was saved is never sent."""
    window = _windows.get(name)
    try:
        if window is None:
            info = check_certificate_pair(certificate, private_key)
            window = (dt.datetime.fromisoformat(info["not_valid_before"]),
                      dt.datetime.fromisoformat(info["not_valid_after"]))
            if len(_windows) > 1024:
                _windows.clear()
            _windows[name] = window
        now = dt.datetime.now(dt.UTC)
        if now < window[0]:
            raise ValueError(f"certificate: not valid before {window[0].isoformat()}.")
        if now > window[1]:
            raise ValueError(f"certificate: expired on {window[1].isoformat()}.")
    except ValueError as exc:
        raise DeliveryError(f"auth profile {ident}: client {exc} — not used",
                            {"auth_profile": ident}) from None


def handle_unauthorized(profile: dict[str, Any], db: redis.Redis, prepared: Prepared) -> bool:
    """The destination answered 401 to ``prepared``. For OAuth 2.0, drop the cached token (if it is
    still the one sent) and return True: call ``apply_auth`` again and resend once. False otherwise."""
    if profile.get("type") != "oauth2_client_credentials" or prepared.oauth_token is None:
        return False
    oauth.invalidate(db, profile["id"], prepared.oauth_token)
    return True


def _with_credentials(url: str, username: str | None, password: str | None,
                      query: dict[str, str] | None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if username:  # the profile's userinfo replaces any in the URL
        userinfo = quote(username, safe="") + (":" + quote(password, safe="") if password else "")
        netloc = f"{userinfo}@{netloc.rpartition('@')[2]}"
    params = (parts.query + "&" if parts.query else "") + urlencode(query or {})
    return urlunsplit((parts.scheme, netloc, parts.path, params.rstrip("&"), parts.fragment))


def fingerprint(*parts: str) -> str:
    """A short stable name for certificate material (never the material itself)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


def probe(profile: dict[str, Any], box: SecretBox, db: redis.Redis, sender: SyncBridge, *, method: str, path: str,
          allowed_networks: tuple, timeout: float = 10.0) -> dict[str, Any]:
    """Call ``endpoint_prefix + path`` with the profile's credentials and an empty body, through
    ``sender`` (the one deliveries and trials use). ``ok`` only on HTTP 200; ``response`` is the first
    2 KB; ``error`` says why not. The answer is scrubbed of every credential the request carried (a
    receiver may echo them)."""
    url = profile["endpoint_prefix"].rstrip("/") + "/" + path.lstrip("/")
    hidden = NOTHING
    result: dict[str, Any] = {"ok": False, "status_code": None, "response": "", "error": None}
    try:
        hidden = scrubber(reveal(profile, box))
        for attempt in (1, 2):
            prepared = apply_auth(profile, box, db, method=method, url=url,
                                  headers={"User-Agent": USER_AGENT}, body=b"", event_id=new_id("msg"),
                                  allowed_networks=allowed_networks, timeout=timeout)
            hidden += prepared.scrubber
            response = sender.send(method, prepared.url, prepared.headers, b"", timeout, trust=prepared.trust)
            if response.status_code is None:
                result["error"] = hidden.text(response.error or "no answer")[:500]
                break
            if response.status_code == 401 and attempt == 1 and handle_unauthorized(profile, db, prepared):
                continue
            text = response.body
            result.update(status_code=response.status_code, ok=response.status_code == 200,
                          response=hidden.text(text[:PROBE_RESPONSE_LIMIT], cut=len(text) > PROBE_RESPONSE_LIMIT))
            if response.status_code != 200:
                result["error"] = f"the endpoint answered HTTP {response.status_code}"
            break
    except (DeliveryError, BlockedDestination) as exc:
        result["error"] = exc.message
    except (requests.RequestException, ConnectionError, ValueError, RuntimeError) as exc:
        result["error"] = hidden.text(f"{type(exc).__name__}: {exc}")[:500]
    return hidden.value(result)
