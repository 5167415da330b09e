"""Sending one request: a pooled ``requests.Session`` whose connections go only to vetted addresses.

What goes on the wire is what ``requests.Session.request`` sends, but the common case skips most of
its per-request machinery (measured: requests spends about twice as long preparing and wrapping a
request as urllib3 spends sending it). A destination URL is prepared by requests once and cached;
each request then merges headers with the same case-insensitive rules, takes the session adapter's
pinned urllib3 pool for the vetted address, and maps urllib3's errors to the same exceptions. Anything
out of the ordinary (cookies the session holds, credentials in the URL, a URL or header requests
would refuse) goes through ``Session.request`` itself, so it behaves exactly as before.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json as _json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar, extract_cookies_to_jar
from requests.exceptions import (
    ConnectTimeout,
    InvalidHeader,
    ProxyError,
    ReadTimeout,
    RetryError,
    SSLError,
)
from requests.models import REDIRECT_STATI, PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity, get_auth_from_url, get_encoding_from_headers
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import (
    HTTPError as _HTTPError,
)
from urllib3.exceptions import (
    InvalidHeader as _InvalidHeader,
)
from urllib3.exceptions import (
    ProxyError as _ProxyError,
)
from urllib3.exceptions import (
    SSLError as _SSLError,
)
from urllib3.util import Timeout

from ..config import Network
from ..errors import BlockedDestination
from ..netguard import resolve
from ..tls import Trust, context

__all__ = ["GuardedAdapter", "Response", "Sender", "RESPONSE_LIMIT", "USER_AGENT"]

RESPONSE_LIMIT = 64 * 1024
USER_AGENT = "hookgate/0.1"
_TARGETS_KEPT = 4096


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


class _Target:
    """One destination URL as requests prepares it, and the pool parameters the adapter derives."""

    __slots__ = ("url", "adapter", "request_url", "scheme", "hostname", "lookup_host", "lookup_port",
                 "pool_port", "pool_kwargs", "host_header")

    def __init__(self, sender: Sender, url: str):
        prepared = PreparedRequest()
        prepared.prepare_url(url, OrderedDict())  # Session.request passes params={} (merged: OrderedDict)
        if prepared.url is None:
            raise ValueError("no URL")
        if any(get_auth_from_url(prepared.url)):
            raise ValueError("credentials in the URL: let requests add its Authorization header")
        self.url = prepared.url
        adapter = sender.session.get_adapter(self.url)
        if not isinstance(adapter, GuardedAdapter):
            raise ValueError("not one of our adapters")
        self.adapter = adapter
        host_params, pool_kwargs = HTTPAdapter.build_connection_pool_key_attributes(adapter, prepared, True, None)
        hostname = host_params["host"]
        if not hostname:
            raise ValueError("no host")
        self.scheme = host_params["scheme"]
        self.hostname = hostname
        self.pool_port = host_params["port"]
        self.lookup_host = hostname.strip("[]")
        self.lookup_port = host_params["port"] or (443 if adapter._https else 80)
        self.host_header = _host_header(hostname, host_params["port"])
        if adapter._https:
            _pin_tls(pool_kwargs, hostname, None)
        self.pool_kwargs = pool_kwargs
        self.request_url = adapter.request_url(prepared, OrderedDict())


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


class Sender:
    def __init__(self, allowed_networks: tuple[Network, ...] = (), pool_size: int = 32):
        self.session = requests.Session()
        # One session serves every destination: a cookie one receiver sets must never reach another.
        self.session.cookies.set_policy(_NO_COOKIES)
        self.session.trust_env = False  # no proxies or .netrc from the environment
        self.session.headers = CaseInsensitiveDict({"User-Agent": USER_AGENT, "Accept": "*/*"})
        for scheme, https in (("http://", False), ("https://", True)):
            self.session.mount(
                scheme,
                GuardedAdapter(allowed_networks, https, pool_connections=pool_size, pool_maxsize=pool_size),
            )
        self._allowed = tuple(allowed_networks)
        self._targets: dict[str, _Target | None] = {}
        self._timeouts: dict[Any, Timeout] = {}

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float, *,
             trust: Trust | None = None) -> Response:
        """One request. ``trust``: CAs this request trusts besides every request's, and a client
        certificate (tls.py)."""
        started = time.perf_counter()
        try:
            response = self._request(method, url, headers, body, timeout, trust)
        except BlockedDestination as exc:
            return Response(None, error=exc.message, error_kind="blocked", latency_ms=_since(started))
        except requests.Timeout as exc:
            return Response(None, error=_safe(f"timed out after {timeout}s: {exc}"), error_kind="timeout",
                            latency_ms=_since(started))
        except (requests.ConnectionError, ConnectionError) as exc:
            return Response(None, error=_safe(f"connection failed: {exc}"), error_kind="connection",
                            latency_ms=_since(started))
        except (requests.RequestException, ValueError) as exc:
            return Response(None, error=_safe(f"invalid request: {exc}"), error_kind="invalid",
                            latency_ms=_since(started))
        # ``response`` is urllib3's response, or requests' when requests handled it (it has ``raw``).
        raw = getattr(response, "raw", response)
        complete = False
        try:
            data = raw.read(RESPONSE_LIMIT + 1, decode_content=True) or b""
            complete = len(data) <= RESPONSE_LIMIT
        except Exception as exc:  # the peer broke off mid-body: the status line still counts
            data = f"(response body unreadable: {exc})".encode()
        finally:
            if complete:
                raw.release_conn()  # keep the connection for the next request
            else:
                response.close()  # a body past the limit is not read: drop the connection
                if response is raw:
                    raw.release_conn()  # what requests.Response.close adds
        return Response(
            raw.status,
            body=_decode(data[:RESPONSE_LIMIT], get_encoding_from_headers(raw.headers)),
            headers=dict(raw.headers),
            latency_ms=_since(started),
        )

    def _request(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float,
                 trust: Trust | None) -> Any:
        """Send the request; returns urllib3's response (fast path) or requests' (everything else)."""
        prepared = None if trust else self._prepare(method, url, headers, body)
        if prepared is None:
            # requests hands ``verify`` to GuardedAdapter untouched: a tls.Trust, which its stubs don't know
            return self.session.request(method, url, headers=headers, data=body, timeout=timeout,
                                        allow_redirects=False, stream=True,
                                        verify=trust or True)  # type: ignore[arg-type]
        target, method, sent_headers, body = prepared
        raw = self._urlopen(target, method, sent_headers, body, timeout)
        # What Session.send does next: keep cookies the receiver set, and look at a redirect (not
        # followed, but requests reads its body to release the connection). Rare: only then are
        # requests' own objects built.
        if ("set-cookie" in raw.headers or "set-cookie2" in raw.headers
                or (raw.status in REDIRECT_STATI and "location" in raw.headers)):
            return self._as_requests_response(raw, target, method, sent_headers, body, timeout)
        return raw

    def _urlopen(self, target: _Target, method: str, headers: dict[str, str], body: bytes | None,
                 timeout: float) -> Any:
        """HTTPAdapter.send's call, on the pool pinned to the vetted address, and its mapping of
        urllib3's errors to requests' exceptions."""
        address = resolve(target.lookup_host, target.lookup_port, self._allowed)
        adapter = target.adapter
        pool = adapter.poolmanager.connection_from_host(host=address, port=target.pool_port, scheme=target.scheme,
                                                       pool_kwargs=target.pool_kwargs)
        adapter.cert_verify(pool, target.url, True, None)
        try:
            return pool.urlopen(
                method=method, url=target.request_url, body=body, headers=headers, redirect=False,
                assert_same_host=False, preload_content=False, decode_content=False, retries=adapter.max_retries,
                timeout=self._timeout(timeout), chunked=False,
            )
        except (OSError, _HTTPError) as err:
            mapped = _as_requests_error(err)
            if mapped is err:
                raise
            raise mapped from err

    def _timeout(self, seconds: float) -> Timeout:
        """urllib3's Timeout for ``seconds``, made once (destinations have a handful of timeouts)."""
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            if len(self._timeouts) > 256:
                self._timeouts.clear()
            timeout = self._timeouts[seconds] = Timeout(connect=seconds, read=seconds)
        return timeout

    def _as_requests_response(self, raw: Any, target: _Target, method: str, headers: dict[str, str],
                              body: bytes | None, timeout: float) -> requests.Response:
        """requests' Response for urllib3's, with the cookies kept and the redirect looked at."""
        request = PreparedRequest()
        request.method, request.url, request.body = method, target.url, body
        request.headers = CaseInsensitiveDict(headers)
        request._cookies = RequestsCookieJar()  # type: ignore[attr-defined]  # requests' own, not in its stubs
        response = target.adapter.build_response(request, raw)
        extract_cookies_to_jar(self.session.cookies, request, raw)
        redirects = self.session.resolve_redirects(response, request, yield_requests=True, timeout=timeout,
                                                   proxies=OrderedDict(), stream=True, verify=True, cert=None)
        with contextlib.suppress(StopIteration):
            response._next = next(redirects)  # type: ignore[attr-defined]  # as Session.send sets it
        return response

    def _prepare(self, method: str, url: str, headers: dict[str, str],
                 body: bytes | None) -> tuple[_Target, str, dict[str, str], bytes | None] | None:
        """(target, method, headers, body) as Session.request would send them, or None when this is
        not the plain case (requests then does it all, raising what it raises)."""
        if len(self.session.cookies) or not (body is None or type(body) is bytes):
            return None
        target = self._target(url)
        if target is None or type(method) is not str:
            return None
        method = method.upper()
        store = self._merged_headers(headers)
        if store is None:
            return None
        if body:
            store["content-length"] = ("Content-Length", str(len(body)))
        else:
            body = None
            if method not in ("GET", "HEAD") and "content-length" not in store:
                store["content-length"] = ("Content-Length", "0")
        store["host"] = ("Host", target.host_header)
        return target, method, dict(store.values()), body

    def _target(self, url: str) -> _Target | None:
        """The prepared ``url`` (made once), or None when requests must handle it."""
        target = self._targets.get(url)
        if target is not None or url in self._targets:
            return target
        try:
            target = _Target(self, url)
        except Exception:
            target = None
        if len(self._targets) >= _TARGETS_KEPT:
            self._targets.clear()
        self._targets[url] = target
        return target

    def _merged_headers(self, headers: dict[str, str]) -> dict[str, tuple[str, Any]] | None:
        """Session headers, then the request's, case-insensitively (the last spelling wins, the first
        position stays), without None values: CaseInsensitiveDict's store, as a dict. None when a
        header is not one requests would send as is."""
        store: dict[str, tuple[str, Any]] = {}
        for name, value in self.session.headers.items():
            store[name.lower()] = (name, value)
        for name, value in headers.items():
            if type(name) is not str:
                return None
            store[name.lower()] = (name, value)
        try:
            for lowered, header in list(store.items()):
                if header[1] is None:
                    del store[lowered]
                else:
                    check_header_validity(header)
        except ValueError:
            return None
        return store


def _as_requests_error(err: Exception) -> Exception:
    """urllib3's error as HTTPAdapter.send raises it (itself when requests lets it through)."""
    if isinstance(err, ProtocolError | OSError | ClosedPoolError):
        return requests.ConnectionError(err)
    if isinstance(err, MaxRetryError):
        reason = err.reason
        if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
            return ConnectTimeout(err)
        if isinstance(reason, ResponseError):
            return RetryError(err)
        if isinstance(reason, _ProxyError):
            return ProxyError(err)
        if isinstance(reason, _SSLError):
            return SSLError(err)
        return requests.ConnectionError(err)
    if isinstance(err, _ProxyError):
        return ProxyError(err)
    if isinstance(err, _SSLError):
        return SSLError(err)
    if isinstance(err, ReadTimeoutError):
        return ReadTimeout(err)
    if isinstance(err, _InvalidHeader):
        return InvalidHeader(err)
    return err


_URL_TAIL = re.compile(r"(?P<path>(?:url: |https?://[^\s/]*)/[^\s?'\"]*)\?[^\s'\"]*")
_USERINFO = re.compile(r"(https?://)[^\s/@]+@")


def _safe(error: str) -> str:
    """An error text without what a URL may carry in its query or userinfo (credentials)."""
    return _USERINFO.sub(r"\1", _URL_TAIL.sub(r"\g<path>?…", error))


class _RefuseCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


_NO_COOKIES = _RefuseCookies()


def _decode(data: bytes, charset: str | None) -> str:
    """The response text; a charset Python does not know is read as UTF-8."""
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
