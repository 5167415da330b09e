"""Export and import: one instance's configuration moved to another (the same store, flushed) as JSON
with no secret in it; the items that lack secrets wait, disabled, until they are re-entered, then deliver."""

from __future__ import annotations

import base64
import json

import pytest
from click.testing import CliRunner
from standardwebhooks import Webhook

from hookgate.cli import main as cli
from hookgate.errors import DeliveryError
from hookgate.outbound_auth import apply_auth
from hookgate.store import keys

from .receiver import Receiver, Reply

PASSWORD = "b4sic-Pa55word-q1w2e3"
TOKEN = "tok-Bearer-Secret-z9y8x7"
WHSEC = "whsec_" + base64.b64encode(b"exchange-signing-secret-0123456789ab").decode()
HOOK_PATH = "/hooks/catch/424242/hook-Secret-k5j4h3/"
HOOK_URL = "https://hooks.zapier.com" + HOOK_PATH
HEADER_SECRET = "hdr-Secret-m6n5b4"


@pytest.fixture
def site(rt):
    """A receiver that accepts everything (Zapier's success body) and verifies Standard Webhooks."""
    verified: list[str] = []

    def reply(request):
        if request.path.startswith("/signed"):
            try:
                Webhook(WHSEC).verify(request.body, {k.lower(): v for k, v in request.headers.items()})
                verified.append(request.path)
            except Exception:
                return Reply(401)
        return Reply(200, b'{"status": "success", "id": "x"}')

    server = Receiver(reply).start()
    server.verified = verified
    yield server
    server.stop()


def call(client, admin, method: str, path: str, status: int, **kwargs):
    response = client.open(path, method=method, headers=admin, **kwargs)
    assert response.status_code == status, response.get_json()
    return response.get_json()


@pytest.fixture
def build(client, admin, site):
    """The first instance's configuration; returns its ids."""
    def make() -> dict[str, str]:
        ids: dict[str, str] = {}
        ids["policy"] = call(client, admin, "POST", "/v1/policies", 201,
                             json={"name": "gentle", "concurrency": 2, "rate_per_s": 5})["id"]
        ids["basic"] = call(client, admin, "POST", "/v1/auth-profiles", 201, json={
            "name": "crm basic", "type": "basic", "endpoint_prefix": site.url + "/basic",
            "username": "hook", "password": PASSWORD})["id"]
        ids["bearer"] = call(client, admin, "POST", "/v1/auth-profiles", 201, json={
            "name": "api bearer", "type": "bearer", "endpoint_prefix": site.url + "/bearer", "token": TOKEN})["id"]
        ids["signed"] = call(client, admin, "POST", "/v1/auth-profiles", 201, json={
            "name": "signing", "type": "standard_webhooks", "endpoint_prefix": site.url + "/signed",
            "secret": WHSEC})["id"]
        ids["headers"] = call(client, admin, "POST", "/v1/auth-profiles", 201, json={
            "name": "header key", "type": "headers", "endpoint_prefix": site.url + "/hdr",
            "headers": [{"name": "X-Api-Key", "value": HEADER_SECRET}, {"name": "X-Team", "value": "blue",
                                                                        "secret": False}]})["id"]
        ids["plain"] = call(client, admin, "POST", "/v1/destinations", 201, json={
            "name": "plain", "url": site.url + "/plain", "events": ["order.*"]})["id"]
        ids["d_basic"] = call(client, admin, "POST", "/v1/destinations", 201, json={
            "name": "crm", "url": site.url + "/basic/in", "auth_profile_id": ids["basic"], "policy_id": ids["policy"],
            "fail_destination_id": ids["plain"], "events": ["order.*"],
            "template": '{"order": {{ event.data.order_id | tojson }}}'})["id"]
        ids["d_bearer"] = call(client, admin, "POST", "/v1/destinations", 201, json={
            "name": "api", "url": site.url + "/bearer/in", "auth_profile_id": ids["bearer"]})["id"]
        ids["d_signed"] = call(client, admin, "POST", "/v1/destinations", 201, json={
            "name": "signed", "url": site.url + "/signed/in", "auth_profile_id": ids["signed"]})["id"]
        ids["zap"] = call(client, admin, "POST", "/v1/destinations", 201, json={
            "preset": "zapier.catch_hook", "params": {"hook_url": HOOK_URL, "url": site.url},
            "events": ["order.*"]})["id"]
        call(client, admin, "POST", "/v1/presets", 201, json={
            "name": "acme.crm", "from_destination": ids["d_basic"],
            "params": [{"name": "api_key", "secret": True, "required": True}, {"name": "region", "default": "eu"}]})
        return ids
    return make


def secrets_at_rest(db) -> list[str]:
    """Every ciphertext the store holds for the configuration."""
    found: list[str] = []
    for raw in db.hvals(keys.auth_profiles):
        profile = json.loads(raw)
        found += [profile[n] for n in ("password", "token") if profile.get(n)]
        found += [e["value"] for e in profile.get("secrets", [])]
        found += [h["value"] for h in profile.get("headers", []) if h["secret"]]
    for raw in db.hvals(keys.destinations):
        found += list((json.loads(raw).get("preset") or {}).get("secrets", {}).values())
    return found


def normalised(document: dict) -> dict:
    """An export without what may differ after a round trip: when, and a destination's enabled state."""
    out = {k: v for k, v in document.items() if k != "exported_at"}
    for section in ("policies", "auth_profiles", "destinations"):
        out[section] = [{k: v for k, v in item.items()
                         if k not in ("updated_at", "enabled", "disabled_reason", "disabled_detail")}
                        for item in document[section]]
    return out


def test_export_carries_no_secret_and_imports_back_to_the_same_configuration(build, client, admin, db, site):
    ids = build()
    ciphertexts = secrets_at_rest(db)
    assert len(ciphertexts) == 5  # password, token, signing secret, header value, hook_url
    response = client.get("/v1/export", headers=admin)
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    for secret in (PASSWORD, TOKEN, WHSEC, WHSEC[6:], HOOK_URL, HOOK_PATH.strip("/"), "hook-Secret-k5j4h3",
                   HEADER_SECRET, *ciphertexts):
        assert secret not in text
    assert "gAAAAA" not in text  # no Fernet token of any kind
    exported = response.get_json()
    assert exported["hookgate_export"] == 1
    profiles = {p["id"]: p for p in exported["auth_profiles"]}
    assert profiles[ids["basic"]]["secrets_needed"] == ["password"] and "password" not in profiles[ids["basic"]]
    assert profiles[ids["basic"]]["username"] == "hook"
    assert profiles[ids["bearer"]]["secrets_needed"] == ["token"]
    assert profiles[ids["signed"]]["secrets_needed"] == ["secret"] and "secrets" not in profiles[ids["signed"]]
    assert profiles[ids["headers"]]["headers"] == [{"name": "X-Api-Key", "secret": True},
                                                   {"name": "X-Team", "value": "blue", "secret": False}]
    zap = next(d for d in exported["destinations"] if d["id"] == ids["zap"])
    assert zap["preset"]["secret_params"] == ["hook_url"] and "secrets" not in zap["preset"]
    assert zap["preset"]["params"] == {"url": site.url} and zap["url"].startswith(site.url)
    assert [p["name"] for p in exported["presets"]] == ["acme.crm"]  # users' presets only
    assert [p["id"] for p in exported["policies"]] == [ids["policy"]]

    db.flushdb()  # the second instance
    report = call(client, admin, "POST", "/v1/import", 200, json=exported)
    assert report["imported"] == {"policies": 1, "auth_profiles": 4, "presets": 1, "destinations": 5}
    again = call(client, admin, "GET", "/v1/export", 200)
    assert normalised(again) == normalised(exported)
    assert call(client, admin, "GET", "/v1/presets/acme.crm", 200)["params"][0]["secret"] is True
    assert call(client, admin, "GET", f"/v1/destinations/{ids['d_basic']}", 200)["fail_destination_id"] == ids["plain"]


def test_the_report_names_every_missing_secret_and_those_items_wait_disabled(build, client, admin, db, rt, site,
                                                                            make_source, post_events, work):
    ids = build()
    exported = call(client, admin, "GET", "/v1/export", 200)
    db.flushdb()
    report = call(client, admin, "POST", "/v1/import", 200, json=exported)
    needs = sorted((n["kind"], n["id"], tuple(n["fields"]), n.get("auth_profile_id")) for n in report["needs_secrets"])
    assert needs == sorted([
        ("auth_profile", ids["basic"], ("password",), None),
        ("auth_profile", ids["bearer"], ("token",), None),
        ("auth_profile", ids["signed"], ("secret",), None),
        ("auth_profile", ids["headers"], ("headers",), None),
        ("destination", ids["d_basic"], (), ids["basic"]),
        ("destination", ids["d_bearer"], (), ids["bearer"]),
        ("destination", ids["d_signed"], (), ids["signed"]),
        ("destination", ids["zap"], ("params.hook_url",), None),
    ])
    for name in ("d_basic", "d_bearer", "d_signed", "zap"):
        shown = call(client, admin, "GET", f"/v1/destinations/{ids[name]}", 200)
        assert shown["enabled"] is False and shown["disabled_reason"] == "needs_secrets"
    assert call(client, admin, "GET", f"/v1/destinations/{ids['plain']}", 200)["enabled"] is True
    basic = call(client, admin, "GET", f"/v1/auth-profiles/{ids['basic']}", 200)
    assert basic["needs_secrets"] == ["password"] and basic.get("password") is None

    shown = call(client, admin, "GET", f"/v1/destinations/{ids['zap']}", 200)
    assert shown["preset"]["needs_secrets"] == ["hook_url"]
    # A trial sends nothing while a secret is missing (an empty secret would reach the base URL).
    tried = call(client, admin, "POST", f"/v1/destinations/{ids['zap']}/test", 200, json={"send": True})
    assert tried["error"]["code"] == "render_failed" and "hook_url" in tried["error"]["message"]
    assert "response" not in tried

    # Enabling before the secrets are back is refused, saying what is missing.
    refused = client.post(f"/v1/destinations/{ids['zap']}/enable", headers=admin)
    assert refused.status_code == 409 and refused.get_json()["error"]["details"]["needs_secrets"] == ["params.hook_url"]
    refused = client.patch(f"/v1/destinations/{ids['d_basic']}", json={"enabled": True}, headers=admin)
    assert refused.status_code == 409 and ids["basic"] in refused.get_json()["error"]["message"]

    # The profile itself is never applied: not by the delivery path, not by its test request.
    profile = json.loads(db.hget(keys.auth_profiles, ids["basic"]))
    with pytest.raises(DeliveryError) as caught:
        apply_auth(profile, rt.secrets, db, method="POST", url=site.url + "/basic/in", headers={}, body=b"{}",
                   event_id="evt_1")
    assert "re-entered" in caught.value.message and not caught.value.details.get("retryable")
    probe = call(client, admin, "POST", f"/v1/auth-profiles/{ids['basic']}/test", 200, json={"path": "/probe"})
    assert probe["ok"] is False and "re-entered" in probe["error"]

    source_id, key = make_source()
    post_events(source_id, key, {"name": "order.paid", "user_id": "u1", "data": {"order_id": "A-1"}})
    work()
    assert [r.path for r in site.wait_for(1)] == ["/plain"]  # only the destination that needs nothing

    # Re-enter every secret; the markers go, the destinations can be enabled, and they deliver.
    assert "needs_secrets" not in call(client, admin, "PATCH", f"/v1/auth-profiles/{ids['basic']}", 200,
                                       json={"password": PASSWORD})
    call(client, admin, "PATCH", f"/v1/auth-profiles/{ids['bearer']}", 200, json={"token": TOKEN})
    call(client, admin, "PATCH", f"/v1/auth-profiles/{ids['signed']}", 200, json={"secret": WHSEC})
    again = client.patch(f"/v1/auth-profiles/{ids['signed']}", json={"secret": WHSEC}, headers=admin)
    assert again.status_code == 422  # once re-entered, a signing secret changes by rotation only
    zap = call(client, admin, "PATCH", f"/v1/destinations/{ids['zap']}", 200, json={"params": {"hook_url": HOOK_URL}})
    assert zap["enabled"] is False  # re-entering does not enable by itself
    for name in ("d_basic", "d_bearer", "d_signed", "zap"):
        assert call(client, admin, "POST", f"/v1/destinations/{ids[name]}/enable", 200)["enabled"] is True
    post_events(source_id, key, {"name": "order.shipped", "user_id": "u1", "data": {"order_id": "A-2"}})
    work()
    requests = {r.path: r for r in site.wait_for(6)[1:]}
    assert set(requests) == {"/plain", "/basic/in", "/bearer/in", "/signed/in", HOOK_PATH}
    expected_basic = "Basic " + base64.b64encode(f"hook:{PASSWORD}".encode()).decode()
    assert requests["/basic/in"].header("Authorization") == expected_basic
    assert json.loads(requests["/basic/in"].body) == {"order": "A-2"}  # its template moved too
    assert requests["/bearer/in"].header("Authorization") == f"Bearer {TOKEN}"
    assert site.verified == ["/signed/in"]
    assert json.loads(requests[HOOK_PATH].body)["data.order_id"] == "A-2"


def test_a_delivery_through_a_profile_without_its_secrets_is_not_sent_nor_retried(build, client, admin, db, site,
                                                                                 make_source, post_events, work):
    ids = build()
    exported = call(client, admin, "GET", "/v1/export", 200)
    db.flushdb()
    call(client, admin, "POST", "/v1/import", 200, json=exported)
    # Defence in depth: even a destination enabled behind the API's back does not send without credentials.
    forced = {**json.loads(db.hget(keys.destinations, ids["d_bearer"])), "enabled": True}
    db.hset(keys.destinations, ids["d_bearer"], json.dumps(forced))
    db.set(keys.config_version, "forced")
    source_id, key = make_source()
    event_id = post_events(source_id, key, {"name": "order.paid", "user_id": "u1"}).get_json()["ids"][0]
    work()
    assert [r.path for r in site.wait_for(1)] == ["/plain"]
    deliveries = call(client, admin, "GET", f"/v1/deliveries?destination_id={ids['d_bearer']}", 200)["items"]
    [delivery] = [d for d in deliveries if d["event_id"] == event_id]
    assert delivery["status"] == "error" and not delivery.get("next_attempt_at")
    assert "re-entered" in delivery["last_error"]


def test_importing_the_same_document_again_changes_nothing_and_keeps_re_entered_secrets(build, client, admin, db):
    ids = build()
    exported = call(client, admin, "GET", "/v1/export", 200)
    db.flushdb()

    def stored() -> dict:
        out = {}
        for key in (keys.destinations, keys.auth_profiles, keys.policies, keys.presets):
            out[key] = {k: {f: v for f, v in json.loads(raw).items() if f not in ("updated_at", "disabled_at")}
                        for k, raw in db.hgetall(key).items()}
        return out

    first = call(client, admin, "POST", "/v1/import", 200, json=exported)
    state = stored()
    second = call(client, admin, "POST", "/v1/import", 200, json=exported)
    assert stored() == state and second["needs_secrets"] == first["needs_secrets"]
    assert second["replaced"] == {"policies": 1, "auth_profiles": 4, "presets": 1, "destinations": 5}

    # Secrets re-entered here stay when the same document comes again (the profile is unchanged).
    call(client, admin, "PATCH", f"/v1/auth-profiles/{ids['bearer']}", 200, json={"token": TOKEN})
    call(client, admin, "POST", f"/v1/destinations/{ids['d_bearer']}/enable", 200)
    third = call(client, admin, "POST", "/v1/import", 200, json=exported)
    assert ids["bearer"] not in {n["id"] for n in third["needs_secrets"]}
    assert "needs_secrets" not in json.loads(db.hget(keys.auth_profiles, ids["bearer"]))
    assert call(client, admin, "GET", f"/v1/destinations/{ids['d_bearer']}", 200)["enabled"] is True

    # ...but not when the document moves the profile elsewhere: then this instance's own destination waits too.
    moved = json.loads(json.dumps(exported))
    bearer = next(p for p in moved["auth_profiles"] if p["id"] == ids["bearer"])
    bearer["endpoint_prefix"] = bearer["endpoint_prefix"].rsplit("/", 1)[0]
    moved["destinations"] = [d for d in moved["destinations"] if d["id"] != ids["d_bearer"]]
    fourth = call(client, admin, "POST", "/v1/import", 200, json=moved)
    assert {(n["kind"], n["id"]) for n in fourth["needs_secrets"]} >= {("auth_profile", ids["bearer"]),
                                                                       ("destination", ids["d_bearer"])}
    shown = call(client, admin, "GET", f"/v1/destinations/{ids['d_bearer']}", 200)
    assert shown["enabled"] is False and shown["disabled_reason"] == "needs_secrets"


def test_skip_mode_leaves_existing_ids_alone(build, client, admin, db):
    ids = build()
    exported = call(client, admin, "GET", "/v1/export", 200)
    call(client, admin, "PATCH", f"/v1/policies/{ids['policy']}", 200, json={"concurrency": 9})
    db.hdel(keys.destinations, ids["zap"])
    report = call(client, admin, "POST", "/v1/import?mode=skip", 200, json=exported)
    assert report["skipped"] == {"policies": 1, "auth_profiles": 4, "presets": 1, "destinations": 4}
    assert report["imported"]["destinations"] == 1
    assert [n["id"] for n in report["needs_secrets"]] == [ids["zap"]]
    assert call(client, admin, "GET", f"/v1/policies/{ids['policy']}", 200)["concurrency"] == 9
    assert "needs_secrets" not in call(client, admin, "GET", f"/v1/auth-profiles/{ids['basic']}", 200)
    assert call(client, admin, "POST", "/v1/import?mode=merge", 422, json=exported)


def bad(exported: dict, change) -> dict:
    document = json.loads(json.dumps(exported))
    change(document)
    return document


def test_a_bad_document_is_refused_whole_with_details_and_nothing_is_written(build, client, admin, db):
    ids = build()
    exported = call(client, admin, "GET", "/v1/export", 200)
    db.flushdb()

    def first(section: str, key: str | None = None):
        return lambda doc: next(i for i in doc[section] if key is None or i["id"] == ids[key])

    cases = [
        ([1, 2], "_schema"),
        ({"destinations": []}, "hookgate_export"),
        (bad(exported, lambda d: d.update(hookgate_export=2)), "hookgate_export"),
        (bad(exported, lambda d: d.update(policies="nope")), "policies"),
        (bad(exported, lambda d: first("destinations", "d_basic")(d).update(policy_id="pol_missing")), "destinations"),
        (bad(exported, lambda d: first("destinations", "d_basic")(d).update(fail_destination_id="dst_gone")),
         "destinations"),
        (bad(exported, lambda d: d.update(auth_profiles=[p for p in d["auth_profiles"] if p["id"] != ids["basic"]])),
         "destinations"),
        (bad(exported, lambda d: first("auth_profiles", "basic")(d).update(password="plain-text")), "auth_profiles"),
        (bad(exported, lambda d: first("destinations", "zap")(d)["preset"].update(secrets={"hook_url": "x"})),
         "destinations"),
        (bad(exported, lambda d: first("destinations", "plain")(d).update(template="{% if %}")), "destinations"),
        (bad(exported, lambda d: first("destinations", "plain")(d).update(colour="red")), "destinations"),
        (bad(exported, lambda d: d["policies"].append(dict(d["policies"][0]))), "policies"),
        (bad(exported, lambda d: first("auth_profiles", "bearer")(d).update(endpoint_prefix="ftp://x")),
         "auth_profiles"),
        (bad(exported, lambda d: d["presets"][0].update(name="zapier.catch_hook")), "presets"),
    ]
    for document, section in cases:
        response = client.post("/v1/import", json=document, headers=admin)
        assert response.status_code == 422, (section, response.get_json())
        assert section in response.get_json()["error"]["details"], (section, response.get_json())
        assert db.dbsize() == 0, section  # all or nothing: not even the valid policy was written
    unknown = client.post("/v1/import", json=bad(exported, lambda d: d.update(hookgate_export=2)), headers=admin)
    assert "version" in unknown.get_json()["error"]["message"]
    reference = client.post("/v1/import", json=cases[4][0], headers=admin).get_json()["error"]["details"]
    assert reference == {"destinations": {ids["d_basic"]: {"policy_id": ["No policy 'pol_missing' in the "
                                                                         "document or here."]}}}


@pytest.mark.parametrize("kind", [["basic"], {"basic": True}])
def test_an_imported_auth_profile_whose_type_is_not_a_string_is_a_422(client, admin, kind):
    """Regression: an imported auth profile whose type is not a string answered 500, not 422."""
    profile = client.post("/v1/auth-profiles", headers=admin, json={
        "name": "b", "type": "basic", "endpoint_prefix": "https://x.example/basic", "username": "u",
        "password": "p4ssword"})
    assert profile.status_code == 201, profile.get_json()
    document = client.get("/v1/export", headers=admin).get_json()
    document["auth_profiles"][0]["type"] = kind
    refused = client.post("/v1/import", headers=admin, json=document)
    assert refused.status_code == 422, (refused.status_code, refused.get_json())
    assert "type" in json.dumps(refused.get_json()["error"]["details"])


def test_the_cli_exports_to_a_file_and_imports_it(build, client, admin, db, redis_url, tmp_path):
    ids = build()
    runner = CliRunner()
    env = {"HOOKGATE_REDIS_URL": redis_url}
    target = tmp_path / "hookgate.json"
    result = runner.invoke(cli, ["export", "-o", str(target)], env=env)
    assert result.exit_code == 0, result.output
    document = json.loads(target.read_text())
    assert PASSWORD not in target.read_text() and {d["id"] for d in document["destinations"]} >= {ids["zap"]}
    printed = runner.invoke(cli, ["export"], env=env)
    assert printed.exit_code == 0 and json.loads(printed.stdout)["hookgate_export"] == 1

    db.flushdb()
    result = runner.invoke(cli, ["import", str(target)], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["imported"]["destinations"] == 5 and len(report["needs_secrets"]) == 8
    assert call(client, admin, "GET", f"/v1/destinations/{ids['zap']}", 200)["enabled"] is False

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**document, "hookgate_export": 7}))
    result = runner.invoke(cli, ["import", str(broken)], env=env)
    assert result.exit_code != 0 and "unknown export version 7" in result.output
    result = runner.invoke(cli, ["import", str(target)], env={"HOOKGATE_REDIS_URL": ""})
    assert result.exit_code != 0 and "HOOKGATE_REDIS_URL" in result.output
