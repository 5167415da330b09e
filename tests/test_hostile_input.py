"""Hostile input (issue 11, part 1): no request makes hookgate answer 5xx, and every refusal has the
JSON error shape ``{"error": {"code", "message", "details"}}``.

Targeted tests, one class of input at a time: integers past Python's 4,300-digit limit, lone UTF-16
surrogates, ``NaN``/``Infinity``, XML declaring an encoding nobody can read, bytes that are not
UTF-8, oversized URLs and headers (through Flask, and through a real gunicorn over raw sockets). Then
one hypothesis test per class sends it to every rule and method of the Flask url_map, ids filled with
real and bogus ones. Every request sent is tallied per class; set HOOKGATE_HOSTILE_TALLY to a file
name to have the counts written there at the end of the module.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from .processes import ROOT, free_port, spawn, stop_group, wait_http
from .test_errors import assert_error, json_values

ADMIN_TOKEN = "test-admin-token-0123456789"  # conftest's
HUGE = "1" * 4301
SURROGATE = "\ud800"
TALLY: Counter[tuple[str, str]] = Counter()  # (class, "sent" | "5xx") → count


@pytest.fixture(scope="module", autouse=True)
def _tally() -> Iterator[None]:
    yield
    target = os.environ.get("HOOKGATE_HOSTILE_TALLY")
    if target:
        rows = sorted({kind for kind, _ in TALLY})
        with open(target, "a") as out:
            for kind in rows:
                out.write(f"{kind}\t{TALLY[kind, 'sent']}\t{TALLY[kind, '5xx']}\n")


def checked(kind: str, response: Any) -> Any:
    """Tally a response to one hostile request; any 5xx fails, any 4xx must have the error shape, and
    any JSON answer must be strict JSON (no NaN, no lone surrogate)."""
    TALLY[kind, "sent"] += 1
    if response.status_code >= 500:
        TALLY[kind, "5xx"] += 1
    assert response.status_code < 500, response.get_data(as_text=True)[:2000]
    if response.status_code >= 400:
        assert_error(response, response.status_code)
    if response.mimetype == "application/json":
        strict_json(response.get_data())
    return response


def _no_constant(name: str) -> Any:
    raise AssertionError(f"{name} in an answer: not JSON")


def strict_json(raw: bytes) -> Any:
    """``raw`` as JSON by RFC 8259: UTF-8, no NaN/Infinity, no lone surrogate in any string."""
    value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo += list(item.keys()) + list(item.values())
        elif isinstance(item, list):
            todo += item
        elif isinstance(item, str):
            assert not re.search("[\ud800-\udfff]", item), f"a lone surrogate in an answer: {item!r}"
        elif isinstance(item, float):
            assert item == item and abs(item) != float("inf"), item
    return value


# -- a world of real objects, so that hostile bodies reach past the 404 ----------------------------------

class World:
    """One of everything, made through the API: sources of every kind, a policy, auth profiles, a
    plain and a preset destination, a delivery, a replay, an admin token and a user preset."""

    def __init__(self, client, admin: dict[str, str], receiver_url: str):
        self.client, self.admin, self.receiver_url = client, admin, receiver_url
        self.build()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(path, json=body, headers=self.admin)
        assert response.status_code in (201, 202), (path, response.get_json())
        return response.get_json()

    def build(self) -> None:
        self.client.delete("/v1/presets/acme.hook", headers=self.admin)  # when built again
        self.keys: dict[str, str] = {}
        self.sources: dict[str, str] = {}  # kind → id
        for kind in ("generic", "webengage", "xtremepush", "crossengage", "bloomreach"):
            made = self.post("/v1/sources", {"name": kind, "kind": kind})
            self.sources[kind], self.keys[made["id"]] = made["id"], made["key"]
        policy = self.post("/v1/policies", {"name": "p", "concurrency": 2})["id"]
        basic = self.post("/v1/auth-profiles", {"name": "b", "type": "basic", "endpoint_prefix": self.receiver_url,
                                                "username": "u", "password": "pw"})["id"]
        self.signing = self.post("/v1/auth-profiles", {"name": "s", "type": "signed_payload",
                                                       "endpoint_prefix": self.receiver_url})["id"]
        destination = self.post("/v1/destinations", {"name": "d", "url": self.receiver_url + "/d", "events": ["*"],
                                                     "policy_id": policy, "auth_profile_id": basic})["id"]
        self.preset_destination = self.post("/v1/destinations", {
            "preset": "slack.chat_post_message", "events": ["never"],
            "params": {"bot_token": "xoxb-1-2-abc", "channel": "C0123", "url": self.receiver_url}})["id"]
        generic = self.sources["generic"]
        accepted = self.client.post(f"/v1/sources/{generic}/events", json={"name": "x"},
                                    headers={"X-Hookgate-Key": self.keys[generic]})
        assert accepted.status_code == 202
        deliveries = self.client.get(f"/v1/deliveries?destination_id={destination}", headers=self.admin)
        replay = self.post(f"/v1/destinations/{destination}/replay", {})["id"]
        token = self.post("/v1/admin-tokens", {"name": "t"})["id"]
        preset = self.post("/v1/presets", {"name": "acme.hook", "from_destination": destination})["name"]
        self.ids = {"source_id": generic, "destination_id": destination, "policy_id": policy, "profile_id": basic,
                    "delivery_id": deliveries.get_json()["items"][0]["id"], "replay_id": replay, "token_id": token,
                    "name": preset, "event_id": accepted.get_json()["ids"][0]}


@pytest.fixture
def world(client, admin, receiver) -> World:
    return World(client, admin, receiver.url)


def routes(app) -> list[tuple[str, str, str]]:
    """Every (rule, method, endpoint) of the url_map."""
    return sorted((rule.rule, method, rule.endpoint) for rule in app.url_map.iter_rules()
                  for method in rule.methods - {"HEAD", "OPTIONS"})


def fill(rule: str, ids: dict[str, str], **override: str) -> str:
    return re.sub(r"<(\w+)>", lambda m: override.get(m.group(1), ids[m.group(1)]), rule)


def json_routes(app) -> list[tuple[str, str, str]]:
    """The routes whose view reads a JSON body (``read_json``)."""
    return [(rule, method, endpoint) for rule, method, endpoint in routes(app)
            if "read_json" in inspect.getsource(app.view_functions[endpoint]) or endpoint == "ingest.ingest"]


def send(client, world: World, method: str, path: str, data: bytes | str, content_type: str = "application/json"):
    headers = dict(world.admin)
    match = re.match(r"/v1/sources/([^/]+)/events$", path)
    if match:
        headers = {"X-Hookgate-Key": world.keys.get(match.group(1), "hgk_nope")}
    return client.open(path, method=method, data=data, content_type=content_type, headers=headers)


def details_name(response, *path: str | int) -> None:
    """The 422 names the field at ``path`` (marshmallow's nesting: dicts keyed by field, then index)."""
    error = assert_error(response, 422, "validation_failed")
    node = error["details"]
    for step in path:
        assert isinstance(node, dict) and str(step) in node, (path, error)
        node = node[str(step)]
    assert isinstance(node, list) and node and all(isinstance(m, str) for m in node), error


# -- integers past the 4,300-digit limit --------------------------------------------------------------------

def test_every_json_route_is_found(app):
    endpoints = {endpoint for _, _, endpoint in json_routes(app)}
    assert {"ingest.ingest", "destinations.create", "destinations.update", "trials.test", "sources.create",
            "sources.rotate_key", "policies.create", "policies.update", "replays.replay_many",
            "auth_profiles.create", "auth_profiles.update", "auth_profiles.rotate", "auth_profiles.test",
            "admin_tokens.create", "presets.create", "exchange.import_"} <= endpoints


def test_an_integer_past_4300_digits_is_a_422_naming_it_on_every_json_route(app, client, world):
    for rule, method, _ in json_routes(app):
        path = fill(rule, world.ids)
        for body, where in ((f'{{"name": {HUGE}}}', ("name",)),
                            (f'{{"data": {{"n": [1, -{HUGE}]}}}}', ("data", "n", 1)),
                            (f'[{{"name": "ok"}}, {{"name": {HUGE}}}]', (1, "name"))):
            response = checked("huge_int", send(client, world, method, path, body))
            details_name(response, *where)


def test_an_integer_past_4300_digits_is_a_422_for_every_source_kind(client, world):
    for kind, source_id in world.sources.items():
        for body in (f'{{"event_name": "x", "n": {HUGE}}}', f'{{"event_name": "x", "n": {HUGE}}} // a comment'):
            if "//" in body and kind != "webengage":
                continue
            response = checked("huge_int", send(client, world, "POST", f"/v1/sources/{source_id}/events", body))
            details_name(response, "n")


def test_an_integer_within_the_limit_is_still_taken(client, world, post_events):
    source_id = world.sources["generic"]
    response = post_events(source_id, world.keys[source_id], {"name": "x", "data": {"n": int("9" * 4300)}})
    assert response.status_code == 202


# -- lone surrogates -------------------------------------------------------------------------------------------

def _surrogate_cases(world: World) -> list[tuple[str, str, dict[str, Any] | list[Any], tuple[str | int, ...]]]:
    url, ids, lone, long_lone = world.receiver_url, world.ids, SURROGATE, SURROGATE * 16
    dest = {"name": "d", "url": url}
    profile = {"name": "a", "endpoint_prefix": url}
    source_id = world.sources["generic"]
    return [
        ("POST", "/v1/destinations", {**dest, "policy_id": lone}, ("policy_id",)),
        ("POST", "/v1/destinations", {**dest, "auth_profile_id": lone}, ("auth_profile_id",)),
        ("POST", "/v1/destinations", {**dest, "fail_destination_id": "dst_" + lone}, ("fail_destination_id",)),
        ("POST", "/v1/destinations", {"preset": lone, "params": {}}, ("preset",)),
        ("POST", "/v1/presets", {"name": "acme.copy", "from_destination": lone}, ("from_destination",)),
        ("POST", "/v1/auth-profiles", {**profile, "type": "basic", "username": "u", "password": lone}, ("password",)),
        ("POST", "/v1/auth-profiles", {**profile, "type": "bearer", "token": "t" + lone}, ("token",)),
        ("POST", "/v1/auth-profiles", {**profile, "type": "headers",
                                       "headers": [{"name": "X-Key", "value": lone}]}, ("headers", 0, "value")),
        ("POST", "/v1/auth-profiles", {**profile, "type": "signed_payload", "secret": long_lone}, ("secret",)),
        ("POST", "/v1/auth-profiles", {**profile, "type": "url", "query": {"k": lone}}, ("query", "k")),
        ("PATCH", f"/v1/auth-profiles/{ids['profile_id']}", {"password": lone}, ("password",)),
        ("POST", f"/v1/auth-profiles/{world.signing}/rotate", {"secret": long_lone}, ("secret",)),
        ("POST", "/v1/sources", {"name": "s", "signature": {"type": "hmac_sha256", "secret": long_lone}},
         ("signature", "secret")),
        ("POST", "/v1/destinations", {"preset": "slack.chat_post_message",
                                      "params": {"bot_token": "xoxb-" + lone, "channel": "C1"}},
         ("params", "bot_token")),
        ("PATCH", f"/v1/destinations/{world.preset_destination}", {"params": {"bot_token": lone}},
         ("params", "bot_token")),
        ("POST", "/v1/presets", {"name": "acme.sec", "base_url": "https://a.example", "params": [
            {"name": "token", "secret": True, "description": lone}]}, ("params", 0, "description")),
        ("POST", f"/v1/destinations/{ids['destination_id']}/test", {"event": {"name": lone}}, ("event", "name")),
        ("POST", f"/v1/destinations/{ids['destination_id']}/test",
         {"send": True, "event": {"name": "x", "data": {"k": lone}}}, ("event", "data", "k")),
        ("POST", "/v1/destinations", {"name": lone, "url": url}, ("name",)),
        ("POST", "/v1/sources", {"name": "s" + lone}, ("name",)),
        ("POST", "/v1/policies", {"name": lone, "concurrency": 1}, ("name",)),
        ("PATCH", f"/v1/policies/{ids['policy_id']}", {"name": lone}, ("name",)),
        ("POST", "/v1/admin-tokens", {"name": lone}, ("name",)),
        ("POST", "/v1/destinations", {**dest, "template": "{{ '" + lone + "' }}"}, ("template",)),
        ("POST", "/v1/destinations", {**dest, "batch": {"size": 2, "item_template": lone}}, ("batch", "item_template")),
        ("POST", "/v1/presets", {"name": "acme.tpl", "base_url": "https://a.example", "template": lone}, ("template",)),
        ("POST", "/v1/destinations", {**dest, "headers": {"X-A": lone}}, ("headers", "X-A")),
        ("POST", "/v1/destinations", {**dest, "extra_properties": {lone: 1}}, ("extra_properties", "\\ud800")),
        ("POST", f"/v1/auth-profiles/{ids['profile_id']}/test", {"path": "/" + lone}, ("path",)),
        ("POST", "/v1/import", {"destinations": [{"id": "dst_x", "name": lone}]}, ("destinations", 0, "name")),
        ("POST", f"/v1/sources/{source_id}/events", {"name": "x", "user_id": lone}, ("user_id",)),
        ("POST", f"/v1/sources/{source_id}/events", [{"name": "ok"}, {"name": "x", "data": {lone: 1}}],
         (1, "data", "\\ud800")),
        ("POST", f"/v1/sources/{world.sources['webengage']}/events", {"event_name": "x", "user_id": lone},
         ("user_id",)),
    ]


def test_a_lone_surrogate_anywhere_is_a_422_naming_its_field(client, world, db):
    for method, path, body, where in _surrogate_cases(world):
        before = {key: db.dump(key) for key in db.keys("*")}
        response = checked("lone_surrogate", send(client, world, method, path, json.dumps(body)))
        details_name(response, *where)
        assert {key: db.dump(key) for key in db.keys("*")} == before, path  # nothing stored


def test_a_lone_surrogate_after_a_comment_in_a_webengage_body_is_a_422(client, world):
    source_id = world.sources["webengage"]
    body = '{"event_name": "x", // the name\n "user_id": "\\udc00"}'
    details_name(checked("lone_surrogate", send(client, world, "POST", f"/v1/sources/{source_id}/events", body)),
                 "user_id")


def test_surrogate_pairs_and_astral_characters_are_text(client, world, post_events):
    source_id = world.sources["generic"]
    body = json.dumps({"name": "smile \U0001f600", "user_id": "\U0001f600"})  # sent as "\ud83d\ude00"
    assert "\\ud83d\\ude00" in body
    response = send(client, world, "POST", f"/v1/sources/{source_id}/events", body)
    assert response.status_code == 202, response.get_json()


@pytest.mark.parametrize("raw", [b'{"name": "\xed\xa0\x80"}', b'{"name": "\xff"}', b'{"name": "\xc0\xaf"}',
                                 '{"name": "\ud800"}'.encode("utf-16-le", "surrogatepass"),
                                 '{"name": "x"}'.encode("utf-16") + b"\x00\xd8"])
def test_bytes_that_are_not_text_are_a_400(client, world, raw):
    for path in ("/v1/destinations", f"/v1/sources/{world.sources['generic']}/events",
                 f"/v1/sources/{world.sources['webengage']}/events"):
        assert_error(checked("non_utf8", send(client, world, "POST", path, raw)), 400, "invalid_json")


# -- NaN and Infinity ---------------------------------------------------------------------------------------------

NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"]


@pytest.mark.parametrize("token", NON_FINITE)
def test_nan_and_infinity_are_a_422_and_never_stored(client, world, token):
    url, ids = world.receiver_url, world.ids
    cases = [
        ("POST", "/v1/destinations", f'{{"name": "d", "url": "{url}", "extra_properties": {{"a": {token}}}}}',
         ("extra_properties", "a")),
        ("POST", "/v1/destinations", f'{{"name": "d", "url": "{url}", '
                                     f'"conditions": {{"field": "data.n", "op": "gt", "value": {token}}}}}',
         ("conditions", "value")),
        ("PATCH", f"/v1/destinations/{ids['destination_id']}", f'{{"extra_properties": {{"a": [{token}]}}}}',
         ("extra_properties", "a", 0)),
        ("POST", "/v1/presets", f'{{"name": "acme.nan", "base_url": "https://a.example", '
                                f'"params": [{{"name": "x", "type": "number", "default": {token}}}]}}',
         ("params", 0, "default")),
        ("POST", f"/v1/sources/{world.sources['generic']}/events", f'{{"name": "x", "data": {{"n": {token}}}}}',
         ("data", "n")),
        ("POST", f"/v1/sources/{world.sources['webengage']}/events",
         f'{{"event_name": "x", // c\n "event_data": {{"n": {token}}}}}', ("event_data", "n")),
        ("POST", f"/v1/destinations/{ids['destination_id']}/test", f'{{"event": {{"name": "x", "data": {token}}}}}',
         ("event", "data")),
        ("POST", "/v1/policies", f'{{"name": "p", "concurrency": 1, "rate_per_s": {token}}}', ("rate_per_s",)),
        ("POST", "/v1/import", f'{{"policies": [{token}]}}', ("policies", 0)),
        ("POST", "/v1/destinations", token, ("_body",)),
    ]
    for method, path, body, where in cases:
        details_name(checked("nan_infinity", send(client, world, method, path, body)), *where)
    for listing in ("/v1/destinations", "/v1/presets", "/v1/policies", "/v1/export"):
        strict_json(client.get(listing, headers=world.admin).get_data())
    deliveries = client.get("/v1/deliveries", headers=world.admin).get_json()["items"]
    for delivery in deliveries:
        strict_json(client.get(f"/v1/deliveries/{delivery['id']}", headers=world.admin).get_data())


# -- XML that declares an encoding hookgate cannot read ---------------------------------------------------------

XML_ENCODINGS = ["x-nope", "rot13", "base64", "zlib", "hex", "bz2", "uu", "mbcs", "utf-7", "utf-32", "utf-16-be",
                 "idna", "punycode", "undefined", "cp037", "utf-16", "", "utf-8\x00", "latin-1"]


@pytest.mark.parametrize("encoding", XML_ENCODINGS)
def test_xml_declaring_an_unreadable_encoding_is_a_4xx(client, world, encoding):
    body = (f'<?xml version="1.0" encoding="{encoding}"?>'
            '<response><data><id>f1</id><fields><field><label>Name</label></field></fields></data></response>')
    response = checked("xml_encoding", send(client, world, "POST", f"/v1/sources/{world.sources['webengage']}/events",
                                            body.encode("latin-1"), "application/xml"))
    if encoding == "latin-1":
        assert response.status_code == 202, response.get_json()
    else:
        assert_error(response, 422, "validation_failed")


def test_xml_with_an_unknown_encoding_names_it(client, world):
    body = b'<?xml version="1.0" encoding="x-nope"?><response/>'
    error = assert_error(send(client, world, "POST", f"/v1/sources/{world.sources['webengage']}/events", body,
                              "application/xml"), 422)
    assert "x-nope" in json.dumps(error["details"])


# -- request size: the URL, the headers, the body (through Flask) ------------------------------------------------

def test_a_url_past_the_limit_is_a_414_json(client, admin):
    response = checked("http_limits", client.get("/v1/deliveries?cursor=" + "a" * 5000, headers=admin))
    assert_error(response, 414, "url_too_long")
    assert client.get("/v1/deliveries?event_id=" + "a" * 3000, headers=admin).status_code == 200


def test_too_many_or_too_large_headers_are_a_431_json(client, admin):
    many = {**admin, **{f"X-H{n}": "v" for n in range(120)}}
    assert_error(checked("http_limits", client.get("/v1/destinations", headers=many)), 431, "headers_too_large")
    large = {**admin, **{f"X-H{n}": "v" * 8000 for n in range(40)}}  # 320 KB
    assert_error(checked("http_limits", client.get("/v1/destinations", headers=large)), 431, "headers_too_large")
    for fine in ({**admin, **{f"X-H{n}": "v" for n in range(95)}}, {**admin, "X-Large": "a" * 9000},
                 {**admin, **{f"X-H{n}": "v" * 8000 for n in range(30)}}):
        assert client.get("/v1/destinations", headers=fine).status_code == 200


# -- through a real gunicorn: what Flask answers, and what gunicorn itself still answers ---------------------------

@pytest.fixture
def gunicorn(tmp_path, redis_url, db) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKGATE_")}
    env.update(HOOKGATE_LOG_LEVEL="WARNING", HOOKGATE_REDIS_URL=redis_url, HOOKGATE_ADMIN_TOKEN=ADMIN_TOKEN,
               HOOKGATE_BIND=f"127.0.0.1:{port}", HOOKGATE_WEB_WORKERS="1")
    log = tmp_path / "web.log"
    process = spawn([sys.executable, "-m", "gunicorn", "wsgi:app"], env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process=process, log=log)
        yield "127.0.0.1", port
    finally:
        stop_group(process)


def raw_http(address: tuple[str, int], request: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is on a new connection; the status, headers and body of the answer."""
    with socket.create_connection(address, timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before reading it all
            sock.sendall(request)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _get(target: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {ADMIN_TOKEN}",
             "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json_error(answer: tuple[int, dict[str, str], bytes], status: int, code: str) -> None:
    got, headers, body = answer
    assert got == status, (got, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == code, error


@pytest.mark.e2e
def test_gunicorn_lets_real_sizes_reach_flask_which_answers_json(gunicorn):
    sent = [
        (_get("/v1/deliveries?cursor=" + "a" * 6000), 414, "url_too_long"),
        (_get("/v1/destinations", *(f"X-H{n}: v" for n in range(120))), 431, "headers_too_large"),
        (_get("/v1/destinations", *(f"X-H{n}: {'v' * 8000}" for n in range(40))), 431, "headers_too_large"),
        (_get("/v1/destinations", method="FROB"), 405, "method_not_allowed"),
    ]
    # the head of a body past the limit: Flask answers from Content-Length, before reading it
    sent.append((_get("/v1/destinations", "Content-Type: application/json", f"Content-Length: {2 * 1024 * 1024}",
                      method="POST") + b'{"name": "', 413, "payload_too_large"))
    for request, status, code in sent:
        TALLY["http_limits", "sent"] += 1
        answer = raw_http(gunicorn, request)
        TALLY["http_limits", "5xx"] += answer[0] >= 500
        _json_error(answer, status, code)
    for fine in (_get("/v1/destinations", "X-Large: " + "a" * 9 * 1024),
                 _get("/v1/destinations", *(f"X-H{n}: {'v' * 8000}" for n in range(30)))):
        answer = raw_http(gunicorn, fine)
        assert answer[0] == 200, answer


@pytest.mark.e2e
def test_what_gunicorn_itself_still_answers_is_a_4xx_as_the_readme_says(gunicorn):
    """Past its own limits (a request line over 8,190 bytes, more than 128 header fields, a field
    over 16 KiB), or for a request that is not HTTP, gunicorn answers before hookgate sees it: a 4xx
    with its own short page, never a 5xx."""
    sent = [
        (_get("/v1/deliveries?cursor=" + "a" * 10 * 1024), 414),
        (_get("/v1/destinations", *(f"X-H{n}: v" for n in range(200))), 431),
        (_get("/v1/destinations", "X-Large: " + "a" * 20 * 1024), 431),
        (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", 400),
    ]
    for request, status in sent:
        TALLY["http_gunicorn", "sent"] += 1
        got, _, body = raw_http(gunicorn, request)
        TALLY["http_gunicorn", "5xx"] += got >= 500
        assert got == status, (request[:60], got, body[:200])
    security = (ROOT / "README.md").read_text().split("## Security model")[1].split("\n## ")[0]
    assert "8,190" in security and "gunicorn" in security


# -- fuzzing every route with each class of input ------------------------------------------------------------------

BOGUS_IDS = ["nope", "dst_00000000000000000000", "%ff", "%ED%A0%80", "a" * 300, "%2e%2e", "\u00e9", "%00", "src_%22"]
FIELDS = ["name", "url", "events", "method", "format", "headers", "template", "timeout_s", "enabled", "retry_schedule",
          "kind", "data", "profile", "time", "id", "category", "user_id", "policy_id", "auth_profile_id",
          "fail_destination_id", "preset", "params", "from_destination", "extra_properties", "conditions", "batch",
          "signature", "type", "endpoint_prefix", "username", "password", "token", "secret", "query", "grace_s",
          "path", "status", "since", "until", "concurrency", "rate_per_s", "send", "event", "base_url",
          "destinations", "policies", "auth_profiles", "presets", "event_name", "event_data", "response",
          "circuit_breaker", "notify", "ca_certificate", "key_required", "required_fields"]
# (path into the body) where a hostile value goes: top-level fields, and the nested places that
# reach ids, secrets, templates, conditions and events
NESTED_SLOTS = [
    ("headers", "X-A"), ("headers", 0, "value"), ("params", "bot_token"), ("params", "channel"),
    ("params", 0, "default"),
    ("event", "name"), ("event", "data", "n"), ("extra_properties", "k"), ("conditions", "value"),
    ("signature", "secret"), ("batch", "item_template"), ("query", "k"), ("destinations", 0, "name"),
    ("data", "k"), (0, "name"), (1, "data"), ("response", "data", "fields"), ("event_data", "x"),
]
# the places each route keeps what it is given as it is (raw values, ids, secrets, names, templates)
ROUTE_SLOTS: dict[str, list[tuple[str | int, ...]]] = {
    "destinations.create": [("name",), ("extra_properties", "k"), ("conditions", "value"), ("headers", "X-A"),
                            ("policy_id",), ("auth_profile_id",), ("fail_destination_id",), ("template",),
                            ("preset",), ("batch", "item_template")],
    "destinations.update": [("name",), ("extra_properties", "k"), ("conditions", "value"), ("params", "bot_token"),
                            ("params", "channel"), ("policy_id",), ("template",)],
    "ingest.ingest": [("name",), ("data", "k"), ("profile", "k"), ("system", "k"), ("user_id",), (1, "data", "k"),
                      ("event_data", "x"), ("event_name",)],
    "trials.test": [("event", "name"), ("event", "data", "n"), ("event", "profile", "k")],
    "presets.create": [("params", 0, "default"), ("params", 0, "description"), ("template",), ("from_destination",),
                       ("title",), ("headers", "X-A")],
    "auth_profiles.create": [("password",), ("username",), ("name",)],
    "auth_profiles.update": [("password",), ("name",)],
    "auth_profiles.rotate": [("secret",)],
    "sources.create": [("name",), ("signature", "secret")],
    "policies.create": [("name",), ("rate_per_s",)],
    "policies.update": [("name",), ("rate_per_s",)],
    "admin_tokens.create": [("name",)],
    "exchange.import_": [("destinations", 0, "name"), ("policies", 0, "name")],
}
MARK = "\u0000hostile\u0000"


def _base(endpoint: str, world: World) -> dict[str, Any]:
    """A body the route would take, for a hostile value to sit in (so it reaches past the first check)."""
    url = world.receiver_url
    return {
        "destinations.create": {"name": "d", "url": url},
        "sources.create": {"name": "s"},
        "policies.create": {"name": "p", "concurrency": 1},
        "auth_profiles.create": {"name": "a", "type": "basic", "endpoint_prefix": url, "username": "u",
                                 "password": "p"},
        "admin_tokens.create": {"name": "t"},
        "presets.create": {"name": "acme.fuzz", "base_url": "https://a.example"},
        "ingest.ingest": {"name": "x"},
        "trials.test": {"event": {"name": "x"}},
    }.get(endpoint, {})


def _put(body: Any, path: tuple[str | int, ...], value: Any) -> Any:
    if not path:
        return value
    step, rest = path[0], path[1:]
    if isinstance(step, int):
        items = list(body) if isinstance(body, list) else [{"name": "x"}]
        while len(items) <= step:
            items.append({"name": "x"})
        items[step] = _put(items[step], rest, value)
        return items
    node = dict(body) if isinstance(body, dict) else {}
    node[step] = _put(node.get(step, {}), rest, value)
    return node


def _with(base: dict[str, Any], slot: tuple[str | int, ...], fragment: str) -> str:
    """``base`` with the raw JSON text ``fragment`` at ``slot``."""
    return json.dumps(_put(base, slot, MARK)).replace(json.dumps(MARK), fragment, 1)


lone_surrogates = st.lists(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(), min_size=1,
                           max_size=6).map("".join).filter(lambda s: re.search("[\ud800-\udfff]", s) is not None)
FRAGMENTS: dict[str, st.SearchStrategy[str]] = {
    "huge_int": st.builds(lambda n, sign, tail: sign + "9" * n + tail, st.integers(4301, 12000),
                          st.sampled_from(["", "-"]), st.sampled_from(["", "", ".5", "e-4000", "e5"])),
    "lone_surrogate": lone_surrogates.map(json.dumps) | lone_surrogates.map(lambda s: json.dumps({s: 1})),
    "nan_infinity": st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "[NaN]", '{"a": Infinity}',
                                     "1" * 400 + ".0", "0.1e99999"]),
    "deep_nesting": st.builds(lambda depth, kind: kind[0] * depth + kind[1] * depth,
                              st.sampled_from([64, 500, 900, 995, 1000, 3000, 100_000]),
                              st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"and":[', "]}")])),
    "wrong_type": json_values.map(json.dumps),
    "huge_string": st.sampled_from([70_000, 300_000, 1024 * 1024 + 1]).map(lambda n: json.dumps("a" * n)),
}
XML_BODIES = st.builds(lambda enc, root: f'<?xml version="1.0" encoding="{enc}"?>{root}'.encode("latin-1"),
                       st.sampled_from(XML_ENCODINGS),
                       st.sampled_from(["<response><data><id>1</id></data></response>", "<a>&#xD800;</a>", "<x/>",
                                        "<survey><questionResponses/></survey>", "<r>" * 70 + "</r>" * 70]))
NOT_UTF8 = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda bad, at: b'{"name": "' + b"x" * at + bad + b'"}',
              st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xc3", b"\xf4\x90\x80\x80", b"\x00"]),
              st.integers(0, 8)),
    st.builds(lambda text: json.dumps({"name": text}, ensure_ascii=False).encode("utf-16", "surrogatepass"),
              lone_surrogates),
)


def _target(world: World, rules: list[tuple[str, str, str]],
            favoured: list[tuple[str, str, str]]) -> st.SearchStrategy[tuple[str, str, str]]:
    """(method, path, endpoint): every rule and method, the ``favoured`` ones as often as all the
    others together; ids real (mostly) or bogus."""
    def filled(route: tuple[str, str, str], real: bool, bogus: str, kind: str) -> tuple[str, str, str]:
        rule, method, endpoint = route
        ids = dict(world.ids, source_id=world.sources[kind])
        return method, fill(rule, ids) if real else fill(rule, ids, **dict.fromkeys(ids, bogus)), endpoint
    return st.builds(filled, st.sampled_from(rules) | st.sampled_from(favoured), st.booleans() | st.just(True),
                     st.sampled_from(BOGUS_IDS), st.sampled_from(sorted(world.sources)))


def _shown_strictly(client, world: World, endpoint: str, response: Any) -> None:
    """Every answer that could show what a 2xx just stored is strict JSON: the listings, and for
    events taken in, their deliveries (each with its event)."""
    for listing in ("/v1/export", "/v1/sources", "/v1/destinations", "/v1/presets"):
        strict_json(client.get(listing, headers=world.admin).get_data())
    for event_id in (response.get_json() or {}).get("ids", [])[:3] if endpoint == "ingest.ingest" else []:
        page = client.get(f"/v1/deliveries?event_id={event_id}", headers=world.admin).get_json()
        for delivery in page["items"][:2]:
            strict_json(client.get(f"/v1/deliveries/{delivery['id']}", headers=world.admin).get_data())


def _fuzz(kind: str, app, client, world: World, data: st.DataObject) -> None:
    favoured = [r for r in json_routes(app) if kind != "xml_encoding" or r[2] == "ingest.ingest"]
    method, path, endpoint = data.draw(_target(world, routes(app), favoured))
    content_type = "application/json"
    if kind == "xml_encoding":
        body, content_type = data.draw(XML_BODIES), data.draw(st.sampled_from(["application/xml", "text/xml"]))
    elif kind == "non_utf8":
        body = data.draw(NOT_UTF8)
    else:
        fragment = data.draw(FRAGMENTS[kind])
        own = ROUTE_SLOTS.get(endpoint, NESTED_SLOTS)
        slot = data.draw(st.sampled_from(own) | st.sampled_from(own) | st.sampled_from([(f,) for f in FIELDS])
                         | st.sampled_from(NESTED_SLOTS) | st.just(()))
        base = _base(endpoint, world)
        body = _with([base, base] if slot and isinstance(slot[0], int) else base, slot, fragment).encode()
    response = checked(kind, send(client, world, method, path, body, content_type))
    if response.status_code >= 300:
        return
    if method in ("POST", "PATCH"):  # whatever it stored is shown as RFC 8259 JSON
        _shown_strictly(client, world, endpoint, response)
    if endpoint == "sources.rotate_key":
        world.keys[path.split("/")[3]] = response.get_json()["key"]
    if method == "DELETE" or endpoint == "exchange.import_":
        world.build()  # it removed or replaced part of the world: make it again


FUZZ_CLASSES = [*FRAGMENTS, "non_utf8", "xml_encoding"]


@pytest.mark.parametrize("kind", FUZZ_CLASSES)
@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_no_route_answers_5xx_to_hostile_input(kind, app, client, world, data):
    _fuzz(kind, app, client, world, data)

