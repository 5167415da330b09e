"""Source adapters: each source kind's request body → canonical event fields.

An adapter is a module with ``parse(payload) -> list[dict]`` that raises ``ValidationError`` with
per-item details; adding a kind is adding a module and a line to ``ADAPTERS``.
"""

from __future__ import annotations

from typing import Any, Callable

from ..events import MAX_EVENTS_PER_REQUEST
from . import generic

__all__ = ["ADAPTERS", "MAX_EVENTS_PER_REQUEST", "parse"]

ADAPTERS: dict[str, Callable[[Any], list[dict[str, Any]]]] = {
    "generic": generic.parse,
}


def parse(kind: str, payload: Any) -> list[dict[str, Any]]:
    return ADAPTERS[kind](payload)
