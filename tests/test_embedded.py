"""The embedded store keeps what it accepted across a restart (append-only file)."""

from __future__ import annotations

from hookgate.embedded import EmbeddedServer
from hookgate.store import connect


def test_data_survives_a_restart_of_the_embedded_server(tmp_path):
    server = EmbeddedServer(tmp_path)
    server.start()
    try:
        db = connect(server.url)
        db.set("hookgate:event:evt_1", '{"name": "kept"}')
        db.zadd("hookgate:dest:dst_1:pending", {"dlv_1": 1})
        db.close()
    finally:
        server.stop()  # SIGTERM: Valkey flushes its append-only file
    assert (tmp_path / "valkey").exists()
    again = EmbeddedServer(tmp_path, port=None)
    again.start()
    try:
        db = connect(again.url)
        assert db.get("hookgate:event:evt_1") == '{"name": "kept"}'
        assert db.zrange("hookgate:dest:dst_1:pending", 0, -1) == ["dlv_1"]
        assert db.config_get("appendonly")["appendonly"] == "yes"
    finally:
        again.stop()
