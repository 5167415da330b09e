"""Auth profiles used by destinations, end to end: ingest → RQ worker → a local server that checks
the credential (Standard Webhooks verified by the reference library, mTLS, OAuth 2.0, basic), and no
credential in the delivery log."""

from __future__ import annotations

import base64
import json
import socket

import pytest
from standardwebhooks import Webhook

from .receiver import Receiver, Reply
from .test_auth_profiles import CLIENT_ID, CLIENT_SECRET, TokenEndpoint
from .tls import PKI, TLSReceiver


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki-delivery"))


@pytest.fixture
def profile(client, admin):
    def make(**body) -> dict:
        response = client.post("/v1/auth-profiles", json={"name": "p", **body}, headers=admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()
    return make


def test_standard_webhooks_requests_verify_with_the_library(profile, make_source, make_destination, post_events,
                                                           work, client, admin):
    verified: list[dict] = []
    holder: dict = {}

    def reply(request):
        try:
            verified.append(Webhook(holder["secret"]).verify(request.body, {k.lower(): v for k, v in
                                                                           request.headers.items()}))
            return Reply(200)
        except Exception:
            return Reply(401)

    receiver = Receiver(reply).start()
    try:
        signing = profile(type="standard_webhooks", endpoint_prefix=receiver.url + "/hooks")
        holder["secret"] = signing["secret"]
        source_id, key = make_source()
        make_destination(receiver.url + "/hooks/in", auth_profile_id=signing["id"])
        event_id = post_events(source_id, key, {"name": "order.paid", "user_id": "u1"}).get_json()["ids"][0]
        work()
        [request] = receiver.wait_for(1)
        assert request.header("webhook-id") == event_id and verified[0]["id"] == event_id
        [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
        assert delivery["status"] == "delivered"
    finally:
        receiver.stop()


def test_a_destination_outside_the_profile_prefix_is_refused(profile, client, admin, receiver):
    basic = profile(type="basic", endpoint_prefix=receiver.url + "/api", username="u", password="p4ssword")
    response = client.post("/v1/destinations", json={"name": "d", "url": receiver.url + "/apix",
                                                      "auth_profile_id": basic["id"]}, headers=admin)
    assert response.status_code == 422 and "url" in response.get_json()["error"]["details"]
    ok = client.post("/v1/destinations", json={"name": "d", "url": receiver.url + "/api/in",
                                                "auth_profile_id": basic["id"]}, headers=admin).get_json()
    moved = client.patch(f"/v1/destinations/{ok['id']}", json={"url": "http://127.0.0.2:9/api/in"}, headers=admin)
    assert moved.status_code == 422
    assert client.delete(f"/v1/auth-profiles/{basic['id']}", headers=admin).status_code == 409


def test_basic_auth_reaches_the_receiver_and_is_not_in_the_delivery_log(profile, make_source, make_destination,
                                                                       post_events, receiver, work, client, admin):
    basic = profile(type="basic", endpoint_prefix=receiver.url, username="hook", password="s3cret-pass")
    source_id, key = make_source()
    make_destination(receiver.url + "/in", auth_profile_id=basic["id"])
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    work()
    [request] = receiver.wait_for(1)
    assert request.header("Authorization") == "Basic " + base64.b64encode(b"hook:s3cret-pass").decode()
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    shown = json.dumps(client.get(f"/v1/deliveries/{delivery['id']}", headers=admin).get_json())
    assert "s3cret-pass" not in shown and base64.b64encode(b"hook:s3cret-pass").decode() not in shown


def test_url_profile_credentials_never_reach_the_delivery_log(client, admin, make_source, make_destination, post_events,
                                                              work):
    """Regression: a connection error's text named the URL with the profile's query credentials."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens: the error names the URL
    base = f"http://127.0.0.1:{port}"
    profile = client.post("/v1/auth-profiles", json={"name": "u", "type": "url", "endpoint_prefix": base,
                                                      "query": {"api_key": "TOPSECRET-123"}}, headers=admin)
    assert profile.status_code == 201, profile.get_json()
    source_id, key = make_source()
    make_destination(base + "/hook", auth_profile_id=profile.get_json()["id"])
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    work()
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    shown = json.dumps(client.get(f"/v1/deliveries/{delivery['id']}", headers=admin).get_json())
    assert "connection failed" in shown and "TOPSECRET-123" not in shown


def test_mtls_delivery(profile, pki, make_source, make_destination, post_events, work, client, admin):
    server = TLSReceiver(pki).start()
    try:
        mtls = profile(type="mtls", endpoint_prefix=server.url, certificate=pki.client.cert,
                       private_key=pki.client.key, ca_certificate=pki.ca_pem)
        source_id, key = make_source()
        make_destination(server.url + "/in", auth_profile_id=mtls["id"])
        event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
        work()
        [request] = server.wait_for(1)
        assert json.loads(request.body)["id"] == event_id
    finally:
        server.stop()


def test_oauth_delivery_refreshes_its_token_once_on_a_401(profile, pki, make_source, make_destination,
                                                         post_events, work, client, admin):
    endpoint = TokenEndpoint("header")
    server = TLSReceiver(pki, endpoint, require_client_cert=False).start()
    try:
        oauth = profile(type="oauth2_client_credentials", endpoint_prefix=server.url + "/api",
                        token_url=server.url + "/oauth/token", client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                        scope="events:write", client_auth="header", ca_certificate=pki.ca_pem)
        source_id, key = make_source()
        make_destination(server.url + "/api/events", auth_profile_id=oauth["id"])
        post_events(source_id, key, {"name": "a"})
        work()
        assert endpoint.calls == 1
        endpoint.valid.clear()  # the receiver revokes every token it issued
        event_id = post_events(source_id, key, {"name": "b"}).get_json()["ids"][0]
        work()
        assert endpoint.calls == 2  # one fresh token after the 401, and the retry went through
        [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
        assert delivery["status"] == "delivered" and delivery["attempts"] == 1
    finally:
        server.stop()
