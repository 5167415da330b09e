"""Source adapters: each source kind's request body → canonical event fields.

An adapter is a module with ``parse(payload) -> list[dict]`` (and ``parse_xml(root)`` where the
platform sends XML) that raises ``ValidationError`` with details keyed by item index; adding a kind
is adding a module and a line to ``ADAPTERS``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..errors import UnsupportedMediaType, ValidationError
from ..events import MAX_EVENTS_PER_REQUEST, check_count
from . import bloomreach, crossengage, generic, webengage, xtremepush
from . import xml as xml_body

__all__ = ["ADAPTERS", "MAX_EVENTS_PER_REQUEST", "accepts_xml", "parse", "parse_each", "parse_xml"]

ADAPTERS: dict[str, ModuleType] = {
    "generic": generic,
    "webengage": webengage,
    "xtremepush": xtremepush,
    "crossengage": crossengage,
    "bloomreach": bloomreach,
}


def parse(kind: str, payload: Any) -> list[dict[str, Any]]:
    return ADAPTERS[kind].parse(payload)


def accepts_xml(kind: str) -> bool:
    return hasattr(ADAPTERS[kind], "parse_xml")


def parse_xml(kind: str, body: bytes) -> list[dict[str, Any]]:
    if not accepts_xml(kind):
        raise UnsupportedMediaType(f"a {kind} source takes JSON only", {"kind": kind})
    return ADAPTERS[kind].parse_xml(xml_body.parse(body))


def parse_each(kind: str, payload: Any) -> tuple[list[tuple[int, dict[str, Any]]], dict[str, Any]]:
    """A JSON list item by item, so one bad item does not reject the others.

    Returns ``([(index, fields), …], {index: errors})``. An item may yield several events (a
    platform's batch item), each keeping the index of the item it came from.
    """
    if not isinstance(payload, list):
        return [(0, fields) for fields in parse(kind, payload)], {}
    check_count(payload)
    good: list[tuple[int, dict[str, Any]]] = []
    errors: dict[str, Any] = {}
    for index, item in enumerate(payload):
        try:
            good += [(index, fields) for fields in parse(kind, item)]
        except ValidationError as exc:
            errors[str(index)] = exc.details
    return good, errors
