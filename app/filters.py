"""Subscriptions beyond event names: categories, channels, sources, origins, payload conditions, and
required fields.

A payload condition is JSON, checked when a destination is saved and compiled once per routing index:

    {"field": "data.amount", "op": "gte", "value": 100}
    {"and": [<condition>, ...]}      {"or": [<condition>, ...]}

Fields are dotted paths into the event: ``data.*``, ``profile.*``, ``system.*`` and the top-level
``name``, ``category``, ``channel``, ``origin``, ``source``, ``user_id``, ``anonymous_id``.
Operators: eq, neq, gt, gte, lt, lte, in, nin, exists, regex. A comparison with a missing field is
false (``neq`` and ``nin`` included), except ``exists: false``.

A ``regex`` is RE2 syntax, run by RE2 (google-re2): matching takes time linear in the text whatever the
pattern, so a source cannot stall ingest with a value crafted against a pattern (``^(\\w+\\s?)*$``
against ``"a" * 27 + "!"`` backtracks for seconds in Python's ``re``). What backtracking alone can do
(backreferences, lookaround) RE2 refuses when the destination is saved, as it refuses a pattern longer
than ``MAX_REGEX`` characters or whose compiled program exceeds ``MAX_REGEX_MEMORY``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import re2

__all__ = ["MISSING", "OPERATORS", "compile_condition", "lookup", "missing_required", "subscription_matcher",
           "validate_condition"]

OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "nin", "exists", "regex")
ROOTS = ("data", "profile", "system")
TOP_LEVEL = ("name", "category", "channel", "origin", "source", "user_id", "anonymous_id", "id", "external_id")
MAX_DEPTH = 8
MAX_NODES = 100
MAX_REGEX = 500  # characters of a pattern
MAX_REGEX_MEMORY = 1 << 20  # bytes RE2 may spend on one pattern: its compiled program and its DFA's cache

log = logging.getLogger(__name__)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()

Predicate = Callable[[dict[str, Any]], bool]


def _regex_options() -> Any:
    """RE2's options for every user pattern: the memory bound; no capture groups (a condition asks only
    whether the pattern matches, and without groups to report RE2 answers from its DFA); errors raised,
    not also logged to stderr."""
    options = re2.Options()
    options.max_mem = MAX_REGEX_MEMORY
    options.never_capture = True
    options.log_errors = False
    return options


_REGEX_OPTIONS = _regex_options()


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8 for RE2, lone surrogates included (JSON can carry ``"\\ud800"``: RE2 reads one as
    a character where Python's strict codec would raise)."""
    return text.encode("utf-8", "surrogatepass")


def _compile_regex(pattern: str) -> Any:
    """A user's pattern compiled by RE2 within the limits; ``re2.error`` if RE2 refuses it."""
    return re2.compile(_utf8(pattern), options=_REGEX_OPTIONS)


def _regex_problem(pattern: str) -> str | None:
    """Why RE2 refuses ``pattern`` (its size, or syntax RE2 lacks), or None when it compiles."""
    try:
        _compile_regex(pattern)
    except re2.error as exc:
        reason = _re2_reason(exc)
        if reason.startswith("pattern too large"):
            return f"pattern too large: over {MAX_REGEX_MEMORY // 1024} KiB compiled (fewer or smaller repetitions)"
        return f"not a valid RE2 regular expression: {reason}"
    return None


def _re2_reason(exc: Exception) -> str:
    """RE2's message, which its binding raises as bytes."""
    reason = exc.args[0] if exc.args else exc
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)


def lookup(event: dict[str, Any], path: str) -> Any:
    """``data.order.total`` → the value, or ``MISSING``. List items by index: ``data.items.0.sku``."""
    value: Any = event
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def _ordered(op: str) -> Callable[[Any, Any], bool]:
    compare = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
               "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}[op]

    def check(actual: Any, expected: Any) -> bool:
        numeric = (int, float)
        if isinstance(actual, bool) or isinstance(expected, bool):
            return False
        if isinstance(actual, numeric) and isinstance(expected, numeric):
            return compare(actual, expected)
        if isinstance(actual, str) and isinstance(expected, str):  # ISO dates compare as strings
            return compare(actual, expected)
        if isinstance(expected, numeric) and isinstance(actual, str):
            try:
                return compare(float(actual), expected)
            except ValueError:
                return False
        return False

    return check


def validate_condition(node: Any, path: str = "conditions", depth: int = 0,
                       count: list[int] | None = None) -> list[str]:
    """Every problem with a condition tree, as ``"<where>: <what>"`` strings (empty when valid)."""
    count = count if count is not None else [0]
    count[0] += 1
    if count[0] > MAX_NODES:
        return [f"{path}: at most {MAX_NODES} conditions"]
    if depth > MAX_DEPTH:
        return [f"{path}: nested deeper than {MAX_DEPTH}"]
    if not isinstance(node, dict):
        return [f"{path}: a condition is an object"]
    for combinator in ("and", "or"):
        if combinator in node:
            return _validate_combination(node, combinator, path, depth, count)
    return _validate_comparison(node, path)


def _validate_combination(node: dict[str, Any], combinator: str, path: str, depth: int,
                          count: list[int]) -> list[str]:
    """``{"and": [...]}`` or ``{"or": [...]}``: a non-empty list of conditions, and no other key."""
    if set(node) != {combinator} or not isinstance(node[combinator], list) or not node[combinator]:
        return [f"{path}: {combinator!r} takes a non-empty list of conditions, alone"]
    problems: list[str] = []
    for index, child in enumerate(node[combinator]):
        problems += validate_condition(child, f"{path}.{combinator}.{index}", depth + 1, count)
    return problems


def _validate_comparison(node: dict[str, Any], path: str) -> list[str]:
    """``{"field", "op", "value"}``: a field hookgate can look up, an operator, a value that operator takes."""
    if set(node) - {"field", "op", "value"} or "field" not in node or "op" not in node:
        return [f"{path}: a comparison is {{'field', 'op', 'value'}}"]
    field, op, value = node["field"], node["op"], node.get("value")
    problems = []
    if not isinstance(field, str) or not (field in TOP_LEVEL or field.split(".", 1)[0] in ROOTS and "." in field):
        problems.append(f"{path}.field: use {', '.join(TOP_LEVEL)} or a path under {', '.join(ROOTS)}")
    if op not in OPERATORS:
        problems.append(f"{path}.op: one of {', '.join(OPERATORS)}")
    else:
        problems += _value_problems(op, value, "value" in node, f"{path}.value")
    return problems


def _value_problems(op: str, value: Any, given: bool, path: str) -> list[str]:
    """What is wrong with the value of a comparison by ``op`` (one of ``OPERATORS``): at most one problem."""
    if op in ("in", "nin") and not isinstance(value, list):
        return [f"{path}: {op!r} takes a list"]
    if op == "exists" and not isinstance(value, bool):
        return [f"{path}: 'exists' takes true or false"]
    if op == "regex":
        if not isinstance(value, str) or len(value) > MAX_REGEX:
            return [f"{path}: 'regex' takes a pattern of at most {MAX_REGEX} characters"]
        problem = _regex_problem(value)
        return [f"{path}: {problem}"] if problem else []
    if op in ("gt", "gte", "lt", "lte") and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
        return [f"{path}: {op!r} compares numbers or strings"]
    if not given and op != "exists":
        return [f"{path}: required"]
    return []


def compile_condition(node: dict[str, Any]) -> Predicate:
    """A validated condition → a predicate over the canonical event."""
    if "and" in node:
        parts = [compile_condition(child) for child in node["and"]]
        return lambda event: all(part(event) for part in parts)
    if "or" in node:
        parts = [compile_condition(child) for child in node["or"]]
        return lambda event: any(part(event) for part in parts)
    return _compile_comparison(node["field"], node["op"], node.get("value"))


def _compile_comparison(field: str, op: str, expected: Any) -> Predicate:
    """One validated comparison → its predicate. A missing field makes it false, but for ``exists: false``
    (``eq`` needs no check: ``MISSING`` equals no JSON value)."""
    if op == "exists":
        return lambda event: (lookup(event, field) is not MISSING) == expected
    if op == "eq":
        return lambda event: lookup(event, field) == expected
    if op == "neq":
        return lambda event: (actual := lookup(event, field)) is not MISSING and actual != expected
    if op == "in":
        return lambda event: (actual := lookup(event, field)) is not MISSING and actual in expected
    if op == "nin":
        return lambda event: (actual := lookup(event, field)) is not MISSING and actual not in expected
    if op == "regex":
        return _regex_predicate(field, expected)
    check = _ordered(op)
    return lambda event: (actual := lookup(event, field)) is not MISSING and check(actual, expected)


def _regex_predicate(field: str, expected: str) -> Predicate:
    """``regex``: the field is a string the pattern matches somewhere (``search``). A pattern saved before
    hookgate used RE2 that RE2 refuses (a backreference, a lookaround) matches nothing, with a warning
    each time the routing index is built: a destination then receives less than it asked for, never
    more, and one old pattern cannot stop routing for everyone."""
    try:
        pattern = _compile_regex(expected)
    except re2.error as exc:
        log.warning("condition on %s: RE2 refuses the pattern %r (%s); it matches nothing until the "
                    "destination's conditions are saved again", field, expected, _re2_reason(exc))
        return lambda event: False
    return lambda event: isinstance(actual := lookup(event, field), str) and pattern.search(_utf8(actual)) is not None


def _field_in(key: str, wanted: frozenset[Any]) -> Predicate:
    return lambda event: event.get(key) in wanted


def subscription_matcher(destination: dict[str, Any]) -> Predicate | None:
    """The filters of a destination other than event names, as one predicate (None: no filters)."""
    checks: list[Predicate] = []
    for field, key in (("categories", "category"), ("channels", "channel"), ("sources", "source")):
        allowed = destination.get(field)
        if allowed:
            checks.append(_field_in(key, frozenset(allowed)))
    excluded = destination.get("exclude_origins")
    if excluded:
        refused = frozenset(excluded)
        checks.append(lambda event: event.get("origin") not in refused)
    if destination.get("conditions"):
        checks.append(compile_condition(destination["conditions"]))
    if not checks:
        return None
    return lambda event: all(check(event) for check in checks)


def missing_required(destination: dict[str, Any], event: dict[str, Any]) -> list[str]:
    """Required fields the event lacks (missing, null or empty)."""
    return [path for path in destination.get("required_fields") or ()
            if lookup(event, path) in (MISSING, None, "")]
