"""Bodies out: per-format defaults, platform-shaped envelopes, XML for feedback and surveys, null
placeholders, reset to default, and extra properties — as a receiver gets them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from hookgate.rendering import default_template


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
