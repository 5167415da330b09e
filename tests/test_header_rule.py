"""One header rule everywhere (app/headers.py): every source of the headers hookgate sends, every
class of bad name and value, refused when saved (a 422 at the field) and, as rendered, before it is
sent (an ``error`` attempt, and not one byte reaches the receiver); and what does go out, as a
raw-socket receiver on 127.0.0.1 reads it, has one field per name and exactly one framing header
when it has a body (none on a GET)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hookgate.config import parse_networks
from hookgate.delivery.async_http import SyncBridge
from hookgate.exchange.export import VERSION
from hookgate.headers import MAX_FIELDS, MAX_NAME, MAX_VALUE
from hookgate.store import bump_config, keys

# -- the attacks -------------------------------------------------------------------------------------------

VALUE_ATTACKS = {
    "CR": "a\rb",
    "LF": "a\nb",
    "CRLF injection": "a\r\nX-Injected: yes",
    "CRLF request split": "a\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    "trailing LF": "token\n",  # a regex's $ matches before it
    "trailing CRLF": "token\r\n",
    "NUL": "a\x00b",
    "SOH": "a\x01b",
    "ESC": "a\x1bb",
    "VT": "a\x0bb",
    "FF": "a\x0cb",
    "US": "a\x1fb",
    "DEL": "a\x7fb",
    "NEL (C1)": "a\x85b",
    "U+2028": "a\u2028b",
    "leading space": " token",
    "leading tab": "\ttoken",
    "trailing space": "token ",
    "trailing tab": "token\t",
    "oversize": "a" * (MAX_VALUE + 1),
}
RESERVED_NAMES = ["Host", "HOST", "Content-Length", "content-length", "CONTENT-LENGTH", "Transfer-Encoding",
                  "transfer-encoding", "Connection", "Keep-Alive", "keep-alive", "Upgrade", "TE", "te", "Trailer",
                  "Expect", "Proxy-Authorization", "proxy-connection", "Proxy-Anything", "webhook-id",
                  "Webhook-Timestamp", "WEBHOOK-SIGNATURE", "X-Hookgate-Delivery", "x-hookgate-attempt",
                  "X-Hookgate-Batch-Size", "X-Hookgate-Signature", "x-hookgate-timestamp"]
NAME_ATTACKS = {
    **{f"reserved {name}": name for name in RESERVED_NAMES},
    "space": "X A", "colon": "X:A", "parenthesis": "X(A)", "quote": 'X"A', "slash": "X/A", "at": "X@A",
    "non-ASCII": "Xé", "tab": "X\tA", "CRLF": "X\r\nInjected", "trailing LF": "X-A\n", "NUL": "X\x00A",
    "leading space": " X-A", "trailing space": "X-A ", "empty": "", "oversize": "X" * (MAX_NAME + 1),
}
RENDERED_ONLY = "a{{ '\\r\\n' }}X-Injected: yes"  # a pattern fine as written, CRLF once rendered

tally: dict[str, list[int]] = {}  # source → [tried, got through]


def count(source: str, refused: bool) -> None:
    tried, through = tally.setdefault(source, [0, 0])
    tally[source] = [tried + 1, through + (not refused)]


def paths(details: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every path to a message in an error's details."""
    if isinstance(details, dict):
        for key, value in details.items():
            yield from paths(value, (*prefix, str(key)))
    elif isinstance(details, list) and any(not isinstance(v, str) for v in details):
        for value in details:
            yield from paths(value, prefix)
    else:
        yield prefix


def refused_at(response: Any, *where: str) -> bool:
    """A 422 whose details reach a message through ``where``, in order (other keys may stand between)."""
    if response.status_code != 422:
        return False
    for path in paths(response.get_json()["error"]["details"]):
        rest = iter(path)
        if all(any(key == step for key in rest) for step in where):
            return True
    return False


# -- a receiver that keeps the exact bytes --------------------------------------------------------------------

class RawReceiver:
    """Accepts connections on 127.0.0.1 and keeps the bytes of each request exactly as they came
    (framed by its own Content-Length or chunks, and what else came before the answer); answers
    200 and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.got: list[bytes] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            _, fields, body = parse(data)
            length = [int(v) for n, v in fields if n.lower() == "content-length"]
            chunked = any(n.lower() == "transfer-encoding" for n, _ in fields)
            while (not body.endswith(b"0\r\n\r\n")) if chunked else len(body) < (length[0] if length else 0):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data, body = data + chunk, body + chunk
            with self.lock:
                self.got.append(data)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
                         b"Connection: close\r\n\r\n{\"ok\":true}")
        except OSError:
            pass
        finally:
            conn.close()

    def requests(self) -> list[tuple[str, list[tuple[str, str]], bytes]]:
        with self.lock:
            return [parse(raw) for raw in self.got]

    def close(self) -> None:
        self.sock.close()


def parse(raw: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    line, *lines = head.decode("latin-1").split("\r\n")
    return line, [tuple(part.strip() for part in field.split(":", 1)) for field in lines], body  # type: ignore[misc]


@pytest.fixture
def raw() -> Iterator[RawReceiver]:
    receiver = RawReceiver()
    yield receiver
    receiver.close()


def assert_framed_once(line: str, fields: list[tuple[str, str]], body: bytes) -> None:
    """One field per name; a request with a body has exactly one framing header (its Content-Length),
    a GET none and no body."""
    names = [name.lower() for name, _ in fields]
    assert len(names) == len(set(names)), (line, names)
    framing = [n for n in names if n in ("content-length", "transfer-encoding")]
    if line.startswith("GET "):
        assert framing == [] and body == b"", (line, fields)
    else:
        assert framing == ["content-length"], (line, fields)
        assert int(dict((n.lower(), v) for n, v in fields)["content-length"]) == len(body), (line, fields)
    assert not {"connection", "keep-alive", "upgrade", "te", "trailer", "expect"} & set(names)


# -- saved: every source × every class is a 422 at its field -----------------------------------------------------

def test_destination_headers_refuse_every_bad_name_and_value(client, admin, raw):
    for value in VALUE_ATTACKS.values():
        response = client.post("/v1/destinations", json={"name": "d", "url": raw.url, "headers": {"X-A": value}},
                               headers=admin)
        count("destination headers", refused_at(response, "headers", "X-A"))
    for name in NAME_ATTACKS.values():
        response = client.post("/v1/destinations", json={"name": "d", "url": raw.url, "headers": {name: "v"}},
                               headers=admin)
        count("destination headers", refused_at(response, "headers", name))
    made = client.post("/v1/destinations", json={"name": "d", "url": raw.url, "headers": {"X-A": "v"}},
                       headers=admin).get_json()
    for value in VALUE_ATTACKS.values():
        response = client.patch(f"/v1/destinations/{made['id']}", json={"headers": {"X-A": value}}, headers=admin)
        count("destination headers", refused_at(response, "headers", "X-A"))
    many = {f"X-H{n}": "v" for n in range(MAX_FIELDS + 1)}
    count("destination headers", refused_at(client.post("/v1/destinations", json={
        "name": "d", "url": raw.url, "headers": many}, headers=admin), "headers", "_"))
    twice = client.post("/v1/destinations", json={"name": "d", "url": raw.url,
                                                  "headers": {"X-A": "1", "x-a": "2"}}, headers=admin)
    count("destination headers", refused_at(twice, "headers", "x-a"))
    assert tally["destination headers"] == [2 * len(VALUE_ATTACKS) + len(NAME_ATTACKS) + 2, 0]
    assert client.get("/v1/destinations", headers=admin).get_json()["items"][0]["headers"] == {"X-A": "v"}
    # what the rule allows: empty, a tab inside, non-ASCII, the longest value and name, every token character
    fine = {"X-A": "", "X-Tab": "a\tb", "X-Utf8": "Zoë Łódź", "X-Long": "a" * MAX_VALUE, "Authorization": "Bearer x",
            "X-" + "a" * (MAX_NAME - 2): "v", "!#$%&'*+-.^_`|~09azAZ": "v", "Content-Type": "text/plain"}
    response = client.post("/v1/destinations", json={"name": "d", "url": raw.url, "headers": fine}, headers=admin)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["headers"] == fine


def test_user_preset_headers_are_refused_through_the_api_and_an_import(client, admin, raw):
    attacks = [({"X-A": value}, "X-A") for value in VALUE_ATTACKS.values()]
    attacks += [({name: "v"}, name) for name in NAME_ATTACKS.values()]
    attacks += [({"X-A": RENDERED_ONLY}, "X-A")]
    for n, (headers, name) in enumerate(attacks):
        preset = {"name": f"acme.hdr{n}", "title": "t", "base_url": raw.url, "headers": headers}
        count("user preset (API)", refused_at(client.post("/v1/presets", json=preset, headers=admin),
                                              "headers", name))
        document = {"hookgate_export": VERSION, "presets": [preset]}
        count("user preset (import)", refused_at(client.post("/v1/import", json=document, headers=admin),
                                                 "presets", f"acme.hdr{n}", "headers", name))
        state = {"name": f"acme.hdr{n}", "origin": "user", "base_url": raw.url, "headers": headers}
        document = {"hookgate_export": VERSION, "destinations": [
            {"id": f"dst_imp{n}", "name": "d", "url": raw.url, "preset": state}]}
        count("preset state (import)", refused_at(client.post("/v1/import", json=document, headers=admin),
                                                  "destinations", f"dst_imp{n}", "headers", name))
    for source in ("user preset (API)", "user preset (import)", "preset state (import)"):
        assert tally[source] == [len(attacks), 0], source
    assert client.get("/v1/presets", headers=admin).get_json()["items"] == [
        p for p in client.get("/v1/presets", headers=admin).get_json()["items"] if p["origin"] != "user"]
    assert client.get("/v1/destinations", headers=admin).get_json()["items"] == []


def test_preset_parameters_rendered_into_headers_are_refused_when_saved(client, admin, raw):
    user = {"name": "acme.tok", "title": "t", "base_url": raw.url,
            "headers": {"X-Token": "{{ params.token }}", "Authorization": "Bearer {{ params.secret }}"},
            "params": [{"name": "token"}, {"name": "secret", "secret": True}]}
    assert client.post("/v1/presets", json=user, headers=admin).status_code == 201
    cases = {  # source: (preset, the parameter that goes into a header, the other parameters)
        "user preset parameter": ("acme.tok", "token", {"secret": "s3cret"}),
        "user preset secret parameter": ("acme.tok", "secret", {"token": "t"}),
        "meta.whatsapp_text access_token": ("meta.whatsapp_text", "access_token", {"phone_number_id": "1"}),
        "slack.chat_post_message bot_token": ("slack.chat_post_message", "bot_token", {"channel": "C1"}),
    }
    for source, (preset, param, others) in cases.items():
        for value in VALUE_ATTACKS.values():
            body = {"preset": preset, "params": {**others, param: value, "url": raw.url}}
            count(source, refused_at(client.post("/v1/destinations", json=body, headers=admin), "params", param))
        made = client.post("/v1/destinations", json={"preset": preset, "params": {
            **others, param: "good", "url": raw.url}}, headers=admin)
        assert made.status_code == 201, made.get_json()
        for value in VALUE_ATTACKS.values():
            response = client.patch(f"/v1/destinations/{made.get_json()['id']}", json={"params": {param: value}},
                                    headers=admin)
            count(source, refused_at(response, "params", param))
        assert tally[source] == [2 * len(VALUE_ATTACKS), 0], source


def test_auth_profile_header_credentials_are_refused_when_saved(client, admin, raw):
    base = {"name": "a", "type": "headers", "endpoint_prefix": raw.url}
    for value in VALUE_ATTACKS.values():
        for secret in (True, False):
            body = {**base, "headers": [{"name": "X-Key", "value": value, "secret": secret}]}
            count("auth profile headers", refused_at(client.post("/v1/auth-profiles", json=body, headers=admin),
                                                     "headers", "0", "value"))
    for name in [*NAME_ATTACKS.values(), "Content-Type"]:
        body = {**base, "headers": [{"name": name, "value": "v"}]}
        count("auth profile headers", refused_at(client.post("/v1/auth-profiles", json=body, headers=admin),
                                                 "headers", "0", "name"))
    made = client.post("/v1/auth-profiles", json={**base, "headers": [{"name": "X-Key", "value": "v"}]},
                       headers=admin).get_json()
    for value in VALUE_ATTACKS.values():
        response = client.patch(f"/v1/auth-profiles/{made['id']}",
                                json={"headers": [{"name": "X-Key", "value": value}]}, headers=admin)
        count("auth profile headers", refused_at(response, "headers", "0", "value"))
    defaults = {"x-hookgate-signature", "x-hookgate-timestamp"}  # a signed payload's own names
    for name in [n for n in NAME_ATTACKS.values() if n.lower() not in defaults]:
        for field in ("signature_header", "timestamp_header"):
            body = {"name": "s", "type": "signed_payload", "endpoint_prefix": raw.url, field: name}
            count("auth profile signature header names",
                  refused_at(client.post("/v1/auth-profiles", json=body, headers=admin), field))
    assert tally["auth profile headers"] == [3 * len(VALUE_ATTACKS) + len(NAME_ATTACKS) + 1, 0]
    assert tally["auth profile signature header names"] == [2 * (len(NAME_ATTACKS) - 2), 0]
    assert client.post("/v1/auth-profiles", json={"name": "s", "type": "signed_payload", "endpoint_prefix": raw.url},
                       headers=admin).status_code == 201  # the defaults still do


# -- sent: what became bad after it was saved is an error attempt, and nothing reaches the receiver ---------------

def _tamper(db, key: str, ident: str, change) -> None:
    """Change a stored record as an older hookgate (before the rule) could have saved it."""
    record = json.loads(db.hget(key, ident))
    change(record)
    db.hset(key, ident, json.dumps(record))
    bump_config(db)


def test_headers_that_only_go_bad_after_saving_are_error_attempts_and_nothing_is_sent(
        client, admin, db, rt, raw, make_source, post_events, work):
    source_id, key = make_source()
    user = {"name": "acme.tok", "title": "t", "base_url": raw.url, "headers": {"X-Token": "{{ params.token }}"},
            "params": [{"name": "token", "secret": True}]}
    assert client.post("/v1/presets", json=user, headers=admin).status_code == 201
    cases: dict[str, tuple[str, str]] = {}  # destination id → (source, secret text it must not show)

    def destination(path: str, **fields: Any) -> str:
        made = client.post("/v1/destinations", json={"name": path, "url": raw.url + path, **fields}, headers=admin)
        assert made.status_code == 201, made.get_json()
        return made.get_json()["id"]

    def preset(preset_name: str, params: dict[str, Any]) -> str:
        made = client.post("/v1/destinations", json={"preset": preset_name, "params": params}, headers=admin)
        assert made.status_code == 201, made.get_json()
        return made.get_json()["id"]

    for n, value in enumerate([*VALUE_ATTACKS.values(), "chunked"]):
        did = destination(f"/dest-value-{n}", headers={"X-A": "v"})
        name = "Transfer-Encoding" if value == "chunked" else "X-A"
        _tamper(db, keys.destinations, did, lambda d, v=value, h=name: d.update(headers={h: v}))
        cases[did] = ("destination headers", value)
    for n, name in enumerate(NAME_ATTACKS.values()):
        did = destination(f"/dest-name-{n}")
        _tamper(db, keys.destinations, did, lambda d, h=name: d.update(headers={h: "5"}))
        cases[did] = ("destination headers", "")
    for n, value in enumerate(VALUE_ATTACKS.values()):
        did = preset("acme.tok", {"token": "good", "url": f"{raw.url}/user-preset-{n}"})
        _tamper(db, keys.destinations, did, lambda d, v=value: d["preset"]["secrets"].update(
            token=rt.secrets.encrypt(json.dumps(v))))
        cases[did] = ("user preset secret parameter", value)
        if value.startswith((" ", "\t")):  # after "Bearer " only a double space: refused when saved, not sent
            continue
        did = preset("meta.whatsapp_text", {"phone_number_id": f"wa{n}", "access_token": "good", "url": raw.url})
        _tamper(db, keys.destinations, did, lambda d, v=value: d["preset"]["secrets"].update(
            access_token=rt.secrets.encrypt(json.dumps(v))))
        cases[did] = ("meta.whatsapp_text access_token", value)
    for n, pattern in enumerate([RENDERED_ONLY, "chunked"]):
        did = preset("acme.tok", {"token": "good", "url": f"{raw.url}/pattern-{n}"})
        name = "Transfer-Encoding" if pattern == "chunked" else "X-Token"
        _tamper(db, keys.destinations, did, lambda d, p=pattern, h=name: d["preset"].update(headers={h: p}))
        cases[did] = ("preset header pattern", "")
    for n, (name, value) in enumerate([("X-Key", " leading-space-secret-8d1"), ("X-Key", "crlf-secret\r\nX: 1"),
                                       ("Content-Length", "0"), ("Transfer-Encoding", "chunked")]):
        profile = client.post("/v1/auth-profiles", json={"name": "a", "type": "headers", "endpoint_prefix": raw.url,
                                                         "headers": [{"name": "X-Key", "value": "good"}]},
                              headers=admin).get_json()
        _tamper(db, keys.auth_profiles, profile["id"], lambda p, h=name, v=value: p.update(
            headers=[{"name": h, "value": rt.secrets.encrypt(v), "secret": True}]))
        cases[destination(f"/profile-{n}", auth_profile_id=profile["id"])] = ("auth profile headers", value)
    signed = client.post("/v1/auth-profiles", json={"name": "s", "type": "signed_payload", "endpoint_prefix": raw.url},
                         headers=admin).get_json()
    _tamper(db, keys.auth_profiles, signed["id"], lambda p: p.update(signature_header="Content-Length"))
    cases[destination("/signed", auth_profile_id=signed["id"])] = ("auth profile signature header names", "")
    control = destination("/control", headers={"X-Fine": "v"})

    event = {"name": "signup", "profile": {"phone": "+15555550100"}, "data": {"message": "hi"}}
    assert post_events(source_id, key, event).status_code == 202
    work()
    deliveries = {d["destination_id"]: d for d in client.get("/v1/deliveries?limit=200", headers=admin)
                  .get_json()["items"]}
    for did, (source, secret) in cases.items():
        delivery = deliveries[did]
        refused = delivery["status"] == "error" and "refused, nothing was sent" in (delivery["last_error"] or "")
        count(f"{source} (sent)", refused)
        assert refused, (source, delivery)
        if len(secret) > 8:
            shown = json.dumps(client.get(f"/v1/deliveries/{delivery['id']}", headers=admin).get_json())
            assert secret.strip() not in shown and json.dumps(secret.strip())[1:-1] not in shown, source
    assert deliveries[control]["status"] == "delivered"
    got = raw.requests()
    assert [line for line, _, _ in got] == ["POST /control HTTP/1.1"]  # nothing else reached it
    assert_framed_once(*got[0])
    assert sum(tried for s, (tried, _) in tally.items() if s.endswith("(sent)")) == len(cases)
    assert all(through == 0 for s, (_, through) in tally.items() if s.endswith("(sent)"))


def test_a_trial_does_not_send_a_header_that_breaks_the_rule(client, admin, db, raw):
    made = client.post("/v1/destinations", json={"name": "d", "url": raw.url}, headers=admin).get_json()
    _tamper(db, keys.destinations, made["id"], lambda d: d.update(headers={"Transfer-Encoding": "chunked"}))
    answer = client.post(f"/v1/destinations/{made['id']}/test", json={"send": True}, headers=admin).get_json()
    count("trial (sent)", answer.get("error", {}).get("code") == "header_refused")
    assert answer["error"]["code"] == "header_refused" and "Transfer-Encoding" in answer["error"]["message"]
    assert "response" not in answer and raw.requests() == []


# -- what goes out: one field per name, exactly one framing header, none on a GET ------------------------------

def test_what_goes_out_has_one_framing_header_and_a_get_none(client, admin, raw, make_source, post_events, work):
    """Every destination the API takes — plain, with hostile framing headers from each source (a
    user preset's, an auth profile's: refused now, sent before) — is delivered; the auth profile
    probe too; and the sender directly, method by method."""
    source_id, key = make_source()

    def profile(name: str, value: str = "k") -> str | None:
        made = client.post("/v1/auth-profiles", json={"name": "a", "type": "headers", "endpoint_prefix": raw.url,
                                                      "headers": [{"name": name, "value": value}]}, headers=admin)
        return made.get_json()["id"] if made.status_code == 201 else None

    def user_preset(n: int, headers: dict[str, str], method: str) -> str | None:
        made = client.post("/v1/presets", json={"name": f"acme.frame{n}", "title": "t", "base_url": raw.url,
                                                "method": method, "headers": headers}, headers=admin)
        return f"acme.frame{n}" if made.status_code == 201 else None

    good = profile("X-Key")
    framing_profiles = [profile(name, value) for name, value in (
        ("Keep-Alive", "timeout=5"), ("Expect", "100-continue"), ("Proxy-Connection", "keep-alive"))]
    shapes: list[dict[str, Any]] = [
        {"method": "POST", "format": "json"}, {"method": "PUT", "format": "xml"},
        {"method": "PATCH", "format": "text"}, {"method": "DELETE", "format": "json"},
        {"method": "GET", "format": "json"}, {"method": "GET", "format": "form"}, {"method": "POST", "format": "form"},
        {"method": "POST", "format": "json", "batch": {"size": 2, "max_wait_s": 0}},
        {"auth_profile_id": good, "headers": {"x-key": "mine", "X-Other": "o"}},
        {"method": "GET", "headers": {"Content-Type": "application/json; charset=utf-8"}},
        *({"auth_profile_id": made} for made in framing_profiles if made),
    ]
    hostile = [({"Transfer-Encoding": "chunked"}, "POST"), ({"Content-Length": "0"}, "GET"),
               ({"Content-Length": "1"}, "POST"), ({"Connection": "close"}, "POST"), ({"Upgrade": "h2c"}, "GET")]
    presets = [name for n, (headers, method) in enumerate(hostile) if (name := user_preset(n, headers, method))]
    for refused in [made is None for made in framing_profiles] + [f"acme.frame{n}" not in presets
                                                                  for n in range(len(hostile))]:
        count("framing headers through the API (on the wire)", refused)
    for n, fields in enumerate(shapes):
        made = client.post("/v1/destinations", json={"name": "d", "url": f"{raw.url}/shape-{n}", **fields},
                           headers=admin)
        assert made.status_code == 201, made.get_json()
    for n, name in enumerate(presets):
        made = client.post("/v1/destinations", json={"preset": name, "params": {"url": f"{raw.url}/preset-{n}"}},
                           headers=admin)
        assert made.status_code == 201, made.get_json()
    assert post_events(source_id, key, [{"name": "a", "data": {"k": "v"}}, {"name": "b"}]).status_code == 202
    work()
    assert client.post(f"/v1/auth-profiles/{good}/test", json={"path": "/probe"}, headers=admin).get_json()["ok"]
    allowed = parse_networks("127.0.0.0/8")
    methods = [("GET", None), ("GET", b""), ("POST", b'{"a":1}'), ("POST", None), ("POST", b""), ("PUT", b"x"),
               ("PATCH", b"y"), ("DELETE", None), ("DELETE", b"z")]
    sender = SyncBridge(allowed, 4)
    try:
        for n, (method, body) in enumerate(methods):
            response = sender.send(method, f"{raw.url}/aiohttp-{n}", {"Content-Type": "text/plain"}, body, 5.0)
            assert response.status_code == 200, response.error
    finally:
        sender.close()
    got = raw.requests()
    for line, fields, body in got:
        assert_framed_once(line, fields, body)
        assert [n.lower() for n, _ in fields].count("host") == 1, line
    paths = sorted(line.split()[1].split("?")[0] for line, _, _ in got)
    assert paths == sorted([*(f"/shape-{n}" for n in range(len(shapes)) for _ in (1, 2) if n != 7), "/shape-7",
                            *(f"/preset-{n}" for n in range(len(presets)) for _ in (1, 2)), "/probe",
                            *(f"/aiohttp-{n}" for n in range(len(methods)))])
    bodies = {line.split()[1]: body for line, _, body in got}
    assert all(bodies[f"/aiohttp-{n}"] == (body or b"") for n, (_, body) in enumerate(methods))
    credential = [v for line, fields, _ in got if line.startswith("POST /shape-8") for n, v in fields
                  if n.lower() == "x-key"]
    assert credential == ["k", "k"]  # the profile's credential wins, once per request
    assert len(shapes) == 10 and presets == []  # every hostile one was refused when saved


def test_the_tally(capsys):
    """The counts of attacks tried and let through, by source (printed for the record)."""
    with capsys.disabled():
        for source, (tried, through) in sorted(tally.items()):
            print(f"\n  {source}: {tried} tried, {through} got through", end="")
    assert all(through == 0 for _, through in tally.values())
