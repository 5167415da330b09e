"""Rendering: templates are user code (sandboxed, bounded in time and size, checked against their format);
and the requests a receiver gets: the default body, each method and format with its content type,
destination headers, platform-shaped envelopes, XML for feedback and surveys, null placeholders, reset to
default, and extra properties."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from hookgate.errors import TemplateError
from hookgate.rendering import RenderError, default_template, render_body, validate_template

EVENT = {"id": "evt_1", "name": "signup", "user_id": "u1", "data": {"n": 3, "items": [1, 2]}, "profile": {}}


def render(template, fmt="text", max_bytes=10_000, timeout_s=1.0):
    return render_body(template, fmt, {"event": EVENT}, max_bytes=max_bytes, timeout_s=timeout_s).body.decode()


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ event.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{% set x = event.data.items.append(4) %}{{ x }}",
    "{{ event.update({'name': 'pwned'}) }}",
])
def test_sandbox_escapes_fail(template):
    with pytest.raises(RenderError):
        render(template)
    assert EVENT["name"] == "signup" and EVENT["data"]["items"] == [1, 2]


def test_output_size_is_bounded():
    with pytest.raises(RenderError, match="larger than"):
        render("{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", max_bytes=50_000)


def test_render_time_is_bounded():
    with pytest.raises(RenderError, match="too long"):
        render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", timeout_s=0.2)


def test_json_output_must_parse_and_xml_must_be_well_formed():
    assert render('{"n": {{ event.data.n }}}', "json") == '{"n": 3}'
    with pytest.raises(RenderError, match="not valid JSON"):
        render('{"n": {{ event.data.n }}', "json")
    with pytest.raises(RenderError, match="well-formed XML"):
        render("<a><b></a>", "xml")
    bomb = '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><l>&b;</l>'
    with pytest.raises(RenderError):
        render(bomb, "xml")


def test_missing_values_render_empty_in_text_and_null_through_tojson():
    assert render("[{{ event.profile.email }}]") == "[]"
    assert render("{{ event.profile.email | tojson }}", "json") == "null"
    assert render("{{ event.nothing.deeper.still | tojson }}", "json") == "null"


def test_syntax_errors_name_their_line():
    with pytest.raises(TemplateError) as caught:
        validate_template("line one\n{% if %}\n")
    assert caught.value.details["template"]["line"] == 2
    validate_template("{{ event | tojson }}")


# -- bodies out, as a receiver gets them ---------------------------------------------------------------

def test_default_body_is_the_canonical_event_as_json(make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url)
    event_id = post_events(source_id, key, {"name": "purchase", "user_id": "u9", "data": {"sku": "A1"},
                                            "profile": {"email": "a@example.com"}}).get_json()["ids"][0]
    work()
    [request] = receiver.wait_for(1)
    event = json.loads(request.body)
    assert event["id"] == event_id and event["source"] == source_id
    assert event["name"] == "purchase" and event["category"] == "activity"
    assert event["data"] == {"sku": "A1"} and event["profile"] == {"email": "a@example.com"}
    assert event["time"].endswith("Z")


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_each_method_is_sent_as_configured(method, make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url + "/m", method=method.lower())
    post_events(source_id, key, {"name": "ping"})
    work()
    [request] = receiver.wait_for(1)
    assert request.method == method
    if method == "GET":
        assert request.body == b""
    else:
        assert json.loads(request.body)["name"] == "ping"


def test_each_format_renders_and_declares_its_content_type(
    make_source, make_destination, post_events, receiver, work
):
    source_id, key = make_source()
    make_destination(receiver.url + "/json", format="json")
    make_destination(receiver.url + "/xml", format="xml")
    make_destination(receiver.url + "/text", format="text")
    make_destination(receiver.url + "/form", format="form")
    make_destination(receiver.url + "/form-custom", format="form",
                     template='{"To": {{ event.data.phone | tojson }}, "Body": "Hi {{ event.profile.first_name }}"}')
    post_events(source_id, key, {"name": "signup", "user_id": "u<1>", "data": {"phone": "+15550001"},
                                 "profile": {"first_name": "Ada"}})
    work()
    arrived = {r.path: r for r in receiver.wait_for(5)}
    assert arrived["/json"].header("Content-Type") == "application/json"
    assert json.loads(arrived["/json"].body)["user_id"] == "u<1>"
    assert arrived["/xml"].header("Content-Type") == "application/xml"
    assert b"<user_id>u&lt;1&gt;</user_id>" in arrived["/xml"].body and arrived["/xml"].body.startswith(b"<event>")
    assert arrived["/text"].header("Content-Type").startswith("text/plain")
    assert arrived["/text"].body.startswith(b"signup (activity) user=u<1>")
    assert arrived["/form"].header("Content-Type") == "application/x-www-form-urlencoded"
    assert b"name=signup" in arrived["/form"].body and b"data.phone=%2B15550001" in arrived["/form"].body
    assert arrived["/form-custom"].body == b"To=%2B15550001&Body=Hi+Ada"


def test_destination_headers_are_sent(make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url, headers={"X-Team": "growth", "Authorization": "Bearer abc"})
    post_events(source_id, key, {"name": "ping"})
    work()
    [request] = receiver.wait_for(1)
    assert request.header("X-Team") == "growth" and request.header("Authorization") == "Bearer abc"


def test_webengage_envelope(make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url, payload_style="webengage")
    post_events(source_id, key, {"name": "purchase", "user_id": "u1", "anonymous_id": "a1",
                                 "data": {"sku": "A1"}, "system": {"license_code": "~99"}})
    work()
    body = json.loads(receiver.wait_for(1)[0].body)
    assert body["event_name"] == "purchase" and body["user_id"] == "u1" and body["anonymous_id"] == "a1"
    assert body["event_data"] == {"sku": "A1"} and body["license_code"] == "~99"
    assert body["category"] == "application" and body["event_time"].endswith("Z")


def test_xtremepush_envelope_with_null_for_missing_data(make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source(kind="xtremepush")
    make_destination(receiver.url, payload_style="xtremepush")
    post_events(source_id, key, {"event": "message_open", "time": 1709629964,
                                 "properties": {"message_type": "email", "campaign_id": 77, "user_id": "c-42"}})
    work()
    body = json.loads(receiver.wait_for(1)[0].body)
    assert body["event"] == "message_open" and body["time"] == 1709629964
    properties = body["properties"]
    assert properties["message_type"] == "email" and properties["user_id"] == "c-42"
    assert properties["device_id"] is None and properties["external_message_id"] is None
    assert str(properties["campaign_id"]) == "77"


def test_custom_template_uses_profile_placeholders_and_missing_ones_are_null(make_source, make_destination,
                                                                            post_events, receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url, template='{"name": "{{ profile.first_name }}", "email": {{ profile.email }}, '
                                           '"tier": {{ event.profile.tier | tojson }}}')
    post_events(source_id, key, {"name": "x", "profile": {"first_name": "Ada", "tier": "gold"}})
    work()
    assert json.loads(receiver.wait_for(1)[0].body) == {"name": "Ada", "email": None, "tier": "gold"}


def test_feedback_and_survey_responses_get_their_own_xml_root(make_source, make_destination, post_events,
                                                             receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url, format="xml")
    post_events(source_id, key, [{"name": "FEEDBACK_SUBMIT", "category": "feedback", "data": {"rating": 4}},
                                 {"name": "SURVEY_RESPONSE_SUBMIT", "category": "survey_response"},
                                 {"name": "purchase"}])
    work()
    roots = sorted(ET.fromstring(r.body).tag for r in receiver.wait_for(3))
    assert roots == ["event", "feedback", "surveyResponse"]


def test_reset_to_default_restores_the_default_body(client, admin, make_source, make_destination, post_events,
                                                    receiver, work):
    source_id, key = make_source()
    destination = make_destination(receiver.url, template='{"custom": true}')
    assert destination["template_in_use"] == '{"custom": true}'
    reset = client.patch(f"/v1/destinations/{destination['id']}", json={"template": None}, headers=admin).get_json()
    assert reset["template"] is None and reset["template_in_use"] == default_template("json")
    post_events(source_id, key, {"name": "after-reset"})
    work()
    assert json.loads(receiver.wait_for(1)[0].body)["name"] == "after-reset"


def test_extra_properties_are_added_to_every_payload(make_source, make_destination, post_events, receiver, work):
    source_id, key = make_source()
    extra = {"tenant": "acme", "env": "prod"}
    make_destination(receiver.url + "/json", extra_properties=extra)
    make_destination(receiver.url + "/form", format="form", extra_properties=extra)
    make_destination(receiver.url + "/xml", format="xml", extra_properties=extra)
    post_events(source_id, key, {"name": "x"})
    work()
    arrived = {r.path: r.body for r in receiver.wait_for(3)}
    assert json.loads(arrived["/json"])["tenant"] == "acme" and json.loads(arrived["/json"])["name"] == "x"
    assert b"tenant=acme" in arrived["/form"] and b"env=prod" in arrived["/form"]
    root = ET.fromstring(arrived["/xml"])
    assert root.find("tenant").text == "acme" and root.find("name").text == "x"
