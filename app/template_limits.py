"""What one template operation may make, and which templates may render in the caller's process.

rendering.py's environment is built from three parts kept here:

- Nothing is evaluated when a template is compiled. Jinja folds an output whose parts are constants
  (``{{ 'a' * 100000000 }}`` became a 100 MB string in the API process that saved it, and stayed in
  the compiled code); ``NoFolding`` writes only template text and literals as they are, and the
  environment runs without Jinja's optimizer, so saving a template costs its parsing, whatever it says.
- Caps, checked before the operation runs, each a ``LimitExceeded`` naming it: the operators ``*``,
  ``**``, ``%`` and ``+`` (intercepted by the sandbox), ``range`` (100,000 numbers), ``lipsum``, the
  filters that grow their input by an argument (``center``, ``indent``, ``format``, ``replace``,
  ``wordwrap``, ``slice``, ``batch``, ``join``, ``tojson``'s indent, ``round``'s precision), the str
  methods that do (``center``, ``ljust``, ``rjust``, ``zfill``, ``expandtabs``, ``join``, ``replace``,
  ``translate``) and format widths (``'{:>100000000}'.format(x)``). A value may be as long as the
  render's output limit (``limits.max_size``), an integer ``MAX_INT_BITS`` bits.
- ``bounded(tree)``: whether a template's cost is at most a fixed multiple of its context's size, so
  that it may render in the caller's process. Caps cannot list every way to spend memory or CPU
  time in one C-level operation (a comparison of two lists of long strings runs for seconds), so a
  template that is not proven bounded renders in a child process under hard limits (render_guard.py).
  Proven bounded: no loops, macros or calls (but escaping's escapers), no ``*``, ``**`` or ``%``,
  filters and tests from ``LINEAR_FILTERS`` and ``LINEAR_TESTS``; each expression's work at most
  ``VALUE_BUDGET`` times the context's size, the values kept in variables ``KEPT_BUDGET`` times, the
  whole template's ``TOTAL_BUDGET`` times. Sizes are counted generously, in units of the context's
  size (the larger of its JSON and its ``str``): a part of the context is 1, a filter multiplies by
  its growth, and an expression's work is the sum of the sizes of all its values. Events are at most
  ``HOOKGATE_MAX_BODY_BYTES``, so a bounded render costs at most ~1,000 times that (a 1 KB event:
  ~1 MB of string work), and the deadline is checked at every attribute, call and written part.
"""

from __future__ import annotations

import math
import re
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import update_wrapper
from typing import Any

from jinja2 import Environment, filters, nodes, pass_environment, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import EvalContext
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import generate_lorem_ipsum
from markupsafe import Markup

from . import escaping

__all__ = [
    "LimitExceeded",
    "MAX_INT_BITS",
    "MAX_ITEMS",
    "NoFolding",
    "Range",
    "bounded",
    "capped_filters",
    "check_binop",
    "check_call",
    "check_deadline",
    "limits",
    "str_format",
]

DEFAULT_MAX_SIZE = 256 * 1024  # outside a render (a compile): HOOKGATE_TEMPLATE_MAX_BYTES's default
MAX_ITEMS = 100_000  # numbers in a range, slices, a batch's length (Jinja's own MAX_RANGE)
MAX_INT_BITS = 1 << 16  # ~19,700 digits: Python itself writes at most 4,300
MAX_INDENT = 16  # tojson's indent: its output grows with the indent times the nesting depth
MAX_PRECISION = 1000  # round()'s digits
BINOPS = frozenset({"*", "**", "%", "+"})


class LimitExceeded(Exception):
    """An operation of a template would pass a limit; the message names it."""


class _Limits(threading.local):
    deadline: float = float("inf")
    timeout_s: float = 0.0
    max_size: int = DEFAULT_MAX_SIZE


limits = _Limits()


def check_deadline() -> None:
    if time.monotonic() > limits.deadline:
        raise LimitExceeded(f"template took too long to render (the limit is {limits.timeout_s:g} s)")


def _check_size(size: int, what: str) -> None:
    if size > limits.max_size:
        raise LimitExceeded(f"template limit: {what} would make {size:,} characters or items, "
                            f"more than the {limits.max_size:,} a render may make")


def _check_items(count: Any, what: str) -> None:
    if isinstance(count, int) and count > MAX_ITEMS:
        raise LimitExceeded(f"template limit: {what} of {count:,} items, more than {MAX_ITEMS:,}")


def _check_bits(bits: float, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise LimitExceeded(f"template limit: {what} would make a number of more than {MAX_INT_BITS:,} bits")


def _number(text: str) -> int:
    """A width written in a format string (digits only): more than nine digits is more than any limit."""
    return int(text) if len(text) <= 9 else 10**9


# -- operators -------------------------------------------------------------------------------------------

_SIZED = (str, bytes, list, tuple)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Before ``left <operator> right`` (the operators in ``BINOPS``)."""
    if operator == "*":
        _check_repeat(left, right)
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            _check_bits(right if right > MAX_INT_BITS else right * math.log2(abs(left)), "`**`")
    elif operator == "%":
        if isinstance(left, (str, bytes)):
            check_percent(left)
    elif isinstance(left, _SIZED) and isinstance(right, _SIZED):
        _check_size(len(left) + len(right), "`+`")


def _check_repeat(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        _check_bits(left.bit_length() + right.bit_length(), "`*`")
    elif isinstance(left, _SIZED) and isinstance(right, int):
        _check_size(len(left) * right, "`*`")
    elif isinstance(right, _SIZED) and isinstance(left, int):
        _check_size(len(right) * left, "`*`")


_PERCENT_SPEC = re.compile(r"%%|%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_percent(text: str | bytes) -> None:
    """A printf-style format's widths and precisions (``'%100000000d'``)."""
    spec = text.decode("latin-1") if isinstance(text, bytes) else text
    for match in _PERCENT_SPEC.finditer(spec):
        for number in match.groups():
            if number == "*":
                raise LimitExceeded("template limit: a `*` width in %-formatting is not supported")
            if number:
                _check_size(_number(number), "a %-format width")


_DIGITS = re.compile(r"\d+")


def _check_format_spec(spec: str) -> None:
    for number in _DIGITS.findall(spec):
        _check_size(_number(number), "a format width")


# -- str methods called from a template ----------------------------------------------------------------

def check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Before a call: the str (and bytes) methods that grow their string by an argument. Returns the
    arguments to call with (``join``'s iterable made a list, to count it)."""
    if not isinstance(obj, types.BuiltinMethodType) or not isinstance(obj.__self__, (str, bytes)):
        return args
    check = _METHOD_CHECKS.get(obj.__name__)
    return check(obj.__self__, args, kwargs) if check is not None and args else args


def _width(name: str) -> Callable[[Any, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]:
    def check(text: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        if isinstance(args[0], int):
            _check_size(args[0], f"{name}()")
        return args

    return check


def _expandtabs(text: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(args[0], int):
        _check_size(len(text) + text.count("\t" if isinstance(text, str) else b"\t") * args[0], "expandtabs()")
    return args


def _join(text: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    items = list(args[0])
    _check_size(len(text) * max(len(items) - 1, 0), "join()'s separators")
    return (items, *args[1:])


def _str_replace(text: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if len(args) >= 2:
        _check_size(_replaced_size(text, args[0], args[1], args[2] if len(args) > 2 else None), "replace()")
    return args


def _translate(text: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
        _check_size(len(text) * longest, "translate()")
    return args


_METHOD_CHECKS = {"center": _width("center"), "ljust": _width("ljust"), "rjust": _width("rjust"),
                  "zfill": _width("zfill"), "expandtabs": _expandtabs, "join": _join, "replace": _str_replace,
                  "translate": _translate}  # expandtabs() with no argument: 8 per tab, linear


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)) and not (
            isinstance(text, bytes) and isinstance(old, bytes) and isinstance(new, bytes)):
        return 0  # the call fails by itself
    found = len(text) + 1 if not old else text.count(old)  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


class _CappedFormatter(SandboxedFormatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_format_spec(format_spec)
        return super().format_field(value, format_spec)


class _CappedEscapeFormatter(SandboxedEscapeFormatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_format_spec(format_spec)
        return super().format_field(value, format_spec)


def str_format(environment: Environment, value: Any) -> Callable[..., str] | None:
    """``SandboxedEnvironment.wrap_str_format`` (Jinja 3.1), with the format widths capped."""
    if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or value.__name__ not in (
            "format", "format_map"):
        return None
    f_self = value.__self__
    if not isinstance(f_self, str):
        return None
    str_type = type(f_self)
    is_format_map = value.__name__ == "format_map"
    formatter: SandboxedFormatter
    if isinstance(f_self, Markup):
        formatter = _CappedEscapeFormatter(environment, escape=f_self.escape)
    else:
        formatter = _CappedFormatter(environment)
    vformat = formatter.vformat

    def wrapper(*args: Any, **kwargs: Any) -> str:
        if is_format_map:
            if kwargs:
                raise TypeError("format_map() takes no keyword arguments")
            if len(args) != 1:
                raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
            kwargs, args = args[0], ()
        return str_type(vformat(f_self, args, kwargs))

    return update_wrapper(wrapper, value)


# -- globals and filters -------------------------------------------------------------------------------

class Range(Sequence[int]):
    """``range`` in templates: at most ``MAX_ITEMS`` numbers, and the deadline checked while counting."""

    __slots__ = ("_numbers",)

    def __init__(self, *args: int):
        numbers = range(*args)
        _check_items(len(numbers), "range()")
        self._numbers = numbers

    def __len__(self) -> int:
        return len(self._numbers)

    def __getitem__(self, index: Any) -> Any:
        return self._numbers[index]

    def __contains__(self, value: object) -> bool:
        return value in self._numbers

    def __iter__(self) -> Iterator[int]:
        for count, number in enumerate(self._numbers):
            if count % 1024 == 0:
                check_deadline()
            yield number

    def __repr__(self) -> str:
        return repr(self._numbers)


def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # Jinja's parameter names
    if isinstance(n, int) and isinstance(max, int) and isinstance(min, int):
        _check_size(n * (max if max > min else min) * 12, "lipsum()")  # words of at most ~12 characters
    return generate_lorem_ipsum(n, html, min, max)


def _center(value: Any, width: int = 80) -> str:
    if isinstance(width, int):
        _check_size(width, "center()")
    return filters.do_center(value, width)


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = str(s)
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    _check_size(len(text) + (text.count("\n") + 1) * step, "indent()")
    return filters.do_indent(text, width, first, blank)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    check_percent(str(value))
    return filters.do_format(value, *args, **kwargs)


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    _check_size(_replaced_size(str(s), str(old), str(new), count), "replace()")
    return filters.do_replace(eval_ctx, s, old, new, count)


@pass_environment
def _wordwrap(environment: Environment, s: Any, width: int = 79, break_long_words: bool = True,
              wrapstring: str | None = None, break_on_hyphens: bool = True) -> str:
    text = str(s)
    separator = wrapstring or environment.newline_sequence
    if isinstance(width, int) and width > 0:
        breaks = len(text) // width + text.count(" ") + text.count("\n") + 1
        _check_size(len(text) + breaks * len(separator), "wordwrap()")
    return filters.do_wordwrap(environment, text, width, break_long_words, wrapstring, break_on_hyphens)


def _round(value: float, precision: int = 0, method: str = "common") -> float:
    if isinstance(precision, int) and precision > MAX_PRECISION:  # floor and ceil compute 10 ** precision
        raise LimitExceeded(f"template limit: round() precision of {precision:,} is more than {MAX_PRECISION}")
    return filters.do_round(value, precision, method)  # type: ignore[arg-type]


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _check_items(slices, "slice()")
    return filters.sync_do_slice(value, slices, fill_with)


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _check_items(linecount, "batch()")
    return filters.do_batch(value, linecount, fill_with)


def _capped_join(original: Callable[..., str]) -> Callable[..., str]:
    """``join`` (escaping's, which takes the environment), with its separators counted first."""

    @pass_environment
    def join(environment: Environment, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
        items = list(value)
        _check_size(len(str(d)) * max(len(items) - 1, 0), "join()'s separators")
        return original(environment, items, d, attribute)

    return join


def capped_filters(installed: dict[str, Any]) -> dict[str, Any]:
    """The filters that take a size from their arguments, capped (``installed``: the environment's)."""
    return {"center": _center, "indent": _indent, "format": _format, "replace": _replace, "round": _round,
            "wordwrap": _wordwrap, "slice": _slice, "batch": _batch, "join": _capped_join(installed["join"])}


def check_indent(indent: Any) -> None:
    """tojson's ``indent`` (a number of spaces or a string)."""
    width = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    if width > MAX_INDENT:
        raise LimitExceeded(f"template limit: tojson's indent of {width:,} is more than {MAX_INDENT}")


# -- compiling -----------------------------------------------------------------------------------------

class NoFolding(CodeGenerator):
    """Jinja's code generator, evaluating nothing at compile time: only template text and literal
    constants are written into the code as they are; every other output is computed when rendered."""

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if not isinstance(node, (nodes.TemplateData, nodes.Const)):
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)

    def visit_EvalContextModifier(self, node: nodes.EvalContextModifier, frame: Frame) -> None:
        """``{% autoescape <expr> %}``: Jinja evaluates the expression now to know the state; here
        only a literal is read now, and anything else is left to the render (as Jinja does when it
        cannot evaluate it)."""
        for keyword in node.options:
            self.writeline(f"context.eval_ctx.{keyword.key} = ")
            self.visit(keyword.value, frame)
            if isinstance(keyword.value, nodes.Const):
                setattr(frame.eval_ctx, keyword.key, keyword.value.value)
            else:
                frame.eval_ctx.volatile = True


# -- which templates are bounded -----------------------------------------------------------------------

VALUE_BUDGET = 64  # one expression's work (its values, alive at once at most)
KEPT_BUDGET = 64  # the values kept in variables ({% set %})
TOTAL_BUDGET = 1024  # the whole template's work (a 30-field JSON mapping is 210, WebEngage's default 53)

#: filter → at most how many times the size of its input (and arguments) its result is, the work
#: linear too; only those in ``_WITH_ARGUMENTS`` may be given arguments (``trim(chars)`` is quadratic,
#: ``round(precision, 'floor')`` computes 10 ** precision, ``tojson(indent)`` grows with the depth)
LINEAR_FILTERS = {
    "tojson": 2, "epoch": 0, "toxml": 5, "flatten": 2, "url_path": 1, "safe": 1, "string": 1,
    "lower": 3, "upper": 3, "capitalize": 3, "trim": 1, "truncate": 1, "default": 1, "d": 1,
    "first": 1, "last": 1, "length": 0, "count": 0, "int": 0, "float": 0, "abs": 1, "round": 1,
    "filesizeformat": 0, "urlencode": 12, "e": 10, "escape": 10, "forceescape": 10,
    "join": 2,  # plus the separator's length, which must be a literal
}
_WITH_ARGUMENTS = frozenset({"toxml", "truncate", "default", "d", "int", "float", "join"})
LINEAR_TESTS = frozenset({
    "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string",
    "mapping", "sequence", "iterable", "callable", "sameas", "escaped", "lower", "upper", "in",
    "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "gt", "greaterthan", ">", "le", "<=", "ge", ">=",
})
#: the escapers escaping.py wraps placeholders in → their growth
_ESCAPERS = {f"{escaping.__name__}.{name}": growth for name, growth in {
    "json_value": 2, "json_string": 4, "xml_text": 10, "xml_attribute": 10, "xml_quoted_attribute": 10,
    "xml_name": 2, "xml_name_start": 2, "xml_cdata": 10}.items() if hasattr(escaping, name)}
#: what an escaper writes as it is (escaping.py: JSON where a JSON value stands, Markup in XML text)
_PASSED = {"json_value": {"tojson", "epoch", "safe"}, "xml_text": {"toxml", "safe", "e", "escape", "forceescape"}}
_COMPARISONS = frozenset({"eq", "ne", "lt", "lteq", "gt", "gteq", "in", "notin"})
_CONTEXT_PART = 1  # a name from the context (or a global): a part of it


class _Unbounded(Exception):
    pass


def bounded(tree: nodes.Template) -> bool:
    """Whether the template's cost is at most ``TOTAL_BUDGET`` times its context's size (see above)."""
    try:
        _Cost().statements(tree.body)
    except _Unbounded:
        return False
    return True


class _Cost:
    """Sizes in multiples of the context's size; ``work`` is the sum of every value's size."""

    def __init__(self) -> None:
        self.work = 0
        self.kept = 0
        self.names: dict[str, int] = {}

    def statements(self, body: list[nodes.Node]) -> int:
        """The size of what ``body`` writes out (what a ``{% set %}`` block keeps)."""
        return sum(self.statement(node) for node in body)

    def statement(self, node: nodes.Node) -> int:
        if isinstance(node, nodes.Output):
            return sum(self.expression(child) for child in node.nodes if not isinstance(child, nodes.TemplateData))
        if isinstance(node, nodes.If):
            self.expression(node.test)
            written = self.statements(node.body) + self.statements(node.else_)
            for branch in node.elif_:
                written += self.statement(branch)
            return written
        if isinstance(node, nodes.Assign):
            self.keep(node.target, self.expression(node.node))
            return 0
        if isinstance(node, nodes.AssignBlock):
            size = self.statements(node.body)
            if node.filter is not None:
                size = self.filter(node.filter, size)
                self.spend(size)
            self.keep(node.target, size)
            return 0
        raise _Unbounded

    def keep(self, target: nodes.Node, size: int) -> None:
        names = target.items if isinstance(target, nodes.Tuple) else [target]
        for name in names:
            if not isinstance(name, nodes.Name):
                raise _Unbounded  # a namespace attribute: namespace() is a call anyway
            self.names[name.name] = max(self.names.get(name.name, 0), size)
        self.kept += size
        if self.kept > KEPT_BUDGET:
            raise _Unbounded

    def expression(self, node: nodes.Node) -> int:
        before = self.work
        size = self.size(node)
        if self.work - before > VALUE_BUDGET:
            raise _Unbounded
        return size

    def spend(self, size: int) -> None:
        self.work += size
        if self.work > TOTAL_BUDGET:
            raise _Unbounded

    def size(self, node: nodes.Node | None) -> int:
        if node is None:
            return 0
        measure = getattr(self, f"_{type(node).__name__}", None)
        if measure is None:
            raise _Unbounded
        size: int = measure(node)
        self.spend(size)
        return size

    def _Const(self, node: nodes.Const) -> int:  # a literal: bounded by the template's own size
        return 0

    def _Name(self, node: nodes.Name) -> int:
        return self.names.get(node.name, _CONTEXT_PART)

    def _Getattr(self, node: nodes.Getattr) -> int:
        return self.size(node.node)

    def _Getitem(self, node: nodes.Getitem) -> int:
        self.size(node.arg)
        return self.size(node.node)

    def _Slice(self, node: nodes.Slice) -> int:
        for part in (node.start, node.stop, node.step):
            self.size(part)
        return 0

    def _CondExpr(self, node: nodes.CondExpr) -> int:
        self.size(node.test)
        return max(self.size(node.expr1), self.size(node.expr2))

    def _either(self, node: nodes.BinExpr) -> int:
        return max(self.size(node.left), self.size(node.right))

    def _both(self, node: nodes.BinExpr) -> int:
        return self.size(node.left) + self.size(node.right)

    _And = _Or = _Sub = _Div = _FloorDiv = _either  # one operand, or a number
    _Add = _both

    def _unary(self, node: nodes.UnaryExpr) -> int:
        return self.size(node.node)

    _Not = _Neg = _Pos = _unary

    def _MarkSafe(self, node: nodes.MarkSafe) -> int:
        return self.size(node.expr)

    _MarkSafeIfAutoescape = _MarkSafe

    def _Concat(self, node: nodes.Concat) -> int:
        return sum(self.size(part) for part in node.nodes)

    def _Tuple(self, node: nodes.Tuple) -> int:
        return sum(self.size(item) for item in node.items)

    _List = _Tuple

    def _Dict(self, node: nodes.Dict) -> int:
        return sum(self.size(pair.key) + self.size(pair.value) for pair in node.items)

    def _Compare(self, node: nodes.Compare) -> int:
        self.size(node.expr)
        for operand in node.ops:
            if operand.op not in _COMPARISONS:
                raise _Unbounded
            self.size(operand.expr)
        return 0

    def _Test(self, node: nodes.Test) -> int:
        if node.name not in LINEAR_TESTS:
            raise _Unbounded
        self.arguments(node)
        self.size(node.node)
        return 0

    def _Filter(self, node: nodes.Filter) -> int:
        return self.filter(node, 0)

    def filter(self, node: nodes.Filter, piped: int) -> int:
        """A filter's result; ``piped`` is the size of a ``{% set %}`` block's body it filters."""
        growth = LINEAR_FILTERS.get(node.name)
        if growth is None:
            raise _Unbounded
        if node.name not in _WITH_ARGUMENTS and (node.args or node.kwargs):
            raise _Unbounded
        if node.name == "join":
            growth += self.separator(node)
        return growth * (self.size(node.node) + piped + self.arguments(node))

    def separator(self, node: nodes.Filter) -> int:
        if node.kwargs or len(node.args) > 1:
            raise _Unbounded
        separator = node.args[0] if node.args else nodes.Const("")
        if not isinstance(separator, nodes.Const) or not isinstance(separator.value, str):
            raise _Unbounded
        return len(separator.value)

    def arguments(self, node: nodes.Filter | nodes.Test | nodes.Call) -> int:
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            raise _Unbounded
        return sum(self.size(arg) for arg in node.args) + sum(self.size(pair.value) for pair in node.kwargs)

    def _Call(self, node: nodes.Call) -> int:
        """Only escaping's escapers: ``json_value(<placeholder>)``."""
        if not isinstance(node.node, nodes.ImportedName) or node.node.importname not in _ESCAPERS:
            raise _Unbounded
        growth = _ESCAPERS[node.node.importname]
        passed = _PASSED.get(node.node.importname.rpartition(".")[2], {"safe"})
        if len(node.args) == 1 and isinstance(node.args[0], nodes.Filter) and node.args[0].name in passed:
            growth = 1
        return growth * self.arguments(node)
