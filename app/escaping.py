"""Context-aware escaping: a placeholder is escaped for where it stands in its format.

As in Go's ``html/template``, the decision is taken once, when a template is compiled, not left to
the author remembering a filter. The literal text between Jinja tags is read with a small state
machine of the format, in output order, and every ``{{ … }}`` is wrapped in the escaper of the state
it stands in:

- ``json`` and ``form`` (a form template renders a JSON object): outside a string literal a value
  becomes a JSON value (``null`` when missing); inside one it becomes string content (quotes,
  backslashes and control characters escaped; missing or ``None`` is empty).
- ``xml``: in element text ``&``, ``<`` and ``>`` are escaped, in an attribute value quotes and
  white space too; in a tag a value becomes a name; in CDATA the section is closed around the
  escaped value. Characters XML 1.0 cannot carry (U+0000–U+001F but tab, LF and CR; U+FFFE, U+FFFF,
  lone surrogates) become U+FFFD.
- ``text``: nothing is escaped (the template is compiled as written).

What is already in the format passes through: ``JSON`` (what ``tojson`` and ``epoch`` return, a
batch's rendered JSON items) where a JSON value stands, ``Markup`` (``toxml``, a batch's XML items)
in XML element text, and ``Raw`` (``| safe``, the explicit way out) anywhere.

Captured output (``{% set %}…{% endset %}``, macro bodies) is not escaped where it is captured but
where it is written out; a ``{% filter %}`` block's result is escaped as one value. A template
whose state is ambiguous (an ``{% if %}`` whose branches end in different states, a loop body that
does not end where it began) or a placeholder with no safe escaping (an XML comment, processing
instruction or declaration; right after a backslash in a JSON string) is a ``TemplateSyntaxError``
with its line, like any other compile error.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import Environment, Template, TemplateSyntaxError, Undefined, nodes, pass_environment
from jinja2.filters import make_attrgetter
from markupsafe import Markup, escape

__all__ = [
    "JSON",
    "Raw",
    "compile_escaped",
    "emits",
    "escape_xml_text",
    "join",
    "mark_raw",
    "trusted",
]

State = tuple[str, int]


class JSON(str):
    """Text that is already JSON (``tojson``'s result): written as is where a JSON value stands."""

    __slots__ = ()


class Raw(Markup):
    """Text marked ``| safe``: written as is wherever it stands."""

    __slots__ = ()


def mark_raw(value: Any) -> Raw:
    """The ``safe`` filter: the template's explicit way out of escaping."""
    return value if isinstance(value, Raw) else Raw(value)


def emits(kind: type[str], function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose result is marked ``kind`` (``JSON`` or ``Markup``)."""

    @functools.wraps(function)
    def marked(*args: Any, **kwargs: Any) -> Any:
        return kind(function(*args, **kwargs))

    return marked


def trusted(text: str, fmt: str) -> str:
    """A body hookgate rendered and checked in ``fmt`` (a batch item), marked as that format."""
    return JSON(text) if fmt in ("json", "form") else Markup(text) if fmt == "xml" else text


_JSON_SEPARATOR = re.compile(r"[\s,]*")


@pass_environment
def join(environment: Environment, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    """Jinja's ``join``, keeping marks: JSON items joined by commas are JSON (``[{{ items | join(",") }}]``),
    markup items joined are markup (the separator escaped); anything else is plain text."""
    items = list(value)
    if attribute is not None:
        items = [make_attrgetter(environment, attribute)(item) for item in items]
    separator = str(d)
    plain = isinstance(d, Raw) or _JSON_SEPARATOR.fullmatch(separator) is not None
    if items and plain and all(isinstance(item, Raw) for item in items):
        return Raw(separator.join(items))
    if items and plain and all(isinstance(item, JSON | Raw) for item in items):
        return JSON(separator.join(items))
    if items and all(isinstance(item, Markup) for item in items):
        return escape(d).join(items)
    return separator.join(map(str, items))


# -- the escapers a placeholder is wrapped in (by name: the compiled template imports them) ----------

def _default(value: Any) -> Any:
    return None if isinstance(value, Undefined) else str(value)


def _text(value: Any) -> str:
    """A value as text inside a JSON string or XML: missing and None empty, booleans and containers as
    JSON writes them."""
    if value is None or isinstance(value, Undefined):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=_default)
    return str(value)


def json_value(value: Any) -> Markup:
    if isinstance(value, JSON | Raw):
        return Markup(value)
    if isinstance(value, Undefined):
        return Markup("null")
    return Markup(json.dumps(value, ensure_ascii=False, default=_default))


def json_string(value: Any) -> Markup:
    if isinstance(value, Raw):
        return value
    return Markup(json.dumps(_text(value), ensure_ascii=False)[1:-1])


_NOT_XML = "\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff"
_XML_TEXT = re.compile(f"[&<>\r{_NOT_XML}]")
_XML_ATTRIBUTE = re.compile(f"[&<>\"'\t\n\r{_NOT_XML}]")
_XML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;",
                 "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
_XML_NAME = re.compile(r"[^\w.\-]")


def _entity(match: re.Match[str]) -> str:
    return _XML_ENTITIES.get(match.group(), "\ufffd")


def escape_xml_text(text: str) -> str:
    """Element text: ``&<>`` escaped, CR kept as ``&#13;``, what XML cannot carry as U+FFFD."""
    return _XML_TEXT.sub(_entity, text)


def xml_text(value: Any) -> Markup:
    return value if isinstance(value, Markup) else Markup(escape_xml_text(_text(value)))


def xml_attribute(value: Any) -> Markup:
    return value if isinstance(value, Raw) else Markup(_XML_ATTRIBUTE.sub(_entity, _text(value)))


def xml_quoted_attribute(value: Any) -> Markup:
    return value if isinstance(value, Raw) else Markup(f'"{xml_attribute(value)}"')


def xml_name(value: Any) -> Markup:
    return value if isinstance(value, Raw) else Markup(_XML_NAME.sub("_", _text(value)) or "_")


def xml_name_start(value: Any) -> Markup:
    name = xml_name(value)
    return name if isinstance(value, Raw) or name[:1].isalpha() or name[:1] == "_" else Markup("_" + name)


def xml_cdata(value: Any) -> Markup:
    """Inside CDATA: the section is closed, the value written as escaped text, and a section reopened."""
    return value if isinstance(value, Raw) else Markup(f"]]>{xml_text(value)}<![CDATA[")


# -- the formats' state machines ---------------------------------------------------------------------

class _Unsafe(Exception):
    """A placeholder that stands where no escaping is safe."""


class _Json:
    """States: outside a string literal (``value``), inside one, right after a backslash in one."""

    start: State = ("value", 0)
    _stop = re.compile(r'["\\]')

    def feed(self, state: State, text: str) -> State:
        mode, at = state[0], 0
        while at < len(text):
            if mode == "value":
                found = text.find('"', at)
                if found < 0:
                    break
                mode, at = "string", found + 1
            elif mode == "escape":
                mode, at = "string", at + 1
            else:
                match = self._stop.search(text, at)
                if match is None:
                    break
                mode, at = ("escape" if match.group() == "\\" else "value"), match.end()
        return (mode, 0)

    def describe(self, state: State) -> str:
        return {"value": "outside a JSON string", "string": "inside a JSON string"}.get(state[0], "after a backslash")

    def placeholder(self, state: State) -> tuple[str, State]:
        if state[0] == "escape":
            raise _Unsafe("a placeholder right after a backslash in a JSON string cannot be escaped")
        return ("json_value" if state[0] == "value" else "json_string"), state


def _after_lt(ch: str) -> State:
    return {"/": ("lt", 0), "!": ("bang", 0), "?": ("pi", 0)}.get(ch, ("name", 0))


def _in_tag(mode: str, ch: str) -> State:
    if ch == ">":
        return ("text", 0)
    if mode == "name":
        return ("tag", 0) if ch.isspace() or ch == "/" else ("name", 0)
    if mode == "eq" and ch.isspace():
        return ("eq", 0)
    if mode == "eq" or ch in "\"'":
        return {'"': ("dq", 0), "'": ("sq", 0)}.get(ch, ("tag", 0))
    return ("eq", 0) if ch == "=" else ("tag", 0)


def _in_markup_declaration(mode: str, n: int, ch: str) -> State:
    """After ``<!``: ``<!--`` opens a comment, ``<![CDATA[`` a CDATA section, anything else a declaration."""
    if mode == "bang":
        return {"-": ("dash", 0), "[": ("cdata-open", 1)}.get(ch, ("decl", 0))
    if mode == "dash":
        return ("comment", 0) if ch == "-" else ("decl", 0)
    if "[CDATA["[n] != ch:
        return ("decl", 0)
    return ("cdata", 0) if n == 6 else ("cdata-open", n + 1)


def _in_section(mode: str, n: int, ch: str) -> State:
    """Comments end at ``-->``, CDATA at ``]]>``, processing instructions at ``?>``, declarations at a
    ``>`` outside their internal subset; ``n`` counts what of the end was seen (or the nesting)."""
    if mode == "decl":
        return ("text", 0) if ch == ">" and n == 0 else ("decl", n + (ch == "[") - (ch == "]"))
    closer = {"comment": "-", "cdata": "]", "pi": "?"}[mode]
    needed = 1 if mode == "pi" else 2
    if ch == ">" and n >= needed:
        return ("text", 0)
    return (mode, min(n + 1, needed)) if ch == closer else (mode, 0)


class _Xml:
    """States: element text, after ``<``, a tag's name, inside a tag, after ``=``, a double- or single-
    quoted attribute value, ``<!`` and what follows it, a comment, CDATA, a processing instruction,
    a declaration."""

    start: State = ("text", 0)
    _escapers = {"text": "xml_text", "lt": "xml_name_start", "name": "xml_name", "tag": "xml_name",
                 "eq": "xml_quoted_attribute", "dq": "xml_attribute", "sq": "xml_attribute", "cdata": "xml_cdata"}
    _after = {"lt": ("name", 0), "eq": ("tag", 0), "cdata": ("cdata", 0)}
    _where = {"comment": "an XML comment", "pi": "an XML processing instruction", "decl": "an XML declaration"}

    def feed(self, state: State, text: str) -> State:
        at = 0
        while at < len(text):
            mode, n = state
            if mode == "text":
                found = text.find("<", at)
                if found < 0:
                    break
                state, at = ("lt", 0), found + 1
                continue
            ch = text[at]
            at += 1
            if mode == "lt":
                state = _after_lt(ch)
            elif mode in ("name", "tag", "eq"):
                state = _in_tag(mode, ch)
            elif mode in ("dq", "sq"):
                state = ("tag", 0) if ch == ('"' if mode == "dq" else "'") else state
            elif mode in ("bang", "dash", "cdata-open"):
                state = _in_markup_declaration(mode, n, ch)
            else:
                state = _in_section(mode, n, ch)
        return state

    def describe(self, state: State) -> str:
        mode = state[0]
        if mode in ("text", "cdata"):
            return "in element text" if mode == "text" else "in CDATA"
        if mode in ("dq", "sq"):
            return "in an attribute value"
        return f"inside {self._where[mode]}" if mode in self._where else "inside a tag"

    def placeholder(self, state: State) -> tuple[str, State]:
        escaper = self._escapers.get(state[0])
        if escaper is None:
            where = self._where.get(state[0], "an XML declaration")
            raise _Unsafe(f"a placeholder inside {where} cannot be escaped")
        return escaper, self._after.get(state[0], state)


# -- walking a template ------------------------------------------------------------------------------

_NO_OUTPUT = (nodes.Assign, nodes.AssignBlock, nodes.Macro, nodes.Import, nodes.FromImport, nodes.ExprStmt,
              nodes.EvalContextModifier)
_WITH_BODY = (nodes.With, nodes.Scope, nodes.OverlayScope, nodes.ScopedEvalContextModifier, nodes.Block)
_TAGS: dict[type[nodes.Node], str] = {nodes.CallBlock: "{% call %}", nodes.Include: "{% include %}",
                                      nodes.Extends: "{% extends %}"}
_FILTERED = "_hookgate_filtered"


class _Walker:
    """Wraps every placeholder of a template in its escaper, in output order (the AST in place)."""

    def __init__(self, machine: _Json | _Xml, fmt: str):
        self.machine = machine
        self.fmt = fmt

    def statements(self, body: list[nodes.Node], state: State) -> State:
        rewritten: list[nodes.Node] = []
        for node in body:
            if isinstance(node, nodes.FilterBlock):  # its result is one value: captured, then written out
                rewritten.append(nodes.AssignBlock(nodes.Name(_FILTERED, "store"), node.filter, node.body,
                                                   lineno=node.lineno))
                node = nodes.Output([nodes.Name(_FILTERED, "load", lineno=node.lineno)], lineno=node.lineno)
            state = self.statement(node, state)
            rewritten.append(node)
        body[:] = rewritten
        return state

    def statement(self, node: nodes.Node, state: State) -> State:
        if isinstance(node, nodes.Output):
            return self.output(node, state)
        if isinstance(node, nodes.If):
            branches = [node.body, *(branch.body for branch in node.elif_), node.else_]
            return self.same([self.statements(branch, state) for branch in branches], node, "{% if %}")
        if isinstance(node, nodes.For):
            ends = [state, self.statements(node.body, state), self.statements(node.else_, state)]
            return self.same(ends, node, "{% for %}")
        if isinstance(node, _WITH_BODY):
            return self.statements(node.body, state)
        if isinstance(node, _NO_OUTPUT):
            return state
        tag = _TAGS.get(type(node), type(node).__name__)
        raise TemplateSyntaxError(f"{tag} is not supported in {self.fmt} templates", node.lineno)

    def output(self, node: nodes.Output, state: State) -> State:
        for index, child in enumerate(node.nodes):
            literal = _literal(child)
            if literal is not None:  # the template's own text, or a string constant its author wrote
                state = self.machine.feed(state, literal)
                continue
            try:
                escaper, state = self.machine.placeholder(state)
            except _Unsafe as exc:
                raise TemplateSyntaxError(str(exc), child.lineno) from None
            node.nodes[index] = nodes.Call(nodes.ImportedName(f"{__name__}.{escaper}"), [child], [], None, None,
                                           lineno=child.lineno)
        return state

    def same(self, ends: list[State], node: nodes.Node, tag: str) -> State:
        """The one state ``node``'s paths end in; paths ending in different ones are an error."""
        if len(set(ends)) > 1:
            places = " or ".join(sorted({self.machine.describe(end) for end in ends}))
            raise TemplateSyntaxError(f"this {tag} can end {places}: escaping after it would be a guess",
                                      node.lineno)
        return ends[0]


def _literal(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.TemplateData):
        return str(node.data)
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return node.value
    return None


_MACHINES: dict[str, Callable[[], _Json | _Xml]] = {"json": _Json, "form": _Json, "xml": _Xml}


def compile_escaped(environment: Environment, source: str, fmt: str) -> Template:
    """``source`` compiled in ``environment``, each placeholder escaped for where it stands in ``fmt``.
    Raises ``TemplateSyntaxError`` (with the line) for a syntax error or a placeholder that cannot be
    escaped."""
    machine = _MACHINES.get(fmt)
    if machine is None:
        return environment.from_string(source)
    tree = environment.parse(source)
    _Walker(machine(), fmt).statements(tree.body, machine().start)
    tree.set_environment(environment)
    return environment.from_string(tree)
