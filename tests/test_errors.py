"""Bad input gets a JSON error of one shape and the right status; no input makes the API answer 500."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["message"], str) and error["message"]
    if code:
        assert error["code"] == code
    return error


def test_management_needs_the_admin_token(client):
    assert_error(client.get("/v1/destinations"), 401, "unauthorized")
    assert_error(client.get("/v1/destinations", headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(client.get("/v1/sources", headers={"Authorization": "Basic abc"}), 401)
    assert_error(client.get("/v1/deliveries", headers={"Authorization": "Bearer "}), 401)
    assert client.get("/v1/deliveries").headers["WWW-Authenticate"] == "Bearer"


def test_ingest_needs_the_source_key(client, make_source, make_destination, receiver):
    source_id, key = make_source()
    other_id, other_key = make_source("other")
    url = f"/v1/sources/{source_id}/events"
    assert_error(client.post(url, json={"name": "x"}), 401)
    assert_error(client.post(url, json={"name": "x"}, headers={"X-Hookgate-Key": "hgk_wrong"}), 401)
    assert_error(client.post(url, json={"name": "x"}, headers={"X-Hookgate-Key": other_key}), 401)
    assert client.post(url, json={"name": "x"}, headers={"Authorization": f"Bearer {key}"}).status_code == 202


def test_unknown_ids_are_404(client, admin):
    for path in ("/v1/sources/src_nope", "/v1/destinations/dst_nope", "/v1/deliveries/dlv_nope"):
        assert_error(client.get(path, headers=admin), 404, "not_found")
    assert_error(client.patch("/v1/destinations/dst_nope", json={"name": "x"}, headers=admin), 404)
    assert_error(client.delete("/v1/destinations/dst_nope", headers=admin), 404)
    assert_error(client.post("/v1/destinations/dst_nope/enable", headers=admin), 404)
    assert_error(client.post("/v1/sources/src_nope/events", json={"name": "x"}, headers={"X-Hookgate-Key": "k"}), 404)
    assert_error(client.get("/v1/no-such-route", headers=admin), 404)


def test_wrong_method_is_405_json(client, admin):
    response = client.put("/v1/destinations", json={}, headers=admin)
    assert_error(response, 405)
    assert "POST" in response.headers["Allow"]


def test_bad_json_is_400_with_its_position(client, admin, make_source):
    error = assert_error(client.post("/v1/destinations", data='{"name": "x",\n "url": }',
                                     content_type="application/json", headers=admin), 400, "invalid_json")
    assert error["details"]["line"] == 2
    source_id, key = make_source()
    assert_error(client.post(f"/v1/sources/{source_id}/events", data=b"\xff\xfe", content_type="application/json",
                             headers={"X-Hookgate-Key": key}), 400, "invalid_json")


def test_wrong_content_type_is_415(client, admin, make_source):
    assert_error(client.post("/v1/destinations", data="name=x", content_type="application/x-www-form-urlencoded",
                             headers=admin), 415, "unsupported_media_type")
    source_id, key = make_source()
    assert_error(client.post(f"/v1/sources/{source_id}/events", data='{"name": "x"}', content_type="text/plain",
                             headers={"X-Hookgate-Key": key}), 415)
    assert client.post(f"/v1/sources/{source_id}/events", data='{"name": "x"}',
                       content_type="application/vnd.acme+json", headers={"X-Hookgate-Key": key}).status_code == 202


def test_body_over_the_limit_is_413(app, client, make_source):
    source_id, key = make_source()
    limit = app.config["MAX_CONTENT_LENGTH"]
    big = json.dumps({"name": "x", "data": {"blob": "a" * limit}})
    error = assert_error(client.post(f"/v1/sources/{source_id}/events", data=big, content_type="application/json",
                                     headers={"X-Hookgate-Key": key}), 413, "payload_too_large")
    # The answer says the limit, in bytes (it did not): a sender can tell how much to send at once.
    assert f"{limit} bytes" in error["message"] and "HOOKGATE_MAX_BODY_BYTES" in error["message"]
    assert error["details"] == {"limit_bytes": limit, "received_bytes": len(big)}


def test_schema_errors_are_422_listing_each_field(client, admin):
    error = assert_error(client.post("/v1/destinations", json={
        "url": "ftp://example.com", "method": "TRACE", "format": "yaml", "events": [], "timeout_s": 0,
        "headers": {"Bad Name": "x", "X-Ok": "a\r\nInjected: 1", "Host": "evil"}, "colour": "red",
    }, headers=admin), 422, "validation_failed")
    details = error["details"]
    for field in ("name", "url", "method", "format", "events", "timeout_s", "headers", "colour"):
        assert field in details, field
    assert set(details["headers"]) == {"Bad Name", "X-Ok", "Host"}


def test_template_that_does_not_compile_is_422_with_its_line(client, admin, receiver):
    error = assert_error(client.post("/v1/destinations", json={
        "name": "x", "url": receiver.url, "events": ["*"], "template": '{\n  "a": {{ event.name }\n}',
    }, headers=admin), 422, "template_invalid")
    assert error["details"]["template"]["line"] == 2


def test_invalid_events_are_422_by_item(client, make_source):
    source_id, key = make_source()
    url = f"/v1/sources/{source_id}/events"
    headers = {"X-Hookgate-Key": key}
    error = assert_error(client.post(url, json={"data": {}}, headers=headers), 422)
    assert "name" in error["details"]
    error = assert_error(client.post(url + "?atomic=true", json=[{"name": "ok"}, {"name": 5}, "nope",
                                                             {"name": "x", "time": "noon"}], headers=headers), 422)
    assert set(error["details"]) == {"1", "2", "3"}
    error = assert_error(client.post(url, json=[{"name": 5}, "nope"], headers=headers), 422)
    assert set(error["details"]) == {"0", "1"}
    assert_error(client.post(url, json=[], headers=headers), 422)
    assert_error(client.post(url, json=[{"name": "x"}] * 1001, headers=headers), 422)
    assert_error(client.post(url, json="just a string", headers=headers), 422)


def test_bad_query_parameters_are_422(client, admin):
    assert_error(client.get("/v1/deliveries?status=lost", headers=admin), 422)
    assert_error(client.get("/v1/deliveries?limit=0", headers=admin), 422)
    assert_error(client.get("/v1/deliveries?limit=abc", headers=admin), 422)
    assert_error(client.get("/v1/deliveries?cursor=zzz", headers=admin), 422)


def test_out_of_range_times_unicode_digits_and_deep_nesting_answer_4xx(client, admin, make_source, post_events):
    """Regression: each of these inputs once made the API answer 500."""
    source_id, key = make_source()
    for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        assert post_events(source_id, key, {"name": "a", "time": moment}).status_code == 422
    mixed = post_events(source_id, key, [{"name": "a"}, {"name": "b", "time": "0001-01-01T00:00:00+01:00"}])
    assert mixed.status_code == 202 and [r["status"] for r in mixed.get_json()["results"]] == ["accepted", "rejected"]
    assert client.get("/v1/deliveries?limit=\u00b2", headers=admin).status_code == 422
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post(f"/v1/sources/{source_id}/events", data=deep, content_type="application/json",
                           headers={"X-Hookgate-Key": key})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_json"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["name", "url", "events", "method", "format", "headers", "template", "timeout_s",
                               "enabled", "retry_schedule", "kind", "data", "profile", "time", "id", "category"])
bodies = st.dictionaries(field_names, json_values, max_size=8) | json_values


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_no_json_body_makes_the_api_answer_500(client, admin, make_source, body):
    for path in ("/v1/destinations", "/v1/sources"):
        response = client.post(path, json=body, headers=admin)
        assert response.status_code in ((415,) if body is None else (201, 422)), response.get_data(as_text=True)
        if response.status_code >= 400:
            assert_error(response, response.status_code)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies | st.lists(st.dictionaries(field_names, json_values, max_size=6), max_size=5))
def test_no_event_body_makes_ingest_answer_500(client, make_source, body):
    source_id, key = make_source()
    response = client.post(f"/v1/sources/{source_id}/events", json=body, headers={"X-Hookgate-Key": key})
    expected = (415,) if body is None else (202, 422)  # null sends no body at all
    assert response.status_code in expected, response.get_data(as_text=True)


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,2", b'"\\ud800"', b"nul\x00l", b"{}" * 1000, b"1e999999"])
def test_raw_garbage_never_answers_500(client, admin, make_source, raw):
    source_id, key = make_source()
    for path, headers in (("/v1/destinations", admin), (f"/v1/sources/{source_id}/events", {"X-Hookgate-Key": key})):
        response = client.post(path, data=raw, content_type="application/json", headers=headers)
        assert 400 <= response.status_code < 500
        assert_error(response, response.status_code)
