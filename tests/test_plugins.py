"""The plugin system: hookspecs, the manager, a third-party package found through its entry point, a
plugin blocked after its destinations were made, and plugin verdicts hookgate cannot act on."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hookgate import create_app, hookspecs, runtime
from hookgate.delivery.worker import run_burst
from hookgate.hookspecs import hookimpl
from hookgate.plugins import BUILTIN_PLUGINS, PluginError, load, make_manager
from hookgate.presets import Preset, Verdict

from .receiver import Receiver, Reply
from .test_presets import CM_TOKEN, PHONE, VONAGE, VONAGE_OK, created, deliveries

EXAMPLE = Path(__file__).parent / "data" / "example_plugin"


def test_every_hookspec_is_documented_and_named_for_the_project():
    specs = [f for name, f in vars(hookspecs).items() if inspect.isfunction(f) and hasattr(f, "hookgate_spec")]
    assert {f.__name__ for f in specs} >= {"register_presets", "register_template_filters",
                                            "register_template_globals", "classify_response"}
    for spec in specs:
        assert spec.__doc__ and len(spec.__doc__.strip()) > 40, spec.__name__


def test_builtins_are_registered_like_any_plugin_and_a_block_list_leaves_one_out():
    manager = make_manager(entry_points=False)
    assert {name for name, _ in manager.list_name_plugin()} >= set(BUILTIN_PLUGINS)
    blocked = make_manager(("zapier",), entry_points=False)
    assert blocked.get_plugin("zapier") is None and blocked.get_plugin("slack") is not None


def test_the_block_list_comes_from_the_environment(settings, client, admin):
    import dataclasses

    app = create_app(dataclasses.replace(settings, blocked_plugins=("zapier",)))
    names = [p["name"] for p in app.test_client().get("/v1/presets", headers=admin).get_json()["items"]]
    assert "zapier.catch_hook" not in names
    assert "zapier.catch_hook" in [p["name"] for p in client.get("/v1/presets", headers=admin).get_json()["items"]]
    from hookgate.config import Settings

    assert Settings.from_env({"HOOKGATE_BLOCK_PLUGINS": " zapier, meta ,"}).blocked_plugins == ("meta", "zapier")


class Misspelt:
    @hookimpl
    def register_preset(self, register):  # the hook is register_presets
        raise AssertionError("never called")


def test_a_misspelt_hook_stops_start_up():
    with pytest.raises(PluginError, match="register_preset"):
        make_manager(entry_points=False, extra=(Misspelt(),))


class Clashing:
    @hookimpl
    def register_template_filters(self):
        return {"tojson": str}


class Twice:
    @hookimpl
    def register_presets(self, register):
        register(Preset(name="zapier.catch_hook", title="again", base_url="https://example.com"))


class NotAPreset:
    @hookimpl
    def register_presets(self, register):
        register({"name": "dict.preset"})


@pytest.mark.parametrize("plugin, message", [(Clashing(), "'tojson' is taken"),
                                             (Twice(), "registered twice"),
                                             (NotAPreset(), "not a hookgate.Preset")])
def test_a_plugin_that_clashes_stops_start_up(plugin, message):
    with pytest.raises(PluginError, match=message):
        load((), (plugin,))


class BadTemplate:
    @hookimpl
    def register_presets(self, register):
        register(Preset(name="bad.preset", title="bad", base_url="https://example.com",
                        template='{"a":\n{{ event.name }'))


def test_a_preset_template_that_does_not_compile_stops_start_up_with_its_line():
    with pytest.raises(PluginError, match="'bad.preset': template does not compile: line 2"):
        load((), (BadTemplate(),))


# -- a third-party package, installed with pip and found through its entry point --------------------

@pytest.fixture(scope="module")
def example_installed(tmp_path_factory) -> Path:
    """pip-installs tests/data/example_plugin into a directory of its own (the package is copied
    first so no build files land in the repository)."""
    work = tmp_path_factory.mktemp("example_plugin")
    shutil.copytree(EXAMPLE, work / "src")
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                    "--target", str(target), str(work / "src")], check=True, capture_output=True, timeout=300)
    assert list(target.glob("hookgate_example-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def with_example(example_installed, settings):
    """The example package on sys.path, and an app that loaded its plugins afresh."""
    sys.path.insert(0, str(example_installed))
    importlib.invalidate_caches()
    load.cache_clear()
    app = create_app(settings)
    runtime.install(app.extensions["hookgate"])
    try:
        yield app
    finally:
        runtime.install(None)
        sys.path.remove(str(example_installed))
        sys.modules.pop("hookgate_example", None)
        importlib.invalidate_caches()
        load.cache_clear()


def test_an_installed_package_adds_its_preset_to_the_cli_with_no_change_to_hookgate(example_installed, redis_url):
    env = {**os.environ, "PYTHONPATH": str(example_installed), "HOOKGATE_REDIS_URL": redis_url}  # the CLI needs a store
    hookgate = [sys.executable, "-m", "hookgate.cli"]
    listed = subprocess.run(hookgate + ["presets", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "example.notify" in listed.stdout and "zapier.catch_hook" in listed.stdout
    shown = subprocess.run(hookgate + ["presets", "show", "example.notify", "--json"], env=env, capture_output=True,
                           text=True, timeout=60)
    preset = json.loads(shown.stdout)
    assert preset["origin"] == "example"
    assert {p["name"]: p["secret"] for p in preset["params"]} == {"workspace": False, "api_key": True, "url": False}
    assert preset["example"]["body"] == {"to": "user_123", "text": "YOUR ORDER A-1001 IS ON ITS WAY.!"}
    blocked = subprocess.run(hookgate + ["presets", "list"], env={**env, "HOOKGATE_BLOCK_PLUGINS": "example"},
                             capture_output=True, text=True, timeout=60)
    assert blocked.returncode == 0 and "example.notify" not in blocked.stdout
    missing = subprocess.run(hookgate + ["presets", "show", "nope.nothing"], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "no preset 'nope.nothing'" in missing.stderr


def test_an_installed_package_s_preset_delivers_with_its_filter_and_its_classification(with_example, admin,
                                                                                      make_source, post_events):
    client = with_example.test_client()
    answers = iter([Reply(200, b'{"accepted": true}'), Reply(200, b'{"accepted": false, "why": "opted out"}'),
                    Reply(200, b'{"busy": true}')])
    receiver = Receiver(lambda request: next(answers)).start()
    try:
        listed = client.get("/v1/presets", headers=admin).get_json()["items"]
        assert "example.notify" in [p["name"] for p in listed]
        made = client.post("/v1/destinations", headers=admin, json={
            "preset": "example.notify", "events": ["order_*"],
            "params": {"workspace": "team a", "api_key": "acme-key-123456", "url": receiver.url}})
        assert made.status_code == 201, made.get_json()
        destination = made.get_json()
        assert "acme-key-123456" not in json.dumps(destination)
        assert destination["preset"]["params"]["api_key"] == "••••••"
        source_id, key = make_source()
        for n in range(3):
            posted = client.post(f"/v1/sources/{source_id}/events", headers={"X-Hookgate-Key": key},
                                 json={"name": "order_shipped", "user_id": f"u{n}", "data": {"message": f"m{n}"}})
            assert posted.status_code == 202
            from hookgate.delivery.worker import run_burst

            run_burst(with_example.extensions["hookgate"])
        assert [r.path for r in receiver.requests] == ["/v1/team%20a/notify"] * 3
        assert receiver.requests[0].header("X-Acme-Key") == "acme-key-123456"
        assert json.loads(receiver.requests[0].body) == {"to": "u0", "text": "M0!"}
        deliveries = client.get(f"/v1/deliveries?destination_id={destination['id']}", headers=admin).get_json()["items"]
        by_user = {}
        for item in deliveries:
            full = client.get(f"/v1/deliveries/{item['id']}", headers=admin).get_json()
            by_user[full["attempt_log"][0]["response_body"]] = full
        delivered = by_user['{"accepted": true}']
        refused = by_user['{"accepted": false, "why": "opted out"}']
        busy = by_user['{"busy": true}']
        assert delivered["status"] == "delivered"
        assert refused["status"] == "error" and "acme refused it: opted out" in refused["last_error"]
        assert busy["status"] == "bounced"  # retried, no sooner than the plugin asked
        assert busy["next_attempt_at"] >= int(time.time() * 1000) + 100_000
        for full in (delivered, refused, busy):
            assert "acme-key-123456" not in json.dumps(full)
    finally:
        receiver.stop()


class Branding:
    @hookimpl
    def register_template_globals(self):
        return {"brand": {"name": "Acme", "colour": "#ff6600"}}

    @hookimpl
    def register_template_filters(self):
        return {"brand_tag": lambda text, brand: f"[{brand['name']}] {text}"}


def test_plugin_globals_and_filters_reach_every_template_and_leave_with_their_plugin():
    from hookgate.errors import TemplateError
    from hookgate.rendering import RenderError, render_body, validate_template

    source = '{{ data.title | brand_tag(brand) }} {{ brand.colour }}'
    try:
        load((), (Branding(),))
        validate_template(source)
        rendered = render_body(source, "text", {"data": {"title": "Hello"}}, max_bytes=1000, timeout_s=1)
        assert rendered.body == b"[Acme] Hello #ff6600"
        with pytest.raises(RenderError, match="SecurityError"):  # the sandbox guards what a plugin hands in
            render_body("{{ brand.__class__.__mro__ }}", "text", {}, max_bytes=1000, timeout_s=1)
    finally:
        load()  # the default plugins again: their filters and globals only
    with pytest.raises(TemplateError, match="No filter named 'brand_tag'"):
        validate_template(source)


class BrokenScreen:
    @hookimpl
    def register_presets(self, register):
        register(Preset(name="broken.screen", title="b", base_url="https://example.com",
                        batch={"size": 2, "max_wait_s": 0},
                        screen=lambda event, params: 1 / 0 if event["name"] == "bad" else None))


def test_a_preset_screen_that_raises_skips_the_event_and_the_batch_still_goes(settings, admin, receiver):
    from hookgate.delivery.worker import run_burst

    app = create_app(settings)
    rt = app.extensions["hookgate"]
    try:
        rt.plugins = load((), (BrokenScreen(),))
        runtime.install(rt)
        client = app.test_client()
        made = client.post("/v1/destinations", headers=admin, json={
            "preset": "broken.screen", "params": {"url": receiver.url}})
        assert made.status_code == 201, made.get_json()
        source = client.post("/v1/sources", headers=admin, json={"name": "s"}).get_json()
        client.post(f"/v1/sources/{source['id']}/events", headers={"X-Hookgate-Key": source["key"]},
                    json=[{"name": "bad"}, {"name": "good"}])
        run_burst(app.extensions["hookgate"])
        assert len(receiver.requests) == 1 and [e["name"] for e in json.loads(receiver.requests[0].body)] == ["good"]
        statuses = {d["status"]: d for d in client.get("/v1/deliveries", headers=admin).get_json()["items"]}
        assert set(statuses) == {"delivered", "skipped"}
        assert "could not screen the event: ZeroDivisionError" in statuses["skipped"]["last_error"]
    finally:
        runtime.install(None)
        load()


class Shadowing:
    """A plugin installed later that registers the name of a user's preset, and refuses everything."""

    @hookimpl
    def register_presets(self, register):
        register(Preset(name="team.hook", title="shadow", base_url="https://example.com"))

    @hookimpl
    def classify_response(self, preset, response, references):
        return Verdict("error", reason="shadow says no") if preset.name == "team.hook" else None


def test_a_plugin_preset_with_a_user_preset_s_name_does_not_read_its_destinations(settings, admin, receiver):
    from hookgate.delivery.worker import run_burst

    app = create_app(settings)
    rt = app.extensions["hookgate"]
    client = app.test_client()
    runtime.install(rt)
    try:
        saved = client.post("/v1/presets", headers=admin, json={"name": "team.hook", "base_url": receiver.url})
        assert saved.status_code == 201
        made = client.post("/v1/destinations", headers=admin, json={"preset": "team.hook", "params": {}})
        assert made.status_code == 201 and made.get_json()["preset"]["origin"] == "user"
        rt.plugins = load((), (Shadowing(),))
        source = client.post("/v1/sources", headers=admin, json={"name": "s"}).get_json()
        client.post(f"/v1/sources/{source['id']}/events", headers={"X-Hookgate-Key": source["key"]},
                    json={"name": "x"})
        run_burst(rt)
        [delivery] = client.get("/v1/deliveries", headers=admin).get_json()["items"]
        assert len(receiver.requests) == 1 and delivery["status"] == "delivered"
    finally:
        runtime.install(None)
        load()


# -- a plugin blocked, and verdicts hookgate cannot act on ---------------------------------------------

def test_a_plugin_blocked_after_its_destinations_were_made_ends_their_deliveries_with_the_reason(
        settings, client, admin, answering, make_source):
    """Regression: a template whose plugin filter is gone crashed its job, not a render error."""
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
def test_a_plugin_verdict_hookgate_cannot_act_on_falls_back_to_the_status_code(careless, verdict):
    """Regression: a plugin's verdict was used unchecked."""
    delivery, requests, failed_jobs = careless(verdict)
    assert delivery["status"] == "delivered", delivery
    assert [a["outcome"] for a in delivery["attempt_log"]] == ["delivered"]
    assert requests == 1 and failed_jobs == 0


def test_a_batch_whose_outcome_cannot_be_recorded_ends_and_is_not_sent_again(careless):
    """A verdict that cannot be stored (its reason is no string) never leaves its batch leased to be
    sent again, whichever of the verdict check and the batch's guard catches it."""
    delivery, requests, failed_jobs = careless(lambda refs: Verdict("delivered", reason=["not", "text"]))
    assert delivery["status"] in ("delivered", "error"), delivery  # settled, not leased to be sent again
    assert len(delivery["attempt_log"]) == 1 and delivery["next_attempt_at"] is None
    assert requests == 1 and failed_jobs == 0


def test_a_plugin_verdict_s_retry_delay_is_capped_at_a_day_like_retry_after(careless):
    """Regression: a plugin verdict's retry delay had no cap."""
    before = int(time.time() * 1000)
    delivery, requests, _ = careless(lambda refs: Verdict("bounced", reason="later", retry_after_s=1e300))
    assert delivery["status"] == "bounced" and "later" in delivery["last_error"] and requests == 1
    assert before + 86_000_000 <= delivery["next_attempt_at"] <= int(time.time() * 1000) + 86_400_000
