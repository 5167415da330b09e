"""The one sender: deliveries, destination trials, auth profile probes and notifications, many
requests in flight on one asyncio event loop.

``AsyncSender.send(method, url, headers, body, timeout, trust=...)`` returns a ``Response``
(http.py) whose error kinds are timeout | connection | blocked | invalid, with texts that show no
URL's query or userinfo and no header's value. On the wire: default headers ``User-Agent``,
``Accept: */*`` and ``Accept-Encoding: identity``, the caller's headers merged case-insensitively
over them (``None`` removes one), ``Host`` the URL's name (and port when the URL has one),
``Content-Length`` computed (``0`` for a bodyless request other than GET and HEAD, none for those; a
caller's is replaced), Basic credentials from the URL's userinfo, no cookies kept, no redirect
followed, no proxy or ``.netrc`` from the environment, gzip/deflate bodies decoded. A header value
with characters from U+0080 to U+00FF goes out UTF-8 encoded. aiohttp's parser is strict about
malformed answers: bytes after an answer that may have no body (a 204 or 304 sent with one, against
RFC 9110) are read as the next answer and fail as ``connection``.

The guard (netguard.py): a connection goes only to a vetted address. ``GuardedResolver`` is the
connector's resolver; it resolves a name, checks every address it gets and hands aiohttp only those
that pass, so aiohttp connects to a checked address while ``Host`` and TLS SNI stay the name. aiohttp
does not ask the resolver about a host that looks like an IP address, so ``send`` checks those itself
before the request is made; with redirects off and no proxies, ``send`` is the only way in.

Bounds: ``timeout`` covers the whole request, connect to last byte (a receiver trickling bytes is cut
at it), and at most ``RESPONSE_LIMIT`` + 1 bytes of any body are read (3xx included); a longer body
closes the connection unread.

A name with several addresses goes to those that pass the guard; a timeout while the body arrives is a
``timeout``.

``SyncBridge`` is the same sender for callers that are not coroutines: one event loop in a daemon
thread, shared by every thread that calls it, and made anew in a forked child.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import re
import socket
import threading
import time
import weakref
from typing import Any, NamedTuple

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDictProxy
from requests.utils import get_encoding_from_headers
from yarl import URL

from ..config import Network
from ..errors import BlockedDestination
from ..netguard import check_address, resolve
from ..tls import Trust, context
from .http import RESPONSE_LIMIT, USER_AGENT, Response, _decode, _host_header, _safe, _since

__all__ = ["AsyncSender", "GuardedResolver", "SyncBridge"]

DEFAULT_LIMIT = 256  # connections open at once, over all hosts: issue 16's per-worker concurrency default
_DNS_TTL_S = 10  # seconds: as long as netguard keeps an answer
_DNS_THREADS = 8
_MAX_LINE = 65536  # the longest status or header line http.client (today's sender) accepts
_CAP = RESPONSE_LIMIT + 1  # one byte more than is kept tells a body that is too long
_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV

# Sent unless the caller's headers say otherwise (http.client adds ``Accept-Encoding: identity``
# to today's requests). aiohttp adds its own of these four when one is missing (Content-Type for any
# body): a request that lacks one skips them all, so a body the caller gave without a type goes
# without one. (Skipping costs aiohttp a few µs, spared when all four are there, the common case.)
_DEFAULT_HEADERS = (("Accept-Encoding", "identity"), ("User-Agent", USER_AGENT), ("Accept", "*/*"))
_SKIP_AUTO = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
_AUTO_KEYS = tuple(name.lower() for name in _SKIP_AUTO)
_ABSENT = ("", None)
_DEFAULT_STORE = {name.lower(): (name, value) for name, value in _DEFAULT_HEADERS}
_COMPUTED = ("content-length", "host")  # the body and the URL decide these, not the caller
_BODYLESS = ("GET", "HEAD")

# What a header may hold, in one pass: requests' rules (check_header_validity: no leading whitespace,
# no CR or LF, no colon in a name), none of the control characters aiohttp refuses to write, latin-1
# values (as http.client encodes them) and ASCII names.
_GOOD_NAME = re.compile(r"[!-9;-~][\t !-9;-~]*")
_GOOD_VALUE = re.compile(r"(?:[^\s\x00-\x1f\x7f\u0100-\U0010ffff][^\x00-\x08\x0a-\x1f\x7f\u0100-\U0010ffff]*)?")
_good_names: set[str] = set()  # names seen to pass: a delivery's few header names are checked once


class _Unresolvable(Exception):
    """The name has no address. Not an OSError, which aiohttp would rewrap with its own text."""


class _Invalid(ValueError):
    """A request aiohttp must not be given (its text names no header value)."""


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, with netguard's check on every address: only vetted addresses come back.

    The connector keeps what this returns for ``ttl_dns_cache`` seconds and connects to those
    addresses without asking again: it caches vetted answers only, so its cache cannot bypass the
    check (a refusal is raised, never cached, and asked again next time). Names are looked up in a
    small pool of our own, so slow lookups never wait behind other work in the loop's executor."""

    def __init__(self, allowed: tuple[Network, ...], executor: concurrent.futures.Executor):
        self._allowed = allowed
        self._executor = executor

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.run_in_executor(self._executor, _lookup, host, port, family)
        except (socket.gaierror, UnicodeError) as exc:
            raise _Unresolvable(f"cannot resolve {host!r}: {exc}") from None
        vetted: list[ResolveResult] = []
        refusal: BlockedDestination | None = None
        for found, _, proto, _, sockaddr in infos:
            address = str(sockaddr[0])  # an IPv6 link-local address keeps its %zone
            try:
                check_address(address, self._allowed)
            except BlockedDestination as exc:
                refusal = refusal or exc
                continue
            vetted.append(ResolveResult(hostname=host, host=address, port=int(sockaddr[1]), family=found,
                                        proto=proto, flags=_NUMERIC))
        if vetted:
            return vetted
        if refusal is not None:
            raise refusal
        raise _Unresolvable(f"cannot resolve {host!r}")

    async def close(self) -> None:
        """The executor is the sender's; it shuts it down."""


def _lookup(host: str, port: int, family: int) -> list[Any]:
    return socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)


def _looks_like_ip(host: str) -> bool:
    """aiohttp's test (helpers.is_ip_address) for a host it connects to without the resolver."""
    return ":" in host or host.replace(".", "").isdigit()


class AsyncSender:
    """One pooled aiohttp session (keep-alive, at most ``limit`` connections in all, none per host),
    made on the first ``send`` and bound to that event loop. ``close`` ends it."""

    def __init__(self, allowed_networks: tuple[Network, ...] = (), limit: int = DEFAULT_LIMIT):
        self._allowed = tuple(allowed_networks)
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dns: concurrent.futures.ThreadPoolExecutor | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._targets: dict[str, _Target] = {}
        self._literals: dict[str, str] = {}  # an address-like host that passed → the address to connect to

    async def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float, *,
                   trust: Trust | None = None) -> Response:
        """One request. ``trust``: CAs this request trusts besides every request's, and a client
        certificate (tls.py)."""
        started = time.perf_counter()
        try:
            return await self._send(method, url, headers, body, timeout, trust, started)
        except BlockedDestination as exc:
            return Response(None, error=exc.message, error_kind="blocked", latency_ms=_since(started))
        except _Unresolvable as exc:
            return Response(None, error=f"connection failed: {exc}", error_kind="connection",
                            latency_ms=_since(started))
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutError too
            return Response(None, error=f"timed out after {timeout}s: {_timeout_text(exc)}", error_kind="timeout",
                            latency_ms=_since(started))
        except aiohttp.ClientConnectionError as exc:  # before ValueError: a certificate error is both
            return _connection_failed(exc, started)
        except ValueError as exc:  # aiohttp.InvalidURL is one, _Invalid and UnicodeError too
            return Response(None, error=_safe(f"invalid request: {exc}"), error_kind="invalid",
                            latency_ms=_since(started))
        except (aiohttp.ClientError, OSError) as exc:
            return _connection_failed(exc, started)

    async def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float,
                    trust: Trust | None, started: float) -> Response:
        session = self._session_here()
        if type(method) is not str:
            raise _Invalid(f"the method must be a string, not {type(method).__name__}")
        if body is not None and type(body) is not bytes:
            raise _Invalid(f"the body must be bytes, not {type(body).__name__}")
        method = method.upper()
        target = self._targets.get(url) or self._target(url)
        sent, skip = _request_headers(target, headers, method, body)
        connect_to, server_name = target.url, None
        if target.literal:
            host = target.url.raw_host or ""
            address = self._literals.get(host) or await self._check_literal(host, target.url.port or 0, self._dns)
            if address != host:  # a legacy form: connect to its address, with the name kept for Host and TLS
                connect_to, server_name = target.url.with_host(address), host
                sent["Host"] = target.host_header
        async with session.request(method, connect_to, headers=sent, data=body or None, allow_redirects=False,
                                   skip_auto_headers=skip, timeout=self._timeout(timeout),
                                   ssl=context(trust) if target.https else True,
                                   server_hostname=server_name) as response:
            data, complete = await _read_capped(response)
            if not complete:
                response.close()  # the rest of a body past the limit is never read: drop the connection
            return Response(
                response.status,
                body=_decode(data[:RESPONSE_LIMIT], _charset(response.headers.get("Content-Type"))),
                headers=_headers(response.headers),
                latency_ms=_since(started),
            )

    async def _check_literal(self, host: str, port: int, executor: concurrent.futures.Executor | None) -> str:
        """netguard's verdict on a host aiohttp treats as an address, and the address to connect to
        (remembered when it passes: the allow-list is this sender's for good). A legacy numeric form
        (2130706433, 127.1, 0177.0.0.1: aiohttp refuses to connect to those) is what the system's
        resolver makes of it, as in today's sender."""
        try:
            check_address(host, self._allowed)
            address = host
        except ValueError:  # not an address ipaddress reads
            loop = asyncio.get_running_loop()
            try:
                address = await loop.run_in_executor(executor, resolve, host, port, self._allowed)
            except ConnectionError as exc:
                raise _Unresolvable(str(exc)) from None
        if len(self._literals) >= 4096:
            self._literals.clear()
        self._literals[host] = address
        return address

    def _target(self, url: str) -> _Target:
        """``url`` parsed (made once: a destination's URL is sent to again and again), or ``_Invalid``."""
        target = _parse(url)
        if len(self._targets) >= 4096:
            self._targets.clear()
        self._targets[url] = target
        return target

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None:
            self._dns = concurrent.futures.ThreadPoolExecutor(_DNS_THREADS, thread_name_prefix="hookgate-dns")
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._allowed, self._dns), limit=self._limit, limit_per_host=0,
                ttl_dns_cache=_DNS_TTL_S,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, auto_decompress=True,
                max_line_size=_MAX_LINE, max_field_size=_MAX_LINE,
            )
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("an AsyncSender serves the event loop it first sent on")
        return self._session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        """The whole request's bound, made once per value (destinations have a handful of timeouts)."""
        made = self._timeouts.get(seconds)
        if made is None:
            if len(self._timeouts) > 256:
                self._timeouts.clear()
            made = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return made

    async def close(self) -> None:
        """Close the pooled connections and the lookup threads (a later ``send`` opens new ones)."""
        session, dns = self._session, self._dns
        self._session = self._dns = self._loop = None
        if session is not None:
            await session.close()
        if dns is not None:
            dns.shutdown(wait=False)


class _Target(NamedTuple):
    """A URL as it is requested: without userinfo, which becomes a Basic ``authorization``."""

    url: URL
    https: bool
    host_header: str
    own_host: bool  # aiohttp's Host would differ (it drops a default port and a trailing dot): send ours
    authorization: str | None
    literal: bool  # an address, or what aiohttp takes for one: netguard checks it, not the resolver


def _parse(url: str) -> _Target:
    if type(url) is not str:
        raise _Invalid(f"the URL must be a string, not {type(url).__name__}")
    try:
        parsed = URL(url.lstrip())  # requests, too, ignores leading whitespace
    except (ValueError, TypeError) as exc:
        raise _Invalid(f"invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise _Invalid(f"not an http or https URL (scheme {parsed.scheme!r})")
    host = parsed.raw_host
    if not host:
        raise _Invalid("invalid URL: no host supplied")
    authorization = None
    if parsed.raw_user or parsed.raw_password:
        credentials = f"{parsed.user or ''}:{parsed.password or ''}".encode("latin-1")  # as requests encodes them
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
        parsed = parsed.with_user(None)
    host_header = _host_header(host, parsed.explicit_port)
    return _Target(parsed, parsed.scheme == "https", host_header, host_header != parsed.host_port_subcomponent,
                   authorization, _looks_like_ip(host))


def _request_headers(target: _Target, headers: dict[str, str], method: str,
                     body: bytes | None) -> tuple[dict[str, str], tuple[str, ...] | None]:
    """The headers to send (the caller's merged over the defaults, then what the request computes),
    and the automatic headers aiohttp must not add."""
    sent, skip = _merged(headers)
    if target.own_host:
        sent["Host"] = target.host_header
    if target.authorization is not None:  # as requests does: the URL's credentials win
        for name in [name for name in sent if name.lower() == "authorization"]:
            del sent[name]
        sent["Authorization"] = target.authorization
    if body:
        sent["Content-Length"] = str(len(body))
    elif method not in _BODYLESS:
        sent["Content-Length"] = "0"
    return sent, skip


def _merged(headers: dict[str, str]) -> tuple[dict[str, str], tuple[str, ...] | None]:
    """The default headers, then the caller's, case-insensitively (the last spelling wins, the first
    position stays), without ``None`` values and the headers the request computes; and ``_SKIP_AUTO``
    unless all four are there. Raises ``_Invalid`` for a header aiohttp must not write, without
    showing its value (it may be a secret)."""
    store: dict[str, tuple[str, str | None]] = dict(_DEFAULT_STORE)
    for name, value in headers.items():
        _check_header(name, value)
        store[name.lower()] = (name, value)
    complete = all(store.get(key, _ABSENT)[1] is not None for key in _AUTO_KEYS)
    sent = {spelt: given for lowered, (spelt, given) in store.items() if given is not None and lowered not in _COMPUTED}
    return sent, None if complete else _SKIP_AUTO


def _check_header(name: Any, value: Any) -> None:
    if name not in _good_names:
        if type(name) is not str:
            raise _Invalid(f"a header name must be a string, not {type(name).__name__}")
        if not _GOOD_NAME.fullmatch(name):
            raise _Invalid(f"header name {name!r} is not one HTTP allows")
        if len(_good_names) < 4096:
            _good_names.add(name)
    if value is None:
        return
    if type(value) is not str:
        raise _Invalid(f"header {name!r}: the value must be a string, not {type(value).__name__}")
    if _GOOD_VALUE.fullmatch(value) is None:
        fault = "is not latin-1 text" if max(value) > "\xff" else \
            "has a line break, a control character or leading whitespace"
        raise _Invalid(f"header {name!r}: the value {fault} (not shown)")


async def _read_capped(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """At most ``_CAP`` bytes of the body (decoded), and whether that was all of it. A peer breaking
    off mid-body leaves a text saying so, as today's sender: the status line still counts. A timeout
    is not caught: the request did not complete in time."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size < _CAP:
            chunk = await response.content.read(_CAP - size)
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
            if response.content.at_eof():  # all there: spare the read that would return b""
                return b"".join(chunks), size <= RESPONSE_LIMIT
    except TimeoutError:
        raise
    except (aiohttp.ClientError, OSError) as exc:
        return f"(response body unreadable: {exc})".encode(), False
    return b"".join(chunks), False


_charsets: dict[str | None, str | None] = {}  # Content-Type → its charset: receivers answer with a few


def _charset(content_type: str | None) -> str | None:
    """The charset requests reads from ``content_type`` (text/* without one: ISO-8859-1)."""
    try:
        return _charsets[content_type]
    except KeyError:
        found = get_encoding_from_headers({"content-type": content_type} if content_type else {})
        if len(_charsets) < 1024:
            _charsets[content_type] = found
        return found


def _headers(raw: CIMultiDictProxy[str]) -> dict[str, str]:
    """The response's headers as today's sender gives them: one entry per name (its first spelling),
    repeated headers joined with ", "."""
    merged: dict[str, str] = {}
    spelt: dict[str, str] = {}
    for name, value in raw.items():
        key = spelt.setdefault(name.lower(), name)
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _timeout_text(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect timed out"
    return "no complete response in time (the timeout bounds the whole request, connect to last byte)"


def _connection_failed(exc: BaseException, started: float) -> Response:
    """What went wrong, without the URL (aiohttp's texts name it, and the SSL context's repr)."""
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, a TLS handshake refused
        text = f"cannot connect to {exc.host}:{exc.port}: {exc.os_error}"
    elif isinstance(exc, aiohttp.ClientResponseError):  # what came back is not HTTP
        text = f"not a valid HTTP response: {' '.join(str(exc.message).split())}"
    else:
        text = str(exc) or type(exc).__name__
    return Response(None, error=_safe(f"connection failed: {text}"), error_kind="connection",
                    latency_ms=_since(started))


class SyncBridge:
    """``AsyncSender`` for threads: ``send`` takes what ``AsyncSender.send`` takes and blocks until
    the response. One event loop runs in a daemon thread, started on first use; any number of threads
    may send at once, their requests in flight together on that loop.

    Fork safety: a child process (RQ's forking worker) has the parent's objects but not its loop
    thread, and the parent's sockets and TLS sessions are shared with it. A child therefore never
    touches the inherited loop or its connections (closing them could write a TLS close_notify on
    the parent's connection); it keeps them referenced, unused, and starts a loop of its own."""

    def __init__(self, allowed_networks: tuple[Network, ...] = (), limit: int = DEFAULT_LIMIT):
        self._allowed = tuple(allowed_networks)
        self._limit = limit
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sender: AsyncSender | None = None
        _bridges.add(self)

    def send(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float, *,
             trust: Trust | None = None) -> Response:
        """One request (``AsyncSender.send``), from any thread but the bridge's own."""
        loop, sender = self._running()
        # Not ``run_coroutine_threadsafe``: its concurrent Future copies the task's state across and
        # wakes the caller through a Condition, which cost the loop thread a quarter of its time at
        # ~1,000 requests/s (py-spy). The task's own callback releases a lock the caller waits on.
        done = threading.Lock()
        done.acquire()
        finished: list[asyncio.Task[Response]] = []

        def ended(task: asyncio.Task[Response]) -> None:
            finished.append(task)
            done.release()

        def start() -> None:
            loop.create_task(sender.send(method, url, headers, body, timeout, trust=trust)).add_done_callback(ended)

        loop.call_soon_threadsafe(start)
        done.acquire()  # ``timeout`` bounds the coroutine itself
        return finished[0].result()

    def _running(self) -> tuple[asyncio.AbstractEventLoop, AsyncSender]:
        if self._pid != os.getpid():
            self._forked()
        with self._lock:
            if self._loop is None or self._sender is None:
                self._start()
            assert self._loop is not None and self._sender is not None
            return self._loop, self._sender

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(target=_run_loop, args=(loop, ready), name="hookgate-sender", daemon=True)
        thread.start()
        ready.wait()
        self._loop, self._thread = loop, thread
        self._sender = AsyncSender(self._allowed, self._limit)

    def _forked(self) -> None:
        """In a forked child: forget the parent's loop without touching it."""
        if self._loop is not None:
            _abandoned.append((self._loop, self._sender))
        self._lock = threading.Lock()  # a lock held by another thread at the fork stays held in the child
        self._loop = self._thread = self._sender = None
        self._pid = os.getpid()

    def close(self) -> None:
        """Close the connections and stop the loop (the next ``send`` starts them again)."""
        if self._pid != os.getpid():
            self._forked()
            return
        with self._lock:
            loop, thread, sender = self._loop, self._thread, self._sender
            self._loop = self._thread = self._sender = None
        if loop is None or sender is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(sender.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()


_bridges: weakref.WeakSet[SyncBridge] = weakref.WeakSet()
_abandoned: list[tuple[asyncio.AbstractEventLoop, AsyncSender | None]] = []  # a forked child's inheritance


def _after_fork_in_child() -> None:
    """Only the forking thread exists now: reset each bridge before any thread can use it."""
    for bridge in list(_bridges):
        bridge._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
