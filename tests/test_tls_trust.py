"""Which CAs an https delivery trusts (app/tls.py): the operating system's store, HOOKGATE_CA_BUNDLE,
a destination's ca_certificate and its auth profile's — each shown to work against a real HTTPS
receiver on 127.0.0.1 whose certificate a private CA signed, and none of them: refused."""

from __future__ import annotations

import dataclasses
import os
import subprocess

import pytest

from hookgate import create_app, runtime
from hookgate.config import Settings
from hookgate.delivery.worker import run_burst

from .processes import hookgate
from .tls import PKI, TLSReceiver


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki-trust"))


@pytest.fixture
def server(pki):
    receiver = TLSReceiver(pki, require_client_cert=False).start()
    yield receiver
    receiver.stop()


def deliver(client, admin, make_source, post_events, work, url: str, **destination) -> dict:
    """One event to a destination at ``url``: the delivery as the API shows it after a worker ran."""
    response = client.post("/v1/destinations", headers=admin, json={"name": "tls", "url": url, **destination})
    assert response.status_code == 201, response.get_json()
    source_id, key = make_source()
    event_id = post_events(source_id, key, {"name": "order.paid"}).get_json()["ids"][0]
    work()
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    return client.get(f"/v1/deliveries/{delivery['id']}", headers=admin).get_json()


def test_a_private_ca_given_nowhere_is_refused(client, admin, make_source, post_events, work, server):
    delivery = deliver(client, admin, make_source, post_events, work, server.url + "/hook")
    assert delivery["status"] == "bounced" and server.requests == []  # retried later
    assert "CERTIFICATE_VERIFY_FAILED" in delivery["attempt_log"][0]["error"]


def test_the_destinations_own_ca_certificate(client, admin, make_source, post_events, work, server, pki):
    delivery = deliver(client, admin, make_source, post_events, work, server.url + "/hook",
                       ca_certificate=pki.ca_pem)
    assert delivery["status"] == "delivered" and len(server.requests) == 1
    shown = client.get(f"/v1/destinations/{delivery['destination_id']}", headers=admin).get_json()
    assert shown["ca_certificate"] == pki.ca_pem  # a CA certificate is public: shown and exported


def test_a_ca_certificate_that_is_not_one_is_refused_when_saved(client, admin):
    for bad in ("not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        response = client.post("/v1/destinations", headers=admin, json={
            "name": "tls", "url": "https://127.0.0.1/hook", "ca_certificate": bad})
        assert response.status_code == 422
        assert "ca_certificate" in response.get_json()["error"]["details"]


def test_the_auth_profiles_ca_certificate(client, admin, make_source, post_events, work, server, pki):
    profile = client.post("/v1/auth-profiles", headers=admin, json={
        "name": "p", "type": "bearer", "token": "tok-0123456789", "endpoint_prefix": server.url,
        "ca_certificate": pki.ca_pem}).get_json()
    delivery = deliver(client, admin, make_source, post_events, work, server.url + "/hook",
                       auth_profile_id=profile["id"])
    assert delivery["status"] == "delivered"
    assert server.requests[0].header("Authorization") == "Bearer tok-0123456789"


def test_hookgate_ca_bundle(settings, make_source, admin, server, pki):
    bundled = create_app(dataclasses.replace(settings, ca_bundle=str(pki.ca_file)))
    rt = bundled.extensions["hookgate"]
    runtime.install(rt)
    client = bundled.test_client()
    try:
        source = client.post("/v1/sources", json={"name": "s", "kind": "generic"}, headers=admin).get_json()

        def post_events(source_id, key, payload):
            return client.post(f"/v1/sources/{source_id}/events", json=payload, headers={"X-Hookgate-Key": key})

        delivery = deliver(client, admin, lambda: (source["id"], source["key"]), post_events,
                           lambda: run_burst(rt), server.url + "/hook")
        assert delivery["status"] == "delivered" and len(server.requests) == 1
    finally:
        runtime.install(None)


def test_a_ca_bundle_that_is_not_one_stops_start_up(tmp_path):
    (tmp_path / "empty.pem").write_text("")
    for path in (tmp_path / "missing.pem", tmp_path / "empty.pem"):
        with pytest.raises(ValueError, match="HOOKGATE_CA_BUNDLE"):
            Settings.from_env({"HOOKGATE_CA_BUNDLE": str(path)})


def test_the_operating_systems_store_in_a_real_worker(client, admin, make_source, post_events, server, pki,
                                                       settings, redis_url):
    """A `hookgate worker` process trusts what OpenSSL's default locations hold (SSL_CERT_FILE points
    them at the private CA here, as an operator's system store would hold a company CA); certifi's
    list and REQUESTS_CA_BUNDLE are not what it reads."""
    client.post("/v1/destinations", headers=admin, json={"name": "tls", "url": server.url + "/hook"})
    source_id, key = make_source()
    env = {**os.environ, "HOOKGATE_REDIS_URL": redis_url, "HOOKGATE_SECRET_KEY": settings.secret_key,
           "HOOKGATE_ALLOWED_NETWORKS": "127.0.0.0/8", "REQUESTS_CA_BUNDLE": str(pki.ca_file)}
    env.pop("SSL_CERT_FILE", None)
    env.pop("HOOKGATE_CA_BUNDLE", None)

    def run_worker(extra: dict[str, str]) -> None:
        subprocess.run(hookgate("worker", "--burst"), env={**env, **extra}, check=True, capture_output=True,
                       timeout=120)

    refused = post_events(source_id, key, {"name": "a"}).get_json()["ids"][0]
    run_worker({})
    assert server.requests == []
    [delivery] = client.get(f"/v1/deliveries?event_id={refused}", headers=admin).get_json()["items"]
    assert delivery["status"] == "bounced"
    trusted = post_events(source_id, key, {"name": "b"}).get_json()["ids"][0]
    run_worker({"SSL_CERT_FILE": str(pki.ca_file)})
    [delivery] = client.get(f"/v1/deliveries?event_id={trusted}", headers=admin).get_json()["items"]
    assert delivery["status"] == "delivered"
    sent = [r.header("webhook-id") for r in server.requests]
    # the refused one is retried 5 s after it bounced: a slow start of the second worker sends it too
    assert trusted in sent and set(sent) <= {trusted, refused}
