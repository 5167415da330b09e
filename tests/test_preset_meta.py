"""Meta presets: Conversions API (hashing, batching, stale events), WhatsApp text and template
messages, Messenger; each against a local receiver answering as Meta's Graph API does."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import urllib.parse

import pytest

from hookgate.builtin_plugins import meta
from hookgate.delivery.http import Response
from hookgate.store import now_ms

from .receiver import Receiver, Reply

TOKEN = "EAAB/tok+en=secret"  # characters that must be URL-encoded in a query string
PIXEL = "123456789012345"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def graph_error(code: int, message: str = "boom", status: int = 400, subcode: int | None = None,
                headers: dict | None = None) -> Reply:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbC123"}
    if subcode:
        error["error_subcode"] = subcode
    return Reply(status, json.dumps({"error": error}).encode(), {"Content-Type": "application/json", **(headers or {})})






def deliveries(client, admin, destination_id: str) -> list[dict]:
    return client.get(f"/v1/deliveries?destination_id={destination_id}&limit=200", headers=admin).get_json()["items"]


def delivery_of(client, admin, event_id: str) -> dict:
    [item] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    return client.get(f"/v1/deliveries/{item['id']}", headers=admin).get_json()


# -- hashing: Meta's published vectors and the normalisation rules --------------------------------

def test_meta_published_hash_vectors():
    assert meta.meta_hash("John_Smith@gmail.com", "em") == \
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    assert meta.meta_normalize("(650)555-1212", "ph", "US") == "16505551212"
    assert meta.meta_hash("(650)555-1212", "ph", "US") == \
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    assert meta.meta_hash("+1 (650) 555-1212", "ph") == \
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    assert meta.meta_hash("Mary", "fn") == "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"


@pytest.mark.parametrize("kind, value, country, expected", [
    ("em", "  John_Smith@GMAIL.com ", None, "john_smith@gmail.com"),
    ("em", "not an email", None, None),
    ("ph", "(650)555-1212", None, "6505551212"),  # no country known: digits as written
    ("ph", "1-650-555-1212", "us", "16505551212"),  # already has its country code
    ("ph", "+44 (0)20 7946 0000", None, "442079460000"),
    ("ph", "0044 20 7946 0000", None, "442079460000"),
    ("ph", "020 7946 0000", "GB", "442079460000"),  # national trunk 0 dropped, code added
    ("ph", "06 1234 5678", "IT", "390612345678"),  # Italy keeps the 0
    ("ph", "+٩٧١ ٥٠ ١٢٣ ٤٥٦٧", None, "971501234567"),  # Arabic-Indic digits
    ("fn", " O'Brien-Smith ", None, "obriensmith"),
    ("fn", "ZOË", None, "zoë"),
    ("ln", "Mary  Ann", None, "mary ann"),
    ("ge", "Female", None, "f"),
    ("ge", "M", None, "m"),
    ("ge", "other", None, None),
    ("db", "1997-02-16", None, "19970216"),
    ("db", "1997/2/6", None, "19970206"),
    ("db", "19970216", None, "19970216"),
    ("db", "1997-02-16T00:00:00Z", None, "19970216"),
    ("db", "1997-02-30", None, None),
    ("db", "16/02/1997", None, None),  # ambiguous order: not sent rather than wrong
    ("ct", "San Francisco", None, "sanfrancisco"),
    ("ct", "St. Louis", None, "stlouis"),
    ("st", "CA", None, "ca"),
    ("st", "New York", None, "ny"),
    ("zp", "94035-1234", None, "94035"),
    ("zp", "94035", "US", "94035"),
    ("zp", "SW1A 1AA", "GB", "sw1a1aa"),
    ("country", "US", None, "us"),
    ("country", "United Kingdom", None, "gb"),
    ("country", "Atlantis", None, None),
    ("external_id", " User-42 ", None, "user-42"),
])
def test_normalisation(kind, value, country, expected):
    assert meta.meta_normalize(value, kind, country) == expected
    assert meta.meta_hash(value, kind, country) == (sha(expected) if expected else None)


def test_hashes_pass_through_and_clear_fields_are_never_hashed():
    hashed = sha("someone@example.com")
    assert meta.meta_hash(hashed, "em") == hashed
    assert meta.meta_hash(hashed.upper(), "ph") == hashed
    for kind, value in (("client_ip_address", "203.0.113.7"), ("client_user_agent", "Mozilla/5.0 (X11)"),
                        ("fbc", "fb.1.1554763741205.AbCdEf"), ("fbp", "fb.1.1558571054389.1098115397")):
        assert meta.meta_hash(value, kind) == value
    assert meta.meta_hash(["A@x.com", "a@x.com ", "b@x.com"], "em") == [sha("a@x.com"), sha("b@x.com")]
    with pytest.raises(ValueError):
        meta.meta_hash("x", "nope")


def test_user_data_of_an_event():
    event = {
        "user_id": "U-7",
        "profile": {"email": "Jane.Doe@Example.com", "phone": "(650) 555-1212", "first_name": "Jane",
                    "last_name": "Doe-Smith", "gender": "female", "date_of_birth": "1990-07-04",
                    "city": "Palo Alto", "state": "California", "zip_code": "94301-1234", "country": "US",
                    "ip": "203.0.113.7"},
        "data": {"user_agent": "Mozilla/5.0 (X11)", "fbc": "fb.1.1.abc", "fbp": "fb.1.2.def"},
    }
    assert meta.meta_user_data(event) == {
        "em": sha("jane.doe@example.com"), "ph": sha("16505551212"), "fn": sha("jane"), "ln": sha("doesmith"),
        "ge": sha("f"), "db": sha("19900704"), "ct": sha("paloalto"), "st": sha("ca"), "zp": sha("94301"),
        "country": sha("us"), "external_id": sha("u-7"),
        "client_ip_address": "203.0.113.7", "client_user_agent": "Mozilla/5.0 (X11)",
        "fbc": "fb.1.1.abc", "fbp": "fb.1.2.def",
    }
    # phone_country stands in for a missing profile country (phones only, never sent as country)
    assert meta.meta_user_data({"profile": {"phone": "(650)555-1212"}}, "US") == {"ph": sha("16505551212")}


def test_the_filters_serve_any_template(client, admin, make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url, template='{"em": {{ profile.email | meta_hash("em") | tojson }}, '
                                            '"ud": {{ event | meta_user_data | tojson }}}')
    post_events(source_id, key, {"name": "x", "profile": {"email": "John_Smith@gmail.com"}})
    work()
    [request] = receiver.wait_for(1)
    assert json.loads(request.body) == {
        "em": "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
        "ud": {"em": "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"}}


# -- Conversions API ----------------------------------------------------------------------------

def capi_params(url: str, **more) -> dict:
    return {"url": url, "pixel_id": PIXEL, "access_token": TOKEN, **more}


def test_conversions_api_batch_with_hashed_user_data_and_a_stale_event_skipped(
        client, admin, make_source, post_events, preset_destination, answering, work):
    target = answering(Reply(200, b'{"events_received": 2, "messages": [], "fbtrace_id": "AbC"}'))
    destination = preset_destination("meta.conversions", capi_params(target.url, test_event_code="TEST123"),
                                     batch={"max_wait_s": 0})
    shown = json.dumps(destination)
    assert TOKEN not in shown and urllib.parse.quote(TOKEN, safe="") not in shown
    assert destination["url"].endswith(f"/v21.0/{PIXEL}/events?access_token=xxxxxx")
    assert destination["batch"]["size"] == 1000

    source_id, key = make_source()
    fresh = now() - dt.timedelta(minutes=5)
    events = [
        {"name": "Purchase", "user_id": "U1", "time": iso(fresh),
         "profile": {"email": " John_Smith@gmail.com", "phone": "+1 (650) 555-1212", "first_name": "Mary",
                     "ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11)"},
         "data": {"value": 42.5, "currency": "EUR", "order_id": "A-1", "fbp": "fb.1.1558571054389.1098115397",
                  "contents": [{"id": "sku-1", "quantity": 2}]}},
        {"name": "Lead", "user_id": "U2", "time": iso(fresh), "data": {"value": "10"}},
        {"name": "Purchase", "user_id": "U3", "time": iso(now() - dt.timedelta(days=8))},
    ]
    ids = post_events(source_id, key, events).get_json()["ids"]
    work()

    [request] = target.wait_for(1)
    path, _, query = request.path.partition("?")
    assert path == f"/v21.0/{PIXEL}/events" and urllib.parse.parse_qs(query) == {"access_token": [TOKEN]}
    body = json.loads(request.body)
    assert body["test_event_code"] == "TEST123" and len(body["data"]) == 2
    first, second = body["data"]
    assert first == {
        "event_name": "Purchase", "event_time": int(fresh.timestamp()), "event_id": ids[0],
        "action_source": "system_generated",
        "user_data": {
            "em": "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
            "ph": "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176",
            "fn": "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec",
            "external_id": sha("u1"),
            "client_ip_address": "203.0.113.7", "client_user_agent": "Mozilla/5.0 (X11)",
            "fbp": "fb.1.1558571054389.1098115397"},
        "custom_data": {"value": 42.5, "currency": "EUR", "order_id": "A-1",
                        "contents": [{"id": "sku-1", "quantity": 2}]},
    }
    assert second["event_name"] == "Lead" and second["custom_data"] == {"value": 10.0, "currency": "USD"}
    assert second["user_data"] == {"external_id": sha("u2")}

    stale = delivery_of(client, admin, ids[2])
    assert stale["status"] == "skipped" and "older than 7 days" in stale["last_error"]
    assert stale["attempt_log"] == []
    sent = delivery_of(client, admin, ids[0])
    assert sent["status"] == "delivered"
    [attempt] = sent["attempt_log"]
    assert attempt["url"].endswith("access_token=xxxxxx") and TOKEN not in attempt["url"]
    assert urllib.parse.quote(TOKEN, safe="") not in json.dumps(sent)


def test_conversions_api_screens_what_meta_would_refuse(client, admin, make_source, post_events, preset_destination,
                                                        answering, work):
    target = answering(Reply(200, b'{"events_received": 1}'))
    preset_destination("meta.conversions", capi_params(target.url, event_name="Purchase"), batch={"max_wait_s": 0})
    source_id, key = make_source()
    events = [
        {"name": "nobody", "time": iso(now())},  # nothing to match anyone with
        {"name": "web", "user_id": "U1", "time": iso(now()), "data": {"action_source": "website"}},
        {"name": "web-ok", "user_id": "U2", "time": iso(now() + dt.timedelta(seconds=30)),
         "data": {"action_source": "website", "user_agent": "UA/1", "event_source_url": "https://shop.example/x"}},
    ]
    ids = post_events(source_id, key, events).get_json()["ids"]
    work()
    nobody, web, ok = (delivery_of(client, admin, i) for i in ids)
    assert nobody["status"] == "skipped" and "no customer information" in nobody["last_error"]
    assert web["status"] == "skipped" and "client_user_agent and event_source_url" in web["last_error"]
    assert ok["status"] == "delivered"
    [request] = target.wait_for(1)
    [item] = json.loads(request.body)["data"]
    assert item["event_name"] == "Purchase" and item["action_source"] == "website"
    assert item["event_source_url"] == "https://shop.example/x" and "test_event_code" not in json.loads(request.body)


def test_conversions_batch_size_is_at_most_1000_and_1200_events_go_in_two_requests(
        client, admin, make_source, post_events, preset_destination, answering, work):
    for size in (0, 1001):
        response = client.post("/v1/destinations", json={
            "preset": "meta.conversions", "params": capi_params("http://127.0.0.1:9", batch_size=size),
            "events": ["*"]}, headers=admin)
        assert response.status_code == 422 and "batch_size" in json.dumps(response.get_json())
    target = answering(Reply(200, b'{"events_received": 1000}'))
    preset_destination("meta.conversions", capi_params(target.url, batch_size=1000), batch={"max_wait_s": 0})
    source_id, key = make_source()
    stamp = iso(now())
    for part in range(2):
        response = post_events(source_id, key, [{"name": "Purchase", "user_id": f"u{part}-{n}", "time": stamp}
                                                for n in range(600)])
        assert response.status_code in (200, 201, 202)
    work()
    sizes = sorted(len(json.loads(r.body)["data"]) for r in target.wait_for(2))
    assert sizes == [200, 1000]


def test_conversions_api_errors_are_classified_by_graph_code(client, admin, make_source, post_events,
                                                             preset_destination, answering, work):
    usage = json.dumps({"1234": [{"type": "ads_management", "call_count": 100, "estimated_time_to_regain_access": 5}]})
    throttled = answering(graph_error(613, "Calls to this api have exceeded the rate limit.",
                                      headers={"X-Business-Use-Case-Usage": usage}))
    bad_token = answering(graph_error(190, "Error validating access token: Session has expired"))
    first = preset_destination("meta.conversions", capi_params(throttled.url), batch={"max_wait_s": 0},
                               events=["a"])
    second = preset_destination("meta.conversions", capi_params(bad_token.url), batch={"max_wait_s": 0},
                                events=["b"])
    source_id, key = make_source()
    before = now_ms()
    ids = post_events(source_id, key, [{"name": "a", "user_id": "u1", "time": iso(now())},
                                       {"name": "b", "user_id": "u1", "time": iso(now())}]).get_json()["ids"]
    work()
    [retried] = deliveries(client, admin, first["id"])
    assert retried["next_attempt_at"] is not None and retried["status"] not in ("error", "failed", "delivered")
    assert retried["next_attempt_at"] - before >= 300_000  # usage header: 5 minutes to regain access
    assert "code 613" in retried["last_error"] and "exceeded the rate limit" in retried["last_error"]
    [final] = deliveries(client, admin, second["id"])
    assert final["status"] == "error" and final["next_attempt_at"] is None
    assert "code 190" in final["last_error"] and "Session has expired" in final["last_error"]
    assert len(ids) == 2


@pytest.mark.parametrize("preset, status, code, outcome", [
    ("meta.conversions", 400, 4, "bounced"),
    ("meta.conversions", 400, 17, "bounced"),
    ("meta.conversions", 400, 32, "bounced"),
    ("meta.conversions", 500, 1, "bounced"),
    ("meta.conversions", 500, 2, "bounced"),
    ("meta.conversions", 400, 613, "bounced"),
    ("meta.conversions", 400, 100, "error"),
    ("meta.conversions", 401, 190, "error"),
    ("meta.conversions", 403, 200, "error"),  # any other 4xx code: final
    ("meta.conversions", 503, 99999, "bounced"),  # any other 5xx code: retried
    ("meta.whatsapp_text", 400, 130429, "bounced"),
    ("meta.whatsapp_text", 400, 131056, "bounced"),
    ("meta.whatsapp_text", 400, 131047, "error"),
    ("meta.whatsapp_template", 400, 131026, "error"),
    ("meta.whatsapp_template", 400, 4, "bounced"),
    ("meta.messenger", 400, 613, "bounced"),
    ("meta.messenger", 400, 551, "error"),
    ("meta.messenger", 500, 2, "bounced"),
])
def test_graph_error_codes(rt, preset, status, code, outcome):
    body = json.dumps({"error": {"message": "m", "type": "OAuthException", "code": code, "fbtrace_id": "x"}})
    verdict = rt.plugins.classify(rt.plugins.presets[preset], Response(status, body), ["evt_1"])
    assert verdict is not None and verdict.outcome == outcome and f"code {code}: m" in verdict.reason


def test_success_and_foreign_answers_are_left_to_the_status_rule(rt):
    capi = rt.plugins.presets["meta.conversions"]
    assert rt.plugins.classify(capi, Response(200, '{"events_received": 3}'), ["a", "b", "c"]) is None
    assert rt.plugins.classify(capi, Response(502, "<html>bad gateway</html>"), ["a"]) is None
    assert rt.plugins.classify(capi, Response(None, error="timed out", error_kind="timeout"), ["a"]) is None
    transient = json.dumps({"error": {"message": "m", "code": 12345, "is_transient": True}})
    assert rt.plugins.classify(capi, Response(400, transient), ["a"]).outcome == "bounced"


# -- WhatsApp ---------------------------------------------------------------------------------------

def wa_params(url: str, **more) -> dict:
    return {"url": url, "phone_number_id": "106540352242922", "access_token": TOKEN, **more}


WA_OK = Reply(200, b'{"messaging_product": "whatsapp", "contacts": [{"input": "16505551234", "wa_id": "16505551234"}],'
                   b' "messages": [{"id": "wamid.HBgL"}]}')


def test_whatsapp_text_message(client, admin, make_source, post_events, preset_destination, answering, work):
    target = answering(WA_OK)
    destination = preset_destination("meta.whatsapp_text", wa_params(target.url))
    assert TOKEN not in json.dumps(destination)
    source_id, key = make_source()
    ids = post_events(source_id, key, [
        {"name": "shipped", "profile": {"phone": "+1 (650) 555-1234"}, "data": {"message": "Hi"}},
        {"name": "shipped", "profile": {"email": "x@example.com"}, "data": {"message": "Hi"}},
        {"name": "shipped", "profile": {"phone": "(650) 555-9999", "country": "US"}},
    ]).get_json()["ids"]
    work()
    [request] = target.wait_for(1)
    assert request.path == "/v21.0/106540352242922/messages"
    assert request.header("Authorization") == f"Bearer {TOKEN}"
    assert json.loads(request.body) == {"messaging_product": "whatsapp", "recipient_type": "individual",
                                        "to": "16505551234", "type": "text", "text": {"body": "Hi"}}
    assert delivery_of(client, admin, ids[0])["status"] == "delivered"
    no_phone = delivery_of(client, admin, ids[1])
    assert no_phone["status"] == "skipped" and "no recipient phone" in no_phone["last_error"]
    no_text = delivery_of(client, admin, ids[2])
    assert no_text["status"] == "skipped" and "no message text" in no_text["last_error"]
    assert TOKEN not in json.dumps(delivery_of(client, admin, ids[0]))


def test_whatsapp_text_fallback_text_fixed_recipient_and_cut(make_source, post_events, preset_destination, answering,
                                                             work):
    target = answering(WA_OK)
    preset_destination("meta.whatsapp_text", wa_params(target.url, to="+44 7911 123456", text="Your code is ready",
                                                       preview_url=True))
    source_id, key = make_source()
    post_events(source_id, key, [{"name": "a", "profile": {"phone": "+1 650 555 1234"}},
                                 {"name": "b", "data": {"message": "x" * 5000}}])
    work()
    bodies = sorted((json.loads(r.body) for r in target.wait_for(2)), key=lambda b: len(b["text"]["body"]))
    assert bodies[0] == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "447911123456",
                         "type": "text", "text": {"preview_url": True, "body": "Your code is ready"}}
    assert bodies[1]["to"] == "447911123456" and len(bodies[1]["text"]["body"]) == 4096
    assert bodies[1]["text"]["body"].endswith("…")


def test_whatsapp_template_message(make_source, post_events, preset_destination, answering, work):
    target = answering(WA_OK)
    components = [{"type": "body", "parameters": [{"type": "text", "text": "default"}]}]
    preset_destination("meta.whatsapp_template", wa_params(target.url, template_name="order_update",
                                                           components=components), events=["order*"])
    preset_destination("meta.whatsapp_template", wa_params(target.url + "/plain", template_name="hello_world"),
                       events=["hello"])
    source_id, key = make_source()
    own = [{"type": "body", "parameters": [{"type": "text", "text": "A-1001"}]}]
    post_events(source_id, key, [
        {"name": "order", "profile": {"whatsapp": "0016505551234", "phone": "+1 555 000 0000"}},
        {"name": "order2", "profile": {"phone": "+16505550000"}, "data": {"template_components": own}},
        {"name": "hello", "profile": {"phone": "+16505551111"}},
    ])
    work()
    got = {(r.path, json.loads(r.body)["to"]): json.loads(r.body) for r in target.wait_for(3)}
    assert len(got) == 3
    assert got[("/v21.0/106540352242922/messages", "16505551234")] == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": "16505551234", "type": "template",
        "template": {"name": "order_update", "language": {"code": "en_US"}, "components": components}}
    assert got[("/v21.0/106540352242922/messages", "16505550000")]["template"]["components"] == own
    assert got[("/plain/v21.0/106540352242922/messages", "16505551111")] == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": "16505551111", "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"}}}


def test_whatsapp_errors(client, admin, make_source, post_events, preset_destination, answering, work):
    window = answering(graph_error(131047, "Re-engagement message", subcode=2494010))
    throughput = answering(graph_error(130429, "Rate limit hit"))
    closed = preset_destination("meta.whatsapp_text", wa_params(window.url), events=["a"])
    busy = preset_destination("meta.whatsapp_text", wa_params(throughput.url), events=["b"])
    source_id, key = make_source()
    post_events(source_id, key, [{"name": n, "profile": {"phone": "+16505551234"}, "data": {"message": "Hi"}}
                                 for n in ("a", "b")])
    work()
    [final] = deliveries(client, admin, closed["id"])
    assert final["status"] == "error" and final["next_attempt_at"] is None
    assert "code 131047/2494010: Re-engagement message" in final["last_error"]
    [retried] = deliveries(client, admin, busy["id"])
    assert retried["status"] == "bounced" and retried["next_attempt_at"] is not None
    assert "code 130429" in retried["last_error"]


# -- Messenger --------------------------------------------------------------------------------------

def messenger_params(url: str, **more) -> dict:
    return {"url": url, "page_id": "1122334455", "access_token": TOKEN, **more}


def test_messenger_message(client, admin, make_source, post_events, preset_destination, answering, work):
    target = answering(Reply(200, b'{"recipient_id": "2468", "message_id": "m_AbC"}'))
    destination = preset_destination("meta.messenger", messenger_params(target.url))
    assert destination["url"].endswith("/v21.0/1122334455/messages?access_token=xxxxxx")
    source_id, key = make_source()
    ids = post_events(source_id, key, [
        {"name": "a", "profile": {"psid": "2468"}, "data": {"message": "Your order shipped"}},
        {"name": "b", "data": {"psid": "1357", "message": "y" * 2500}},
        {"name": "c", "data": {"message": "nobody to send to"}},
    ]).get_json()["ids"]
    work()
    requests = target.wait_for(2)
    assert len(requests) == 2
    path, _, query = requests[0].path.partition("?")
    assert path == "/v21.0/1122334455/messages" and urllib.parse.parse_qs(query) == {"access_token": [TOKEN]}
    bodies = {json.loads(r.body)["recipient"]["id"]: json.loads(r.body) for r in requests}
    assert bodies["2468"] == {"recipient": {"id": "2468"}, "messaging_type": "UPDATE",
                              "message": {"text": "Your order shipped"}}
    assert len(bodies["1357"]["message"]["text"]) == 1999
    skipped = delivery_of(client, admin, ids[2])
    assert skipped["status"] == "skipped" and "no recipient PSID" in skipped["last_error"]
    [attempt] = delivery_of(client, admin, ids[0])["attempt_log"]
    assert attempt["url"].endswith("access_token=xxxxxx")


def test_messenger_message_tag(make_source, post_events, preset_destination, answering, work, client, admin):
    target = answering(Reply(200, b'{"recipient_id": "2468", "message_id": "m_AbC"}'))
    preset_destination("meta.messenger", messenger_params(target.url, messaging_type="MESSAGE_TAG",
                                                         tag="POST_PURCHASE_UPDATE", psid="9999", text="Shipped"))
    untagged = preset_destination("meta.messenger", messenger_params(target.url + "/x", messaging_type="MESSAGE_TAG",
                                                                     psid="9999", text="Shipped"))
    source_id, key = make_source()
    post_events(source_id, key, {"name": "a"})
    work()
    [request] = target.wait_for(1)
    assert json.loads(request.body) == {"recipient": {"id": "9999"}, "messaging_type": "MESSAGE_TAG",
                                        "message": {"text": "Shipped"}, "tag": "POST_PURCHASE_UPDATE"}
    [skipped] = deliveries(client, admin, untagged["id"])
    assert skipped["status"] == "skipped" and "needs the tag" in skipped["last_error"]
    bad = client.post("/v1/destinations", json={"preset": "meta.messenger", "events": ["*"], "params": messenger_params(
        target.url, messaging_type="BROADCAST")}, headers=admin)
    assert bad.status_code == 422


def test_messenger_errors(client, admin, make_source, post_events, preset_destination, answering, work):
    unavailable = answering(graph_error(551, "This person isn't available right now.", subcode=1545041))
    limited = answering(graph_error(613, "Calls to this api have exceeded the rate limit."))
    gone = preset_destination("meta.messenger", messenger_params(unavailable.url, psid="1"), events=["a"])
    busy = preset_destination("meta.messenger", messenger_params(limited.url, psid="1"), events=["b"])
    source_id, key = make_source()
    post_events(source_id, key, [{"name": n, "data": {"message": "Hi"}} for n in ("a", "b")])
    work()
    [final] = deliveries(client, admin, gone["id"])
    assert final["status"] == "error" and final["next_attempt_at"] is None and "code 551" in final["last_error"]
    [retried] = deliveries(client, admin, busy["id"])
    assert retried["status"] == "bounced" and retried["next_attempt_at"] is not None
    assert "code 613" in retried["last_error"]


def test_the_token_stays_out_of_a_failed_attempt(client, admin, make_source, post_events, preset_destination, work):
    closed = Receiver().start()
    closed.stop()  # nothing listens on its port now
    preset_destination("meta.messenger", messenger_params(closed.url, psid="1", text="Hi"))
    source_id, key = make_source()
    [event_id] = post_events(source_id, key, [{"name": "a"}]).get_json()["ids"]
    work()
    failed = delivery_of(client, admin, event_id)
    assert failed["attempt_log"][0]["error"] and failed["next_attempt_at"] is not None
    shown = json.dumps(failed)
    assert TOKEN not in shown and urllib.parse.quote(TOKEN, safe="") not in shown and "tok%2Ben" not in shown


# -- the presets in the API -------------------------------------------------------------------------

def test_meta_presets_in_the_api(client, admin):
    names = {p["name"] for p in client.get("/v1/presets", headers=admin).get_json()["items"]}
    assert {"meta.conversions", "meta.whatsapp_text", "meta.whatsapp_template", "meta.messenger"} <= names
    shown = client.get("/v1/presets/meta.conversions", headers=admin).get_json()
    params = {p["name"]: p for p in shown["params"]}
    assert params["access_token"]["secret"] and params["pixel_id"]["required"]
    assert params["batch_size"]["default"] == 1000 and params["batch_size"]["maximum"] == 1000
    assert params["api_version"]["default"] == "v21.0"
    example = shown["example"]
    assert "error" not in example and example["url"].endswith("/events?access_token=xxxxxx")
    assert len(example["body"]["data"]) == 2 and example["body"]["data"][0]["user_data"]["em"] == \
        sha("jane.doe@example.com")
    for name in ("meta.whatsapp_text", "meta.whatsapp_template", "meta.messenger"):
        example = client.get(f"/v1/presets/{name}", headers=admin).get_json()["example"]
        assert "error" not in example and "EAAB" not in json.dumps(example)


def test_stale_screen_uses_the_event_time():
    fresh = {"user_id": "u", "time": iso(now() - dt.timedelta(days=6, hours=23))}
    stale = {"user_id": "u", "time": iso(now() - dt.timedelta(days=7, minutes=1))}
    params = {"action_source": "system_generated"}
    assert meta.screen_conversions(fresh, params) is None
    assert "7.0 days old" in meta.screen_conversions(stale, params)
    assert meta.screen_conversions({"user_id": "u", "time": "garbage"}, params).startswith("meta: the event's time")


def test_trying_a_conversions_destination_sends_the_sample_as_a_fresh_event(client, admin, preset_destination,
                                                                           answering):
    receiver = answering(Reply(200, b'{"events_received": 1, "messages": [], "fbtrace_id": "t"}'))
    destination = preset_destination("meta.conversions", capi_params(receiver.url))
    tried = client.post(f"/v1/destinations/{destination['id']}/test", headers=admin, json={"send": True}).get_json()
    assert "skipped" not in tried, tried  # the sample is dated now: not older than Meta's 7 days
    [item] = json.loads(tried["request"]["body"])["data"]
    assert sha("jane.doe@example.com") in json.dumps(item["user_data"]["em"])
    assert tried["response"]["outcome"] == "delivered" and len(receiver.requests) == 1
    assert TOKEN not in json.dumps(tried) and urllib.parse.quote(TOKEN, safe="") not in json.dumps(tried)
