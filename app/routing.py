"""Routing: which destinations an event goes to, without scanning every destination per event.

The index is built in-process from all destinations and rebuilt only when the configuration version
in Redis changes (every write to sources or destinations bumps it). Exact names are one dict lookup;
wildcard patterns are grouped by their literal first segment (``journey.*`` under ``journey``), so
an event is only tested against patterns that can match it, plus the few that start with a wildcard.
A ``<category>.*`` pattern also takes every event whose category is ``<category>`` (one dict lookup), so
``journey.*`` takes WebEngage's ``journey_activated`` (category ``journey``) as well as ``journey.created``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, cast

import redis

from .filters import subscription_matcher
from .store import keys

__all__ = ["RoutingIndex", "Router"]

_WILDCARD = re.compile(r"[*?\[]")


def _first_segment(text: str) -> str:
    return text.split(".", 1)[0]


class RoutingIndex:
    """An immutable index of enabled destinations by the event names they subscribe to.

    A name or pattern in a destination's ``events`` matches an event's name or its category, so
    ``feedback`` subscribes to WebEngage's ``FEEDBACK_SUBMIT`` as well as to an event named feedback.
    The other filters (categories, channels, sources, origins, conditions) run on the candidates only.
    hookgate's own outcome events (category ``webhook``) match only names and patterns that name
    them (``webhook.*``, ``destination.disabled``, ``webhook``), never a bare ``*``. ``<category>.*``
    also matches every event of that category, whatever its name.
    """

    def __init__(self, destinations: Iterable[dict[str, Any]]):
        self.destinations: dict[str, dict[str, Any]] = {}
        self._filters: dict[str, Any] = {}
        self._exact: dict[str, list[str]] = defaultdict(list)
        self._patterns: dict[str, list[tuple[re.Pattern[str], str]]] = defaultdict(list)
        self._floating: list[tuple[re.Pattern[str], str]] = []
        self._whole_category: dict[str, list[str]] = defaultdict(list)  # "journey.*": category journey
        for destination in destinations:
            if not destination.get("enabled", True):
                continue
            did = destination["id"]
            self.destinations[did] = destination
            matcher = subscription_matcher(destination)
            if matcher is not None:
                self._filters[did] = matcher
            for pattern in destination.get("events") or ["*"]:
                match = _WILDCARD.search(pattern)
                if match is None:
                    self._exact[pattern].append(did)
                    continue
                if len(pattern) > 2 and pattern.endswith(".*") and match.start() == len(pattern) - 1:
                    self._whole_category[pattern[:-2]].append(did)
                compiled = re.compile(fnmatch.translate(pattern))
                literal = pattern[: match.start()]
                if "." in literal:
                    self._patterns[_first_segment(literal)].append((compiled, did))
                else:
                    self._floating.append((compiled, did))

    def names_subscribed(self, name: str, category: str) -> bool:
        """Whether any destination's names or patterns take this name or category (filters aside):
        a cheap test before building an event only to route it."""
        return bool(self._candidates({"name": name, "category": category}))

    def match(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Every enabled destination subscribed to ``event``, each once, in a stable order."""
        filters = self._filters
        return [self.destinations[did] for did in self._candidates(event)
                if did not in filters or filters[did](event)]

    def _candidates(self, event: dict[str, Any]) -> dict[str, None]:
        found: dict[str, None] = dict.fromkeys(self._whole_category.get(event.get("category") or "", ()))
        for key in (event["name"], event.get("category") or ""):
            if not key:
                continue
            found.update(dict.fromkeys(self._exact.get(key, ())))
            for compiled, did in self._patterns.get(_first_segment(key), ()):
                if did not in found and compiled.match(key):
                    found[did] = None
            if event.get("category") == "webhook":
                continue  # hookgate's own events go only to who names them: "*" does not
            for compiled, did in self._floating:
                if did not in found and compiled.match(key):
                    found[did] = None
        return found


class Router:
    """Keeps a ``RoutingIndex`` and the sources current: one GET of the configuration version per
    request (``refresh``), a rebuild only when it changed."""

    def __init__(self, db: redis.Redis):
        self.db = db
        self._lock = threading.Lock()
        self._version: bytes | str | None = None
        self._index = RoutingIndex(())
        self._sources: dict[str, dict[str, Any]] = {}

    def refresh(self, version: str | None = None) -> RoutingIndex:
        """The index for the configuration's current version (``version``: as the caller just read
        it, saving a round trip), rebuilt when it changed."""
        if version is None:
            version = cast(str | None, self.db.get(keys.config_version))
        version = version or "0"
        if version != self._version:
            with self._lock:
                if version != self._version:
                    # Read the version before the data: a write racing with this rebuild changes
                    # the version again, so the next call rebuilds once more.
                    raw = self.db.hvals(keys.destinations)
                    self._index = RoutingIndex(json.loads(item) for item in raw)
                    self._sources = {}
                    self._version = version
        return self._index

    def index(self) -> RoutingIndex:
        return self.refresh()

    def cached_index(self) -> RoutingIndex:
        """The index as of the last ``refresh`` (within one request: no second round trip)."""
        return self._index

    def source(self, source_id: str) -> dict[str, Any] | None:
        """A source as of the last ``refresh``, read from Redis once per configuration version."""
        cached = self._sources.get(source_id)
        if cached is None:
            raw = self.db.hget(keys.sources, source_id)
            if raw is None:
                return None
            cached = self._sources[source_id] = json.loads(raw)
        return cached

    def match(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return self.index().match(event)
