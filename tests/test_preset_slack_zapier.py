"""The Slack presets (incoming webhook, chat.postMessage) and the Zapier catch hook, end to end: a
destination made with ``POST /v1/destinations {"preset": ...}`` whose ``params.url`` points at a
local receiver, an event, the real worker; then what the receiver got, what the API shows (never a
secret), and how each of the destinations' documented answers is recorded."""

from __future__ import annotations

import json

import pytest

from hookgate.presets import MASK
from hookgate.store import now_ms

from .receiver import Receiver, Reply

HOOK_SECRET = "T0001/B0002/hookSECRETslack0123456789"
SLACK_HOOK = f"https://hooks.slack.com/services/{HOOK_SECRET}"
BOT_TOKEN = "xoxb-1111-2222-botSECRETtoken987654"
ZAP_SECRET = "123456/zapSECRET42"
ZAP_HOOK = f"https://hooks.zapier.com/hooks/catch/{ZAP_SECRET}/?source=crm"


@pytest.fixture
def answering(answering):
    """Receivers that give one scripted answer to every request."""
    def make(status: int = 200, body: bytes | str = b"ok", headers: dict | None = None,
             content_type: str = "text/plain") -> Receiver:
        raw = body.encode() if isinstance(body, str) else body
        return answering(Reply(status, raw, {"Content-Type": content_type, **(headers or {})}))

    return make




@pytest.fixture
def deliver(client, admin, make_source, post_events, work):
    """Post one event, run the worker, and return its delivery as ``GET /v1/deliveries/<id>`` shows it."""
    source_id, key = make_source()

    def send(event: dict) -> dict:
        answer = post_events(source_id, key, event)
        assert answer.status_code in (200, 201, 202), answer.get_json()
        event_id = answer.get_json()["ids"][0]
        work()
        [item] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
        return client.get(f"/v1/deliveries/{item['id']}", headers=admin).get_json()

    return send


def assert_no_secret(shown, *secrets: str) -> None:
    text = json.dumps(shown, ensure_ascii=False)
    for secret in secrets:
        assert secret not in text


def slack_hook(url: str, **params) -> dict:
    return {"webhook_url": SLACK_HOOK, "url": url, **params}


def bot(url: str, **params) -> dict:
    return {"bot_token": BOT_TOKEN, "channel": "C0123456789", "url": url, **params}


# -- slack.message ----------------------------------------------------------------------------------

def test_slack_message_posts_to_the_hooks_secret_path_and_never_shows_it(client, admin, answering,
                                                                          preset_destination, deliver):
    slack = answering(200, "ok")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"block {n}"}} for n in range(50)]
    attachments = [{"text": f"a{n}"} for n in range(100)]
    params = slack_hook(slack.url, username="Shop bot", icon_emoji=":bell:", blocks=blocks,
                        attachments=attachments)
    created = preset_destination("slack.message", params)
    assert created["preset"]["params"]["webhook_url"] == MASK
    assert created["url"] == f"{slack.url}/xxxxxx"
    shown = client.get(f"/v1/destinations/{created['id']}", headers=admin).get_json()
    assert_no_secret(created, HOOK_SECRET)
    assert_no_secret(shown, HOOK_SECRET)

    delivery = deliver({"name": "order.paid", "user_id": "u-1",
                        "data": {"message": "<!channel> paid 5 < 6 & <https://evil.example|click>"}})
    [request] = slack.requests
    assert request.method == "POST"
    assert request.path == f"/services/{HOOK_SECRET}"  # the secret path, kept under the replaced base
    assert request.header("Content-Type").startswith("application/json")
    assert request.header("Authorization") is None
    assert json.loads(request.body) == {
        # the event's values are escaped: no @channel ping, no forged link
        "text": "*order.paid* for u-1: &lt;!channel&gt; paid 5 &lt; 6 &amp; "
                "&lt;https://evil.example|click&gt;",
        "username": "Shop bot",
        "icon_emoji": ":bell:",
        "blocks": blocks,  # Slack takes at most 50 blocks (51 is refused when saved)
        "attachments": attachments,  # and 100 attachments
    }
    assert delivery["status"] == "delivered" and delivery["last_error"] is None
    [attempt] = delivery["attempt_log"]
    assert attempt["url"] == f"{slack.url}/xxxxxx" and attempt["outcome"] == "delivered"
    assert_no_secret(delivery, HOOK_SECRET)


def test_slack_message_text_is_cut_to_40000_characters_and_optional_fields_are_left_out(
        answering, preset_destination, deliver):
    slack = answering(200, "ok")
    preset_destination("slack.message", slack_hook(slack.url))
    delivery = deliver({"name": "report", "anonymous_id": "anon-7", "data": {"message": "x" * 45000}})
    assert delivery["status"] == "delivered"
    body = json.loads(slack.requests[0].body)
    assert list(body) == ["text"]  # no username/icon/blocks/attachments: not null, absent
    assert len(body["text"]) == 40000
    assert body["text"].startswith("*report* for anon-7: xxx") and body["text"].endswith("x…")


@pytest.mark.parametrize("status, code", [
    (400, "invalid_payload"), (400, "no_text"), (400, "invalid_blocks"),
    (403, "action_prohibited"), (403, "invalid_token"),
    (404, "channel_not_found"), (404, "no_service"),
])
def test_slack_message_refusals_are_errors_with_slacks_code(status, code, answering, preset_destination,
                                                            deliver):
    slack = answering(status, code)
    preset_destination("slack.message", slack_hook(slack.url))
    delivery = deliver({"name": "x", "user_id": "u"})
    assert delivery["status"] == "error"
    assert delivery["last_error"] == f"slack: {code}"
    assert delivery["next_attempt_at"] is None  # not retried
    assert delivery["attempt_log"][0]["status_code"] == status
    assert len(slack.requests) == 1


def test_slack_message_rollup_error_is_retried(answering, preset_destination, deliver):
    slack = answering(500, "rollup_error")
    preset_destination("slack.message", slack_hook(slack.url))
    before = now_ms()
    delivery = deliver({"name": "x"})
    assert delivery["status"] == "bounced" and delivery["last_error"] == "slack: rollup_error"
    assert delivery["next_attempt_at"] > before


def test_slack_message_429_waits_for_retry_after(answering, preset_destination, deliver):
    slack = answering(429, "rate_limited", {"Retry-After": "30"})
    preset_destination("slack.message", slack_hook(slack.url))
    before = now_ms()
    delivery = deliver({"name": "x"})
    assert delivery["status"] == "bounced" and delivery["last_error"] == "slack: rate_limited"
    assert delivery["next_attempt_at"] >= before + 29_000
    assert len(slack.requests) == 1  # not sent again before then


def test_slack_message_archived_channel_disables_the_destination(client, admin, answering, preset_destination,
                                                                 deliver):
    slack = answering(410, "channel_is_archived")
    created = preset_destination("slack.message", slack_hook(slack.url))
    delivery = deliver({"name": "x"})
    assert delivery["status"] == "error" and delivery["last_error"] == "slack: channel_is_archived"
    assert delivery["next_attempt_at"] is None
    shown = client.get(f"/v1/destinations/{created['id']}", headers=admin).get_json()
    assert shown["enabled"] is False and shown["disabled_reason"] == "gone"


# -- slack.chat_post_message ------------------------------------------------------------------------

def test_chat_post_message_sends_the_bot_token_and_never_shows_it(client, admin, answering,
                                                                  preset_destination, deliver):
    slack = answering(200, '{"ok": true, "channel": "C0123456789", "ts": "1503435956.000247"}',
                      content_type="application/json")
    params = bot(slack.url, username="Shop", icon_emoji=":tada:", blocks=[{"type": "divider"}])
    created = preset_destination("slack.chat_post_message", params)
    assert created["preset"]["params"]["bot_token"] == MASK
    assert created["preset"]["params"]["channel"] == "C0123456789"
    shown = client.get(f"/v1/destinations/{created['id']}", headers=admin).get_json()
    assert_no_secret(created, BOT_TOKEN, "botSECRET")
    assert_no_secret(shown, BOT_TOKEN, "botSECRET")

    delivery = deliver({"name": "signup", "user_id": "u-9", "data": {"plan": "pro"}})
    [request] = slack.requests
    assert request.method == "POST" and request.path == "/api/chat.postMessage"
    assert request.header("Authorization") == f"Bearer {BOT_TOKEN}"
    # the preset's own Content-Type wins over the format's: Slack's Web API warns without a charset
    assert request.header("Content-Type") == "application/json; charset=utf-8"
    assert json.loads(request.body) == {"channel": "C0123456789", "text": "*signup* for u-9",
                                        "username": "Shop", "icon_emoji": ":tada:",
                                        "blocks": [{"type": "divider"}]}
    assert delivery["status"] == "delivered"
    assert delivery["attempt_log"][0]["url"] == f"{slack.url}/api/chat.postMessage"
    assert_no_secret(delivery, BOT_TOKEN, "botSECRET")


@pytest.mark.parametrize("code", ["channel_not_found", "not_in_channel", "invalid_auth", "not_authed",
                                  "token_revoked", "account_inactive"])
def test_chat_post_message_ok_false_in_a_200_is_an_error(code, answering, preset_destination, deliver):
    slack = answering(200, json.dumps({"ok": False, "error": code}), content_type="application/json")
    preset_destination("slack.chat_post_message", bot(slack.url))
    delivery = deliver({"name": "x"})
    assert delivery["status"] == "error" and delivery["last_error"] == f"slack: {code}"
    assert delivery["next_attempt_at"] is None
    assert_no_secret(delivery, BOT_TOKEN)


@pytest.mark.parametrize("status, body", [
    (200, '{"ok": false, "error": "ratelimited"}'),  # Slack's Web API says so in a 200 ...
    (429, '{"ok": false, "error": "ratelimited"}'),  # ... or with the status
])
def test_chat_post_message_rate_limit_waits_for_retry_after(status, body, answering, preset_destination,
                                                            deliver):
    slack = answering(status, body, {"Retry-After": "30"}, content_type="application/json")
    preset_destination("slack.chat_post_message", bot(slack.url))
    before = now_ms()
    delivery = deliver({"name": "x"})
    assert delivery["status"] == "bounced" and delivery["last_error"] == "slack: ratelimited"
    assert delivery["next_attempt_at"] >= before + 29_000


@pytest.mark.parametrize("status, body, reason", [
    (200, '{"ok": false, "error": "internal_error"}', "slack: internal_error"),
    (503, "upstream unavailable", "slack: upstream unavailable"),
])
def test_chat_post_message_transient_failures_are_retried(status, body, reason, answering, preset_destination,
                                                          deliver):
    slack = answering(status, body, content_type="application/json")
    preset_destination("slack.chat_post_message", bot(slack.url))
    before = now_ms()
    delivery = deliver({"name": "x"})
    assert delivery["status"] == "bounced" and delivery["last_error"] == reason
    assert delivery["next_attempt_at"] > before


# -- zapier.catch_hook ------------------------------------------------------------------------------

def test_zapier_gets_the_event_flat_on_the_hooks_path(client, admin, answering, preset_destination, deliver):
    zapier = answering(200, '{"attempt": "a-1", "id": "i-1", "request_id": "r-1", "status": "success"}',
                       content_type="application/json")
    created = preset_destination("zapier.catch_hook", {"hook_url": ZAP_HOOK, "url": zapier.url})
    assert created["preset"]["params"]["hook_url"] == MASK
    shown = client.get(f"/v1/destinations/{created['id']}", headers=admin).get_json()
    assert_no_secret(created, ZAP_SECRET)
    assert_no_secret(shown, ZAP_SECRET)

    delivery = deliver({"name": "lead", "user_id": "u-3", "profile": {"email": "a@example.com"},
                        "data": {"deal": {"id": 7, "tags": ["x", "y"]}}})
    [request] = zapier.requests
    assert request.method == "POST" and request.path == f"/hooks/catch/{ZAP_SECRET}/?source=crm"
    assert request.header("Content-Type").startswith("application/json")
    body = json.loads(request.body)
    assert {k: body[k] for k in ("name", "user_id", "profile.email", "data.deal.id", "data.deal.tags.0",
                                 "data.deal.tags.1")} == {"name": "lead", "user_id": "u-3",
                                                          "profile.email": "a@example.com", "data.deal.id": 7,
                                                          "data.deal.tags.0": "x", "data.deal.tags.1": "y"}
    assert body["id"] == delivery["event_id"]
    assert not any(isinstance(v, (dict, list)) and v for v in body.values())  # flat
    assert delivery["status"] == "delivered"
    assert delivery["attempt_log"][0]["url"] == f"{zapier.url}/xxxxxx"
    assert_no_secret(delivery, ZAP_SECRET)


def test_zapier_a_2xx_without_success_is_an_error(answering, preset_destination, deliver):
    zapier = answering(200, '{"status": "failure"}', content_type="application/json")
    preset_destination("zapier.catch_hook", {"hook_url": ZAP_HOOK, "url": zapier.url})
    delivery = deliver({"name": "x"})
    assert delivery["status"] == "error" and delivery["last_error"] == "zapier: status 'failure'"
    assert delivery["next_attempt_at"] is None


def test_zapier_429_without_retry_after_backs_off(answering, preset_destination, deliver):
    zapier = answering(429, '{"status": "throttled"}', content_type="application/json")
    preset_destination("zapier.catch_hook", {"hook_url": ZAP_HOOK, "url": zapier.url})
    before = now_ms()
    delivery = deliver({"name": "x"})
    # hookgate's rule: a 429 is an error that is retried later (no Retry-After: the retry schedule)
    assert delivery["status"] == "error" and delivery["next_attempt_at"] > before
    assert len(zapier.requests) == 1


# -- the presets in the API -------------------------------------------------------------------------

@pytest.mark.parametrize("name, secret, required", [
    ("slack.message", "webhook_url", {"webhook_url"}),
    ("slack.chat_post_message", "bot_token", {"bot_token", "channel"}),
    ("zapier.catch_hook", "hook_url", {"hook_url"}),
])
def test_presets_show_their_params_and_a_rendered_example(name, secret, required, client, admin):
    listed = client.get("/v1/presets", headers=admin).get_json()["items"]
    assert name in [p["name"] for p in listed]
    shown = client.get(f"/v1/presets/{name}", headers=admin).get_json()
    params = {p["name"]: p for p in shown["params"]}
    assert {n for n, p in params.items() if p["required"]} == required
    assert {n for n, p in params.items() if p["secret"]} == {secret}
    assert params["url"]["type"] == "url" and params["url"]["default"] == shown["base_url"]
    assert all({"type", "required", "secret", "default"} <= set(p) for p in params.values())
    example = shown["example"]
    assert "error" not in example, example
    assert example["params"][secret] == MASK
    assert example["url"].startswith(shown["base_url"])
    body = example["body"]
    if name.startswith("slack."):
        assert body["text"] == "*order_completed* for user_123: Your order A-1001 is on its way."
        assert "null" not in json.dumps(body)  # optional fields are left out, not sent as null
    else:
        assert body["data.order_id"] == "A-1001" and body["profile.email"] == "jane.doe@example.com"
    if name == "slack.chat_post_message":
        assert body["channel"] == "C0123456789"
        assert example["headers"] == {"Authorization": MASK, "Content-Type": "application/json; charset=utf-8"}
        assert example["url"] == "https://slack.com/api/chat.postMessage"
    # the example request masks even the example's secrets (example_params are shown as such, on their own)
    assert_no_secret(example, "XXXXXXXXXXXXXXXXXXXXXXXX", "abcdef")


def test_slack_types_are_documented(client, admin):
    shown = client.get("/v1/presets/slack.message", headers=admin).get_json()
    params = {p["name"]: p for p in shown["params"]}
    assert params["webhook_url"]["type"] == "url" and params["webhook_url"]["default"] is None
    assert params["blocks"]["type"] == "list" and params["attachments"]["type"] == "list"
    assert params["username"]["required"] is False and params["icon_url"]["type"] == "url"


@pytest.mark.parametrize("name, params, missing", [
    ("slack.message", {}, {"webhook_url"}),
    ("slack.chat_post_message", {"channel": "C1"}, {"bot_token"}),
    ("slack.chat_post_message", {}, {"bot_token", "channel"}),
    ("zapier.catch_hook", {}, {"hook_url"}),
])
def test_a_missing_required_param_is_a_422_naming_it(name, params, missing, client, admin):
    response = client.post("/v1/destinations", json={"preset": name, "params": params, "events": ["*"]},
                           headers=admin)
    assert response.status_code == 422
    assert set(response.get_json()["error"]["details"]["params"]) == missing


def test_bad_param_values_are_refused(client, admin):
    for params, field in (({"webhook_url": "not a url"}, "webhook_url"),
                          ({"webhook_url": SLACK_HOOK, "blocks": {"type": "divider"}}, "blocks"),
                          ({"webhook_url": SLACK_HOOK, "username": "n" * 81}, "username"),
                          ({"webhook_url": SLACK_HOOK, "blocks": [{"type": "divider"}] * 51}, "blocks"),
                          ({"webhook_url": SLACK_HOOK, "attachments": [{"text": "a"}] * 101}, "attachments")):
        response = client.post("/v1/destinations", json={"preset": "slack.message", "params": params,
                                                         "events": ["*"]}, headers=admin)
        assert response.status_code == 422, params
        details = response.get_json()["error"]["details"]["params"]
        assert set(details) == {field}
        assert_no_secret(response.get_json(), HOOK_SECRET)
