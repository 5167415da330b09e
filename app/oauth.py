"""OAuth 2.0 client credentials: fetching access tokens, and caching them in Redis for every worker.

Security rules kept here:

- **Where the token request may go.** The token endpoint must share the webhook URL's origin (scheme,
  host and port) unless the profile lists ``allowed_domains`` (Bloomreach's rule), so a profile cannot
  be made to send its client secret to an arbitrary host. ``token_endpoint_allowed`` checks it; the
  outbound path enforces it before any token request.
- **SSRF.** The token request goes through the same guarded adapters as deliveries
  (``hookgate.delivery.http.GuardedAdapter``): the host is resolved once, checked against the allowed
  networks and the connection pinned to that address. Redirects are not followed; proxies and
  ``.netrc`` from the environment are ignored; the token endpoint must be HTTPS (oauthlib's rule).
- **Secrets.** The cached token is encrypted with the ``SecretBox``; the client secret travels as
  HTTP Basic (``client_auth=header``, RFC 6749 §2.3.1, form-encoded first), in the form body, or in
  the query string; errors are scrubbed of it in each of those encodings (``scrub.Scrubber``) before
  they are raised: they end up in delivery logs, and a token endpoint's refusal may repeat the request.

Cache: ``hookgate:oauth:<profile id>`` holds ``{"t": <encrypted token>, "h": <sha256 prefix>}`` with a
TTL of ``expires_in`` minus a margin, so a token is refreshed before it expires. A short lock key
keeps many workers from fetching at once. ``invalidate`` drops a token the destination refused (401).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import time
from typing import Any
from urllib.parse import quote_plus, urlsplit

import redis
import requests
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session

from .delivery.http import GuardedAdapter
from .errors import DeliveryError
from .scrub import Scrubber
from .store import keys
from .tls import Trust

__all__ = ["fetch_token", "get_token", "invalidate", "token_endpoint_allowed", "valid_domain"]

# requests-oauthlib and oauthlib log request bodies and tokens at DEBUG: keep them quiet whatever
# HOOKGATE_LOG_LEVEL says.
for _name in ("requests_oauthlib", "oauthlib"):
    logging.getLogger(_name).setLevel(logging.WARNING)

DEFAULT_EXPIRES_S = 300.0  # a token response without expires_in is trusted this long
LOCK_S = 15.0
_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _PORTS.get(scheme)


def token_endpoint_allowed(profile: dict[str, Any], url: str) -> bool:
    """The token URL shares ``url``'s origin, or its host is one of ``allowed_domains``
    (an entry ``example.com`` matches that host, ``*.example.com`` its subdomains)."""
    try:
        token_origin, target_origin = _origin(profile["token_url"]), _origin(url)
    except ValueError:
        return False
    domains = profile.get("allowed_domains")
    if not domains:
        return token_origin == target_origin
    host = token_origin[1]
    return any(host == d.lower() or (d.startswith("*.") and host.endswith(d[1:].lower())) for d in domains)


def _session(allowed_networks: tuple, client: BackendApplicationClient,
             scope: list[str] | None) -> OAuth2Session:
    session = OAuth2Session(client=client, scope=scope)
    session.trust_env = False
    for scheme, https in (("http://", False), ("https://", True)):
        session.mount(scheme, GuardedAdapter(allowed_networks, https, pool_connections=1, pool_maxsize=1))
    return session


def fetch_token(profile: dict[str, Any], *, allowed_networks: tuple, trust: Trust | None = None,
                timeout: float = 10.0) -> dict[str, Any]:
    """One token request for a revealed ``oauth2_client_credentials`` profile. Raises ``DeliveryError``."""
    client_id, secret = profile["client_id"], profile["client_secret"]
    mode = profile.get("client_auth", "header")
    scope = (profile.get("scope") or "").split() or None
    session = _session(allowed_networks, BackendApplicationClient(client_id=client_id, scope=scope), scope)

    def shape(url: str, headers: dict, kwargs: dict) -> tuple[str, dict, dict]:
        if mode == "query":  # the client credentials go in the query string, the grant in the body
            data = kwargs.get("data") or {}
            kwargs["params"] = {k: data.pop(k) for k in ("client_id", "client_secret") if k in data}
        kwargs["allow_redirects"] = False
        return url, headers, kwargs

    answered: dict[str, int] = {}

    def remember(response: requests.Response) -> requests.Response:
        answered["status"] = response.status_code
        return response

    session.register_compliance_hook("access_token_request", shape)
    session.register_compliance_hook("access_token_response", remember)
    options: dict[str, Any] = dict(profile.get("extra_params") or {})
    if mode == "header":
        options.update(auth=requests.auth.HTTPBasicAuth(quote_plus(client_id), quote_plus(secret)),
                       include_client_id=False)
    else:
        options.update(include_client_id=True, client_secret=secret)
    token_parts = urlsplit(profile["token_url"])
    where = f"{token_parts.scheme}://{token_parts.netloc}{token_parts.path}"  # no query: nothing secret
    # a refusal may repeat the request: the secret, form-encoded, or in the Basic header
    hidden = Scrubber([secret], [(client_id, secret)])
    try:
        return dict(session.fetch_token(profile["token_url"], timeout=timeout, verify=trust or True, **options))
    except Warning as warning:  # oauthlib: the server granted another scope than asked; take the token
        token = getattr(warning, "token", None)
        if token and token.get("access_token"):
            return dict(token)
        reason = hidden.text(str(warning))
        raise DeliveryError(f"oauth2 token request to {where} failed: {reason}",
                            {"token_url": where, "retryable": False}) from None
    except Exception as exc:  # noqa: BLE001 -- requests, oauthlib, SSRF guard alike: one secret-free message
        reason = hidden.text(f"{type(exc).__name__}: {exc}")[:500]
        status = answered.get("status")
        # Worth retrying later: the endpoint was unreachable, or answered 5xx/408/429.
        retryable = (isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError))
                     if status is None else status >= 500 or status in (408, 429))
        raise DeliveryError(f"oauth2 token request to {where} failed: {reason}",
                            {"token_url": where, "status_code": status, "retryable": retryable}) from None
    finally:
        session.close()


def get_token(profile: dict[str, Any], db: redis.Redis, box: Any, *, allowed_networks: tuple,
              trust: Trust | None = None, timeout: float = 10.0) -> str:
    """The cached access token of a revealed profile, or a fresh one (cached for every worker)."""
    key = keys.oauth_token(profile["id"])
    cached = _read(db, box, key)
    if cached:
        return cached
    lock = key + ":lock"
    if not db.set(lock, "1", nx=True, px=int(LOCK_S * 1000)):
        deadline = time.monotonic() + min(timeout, LOCK_S)
        while time.monotonic() < deadline:  # another worker is fetching: wait for its token
            time.sleep(0.05)
            cached = _read(db, box, key)
            if cached:
                return cached
    try:
        token = fetch_token(profile, allowed_networks=allowed_networks, trust=trust, timeout=timeout)
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise DeliveryError("oauth2 token response has no access_token", {"retryable": False})
        try:
            expires_in = float(token.get("expires_in") or DEFAULT_EXPIRES_S)
        except (TypeError, ValueError):
            expires_in = DEFAULT_EXPIRES_S
        ttl_ms = int((expires_in - min(60.0, max(1.0, expires_in * 0.1))) * 1000)
        if ttl_ms > 0:
            db.set(key, json.dumps({"t": box.encrypt(access), "h": _hash(access)}), px=ttl_ms)
        return access
    finally:
        db.delete(lock)


def invalidate(db: redis.Redis, profile_id: str, token: str | None = None) -> bool:
    """Drop the cached token (only if it is still ``token``, when given: another worker may already
    have replaced it). True when something was dropped."""
    key = keys.oauth_token(profile_id)
    if token is None:
        return bool(db.delete(key))
    with db.pipeline() as pipe:
        try:
            pipe.watch(key)
            raw = pipe.get(key)
            if not raw or json.loads(raw).get("h") != _hash(token):
                pipe.unwatch()
                return False
            pipe.multi()
            pipe.delete(key)
            pipe.execute()
            return True
        except redis.WatchError:
            return False


def _read(db: redis.Redis, box: Any, key: str) -> str | None:
    raw = db.get(key)
    if not raw:
        return None
    try:
        return box.decrypt(json.loads(raw)["t"])
    except (RuntimeError, ValueError, KeyError):
        return None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def valid_domain(entry: str) -> bool:
    """An ``allowed_domains`` entry: a host name, ``*.`` and a domain, or an IP address."""
    try:
        ipaddress.ip_address(entry)
        return True
    except ValueError:
        pass
    name = entry.removeprefix("*.")
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        and not label.startswith("-") and not label.endswith("-") for label in labels)
