"""Regression tests for the preset/plugin review: one test per confirmed bug, against the real app,
the real store, real HTTP receivers and the real in-process RQ worker.

1 a user preset's secret parameter with a default · 2 /test showing a secret transformed by a template
or put in a header by ``params['x']`` · 3 a receiver echoing the request into logs and answers ·
4 urllib3's DEBUG request line showing a secret path · 5 a new ``params.url`` keeping the secrets ·
6 GET + form logging a secret in the attempt's URL · 7 a ``number`` param · 8 minimum/maximum on a
string param · 9 a preset path that does not render · 10 a string ``batch_size`` · 11 an imported auth
profile whose type is not a string · 12 a plugin blocked after its destinations were made · 13 a
plugin verdict hookgate cannot act on · 14 per-message verdicts outside a batch · 15 PATCH of a batch
preset destination's size · 16 /test send of a GET + form destination.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
import urllib.parse

import pytest

from hookgate import create_app, runtime
from hookgate.delivery.worker import run_burst
from hookgate.hookspecs import hookimpl
from hookgate.plugins import load
from hookgate.presets import MASK, Param, Preset, Verdict

from .receiver import Reply

PHONE = "+15555550100"
CM_TOKEN = "0b9c1d2e-CM-TOKEN-7e8f9a0b1c2d"
VONAGE = {"api_key": "k1234567", "api_secret": "vonage-s3cret-42", "from": "Shop"}
VONAGE_OK = json.dumps({"message-count": "1", "messages": [{"to": "15555550100", "status": "0"}]}).encode()




def created(client, admin, body: dict) -> dict:
    response = client.post("/v1/destinations", headers=admin, json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def deliveries(client, admin, destination_id: str) -> list[dict]:
    """The destination's deliveries, each with its attempt log."""
    items = client.get(f"/v1/deliveries?destination_id={destination_id}", headers=admin).get_json()["items"]
    return [client.get(f"/v1/deliveries/{item['id']}", headers=admin).get_json() for item in items]


def cm_accepts(request) -> Reply:
    """CM.com's answer: every message of the request Accepted, under its reference."""
    messages = json.loads(request.body)["messages"]["msg"]
    return Reply(200, json.dumps({"details": "Created 1 message(s)", "errorCode": 0, "messages": [
        {"to": m["to"][0]["number"], "status": "Accepted", "reference": m["reference"], "parts": 1,
         "messageDetails": None, "messageErrorCode": 0} for m in messages]}).encode())


# 1 -----------------------------------------------------------------------------------------------------

class SecretDefault:
    """A plugin preset whose secret parameter has a default: GET /v1/presets/<name> must not show it."""

    @hookimpl
    def register_presets(self, register):
        register(Preset(name="acme.defaulted", title="d", base_url="https://acme.example",
                        params=[Param("token", secret=True, default="plugin-default-s3cret"),
                                Param("region", default="eu")]))


def test_1_a_secret_param_s_default_is_refused_and_never_shown(settings, client, admin, db):
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


# 2 -----------------------------------------------------------------------------------------------------

def test_2_the_test_endpoint_never_shows_a_secret_transformed_by_the_template(client, admin):
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


def test_2_the_test_endpoint_masks_a_header_that_names_a_secret_in_brackets(client, admin):
    saved = client.post("/v1/presets", headers=admin, json={
        "name": "acme.key", "base_url": "https://acme.example",
        "headers": {"X-Api-Key": "{{ params['api_key'] }}"},
        "params": [{"name": "api_key", "secret": True, "required": True}]})
    assert saved.status_code == 201, saved.get_json()
    keyed = created(client, admin, {"preset": "acme.key", "params": {"api_key": "acme-SECRET-key-77"}})
    tried = client.post(f"/v1/destinations/{keyed['id']}/test", headers=admin).get_json()
    assert tried["request"]["headers"]["X-Api-Key"] == MASK
    assert "acme-SECRET-key-77" not in json.dumps(tried)


# 3 -----------------------------------------------------------------------------------------------------

def test_3_a_receiver_that_echoes_the_request_does_not_put_the_secret_in_logs_or_answers(
        client, admin, answering, make_source, post_events, work):
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


# 4 -----------------------------------------------------------------------------------------------------

def test_4_urllib3_s_debug_request_line_does_not_show_a_secret_path(
        client, admin, answering, make_source, post_events, work, caplog):
    hook_secret = "ZZsecretHOOKpath9876"
    slack = answering(lambda r: Reply(200, b"ok", {"Content-Type": "text/plain"}))
    created(client, admin, {"preset": "slack.message", "params": {
        "webhook_url": f"https://hooks.slack.com/services/T0/B0/{hook_secret}", "url": slack.url}})
    source, key = make_source()
    caplog.set_level(logging.DEBUG)
    assert post_events(source, key, {"name": "x"}).status_code == 202
    work()
    assert [r.path for r in slack.requests] == [f"/services/T0/B0/{hook_secret}"]
    request_lines = [r.getMessage() for r in caplog.records
                     if r.name == "urllib3.connectionpool" and f"127.0.0.1:{slack.port}" in r.getMessage()
                     and '"POST ' in r.getMessage()]
    assert request_lines, "urllib3 logged no request line"
    assert not [m for m in (r.getMessage() for r in caplog.records) if hook_secret in m]


# 5 -----------------------------------------------------------------------------------------------------

def test_5_a_new_params_url_must_be_given_the_secrets_again(client, admin, answering):
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


# 6 -----------------------------------------------------------------------------------------------------

def test_6_a_get_form_preset_destination_does_not_log_its_secret_in_the_attempt_url(
        client, admin, answering, make_source, post_events, work):
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


# 7 -----------------------------------------------------------------------------------------------------

def test_7_a_number_param(client, admin):
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


# 8 -----------------------------------------------------------------------------------------------------

def test_8_minimum_on_a_string_param_does_not_break_its_destinations(client, admin):
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


# 9 -----------------------------------------------------------------------------------------------------

def test_9_a_preset_path_that_does_not_render_is_a_422(client, admin):
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


# 10 ----------------------------------------------------------------------------------------------------

def test_10_a_string_batch_size_param_is_a_422(client, admin):
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


# 11 ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [["basic"], {"basic": True}])
def test_11_an_imported_auth_profile_whose_type_is_not_a_string_is_a_422(client, admin, kind):
    profile = client.post("/v1/auth-profiles", headers=admin, json={
        "name": "b", "type": "basic", "endpoint_prefix": "https://x.example/basic", "username": "u",
        "password": "p4ssword"})
    assert profile.status_code == 201, profile.get_json()
    document = client.get("/v1/export", headers=admin).get_json()
    document["auth_profiles"][0]["type"] = kind
    refused = client.post("/v1/import", headers=admin, json=document)
    assert refused.status_code == 422, (refused.status_code, refused.get_json())
    assert "type" in json.dumps(refused.get_json()["error"]["details"])


# 12 ----------------------------------------------------------------------------------------------------

def test_12_a_plugin_blocked_after_its_destinations_were_made_ends_their_deliveries_with_the_reason(
        settings, client, admin, answering, make_source):
    sms = answering(lambda r: Reply(200, VONAGE_OK))
    vonage = created(client, admin, {"preset": "sms.vonage", "params": {**VONAGE, "url": sms.url}})
    cm = created(client, admin, {"preset": "sms.cm", "params": {
        "product_token": CM_TOKEN, "sender": "Shop", "url": sms.url, "batch_size": 1}})
    source, key = make_source()
    # the instance restarts with the sms plugin blocked
    app = create_app(dataclasses.replace(settings, blocked_plugins=("sms",)))
    rt = app.extensions["hookgate"]
    try:
        runtime.install(rt)
        blocked = app.test_client()
        posted = blocked.post(f"/v1/sources/{source}/events", headers={"X-Hookgate-Key": key},
                              json={"name": "order", "profile": {"phone": PHONE}})
        assert posted.status_code == 202
        run_burst(rt, max_rounds=20)
        assert sms.requests == []
        for made in (vonage, cm):
            [delivery] = deliveries(blocked, admin, made["id"])
            assert delivery["status"] == "error", delivery
            assert "template does not compile" in delivery["last_error"], delivery["last_error"]
            assert "No filter named 'sms_" in delivery["last_error"], delivery["last_error"]
            assert [a["outcome"] for a in delivery["attempt_log"]] == ["error"]
        assert rt.queue.failed_job_registry.count == 0
        tried = blocked.post(f"/v1/destinations/{vonage['id']}/test", headers=admin)
        assert tried.status_code == 200, tried.get_data(as_text=True)
        assert tried.get_json()["error"]["code"] == "render_failed"
        assert "No filter named 'sms_" in tried.get_json()["error"]["message"]
    finally:
        runtime.install(None)
        load()


# 13 ----------------------------------------------------------------------------------------------------

class Careless:
    """A third-party plugin whose batch preset answers with verdicts hookgate cannot act on."""

    def __init__(self, verdict):
        self.verdict = verdict

    @hookimpl
    def register_presets(self, register):
        register(Preset(name="careless.batch", title="c", base_url="https://example.com",
                        batch={"size": 1, "max_wait_s": 0}))

    @hookimpl
    def classify_response(self, preset, response, references):
        if preset.name == "careless.batch":
            return self.verdict(references)


@pytest.fixture
def careless(settings, admin, answering):
    """Deliver one event through ``careless.batch`` with a plugin answering ``verdict(references)``;
    returns the delivery, the number of requests the receiver got, and the failed jobs."""
    receiver = answering(lambda r: Reply(200, b'{"ok": true}'))
    app = create_app(settings)
    rt = app.extensions["hookgate"]

    def deliver(verdict):
        rt.plugins = load((), (Careless(verdict),))
        runtime.install(rt)
        client = app.test_client()
        made = created(client, admin, {"preset": "careless.batch", "params": {"url": receiver.url}})
        source = client.post("/v1/sources", headers=admin, json={"name": "s"}).get_json()
        client.post(f"/v1/sources/{source['id']}/events", headers={"X-Hookgate-Key": source["key"]},
                    json={"name": "x"})
        run_burst(rt)
        [delivery] = deliveries(client, admin, made["id"])
        return delivery, len(receiver.requests), rt.queue.failed_job_registry.count

    try:
        yield deliver
    finally:
        runtime.install(None)
        load()


@pytest.mark.parametrize("verdict", [
    lambda refs: Verdict("bounced", reason="throttled", retry_after_s="30"),
    lambda refs: Verdict("delivered", items={ref: "Accepted" for ref in refs}),
    lambda refs: Verdict("error", reason=["not", "text"]),
], ids=["retry_after_s-as-text", "items-not-verdicts", "reason-not-text"])
def test_13_a_plugin_verdict_hookgate_cannot_act_on_falls_back_to_the_status_code(careless, verdict):
    delivery, requests, failed_jobs = careless(verdict)
    assert delivery["status"] == "delivered", delivery
    assert [a["outcome"] for a in delivery["attempt_log"]] == ["delivered"]
    assert requests == 1 and failed_jobs == 0


def test_13_a_batch_whose_outcome_cannot_be_recorded_ends_and_is_not_sent_again(careless):
    """A verdict that cannot be stored (its reason is no string) never leaves its batch leased to be
    sent again, whichever of the verdict check and the batch's guard catches it."""
    delivery, requests, failed_jobs = careless(lambda refs: Verdict("delivered", reason=["not", "text"]))
    assert delivery["status"] in ("delivered", "error"), delivery  # settled, not leased to be sent again
    assert len(delivery["attempt_log"]) == 1 and delivery["next_attempt_at"] is None
    assert requests == 1 and failed_jobs == 0


def test_13_a_plugin_verdict_s_retry_delay_is_capped_at_a_day_like_retry_after(careless):
    before = int(time.time() * 1000)
    delivery, requests, _ = careless(lambda refs: Verdict("bounced", reason="later", retry_after_s=1e300))
    assert delivery["status"] == "bounced" and "later" in delivery["last_error"] and requests == 1
    assert before + 86_000_000 <= delivery["next_attempt_at"] <= int(time.time() * 1000) + 86_400_000



# 14 ----------------------------------------------------------------------------------------------------

def test_14_per_message_verdicts_apply_to_a_single_delivery(
        client, admin, answering, make_source, post_events, work):
    cm = answering(cm_accepts)
    single = created(client, admin, {"preset": "sms.cm", "batch": None, "params": {
        "product_token": CM_TOKEN, "sender": "Shop", "url": cm.url}, "template": (
        '{"messages": {"authentication": {"producttoken": {{ params.product_token | tojson }}}, "msg": [{'
        '"from": {{ params.sender | tojson }}, "to": [{"number": {{ event | sms_phone("00") | tojson }}}], '
        '"body": {"type": "auto", "content": {{ event | sms_text | tojson }}}, '
        '"reference": {{ event.id | sms_reference | tojson }}}]}}')})
    assert single["batch"] is None
    source, key = make_source()
    assert post_events(source, key, {"name": "x", "profile": {"phone": PHONE}}).status_code == 202
    work()
    assert len(cm.requests) == 1
    [delivery] = deliveries(client, admin, single["id"])
    assert delivery["status"] == "delivered", delivery
    assert [(a["outcome"], a["error"]) for a in delivery["attempt_log"]] == [("delivered", None)]


def test_14_per_message_verdicts_apply_to_a_test_send(client, admin, answering):
    cm = answering(cm_accepts)
    batch = created(client, admin, {"preset": "sms.cm", "params": {"product_token": CM_TOKEN, "sender": "Shop",
                                                                   "url": cm.url}})
    tried = client.post(f"/v1/destinations/{batch['id']}/test", headers=admin, json={"send": True}).get_json()
    assert len(cm.requests) == 1
    assert json.loads(tried["response"]["body"])["messages"][0]["status"] == "Accepted"
    assert tried["response"]["outcome"] == "delivered" and tried["response"]["reason"] is None


# 15 ----------------------------------------------------------------------------------------------------

def test_15_patching_the_batch_size_param_changes_the_batch_size(client, admin):
    cm = created(client, admin, {"preset": "sms.cm", "params": {"product_token": CM_TOKEN, "sender": "Shop",
                                                                "batch_size": 100}})
    assert cm["batch"]["size"] == 100
    patched = client.patch(f"/v1/destinations/{cm['id']}", headers=admin, json={"params": {"batch_size": 5}})
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["preset"]["params"]["batch_size"] == 5
    assert patched.get_json()["batch"] == {**cm["batch"], "size": 5}
    assert client.get(f"/v1/destinations/{cm['id']}", headers=admin).get_json()["batch"]["size"] == 5


def test_15_patching_batch_size_keeps_the_preset_s_templates(client, admin):
    cm = created(client, admin, {"preset": "sms.cm", "params": {"product_token": CM_TOKEN, "sender": "Shop"}})
    assert cm["batch"]["root_template"] and cm["batch"]["item_template"]
    patched = client.patch(f"/v1/destinations/{cm['id']}", headers=admin, json={"batch": {"size": 7}})
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["batch"] == {**cm["batch"], "size": 7}
    tried = client.post(f"/v1/destinations/{cm['id']}/test", headers=admin).get_json()
    body = json.loads(tried["request"]["body"])  # still CM's request, not hookgate's default batch body
    assert body["messages"]["authentication"]["producttoken"] != CM_TOKEN
    assert [m["to"] for m in body["messages"]["msg"]] == [[{"number": "0015555550100"}]]


# 16 ----------------------------------------------------------------------------------------------------

def test_16_test_send_of_a_get_form_destination_sends_what_a_worker_sends(
        client, admin, answering, make_source, post_events, work):
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
