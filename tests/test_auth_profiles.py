"""Auth profiles against real servers: a receiver that checks each credential, a local OAuth 2.0 token
endpoint, and an HTTPS server that requires a client certificate (tests/tls.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, quote_plus, unquote_plus, urlsplit

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hookgate.auth_profiles import MASK, AuthProfileStore, covers
from hookgate.errors import DeliveryError
from hookgate.outbound_auth import apply_auth, handle_unauthorized
from hookgate.store import keys
from hookgate.tls import context as tls_context

from .processes import free_port
from .receiver import Received, Receiver, Reply
from .tls import PKI, TLSReceiver

BODY = b'{"event":"survey_response","score":9}'


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def create(client, admin):
    def make(**body) -> dict:
        body = {"name": body.pop("name", "p"), **body}
        response = client.post("/v1/auth-profiles", json=body, headers=admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()
    return make


def send(rt, profile_id: str, url: str, *, method: str = "POST", body: bytes = BODY, event_id: str = "evt_1"):
    """apply_auth, then send through the runtime's SSRF-guarded session: (status, prepared)."""
    profile = AuthProfileStore(rt.db, rt.secrets).get(profile_id)
    prepared = apply_auth(profile, rt.secrets, rt.db, method=method, url=url, headers={"X-Test": "1"},
                          body=body,
                          event_id=event_id, allowed_networks=rt.settings.allowed_networks, timeout=5)
    response = rt.sender.send(method, prepared.url, prepared.headers, body, 5, trust=prepared.trust)
    return response.status_code, prepared


def checking(predicate) -> Receiver:
    """A receiver answering 200 when ``predicate(request)`` holds, 401 otherwise."""
    return Receiver(lambda r: Reply(200) if predicate(r) else Reply(401, b'{"error":"unauthorized"}')).start()


# -- endpoint prefix -----------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix, url, expected", [
    ("https://a.com/api", "https://a.com/api", True),
    ("https://a.com/api", "https://a.com/api/x?y=1", True),
    ("https://a.com/api/", "https://a.com/api/x", True),
    ("https://a.com", "https://a.com/anything", True),
    ("https://a.com:443/api", "https://A.com/api/x", True),
    ("https://a.com/api", "https://a.com/apix", False),
    ("https://a.com/api", "http://a.com/api", False),
    ("https://a.com/api", "https://a.com:8443/api", False),
    ("https://a.com/api", "https://b.com/api", False),
    ("https://a.com/api", "https://a.com.evil.com/api", False),
    ("https://a.com/api", "https://a.com@evil.com/api", False),
    ("https://a.com/api", "https://a.com/", False),
    ("https://a.com/api", "https://a.com/api/../admin", False),
    ("https://a.com/api", "https://a.com/api/%2e%2e/admin", False),
    ("https://a.com/api", "https://a.com/api\\..\\admin", False),
    ("https://a.com/api", "https://a.com:bad/api", False),
    ("https://a.com/api", "ftp://a.com/api", False),
])
def test_covers(prefix, url, expected):
    assert covers(prefix, url) is expected


def test_credentials_are_never_sent_outside_the_prefix(rt, create):
    seen = checking(lambda r: True)
    try:
        profile = create(type="bearer", endpoint_prefix=seen.url + "/api", token="t0ken-value")
        other = Receiver().start()
        try:
            for url in (f"http://localhost:{seen.port}/api/x", f"{other.url}/api/x", f"{seen.url}/apix",
                        f"{seen.url}/", f"https://127.0.0.1:{seen.port}/api/x", f"{seen.url}/api/../admin"):
                with pytest.raises(DeliveryError, match="bound to") as caught:
                    send(rt, profile["id"], url)
                assert "t0ken-value" not in str(caught.value)
            assert seen.requests == [] and other.requests == []
            assert send(rt, profile["id"], seen.url + "/api/hooks")[0] == 200
        finally:
            other.stop()
    finally:
        seen.stop()


# -- each credential, checked by a real receiver ------------------------------------------------------

def test_basic(rt, create):
    expected = "Basic " + base64.b64encode("ana:pä ss:word".encode()).decode()
    server = checking(lambda r: r.header("Authorization") == expected)
    try:
        profile = create(type="basic", endpoint_prefix=server.url, username="ana", password="pä ss:word")
        assert profile["password"] == MASK and profile["username"] == "ana"
        assert send(rt, profile["id"], server.url + "/hook")[0] == 200
    finally:
        server.stop()


def test_bearer(rt, create):
    server = checking(lambda r: r.header("Authorization") == "Bearer abc.DEF-123")
    try:
        profile = create(type="bearer", endpoint_prefix=server.url, token="abc.DEF-123")
        assert send(rt, profile["id"], server.url + "/hook")[0] == 200
    finally:
        server.stop()


def test_custom_headers(rt, create, client, admin):
    server = checking(lambda r: r.header("X-Api-Key") == "k-123" and r.header("X-Team") == "growth"
                      and r.header("X-Test") == "1")
    try:
        profile = create(type="headers", endpoint_prefix=server.url, headers=[
            {"name": "X-Api-Key", "value": "k-123", "secret": True}, {"name": "X-Team", "value": "growth",
                                                                      "secret": False}])
        assert profile["headers"] == [{"name": "X-Api-Key", "value": MASK, "secret": True},
                                      {"name": "X-Team", "value": "growth", "secret": False}]
        assert send(rt, profile["id"], server.url + "/hook")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("header", [
    {"name": "X-Evil", "value": "a\r\nInjected: 1"}, {"name": "X-Evil", "value": "a\x00"},
    {"name": "Bad Name", "value": "v"}, {"name": "X-A:b", "value": "v"},
    {"name": "Content-Length", "value": "1"},
    {"name": "X-Api-Key", "value": MASK},
])
def test_header_injection_is_refused(client, admin, header):
    response = client.post("/v1/auth-profiles", headers=admin, json={
        "name": "h", "type": "headers", "endpoint_prefix": "https://a.com", "headers": [header]})
    assert response.status_code == 422, response.get_json()
    assert "headers" in response.get_json()["error"]["details"]


def test_url_credentials(rt, create):
    def ok(r: Received) -> bool:
        query = parse_qs(urlsplit(r.path).query)
        basic = base64.b64decode((r.header("Authorization") or "Basic ").split(" ", 1)[1]).decode()
        return query == {"page": ["2"], "apiKey": ["k&y=1 2"], "sig": ["s"]} and basic == "user@x:p/ss"

    server = checking(ok)
    try:
        profile = create(type="url", endpoint_prefix=server.url, username="user@x", password="p/ss",
                         query={"apiKey": "k&y=1 2", "sig": "s"})
        assert profile["query"] == {"apiKey": MASK, "sig": MASK} and profile["password"] == MASK
        status, prepared = send(rt, profile["id"], server.url + "/hook?page=2")
        assert status == 200
        assert prepared.safe_url == server.url + "/hook?page=2" and "apiKey" in prepared.url
    finally:
        server.stop()


def test_signed_payload_verified_by_recomputing_the_hmac(rt, create):
    holder: dict[str, str] = {}

    def ok(r: Received) -> bool:
        stamp = r.header("X-Sig-Time")
        signed = f"{stamp}.".encode() + r.body
        expected = hmac.new(holder["secret"].encode(), signed, hashlib.sha256).hexdigest()
        return abs(int(stamp) - time.time()) < 60 and r.header("X-Sig") == "sha256=" + expected

    server = checking(ok)
    try:
        profile = create(type="signed_payload", endpoint_prefix=server.url, signature_header="X-Sig",
                         timestamp_header="X-Sig-Time")
        holder["secret"] = profile["secret"]  # generated, shown once
        assert profile["secrets"][0]["secret"] == MASK
        assert send(rt, profile["id"], server.url + "/hook")[0] == 200
        holder["secret"] = "another-secret-of-some-length"
        assert send(rt, profile["id"], server.url + "/hook")[0] == 401
    finally:
        server.stop()


def _verifies(secret: str, request: Received) -> bool:
    try:
        Webhook(secret).verify(request.body, request.headers)
        return True
    except WebhookVerificationError:
        return False


def test_standard_webhooks_and_rotation(rt, create, client, admin):
    server = Receiver().start()
    try:
        profile = create(type="standard_webhooks", endpoint_prefix=server.url)
        old = profile["secret"]
        assert old.startswith("whsec_") and "secret" not in client.get(
            f"/v1/auth-profiles/{profile['id']}", headers=admin).get_json()
        send(rt, profile["id"], server.url + "/h", event_id="evt_a")
        request = server.wait_for(1)[0]
        assert request.header("webhook-id") == "evt_a" and _verifies(old, request)

        rotated = client.post(f"/v1/auth-profiles/{profile['id']}/rotate", json={"grace_s": 1.5},
                              headers=admin)
        assert rotated.status_code == 200
        new = rotated.get_json()["secret"]
        assert new != old and len(rotated.get_json()["secrets"]) == 2
        send(rt, profile["id"], server.url + "/h", event_id="evt_b")
        request = server.wait_for(2)[1]
        assert len(request.header("webhook-signature").split(" ")) == 2
        assert _verifies(old, request) and _verifies(new, request)  # during the grace period: both

        time.sleep(1.6)
        send(rt, profile["id"], server.url + "/h", event_id="evt_c")
        request = server.wait_for(3)[2]
        assert _verifies(new, request) and not _verifies(old, request)  # after it: only the new one
        assert len(client.get(f"/v1/auth-profiles/{profile['id']}", headers=admin).get_json()["secrets"]) == 1

        default = client.post(f"/v1/auth-profiles/{profile['id']}/rotate", headers=admin).get_json()
        expires = [s["expires_at"] for s in default["secrets"] if s["expires_at"]]
        assert len(expires) == 1 and abs(expires[0] - (time.time() + 86400) * 1000) < 60_000
    finally:
        server.stop()


def test_rotation_is_for_signing_profiles_and_a_supplied_secret_is_not_echoed(create, client, admin):
    supplied = "whsec_" + base64.b64encode(b"x" * 32).decode()
    profile = create(type="standard_webhooks", endpoint_prefix="https://a.com", secret=supplied)
    assert "secret" not in profile
    rotate = f"/v1/auth-profiles/{profile['id']}/rotate"
    assert client.post(rotate, json={"secret": "not-a-whsec-secret"}, headers=admin).status_code == 422
    again = client.post(rotate, json={"secret": supplied.replace("eHh4", "eXl5")}, headers=admin).get_json()
    assert "secret" not in again and len(again["secrets"]) == 2
    signed = create(type="signed_payload", endpoint_prefix="https://a.com")
    rotated = client.post(f"/v1/auth-profiles/{signed['id']}/rotate", headers=admin).get_json()
    assert rotated["secret"].startswith("hgs_") and rotated["secret"] != signed["secret"]
    assert len(rotated["secrets"]) == 1  # one signature header: the old secret ends at once
    bearer = create(type="bearer", endpoint_prefix="https://a.com", token="t")
    assert client.post(f"/v1/auth-profiles/{bearer['id']}/rotate", headers=admin).status_code == 422
    bad = client.post("/v1/auth-profiles", headers=admin, json={
        "name": "s", "type": "standard_webhooks", "endpoint_prefix": "https://a.com",
        "secret": "not-a-whsec-secret"})
    assert bad.status_code == 422


# -- OAuth 2.0 client credentials ---------------------------------------------------------------------

CLIENT_ID, CLIENT_SECRET = "hookgate client", "s3cr:t/+&=ü"


class TokenEndpoint:
    """Issues tokens to one client (credentials checked as ``mode`` says), and guards ``/api/`` with them."""

    def __init__(self, mode: str, expires_in: int = 3600):
        self.mode, self.expires_in = mode, expires_in
        self.calls = 0
        self.valid: set[str] = set()
        self._lock = threading.Lock()

    def _client_ok(self, r: Received) -> bool:
        body, query = parse_qs(r.body.decode()), parse_qs(urlsplit(r.path).query)
        if body.get("grant_type") != ["client_credentials"] or body.get("scope") != ["events:write"]:
            return False
        if self.mode == "header":
            scheme, _, encoded = (r.header("Authorization") or "").partition(" ")
            user, _, password = base64.b64decode(encoded).decode().partition(":")
            return (scheme == "Basic" and "client_secret" not in body
                    and (unquote_plus(user), unquote_plus(password)) == (CLIENT_ID, CLIENT_SECRET))
        where = body if self.mode == "body" else query
        other = query if self.mode == "body" else body
        return (where.get("client_id") == [CLIENT_ID] and where.get("client_secret") == [CLIENT_SECRET]
                and "client_secret" not in other and r.header("Authorization") is None
                and body.get("audience") == ["hooks"])

    def __call__(self, r: Received) -> Reply:
        path = urlsplit(r.path).path
        if path == "/oauth/token":
            with self._lock:
                self.calls += 1
                if not self._client_ok(r):
                    return Reply(401, b'{"error":"invalid_client"}')
                token = f"tok-{self.calls}-{os.urandom(4).hex()}"
                self.valid.add(token)
            return Reply(200, json.dumps({"access_token": token, "token_type": "Bearer",
                                          "expires_in": self.expires_in}).encode())
        auth = r.header("Authorization") or ""
        return Reply(200) if auth.startswith("Bearer ") and auth[7:] in self.valid else Reply(401)


@pytest.fixture
def oauth_server(pki):
    servers: list[TLSReceiver] = []

    def start(mode: str = "header", expires_in: int = 3600) -> tuple[TLSReceiver, TokenEndpoint]:
        endpoint = TokenEndpoint(mode, expires_in)
        server = TLSReceiver(pki, endpoint, require_client_cert=False).start()
        servers.append(server)
        return server, endpoint

    yield start
    for server in servers:
        server.stop()


def _oauth(create, pki, server, mode: str = "header", **extra) -> dict:
    return create(type="oauth2_client_credentials", endpoint_prefix=extra.pop("prefix", server.url + "/api"),
                  token_url=server.url + "/oauth/token", client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                  scope="events:write", client_auth=mode, ca_certificate=pki.ca_pem,
                  extra_params=None if mode == "header" else {"audience": "hooks"}, **extra)


@pytest.mark.parametrize("mode", ["header", "body", "query"])
def test_oauth_client_auth_modes_and_a_token_cached_across_apply_calls(rt, create, pki, oauth_server, mode):
    server, endpoint = oauth_server(mode)
    profile = _oauth(create, pki, server, mode)
    assert profile["client_secret"] == MASK
    assert send(rt, profile["id"], server.url + "/api/hook")[0] == 200
    assert send(rt, profile["id"], server.url + "/api/hook")[0] == 200
    assert endpoint.calls == 1  # the second apply used the token cached in Redis
    raw = rt.db.get(keys.oauth_token(profile["id"]))
    assert raw and "tok-" not in raw and 3500_000 < rt.db.pttl(keys.oauth_token(profile["id"])) <= 3540_000


def test_oauth_workers_share_one_token_fetch(rt, create, pki, oauth_server):
    server, endpoint = oauth_server()
    profile = AuthProfileStore(rt.db, rt.secrets).get(_oauth(create, pki, server)["id"])
    tokens: list[str] = []

    def work() -> None:
        prepared = apply_auth(profile, rt.secrets, rt.db, method="POST", url=server.url + "/api/hook",
                              headers={}, body=b"", event_id="e",
                              allowed_networks=rt.settings.allowed_networks)
        tokens.append(prepared.headers["Authorization"])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(tokens) == 8 and len(set(tokens)) == 1 and endpoint.calls == 1


def test_no_secret_reaches_the_logs_even_at_debug(rt, create, pki, oauth_server, caplog):
    caplog.set_level(logging.DEBUG)
    server, _ = oauth_server("query")
    profile = _oauth(create, pki, server, "query")
    assert send(rt, profile["id"], server.url + "/api/hook")[0] == 200
    hook = Receiver().start()
    try:
        url_profile = create(type="url", endpoint_prefix=hook.url, username="u", password="pw-in-url-77",
                             query={"apiKey": "q-in-url-77"})
        assert send(rt, url_profile["id"], hook.url + "/x")[0] == 200
    finally:
        hook.stop()
    assert "[redacted]" in caplog.text  # urllib3 logged the request lines, without their query strings
    for secret in (CLIENT_SECRET, quote_plus(CLIENT_SECRET), "pw-in-url-77", "q-in-url-77", "tok-1-"):
        assert secret not in caplog.text, secret


def test_oauth_token_is_refreshed_after_expiry(rt, create, pki, oauth_server):
    server, endpoint = oauth_server(expires_in=2)  # cached for 2 s minus a 1 s margin
    profile = _oauth(create, pki, server)
    assert send(rt, profile["id"], server.url + "/api/hook")[0] == 200
    assert send(rt, profile["id"], server.url + "/api/hook")[0] == 200 and endpoint.calls == 1
    time.sleep(1.2)
    assert send(rt, profile["id"], server.url + "/api/hook")[0] == 200 and endpoint.calls == 2


def test_oauth_refreshes_once_on_401(rt, create, pki, oauth_server):
    server, endpoint = oauth_server()
    profile = _oauth(create, pki, server)
    status, first = send(rt, profile["id"], server.url + "/api/hook")
    assert status == 200
    endpoint.valid.clear()  # the resource server revoked it
    status, prepared = send(rt, profile["id"], server.url + "/api/hook")
    assert status == 401 and prepared.oauth_token == first.oauth_token
    stored = AuthProfileStore(rt.db, rt.secrets).get(profile["id"])
    assert handle_unauthorized(stored, rt.db, prepared) is True
    status, retried = send(rt, profile["id"], server.url + "/api/hook")
    assert status == 200 and retried.oauth_token != first.oauth_token and endpoint.calls == 2


def test_oauth_token_endpoint_must_share_the_webhook_origin_unless_allowed(rt, create, pki, oauth_server,
                                                                            client,
                                                                            admin):
    server, endpoint = oauth_server()
    hook = Receiver(lambda r: Reply(200) if (r.header("Authorization") or "").startswith("Bearer tok-")
                    else Reply(401)).start()
    try:
        profile = _oauth(create, pki, server, prefix=hook.url)
        with pytest.raises(DeliveryError, match="token endpoint"):
            send(rt, profile["id"], hook.url + "/hook")
        assert endpoint.calls == 0 and hook.requests == []
        denied = client.patch(f"/v1/auth-profiles/{profile['id']}", json={"allowed_domains": ["127.0.0.1"]},
                              headers=admin)
        assert denied.status_code == 422 and "client_secret" in denied.get_json()["error"]["details"]
        allowed = client.patch(f"/v1/auth-profiles/{profile['id']}", headers=admin, json={
            "allowed_domains": ["127.0.0.1"], "client_secret": CLIENT_SECRET})
        assert allowed.status_code == 200
        assert send(rt, profile["id"], hook.url + "/hook")[0] == 200 and endpoint.calls == 1
    finally:
        hook.stop()


def test_oauth_token_url_change_needs_the_client_secret_again(create, client, admin, pki, oauth_server):
    server, _ = oauth_server()
    profile = _oauth(create, pki, server)
    path = f"/v1/auth-profiles/{profile['id']}"
    moved = {"token_url": server.url + "/oauth/v2/token"}
    assert client.patch(path, json=moved, headers=admin).status_code == 422
    assert client.patch(path, json={"name": "renamed", "scope": "x"}, headers=admin).status_code == 200
    assert client.patch(path, json={**moved, "client_secret": "n3w"}, headers=admin).status_code == 200
    plain_http = client.patch(path, json={"token_url": "http://a.com/token", "client_secret": "x"},
                              headers=admin)
    assert plain_http.status_code == 422  # the token endpoint is HTTPS


def test_oauth_failures_are_clear_and_secret_free(rt, create, pki, oauth_server, client, admin):
    server, endpoint = oauth_server("query")
    profile = _oauth(create, pki, server, "query")
    rt.db.hset(keys.auth_profiles, profile["id"], json.dumps({**AuthProfileStore(rt.db, rt.secrets).get(profile["id"]),
                                               "client_secret": rt.secrets.encrypt("wrong-Secret-42")}))
    with pytest.raises(DeliveryError, match="oauth2 token request") as caught:
        send(rt, profile["id"], server.url + "/api/hook")
    assert "wrong-Secret-42" not in str(caught.value) and endpoint.calls == 1
    assert caught.value.details["status_code"] == 401 and caught.value.details["retryable"] is False
    blocked = AuthProfileStore(rt.db, rt.secrets).get(profile["id"])
    with pytest.raises(DeliveryError, match="not a global address"):  # the token fetch is SSRF-guarded
        apply_auth(blocked, rt.secrets, rt.db, method="POST", url=server.url + "/api/hook", headers={},
                   body=b"",
                   event_id="e", allowed_networks=())
    assert endpoint.calls == 1
    server.stop()
    with pytest.raises(DeliveryError, match="oauth2 token request") as caught:  # unreachable: try later
        send(rt, profile["id"], server.url + "/api/hook")
    assert caught.value.details["retryable"] is True


# -- mTLS -----------------------------------------------------------------------------------------------

@pytest.fixture
def mtls_server(pki):
    server = TLSReceiver(pki).start()
    yield server
    server.stop()


def test_mtls_client_certificate(rt, create, pki, mtls_server):
    with pytest.raises(requests.exceptions.SSLError):  # the server really requires a client certificate
        requests.post(mtls_server.url + "/hook", data=b"x", verify=str(pki.ca_file), timeout=5)
    profile = create(type="mtls", endpoint_prefix=mtls_server.url, certificate=pki.client.cert,
                     private_key=pki.client.key, ca_certificate=pki.ca_pem)
    assert profile["private_key"] == MASK and profile["certificate_info"]["subject"] == "CN=hookgate client"
    status, prepared = send(rt, profile["id"], mtls_server.url + "/hook")
    assert status == 200 and mtls_server.requests[-1].body == BODY
    subjects = [rdn for peer in mtls_server.peers for rdn in peer["subject"]]
    assert (("commonName", "hookgate client"),) in subjects
    assert prepared.trust is not None and prepared.trust.client_key == pki.client.key
    again = send(rt, profile["id"], mtls_server.url + "/hook")[1]
    assert tls_context(again.trust) is tls_context(prepared.trust)  # one context, made once, reused
    # the key went into the TLS context from memory: no file under the temporary directory holds it
    leftovers = [path for path in Path(tempfile.gettempdir()).glob("hookgate-*/**/*")
                 if path.is_file() and pki.client.key.encode() in path.read_bytes()]
    assert leftovers == []


@pytest.mark.parametrize("which, field", [("expired_client", "certificate"), ("future_client", "certificate"),
                                          ("mismatch", "private_key"), ("garbage", "certificate")])
def test_mtls_bad_certificates_are_refused_when_saved(client, admin, pki, which, field):
    pair = {"expired_client": (pki.expired_client.cert, pki.expired_client.key),
            "future_client": (pki.future_client.cert, pki.future_client.key),
            "mismatch": (pki.client.cert, pki.stranger.key),
            "garbage": ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                        pki.client.key)}[which]
    response = client.post("/v1/auth-profiles", headers=admin, json={
        "name": "m", "type": "mtls", "endpoint_prefix": "https://a.com", "certificate": pair[0],
        "private_key": pair[1]})
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["error"]["details"]


def test_an_expired_certificate_is_never_used_at_send_time(rt, create, pki, mtls_server, client, admin):
    profile = create(type="mtls", endpoint_prefix=mtls_server.url, certificate=pki.client.cert,
                     private_key=pki.client.key, ca_certificate=pki.ca_pem)
    patched = client.patch(f"/v1/auth-profiles/{profile['id']}",
                           json={"certificate": pki.expired_client.cert},
                           headers=admin)
    assert patched.status_code == 422  # and a PATCH cannot bring one in either
    stored = AuthProfileStore(rt.db, rt.secrets).get(profile["id"])  # as if it had expired since it was saved
    stored.update(certificate=pki.expired_client.cert, private_key=rt.secrets.encrypt(pki.expired_client.key))
    rt.db.hset(keys.auth_profiles, profile["id"], json.dumps(stored))
    with pytest.raises(DeliveryError, match="expired"):
        send(rt, profile["id"], mtls_server.url + "/hook")
    assert mtls_server.requests == []


# -- secrets at rest and in answers ---------------------------------------------------------------------

def test_secrets_are_masked_in_every_answer_and_encrypted_in_redis(rt, create, client, admin, pki):
    secrets = ["pw-Secret-1", "tok-Secret-2", "hdr-Secret-3", "q-Secret-4", "cs-Secret-5",
               "sp-Secret-6-xxxxxxxx"]
    made = [
        create(type="basic", endpoint_prefix="https://a.com", username="u", password=secrets[0]),
        create(type="bearer", endpoint_prefix="https://a.com", token=secrets[1]),
        create(type="headers", endpoint_prefix="https://a.com",
               headers=[{"name": "X-K", "value": secrets[2]}]),
        create(type="url", endpoint_prefix="https://a.com", query={"key": secrets[3]}),
        create(type="oauth2_client_credentials", endpoint_prefix="https://a.com", token_url="https://a.com/t",
               client_id="c", client_secret=secrets[4]),
        create(type="signed_payload", endpoint_prefix="https://a.com", secret=secrets[5]),
        create(type="mtls", endpoint_prefix="https://a.com", certificate=pki.client.cert,
               private_key=pki.client.key),
    ]
    generated = create(type="standard_webhooks", endpoint_prefix="https://a.com")["secret"]
    key_body = pki.client.key.splitlines()[1]
    hidden = [*secrets, generated, generated[6:], key_body, "PRIVATE KEY"]
    answers = [client.get("/v1/auth-profiles", headers=admin).get_data(as_text=True)]
    answers += [client.get(f"/v1/auth-profiles/{p['id']}", headers=admin).get_data(as_text=True)
                for p in made]
    answers += [client.patch(f"/v1/auth-profiles/{p['id']}", json={"name": "n"}, headers=admin).get_data(
        as_text=True) for p in made]
    answers += [json.dumps(p) for p in made]
    raw = json.dumps(rt.db.hgetall(keys.auth_profiles))
    for text in [*answers, raw]:
        for value in hidden:
            assert value not in text
    assert all(MASK in json.dumps(p, ensure_ascii=False) for p in made)


# -- the test endpoint and the API ----------------------------------------------------------------------

def test_the_test_endpoint_is_ok_only_on_200(create, client, admin):
    def reply(r: Received) -> Reply:
        if r.header("Authorization") != "Bearer good":
            return Reply(401, b"who are you")
        return {"/api/health": Reply(200, b"x" * 5000), "/api/created": Reply(201)}.get(
            urlsplit(r.path).path, Reply(404, b"nope"))

    server = Receiver(reply).start()
    try:
        good = create(type="bearer", endpoint_prefix=server.url + "/api", token="good")
        bad = create(type="bearer", endpoint_prefix=server.url + "/api", token="bad")

        def run(profile: dict, **body) -> dict:
            response = client.post(f"/v1/auth-profiles/{profile['id']}/test", json=body, headers=admin)
            assert response.status_code == 200
            return response.get_json()

        ok = run(good, method="GET", path="/health")
        assert ok["ok"] is True and ok["status_code"] == 200 and ok["error"] is None
        assert ok["response"] == "x" * 2048
        assert server.requests[-1].method == "GET" and server.requests[-1].body == b""
        assert run(good, method="POST", path="/created")["ok"] is False
        denied = run(bad, path="/health")
        assert denied == {"ok": False, "status_code": 401, "response": "who are you",
                          "error": "the endpoint answered HTTP 401"}
        escaped = run(good, path="/../admin")
        assert escaped["ok"] is False and "bound to" in escaped["error"]
    finally:
        server.stop()
    # Nobody listens there (the stopped receiver's keep-alive connections would still answer).
    nobody = create(type="bearer", endpoint_prefix=f"http://127.0.0.1:{free_port()}/api", token="good")
    gone = client.post(f"/v1/auth-profiles/{nobody['id']}/test", json={}, headers=admin).get_json()
    assert gone["ok"] is False and gone["status_code"] is None and "connection" in gone["error"].lower()


def test_the_test_endpoint_with_mtls(create, client, admin, pki, mtls_server):
    profile = create(type="mtls", endpoint_prefix=mtls_server.url, certificate=pki.client.cert,
                     private_key=pki.client.key, ca_certificate=pki.ca_pem)
    result = client.post(f"/v1/auth-profiles/{profile['id']}/test", json={"path": "/health"}, headers=admin)
    assert result.get_json()["ok"] is True and mtls_server.requests[-1].path == "/health"


def test_crud_and_validation(client, admin, create, db):
    assert client.get("/v1/auth-profiles").status_code == 401
    made = [create(type="bearer", endpoint_prefix="https://a.com", token=f"t{i}") for i in range(3)]
    assert all(p["id"].startswith("ap_") for p in made)
    page = client.get("/v1/auth-profiles?limit=2", headers=admin).get_json()
    assert len(page["items"]) == 2 and page["next_cursor"] == made[1]["id"]
    path = f"/v1/auth-profiles/{made[0]['id']}"
    assert client.patch(path, json={"type": "basic"}, headers=admin).status_code == 422
    assert client.patch(path, json={"token": MASK}, headers=admin).status_code == 422
    prefix_with_query = {"endpoint_prefix": "https://a.com/x?y=1"}
    assert client.patch(path, json=prefix_with_query, headers=admin).status_code == 422
    assert client.patch(path, json={"token": "fresh"}, headers=admin).get_json()["token"] == MASK
    for body in ({"type": "nope", "name": "x", "endpoint_prefix": "https://a.com"},
                 {"type": "bearer", "name": "x", "endpoint_prefix": "https://u:p@a.com", "token": "t"},
                 {"type": "bearer", "name": "x", "endpoint_prefix": "https://a.com", "token": "t",
                  "extra": 1},
                 {"type": "basic", "name": "x", "endpoint_prefix": "https://a.com", "username": "a:b",
                  "password": "p"},
                 {"type": "url", "name": "x", "endpoint_prefix": "https://a.com"},
                 {"type": "bearer", "name": "x", "endpoint_prefix": "https://a.com", "token": "t",
                  "ca_certificate": "nope"}):
        assert client.post("/v1/auth-profiles", json=body, headers=admin).status_code == 422, body
    assert client.delete(path, headers=admin).status_code == 204
    assert client.get(path, headers=admin).status_code == 404
    assert client.delete(path, headers=admin).status_code == 404
