"""Rendering a destination's request body from its template: user code, so sandboxed and bounded.

Templates run in Jinja's ``ImmutableSandboxedEnvironment`` (no access to internals, no mutation of
the context). Each render has a deadline and an output limit; the output is checked against the
destination's format (JSON parses, XML is well-formed, form renders a JSON object to encode).
Compiled templates are cached per process by their source.

Nothing is evaluated when a template is compiled, and the operations that grow a value by an argument
are capped (template_limits.py). A template whose cost is proven to be at most a fixed multiple of
its context's size (no loops, calls or growth operators; the default bodies, most field mappings)
renders here; any other renders in a child process under hard limits on memory and time
(render_guard.py: ``MAX_MEMORY`` of address space, the render's timeout), so that no template can
take this process's memory or hold it past its timeout. Either way, a limit is a ``RenderError``
that names it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import pickle
import sys
import time
import urllib.parse
from typing import Any

import cloudpickle
import defusedxml.ElementTree as safe_xml
from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, Undefined, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from markupsafe import Markup

from . import render_guard, template_limits
from .errors import TemplateError
from .escaping import JSON, compile_escaped, emits, escape_xml_text, join, mark_raw
from .template_limits import LimitExceeded, check_deadline, limits

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


log = logging.getLogger(__name__)

MAX_MEMORY = 256 << 20  # what a render in a child process may add to its address space


class RenderError(Exception):
    """A template failed at render time, or its output does not fit the format."""


def _json_default(value: Any) -> Any:
    if isinstance(value, Undefined):
        return None
    return str(value)


def _tojson(value: Any, indent: int | None = None) -> str:
    if indent is not None:
        template_limits.check_indent(indent)
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
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``{"a.b": 1, "c.0": 1, "c.1": 2}`` (for form bodies).
    Each name repeats its parents' names, so the names made are counted, and capped like any value."""
    flat: dict[str, Any] = {}
    _flatten_into(flat, value, str(prefix), [limits.max_size])
    return flat


def _flatten_into(flat: dict[str, Any], value: Any, prefix: str, budget: list[int]) -> None:
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None:
        if prefix:
            flat[prefix] = value
        return
    for key, item in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        budget[0] -= len(name)
        if budget[0] < 0:
            raise LimitExceeded(f"template limit: flatten's field names would make more than {limits.max_size:,} "
                                "characters")
        if isinstance(item, (dict, list)) and item:
            _flatten_into(flat, item, name, budget)
        else:
            flat[name] = item


def _xml_name(name: Any) -> str:
    text = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in str(name)) or "_"
    return text if (text[0].isalpha() or text[0] == "_") else "_" + text


def _toxml(value: Any, root: str = "item") -> str:
    """A dict/list/scalar as XML elements; lists repeat an ``<item>`` element."""
    check_deadline()
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
        inner = escape_xml_text(str(value))
    return f"<{tag}>{inner}</{tag}>"


def _url_path(value: Any) -> str:
    """The path and query of a URL (a Slack webhook URL keeps its secret path under a replaced base)."""
    parts = urllib.parse.urlsplit(str(value))
    return parts.path + (f"?{parts.query}" if parts.query else "")


class _Template(Template):
    bounded = False  # renders in the caller's process (template_limits.bounded)


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with a deadline checked on every call and attribute lookup, the growth operators
    and str methods capped, and nothing evaluated at compile time (template_limits.py)."""

    code_generator_class = template_limits.NoFolding
    template_class = _Template
    intercepted_binops = template_limits.BINOPS

    def from_string(self, source: str | nodes.Template, globals: Any = None,  # noqa: A002 (Jinja's names)
                    template_class: type[Template] | None = None) -> Template:
        tree = self.parse(source) if isinstance(source, str) else source
        is_bounded = template_limits.bounded(tree)  # before compiling: the compiler may annotate the tree
        template = super().from_string(tree, globals, template_class)
        template.bounded = is_bounded  # type: ignore[attr-defined]
        return template

    # ``self``, ``context`` and ``obj`` positional-only: a template's own ``f(obj=1)`` is f's keyword
    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        check_deadline()
        args = template_limits.check_call(obj, args, kwargs)
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        template_limits.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        return template_limits.str_format(self, value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        check_deadline()
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Jinja's default is an Undefined that ChainableUndefined would render as "": say it instead.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} is not allowed")


def _make_env(undefined: type[Undefined]) -> _Environment:
    # no optimizer: it folds constant expressions when compiling (template_limits.py)
    env = _Environment(undefined=undefined, autoescape=False, keep_trailing_newline=False, optimized=False)
    # filters that write the format mark their result, so that escaping (escaping.py) passes it through
    env.filters["tojson"] = emits(JSON, _tojson)
    env.filters["epoch"] = emits(JSON, _epoch)
    env.filters["toxml"] = emits(Markup, _toxml)
    env.filters["join"] = join
    env.filters["safe"] = mark_raw
    env.filters["flatten"] = _flatten
    env.filters["url_path"] = _url_path
    env.filters.update(template_limits.capped_filters(env.filters))  # join: escaping's, its separators counted
    env.globals["range"] = template_limits.Range
    env.globals["lipsum"] = template_limits.lipsum
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
    _POOL.configure(_extensions_setup(filters, globals_))


def _extensions_setup(filters: dict[str, Any], globals_: dict[str, Any]) -> bytes:
    """The extensions as a render process receives them: a module's function by its module and name
    (the child imports the plugin's module), a lambda or closure by value (cloudpickle). One that
    cannot be sent (it holds a lock, a connection) is left out: a template using it fails there."""
    sent: tuple[dict[str, bytes], dict[str, bytes]] = ({}, {})
    for extensions, target in ((filters, sent[0]), (globals_, sent[1])):
        for name, value in extensions.items():
            try:
                target[name] = cloudpickle.dumps(value)
            except Exception as exc:
                log.warning("template extension %r cannot be sent to a render process (%s): templates using "
                            "it fail there", name, exc)
    return pickle.dumps(sent)


def validate_template(source: str, field: str = "template", fmt: str = "text") -> None:
    """Compile ``source`` for ``fmt``; a syntax error, or a placeholder that cannot be escaped where it
    stands, is a 422 naming the field and the line."""
    try:
        compile_template(source, fmt)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"{field} does not compile: line {exc.lineno}: {exc.message}",
            {field: {"line": exc.lineno, "message": exc.message}},
        ) from None


@functools.lru_cache(maxsize=4096)
def compile_template(source: str, fmt: str = "text") -> Template:
    """``source`` compiled with each placeholder escaped for where it stands in ``fmt`` (escaping.py)."""
    return compile_escaped(JSON_ENV if fmt == "json" else ENV, source, fmt)


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
    """Render and check one body. Raises ``RenderError`` with a message fit for the delivery log.

    A bounded template renders here; any other in a render process (``_render_in_child``)."""
    source = source if source is not None else default_template(fmt)
    template = _compiled(source, fmt)
    if getattr(template, "bounded", False):
        return _render_here(template, fmt, context, max_bytes, timeout_s)
    return _render_in_child(source, fmt, context, max_bytes, timeout_s)


def _compiled(source: str, fmt: str) -> Template:
    try:
        return compile_template(source, fmt)
    except TemplateSyntaxError as exc:
        raise RenderError(f"template does not compile: line {exc.lineno}: {exc.message}") from None


def _render_here(template: Template, fmt: str, context: dict[str, Any], max_bytes: int, timeout_s: float) -> Rendered:
    limits.deadline, limits.timeout_s, limits.max_size = time.monotonic() + timeout_s, timeout_s, max_bytes
    size = 0
    parts: list[str] = []
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > max_bytes:
                raise RenderError(f"rendered body is larger than {max_bytes} characters")
            parts.append(chunk)
            check_deadline()
    except (RenderError, MemoryError):  # out of memory: in a render process, its limit (render_guard.py)
        raise
    except LimitExceeded as exc:
        raise RenderError(str(exc)) from None
    except Exception as exc:  # the template is user code: any failure is the template's
        raise RenderError(f"template failed: {type(exc).__name__}: {exc}") from None
    finally:
        limits.deadline, limits.max_size = float("inf"), template_limits.DEFAULT_MAX_SIZE
    text = "".join(parts)
    return Rendered(_encode(text, fmt, context.get("extra")), CONTENT_TYPES[fmt])


# -- rendering in a child process (render_guard.py) --------------------------------------------------------
# A request is the pickled (source, format, context, max_bytes, timeout_s); the answer b"o" and the
# body, or b"e" and the RenderError's message.

def _render_in_child(source: str, fmt: str, context: dict[str, Any], max_bytes: int, timeout_s: float) -> Rendered:
    try:
        request = pickle.dumps((source, fmt, context, max_bytes, timeout_s), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # a value in the context that is not plain data
        raise RenderError(f"template context cannot be sent to the render process: {exc}") from None
    try:
        answer = _POOL.call(request, timeout_s)
    except render_guard.Overrun as exc:
        raise RenderError(f"template limit: the render {exc}") from None
    except render_guard.GuardError as exc:
        raise RenderError(f"template failed: the render {exc}") from None
    if answer[:1] == b"e":
        raise RenderError(answer[1:].decode("utf-8", "replace"))
    return Rendered(answer[1:], CONTENT_TYPES[fmt])


def _render_request(request: bytes) -> bytes:
    """In a render process: one request's answer."""
    source, fmt, context, max_bytes, timeout_s = pickle.loads(request)
    try:
        return b"o" + _render_here(_compiled(source, fmt), fmt, context, max_bytes, timeout_s).body
    except RenderError as exc:
        return b"e" + str(exc).encode("utf-8", "replace")


def _set_up_child(setup: bytes) -> None:
    filters, globals_ = pickle.loads(setup)
    install_extensions(_received(filters), _received(globals_))


def _received(sent: dict[str, bytes]) -> dict[str, Any]:
    received: dict[str, Any] = {}
    for name, value in sent.items():
        try:
            received[name] = pickle.loads(value)
        except Exception as exc:  # its module does not import here: templates using it fail, not every one
            log.warning("template extension %r is not available in this render process: %s", name, exc)
    return received


def serve_renders() -> None:
    """A render process's main loop (``python -c``, started by ``_POOL``)."""
    render_guard.serve(_set_up_child, _render_request, max_memory=MAX_MEMORY)


_POOL = render_guard.Pool([sys.executable, "-c", f"import {__name__}; {__name__}.serve_renders()"])
_POOL.configure(_extensions_setup({}, {}))


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
