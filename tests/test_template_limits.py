"""Templates cannot exhaust a process (issue 11, part 2).

Saving a template evaluates nothing (Jinja folded constants when compiling: ``{{ 'a' * 100000000 }}``
was a 100 MB string in the API process). At send time the operations that grow a value by an
argument are capped, and a template not proven bounded renders in a child process under hard limits
on memory and time, so what slips past the caps (a doubling in a loop, one long C-level comparison)
is stopped there. Each is an ``error`` attempt naming its limit, the worker's memory stays where it
was, and the next event is delivered.

Memory is measured on this process (the API and, through the in-process RQ worker, the worker):
its resident size from /proc/self/statm, and its peak (VmHWM, reset through /proc/self/clear_refs).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable

import pytest

from hookgate import rendering
from hookgate.hookspecs import hookimpl
from hookgate.plugins import load
from hookgate.rendering import DEFAULT_TEMPLATES, RenderError, compile_template, render_body, validate_template
from hookgate.template_limits import bounded

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")

# The issue's templates, as a destination's body (text: written as rendered), and what the reason names.
CAPPED = {
    "{{ 'a' * 100000000 }}": "`*` would make 100,000,000 characters",
    "{{ '' | center(10**8) }}": "center() would make 100,000,000 characters",
    "{{ '%100000000d' | format(1) }}": "a %-format width would make 100,000,000 characters",
    "{{ range(10**7) | list | length }}": "range() of 10,000,000 items",
    "{{ ('a' * 100000) | replace('', 'x' * 1000) | length }}": "replace() would make 100,101,000 characters",
    "{{ range(100000) | slice(10**7) | list | length }}": "slice() of 10,000,000 items",
    "{{ [[[[1]]]] | tojson(indent=10**7) | length }}": "tojson's indent of 10,000,000",
    "{{ lipsum(n=150000) | length }}": "lipsum() would make",
    "{{ (event.data.b ** 10000000) % 10 }}": "`**` would make a number of more than 65,536 bits",
    "{{ '{:>100000000}'.format(1) }}": "a format width would make 100,000,000 characters",
    "{{ 'x'.ljust(10**9) }}": "ljust() would make 1,000,000,000 characters",
    "{{ range(100000) | join('x' * 100000) }}": "join()'s separators would make",
}
# Past every cap: a string made 8 times longer in a loop (1 GiB at the end), and one C-level
# comparison of lists of long, equal strings (~8 s in one bytecode, no deadline check in between).
DOUBLING = ("{% set ns = namespace(s='a' * 262144) %}{% for i in range(4) %}"
            "{% set ns.s = ns.s ~ ns.s ~ ns.s ~ ns.s ~ ns.s ~ ns.s ~ ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}")
COMPARING = ("{% set b1 = 'a' * 262144 %}{% set b2 = ('a' * 262143) ~ 'a' %}{% set row = [b2] * 262143 + ['x'] %}"
             "{{ ([b1] * 262144) in [row] * 10 }}")
PAST_THE_CAPS = {DOUBLING: "the render used more than 256 MiB of memory",
                 COMPARING: "the render took longer than 1 s (its process was stopped)"}
LOOP = "{% for key in event.data %}{{ key }};{% endfor %}"  # not bounded: renders in a render process


def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # VmHWM back to the current resident size
        return True
    except OSError:
        return False


def peak() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def grown_during(action) -> int:
    """How far this process's resident size rose above where it was while ``action`` ran (its peak
    when it can be reset, else where it ended)."""
    if reset_peak():
        before = peak()
        action()
        return peak() - before
    before = resident()
    action()
    return resident() - before


def attempt_errors(client, admin, event_id: str) -> dict[str, tuple[str, str | None]]:
    """destination id → (status, the last attempt's error) for an event's deliveries."""
    found = {}
    for item in client.get(f"/v1/deliveries?event_id={event_id}", headers=admin).get_json()["items"]:
        delivery = client.get(f"/v1/deliveries/{item['id']}", headers=admin).get_json()
        found[item["destination_id"]] = (delivery["status"], (delivery["attempt_log"] or [{}])[-1].get("error"))
    return found


# -- saving ---------------------------------------------------------------------------------------------

def test_saving_the_issue_s_templates_evaluates_nothing_and_leaves_the_api_process_as_it_was(client, admin):
    templates = [*CAPPED, *PAST_THE_CAPS]
    created = []

    def save() -> None:
        for n, template in enumerate(templates):
            response = client.post("/v1/destinations", headers=admin, json={
                "name": f"t{n}", "url": "https://example.com/hook", "format": "text", "events": ["*"],
                "template": template})
            created.append(response.status_code)

    grown = resident()
    grown_peak = grown_during(save)
    grown = resident() - grown
    assert created == [201] * len(templates)  # they are templates: what they do is for send time
    assert grown < 32 * MIB and grown_peak < 64 * MIB, (grown / MIB, grown_peak / MIB)


class Spy:
    def __init__(self) -> None:
        self.calls: list[object] = []

    @hookimpl
    def register_template_filters(self):
        return {"spy": self.record}

    def record(self, value, *args):
        self.calls.append(value)
        return value


@pytest.mark.parametrize("fmt", ["text", "json", "xml"])
def test_nothing_is_evaluated_when_a_template_compiles(fmt):
    spy = Spy()
    templates = ["{{ 1 | spy }}", "{{ 'a' ~ (1 | spy) }}", "{{ [1 | spy] }}", "{{ 'a' if 1 | spy else 'b' }}",
                 "{% if 1 | spy %}{% endif %}", "{% set x = 1 | spy %}", "{% autoescape 1 | spy %}x{% endautoescape %}",
                 "{{ 1 | spy | spy }}", "{{ (1 | spy) == 1 }}", "{{ 2 ** 3 | spy }}", "{{ 1 is spy }}"]
    try:
        load((), (spy,))
        for template in templates:
            with contextlib.suppress(Exception):  # an escaping refusal, an unknown test: not what is checked
                compile_template(template, fmt)
    finally:
        load()
    assert spy.calls == []


# -- sending ---------------------------------------------------------------------------------------------

def send_through(templates: dict[str, str], data: dict, client, admin, make_source, make_destination, post_events,
                 receiver, work) -> tuple[dict[str, str], dict, str, int, Callable[[dict], dict]]:
    """A text destination per template (and a plain one), one event sent to all: (destination id →
    its template's reason, each destination's (status, error), the plain one's id, how much the
    process grew, a function sending another event and returning its outcomes)."""
    source_id, key = make_source()
    reasons = {make_destination(receiver.url, name=f"t{n}", format="text", template=template)["id"]: reason
               for n, (template, reason) in enumerate(templates.items())}
    plain = make_destination(receiver.url, name="plain", format="text", template=LOOP)["id"]
    first = post_events(source_id, key, {"name": "e1", "data": data}).get_json()["ids"][0]
    grown = grown_during(work)

    def another(more: dict) -> dict:
        event_id = post_events(source_id, key, {"name": "e2", "data": more}).get_json()["ids"][0]
        work()
        return attempt_errors(client, admin, event_id)

    return reasons, attempt_errors(client, admin, first), plain, grown, another


def test_each_capped_template_is_an_error_attempt_naming_its_limit_and_the_worker_goes_on(
        client, admin, make_source, make_destination, post_events, receiver, work):
    reasons, outcomes, plain, grown, another = send_through(
        CAPPED, {"b": 7}, client, admin, make_source, make_destination, post_events, receiver, work)
    for destination_id, reason in reasons.items():
        status, error = outcomes[destination_id]
        assert status == "error" and error.startswith("render: template limit: ") and reason in error, error
    assert outcomes[plain] == ("delivered", None)
    assert grown < 64 * MIB, grown / MIB
    assert another({"c": 1})[plain] == ("delivered", None)
    assert sorted(request.body for request in receiver.requests) == [b"b;", b"c;"]


def test_what_passes_the_caps_meets_the_hard_limits_and_the_next_event_is_delivered(
        client, admin, make_source, make_destination, post_events, receiver, work):
    bombs, outcomes, plain, grown, another = send_through(
        PAST_THE_CAPS, {"a": 1}, client, admin, make_source, make_destination, post_events, receiver, work)
    for destination_id, reason in bombs.items():
        status, error = outcomes[destination_id]
        assert status == "error" and error == f"render: template limit: {reason}", error
    assert outcomes[plain] == ("delivered", None)
    assert grown < 64 * MIB, grown / MIB
    # the render process that was stopped is replaced: the next render there works
    assert another({"z": 1})[plain] == ("delivered", None)
    assert sorted(request.body for request in receiver.requests) == [b"a;", b"z;"]


def test_a_trial_in_the_api_process_meets_the_same_limits(client, admin, make_destination):
    answers = {}

    def try_each() -> None:
        for template in ["{{ (event.data.b ** 10000000) % 10 }}", COMPARING, DOUBLING]:
            made = make_destination("https://example.com/hook", format="text", template=template)
            response = client.post(f"/v1/destinations/{made['id']}/test", headers=admin,
                                   json={"event": {"name": "e", "data": {"b": 7}}})
            answers[template] = (response.status_code, response.get_json()["error"])

    grown = grown_during(try_each)
    codes = {template: answer[0] for template, answer in answers.items()}
    assert set(codes.values()) == {200}
    assert {answer[1]["code"] for answer in answers.values()} == {"render_failed"}
    assert "`**` would make a number" in answers["{{ (event.data.b ** 10000000) % 10 }}"][1]["message"]
    assert answers[COMPARING][1]["message"] == f"template limit: {PAST_THE_CAPS[COMPARING]}"
    assert answers[DOUBLING][1]["message"] == f"template limit: {PAST_THE_CAPS[DOUBLING]}"
    assert grown < 64 * MIB, grown / MIB


def test_a_call_passes_obj_context_and_self_as_the_template_s_own_keywords():
    template = ("{% macro f(obj, context) %}{{ obj }} {{ context }}{% endmacro %}"
                "{{ f(obj=1, context=2) }} {{ dict(obj=3, context=4, self=5) | tojson }}")
    assert render_body(template, "text", {}, max_bytes=1000, timeout_s=1.0).body == \
        b'1 2 {"obj": 3, "context": 4, "self": 5}'


def test_values_at_the_limit_render_and_one_past_it_does_not():
    def run(template: str) -> bytes:
        return render_body(template, "text", {}, max_bytes=1000, timeout_s=1.0).body

    assert run("{{ ('ab' * 500) | length }} {{ '' | center(1000) | length }} {{ range(100000) | length }}") \
        == b"1000 1000 100000"
    for template in ["{{ ('ab' * 501) | length }}", "{{ '' | center(1001) | length }}", "{{ range(100001) | length }}",
                     "{{ ('x' * 600 + 'y' * 600) | length }}", "{{ 'x' | indent(1001) }}", "{{ 2 ** 65537 > 1 }}"]:
        with pytest.raises(RenderError, match="template limit"):
            run(template)


def test_the_defaults_render_in_the_caller_s_process_and_a_loop_does_not():
    for (style, fmt), source in DEFAULT_TEMPLATES.items():
        assert getattr(compile_template(source, fmt), "bounded", False), (style, fmt)
    unbounded = [LOOP, "{{ event.name * 2 }}", "{{ event | tojson(indent=2) }}", "{{ event.name.upper() }}",
                 "{{ event | tojson | tojson | tojson | tojson | tojson | tojson | tojson }}",
                 "{% macro m() %}{% endmacro %}{{ m() }}", "{{ event.data | replace('a', 'b') }}"]
    for source in unbounded:
        assert not getattr(compile_template(source, "text"), "bounded", True), source
    tree = rendering.ENV.parse("{% set t %}{{ event | tojson }}{% endset %}{{ t | upper }}")
    assert bounded(tree)


def test_a_forked_process_renders_with_render_processes_of_its_own():
    assert render_body(LOOP, "text", {"event": {"data": {"a": 1}}}, max_bytes=1000, timeout_s=1.0).body == b"a;"
    pid = os.fork()
    if pid == 0:  # the child: the inherited render processes are its parent's; it starts its own
        try:
            body = render_body(LOOP, "text", {"event": {"data": {"b": 1}}}, max_bytes=1000, timeout_s=5.0).body
            os._exit(0 if body == b"b;" else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert render_body(LOOP, "text", {"event": {"data": {"c": 1}}}, max_bytes=1000, timeout_s=1.0).body == b"c;"


def test_a_json_template_past_the_caps_is_stopped_too():
    with pytest.raises(RenderError, match="^template limit: the render used more than 256 MiB of memory$"):
        render_body('{"n": {{ n }}}'.replace("{{ n }}", DOUBLING), "json", {}, max_bytes=262144, timeout_s=1.0)
    assert json.loads(render_body('{"n": {{ 1 + 1 }}}', "json", {}, max_bytes=1000, timeout_s=1.0).body) == {"n": 2}


def test_validation_refuses_nothing_it_cannot_compile_and_compiles_without_folding():
    validate_template("{{ 'a' * 100000000 }}")  # kept as code, not as a 100 MB constant
    code = rendering.ENV.compile("{{ 'a' * 100000000 }}", raw=True)
    assert "aaaaaaaaaa" not in code and "call_binop" in code
