"""The SMS presets against local fake receivers that answer as Twilio, CM.com and Vonage do: the exact
form fields / JSON each gets, Twilio's Basic auth, secrets kept out of every API answer and attempt
log, each destination's answers classified (Twilio codes, CM.com's per-message outcomes inside one
answer, Vonage's string statuses), and events without a phone number skipped with the reason."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from hookgate.presets import MASK
from hookgate.store import now_ms

from .receiver import Reply
from .test_presets import PHONE, created, deliveries

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "twilio-auth-t0ken-9f8e7d"
CM_TOKEN = "0b9c1d2e-3f40-4a5b-8c6d-7e8f9a0b1c2d"
VONAGE_SECRET = "vonage-s3cret-42"
SECRETS = (TOKEN, CM_TOKEN, VONAGE_SECRET)

TWILIO_SENT = {"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued", "to": "+15555550100",
               "from": "+15555550199", "error_code": None, "error_message": None}


def twilio_error(code: int, message: str, status: int) -> bytes:
    return json.dumps({"code": code, "message": message, "status": status,
                       "more_info": f"https://www.twilio.com/docs/errors/{code}"}).encode()


def vonage_answer(*statuses: tuple[str, str | None]) -> bytes:
    messages = []
    for status, error_text in statuses:
        message = {"to": "15555550100", "status": status}
        if status == "0":
            message.update({"message-id": "0A0000000123ABCD1", "remaining-balance": "3.14", "message-price": "0.03"})
        else:
            message["error-text"] = error_text
        messages.append(message)
    return json.dumps({"message-count": str(len(messages)), "messages": messages}).encode()




@pytest.fixture
def sms_destination(client, admin):
    def make(preset: str, params: dict, **fields) -> dict:
        response = client.post("/v1/destinations", headers=admin, json={"preset": preset, "params": params, **fields})
        assert response.status_code == 201, response.get_json()
        shown = response.get_json()
        assert_no_secret(shown)
        return shown

    return make


@pytest.fixture
def send(client, admin, make_source, post_events, work):
    """Post events, run the workers, and return each event's delivery (with its attempt log) by event id."""
    source = {}

    def run(destination: dict, *events: dict) -> list[dict]:
        if not source:
            source["id"], source["key"] = make_source()
        answer = post_events(source["id"], source["key"], list(events))
        assert answer.status_code == 202, answer.get_json()
        ids = answer.get_json()["ids"]
        work()
        listed = client.get(f"/v1/deliveries?destination_id={destination['id']}&limit=100",
                            headers=admin).get_json()["items"]
        by_event = {d["event_id"]: d for d in listed}
        shown = [client.get(f"/v1/deliveries/{by_event[i]['id']}", headers=admin).get_json() for i in ids]
        assert_no_secret(listed, shown)
        assert_no_secret(client.get(f"/v1/destinations/{destination['id']}", headers=admin).get_json())
        return shown

    return run


def assert_no_secret(*shown) -> None:
    text = json.dumps(shown)
    for secret in SECRETS:
        assert secret not in text
        assert urllib.parse.quote_plus(secret) not in text


def form(request) -> dict[str, list[str]]:
    assert request.header("Content-Type") == "application/x-www-form-urlencoded"
    return urllib.parse.parse_qs(request.body.decode(), keep_blank_values=True, strict_parsing=True)


def twilio(url: str, **params) -> dict:
    return {"account_sid": SID, "auth_token": TOKEN, "from": "+15555550199", "url": url, **params}


def cm(url: str, **params) -> dict:
    return {"product_token": CM_TOKEN, "sender": "ShopCo", "url": url, **params}


def vonage(url: str, **params) -> dict:
    return {"api_key": "k3y12345", "api_secret": VONAGE_SECRET, "from": "ShopCo", "url": url, **params}


def order(phone: str | None = "+1 (555) 555-0100", message: str | None = "Your order A-1 has shipped.",
          **fields) -> dict:
    event = {"name": "order_completed", "user_id": "u1", "profile": {"first_name": "Jane"}, "data": {"order_id": "A-1"}}
    if phone is not None:
        event["profile"]["phone"] = phone
    if message is not None:
        event["data"]["message"] = message
    return {**event, **fields}


# -- Twilio ---------------------------------------------------------------------------------------------

def test_twilio_posts_the_form_with_basic_auth_and_a_201_is_delivered(answering, sms_destination, send):
    receiver = answering(Reply(201, json.dumps(TWILIO_SENT).encode()))
    destination = sms_destination("sms.twilio", twilio(receiver.url, status_callback="https://hooks.example/twilio",
                                                       media_url="https://cdn.example/a.png"))
    assert destination["preset"]["params"]["auth_token"] == MASK
    assert destination["url"] == f"{receiver.url}/2010-04-01/Accounts/{SID}/Messages.json"
    assert destination["format"] == "form"

    [delivery] = send(destination, order())

    [request] = receiver.requests
    assert request.method == "POST" and request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert form(request) == {"To": ["+15555550100"], "From": ["+15555550199"],
                             "StatusCallback": ["https://hooks.example/twilio"],
                             "MediaUrl": ["https://cdn.example/a.png"], "Body": ["Your order A-1 has shipped."]}
    scheme, _, encoded = request.header("Authorization").partition(" ")
    assert scheme == "Basic" and base64.b64decode(encoded).decode() == f"{SID}:{TOKEN}"
    assert delivery["status"] == "delivered" and delivery["last_error"] is None
    [attempt] = delivery["attempt_log"]
    assert attempt["outcome"] == "delivered" and attempt["status_code"] == 201
    assert attempt["url"] == f"{receiver.url}/2010-04-01/Accounts/{SID}/Messages.json"


def test_twilio_body_defaults_truncation_and_a_messaging_service(answering, sms_destination, send):
    receiver = answering(Reply(201, json.dumps(TWILIO_SENT).encode()))
    destination = sms_destination("sms.twilio", twilio(receiver.url, **{"from": None},
                                                       messaging_service_sid="MG0123456789abcdef0123456789abcdef"))
    long_text = "ü" * 1700
    send(destination,
         order(phone=None, message=None, data={"phone": "0044 7911-123456"}),  # data.phone, no message
         order(phone="+447911123456", message=long_text))
    first, second = (form(r) for r in sorted(receiver.requests, key=lambda r: len(r.body)))
    assert first == {"To": ["+447911123456"], "MessagingServiceSid": ["MG0123456789abcdef0123456789abcdef"],
                     "Body": ["Order completed"]}
    assert "From" not in second and len(second["Body"][0]) == 1600
    assert second["Body"][0] == "ü" * 1599 + "…"


@pytest.mark.parametrize("status, body, outcome, reason, retried", [
    (400, twilio_error(21211, "The 'To' number +1555 is not a valid phone number.", 400), "error",
     "twilio 21211: The 'To' number +1555 is not a valid phone number.", False),
    (400, twilio_error(21610, "Attempt to send to unsubscribed recipient", 400), "error",
     "twilio 21610: Attempt to send to unsubscribed recipient", False),
    (401, twilio_error(20003, "Authenticate", 401), "error", "twilio 20003: Authenticate", False),
    (429, twilio_error(20429, "Too Many Requests", 429), "bounced", "twilio 20429: Too Many Requests", True),
    (503, b"upstream unavailable", "bounced", None, True),
])
def test_twilio_answers_are_classified_by_code(status, body, outcome, reason, retried, answering, sms_destination,
                                               send):
    receiver = answering(Reply(status, body))
    destination = sms_destination("sms.twilio", twilio(receiver.url))
    before = now_ms()
    [delivery] = send(destination, order())
    assert len(receiver.requests) == 1
    assert delivery["status"] == outcome and delivery["attempt_log"][0]["outcome"] == outcome
    if reason is not None:
        assert delivery["last_error"] == reason
    if retried:
        assert delivery["next_attempt_at"] is not None and delivery["next_attempt_at"] > before
    else:
        assert delivery["next_attempt_at"] is None


def test_twilio_without_a_sender_is_refused_when_saved(client, admin):
    response = client.post("/v1/destinations", headers=admin, json={
        "preset": "sms.twilio", "params": twilio("https://sms.example", **{"from": None})})
    assert response.status_code == 422
    assert "messaging_service_sid" in response.get_json()["error"]["details"]["params"]["from"][0]


# -- every preset: no phone, no message --------------------------------------------------------------------

@pytest.mark.parametrize("preset, params", [("sms.twilio", twilio), ("sms.cm", cm), ("sms.vonage", vonage)])
def test_events_without_a_phone_number_are_skipped_with_the_reason(preset, params, answering, sms_destination,
                                                                   send):
    receiver = answering(Reply(500, b"must not be called"))
    destination = sms_destination(preset, params(receiver.url), batch={"max_wait_s": 0} if preset == "sms.cm" else None)
    none, blank, junk = send(destination, order(phone=None), order(phone="  "), order(phone="n/a"))
    assert receiver.requests == []
    assert none["status"] == blank["status"] == junk["status"] == "skipped"
    assert none["last_error"] == blank["last_error"] == \
        "no phone number: the event has neither profile.phone nor data.phone"
    assert junk["last_error"] == "profile.phone is not a phone number (6 to 15 digits, + or 00 before the country code)"
    assert none["attempt_log"] == []


def test_params_are_checked_per_preset(client, admin):
    def problems(preset: str, params: dict) -> set[str]:
        response = client.post("/v1/destinations", headers=admin, json={"preset": preset, "params": params})
        assert response.status_code == 422, response.get_json()
        assert_no_secret(response.get_json())
        return set(response.get_json()["error"]["details"]["params"])

    assert problems("sms.twilio", {"from": "+15555550199"}) == {"account_sid", "auth_token"}
    assert problems("sms.cm", cm("https://gw.example", batch_size=0)) == {"batch_size"}
    assert problems("sms.cm", cm("https://gw.example", batch_size=1001, max_parts=9)) == {"batch_size", "max_parts"}
    assert problems("sms.vonage", vonage("https://rest.example", type="ascii")) == {"type"}
    assert problems("sms.vonage", {"api_key": "k", "from": "x"}) == {"api_secret"}


def test_presets_are_listed_with_a_rendered_example_and_secrets_masked(client, admin):
    for name in ("sms.twilio", "sms.cm", "sms.vonage"):
        shown = client.get(f"/v1/presets/{name}", headers=admin).get_json()
        example = shown["example"]
        assert "error" not in example, example
        assert {p["name"]: p["secret"] for p in shown["params"]}.keys() >= {"url"}
        secrets = {p["name"] for p in shown["params"] if p["secret"]}
        assert secrets == {"sms.twilio": {"auth_token"}, "sms.cm": {"product_token"},
                           "sms.vonage": {"api_secret"}}[name]
        assert all(example["params"][s] == MASK for s in secrets)
    twilio_example = client.get("/v1/presets/sms.twilio", headers=admin).get_json()["example"]
    assert twilio_example["headers"]["Authorization"] == MASK
    assert urllib.parse.parse_qs(twilio_example["body"])["To"] == ["+15555550100"]


# -- CM.com ---------------------------------------------------------------------------------------------

def cm_reply(arrange):
    """A CM.com answer built from the request: ``arrange(msgs)`` → (status, errorCode, answered messages)."""
    def reply(request) -> Reply:
        msgs = json.loads(request.body)["messages"]["msg"]
        status, error_code, messages = arrange(msgs)
        return Reply(status, json.dumps({"details": f"Created {sum(m['status'] == 'Accepted' for m in messages)} "
                                                    "message(s)", "errorCode": error_code,
                                         "messages": messages}).encode())
    return reply


def cm_message(msg: dict, status: str, *, reference: bool = True) -> dict:
    rejected = status == "Rejected"
    return {"to": msg["to"][0]["number"], "status": status, "reference": msg["reference"] if reference else None,
            "parts": 0 if rejected else 1, "messageDetails": "Gsm '00999' is not a number." if rejected else None,
            "messageErrorCode": 303 if rejected else 0}


PHONES = ("+447911000001", "+447911000002", "+447911000003")


@pytest.mark.parametrize("arrangement, rejected", [("reordered", 0), ("no references, in order", 1), ("mixed", 0)])
def test_cm_sends_one_batch_and_records_each_messages_own_outcome(arrangement, rejected, answering, sms_destination,
                                                                 send):
    def arrange(msgs):
        first, second, third = msgs
        if arrangement == "reordered":  # CM.com answers in its own order: matched by reference
            answered = [cm_message(second, "Accepted"), cm_message(third, "Accepted"), cm_message(first, "Rejected")]
        elif arrangement == "no references, in order":  # matched by position
            answered = [cm_message(first, "Accepted", reference=False), cm_message(second, "Rejected", reference=False),
                        cm_message(third, "Accepted", reference=False)]
        else:  # references on two, reordered around the one without, which stays in its place
            answered = [cm_message(third, "Accepted"), cm_message(second, "Accepted", reference=False),
                        cm_message(first, "Rejected")]
        return 200, 201, answered

    receiver = answering(cm_reply(arrange))
    destination = sms_destination("sms.cm", cm(receiver.url, batch_size=3))
    assert destination["batch"]["size"] == 3 and destination["preset"]["params"]["product_token"] == MASK
    deliveries = send(destination, *(order(phone=p, message=f"Hi {n}", user_id=f"u{n}") for n, p in enumerate(PHONES)))

    [request] = receiver.requests
    assert request.path == "/v1.0/message" and request.header("Content-Type") == "application/json"
    assert request.header("X-Hookgate-Batch-Size") == "3"
    body = json.loads(request.body)
    ids = [d["event_id"] for d in deliveries]
    assert body == {"messages": {"authentication": {"producttoken": CM_TOKEN}, "msg": [
        {"from": "ShopCo", "to": [{"number": "00" + phone[1:]}], "body": {"type": "auto", "content": f"Hi {n}"},
         "allowedChannels": ["SMS"], "minimumNumberOfMessageParts": 1, "maximumNumberOfMessageParts": 8,
         "reference": event_id.replace("_", "")}
        for n, (phone, event_id) in enumerate(zip(PHONES, ids, strict=True))]}}
    assert all(len(m["reference"]) <= 32 and m["reference"].isalnum() for m in body["messages"]["msg"])
    assert [d["status"] for d in deliveries] == ["error" if n == rejected else "delivered" for n in range(3)]
    assert [d["last_error"] for d in deliveries] == [
        "cm 303: Gsm '00999' is not a number." if n == rejected else None for n in range(3)]
    assert all(d["next_attempt_at"] is None for d in deliveries)
    assert {d["attempt_log"][0]["status_code"] for d in deliveries} == {200}


def test_cm_a_message_the_answer_leaves_out_is_an_error_not_a_success(answering, sms_destination, send):
    receiver = answering(cm_reply(lambda msgs: (200, 0, [cm_message(msgs[0], "Accepted")])))
    destination = sms_destination("sms.cm", cm(receiver.url, batch_size=2))
    answered, left_out = send(destination, order(phone=PHONES[0]), order(phone=PHONES[1]))
    assert answered["status"] == "delivered"
    assert left_out["status"] == "error" and left_out["last_error"] == "cm: the answer has no outcome for this message"


def test_cm_all_rejected_is_a_400_with_each_messages_reason(answering, sms_destination, send):
    def arrange(msgs):
        answered = [cm_message(m, "Rejected") for m in msgs]
        answered[1]["messageDetails"], answered[1]["messageErrorCode"] = "Blacklisted recipient", 402
        return 400, 201, answered[::-1]

    receiver = answering(cm_reply(arrange))
    destination = sms_destination("sms.cm", cm(receiver.url, batch_size=2))
    first, second = send(destination, order(phone=PHONES[0]), order(phone=PHONES[1]))
    assert len(receiver.requests) == 1
    assert first["status"] == second["status"] == "error"
    assert first["last_error"] == "cm 303: Gsm '00999' is not a number."
    assert second["last_error"] == "cm 402: Blacklisted recipient"


@pytest.mark.parametrize("status, body, outcome, reason", [
    (400, {"details": "No account found for the given authentication", "errorCode": 101, "messages": []},
     "error", "cm 101: No account found for the given authentication"),
    (200, {"details": "Insufficient balance", "errorCode": 102, "messages": []},
     "error", "cm 102: Insufficient balance"),
    (500, {"details": "Internal error", "errorCode": 500, "messages": []}, "bounced", "cm 500: Internal error"),
    (502, None, "bounced", None),
])
def test_cm_a_refused_request_is_the_outcome_of_every_event_in_it(status, body, outcome, reason, answering,
                                                                   sms_destination, send):
    raw = json.dumps(body).encode() if body is not None else b"<html>bad gateway</html>"
    receiver = answering(Reply(status, raw))
    destination = sms_destination("sms.cm", cm(receiver.url, batch_size=2))
    deliveries = send(destination, order(phone=PHONES[0]), order(phone=PHONES[1]))
    assert len(receiver.requests) == 1
    assert [d["status"] for d in deliveries] == [outcome, outcome]
    if reason is not None:
        assert [d["last_error"] for d in deliveries] == [reason, reason]
    assert all((d["next_attempt_at"] is not None) == (outcome == "bounced") for d in deliveries)


def test_cm_skips_phoneless_events_and_sends_the_rest_in_one_batch(answering, sms_destination, send):
    receiver = answering(cm_reply(lambda msgs: (200, 0, [cm_message(m, "Accepted") for m in msgs])))
    destination = sms_destination("sms.cm", cm(receiver.url, batch_size=3, max_parts=2))
    sent, skipped, also_sent = send(destination, order(phone=PHONES[0]), order(phone=None), order(phone=PHONES[2]))
    [request] = receiver.requests
    msgs = json.loads(request.body)["messages"]["msg"]
    assert [m["to"] for m in msgs] == [[{"number": "00447911000001"}], [{"number": "00447911000003"}]]
    assert {m["maximumNumberOfMessageParts"] for m in msgs} == {2}
    assert (sent["status"], skipped["status"], also_sent["status"]) == ("delivered", "skipped", "delivered")


def cm_accepts(request) -> Reply:
    """CM.com's answer: every message of the request Accepted, under its reference."""
    messages = json.loads(request.body)["messages"]["msg"]
    return Reply(200, json.dumps({"details": "Created 1 message(s)", "errorCode": 0, "messages": [
        {"to": m["to"][0]["number"], "status": "Accepted", "reference": m["reference"], "parts": 1,
         "messageDetails": None, "messageErrorCode": 0} for m in messages]}).encode())


def test_cm_per_message_verdicts_apply_to_a_single_delivery(client, admin, answering, make_source, post_events, work):
    """Regression: per-message verdicts held in a batch only, not for a single delivery."""
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


def test_cm_per_message_verdicts_apply_to_a_test_send(client, admin, answering):
    """Regression: per-message verdicts held in a batch only, not for a trial."""
    cm = answering(cm_accepts)
    batch = created(client, admin, {"preset": "sms.cm", "params": {"product_token": CM_TOKEN, "sender": "Shop",
                                                                   "url": cm.url}})
    tried = client.post(f"/v1/destinations/{batch['id']}/test", headers=admin, json={"send": True}).get_json()
    assert len(cm.requests) == 1
    assert json.loads(tried["response"]["body"])["messages"][0]["status"] == "Accepted"
    assert tried["response"]["outcome"] == "delivered" and tried["response"]["reason"] is None


# -- Vonage ---------------------------------------------------------------------------------------------

def test_vonage_posts_the_form_and_status_0_is_delivered(answering, sms_destination, send):
    receiver = answering(Reply(200, vonage_answer(("0", None))))
    destination = sms_destination("sms.vonage", vonage(receiver.url))
    assert destination["preset"]["params"]["api_secret"] == MASK and destination["preset"]["params"]["type"] == "auto"
    plain, emoji = send(destination, order(), order(phone="0044 7911 123456", message="Ihre Bestellung ist da 📦"))
    assert [r.path for r in receiver.requests] == ["/sms/json", "/sms/json"]
    sent = sorted((form(r) for r in receiver.requests), key=lambda f: f["type"])
    assert sent == [
        {"api_key": ["k3y12345"], "api_secret": [VONAGE_SECRET], "from": ["ShopCo"], "to": ["15555550100"],
         "text": ["Your order A-1 has shipped."], "type": ["text"], "client-ref": [plain["event_id"]]},
        {"api_key": ["k3y12345"], "api_secret": [VONAGE_SECRET], "from": ["ShopCo"], "to": ["447911123456"],
         "text": ["Ihre Bestellung ist da 📦"], "type": ["unicode"], "client-ref": [emoji["event_id"]]},
    ]
    assert plain["status"] == emoji["status"] == "delivered"


def test_vonage_type_param_is_sent_as_given(answering, sms_destination, send):
    receiver = answering(Reply(200, vonage_answer(("0", None))))
    destination = sms_destination("sms.vonage", vonage(receiver.url, type="unicode"))
    send(destination, order())
    assert form(receiver.requests[0])["type"] == ["unicode"]


@pytest.mark.parametrize("statuses, outcome, reason", [
    ([("1", "Throughput Rate Exceeded - please wait [ 1000 ] and retry")], "bounced",
     "vonage 1: Throughput Rate Exceeded - please wait [ 1000 ] and retry"),
    ([("5", "Internal Error")], "bounced", "vonage 5: Internal Error"),
    ([("10", "Too many existing binds")], "bounced", "vonage 10: Too many existing binds"),
    ([("4", "Bad Credentials")], "error", "vonage 4: Bad Credentials"),
    ([("15", "Illegal Sender Address - rejected")], "error", "vonage 15: Illegal Sender Address - rejected"),
    ([("0", None), ("1", "Throttled")], "error", "vonage 1: Throttled (1 of 2 parts were sent)"),
])
def test_vonage_outcome_comes_from_the_string_status_in_a_200(statuses, outcome, reason, answering,
                                                              sms_destination, send):
    receiver = answering(Reply(200, vonage_answer(*statuses)))
    destination = sms_destination("sms.vonage", vonage(receiver.url))
    before = now_ms()
    [delivery] = send(destination, order())
    assert len(receiver.requests) == 1
    assert delivery["status"] == outcome and delivery["last_error"] == reason
    assert delivery["attempt_log"][0]["status_code"] == 200
    if outcome == "bounced":
        assert delivery["next_attempt_at"] > before
    else:
        assert delivery["next_attempt_at"] is None


# -- trying a destination ------------------------------------------------------------------------------

def test_trying_an_sms_destination_shows_the_request_with_the_auth_header_masked(client, admin, answering,
                                                                                  sms_destination):
    receiver = answering(Reply(201, json.dumps(TWILIO_SENT).encode()))
    destination = sms_destination("sms.twilio", twilio(receiver.url))
    tried = client.post(f"/v1/destinations/{destination['id']}/test", headers=admin, json={"send": True}).get_json()
    assert tried["request"]["headers"]["Authorization"] == MASK
    assert urllib.parse.parse_qs(tried["request"]["body"])["To"] == ["+15555550100"]  # the sample event
    assert tried["response"]["outcome"] == "delivered"
    assert_no_secret(tried)
    skipped = client.post(f"/v1/destinations/{destination['id']}/test", headers=admin,
                          json={"event": {"name": "x", "user_id": "u"}}).get_json()
    assert skipped["skipped"].startswith("no phone number")


@pytest.mark.parametrize("preset, params", [("sms.cm", cm), ("sms.vonage", vonage)])
def test_trying_a_destination_never_shows_a_secret_sent_in_the_body(preset, params, client, admin, sms_destination):
    destination = sms_destination(preset, params("https://sms.example"))
    tried = client.post(f"/v1/destinations/{destination['id']}/test", headers=admin).get_json()
    assert "request" in tried
    assert_no_secret(tried)
