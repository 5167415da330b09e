"""No regular expression runs in super-linear time (issue 11, part 4).

A subscription's ``regex`` runs in RE2: the classic catastrophic patterns go through a real ingest against
the inputs that stall Python's ``re`` (27 characters: seconds; 10,000: it would not finish), and the
conditions still say the right thing. Patterns RE2 cannot run in linear time, or too large, are a 422 at
the field when saved. The built-in plugins' patterns meet 58 KiB adversarial values and give the right
result. No test here asserts a duration: with the old patterns this file would not finish at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
import re

import pytest

from hookgate.adapters._common import loads_lenient
from hookgate.builtin_plugins import meta, slack, sms
from hookgate.errors import InvalidJSON
from hookgate.filters import MAX_REGEX, compile_condition, validate_condition
from hookgate.routing import RoutingIndex

from .receiver import Reply

KIB58 = 58 * 1024


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def delivery_of(client, admin, event_id: str) -> dict:
    [item] = client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]
    return item


# -- subscription conditions: RE2, through ingest --------------------------------------------------------

# pattern → [(the field's text, whether the condition holds)]: for each, the length that took seconds with
# Python's re (measured: 10 to 15 s for 27 characters; 5.6 s for 35 with (a|aa)+$; 11 s for (.*a){20}
# against 19 a's and 10,000 b's) and 10,000 characters, which re would not finish.
CATASTROPHIC = {
    r"^(\w+\s?)*$": [("a" * 27 + "!", False), ("a" * 10_000 + "!", False), ("a" * 10_000, True),
                     ("many words in a row", True)],
    r"(a+)+$": [("a" * 27 + "!", False), ("a" * 10_000 + "!", False), ("b" + "a" * 10_000, True)],
    r"(a|aa)+$": [("a" * 35 + "!", False), ("a" * 10_000 + "!", False), ("!" + "a" * 10_000, True)],
    r"(.*a){20}": [("a" * 19 + "b" * 10_000, False), ("b" * 10_000, False), ("ab" * 5_000, True), ("a" * 20, True)],
}


@pytest.mark.parametrize("pattern", list(CATASTROPHIC))
def test_catastrophic_patterns_evaluate_correctly_through_ingest(pattern, make_source, make_destination,
                                                                  post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url, conditions={"field": "data.text", "op": "regex", "value": pattern})
    cases = CATASTROPHIC[pattern]
    answer = post_events(source_id, key, [{"name": "typed", "data": {"text": text, "n": n}}
                                          for n, (text, _) in enumerate(cases)])
    assert answer.status_code == 202, answer.get_json()
    work()
    expected = sorted(n for n, (_, matches) in enumerate(cases) if matches)
    arrived = receiver.wait_for(len(expected))
    assert sorted(json.loads(r.body)["data"]["n"] for r in arrived) == expected
    assert len(receiver.requests) == len(expected)


@pytest.mark.parametrize("condition, where, says", [
    ({"field": "data.x", "op": "regex", "value": r"(a)\1"}, "conditions.value", "invalid escape sequence: \\1"),
    ({"field": "data.x", "op": "regex", "value": "(?=a)a"}, "conditions.value", "invalid perl operator: (?="),
    ({"field": "data.x", "op": "regex", "value": "(?<!a)b"}, "conditions.value", "invalid perl operator: (?<"),
    ({"field": "data.x", "op": "regex", "value": r"a\Z"}, "conditions.value", "invalid escape sequence: \\Z"),
    ({"field": "data.x", "op": "regex", "value": r"\pL{100}"}, "conditions.value", "pattern too large"),
    ({"field": "data.x", "op": "regex", "value": "x" * (MAX_REGEX + 1)}, "conditions.value",
     f"at most {MAX_REGEX} characters"),
    ({"and": [{"field": "data.y", "op": "eq", "value": 1}, {"field": "data.x", "op": "regex", "value": "(a|b"}]},
     "conditions.and.1.value", "missing )"),
])
def test_patterns_re2_refuses_are_422_at_the_field(condition, where, says, client, admin, receiver):
    response = client.post("/v1/destinations", json={"name": "d", "url": receiver.url, "conditions": condition},
                           headers=admin)
    assert response.status_code == 422, response.get_json()
    [problem] = response.get_json()["error"]["details"]["conditions"]
    assert problem.startswith(f"{where}: ") and says in problem, problem


@pytest.mark.parametrize("pattern", [r"(?i)^straße$", r"^\pL+$", r"(?P<sku>A-\d+)", r"\d{1,3}(\.\d{1,3}){3}",
                                     "x" * MAX_REGEX, r"\pL{50}"])
def test_patterns_re2_runs_are_saved(pattern, make_destination, receiver):
    saved = make_destination(receiver.url, conditions={"field": "data.x", "op": "regex", "value": pattern})
    assert saved["conditions"]["value"] == pattern


def test_re2_semantics_as_the_readme_states():
    """RE2's Perl classes are ASCII and ``$`` is the end of the text; ``\\pL`` and ``(?i)`` are Unicode."""
    def holds(pattern: str, text: str) -> bool:
        assert validate_condition({"field": "data.x", "op": "regex", "value": pattern}) == []
        return compile_condition({"field": "data.x", "op": "regex", "value": pattern})({"data": {"x": text}})

    assert holds(r"^\w+$", "cafe") and not holds(r"^\w+$", "café") and holds(r"^\pL+$", "café")
    assert holds(r"(?i)^ÉTÉ$", "été") and holds("^.$", "😀")
    assert not holds("^a$", "a\n") and holds("(?m)^a$", "a\nb")
    assert holds("^.$", "\ud800")  # a lone surrogate (JSON can carry one) is a character, not an exception
    assert not holds("a", "") and not compile_condition({"field": "data.x", "op": "regex", "value": "a"})(
        {"data": {"x": 1}})  # a non-string field never matches


def test_a_stored_pattern_re2_refuses_matches_nothing_and_routing_goes_on(caplog):
    """A destination saved before RE2 with a backreference: the index still builds, that condition is
    false (the destination gets less, never more), the others route as before."""
    old = {"id": "old", "events": ["*"], "conditions": {"or": [
        {"field": "data.x", "op": "regex", "value": r"(a)\1"}, {"field": "data.y", "op": "eq", "value": 1}]}}
    other = {"id": "other", "events": ["*"], "conditions": {"field": "data.x", "op": "regex", "value": "^a+$"}}
    with caplog.at_level(logging.WARNING, logger="hookgate.filters"):
        index = RoutingIndex([old, other])
    assert "RE2 refuses the pattern" in caplog.text and "invalid escape sequence" in caplog.text
    assert [d["id"] for d in index.match({"name": "e", "data": {"x": "aa"}})] == ["other"]
    assert [d["id"] for d in index.match({"name": "e", "data": {"x": "aa", "y": 1}})] == ["old", "other"]


def test_event_name_patterns_are_linear_too():
    """``events`` patterns are fnmatch's, translated (Python 3.11+) with atomic groups: no backtracking."""
    index = RoutingIndex([{"id": "d", "events": ["*a*a*a*a*a*a*a*a*a*a*b"]}])
    assert index.match({"name": "a" * 10_000}) == []
    assert [d["id"] for d in index.match({"name": "a" * 10_000 + "b"})] == ["d"]


# -- the built-in plugins' patterns, against 58 KiB values ------------------------------------------------

# The e-mail pattern meta.py used until it backtracked (20 s on a 58 KiB profile.email): the language the
# linear one must still accept, exactly.
OLD_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
ADVERSARIAL_EMAILS = [
    "a@" + "." * (KIB58 - 3) + "@",  # 22 s with the old pattern
    "a@" + "a." * ((KIB58 - 3) // 2) + "@",  # 13 s
    "a@" + "a." * ((KIB58 - 3) // 2) + " x",  # 16 s
    "a@" + "a" * KIB58,  # no dot in the domain
    "@" * KIB58,
]


def test_the_meta_email_pattern_accepts_exactly_what_it_did():
    """Every string of up to 6 characters over the characters that matter (a letter, '.', '@', an ASCII
    and a Unicode space) is an e-mail for the new pattern exactly when it was for the old one."""
    alphabet = "a.@ \u3000"
    for length in range(7):
        for chars in itertools.product(alphabet, repeat=length):
            text = "".join(chars)
            assert (meta._EMAIL.fullmatch(text) is None) == (OLD_EMAIL.fullmatch(text) is None), repr(text)


@pytest.mark.parametrize("email", ADVERSARIAL_EMAILS, ids=lambda e: f"{e[:6]}…{e[-3:]!r}")
def test_meta_email_normalisation_refuses_58_kib_adversarial_values(email):
    assert meta.meta_normalize(email, "em") is None and meta.meta_hash(email, "em") is None


def test_a_58_kib_email_through_the_conversions_api(client, admin, make_source, post_events, preset_destination,
                                                    answering, work):
    """An adversarial 58 KiB profile.email is no e-mail (the event has nothing to match: skipped with the
    reason); a valid 58 KiB one is normalised and hashed."""
    target = answering(Reply(200, b'{"events_received": 1}'))
    preset_destination("meta.conversions", {"url": target.url, "pixel_id": "123456789012345", "access_token": "t"},
                       batch={"max_wait_s": 0})
    source_id, key = make_source()
    moment = dt.datetime.now(dt.UTC).isoformat()
    valid = "a" * (KIB58 - 12) + "@example.com"
    ids = post_events(source_id, key, [{"name": "Lead", "time": moment, "profile": {"email": ADVERSARIAL_EMAILS[0]}},
                                       {"name": "Lead", "time": moment, "profile": {"email": valid}}]).get_json()["ids"]
    work()
    refused, hashed = (delivery_of(client, admin, event_id) for event_id in ids)
    assert refused["status"] == "skipped" and "no customer information" in refused["last_error"]
    assert hashed["status"] == "delivered"
    [request] = target.wait_for(1)
    [item] = json.loads(request.body)["data"]
    assert item["user_data"] == {"em": sha(valid)}


def test_meta_dates_zips_and_hashes_against_58_kib_values():
    assert meta.meta_normalize("1" * KIB58, "db") is None
    assert meta.meta_normalize("1997-02-16T" + "0" * KIB58, "db") == "19970216"  # an ISO date-time: its date
    assert meta.meta_normalize("1997-02-16" + "-" * KIB58, "db") is None
    assert meta.meta_normalize("9" * 5 + "- " * KIB58, "zp", "us") == "99999"
    assert meta.meta_normalize(" -" * KIB58, "zp") is None
    assert meta.meta_hash("a" * KIB58, "external_id") == sha("a" * KIB58)  # not 64 hex digits: hashed
    assert meta.meta_hash("a" * 64 + "b" * KIB58, "external_id") == sha("a" * 64 + "b" * KIB58)


def test_sms_patterns_against_58_kib_values():
    assert sms.sms_phone("+" + "1-" * (KIB58 // 2)) is None  # separators stripped: far more than 15 digits
    assert sms.sms_phone("0" * KIB58) is None
    assert sms.sms_phone("(" * KIB58 + "+1 555 555 0100") == "+15555550100"
    assert sms.sms_text({"name": "._-" * (KIB58 // 3) + "x"}) == "X"
    assert sms.sms_text({"name": "order" + "._-" * (KIB58 // 3) + "shipped"}) == "Order shipped"
    assert sms.sms_reference("_-" * (KIB58 // 2) + "ab") == "ab"


def test_a_58_kib_phone_through_an_sms_preset(client, admin, make_source, post_events, answering, work):
    """Through ingest: a 58 KiB number made of separators and digits is skipped with the reason; a valid number
    behind 58 KiB of separators is sent as its digits."""
    target = answering(Reply(200, json.dumps({"message-count": "1", "messages": [
        {"to": "15555550100", "status": "0", "message-id": "0A0000000123ABCD1"}]}).encode()))
    response = client.post("/v1/destinations", headers=admin, json={"preset": "sms.vonage", "params": {
        "api_key": "k3y12345", "api_secret": "s3cret", "from": "ShopCo", "url": target.url}})
    assert response.status_code == 201, response.get_json()
    source_id, key = make_source()
    ids = post_events(source_id, key, [
        {"name": "order_completed", "profile": {"phone": "+" + "1-" * (KIB58 // 2)}, "data": {"message": "hi"}},
        {"name": "order_completed", "profile": {"phone": "(" * KIB58 + "+1 555 555 0100"}, "data": {"message": "hi"}},
    ]).get_json()["ids"]
    work()
    junk, sent = (delivery_of(client, admin, event_id) for event_id in ids)
    assert junk["status"] == "skipped"
    assert junk["last_error"] == "profile.phone is not a phone number (6 to 15 digits, + or 00 before the country code)"
    assert sent["status"] == "delivered"
    [request] = target.wait_for(1)
    assert "to=15555550100" in request.body.decode()


def test_slack_escaping_is_plain_replacement_of_58_kib():
    """slack_escape uses no regular expression: three ``str.replace`` calls, linear."""
    assert slack.slack_escape("<&>" * (KIB58 // 3)) == "&lt;&amp;&gt;" * (KIB58 // 3)


def test_comment_stripping_is_linear_on_unterminated_escaped_strings(client, make_source):
    """``loads_lenient`` strips ``//`` comments outside strings. Its string pattern once backtracked from
    every quote of ``"\\"\\"\\"…`` to the end (40,001 characters: 6.2 s; these 200,001: minutes); now a
    string that never closes is consumed once, the body is refused as JSON, and a commented body still
    parses with its URLs intact."""
    hostile = '"' + '\\"' * 100_000
    with pytest.raises(InvalidJSON):
        loads_lenient(hostile)
    assert loads_lenient('{"u": "http://x//y", // note\n "q": "\\"//"}') == {"u": "http://x//y", "q": '"//'}
    source_id, key = make_source("we", "webengage")
    answer = client.post(f"/v1/sources/{source_id}/events", data=hostile.encode(),
                         headers={"Content-Type": "application/json", "X-Hookgate-Key": key})
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["error"]["code"] == "invalid_json"
