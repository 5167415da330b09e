"""Rendering a destination's request body from its template: user code, so sandboxed and bounded.

Templates run in Jinja's ``ImmutableSandboxedEnvironment`` (no access to internals, no mutation of
the context). Each render has a deadline and an output limit; the output is checked against the
destination's format (JSON parses, XML is well-formed, form renders a JSON object to encode).
Compiled templates are cached per process by their source.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import defusedxml.ElementTree as safe_xml
from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, Undefined
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .errors import TemplateError

__all__ = [
    "RenderError",
    "Rendered",
    "compile_template",
    "default_template",
    "install_extensions",
    "render_body",
    "render_delivery",
    "validate_template",
]

CONTENT_TYPES = {
    "json": "application/json",
    "xml": "application/xml",
    "text": "text/plain; charset=utf-8",
    "form": "application/x-www-form-urlencoded",
}

# Default bodies: (payload style, format) → template. XML bodies of feedback and survey responses get
# the root element WebEngage uses for them.
_WEBENGAGE_JSON = """{
  "event_name": {{ event.name | tojson }},
  "event_time": {{ event.time | tojson }},
  "category": {{ (event.system.category or ('application' if event.category == 'activity' else 'system')) | tojson }},
  "user_id": {{ event.user_id | tojson }},
  "anonymous_id": {{ event.anonymous_id | tojson }},
  "license_code": {{ event.system.license_code | tojson }},
  "event_data": {{ event.data | tojson }},
  "system_data": {{ event.system | tojson }}
}"""
_XTREMEPUSH_JSON = """{
  "event": {{ event.name | tojson }},
  "time": {{ event.time | epoch }},
  "properties": {
    "message_type": {{ (event.channel or event.system.message_type) | tojson }},
    "campaign_id": {{ event.system.campaign_id | tojson }},
    "profile_id": {{ event.system.profile_id | tojson }},
    "device_id": {{ event.system.device_id | tojson }},
    "trigger_id": {{ event.system.trigger_id | tojson }},
    "error_message": {{ event.system.error_message | tojson }},
    "user_id": {{ event.user_id | tojson }},
    "email": {{ (event.profile.email or event.data.email) | tojson }},
    "external_message_id": {{ event.system.external_message_id | tojson }}
  }
}"""
DEFAULT_TEMPLATES = {
    ("canonical", "json"): "{{ event | tojson }}",
    ("canonical", "xml"): "{{ event | toxml(xml_root) }}",
    ("canonical", "text"): ("{{ event.name }} ({{ event.category }}) user={{ event.user_id }} "
                            "data={{ event.data | tojson }}"),
    ("canonical", "form"): "{{ event | flatten | tojson }}",
    ("webengage", "json"): _WEBENGAGE_JSON,
    ("xtremepush", "json"): _XTREMEPUSH_JSON,
}
XML_ROOTS = {"feedback": "feedback", "feedback_reply": "feedbackReply", "survey_response": "surveyResponse"}
PAYLOAD_STYLES = ("canonical", "webengage", "xtremepush")


class RenderError(Exception):
    """A template failed at render time, or its output does not fit the format."""


class _Limits(threading.local):
    deadline: float = float("inf")


_limits = _Limits()


def _check_deadline() -> None:
    if time.monotonic() > _limits.deadline:
        raise RenderError("template took too long to render")


def _json_default(value: Any) -> Any:
    if isinstance(value, Undefined):
        return None
    return str(value)


def _tojson(value: Any, indent: int | None = None) -> str:
    if isinstance(value, Undefined):
        return "null"
    return json.dumps(value, ensure_ascii=False, default=_json_default, indent=indent)


def _epoch(value: Any) -> str:
    """An ISO 8601 time (as events carry) → UNIX seconds; missing → null."""
    if isinstance(value, Undefined) or value in (None, ""):
        return "null"
    try:
        return str(int(dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()))
    except ValueError:
        return "null"


class JSONUndefined(ChainableUndefined):
    """In JSON templates a placeholder with no data renders as ``null`` (as Xtremepush's do)."""

    def __str__(self) -> str:
        return "null"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``{"a.b": 1, "c.0": 1, "c.1": 2}`` (for form bodies)."""
    flat: dict[str, Any] = {}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None:
        return {prefix: value} if prefix else {}
    for key, item in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, (dict, list)) and item:
            flat.update(_flatten(item, name))
        else:
            flat[name] = item
    return flat


def _xml_name(name: Any) -> str:
    text = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in str(name)) or "_"
    return text if (text[0].isalpha() or text[0] == "_") else "_" + text


def _toxml(value: Any, root: str = "item") -> str:
    """A dict/list/scalar as XML elements; lists repeat an ``<item>`` element."""
    _check_deadline()
    tag = _xml_name(root)
    if isinstance(value, dict):
        inner = "".join(_toxml(v, k) for k, v in value.items())
    elif isinstance(value, list):
        inner = "".join(_toxml(v, "item") for v in value)
    elif value is None or isinstance(value, Undefined):
        return f"<{tag}/>"
    elif isinstance(value, bool):
        inner = "true" if value else "false"
    else:
        inner = xml_escape(str(value))
    return f"<{tag}>{inner}</{tag}>"


def _url_path(value: Any) -> str:
    """The path and query of a URL (a Slack webhook URL keeps its secret path under a replaced base)."""
    parts = urllib.parse.urlsplit(str(value))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _bounded_range(*args: int) -> Iterator[int]:
    for number in range(*args):
        if number % 1000 == 0:
            _check_deadline()
        yield number


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with a deadline checked on every call and attribute lookup."""

    def call(self, context: Context, obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_deadline()
        return super().call(context, obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_deadline()
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Jinja's default is an Undefined that ChainableUndefined would render as "": say it instead.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} is not allowed")


def _make_env(undefined: type[Undefined]) -> _Environment:
    env = _Environment(undefined=undefined, autoescape=False, keep_trailing_newline=False)
    env.filters["tojson"] = _tojson
    env.filters["epoch"] = _epoch
    env.filters["toxml"] = _toxml
    env.filters["flatten"] = _flatten
    env.filters["url_path"] = _url_path
    env.globals["range"] = _bounded_range
    return env


ENV = _make_env(ChainableUndefined)
JSON_ENV = _make_env(JSONUndefined)
BUILTIN_NAMES = frozenset(ENV.filters) | frozenset(ENV.globals)
_installed: dict[str, set[str]] = {"filters": set(), "globals": set()}


def install_extensions(filters: dict[str, Any], globals_: dict[str, Any]) -> None:
    """Plugins' filters and globals, in every template environment (replacing those installed before)."""
    for env in (ENV, JSON_ENV):
        for name in _installed["filters"]:
            env.filters.pop(name, None)
        for name in _installed["globals"]:
            env.globals.pop(name, None)
        env.filters.update(filters)
        env.globals.update(globals_)
    _installed["filters"], _installed["globals"] = set(filters), set(globals_)
    compile_template.cache_clear()


def validate_template(source: str, field: str = "template") -> None:
    """Compile ``source``; a syntax error is a 422 naming the field and the line."""
    try:
        compile_template(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"{field} does not compile: line {exc.lineno}: {exc.message}",
            {field: {"line": exc.lineno, "message": exc.message}},
        ) from None


@functools.lru_cache(maxsize=4096)
def compile_template(source: str, fmt: str = "text") -> Template:
    return (JSON_ENV if fmt == "json" else ENV).from_string(source)


def default_template(fmt: str, style: str = "canonical") -> str:
    """The body used when a destination has no template of its own ("reset to default")."""
    return DEFAULT_TEMPLATES.get((style, fmt)) or DEFAULT_TEMPLATES[("canonical", fmt)]


class Rendered:
    __slots__ = ("body", "content_type")

    def __init__(self, body: bytes, content_type: str):
        self.body = body
        self.content_type = content_type


def render_body(
    source: str | None, fmt: str, context: dict[str, Any], *, max_bytes: int, timeout_s: float
) -> Rendered:
    """Render and check one body. Raises ``RenderError`` with a message fit for the delivery log."""
    try:
        template = compile_template(source if source is not None else default_template(fmt), fmt)
    except TemplateSyntaxError as exc:
        raise RenderError(f"template does not compile: line {exc.lineno}: {exc.message}") from None
    _limits.deadline = time.monotonic() + timeout_s
    size = 0
    parts: list[str] = []
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > max_bytes:
                raise RenderError(f"rendered body is larger than {max_bytes} characters")
            parts.append(chunk)
            _check_deadline()
    except RenderError:
        raise
    except Exception as exc:  # the template is user code: any failure is the template's
        raise RenderError(f"template failed: {type(exc).__name__}: {exc}") from None
    finally:
        _limits.deadline = float("inf")
    text = "".join(parts)
    return Rendered(_encode(text, fmt, context.get("extra")), CONTENT_TYPES[fmt])


def render_delivery(destination: dict[str, Any], event: dict[str, Any], *, max_bytes: int,
                    timeout_s: float, params: dict[str, Any] | None = None) -> Rendered:
    """The body of one delivery: the destination's template (or its style's default) over the event."""
    fmt = destination["format"]
    source = destination.get("template")
    if source is None:
        source = default_template(fmt, destination.get("payload_style") or "canonical")
    context = {
        "event": event,
        "profile": event.get("profile") or {},
        "data": event.get("data") or {},
        "system": event.get("system") or {},
        "destination": {k: destination.get(k) for k in ("id", "name", "url", "method", "format")},
        "extra": destination.get("extra_properties") or {},
        # a follow-up to an outcome event: {{ webhook.json.id }}, {{ webhook.status_code }}
        "webhook": (event.get("data") or {}) if event.get("category") == "webhook" else {},
        "xml_root": XML_ROOTS.get(event.get("category", ""), "event"),
        "params": params or {},  # a preset's parameters
    }
    return render_body(source, fmt, context, max_bytes=max_bytes, timeout_s=timeout_s)


def _encode(text: str, fmt: str, extra: dict[str, Any] | None = None) -> bytes:
    """Check the output against its format, and add the destination's extra properties."""
    if fmt == "json":
        return _encode_json(text, extra)
    if fmt == "xml":
        return _encode_xml(text, extra)
    if fmt == "form":
        return _encode_form(text, extra)
    return text.encode()


def _encode_json(text: str, extra: dict[str, Any] | None) -> bytes:
    """Valid JSON; extra properties are merged into an object (any other JSON is sent as rendered)."""
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise RenderError(f"rendered body is not valid JSON: {exc}") from None
    if extra and isinstance(body, dict):
        return json.dumps({**body, **extra}, ensure_ascii=False).encode()
    return text.encode()


def _encode_xml(text: str, extra: dict[str, Any] | None) -> bytes:
    """Well-formed XML; extra properties become elements before the root's closing tag."""
    try:
        root = safe_xml.fromstring(text)
    except Exception as exc:
        raise RenderError(f"rendered body is not well-formed XML: {exc}") from None
    if extra:
        added = "".join(_toxml(value, key) for key, value in extra.items())
        closing = f"</{root.tag}>"
        if text.rstrip().endswith(closing):
            text = text.rstrip()[: -len(closing)] + added + closing
    return text.encode()


def _encode_form(text: str, extra: dict[str, Any] | None) -> bytes:
    """A JSON object, URL-encoded with the extra properties; nested values and booleans as JSON."""
    try:
        fields = json.loads(text)
    except ValueError as exc:
        raise RenderError(f"a form template must render a JSON object: {exc}") from None
    if not isinstance(fields, dict):
        raise RenderError("a form template must render a JSON object")
    fields.update(extra or {})
    pairs = [(k, "" if v is None else json.dumps(v) if isinstance(v, (dict, list, bool)) else v)
             for k, v in fields.items()]
    return urllib.parse.urlencode(pairs, doseq=False).encode()
