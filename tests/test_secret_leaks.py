"""Secrets never leave hookgate, in any encoding (issue 11, part 5).

Every kind of secret hookgate holds gets a unique marker: auth-profile credentials of every type, the
OAuth client secret and the access token its server issues, signing secrets (outbound and a source's),
an mTLS key, and every built-in preset's secret parameter (and a user preset's). Real receivers on
127.0.0.1 (plain HTTP, HTTPS, HTTPS requiring a client certificate) answer every request with an echo of
it: its path and query, headers and body in the answer's JSON, and each header again as a response
header. A token endpoint refuses three clients (one per client authentication mode) with an error
description that repeats the request. A secret header value with leading whitespace is given too
(refused when saved, or — saved before that rule — refused by the sender and by requests, whose error
names the value). Every destination is delivered by the RQ worker, tried (``/test`` with ``send``),
and every auth profile probed (``/v1/auth-profiles/<id>/test``).

Then every place hookgate stores or shows a text is searched for every marker, in every encoding it may
travel in: as it is (which URL-encoding and JSON-escaping leave visible: a marker is letters and digits)
and in base64 at each of the three alignments it may start at, standard and URL-safe alphabets. The
places: every API answer (creations, refusals, lists, deliveries with their attempt logs, trials, probes,
the export), what a subscriber of the outcome events received, the log records at DEBUG, every key and
value in Redis (Fernet ciphertext set aside, RQ's compressed job data decompressed), the store's
append-only file, and the files under the temporary directory; and no file is opened for writing
meanwhile (an mTLS key goes into its TLS context from memory). Then the parts on their own: the
scrubber's encodings, a source's ``secret_hint``, the embedded store's password and file modes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import secrets
import stat
import sys
import tempfile
import zlib
from pathlib import Path
from urllib.parse import quote, quote_plus, urlsplit

import pytest
import redis
import yarl

from hookgate.auth_profiles import AuthProfileStore
from hookgate.embedded import EmbeddedServer
from hookgate.scrub import MASK, NOTHING, Scrubber
from hookgate.store import connect

from .receiver import Received, Receiver, Reply
from .tls import PKI, TLSReceiver

_URLSAFE = str.maketrans("+/", "-_")
_FERNET = re.compile(rb"gAAAAA[A-Za-z0-9_\-]{40,}={0,2}")


def looked_for(token: str) -> set[str]:
    """The texts that give ``token`` away: itself, and each base64 fragment only it determines."""
    found = {token}
    data = token.encode()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data).decode()
        fragment = encoded[4 if shift else 0:(shift + len(data)) // 3 * 4]
        found |= {fragment, fragment.translate(_URLSAFE)}
    return found


class Markers:
    """One unique marker per secret: letters and digits, so every escaping keeps it whole."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}  # marker → the kind of secret it marks
        self._texts: list[tuple[bytes, str]] = []

    def new(self, kind: str) -> str:
        marker = f"Mk{len(self.kinds):02d}q{secrets.token_hex(8)}"
        self.add(kind, marker)
        return marker

    def add(self, kind: str, marker: str) -> None:
        self.kinds[marker] = kind
        self._texts += [(text.encode(), kind) for text in looked_for(marker)]

    def found(self, data: bytes | str) -> set[str]:
        data = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        return {kind for text, kind in self._texts if text in data}


class Places:
    """What was searched, and what was found where."""

    def __init__(self, markers: Markers) -> None:
        self.markers = markers
        self.checked: dict[str, int] = {}
        self.leaks: list[tuple[str, str]] = []

    def check(self, place: str, what: object) -> None:
        text = what if isinstance(what, (str, bytes)) else json.dumps(what, ensure_ascii=False, default=str)
        self.checked[place] = self.checked.get(place, 0) + 1
        self.leaks += [(kind, place) for kind in sorted(self.markers.found(text))]


def echo(request: Received) -> Reply:
    """The request, told back: in the answer's JSON, and each header as an ``X-Echo-`` header."""
    told = {"method": request.method, "path": request.path, "headers": request.headers,
            "body": request.body.decode("latin-1")}
    headers = {"Content-Type": "application/json", "X-Echo-Path": request.path}
    headers.update({f"X-Echo-{name}": value for name, value in request.headers.items()})
    return Reply(200, json.dumps(told).encode(), headers)


class TokenServer:
    """``/oauth/token`` issues ``token`` to anyone; ``/oauth/refuse`` refuses, repeating the request in
    its error description (as a careless server does); any other path echoes."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, request: Received) -> Reply:
        path = urlsplit(request.path).path
        if path == "/oauth/token":
            return Reply(200, json.dumps({"access_token": self.token, "token_type": "Bearer",
                                          "expires_in": 3600}).encode())
        if path == "/oauth/refuse":
            said = json.dumps({"path": request.path, "headers": request.headers, "body": request.body.decode()})
            return Reply(401, json.dumps({"error": "invalid_client", "error_description": said}).encode())
        return echo(request)


def tls_echo(pki: PKI, reply, *, require_client_cert: bool = False) -> TLSReceiver:
    """An HTTPS (mTLS with ``require_client_cert``) receiver that shakes hands in each connection's own
    thread: many clients at once here."""
    return TLSReceiver(pki, reply, require_client_cert=require_client_cert, handshake_per_connection=True)


# Secrets that never go out: signing secrets sign, a key proves, a refused header is not sent.
NOT_SENT = {"Standard Webhooks secret", "signed payload secret", "source HMAC secret",
            "source Standard Webhooks secret", "mTLS private key", "secret header with leading whitespace"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def servers():
    started: list[Receiver] = []

    def start(server: Receiver) -> Receiver:
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


class Setup:
    """Everything with a secret in it, made through the API (a refusal is checked like any answer)."""

    def __init__(self, client, admin, rt, places: Places, markers: Markers):
        self.client, self.admin, self.rt = client, admin, rt
        self.places, self.markers = places, markers
        self.profiles: list[str] = []
        self.destinations: list[str] = []

    def post(self, path: str, body: dict, place: str = "creation answers") -> tuple[int, dict]:
        response = self.client.post(path, json=body, headers=self.admin)
        self.places.check(place, response.get_data())
        return response.status_code, response.get_json()

    def profile(self, **body) -> str:
        status, shown = self.post("/v1/auth-profiles", {"name": body["type"], **body})
        assert status == 201, shown
        self.profiles.append(shown["id"])
        return shown["id"]

    def destination(self, url: str, **body) -> str:
        status, shown = self.post("/v1/destinations", {"name": "d", "url": url, "events": ["order"],
                                                       "retry_schedule": [], **body})
        assert status == 201, shown
        self.destinations.append(shown["id"])
        return shown["id"]

    def preset(self, preset: str, params: dict, **body) -> str:
        status, shown = self.post("/v1/destinations", {"preset": preset, "params": params, "events": ["order"],
                                                       "retry_schedule": [], **body})
        assert status == 201, shown
        self.destinations.append(shown["id"])
        return shown["id"]

    def leading_space_header(self, url: str, marker: str) -> None:
        """A secret header value with leading whitespace: refused when saved, or (saved before the
        rule) refused when sent, and no error text repeats it."""
        header = {"name": "X-Secret", "value": " " + marker, "secret": True}
        status, shown = self.post("/v1/auth-profiles", {"name": "ws", "type": "headers", "endpoint_prefix": url,
                                                        "headers": [header]}, "refusals")
        if status == 201:
            profile_id = shown["id"]
        else:  # a profile saved before the rule existed
            assert status == 422, shown
            profile_id = AuthProfileStore(self.rt.db, self.rt.secrets).create(
                {"name": "ws", "type": "headers", "endpoint_prefix": url, "ca_certificate": None,
                 "headers": [header]})[0]["id"]
        self.profiles.append(profile_id)
        self.destination(url + "/ws", auth_profile_id=profile_id)


def make_everything(setup: Setup, m: Markers, plain: Receiver, tls: Receiver, mtls: Receiver,
                    pki: PKI, access_token: str) -> None:
    url, secure = plain.url, tls.url
    setup.leading_space_header(url + "/a", m.new("secret header with leading whitespace"))
    for kind, body in [
        ("headers", {"type": "headers", "headers": [
            {"name": "X-Api-Key", "value": m.new("API key header"), "secret": True},
            {"name": "X-Other", "value": "s3cr:t/+&=ü " + m.new("secret header"), "secret": True},
            {"name": "X-Team", "value": "growth", "secret": False}]}),
        ("basic", {"type": "basic", "username": "hookgate", "password": "p:ss/+&=ü " + m.new("basic password")}),
        ("bearer", {"type": "bearer", "token": "tok/+=" + m.new("bearer token")}),
        ("url", {"type": "url", "username": "user", "password": "p@ss:/ü" + m.new("URL password"),
                 "query": {"api_key": "a b&c=/ü" + m.new("URL query value")}}),
        ("signed", {"type": "signed_payload", "secret": "sp-" + m.new("signed payload secret")}),
        ("standard", {"type": "standard_webhooks", "secret": whsec(m, "Standard Webhooks secret")}),
    ]:
        profile = setup.profile(endpoint_prefix=f"{url}/{kind}", **body)
        setup.destination(f"{url}/{kind}/hook", auth_profile_id=profile)
    oauth = {"type": "oauth2_client_credentials", "endpoint_prefix": secure + "/api", "client_id": "hookgate client",
             "scope": "events:write", "ca_certificate": pki.ca_pem}
    for mode in ("header", "body", "query"):  # a refused client: its secret repeated in the error
        profile = setup.profile(**oauth, token_url=secure + "/oauth/refuse", client_auth=mode,
                                client_secret=f"s3cr:t/+&=ü {m.new(f'OAuth client secret ({mode})')}")
        setup.destination(f"{secure}/api/refused-{mode}", auth_profile_id=profile)
    profile = setup.profile(**oauth, token_url=secure + "/oauth/token",
                            client_secret=m.new("OAuth client secret (granted)"))
    setup.destination(secure + "/api/hook", auth_profile_id=profile)
    key_marker = pki.client.key.splitlines()[2][:24]  # the private key's own bytes, not the PKCS#8 header
    assert key_marker not in pki.client.cert
    m.add("mTLS private key", key_marker)
    profile = setup.profile(type="mtls", endpoint_prefix=mtls.url, certificate=pki.client.cert,
                            private_key=pki.client.key, ca_certificate=pki.ca_pem)
    setup.destination(mtls.url + "/hook", auth_profile_id=profile)
    make_presets(setup, m, url)
    for kind, signature in [("hmac_sha256", {"secret": "hm-" + m.new("source HMAC secret")}),
                            ("standard_webhooks", {"secret": whsec(m, "source Standard Webhooks secret")})]:
        status, shown = setup.post("/v1/sources", {"name": kind, "signature": {"type": kind, **signature}})
        assert status == 201, shown
        unsigned = setup.client.post(f"/v1/sources/{shown['id']}/events", json={"name": "order"},
                                     headers={"X-Hookgate-Key": shown["key"]})
        setup.places.check("refusals", unsigned.get_data())


def whsec(m: Markers, kind: str) -> str:
    """A Standard Webhooks secret (``whsec_`` and base64 of 24–64 bytes) with a marker in its base64."""
    marker = m.new(kind)
    text = (marker + "A" * 64)[:44]
    return "whsec_" + text[:43] + "="


def make_presets(setup: Setup, m: Markers, url: str) -> None:
    everyone = {"batch": {"max_wait_s": 0}}
    setup.preset("slack.message", {"url": url, "webhook_url":
                 f"https://hooks.slack.com/services/T0000/B0000/{m.new('Slack webhook URL')}"})
    setup.preset("slack.chat_post_message", {"url": url, "channel": "C1",
                                             "bot_token": "xoxb-" + m.new("Slack bot token")})
    setup.preset("zapier.catch_hook", {"url": url, "hook_url":
                 f"https://hooks.zapier.com/hooks/catch/123/{m.new('Zapier hook URL')}/"})
    setup.preset("meta.conversions", {"url": url, "pixel_id": "123", "batch_size": 1,
                                      "access_token": "EAAB/+=" + m.new("Meta Conversions access token")}, **everyone)
    setup.preset("meta.messenger", {"url": url, "page_id": "9", "psid": "2468",
                                    "access_token": "EAAB/+=" + m.new("Messenger access token")})
    setup.preset("meta.whatsapp_text", {"url": url, "phone_number_id": "1",
                                        "access_token": "EAAB" + m.new("WhatsApp access token")})
    setup.preset("sms.twilio", {"url": url, "account_sid": "AC0123", "from": "+15555550199",
                                "auth_token": m.new("Twilio auth token")})
    setup.preset("sms.cm", {"url": url, "sender": "Shop", "batch_size": 1,
                            "product_token": m.new("CM.com product token")}, **everyone)
    setup.preset("sms.vonage", {"url": url, "api_key": "k1", "from": "Shop",
                                "api_secret": "v/+&= " + m.new("Vonage API secret")})
    status, shown = setup.post("/v1/presets", {
        "name": "acme.secret", "base_url": url, "path": "/acme", "headers": {"X-Acme-Key": "{{ params.key }}"},
        "template": '{"key": {{ params.key | tojson }}}',
        "params": [{"name": "key", "type": "string", "secret": True, "required": True}]})
    assert status == 201, shown
    setup.preset("acme.secret", {"key": "k/+&=ü" + m.new("user preset secret param")})


EVENT = {"name": "order", "user_id": "u1", "data": {"message": "hello", "value": 5},
         "profile": {"email": "ann@example.com", "phone": "+15555550100", "psid": "2468"}}


class WriteWatch:
    """Files opened for writing while it is on (a Python audit hook: once added it stays, so it only
    looks while ``on``)."""

    installed: WriteWatch | None = None

    def __init__(self) -> None:
        self.on = False
        self.written: list[str] = []

    def __enter__(self) -> WriteWatch:
        self.on = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.on = False

    def hook(self, event: str, args: tuple) -> None:
        if self.on and event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and isinstance(path, (str, bytes, os.PathLike)):
                self.written.append(os.fsdecode(path))

    @classmethod
    def get(cls) -> WriteWatch:
        if cls.installed is None:
            cls.installed = cls()
            sys.addaudithook(cls.installed.hook)
        return cls.installed


def keyspace(redis_url: str) -> list[tuple[str, bytes]]:
    """Every key and value in the database, values as bytes (RQ's zlib-compressed job data
    decompressed), with Fernet ciphertext removed."""
    raw = redis.Redis.from_url(redis_url)
    found: list[tuple[str, bytes]] = []
    try:
        for key in raw.scan_iter(count=1000):
            kind = raw.type(key).decode()
            parts: list[bytes] = [key]
            if kind == "string":
                parts.append(raw.get(key) or b"")
            elif kind == "hash":
                parts += [b for pair in raw.hgetall(key).items() for b in pair]
            elif kind == "list":
                parts += raw.lrange(key, 0, -1)
            elif kind == "set":
                parts += list(raw.smembers(key))
            elif kind == "zset":
                parts += [member for member, _ in raw.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                parts += [b for _, entry in raw.xrange(key) for pair in entry.items() for b in pair]
            for part in list(parts):
                with contextlib.suppress(zlib.error):
                    parts.append(zlib.decompress(part))
            found.append((key.decode(errors="replace"), _FERNET.sub(b"", b"\n".join(parts))))
        return found
    finally:
        raw.close()


def store_files(redis_url: str) -> list[Path]:
    """The append-only files of the test store (when it lets us ask where they are)."""
    raw = redis.Redis.from_url(redis_url)
    try:
        directory = Path(raw.config_get("dir")["dir"])
    except redis.RedisError:
        return []
    finally:
        raw.close()
    return [p for p in directory.rglob("*") if p.is_file() and p.suffix != ".conf"]


def search_kept(places: Places, client, admin, setup: Setup, sink: Receiver, caplog, redis_url: str) -> None:
    """Search every place hookgate keeps or shows something (creations, refusals, trials and probes
    were searched as they answered)."""
    for path in ("/v1/sources", "/v1/auth-profiles", "/v1/destinations", "/v1/presets", "/v1/export"):
        places.check("lists and the export", client.get(path, headers=admin).get_data())
    for destination_id in setup.destinations:
        items = client.get(f"/v1/deliveries?destination_id={destination_id}", headers=admin).get_json()["items"]
        places.check("deliveries and attempt logs", items)
        for item in items:
            places.check("deliveries and attempt logs",
                         client.get(f"/v1/deliveries/{item['id']}", headers=admin).get_data())
    for request in sink.requests:
        places.check("outcome events, as a subscriber got them", request.body)
    for record in caplog.records:
        formatted = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        places.check("log records", record.getMessage() + formatted)
    for _, data in keyspace(redis_url):
        places.check("Redis keyspace", data)
    for path in store_files(redis_url):
        places.check("the store's append-only file", _FERNET.sub(b"", path.read_bytes()))
    for path in Path(tempfile.gettempdir()).rglob("*"):
        try:
            if path.is_file() and path.stat().st_size < 1 << 20:
                places.check("files under the temporary directory", path.read_bytes())
        except OSError:
            pass  # gone meanwhile, or not ours to read


def test_no_secret_leaves_in_any_encoding(client, admin, rt, db, redis_url, work, servers, pki, make_source,
                                          post_events, caplog):
    caplog.set_level(logging.DEBUG)
    markers = Markers()
    places = Places(markers)
    access_token = "at/+=" + markers.new("OAuth access token")
    plain = servers(Receiver(echo))
    tls = servers(tls_echo(pki, TokenServer(access_token)))
    mtls = servers(tls_echo(pki, echo, require_client_cert=True))
    sink = servers(Receiver())
    setup = Setup(client, admin, rt, places, markers)
    with WriteWatch.get() as watch:
        make_everything(setup, markers, plain, tls, mtls, pki, access_token)
        client.post("/v1/destinations", headers=admin, json={"name": "sink", "url": sink.url,
                                                            "events": ["webhook.*"], "retry_schedule": []})
        source_id, key = make_source()
        assert post_events(source_id, key, EVENT).status_code == 202
        work()
        for destination_id in setup.destinations:
            answer = client.post(f"/v1/destinations/{destination_id}/test", json={"send": True}, headers=admin)
            places.check("trial answers", answer.get_data())
        for profile_id in setup.profiles:
            answer = client.post(f"/v1/auth-profiles/{profile_id}/test", json={"path": "/probe"}, headers=admin)
            places.check("auth profile test answers", answer.get_data())
        work()  # the outcome events of the trials' deliveries, if any, reach the sink too
    kinds = set(markers.kinds.values())
    sent = {kind for server in (plain, tls, mtls) for r in server.requests
            for kind in markers.found(json.dumps([r.path, r.headers, r.body.decode("latin-1")]))}
    assert sent == kinds - NOT_SENT, sorted(sent)  # each secret that travels went out to an echoing receiver
    assert sink.requests  # outcome events, each with its delivery's echoed answer

    search_kept(places, client, admin, setup, sink, caplog, redis_url)
    found: dict[str, list[str]] = {}
    for kind, place in sorted(set(places.leaks)):
        found.setdefault(kind, []).append(place)
    print(f"secrets tried: {len(kinds)}; places checked: {len(places.checked)} "
          f"({sum(places.checked.values())} texts); secrets found: {len(found)}")
    assert len(kinds) >= 27 and len(places.checked) == 11
    assert found == {}
    assert [path for path in watch.written if not path.startswith(("/dev/", "/proc/"))] == []  # no key file


def test_the_write_watch_sees_a_file_written():
    """The check that no key file is written can fail: a file opened for writing is seen."""
    with tempfile.TemporaryDirectory() as folder, WriteWatch.get() as watch:
        (Path(folder) / "key.pem").write_text("-----BEGIN PRIVATE KEY-----")
        os.close(os.open(Path(folder) / "other", os.O_WRONLY | os.O_CREAT, 0o600))
    assert watch.written[-2:] == [str(Path(folder) / "key.pem"), str(Path(folder) / "other")]
    watch.written.clear()


# -- the scrubber ---------------------------------------------------------------------------------------

TOKEN = "Zq9Wv7Kp2Lm"
SECRET = f's3cr:t/+&=ü "\\{TOKEN}'  # a space, a quote, a backslash, a non-ASCII letter, URL delimiters


@pytest.mark.parametrize("shown", [
    SECRET,
    "Bearer " + SECRET,
    quote(SECRET, safe=""), quote(SECRET), quote_plus(SECRET), re.sub("%..", lambda m: m[0].lower(), quote(SECRET)),
    str(yarl.URL("https://a.example/p").with_query({"k": SECRET})),  # yarl leaves / : decoded in a query
    json.dumps(SECRET), json.dumps(SECRET, ensure_ascii=False), json.dumps(SECRET).replace("/", "\\/"),
    json.dumps(SECRET).replace("&", "\\u0026"),  # as Go's encoding/json writes it
    SECRET.encode().decode("latin-1"), json.dumps(SECRET.encode().decode("latin-1")),  # UTF-8 read as latin-1
    base64.b64encode(SECRET.encode()).decode(), base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
    base64.b64encode(SECRET.encode("latin-1")).decode(), base64.b64encode(quote_plus(SECRET).encode()).decode(),
    *(base64.b64encode(b"x" * shift + SECRET.encode() + b"y" * 5).decode() for shift in range(3)),
    "Basic " + base64.b64encode(b"user:pw1").decode(),  # a password too short to look for alone
    "Basic " + base64.b64encode(f"{quote_plus('client id')}:{quote_plus('pw1')}".encode()).decode(),
])
def test_the_scrubber_masks_every_encoding(shown):
    scrub = Scrubber([SECRET, "pw1"], pairs=[("user", "pw1"), ("client id", "pw1")])
    text = f"echo: {shown} (end)"
    scrubbed = scrub.text(text)
    assert MASK in scrubbed and scrubbed.startswith("echo: ") and scrubbed.endswith(" (end)")
    assert shown not in scrubbed and not any(form in scrubbed for form in looked_for(TOKEN))
    assert scrub.bytes(text.encode()) == scrubbed.encode()
    assert scrub.value({"k": [text], text: 1}) == {"k": [scrubbed], scrubbed: 1}


def test_the_scrubber_leaves_the_rest_alone():
    scrub = Scrubber(["abc", "", None, "token-1234"])  # shorter than 4: never looked for
    assert scrub.text("abc and token-1234") == f"abc and {MASK}"
    assert Scrubber().text("abc") == "abc" and not Scrubber() and NOTHING.text(None) is None
    assert scrub + NOTHING is scrub and NOTHING + scrub is scrub
    assert (Scrubber(["token-1234"]) + Scrubber(["other-5678"])).text("token-1234 other-5678") == f"{MASK} {MASK}"
    assert "token" not in repr(scrub)


def test_a_cut_text_does_not_keep_the_first_part_of_a_secret():
    scrub = Scrubber(["token-1234567890"])
    assert scrub.text("... token-12345", cut=True) == "... " + MASK
    assert scrub.text("... token-12345") == "... token-12345"  # not cut: nothing to mask
    assert scrub.text("... tok", cut=True) == "... tok"  # shorter than 4: not a secret's start


# -- a source's signing secret ------------------------------------------------------------------------

def test_a_given_signing_secret_shows_none_of_its_characters(client, admin):
    given = "my-own-signing-secret-42"
    shown = client.post("/v1/sources", headers=admin, json={
        "name": "s", "signature": {"type": "hmac_sha256", "secret": given}}).get_json()
    hint = shown["signature"]["secret_hint"]
    assert hint == f"given, {len(given)} characters" and "signing_secret" not in shown
    assert not any(given[i:i + 3] in hint for i in range(len(given) - 2))
    generated = client.post("/v1/sources", headers=admin, json={
        "name": "g", "signature": {"type": "standard_webhooks"}}).get_json()
    assert generated["signature"]["secret_hint"] == generated["signing_secret"][:8] + "…"


# -- the embedded store -------------------------------------------------------------------------------

def test_the_embedded_store_requires_a_password_and_keeps_its_files_private(tmp_path):
    data = tmp_path / "data"
    (data / "valkey" / "appendonlydir").mkdir(parents=True)
    (data / "valkey").chmod(0o755)
    (data / "valkey" / "appendonlydir" / "left.aof").write_text("")  # as an older version left them
    (data / "valkey" / "appendonlydir" / "left.aof").chmod(0o644)
    server = EmbeddedServer(data)
    server.start()
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=server.host, port=server.port).ping()
        assert server.password and server.password in server.url and server.password not in server.shown_url
        db = connect(server.url)
        db.set("hookgate:event:evt_1", "kept")
        db.bgrewriteaof()
        db.close()
    finally:
        server.stop()
    assert stat.S_IMODE((data / "valkey").stat().st_mode) == 0o700
    modes = {path.relative_to(data).as_posix(): stat.S_IMODE(path.stat().st_mode) for path in data.rglob("*")}
    assert {"valkey/password", "valkey/valkey.conf", "valkey/valkey.log"} <= set(modes)
    assert any(name.endswith(".aof") and "left" not in name for name in modes)  # Valkey's own, written now
    assert {name: mode for name, mode in modes.items() if mode != (0o700 if (data / name).is_dir() else 0o600)} == {}
    again = EmbeddedServer(data)
    again.start()
    try:
        assert again.password == server.password and connect(again.url).get("hookgate:event:evt_1") == "kept"
    finally:
        again.stop()
