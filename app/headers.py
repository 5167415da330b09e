"""The one rule for the header fields hookgate sends, wherever they come from.

Headers come from a destination's ``headers``, a preset's header patterns (a plugin's, or a user's
saved through the API or an import) rendered over the destination's parameters, an auth profile's
credentials (its own headers, a bearer or OAuth token, a signature's header names), and hookgate
itself. Each is checked by this rule twice: when saved (``check_saved`` and the marshmallow
validators below: a 422 naming the field) and, as rendered, before it is sent (``check_sent``:
``HeaderRefused``, which the delivery records as an ``error`` attempt with the reason; nothing is
sent). Records saved before the rule, an OAuth token as fetched and a pattern that renders badly
only with some values are what the second check is for.

The rule:

- a name is an RFC 9110 token (letters, digits and ``!#$%&'*+-.^_`|~``), 1 to ``MAX_NAME``
  characters, given once in any case, and not reserved;
- reserved (in any case) are the names that frame the message or the connection (``FRAMING``:
  Host, Content-Length, Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE, Trailer, Expect,
  Proxy-*) — a second Content-Length or a Transfer-Encoding beside hookgate's own is how a request
  is smuggled — and hookgate's own (``OWN``: the Standard Webhooks headers, X-Hookgate-Delivery,
  -Attempt, -Batch-Size, -Signature, -Timestamp);
- a value is RFC 9110 field-value text: visible characters (non-ASCII too), with spaces and tabs
  only between them. No control character (C0 with CR, LF and NUL; DEL; C1; U+2028 and U+2029,
  which some parsers take for line ends), no surrogate, no leading or trailing space or tab (a
  parser drops them, and requests refuses a leading one with an error that repeats the value: it is
  refused here rather than stripped, so what is saved is what is sent), at most ``MAX_VALUE``
  characters; empty is allowed;
- at most ``MAX_FIELDS`` headers from one source.

Problems never repeat a value (it may be a secret): they name the header and say what is wrong and
where (``U+000D at position 12``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from jinja2 import Environment, TemplateSyntaxError, nodes
from marshmallow import ValidationError as SchemaError

from .errors import DeliveryError, ValidationError
from .preset_templates import render_text
from .rendering import RenderError

__all__ = ["FRAMING", "MAX_FIELDS", "MAX_NAME", "MAX_VALUE", "OWN", "RESERVED", "HeaderRefused", "check_saved",
           "check_sent", "header_problems", "name_problem", "name_validator", "nested", "pattern_problems",
           "preset_problems", "validate_headers", "validate_items", "validate_value",
           "value_problem"]

MAX_NAME = 128
MAX_VALUE = 8192
MAX_FIELDS = 50
# Names ending in ``*`` reserve a prefix.
FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
                     "trailer", "expect", "proxy-*"})
OWN = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature", "x-hookgate-delivery", "x-hookgate-attempt",
                 "x-hookgate-batch-size", "x-hookgate-signature", "x-hookgate-timestamp"})
RESERVED = FRAMING | OWN

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token (fullmatch: ``$`` would let "\n" end it)
# Controls but HTAB (C0, DEL, C1), the Unicode line and paragraph separators, surrogates.
_NOT_TEXT = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
FieldPath = tuple[str | int, ...]  # where in a body a problem is: ("params", "token")
_PARSER = Environment()  # only to read which parameters a pattern names (sandboxed rendering is elsewhere)


class HeaderRefused(DeliveryError, RenderError):
    """A header that breaks the rule at send time: the request is not made. A ``RenderError`` for
    the drain and a trial (the request could not be made as rendered), a ``DeliveryError`` for the
    dispatcher (an auth profile's credentials): both record an ``error`` attempt with the reason."""


# -- the rule -------------------------------------------------------------------------------------------

def _is_reserved(lowered: str, reserved: Collection[str]) -> bool:
    return lowered in reserved or any(r.endswith("*") and lowered.startswith(r[:-1]) for r in reserved)


def name_problem(name: Any, reserved: Collection[str] = RESERVED) -> str | None:
    """Why ``name`` may not be a header name, or None."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or not _TOKEN.fullmatch(name):
        return (f"Not a header name: an RFC 9110 token (letters, digits and !#$%&'*+-.^_`|~), "
                f"1 to {MAX_NAME} characters.")
    lowered = name.lower()
    if not _is_reserved(lowered, reserved):
        return None
    if _is_reserved(lowered, FRAMING):
        return "Reserved: it frames the request or its connection, which hookgate does itself."
    return "Reserved: hookgate sets this header itself."


def value_problem(value: Any) -> str | None:
    """Why ``value`` may not be a header value, or None (the value itself is never shown)."""
    if not isinstance(value, str):
        return "Must be text."
    bad = _NOT_TEXT.search(value)
    if bad:
        return (f"Contains U+{ord(bad.group()):04X} at position {bad.start()}: a header value holds visible "
                "characters, with spaces and tabs only between them (no CR, LF, NUL or other control).")
    if value != value.strip(" \t"):
        return "Starts or ends with a space or tab: remove it (a receiver would not see it)."
    if len(value) > MAX_VALUE:
        return f"Longer than {MAX_VALUE} characters."
    return None


def header_problems(headers: Mapping[str, Any] | Iterable[tuple[Any, Any]], *,
                    reserved: Collection[str] = RESERVED) -> dict[str, list[str]]:
    """Every problem of one source's headers, by header name (``_`` for their number)."""
    pairs = list(headers.items() if isinstance(headers, Mapping) else headers)
    problems: dict[str, list[str]] = {}
    seen: set[str] = set()
    for name, value in pairs:
        found = [why for why in (name_problem(name, reserved), value_problem(value)) if why]
        lowered = name.lower() if isinstance(name, str) else ""
        if lowered in seen:
            found.append("Given twice: header names do not differ by case.")
        seen.add(lowered)
        if found:
            problems.setdefault(str(name), []).extend(found)
    if len(pairs) > MAX_FIELDS:
        problems["_"] = [f"At most {MAX_FIELDS} headers."]
    return problems


# -- when saved ------------------------------------------------------------------------------------------

def nested(problems: Mapping[FieldPath, list[str]]) -> dict[str | int, Any]:
    """Problems by path → the API's details: ``{("params", "token"): [...]}`` → ``{"params": {"token": [...]}}``."""
    details: dict[str | int, Any] = {}
    for path, messages in problems.items():
        slot = details
        for key in path[:-1]:
            slot = slot.setdefault(key, {})
        slot[path[-1]] = messages
    return details


def check_saved(headers: Mapping[str, Any], field: FieldPath = ("headers",), *,
                reserved: Collection[str] = RESERVED) -> None:
    """Save time: ``headers`` keep the rule, else a ``ValidationError`` (422) naming ``field`` and each header."""
    problems = header_problems(headers, reserved=reserved)
    if problems:
        where = ".".join(map(str, field))
        raise ValidationError(f"invalid headers: {where}: {', '.join(problems)}",
                              nested({(*field, name): messages for name, messages in problems.items()}))


def name_validator(reserved: Collection[str]) -> Callable[[Any], None]:
    """A marshmallow validator for a header name with its own reserved set (an auth profile's)."""
    def validate(value: Any) -> None:
        why = name_problem(value, reserved)
        if why:
            raise SchemaError(why)
    return validate


def validate_value(value: Any) -> None:
    """A marshmallow validator: a header value (or a preset's header pattern, as written)."""
    why = value_problem(value)
    if why:
        raise SchemaError(why)


def validate_headers(value: Mapping[str, Any]) -> None:
    """A marshmallow validator for a ``{name: value}`` field: problems by header name."""
    problems = header_problems(value)
    if problems:
        raise SchemaError(problems)  # a dict of messages: marshmallow keeps it by header name


def validate_items(items: list[dict[str, Any]]) -> None:
    """A marshmallow validator for a list of ``{"name", "value"}`` (each item checks its own name
    and value): their number, and each name once."""
    if len(items) > MAX_FIELDS:
        raise SchemaError(f"At most {MAX_FIELDS} headers.")
    names = [str(item.get("name", "")).lower() for item in items]
    if len(set(names)) != len(names):
        raise SchemaError("Each header name once: header names do not differ by case.")


# -- a preset's header patterns, rendered ----------------------------------------------------------------

def _named_params(pattern: str) -> set[str]:
    """The parameters a pattern names (``params.x``, ``params['x']``)."""
    try:
        tree = _PARSER.parse(pattern)
    except TemplateSyntaxError:
        return set()
    def on_params(node: nodes.Getattr | nodes.Getitem) -> bool:
        return isinstance(node.node, nodes.Name) and node.node.name == "params"

    found = {node.attr for node in tree.find_all(nodes.Getattr) if on_params(node)}
    found |= {node.arg.value for node in tree.find_all(nodes.Getitem)
              if on_params(node) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str)}
    return found


def _rendered_problem(pattern: str, params: Mapping[str, Any]) -> str | None:
    try:
        text = render_text(pattern, dict(params))
    except RenderError:
        return None  # not this rule's business: the send records the render error
    return value_problem(text) if text else None  # an empty one is not sent


def preset_problems(patterns: Mapping[str, str], params: Mapping[str, Any]) -> dict[FieldPath, list[str]]:
    """Save time, for a preset destination: each header pattern rendered over ``params`` keeps the
    rule, and so does each parameter it names (a value that goes into a header is a header value's
    text). Problems by path: ``("params", name)`` for a parameter, ``("preset", "headers", name)``
    when the pattern itself is to blame."""
    problems: dict[FieldPath, list[str]] = {}
    for header, pattern in patterns.items():
        why = name_problem(header)
        if why:
            problems.setdefault(("preset", "headers", header), []).append(why)
            continue
        named = sorted(_named_params(pattern) & set(params))
        blamed = False
        for param in named:
            value = params[param]
            why = value_problem(str(value)) if isinstance(value, (str, int, float)) else None
            if why:
                problems.setdefault(("params", param), []).append(f"It goes into the {header} header: {why}")
                blamed = True
        why = None if blamed else _rendered_problem(pattern, params)
        if why:
            blame: list[FieldPath] = [("params", p) for p in named] or [("preset", "headers", header)]
            for path in blame:
                problems.setdefault(path, []).append(f"The {header} header it renders: {why}")
    return problems


def pattern_problems(patterns: Mapping[str, str], params: Mapping[str, Any]) -> dict[str, list[str]]:
    """Save time, for a preset: its header patterns as written, and rendered over ``params`` (its
    example values), keep the rule; by header name."""
    problems = header_problems(patterns)
    for header, pattern in patterns.items():
        why = None if header in problems else _rendered_problem(pattern, params)
        if why:
            problems[header] = [f"Renders a value that breaks the rule: {why}"]
    return problems


# -- before sending --------------------------------------------------------------------------------------

def check_sent(headers: Mapping[str, Any], source: str, *, reserved: Collection[str] = RESERVED) -> None:
    """Send time: ``headers`` (from ``source``: "the destination", "the preset"…) keep the rule as
    they are about to go out, else ``HeaderRefused`` naming the first bad one (never its value)."""
    problems = header_problems(headers, reserved=reserved)
    if problems:
        name, reasons = next(iter(problems.items()))
        shown = repr(name[:64] + ("…" if len(name) > 64 else ""))
        raise HeaderRefused(f"header {shown} of {source} refused, nothing was sent: {' '.join(reasons)}",
                            {"header": name[:64], "source": source})
