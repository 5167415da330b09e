"""What every outbound request shares: the ``Response`` a send returns, the limits and the
``User-Agent``, and ``GuardedAdapter``, the SSRF guard for what goes through ``requests`` (OAuth 2.0
token requests, made by requests-oauthlib): the host is resolved once, checked, and the connection
pinned to the checked address. Deliveries, trials, probes and notifications all go through the one
asyncio sender (async_http.py).
"""

from __future__ import annotations

import json as _json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict

from ..config import Network
from ..netguard import resolve
from ..tls import Trust, context

__all__ = ["GuardedAdapter", "Response", "RESPONSE_LIMIT", "USER_AGENT"]

RESPONSE_LIMIT = 64 * 1024
USER_AGENT = "hookgate/0.1"


class GuardedAdapter(HTTPAdapter):
    """Resolves and checks the host, then pins the connection pool to the checked address (the
    SSRF guard of every outbound request: deliveries, notifications, OAuth token requests)."""

    def __init__(self, allowed: tuple[Network, ...], https: bool, **kwargs: Any):
        self._allowed = allowed
        self._https = https
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(self, request: PreparedRequest, verify: Any,
                                             cert: str | tuple[str, str] | None = None) -> tuple[Any, Any]:
        """``verify`` is a ``tls.Trust`` (or True): what this request trusts besides every request's
        CAs, and its client certificate. requests' own CA and certificate options are not used."""
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, True, None)
        hostname = host_params["host"]
        port = host_params["port"] or (443 if self._https else 80)
        request.headers = CaseInsensitiveDict(request.headers or {})
        request.headers["Host"] = _host_header(hostname, host_params["port"])
        if self._https:
            _pin_tls(pool_kwargs, hostname, verify if isinstance(verify, Trust) else None)
        host_params["host"] = resolve(hostname.strip("[]"), port, self._allowed)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Verification is the pool's ``ssl_context`` (tls.py): requests must not point urllib3 at
        certifi's bundle, which urllib3 would load into that shared context."""
        if url.lower().startswith("https"):
            conn.cert_reqs = "CERT_REQUIRED"
            conn.ca_certs = conn.ca_cert_dir = conn.cert_file = conn.key_file = None


def _host_header(hostname: str, port: int | None) -> str:
    host_header = f"[{hostname}]" if ":" in hostname else hostname
    if port is not None:
        host_header += f":{port}"
    return host_header


def _pin_tls(pool_kwargs: Any, hostname: str, trust: Trust | None) -> None:
    """Certificates and SNI are checked against the name, not the pinned address, with the CAs
    ``tls.context`` trusts for ``trust``. (``pool_kwargs`` is urllib3's: requests' stubs type it
    narrower, without these.)"""
    pool_kwargs["assert_hostname"] = hostname
    pool_kwargs["server_hostname"] = hostname
    pool_kwargs["ssl_context"] = context(trust)
    for option in ("ca_certs", "ca_cert_dir", "cert_file", "key_file"):
        pool_kwargs.pop(option, None)


@dataclass
class Response:
    """What one attempt got back (or why it got nothing)."""

    status_code: int | None
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    latency_ms: float = 0.0
    error: str | None = None
    error_kind: str | None = None  # timeout | connection | blocked | invalid

    def json(self) -> Any:
        """The body (its first 64 KB) parsed as JSON, or None when it is not JSON."""
        if not self.body:
            return None
        try:
            return _json.loads(self.body)
        except ValueError:
            return None


_URL_TAIL = re.compile(r"(?P<path>(?:url: |https?://[^\s/]*)/[^\s?'\"]*)\?[^\s'\"]*")
_USERINFO = re.compile(r"(https?://)[^\s/@]+@")


def _safe(error: str) -> str:
    """An error text without what a URL may carry in its query or userinfo (credentials)."""
    return _USERINFO.sub(r"\1", _URL_TAIL.sub(r"\g<path>?…", error))


def _decode(data: bytes, charset: str | None) -> str:
    """The response text; a charset Python does not know is read as UTF-8."""
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
