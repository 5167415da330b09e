"""Using presets: destinations from a preset, their parameters and secrets, users' own presets, and
trying a destination (``POST /v1/destinations/<id>/test``)."""

from __future__ import annotations

import json

from .receiver import Receiver, Reply

HOOK = "https://hooks.zapier.com/hooks/catch/987/s3cr3tpath/"


def _zapier(client, admin, receiver_url: str, **extra):
    response = client.post("/v1/destinations", headers=admin, json={
        "preset": "zapier.catch_hook", "params": {"hook_url": HOOK, "url": receiver_url}, **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_preset_params_are_checked_with_one_message_per_parameter(client, admin):
    missing = client.post("/v1/destinations", headers=admin, json={"preset": "zapier.catch_hook", "params": {}})
    assert missing.status_code == 422
    assert missing.get_json()["error"]["details"]["params"]["hook_url"] == ["Missing data for required field."]
    bad = client.post("/v1/destinations", headers=admin, json={
        "preset": "zapier.catch_hook", "params": {"hook_url": "not a url", "colour": "red"}})
    details = bad.get_json()["error"]["details"]["params"]
    assert bad.status_code == 422 and set(details) == {"hook_url", "colour"}
    unknown = client.post("/v1/destinations", headers=admin, json={"preset": "nope.none", "params": {}})
    assert unknown.status_code == 422 and "preset" in unknown.get_json()["error"]["details"]
    with_url = client.post("/v1/destinations", headers=admin, json={
        "preset": "zapier.catch_hook", "url": "https://elsewhere.example", "params": {"hook_url": HOOK}})
    assert with_url.status_code == 422 and "params.url" in with_url.get_json()["error"]["details"]["url"][0]
    not_object = client.post("/v1/destinations", headers=admin, json={"preset": "zapier.catch_hook", "params": []})
    assert not_object.status_code == 422


def test_secret_params_are_encrypted_masked_and_kept_across_a_patch(client, admin, db, receiver, make_source,
                                                                    post_events, work):
    destination = _zapier(client, admin, receiver.url, name="to zapier")
    assert destination["name"] == "to zapier"
    assert destination["preset"]["params"]["hook_url"] == "••••••"
    assert destination["url"] == receiver.url + "/xxxxxx"
    stored = db.hget("hookgate:destinations", destination["id"])
    assert "s3cr3tpath" not in stored and "s3cr3tpath" not in json.dumps(
        client.get(f"/v1/destinations/{destination['id']}", headers=admin).get_json())
    # A change that keeps the endpoint keeps the secret; a new endpoint must be given the secret again
    # (it does not inherit one it was never given: an admin cannot redirect a stored token to their host).
    kept = client.patch(f"/v1/destinations/{destination['id']}", headers=admin, json={"events": ["signup"]})
    assert kept.status_code == 200 and kept.get_json()["preset"]["params"]["hook_url"] == "••••••"
    other = Receiver().start()
    try:
        moved = client.patch(f"/v1/destinations/{destination['id']}", headers=admin, json={"params": {"url": other.url}})
        assert moved.status_code == 422 and "hook_url" in moved.get_json()["error"]["details"]["params"]
        patched = client.patch(f"/v1/destinations/{destination['id']}", headers=admin,
                               json={"params": {"url": other.url, "hook_url": HOOK}, "events": ["signup"]})
        assert patched.status_code == 200, patched.get_json()
        assert patched.get_json()["url"] == other.url + "/xxxxxx" and patched.get_json()["events"] == ["signup"]
        source_id, key = make_source()
        post_events(source_id, key, {"name": "signup", "user_id": "u1"})
        work()
        assert [r.path for r in other.requests] == ["/hooks/catch/987/s3cr3tpath/"] and not receiver.requests
    finally:
        other.stop()
    attempt = client.get(f"/v1/deliveries?destination_id={destination['id']}", headers=admin).get_json()["items"][0]
    full = client.get(f"/v1/deliveries/{attempt['id']}", headers=admin).get_json()
    assert full["attempt_log"][0]["url"] == other.url + "/xxxxxx"
    assert "s3cr3tpath" not in json.dumps(full)
    refused = client.patch(f"/v1/destinations/{destination['id']}", headers=admin, json={"url": "https://x.example"})
    assert refused.status_code == 422
    bad = client.patch(f"/v1/destinations/{destination['id']}", headers=admin, json={"params": {"hook_url": 5}})
    assert bad.status_code == 422 and "hook_url" in bad.get_json()["error"]["details"]["params"]


def test_a_user_saves_a_destination_as_a_preset_that_later_users_fill_in(client, admin, receiver, make_source,
                                                                        post_events, work):
    template = '{"customer": {{ event.user_id | tojson }}, "list": {{ params.list_id | tojson }}}'
    original = client.post("/v1/destinations", headers=admin, json={
        "name": "crm", "url": receiver.url + "/crm", "template": template, "headers": {"X-Team": "growth"},
        "events": ["never"]})
    assert original.status_code == 201
    saved = client.post("/v1/presets", headers=admin, json={
        "name": "acme.crm_list", "title": "Acme CRM list", "from_destination": original.get_json()["id"],
        "path": "/lists/{{ params.list_id | urlencode }}",
        "headers": {"X-Team": "growth", "Authorization": "Bearer {{ params.token }}"},
        "params": [{"name": "list_id", "required": True},
                   {"name": "token", "secret": True, "required": True, "description": "CRM API token"}]})
    assert saved.status_code == 201, saved.get_json()
    shown = client.get("/v1/presets/acme.crm_list", headers=admin).get_json()
    assert shown["origin"] == "user" and shown["template"] == template
    assert [(p["name"], p["secret"]) for p in shown["params"]] == [("list_id", False), ("token", True), ("url", False)]
    assert shown["example"]["headers"]["Authorization"] == "••••••"
    assert "acme.crm_list" in [p["name"] for p in client.get("/v1/presets", headers=admin).get_json()["items"]]

    made = client.post("/v1/destinations", headers=admin, json={
        "preset": "acme.crm_list", "params": {"list_id": "vip 1", "token": "tok-abcdef"}, "events": ["signup"]})
    assert made.status_code == 201, made.get_json()
    source_id, key = make_source()
    post_events(source_id, key, {"name": "signup", "user_id": "u7"})
    work()
    (request,) = receiver.requests
    assert request.path == "/crm/lists/vip%201"
    assert request.header("Authorization") == "Bearer tok-abcdef" and request.header("X-Team") == "growth"
    assert json.loads(request.body) == {"customer": "u7", "list": "vip 1"}

    again = client.post("/v1/presets", headers=admin, json={"name": "acme.crm_list", "base_url": "https://a.example"})
    assert again.status_code == 409
    builtin = client.post("/v1/presets", headers=admin, json={"name": "zapier.catch_hook", "base_url": "https://a.example"})
    assert builtin.status_code == 409
    broken = client.post("/v1/presets", headers=admin, json={
        "name": "acme.broken", "base_url": "https://a.example", "template": '{\n"a": {{ event.name }\n}'})
    assert broken.status_code == 422 and broken.get_json()["error"]["details"]["template"]["line"] == 2
    assert client.delete("/v1/presets/acme.crm_list", headers=admin).status_code == 204
    assert client.get("/v1/presets/acme.crm_list", headers=admin).status_code == 404
    assert client.delete("/v1/presets/zapier.catch_hook", headers=admin).status_code == 404


def test_trying_a_destination_shows_the_request_and_sends_it_when_asked(client, admin):
    answers = iter([Reply(200, b'{"status": "success", "id": "z1"}'), Reply(200, b'{"status": "throttled"}')])
    receiver = Receiver(lambda request: next(answers)).start()
    try:
        destination = _zapier(client, admin, receiver.url)
        shown = client.post(f"/v1/destinations/{destination['id']}/test", headers=admin)
        assert shown.status_code == 200, shown.get_json()
        request = shown.get_json()["request"]
        assert request["url"] == receiver.url + "/xxxxxx" and "response" not in shown.get_json()
        assert json.loads(request["body"])["profile.email"] == "jane.doe@example.com"  # sample, not personal
        assert not receiver.requests  # nothing sent without "send"
        sent = client.post(f"/v1/destinations/{destination['id']}/test", headers=admin, json={
            "send": True, "event": {"name": "trial_run", "user_id": "tester", "data": {"n": 1}}}).get_json()
        assert sent["response"]["status_code"] == 200 and sent["response"]["outcome"] == "delivered"
        assert json.loads(receiver.requests[0].body)["name"] == "trial_run"
        assert receiver.requests[0].path == "/hooks/catch/987/s3cr3tpath/"
        refused = client.post(f"/v1/destinations/{destination['id']}/test", headers=admin, json={"send": True}).get_json()
        assert refused["response"]["outcome"] == "error" and "throttled" in refused["response"]["reason"]
        assert "s3cr3tpath" not in json.dumps(sent) + json.dumps(refused)
        assert client.get("/v1/deliveries", headers=admin).get_json()["items"] == []  # trials are not deliveries
        bad = client.post(f"/v1/destinations/{destination['id']}/test", headers=admin, json={"send": "maybe"})
        assert bad.status_code == 422
        assert client.post("/v1/destinations/dst_nope/test", headers=admin).status_code == 404
    finally:
        receiver.stop()


def test_trying_a_destination_whose_template_fails_says_why(client, admin, receiver):
    made = client.post("/v1/destinations", headers=admin, json={
        "name": "t", "url": receiver.url, "template": '{"a": {{ event.name | tojson }}, }'})
    result = client.post(f"/v1/destinations/{made.get_json()['id']}/test", headers=admin).get_json()
    assert result["error"]["code"] == "render_failed" and "JSON" in result["error"]["message"]


def test_a_connection_error_does_not_show_a_preset_s_secret_path(client, admin, make_source, post_events, work):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens: requests' error names the URL it tried
    destination = _zapier(client, admin, f"http://127.0.0.1:{port}", retry_schedule=[])
    source_id, key = make_source()
    post_events(source_id, key, {"name": "signup"})
    work()
    [item] = client.get(f"/v1/deliveries?destination_id={destination['id']}", headers=admin).get_json()["items"]
    full = client.get(f"/v1/deliveries/{item['id']}", headers=admin).get_json()
    assert full["status"] == "failed" and "connection failed" in full["last_error"]
    assert "xxxxxx" in full["attempt_log"][0]["error"]
    assert "s3cr3tpath" not in json.dumps(full)
    events = client.get("/v1/deliveries?limit=200", headers=admin).get_json()["items"]
    assert "s3cr3tpath" not in json.dumps(events)
