"""Templates are user code: sandboxed, bounded in time and size, checked against their format."""

from __future__ import annotations

import pytest

from hookgate.errors import TemplateError
from hookgate.rendering import RenderError, render_body, validate_template

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
