"""Using presets: destinations from a preset; their parameters (types, bounds, checks); secret parameters
(encrypted, masked, kept across a PATCH unless the endpoint moves, never in an answer, a log or an
attempt); users' own presets; batch presets; and trying a destination (``POST /v1/destinations/<id>/test``)."""

from __future__ import annotations

import base64
import json
import logging
import urllib.parse

from hookgate import create_app, runtime
from hookgate.hookspecs import hookimpl
from hookgate.plugins import load
from hookgate.presets import MASK, Param, Preset

from .receiver import Receiver, Reply

HOOK = "https://hooks.zapier.com/hooks/catch/987/s3cr3tpath/"
# built-in presets whose secrets travel in the body or the query (also used by test_plugins, test_preset_sms)
PHONE = "+15555550100"
CM_TOKEN = "0b9c1d2e-CM-TOKEN-7e8f9a0b1c2d"
VONAGE = {"api_key": "k1234567", "api_secret": "vonage-s3cret-42", "from": "Shop"}
VONAGE_OK = json.dumps({"message-count": "1", "messages": [{"to": "15555550100", "status": "0"}]}).encode()


def _zapier(client, admin, receiver_url: str, **extra):
    response = client.post("/v1/destinations", headers=admin, json={
        "preset": "zapier.catch_hook", "params": {"hook_url": HOOK, "url": receiver_url}, **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def created(client, admin, body: dict) -> dict:
    response = client.post("/v1/destinations", headers=admin, json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def deliveries(client, admin, destination_id: str) -> list[dict]:
    """The destination's deliveries, each with its attempt log."""
    items = client.get(f"/v1/deliveries?destination_id={destination_id}", headers=admin).get_json()["items"]
    return [client.get(f"/v1/deliveries/{item['id']}", headers=admin).get_json() for item in items]


# -- parameters ----------------------------------------------------------------------------------------

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


def test_a_number_param_takes_a_number_and_refuses_text(client, admin):
    """Regression: a ``number`` param made the API answer 500."""
    saved = client.post("/v1/presets", headers=admin, json={
        "name": "acme.num", "base_url": "https://acme.example", "template": '{"x": {{ params.x | tojson }}}',
        "params": [{"name": "x", "type": "number"}]})
    assert saved.status_code == 201, saved.get_json()
    made = client.post("/v1/destinations", headers=admin, json={"preset": "acme.num", "params": {"x": 1.5}})
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["preset"]["params"]["x"] == 1.5
    unset = client.post("/v1/destinations", headers=admin, json={"preset": "acme.num", "params": {}})
    assert unset.status_code == 201, unset.get_json()
    wrong = client.post("/v1/destinations", headers=admin, json={"preset": "acme.num", "params": {"x": "many"}})
    assert wrong.status_code == 422 and "x" in json.dumps(wrong.get_json()["error"]["details"])


def test_minimum_on_a_string_param_does_not_break_its_destinations(client, admin):
    """Regression: minimum/maximum on a string param made its destinations answer 500."""
    imported = client.post("/v1/import", headers=admin, json={"hookgate_export": 1, "presets": [{
        "name": "acme.min", "title": "t", "base_url": "https://acme.example",
        "params": [{"name": "x", "type": "string", "minimum": 1, "maximum": 5},
                   {"name": "n", "type": "integer", "minimum": 1, "maximum": 5}]}]})
    assert imported.status_code == 200, imported.get_json()
    made = client.post("/v1/destinations", headers=admin, json={"preset": "acme.min",
                                                                "params": {"x": "abc", "n": 2}})
    assert made.status_code == 201, made.get_json()
    assert {k: made.get_json()["preset"]["params"][k] for k in ("x", "n")} == {"x": "abc", "n": 2}
    too_big = client.post("/v1/destinations", headers=admin, json={"preset": "acme.min",
                                                                   "params": {"x": "a", "n": 9}})
    assert too_big.status_code == 422 and "n" in too_big.get_json()["error"]["details"]["params"]


def test_a_preset_path_that_does_not_render_is_a_422(client, admin):
    """Regression: a preset path that does not render answered 500, not 422."""
    saved = client.post("/v1/presets", headers=admin, json={
        "name": "acme.path", "base_url": "https://acme.example", "path": "/{{ 10 // params.n }}",
        "params": [{"name": "n", "type": "integer", "default": 0}]})
    assert saved.status_code == 201, saved.get_json()
    refused = client.post("/v1/destinations", headers=admin, json={"preset": "acme.path", "params": {}})
    assert refused.status_code == 422, refused.get_json()
    assert "params" in refused.get_json()["error"]["details"]
    assert client.get("/v1/destinations", headers=admin).get_json()["items"] == []

    made = created(client, admin, {"preset": "acme.path", "params": {"n": 2}})
    assert made["url"] == "https://acme.example/5"
    patched = client.patch(f"/v1/destinations/{made['id']}", headers=admin, json={"params": {"n": 0}})
    assert patched.status_code == 422, patched.get_json()
    unchanged = client.get(f"/v1/destinations/{made['id']}", headers=admin).get_json()
    assert unchanged["url"] == "https://acme.example/5"


def test_a_batch_size_param_that_is_not_a_number_is_a_422(client, admin):
    """Regression: a string ``batch_size`` param that is not a number answered 500, not 422."""
    cm = created(client, admin, {"preset": "sms.cm", "params": {"product_token": CM_TOKEN, "sender": "Shop"}})
    saved = client.post("/v1/presets", headers=admin, json={"name": "acme.cm", "from_destination": cm["id"],
                                                            "params": [{"name": "batch_size", "type": "string"}]})
    assert saved.status_code == 201, saved.get_json()
    refused = client.post("/v1/destinations", headers=admin, json={"preset": "acme.cm",
                                                                   "params": {"batch_size": "ten"}})
    assert refused.status_code == 422, refused.get_json()
    assert "batch_size" in json.dumps(refused.get_json()["error"]["details"])
    made = created(client, admin, {"preset": "acme.cm", "params": {"batch_size": "7"}})
    assert made["batch"]["size"] == 7


# -- secret parameters ---------------------------------------------------------------------------------

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
        moved = client.patch(f"/v1/destinations/{destination['id']}", headers=admin,
                             json={"params": {"url": other.url}})
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


def test_a_new_params_url_must_be_given_the_secrets_again(client, admin, answering):
    """Regression: a PATCH to a new ``params.url`` kept the secrets, for the new host to receive."""
    other = answering(lambda r: Reply(200, b'{"ok": true}'))
    slack = created(client, admin, {"preset": "slack.chat_post_message",
                                    "params": {"bot_token": "xoxb-real-secret-123", "channel": "C1"}})
    moved = client.patch(f"/v1/destinations/{slack['id']}", headers=admin, json={"params": {"url": other.url}})
    assert moved.status_code == 422, moved.get_json()
    assert "bot_token" in json.dumps(moved.get_json()["error"]["details"])
    kept = client.get(f"/v1/destinations/{slack['id']}", headers=admin).get_json()
    assert kept["url"] == "https://slack.com/api/chat.postMessage"  # the refused PATCH changed nothing

    moved = client.patch(f"/v1/destinations/{slack['id']}", headers=admin, json={
        "params": {"url": other.url, "bot_token": "xoxb-for-the-other-host"}})
    assert moved.status_code == 200, moved.get_json()
    tried = client.post(f"/v1/destinations/{slack['id']}/test", headers=admin, json={"send": True}).get_json()
    assert tried["response"]["status_code"] == 200
    assert [r.header("Authorization") for r in other.requests] == ["Bearer xoxb-for-the-other-host"]
    # a PATCH that keeps the URL keeps the secrets
    renamed = client.patch(f"/v1/destinations/{slack['id']}", headers=admin, json={"params": {"channel": "C2"}})
    assert renamed.status_code == 200, renamed.get_json()
    client.post(f"/v1/destinations/{slack['id']}/test", headers=admin, json={"send": True})
    assert other.requests[-1].header("Authorization") == "Bearer xoxb-for-the-other-host"


class SecretDefault:
    """A plugin preset whose secret parameter has a default: GET /v1/presets/<name> must not show it."""

    @hookimpl
    def register_presets(self, register):
        register(Preset(name="acme.defaulted", title="d", base_url="https://acme.example",
                        params=[Param("token", secret=True, default="plugin-default-s3cret"),
                                Param("region", default="eu")]))


def test_a_secret_param_s_default_is_refused_and_never_shown(settings, client, admin, db):
    """Regression: a secret parameter could have a default, and GET /v1/presets/<name> showed it."""
    refused = client.post("/v1/presets", headers=admin, json={
        "name": "acme.notify", "base_url": "https://acme.example",
        "template": '{"t": {{ params.token | tojson }}}',
        "params": [{"name": "token", "secret": True, "default": "s3cr3t-default-token"}]})
    assert refused.status_code == 422, refused.get_json()
    assert "default" in json.dumps(refused.get_json()["error"]["details"])
    assert client.get("/v1/presets/acme.notify", headers=admin).status_code == 404
    assert not any("s3cr3t-default-token" in v for v in db.hgetall("hookgate:presets").values())
    # without the default it is saved, and shown with none
    saved = client.post("/v1/presets", headers=admin, json={
        "name": "acme.notify", "base_url": "https://acme.example",
        "params": [{"name": "token", "secret": True, "required": True}, {"name": "region", "default": "eu"}]})
    assert saved.status_code == 201, saved.get_json()
    shown = {p["name"]: p for p in client.get("/v1/presets/acme.notify", headers=admin).get_json()["params"]}
    assert shown["token"]["default"] is None and shown["region"]["default"] == "eu"

    app = create_app(settings)
    rt = app.extensions["hookgate"]
    try:
        rt.plugins = load((), (SecretDefault(),))
        runtime.install(rt)
        shown = app.test_client().get("/v1/presets/acme.defaulted", headers=admin).get_json()
        assert "plugin-default-s3cret" not in json.dumps(shown)
        params = {p["name"]: p for p in shown["params"]}
        assert params["token"]["secret"] and params["token"]["default"] is None
        assert params["region"]["default"] == "eu"
    finally:
        runtime.install(None)
        load()


def test_a_receiver_that_echoes_the_request_does_not_put_the_secret_in_logs_or_answers(client, admin, answering,
                                                                                       make_source, post_events, work):
    """Regression: a receiver echoing the request put the secret in the attempt log and /test's answer."""
    echo = answering(lambda r: Reply(200, r.body, {"Content-Type": "application/json",
                                                   "X-Echo": r.body.decode()}))
    cm = created(client, admin, {"preset": "sms.cm", "params": {
        "product_token": CM_TOKEN, "sender": "Shop", "url": echo.url, "batch_size": 1}})
    tried = client.post(f"/v1/destinations/{cm['id']}/test", headers=admin, json={"send": True}).get_json()
    assert CM_TOKEN.encode() in echo.requests[0].body  # it was sent, and echoed
    assert tried["response"]["status_code"] == 200 and tried["response"]["body"]
    assert CM_TOKEN not in json.dumps(tried)

    source, key = make_source()
    assert post_events(source, key, {"name": "x", "profile": {"phone": PHONE}}).status_code == 202
    work()
    assert len(echo.requests) == 2 and CM_TOKEN.encode() in echo.requests[1].body
    [delivery] = deliveries(client, admin, cm["id"])
    [attempt] = delivery["attempt_log"]
    assert attempt["status_code"] == 200 and attempt["response_body"] and attempt["response_headers"]
    assert CM_TOKEN not in json.dumps(delivery)


def test_debug_logs_do_not_show_a_secret_path(client, admin, answering, make_source, post_events, work, caplog):
    """Regression: urllib3's DEBUG request line showed a preset's secret path (the sender is aiohttp's now:
    no logger of any library, at DEBUG, shows it)."""
    hook_secret = "ZZsecretHOOKpath9876"
    slack = answering(lambda r: Reply(200, b"ok", {"Content-Type": "text/plain"}))
    created(client, admin, {"preset": "slack.message", "params": {
        "webhook_url": f"https://hooks.slack.com/services/T0/B0/{hook_secret}", "url": slack.url}})
    source, key = make_source()
    caplog.set_level(logging.DEBUG)
    assert post_events(source, key, {"name": "x"}).status_code == 202
    work()
    assert [r.path for r in slack.requests] == [f"/services/T0/B0/{hook_secret}"]
    assert caplog.records, "nothing was logged at DEBUG"
    assert not [m for m in (r.getMessage() for r in caplog.records) if hook_secret in m]


def test_a_get_form_preset_destination_does_not_log_its_secret_in_the_attempt_url(client, admin, answering, make_source,
                                                                                  post_events, work):
    """Regression: a GET + form destination logged its secret in the attempt's URL."""
    vonage = answering(lambda r: Reply(200, VONAGE_OK))
    made = created(client, admin, {"preset": "sms.vonage", "method": "GET",
                                   "params": {**VONAGE, "url": vonage.url}})
    source, key = make_source()
    assert post_events(source, key, {"name": "x", "profile": {"phone": PHONE}}).status_code == 202
    work()
    [request] = vonage.requests
    assert request.method == "GET" and "api_secret=vonage-s3cret-42" in request.path
    [delivery] = deliveries(client, admin, made["id"])
    assert delivery["status"] == "delivered"
    [attempt] = delivery["attempt_log"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(attempt["url"]).query)
    assert query["api_key"] == ["k1234567"] and query["to"] == ["15555550100"]
    assert query["api_secret"] != [VONAGE["api_secret"]]
    assert VONAGE["api_secret"] not in json.dumps(delivery)


def test_a_connection_error_does_not_show_a_preset_s_secret_path(client, admin, make_source, post_events, work):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens
    destination = _zapier(client, admin, f"http://127.0.0.1:{port}", retry_schedule=[])
    source_id, key = make_source()
    post_events(source_id, key, {"name": "signup"})
    work()
    [item] = client.get(f"/v1/deliveries?destination_id={destination['id']}", headers=admin).get_json()["items"]
    full = client.get(f"/v1/deliveries/{item['id']}", headers=admin).get_json()
    assert full["status"] == "failed" and "connection failed" in full["last_error"]
    assert "s3cr3tpath" not in json.dumps(full)
    events = client.get("/v1/deliveries?limit=200", headers=admin).get_json()["items"]
    assert "s3cr3tpath" not in json.dumps(events)


# -- users' presets ------------------------------------------------------------------------------------

def test_a_user_preset_path_is_joined_to_the_source_url_before_its_query(client, admin, receiver, make_source,
                                                                         post_events, work):
    """The saved destination's URL carries a query: the preset's path goes after the URL's path, not
    after the whole URL (it went into the query: /crm?key=k/lists/7)."""
    original = client.post("/v1/destinations", headers=admin, json={
        "name": "crm", "url": receiver.url + "/crm/?key=k", "events": ["never"]}).get_json()
    saved = client.post("/v1/presets", headers=admin, json={
        "name": "acme.lists", "from_destination": original["id"], "path": "/lists/{{ params.list_id }}?v=2",
        "params": [{"name": "list_id", "required": True}]})
    assert saved.status_code == 201, saved.get_json()
    made = created(client, admin, {"preset": "acme.lists", "params": {"list_id": "7"}, "events": ["signup"]})
    assert made["url"] == receiver.url + "/crm/lists/7?key=k&v=2"
    source_id, key = make_source()
    post_events(source_id, key, {"name": "signup"})
    work()
    (request,) = receiver.wait_for(1)
    assert request.path == "/crm/lists/7?key=k&v=2"



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


# -- batch presets -------------------------------------------------------------------------------------

def test_patching_the_batch_size_param_changes_the_batch_size(client, admin):
    """Regression: a PATCH of a batch preset destination's ``batch_size`` param left its batch size."""
    cm = created(client, admin, {"preset": "sms.cm", "params": {"product_token": CM_TOKEN, "sender": "Shop",
                                                                "batch_size": 100}})
    assert cm["batch"]["size"] == 100
    patched = client.patch(f"/v1/destinations/{cm['id']}", headers=admin, json={"params": {"batch_size": 5}})
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["preset"]["params"]["batch_size"] == 5
    assert patched.get_json()["batch"] == {**cm["batch"], "size": 5}
    assert client.get(f"/v1/destinations/{cm['id']}", headers=admin).get_json()["batch"]["size"] == 5


def test_patching_the_batch_size_keeps_the_preset_s_templates(client, admin):
    """Regression: a PATCH of the batch size dropped the preset's batch templates."""
    cm = created(client, admin, {"preset": "sms.cm", "params": {"product_token": CM_TOKEN, "sender": "Shop"}})
    assert cm["batch"]["root_template"] and cm["batch"]["item_template"]
    patched = client.patch(f"/v1/destinations/{cm['id']}", headers=admin, json={"batch": {"size": 7}})
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["batch"] == {**cm["batch"], "size": 7}
    tried = client.post(f"/v1/destinations/{cm['id']}/test", headers=admin).get_json()
    body = json.loads(tried["request"]["body"])  # still CM's request, not hookgate's default batch body
    assert body["messages"]["authentication"]["producttoken"] != CM_TOKEN
    assert [m["to"] for m in body["messages"]["msg"]] == [[{"number": "0015555550100"}]]


# -- trying a destination ------------------------------------------------------------------------------

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
        refused = client.post(f"/v1/destinations/{destination['id']}/test", headers=admin,
                              json={"send": True}).get_json()
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


def test_trying_a_destination_never_shows_a_secret_transformed_by_the_template(client, admin):
    """Regression: /test showed a secret transformed by a template filter."""
    secret = VONAGE["api_secret"]
    vonage = created(client, admin, {"preset": "sms.vonage", "params": VONAGE})
    patched = client.patch(f"/v1/destinations/{vonage['id']}", headers=admin, json={"template": (
        '{"x": {{ params.api_secret | sms_b64 | tojson }}, "y": {{ params.api_secret | reverse | tojson }}}')})
    assert patched.status_code == 200, patched.get_json()
    tried = client.post(f"/v1/destinations/{vonage['id']}/test", headers=admin)
    assert tried.status_code == 200, tried.get_json()
    shown = json.dumps(tried.get_json())
    for form in (secret, base64.b64encode(secret.encode()).decode(), secret[::-1]):
        assert form not in shown
    body = urllib.parse.parse_qs(tried.get_json()["request"]["body"])
    assert set(body) == {"x", "y"}  # rendered, with the secret masked before the filters ran


def test_trying_a_destination_masks_a_header_that_names_a_secret_in_brackets(client, admin):
    """Regression: /test showed a secret that a header took as ``params['x']``."""
    saved = client.post("/v1/presets", headers=admin, json={
        "name": "acme.key", "base_url": "https://acme.example",
        "headers": {"X-Api-Key": "{{ params['api_key'] }}"},
        "params": [{"name": "api_key", "secret": True, "required": True}]})
    assert saved.status_code == 201, saved.get_json()
    keyed = created(client, admin, {"preset": "acme.key", "params": {"api_key": "acme-SECRET-key-77"}})
    tried = client.post(f"/v1/destinations/{keyed['id']}/test", headers=admin).get_json()
    assert tried["request"]["headers"]["X-Api-Key"] == MASK
    assert "acme-SECRET-key-77" not in json.dumps(tried)


def test_trying_a_get_form_destination_sends_what_a_worker_sends(client, admin, answering, make_source, post_events,
                                                                 work):
    """Regression: a GET + form trial did not send what a worker sends."""
    vonage = answering(lambda r: Reply(200, VONAGE_OK))
    made = created(client, admin, {"preset": "sms.vonage", "method": "GET",
                                   "params": {**VONAGE, "url": vonage.url}})
    event = {"name": "order", "profile": {"phone": PHONE}}
    tried = client.post(f"/v1/destinations/{made['id']}/test", headers=admin,
                        json={"send": True, "event": event})
    assert tried.status_code == 200, tried.get_json()
    shown = tried.get_json()
    assert shown["request"]["method"] == "GET" and shown["request"]["body"] is None
    assert "Content-Type" not in shown["request"]["headers"]
    assert "to=15555550100" in shown["request"]["url"] and VONAGE["api_secret"] not in json.dumps(shown)
    assert shown["response"]["outcome"] == "delivered"

    source, key = make_source()
    assert post_events(source, key, {"name": "order", "profile": {"phone": PHONE}}).status_code == 202
    work()
    trial, worker = vonage.requests
    for sent in (trial, worker):
        assert sent.method == "GET" and sent.body == b"" and sent.header("Content-Type") is None
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(sent.path).query)
        assert query["api_secret"] == [VONAGE["api_secret"]] and query["to"] == ["15555550100"]
    trial_query = urllib.parse.parse_qs(urllib.parse.urlsplit(trial.path).query)
    worker_query = urllib.parse.parse_qs(urllib.parse.urlsplit(worker.path).query)
    assert set(trial_query) == set(worker_query) and trial_query["client-ref"] == [shown["event"]["id"]]
