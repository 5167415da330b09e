"""Rendering a destination's request body from its template: user code, so sandboxed and bounded.

Templates run in Jinja's ``ImmutableSandboxedEnvironment`` (no access to internals, no mutation of
the context). Each render has a deadline and an output limit; the output is checked against the
destination's format (JSON parses, XML is well-formed, form renders a JSON object to encode).
Compiled templates are cached per process by their source.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import urllib.parse
from typing import Any, Iterator

import defusedxml.ElementTree as safe_xml
from jinja2 import ChainableUndefined, TemplateSyntaxError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from xml.sax.saxutils import escape as xml_escape

from .errors import TemplateError

__all__ = [
    "RenderError",
    "Rendered",
    "compile_template",
    "default_template",
    "render_body",
    "validate_template",
]

CONTENT_TYPES = {
    "json": "application/json",
    "xml": "application/xml",
    "text": "text/plain; charset=utf-8",
    "form": "application/x-www-form-urlencoded",
}

DEFAULT_TEMPLATES = {
    "json": "{{ event | tojson }}",
    "xml": "{{ event | toxml('event') }}",
    "text": "{{ event.name }} ({{ event.category }}) user={{ event.user_id }} data={{ event.data | tojson }}",
    "form": "{{ event | flatten | tojson }}",
}


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


def _bounded_range(*args: int) -> Iterator[int]:
    for number in range(*args):
        if number % 1000 == 0:
            _check_deadline()
        yield number


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with a deadline checked on every call and attribute lookup."""

    def call(self, context, obj, *args, **kwargs):  # type: ignore[override]
        _check_deadline()
        return super().call(context, obj, *args, **kwargs)

    def getattr(self, obj, attribute):  # type: ignore[override]
        _check_deadline()
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj, attribute):  # type: ignore[override]
        # Jinja's default is an Undefined that ChainableUndefined would render as "": say it instead.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} is not allowed")


def _make_env() -> _Environment:
    env = _Environment(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=False)
    env.filters["tojson"] = _tojson
    env.filters["toxml"] = _toxml
    env.filters["flatten"] = _flatten
    env.globals["range"] = _bounded_range
    return env


ENV = _make_env()


def validate_template(source: str) -> None:
    """Compile ``source``; a syntax error is a 422 naming the line."""
    try:
        compile_template(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"template does not compile: line {exc.lineno}: {exc.message}",
            {"template": {"line": exc.lineno, "message": exc.message}},
        ) from None


@functools.lru_cache(maxsize=2048)
def compile_template(source: str):
    return ENV.from_string(source)


def default_template(fmt: str) -> str:
    return DEFAULT_TEMPLATES[fmt]


class Rendered:
    __slots__ = ("body", "content_type")

    def __init__(self, body: bytes, content_type: str):
        self.body = body
        self.content_type = content_type


def render_body(
    source: str | None, fmt: str, context: dict[str, Any], *, max_bytes: int, timeout_s: float
) -> Rendered:
    """Render and check one body. Raises ``RenderError`` with a message fit for the delivery log."""
    template = compile_template(source if source is not None else DEFAULT_TEMPLATES[fmt])
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
    return Rendered(_encode(text, fmt), CONTENT_TYPES[fmt])


def _encode(text: str, fmt: str) -> bytes:
    if fmt == "json":
        try:
            json.loads(text)
        except ValueError as exc:
            raise RenderError(f"rendered body is not valid JSON: {exc}") from None
    elif fmt == "xml":
        try:
            safe_xml.fromstring(text)
        except Exception as exc:
            raise RenderError(f"rendered body is not well-formed XML: {exc}") from None
    elif fmt == "form":
        try:
            fields = json.loads(text)
        except ValueError as exc:
            raise RenderError(f"a form template must render a JSON object: {exc}") from None
        if not isinstance(fields, dict):
            raise RenderError("a form template must render a JSON object")
        pairs = [(k, "" if v is None else json.dumps(v) if isinstance(v, (dict, list, bool)) else v)
                 for k, v in fields.items()]
        return urllib.parse.urlencode(pairs, doseq=False).encode()
    return text.encode()
