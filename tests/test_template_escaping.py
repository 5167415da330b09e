"""Templates escape for their format: a placeholder is escaped for where it stands (JSON value or string,
XML text, attribute, name or CDATA), so an event's values cannot change a body's structure. Injections
through a real ingest to a real receiver; hostile values (quotes, backslashes, ``<``, ``&``, ``]]>``,
U+0000–U+001F, U+2028, astral characters) through every format, every context, every built-in preset
and every default template; the ``| safe`` way out; placeholders that cannot be escaped refused when
saved, with their line."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from hookgate import plugins
from hookgate.delivery.batch import DEFAULT_ITEMS, render_batch
from hookgate.errors import TemplateError
from hookgate.rendering import DEFAULT_TEMPLATES, RenderError, render_body, render_delivery, validate_template

CONTROLS = "".join(map(chr, range(0x20)))
HOSTILE = 'A"q\'\\"\\\\<b>&amp;]]>' + CONTROLS + "\u2028\u2029😀𝄞\U0010ffffZ"
VALUES = {
    "quotes": "say \"hi\" and 'bye'",
    "backslashes": 'C:\\path\\"x\\',
    "angle": "<b>x</b><",
    "ampersand": "&amp; & &#38;",
    "cdata_end": "]]> ]]]]>",
    "controls": CONTROLS,
    "line_separators": "\u2028\u2029",
    "astral": "😀𝄞\U0010ffff",
    "json_injection": 'x", "role": "admin',
    "xml_injection": 'x</id><role>admin</role><id a="',
    "everything": HOSTILE,
}
NOT_IN_XML = {c for c in CONTROLS if c not in "\t\n\r"}


def xml_safe(value: str) -> str:
    """What XML 1.0 can carry of ``value``: the characters it cannot hold become U+FFFD."""
    return "".join("\ufffd" if c in NOT_IN_XML else c for c in value)


def render(template: str, fmt: str, **context: Any) -> str:
    return render_body(template, fmt, context, max_bytes=100_000, timeout_s=2.0).body.decode()


# -- through ingest, to a receiver --------------------------------------------------------------------

JSON_ATTACKS = {  # path: (template, what the receiver must get)
    "/string": ('{"role": "member", "user": "{{ event.user_id }}"}',
                lambda e: {"role": "member", "user": e["user_id"]}),
    "/string-backslash": ('{"role": "member", "user": "{{ data.backslashed }}"}',
                          lambda e: {"role": "member", "user": e["data"]["backslashed"]}),
    "/value": ('{"role": "member", "n": {{ data.n }}}', lambda e: {"role": "member", "n": e["data"]["n"]}),
    "/readme-email": ('{"role": "member", "email": {{ profile.email }}}',
                      lambda e: {"role": "member", "email": e["profile"]["email"]}),
    "/key": ('{"role": "member", {{ data.n }}: 1}', lambda e: {"role": "member", e["data"]["n"]: 1}),
}
XML_ATTACKS = {
    "/element": "<user><id>{{ data.element }}</id><role>member</role></user>",
    "/attribute": '<user role="member" id="{{ data.attribute }}"/>',
    "/attribute-single": "<user role='member' id='{{ data.single }}'/>",
    "/cdata": "<user><note><![CDATA[{{ data.note }}]]></note><role>member</role></user>",
    "/tag": "<user><{{ data.tag }}>1</{{ data.tag }}><role>member</role></user>",
}
HOSTILE_EVENT = {
    "name": "signup",
    "user_id": 'x", "role": "admin',
    "profile": {"email": 'null, "role": "admin"'},
    "data": {"n": '1, "role": "admin"', "backslashed": 'x\\", "role": "admin', "single": "x' admin='true",
             "element": "x</id><role>admin</role><id>y", "attribute": 'x" admin="true',
             "note": "]]></note><role>admin</role><note><![CDATA[", "tag": 'a role="admin"><role>admin</role><a',
             "phone": '1", "Body": "pwned'},
}


def test_json_values_cannot_add_keys_through_a_real_delivery(make_source, make_destination, post_events,
                                                             receiver, work):
    source_id, key = make_source()
    for path, (template, _) in JSON_ATTACKS.items():
        make_destination(receiver.url + path, name=path, template=template)
    assert post_events(source_id, key, HOSTILE_EVENT).status_code == 202
    work()
    arrived = {r.path: json.loads(r.body) for r in receiver.wait_for(len(JSON_ATTACKS))}
    assert arrived == {path: expected(HOSTILE_EVENT) for path, (_, expected) in JSON_ATTACKS.items()}


def test_the_readme_email_placeholder_sends_valid_json_when_the_profile_has_one(
    make_source, make_destination, post_events, receiver, work
):
    source_id, key = make_source()
    make_destination(receiver.url, template='{"email": {{ profile.email }}}')
    post_events(source_id, key, [{"name": "a", "profile": {"email": "ada@example.com"}}, {"name": "b"}])
    work()
    assert sorted(json.dumps(json.loads(r.body)) for r in receiver.wait_for(2)) == [
        '{"email": "ada@example.com"}', '{"email": null}']


def test_xml_values_cannot_add_elements_or_attributes_through_a_real_delivery(
    make_source, make_destination, post_events, receiver, work
):
    source_id, key = make_source()
    for path, template in XML_ATTACKS.items():
        make_destination(receiver.url + path, name=path, format="xml", template=template)
    post_events(source_id, key, HOSTILE_EVENT)
    work()
    roots = {r.path: ET.fromstring(r.body) for r in receiver.wait_for(len(XML_ATTACKS))}
    assert len(roots) == len(XML_ATTACKS)
    data = HOSTILE_EVENT["data"]
    for path in ("/element", "/cdata", "/tag"):
        assert [e.text for e in roots[path].iter("role")] == ["member"], path
        assert [child.tag for child in roots[path]][-1] == "role" and len(roots[path]) == 2, path
    assert roots["/element"].find("id").text == data["element"]
    assert roots["/cdata"].find("note").text == data["note"]
    assert roots["/attribute"].attrib == {"role": "member", "id": data["attribute"]}
    assert roots["/attribute-single"].attrib == {"role": "member", "id": data["single"]}


def test_form_fields_cannot_be_overwritten_through_a_real_delivery(make_source, make_destination, post_events,
                                                                   receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url, format="form", template='{"Body": "hi", "To": "{{ data.phone }}"}')
    post_events(source_id, key, HOSTILE_EVENT)
    work()
    [request] = receiver.wait_for(1)
    assert urllib.parse.parse_qs(request.body.decode()) == {"Body": ["hi"], "To": [HOSTILE_EVENT["data"]["phone"]]}


def test_batch_items_stay_json_in_the_root_and_carry_hostile_values(make_source, make_destination, post_events,
                                                                    receiver, work):
    source_id, key = make_source()
    make_destination(receiver.url, batch={"size": 2, "max_wait_s": 0, "item_template": '{"u": "{{ event.user_id }}"}'})
    make_destination(receiver.url + "/xml", format="xml", batch={"size": 2, "max_wait_s": 0})
    post_events(source_id, key, [HOSTILE_EVENT, {**HOSTILE_EVENT, "user_id": HOSTILE}])
    work()
    arrived = {r.path: r.body for r in receiver.wait_for(2)}
    assert json.loads(arrived["/"]) == [{"u": HOSTILE_EVENT["user_id"]}, {"u": HOSTILE}]
    events = ET.fromstring(arrived["/xml"])
    assert [e.find("user_id").text for e in events] == [HOSTILE_EVENT["user_id"], xml_safe(HOSTILE)]


# -- every hostile value, every format, every context ---------------------------------------------------

JSON_CONTEXTS = {  # template over v → the JSON it must parse to
    "value": ('{"a": {{ v }}}', lambda v: {"a": v}),
    "string": ('{"a": "{{ v }}"}', lambda v: {"a": v}),
    "string-with-text": ('{"a": "<{{ v }}> & {{ v }}"}', lambda v: {"a": f"<{v}> & {v}"}),
    "key": ("{ {{ v }}: 1 }", lambda v: {v: 1}),
    "tojson": ('{"a": {{ v | tojson }}}', lambda v: {"a": v}),
    "list": ('[{% for x in [v, v] %}{% if not loop.first %},{% endif %}"{{ x }}"{% endfor %}]', lambda v: [v, v]),
    "raw-block": ('{% raw %}{"a": "{{ not a placeholder }}", "b": "{% endraw %}{{ v }}"}',
                  lambda v: {"a": "{{ not a placeholder }}", "b": v}),
    "comment": ('{# " #}{"a": {{- v -}} }', lambda v: {"a": v}),
    "constant-quotes": ("{\"a\": {{ '\"' }}{{ v }}{{ '\"' }}}", lambda v: {"a": v}),
    "set-block": ('{% set t %}<{{ v }}>{% endset %}{"a": {{ t }}, "b": "{{ t }}"}',
                  lambda v: {"a": f"<{v}>", "b": f"<{v}>"}),
    "macro": ('{% macro q(x) %}[{{ x }}]{% endmacro %}{"a": {{ q(v) }}}', lambda v: {"a": f"[{v}]"}),
    "filter-block": ('{"a": {% filter replace("A", "B") %}"{{ v }}{% endfilter %}}',
                     lambda v: {"a": '"' + v.replace("A", "B")}),
    "joined-json": ('{"a": [{{ [v, v] | map("tojson") | join(", ") }}]}', lambda v: {"a": [v, v]}),
    "joined-text": ('{"a": {{ [v, v] | join("|") }}}', lambda v: {"a": f"{v}|{v}"}),
    "with": ('{% with w = v %}{"a": "{{ w }}"}{% endwith %}', lambda v: {"a": v}),
}


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
@pytest.mark.parametrize("context", JSON_CONTEXTS, ids=JSON_CONTEXTS.keys())
def test_json_carries_every_value_exactly(context, value):
    template, expected = JSON_CONTEXTS[context]
    assert json.loads(render(template, "json", v=value)) == expected(value)


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_form_applies_the_json_rules(value):
    body = render('{"a": {{ v }}, "b": "{{ v }}", "c": {{ v | tojson }}}', "form", v=value)
    assert urllib.parse.parse_qs(body, keep_blank_values=True) == {"a": [value], "b": [value], "c": [value]}


XML_CONTEXTS = {  # template over v → where the parsed root holds it
    "text": ("<r>{{ v }}</r>", lambda r: r.text),
    "text-between-elements": ("<r><a/>{{ v }}<b/></r>", lambda r: r.find("a").tail),
    "attribute": ('<r a="{{ v }}"/>', lambda r: r.attrib["a"]),
    "attribute-single": ("<r a='{{ v }}'/>", lambda r: r.attrib["a"]),
    "attribute-unquoted": ("<r a={{ v }} b='1'/>", lambda r: r.attrib["a"]),
    "cdata": ("<r><![CDATA[{{ v }}]]></r>", lambda r: r.text),
    "cdata-after-brackets": ("<r><![CDATA[]]{{ v }}]]></r>", lambda r: r.text[2:]),
    "toxml": ("{{ {'v': v} | toxml('r') }}", lambda r: r.find("v").text),
    "after-declaration": ('<?xml version="1.0"?><!-- a > b --><r>{{ v }}</r>', lambda r: r.text),
}


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
@pytest.mark.parametrize("context", XML_CONTEXTS, ids=XML_CONTEXTS.keys())
def test_xml_carries_every_value_it_can_hold(context, value):
    template, found = XML_CONTEXTS[context]
    root = ET.fromstring(render(template, "xml", v=value))
    assert found(root) == xml_safe(value)
    assert [e.tag for e in root.iter()][1:] in ([], ["v"], ["a", "b"])  # no element came from the value


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_xml_names_from_values_are_names(value):
    root = ET.fromstring(render("<{{ v }} a='1'><{{ v }}/></{{ v }}>", "xml", v=value))
    assert root.attrib == {"a": "1"} and len(root) == 1 and root[0].tag == root.tag


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_one_placeholder_is_written_as_is_in_text_and_escaped_in_json_form_and_xml(value):
    assert render("[{{ v }}] {{ v | tojson }}", "text", v=value) == f"[{value}] {json.dumps(value, ensure_ascii=False)}"
    assert json.loads(render("{{ v }}", "json", v=value)) == value
    assert urllib.parse.parse_qs(render("{\"v\": {{ v }}}", "form", v=value)) == {"v": [value]}
    assert ET.fromstring(render("<r>{{ v }}</r>", "xml", v=value)).text == xml_safe(value)


def test_safe_is_the_way_out_in_every_format():
    assert json.loads(render('{"a": "{{ v }}"}', "json", v='x", "role": "admin')) == {"a": 'x", "role": "admin'}
    assert json.loads(render('{"a": {{ v | safe }}}', "json", v='{"x": [1]}')) == {"a": {"x": [1]}}
    assert render('{"a": "{{ w | safe }}"}', "json", w='\\"') == '{"a": "\\""}'
    assert ET.fromstring(render('<r a="{{ v | safe }}">{{ w | safe }}</r>', "xml", v="&amp;", w="<b/>")).find("b") \
        is not None
    # which is why it is the way out: a value written raw is the template's to answer for
    assert json.loads(render('{"a": "{{ v | safe }}"}', "json", v='x", "role": "admin')) == {"a": "x", "role": "admin"}
    with pytest.raises(RenderError, match="not valid JSON"):
        render('{"a": {{ v | safe }}}', "json", v='x", "role": "admin')


def test_missing_values_are_null_as_json_values_and_empty_inside_strings():
    assert json.loads(render('{"a": {{ nope }}, "b": "{{ nope.deeper }}", "c": {{ none }}, "d": "{{ none }}"}',
                             "json")) == {"a": None, "b": "", "c": None, "d": ""}
    assert render("<r a='{{ nope }}'>{{ nope }}</r>", "xml") == "<r a=''></r>"


@pytest.mark.parametrize(("fmt", "template", "line", "message"), [
    ("xml", "<r>\n<!-- {{ v }} -->\n</r>", 2, "inside an XML comment"),
    ("xml", '<?xml version="{{ v }}"?><r/>', 1, "processing instruction"),
    ("xml", "<!DOCTYPE r [\n<!ENTITY e '{{ v }}'>]><r/>", 2, "declaration"),
    ("json", '{\n  "a": "\\{{ v }}"\n}', 2, "after a backslash"),
    ("json", '{\n"a": {% if v %}"{% endif %}\n{{ v }}"}', 2, "{% if %} can end"),
    ("form", '{"a": [\n\n{% for x in v %}"{% endfor %}]}', 3, "{% for %} can end"),
    ("xml", '<r>{% if v %}<a b="{% endif %}{{ v }}</r>', 1, "{% if %} can end"),
    ("json", '{% macro m() %}{{ caller() }}{% endmacro %}\n{% call m() %}x{% endcall %}', 2, "{% call %}"),
])
def test_a_placeholder_that_cannot_be_escaped_is_refused_with_its_line(fmt, template, line, message):
    with pytest.raises(TemplateError) as caught:
        validate_template(template, fmt=fmt)
    assert caught.value.details["template"]["line"] == line
    assert message in caught.value.details["template"]["message"]
    validate_template(template, fmt="text")  # text is not escaped: nothing to refuse


def test_saving_such_a_template_is_a_422_naming_the_field_and_line(client, admin, receiver):
    base = {"name": "d", "url": receiver.url, "events": ["*"]}
    refused = client.post("/v1/destinations", headers=admin,
                          json={**base, "format": "xml", "template": "<r>\n\n<!-- {{ event.name }} --></r>"})
    assert refused.status_code == 422
    assert refused.get_json()["error"]["details"]["template"]["line"] == 3
    made = client.post("/v1/destinations", headers=admin, json={**base, "format": "xml", "template": "<r/>"}).get_json()
    patched = client.patch(f"/v1/destinations/{made['id']}", headers=admin,
                           json={"batch": {"size": 2, "root_template": "<e>{% if x %}<a b='{% endif %}{{ x }}</e>"}})
    assert patched.status_code == 422, patched.get_json()
    assert patched.get_json()["error"]["details"]["batch.root_template"]["line"] == 1


# -- the built-in presets and the default templates with a hostile event ------------------------------

def _event(value: str) -> dict[str, Any]:
    return {"id": "evt_hostile_1", "source": "src_1", "name": value, "category": "activity",
            "time": dt.datetime.now(dt.UTC).isoformat(), "user_id": value, "anonymous_id": None, "origin": "api",
            "channel": None, "system": {},
            "profile": {"email": "ada@example.com", "phone": "+15555550100", "whatsapp": "15555550100", "psid": "42"},
            "data": {"message": value, "content_name": value, value: value,
                     "template_components": [{"type": "body", "parameters": [{"type": "text", "text": value}]}]}}


def _parsed(body: bytes, fmt: str) -> Any:
    if fmt == "json":
        return json.loads(body)
    if fmt == "form":
        return urllib.parse.parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True)
    if fmt == "xml":
        root = ET.fromstring(body)
        return [[e.tag, e.text, sorted(e.attrib.items())] for e in root.iter()]
    return body.decode()


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [value] if isinstance(value, str) else []


def _shape(value: Any, hostile: str) -> Any:
    """The body's structure: keys and nesting, with the hostile value read as "plain"."""
    if isinstance(value, dict):
        return {("plain" if hostile in k else k): _shape(v, hostile) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(item, hostile) for item in value]
    return type(value).__name__


def _rendered(destination: dict[str, Any], event: dict[str, Any], params: dict[str, Any]) -> bytes:
    if destination.get("batch"):
        rendered, errors = render_batch(destination, [event, event], max_bytes=200_000, timeout_s=2.0,
                                        params=params)
        assert rendered is not None, errors
        return rendered.body
    return render_delivery(destination, event, max_bytes=200_000, timeout_s=2.0, params=params).body


def _bodies() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(what, destination, params): every built-in preset, every default template."""
    found = []
    for name, preset in sorted(plugins.load().presets.items()):
        params = {p.name: p.default for p in preset.params if p.default is not None}
        params.update({k: v for k, v in preset.example_params.items() if v not in ("", None)})
        params.update({p.name: "x" for p in preset.params if p.required and p.name not in params})
        params.pop("event_name", None)  # conversions: send the event's own name
        found.append((f"preset {name}", {"format": preset.format, "template": preset.template,
                                         "batch": preset.batch and {**preset.batch, "size": 2}}, params))
    for style, fmt in DEFAULT_TEMPLATES:
        found.append((f"default {style} {fmt}", {"format": fmt, "template": None, "payload_style": style}, {}))
    for fmt in DEFAULT_ITEMS:
        found.append((f"default batch {fmt}", {"format": fmt, "template": None, "batch": {"size": 2}}, {}))
    return found


def test_every_builtin_preset_and_default_template_carries_a_hostile_event_as_data():
    """Each body parses in its format, has the structure a plain event gives it, and carries the hostile
    value exactly (Slack's text mrkdwn-escaped, as that preset documents; XML what XML can hold)."""
    checked = []
    for what, destination, params in _bodies():
        fmt = destination["format"]
        hostile, plain = _parsed(_rendered(destination, _event(HOSTILE), params), fmt), \
            _parsed(_rendered(destination, _event("plain"), params), fmt)
        expected = {"xml": xml_safe(HOSTILE)}.get(fmt, HOSTILE)
        if what.startswith("preset slack."):
            expected = HOSTILE.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        if fmt == "text":
            assert expected in hostile, what
        else:
            assert any(expected in s for s in _strings(hostile)), what
        if fmt in ("json", "form"):
            assert _shape(hostile, HOSTILE) == _shape(plain, "plain"), what
        if fmt == "xml":
            assert len(hostile) == len(plain), what
        checked.append(what)
    assert len([w for w in checked if w.startswith("preset ")]) >= 10 and len(checked) >= 19


README_EXAMPLES = [  # (format, template, result) as the README's Templates section shows them
    ("json", '{"name": {{ profile.first_name }}}', '{"name": "Ada \\"the admin\\""}'),
    ("json", '{"n": {{ data.n }}}', '{"n": 3}'),
    ("json", '{"text": "Hi {{ profile.first_name }}!"}', '{"text": "Hi Ada \\"the admin\\"!"}'),
    ("xml", "<name>{{ profile.first_name }}</name>", '<name>Ada "the admin"</name>'),
    ("xml", "<user name='{{ profile.first_name }}'/>", "<user name='Ada &quot;the admin&quot;'/>"),
    ("json", '{"email": {{ profile.email }}}', '{"email": "ada@example.com"}'),
]


def test_the_readme_examples_render_as_documented():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    event = {"name": "signup", "user_id": "u1", "data": {"n": 3},
             "profile": {"first_name": 'Ada "the admin"', "email": "ada@example.com"}}
    for fmt, template, result in README_EXAMPLES:
        assert f"`{template}` → `{result}`" in readme, template
        assert render(template, fmt, event=event, profile=event["profile"], data=event["data"]) == result
    assert render('{"email": {{ profile.email }}}', "json", profile={}) == '{"email": null}'
    assert "`{\"data\": {{ event.data | tojson }}}` is unchanged" in readme
    assert render('{"data": {{ event.data | tojson }}}', "json", event=event) == '{"data": {"n": 3}}'
    quick_start = '{"user": {{ event.user_id | tojson }}, "score": {{ event.data.score | tojson }}}'
    assert json.dumps(quick_start) in readme
    assert json.loads(render(quick_start, "json", event={"user_id": 'u"1', "data": {"score": 2}})) == {
        "user": 'u"1', "score": 2}
