"""Sending one request: a pooled ``requests.Session`` whose connections go only to vetted addresses."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from ..errors import BlockedDestination
from ..netguard import resolve

__all__ = ["Response", "Sender", "RESPONSE_LIMIT"]

RESPONSE_LIMIT = 64 * 1024
USER_AGENT = "hookgate/0.1"


class _GuardedAdapter(HTTPAdapter):
    """Resolves and checks the host, then pins the connection pool to the checked address."""

    def __init__(self, allowed: tuple, https: bool, **kwargs: Any):
        self._allowed = allowed
        self._https = https
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        hostname = host_params["host"]
        port = host_params["port"] or (443 if self._https else 80)
        request.headers = CaseInsensitiveDict(request.headers or {})
        host_header = f"[{hostname}]" if ":" in hostname else hostname
        if host_params["port"] is not None:
            host_header += f":{host_params['port']}"
        request.headers["Host"] = host_header
        if self._https:
            # Certificates and SNI are checked against the name, not the pinned address.
            pool_kwargs["assert_hostname"] = hostname
            pool_kwargs["server_hostname"] = hostname
        host_params["host"] = resolve(hostname.strip("[]"), port, self._allowed)
        return host_params, pool_kwargs


@dataclass
class Response:
    """What one attempt got back (or why it got nothing)."""

    status_code: int | None
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    latency_ms: float = 0.0
    error: str | None = None
    error_kind: str | None = None  # timeout | connection | blocked | invalid


class Sender:
    def __init__(self, allowed_networks: tuple = (), pool_size: int = 32):
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies or .netrc from the environment
        self.session.headers = CaseInsensitiveDict({"User-Agent": USER_AGENT, "Accept": "*/*"})
        for scheme, https in (("http://", False), ("https://", True)):
            self.session.mount(
                scheme,
                _GuardedAdapter(allowed_networks, https, pool_connections=pool_size, pool_maxsize=pool_size),
            )

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float) -> Response:
        started = time.perf_counter()
        try:
            response = self.session.request(
                method, url, headers=headers, data=body, timeout=timeout, allow_redirects=False, stream=True
            )
        except BlockedDestination as exc:
            return Response(None, error=exc.message, error_kind="blocked", latency_ms=_since(started))
        except requests.Timeout as exc:
            return Response(None, error=f"timed out after {timeout}s: {exc}", error_kind="timeout",
                            latency_ms=_since(started))
        except (requests.ConnectionError, ConnectionError) as exc:
            return Response(None, error=f"connection failed: {exc}", error_kind="connection",
                            latency_ms=_since(started))
        except (requests.RequestException, ValueError) as exc:
            return Response(None, error=f"invalid request: {exc}", error_kind="invalid", latency_ms=_since(started))
        complete = False
        try:
            raw = response.raw.read(RESPONSE_LIMIT + 1, decode_content=True) or b""
            complete = len(raw) <= RESPONSE_LIMIT
        except Exception as exc:  # the peer broke off mid-body: the status line still counts
            raw = f"(response body unreadable: {exc})".encode()
        finally:
            if complete:
                response.raw.release_conn()  # keep the connection for the next request
            else:
                response.close()  # a body past the limit is not read: drop the connection
        return Response(
            response.status_code,
            body=raw[:RESPONSE_LIMIT].decode(response.encoding or "utf-8", errors="replace"),
            headers=dict(response.headers),
            latency_ms=_since(started),
        )


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
