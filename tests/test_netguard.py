"""The SSRF guard: non-global addresses are refused at send time unless their network is allowed."""

from __future__ import annotations

import pytest

from hookgate.config import parse_networks
from hookgate.delivery.async_http import SyncBridge
from hookgate.errors import BlockedDestination
from hookgate.netguard import check_address, resolve

LOOPBACK = parse_networks("127.0.0.0/8,::1/128")


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.1.2.3", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "0.0.0.0", "::", "224.0.0.1", "240.0.0.1", "255.255.255.255", "fe80::1", "fc00::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1",
])
def test_non_global_addresses_are_refused(address):
    with pytest.raises(BlockedDestination):
        check_address(address, ())


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_global_addresses_pass(address):
    check_address(address, ())


def test_an_allowed_network_opens_exactly_that_network():
    check_address("127.0.0.1", LOOPBACK)
    check_address("::ffff:127.0.0.1", LOOPBACK)
    with pytest.raises(BlockedDestination):
        check_address("10.0.0.1", LOOPBACK)


@pytest.mark.parametrize("host", ["localhost", "2130706433", "0x7f000001", "0177.0.0.1", "127.1"])
def test_names_and_odd_ip_forms_are_checked_after_resolution(host):
    with pytest.raises(BlockedDestination):
        resolve(host, 80, ())


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/", "http://localhost:{port}/", "http://[::1]:{port}/", "http://2130706433:{port}/",
    "http://0177.0.0.1:{port}/", "http://169.254.169.254/latest/meta-data/",
])
def test_the_sender_refuses_before_connecting(url, receiver):
    sender = SyncBridge(())
    try:
        response = sender.send("POST", url.format(port=receiver.port), {}, b"{}", 2)
    finally:
        sender.close()
    assert response.status_code is None and response.error_kind == "blocked"
    assert receiver.requests == []


def test_a_refused_delivery_is_an_error_that_is_not_retried(
    app, client, admin, receiver, make_source, make_destination, post_events, work, rt
):
    # This app allows loopback; a sender without the allow-list is what production has.
    rt.sender = SyncBridge(())
    source_id, key = make_source()
    make_destination(receiver.url)
    event_id = post_events(source_id, key, {"name": "x"}).get_json()["ids"][0]
    work()
    assert receiver.requests == []
    [delivery] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    assert delivery["status"] == "error" and delivery["next_attempt_at"] is None
    assert "not a global address" in delivery["last_error"]


def test_the_host_header_keeps_the_name_while_the_connection_is_pinned(receiver):
    sender = SyncBridge(LOOPBACK)
    try:
        response = sender.send("POST", f"http://localhost:{receiver.port}/x", {}, b"{}", 2)
    finally:
        sender.close()
    assert response.status_code == 200
    assert receiver.requests[0].header("Host") == f"localhost:{receiver.port}"
