"""The asyncio sender (delivery/async_http.py) against real receivers on 127.0.0.1: what it sends (every
header of it), what it returns, the SSRF guard on resolved addresses, TLS trust and mTLS, the
whole-request timeout and the 64 KB read bound against misbehaving peers (raw sockets), many requests
in flight on one loop, and the thread bridge (fork included)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import resource
import socket
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from hookgate.config import parse_networks
from hookgate.delivery.async_http import AsyncSender, SyncBridge
from hookgate.delivery.http import RESPONSE_LIMIT, USER_AGENT, Response
from hookgate.errors import BlockedDestination
from hookgate.netguard import check_address
from hookgate.tls import Trust

from .receiver import Received, Receiver, Reply
from .tls import PKI, TLSReceiver

LOOPBACK = parse_networks("127.0.0.0/8,::1/128")
T = TypeVar("T")


def with_sender(use: Callable[[AsyncSender], Awaitable[T]], allowed: tuple = LOOPBACK) -> T:
    """``use(sender)`` on a fresh event loop, the sender closed afterwards."""
    async def run() -> T:
        sender = AsyncSender(allowed)
        try:
            return await use(sender)
        finally:
            await sender.close()
    return asyncio.run(run())


def send(method: str, url: str, headers: dict | None = None, body: bytes | None = b"{}", timeout: float = 5.0, *,
         allowed: tuple = LOOPBACK, trust: Trust | None = None) -> Response:
    return with_sender(lambda sender: sender.send(method, url, headers or {}, body, timeout, trust=trust), allowed)


class RawServer:
    """A TCP server on 127.0.0.1 that runs ``handle(connection)`` per connection: a misbehaving peer."""

    def __init__(self, handle: Callable[[socket.socket], None]):
        self.handle = handle
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                request += chunk
            with contextlib.suppress(OSError):  # the client went away: what these tests expect of it
                self.handle(connection)

    def stop(self) -> None:
        self.sock.close()


@pytest.fixture
def raw():
    servers: list[RawServer] = []

    def make(handle: Callable[[socket.socket], None]) -> RawServer:
        servers.append(RawServer(handle))
        return servers[-1]
    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki-async"))


def lowered(received: Received) -> dict[str, str]:
    return {name.lower(): value for name, value in received.headers.items()}


# --- what goes out, what comes back -------------------------------------------------------------------

def test_status_headers_and_body_come_back_as_the_receiver_sent_them(answering):
    replies = {"/ok": Reply(200, b'{"ok": 1}', {"Content-Type": "application/json", "X-Trace": "t1"}),
               "/gone": Reply(410, b"gone", {"Content-Type": "text/plain"}),
               "/busy": Reply(503, b"try later", {"Retry-After": "7"})}
    receiver = answering(lambda request: replies[request.path])
    ok = send("POST", receiver.url + "/ok", {"Content-Type": "application/json"}, b'{"a": 1}')
    assert ok.status_code == 200 and ok.json() == {"ok": 1} and ok.error is None and ok.error_kind is None
    assert ok.headers["X-Trace"] == "t1" and ok.latency_ms > 0
    gone, busy = send("POST", receiver.url + "/gone"), send("PUT", receiver.url + "/busy")
    assert (gone.status_code, gone.body) == (410, "gone")
    assert (busy.status_code, busy.body, busy.headers["Retry-After"]) == (503, "try later", "7")
    assert [request.body for request in receiver.requests] == [b'{"a": 1}', b"{}", b"{}"]


def test_the_request_on_the_wire_is_exactly_this(receiver):
    """Method, path, every header (names compared case-insensitively) and body, as they arrive: what the
    removed requests-based sender sent too (the same defaults, a caller's header replacing or removing
    one, Content-Length on every request with a body or a bodyless method that takes one)."""
    host = f"127.0.0.1:{receiver.port}"
    base = {"host": host, "accept-encoding": "identity", "user-agent": USER_AGENT, "accept": "*/*"}
    cases = [
        (("POST", "/a?x=1", {"Content-Type": "application/json", "X-Team": "growth"}, b'{"a": 1}'),
         ("POST", {**base, "content-type": "application/json", "x-team": "growth", "content-length": "8"})),
        (("post", "/b", {}, None), ("POST", {**base, "content-length": "0"})),  # bodyless POST
        (("GET", "/c", {}, None), ("GET", base)),  # GET without a body: no Content-Length
        (("PUT", "/d", {"user-agent": "mine/1", "Accept": None}, b"raw bytes"),  # no Content-Type added
         ("PUT", {"host": host, "accept-encoding": "identity", "user-agent": "mine/1", "content-length": "9"})),
        (("DELETE", "/e", {}, b""), ("DELETE", {**base, "content-length": "0"})),
    ]
    url = receiver.url

    async def run(sender: AsyncSender) -> None:
        for (method, path, headers, body), _ in cases:
            assert (await sender.send(method, url + path, headers, body, 5)).status_code == 200
    with_sender(run)
    got = [(r.method, r.path, lowered(r), r.body) for r in receiver.requests]
    assert got == [(method, path, headers, body or b"") for ((_, path, _, body), (method, headers)) in cases]


def test_a_callers_content_length_is_replaced_by_the_bodys(receiver):
    """(The requests-based sender sent a caller's Content-Length on a bodyless request as given: a
    receiver then waited for a body that never came.)"""
    assert send("DELETE", receiver.url, {"Content-Length": "99"}, None).status_code == 200
    assert send("PUT", receiver.url, {"content-length": "1"}, b"abc").status_code == 200
    assert [(request.header("Content-Length"), request.body) for request in receiver.requests] == [
        ("0", b""), ("3", b"abc")]


def test_credentials_in_the_url_become_basic_auth_and_the_host_header_keeps_the_name(receiver):
    response = send("GET", f"http://hook:pa%3Ass@localhost:{receiver.port}/x", {"Authorization": "other"}, None)
    assert response.status_code == 200
    [request] = receiver.requests
    assert request.header("Authorization") == "Basic aG9vazpwYTpzcw=="  # hook:pa:ss
    assert request.header("Host") == f"localhost:{receiver.port}"


@pytest.mark.parametrize(("content_type", "raw_body", "text"), [
    ("text/plain; charset=latin-1", "héllo".encode("latin-1"), "héllo"),
    ("text/html", "café".encode("latin-1"), "café"),  # text/* without a charset: ISO-8859-1, as requests reads it
    ("application/json", '{"a": "é"}'.encode(), '{"a": "é"}'),
    ("text/plain; charset=klingon", "ünknown".encode(), "ünknown"),  # a charset Python lacks: UTF-8
])
def test_the_body_is_decoded_by_its_charset(answering, content_type, raw_body, text):
    receiver = answering(Reply(200, raw_body, {"Content-Type": content_type}))
    assert send("GET", receiver.url, body=None).body == text


def test_a_gzip_body_is_decoded(raw):
    packed = gzip.compress(b'{"zipped": true}')
    server = raw(lambda peer: peer.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(packed), packed)))
    assert send("GET", server.url, body=None).json() == {"zipped": True}


# --- the SSRF guard --------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/", "http://localhost:{port}/", "http://[::1]:{port}/", "http://2130706433:{port}/",
    "http://0177.0.0.1:{port}/", "http://127.1:{port}/", "http://169.254.169.254/latest/meta-data/",
])
def test_non_global_addresses_are_refused_before_connecting(receiver, url):
    response = send("POST", url.format(port=receiver.port), allowed=())
    assert response.status_code is None and response.error_kind == "blocked"
    assert "not a global address" in response.error
    assert receiver.requests == []


def test_the_check_is_on_the_resolved_address_with_netguards_message(receiver):
    """An allow-list without loopback refuses 127.0.0.1, and ``localhost`` (a name) resolves to it."""
    with pytest.raises(BlockedDestination) as refused:
        check_address("127.0.0.1", parse_networks("10.0.0.0/8"))
    for host in ("127.0.0.1", "localhost"):
        response = send("POST", f"http://{host}:{receiver.port}/", allowed=parse_networks("10.0.0.0/8"))
        assert (response.error_kind, response.error) == ("blocked", refused.value.message)
    assert receiver.requests == []
    allowed = send("POST", f"http://localhost:{receiver.port}/", allowed=LOOPBACK)
    assert allowed.status_code == 200 and receiver.requests[0].header("Host") == f"localhost:{receiver.port}"


def test_a_legacy_numeric_address_goes_to_what_it_stands_for_when_allowed(receiver):
    """aiohttp would refuse 2130706433 and 127.1 outright; they are checked and sent as any HTTP client
    reads them (inet_aton's forms)."""
    for host in ("2130706433", "127.1"):
        assert send("GET", f"http://{host}:{receiver.port}/", body=None).status_code == 200
    assert [request.header("Host") for request in receiver.requests] == [
        f"2130706433:{receiver.port}", f"127.1:{receiver.port}"]


def test_connection_refused_and_unresolvable_names_are_connection_errors():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens
    refused = send("POST", f"http://user:PASSWORD1@127.0.0.1:{port}/hook?api_key=TOPSECRET")
    assert refused.status_code is None and refused.error_kind == "connection"
    assert refused.error.startswith("connection failed: ") and f"127.0.0.1:{port}" in refused.error
    assert "TOPSECRET" not in refused.error and "PASSWORD1" not in refused.error
    unknown = send("POST", "http://no-such-host.invalid/")
    assert unknown.error_kind == "connection" and "cannot resolve 'no-such-host.invalid'" in unknown.error


@pytest.mark.parametrize(("url", "headers"), [
    ("ftp://example.com/", {}),
    ("http:///nohost", {}),
    ("http://127.0.0.1:99999/", {}),
    ("http://127.0.0.1:9/", {"X-Secret": "TOPSECRET\r\nInjected: yes"}),
    ("http://127.0.0.1:9/", {"X-Secret": "TOPSECRET\n"}),
    ("http://127.0.0.1:9/", {"X-Secret": " TOPSECRET"}),
    ("http://127.0.0.1:9/", {"X-Secret": "TOPSECRET\x01"}),
    ("http://127.0.0.1:9/", {"X-Secret": "TOPSECRET€"}),  # not latin-1
    ("http://127.0.0.1:9/", {"X-Bad\r\nName": "v"}),
    ("http://127.0.0.1:9/", {"X-Number": 5}),
])
def test_a_request_that_cannot_be_sent_is_invalid_and_shows_no_header_value(url, headers):
    response = send("POST", url, headers)
    assert response.status_code is None and response.error_kind == "invalid", response
    assert response.error.startswith("invalid request: ") and "TOPSECRET" not in response.error


# --- misbehaving peers: timeouts and the read bound ----------------------------------------------------

def _trickle_body(peer: socket.socket) -> None:
    peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(100):
        peer.sendall(b"x")
        time.sleep(0.2)


def _trickle_head(peer: socket.socket) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 100:
        peer.sendall(bytes([byte]))
        time.sleep(0.2)


@pytest.mark.parametrize("trickle", [_trickle_body, _trickle_head], ids=["body", "headers"])
def test_the_timeout_bounds_the_whole_request(raw, trickle):
    """One byte every 200 ms never lets a per-read timeout fire; the whole request is cut at 1 s."""
    server = raw(trickle)
    started = time.monotonic()
    response = send("GET", server.url, body=None, timeout=1.0)
    assert time.monotonic() - started < 1.5
    assert response.status_code is None and response.error_kind == "timeout"
    assert response.error.startswith("timed out after 1.0s")


def test_a_body_past_64_kb_is_cut_and_the_sender_goes_on(answering):
    receiver = answering(Reply(200, b"a" * (RESPONSE_LIMIT * 3), {"Content-Type": "text/plain"}))

    async def run(sender: AsyncSender) -> tuple[Response, Response]:
        first = await sender.send("GET", receiver.url, {}, None, 5)
        return first, await sender.send("GET", receiver.url, {}, None, 5)
    first, second = with_sender(run)
    assert first.status_code == second.status_code == 200
    assert first.body == second.body == "a" * RESPONSE_LIMIT


def test_a_redirect_with_a_huge_body_is_neither_followed_nor_read(raw, receiver):
    """A 302 announcing 200 MiB, streamed: 64 KB + 1 are read, the connection is dropped; memory stays flat."""
    size = 200 * 1024 * 1024
    sent = [0]

    def huge_redirect(peer: socket.socket) -> None:
        peer.sendall(b"HTTP/1.1 302 Found\r\nLocation: %s/elsewhere\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\n\r\n" % (receiver.url.encode(), size))
        chunk = b"z" * 65536
        while sent[0] < size:
            peer.sendall(chunk)
            sent[0] += len(chunk)
    server = raw(huge_redirect)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    started = time.monotonic()
    try:
        response = send("POST", server.url, timeout=20)
        traced_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert response.status_code == 302 and response.headers["Location"] == receiver.url + "/elsewhere"
    assert response.body == "z" * RESPONSE_LIMIT
    assert traced_peak < 4 * 1024 * 1024, traced_peak
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_rss < 16 * 1024
    time.sleep(0.2)
    assert sent[0] < 32 * 1024 * 1024  # the peer was cut off, not drained
    assert receiver.requests == []  # the Location was not followed


def test_no_redirect_is_followed_and_no_cookie_is_sent_back(answering):
    receiver = answering(lambda request: Reply(302, b"", {"Location": "/next", "Set-Cookie": "session=abc; Path=/"})
                         if request.path == "/first" else Reply())

    async def run(sender: AsyncSender) -> tuple[Response, Response]:
        first = await sender.send("GET", receiver.url + "/first", {}, None, 5)
        return first, await sender.send("GET", receiver.url + "/again", {}, None, 5)
    first, again = with_sender(run)
    assert first.status_code == 302 and first.headers["Set-Cookie"] == "session=abc; Path=/"
    assert again.status_code == 200
    assert [request.path for request in receiver.requests] == ["/first", "/again"]
    assert receiver.requests[1].header("Cookie") is None


def test_a_peer_that_breaks_off_mid_body_keeps_the_status(raw):
    server = raw(lambda peer: peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc"))
    response = send("GET", server.url, body=None)
    assert response.status_code == 200 and response.body.startswith("(response body unreadable: ")


def test_garbage_instead_of_http_is_a_connection_error(raw):
    server = raw(lambda peer: peer.sendall(b"NOT HTTP AT ALL\r\n\r\n"))
    response = send("GET", server.url, body=None)
    assert response.status_code is None and response.error_kind == "connection"


# --- TLS -------------------------------------------------------------------------------------------------

def test_tls_with_a_private_ca_given_per_request_and_refused_without_it(pki):
    server = TLSReceiver(pki, require_client_cert=False).start()
    try:
        refused = send("POST", server.url + "/hook")
        assert refused.error_kind == "connection" and "CERTIFICATE_VERIFY_FAILED" in refused.error
        trusted = Trust((pki.ca_pem,))
        assert send("POST", server.url + "/hook", trust=trusted).status_code == 200
        # a name: the certificate is checked against it (SAN localhost) while the connection goes to
        # the vetted address
        assert send("POST", f"https://localhost:{server.port}/hook", trust=trusted).status_code == 200
        assert [request.header("Host") for request in server.requests] == [
            f"127.0.0.1:{server.port}", f"localhost:{server.port}"]
    finally:
        server.stop()


def test_mtls_presents_the_client_pair_from_the_trust(pki):
    server = TLSReceiver(pki, require_client_cert=True).start()
    try:
        without = send("POST", server.url, trust=Trust((pki.ca_pem,)))
        assert without.status_code is None and without.error_kind == "connection"
        with_pair = send("POST", server.url, trust=Trust((pki.ca_pem,), pki.client.cert, pki.client.key))
        assert with_pair.status_code == 200 and len(server.requests) == 1
        assert dict(field[0] for field in server.peers[-1]["subject"])["commonName"] == "hookgate client"
    finally:
        server.stop()


# --- many in flight --------------------------------------------------------------------------------------

class Counting:
    """A reply that holds each request ``delay`` seconds and counts how many are in flight at once."""

    def __init__(self, delay: float):
        self.delay = delay
        self.now = self.most = 0
        self._lock = threading.Lock()

    def __call__(self, request: Received) -> Reply:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.delay)
        with self._lock:
            self.now -= 1
        return Reply()


def counting_receiver(delay: float) -> tuple[Receiver, Counting]:
    counting = Counting(delay)
    receiver = Receiver(counting)
    receiver.server.socket.listen(512)  # http.server's backlog of 5 would drop most of 200 connects
    return receiver.start(), counting


def test_200_sends_through_one_sender_are_in_flight_together():
    receiver, counting = counting_receiver(0.1)
    try:
        async def run(sender: AsyncSender) -> list[Response]:
            return await asyncio.gather(*(sender.send("POST", f"{receiver.url}/{n}", {}, b"{}", 10)
                                          for n in range(200)))
        responses = with_sender(run)
        assert [response.status_code for response in responses] == [200] * 200
        assert sorted(request.path for request in receiver.requests) == sorted(f"/{n}" for n in range(200))
        assert counting.most >= 50, counting.most
    finally:
        receiver.stop()


def test_connections_are_kept_alive_and_reused(receiver):
    accepted = [0]
    process = receiver.server.process_request

    def counted(request, client_address) -> None:
        accepted[0] += 1
        process(request, client_address)
    receiver.server.process_request = counted

    async def run(sender: AsyncSender) -> None:
        for _ in range(20):
            assert (await sender.send("POST", receiver.url, {}, b"{}", 5)).status_code == 200
    with_sender(run)
    assert len(receiver.requests) == 20 and accepted[0] == 1


def test_the_bridge_serves_many_threads_at_once():
    receiver, counting = counting_receiver(0.05)
    bridge = SyncBridge(LOOPBACK)
    statuses: list[int | None] = []
    try:
        def worker(n: int) -> None:
            for i in range(10):
                statuses.append(bridge.send("POST", f"{receiver.url}/{n}/{i}", {}, b"{}", 10).status_code)
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * 80 and len(receiver.requests) == 80
        assert counting.most >= 4, counting.most  # the threads' requests overlapped on the bridge's loop
    finally:
        bridge.close()
        receiver.stop()


def test_a_bridge_made_before_a_fork_works_in_the_child(receiver):
    bridge = SyncBridge(LOOPBACK)
    try:
        assert bridge.send("POST", receiver.url + "/parent", {}, b"{}", 5).status_code == 200
        child = os.fork()
        if child == 0:  # the child: the parent's loop thread does not exist here
            code = 1
            try:
                code = 0 if bridge.send("POST", receiver.url + "/child", {}, b"{}", 5).status_code == 200 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert bridge.send("POST", receiver.url + "/parent-again", {}, b"{}", 5).status_code == 200
        assert [request.path for request in receiver.requests] == ["/parent", "/child", "/parent-again"]
    finally:
        bridge.close()
