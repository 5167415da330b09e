"""Pages of a sorted-set index, newest first, behind an opaque cursor: the deliveries' and the events' lists.

A cursor is the last item shown, ``<score>:<member>``. Ranks shift as items arrive (at the top) and
are trimmed (at the bottom), so a page resumes at the first rank with the cursor's score and skips
what sorts before the cursor: an item that arrives meanwhile is on no later page, and none is
skipped. A filter that matches few items is read through at most ``SCAN_ROUNDS`` batches a request;
the cursor then says where the next request goes on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

import redis

from .errors import ValidationError

__all__ = ["SCAN_ROUNDS", "parse_cursor", "scan"]

SCAN_ROUNDS = 20
Loader = Callable[[list[str]], list[dict[str, Any] | None]]


def parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    """A cursor given back (None when none was): 422 naming ``cursor`` when this API did not make it."""
    if not cursor:
        return None
    score, _, member = cursor.partition(":")
    if not re.fullmatch(r"[0-9]{1,20}", score) or not member:
        raise ValidationError("invalid query", {"cursor": ["Not a cursor returned by this API."]})
    return int(score), member


def _start(db: redis.Redis, index: str, seen: tuple[int, str] | None, ceiling: int | None) -> int:
    """The rank (newest first) of the first item with a score at or below the cursor's and ``ceiling``."""
    tops = [bound for bound in (ceiling, seen[0] if seen else None) if bound is not None]
    return db.zcount(index, f"({min(tops)}", "+inf") if tops else 0


def _keep(rows: list[tuple[str, float]], seen: tuple[int, str] | None, floor: int | None,
          ceiling: int | None) -> tuple[list[tuple[str, int]], bool]:
    """The rows after the cursor and inside the window, and whether the window ends among them."""
    inside = [(m, int(sc)) for m, sc in rows if floor is None or int(sc) >= floor]
    after = [(m, sc) for m, sc in inside if seen is None or (sc, m) < seen]
    return [(m, sc) for m, sc in after if ceiling is None or sc <= ceiling], len(inside) < len(rows)


def scan(db: redis.Redis, index: str, load: Loader, wanted: Callable[[dict[str, Any]], bool], limit: int,
         seen: tuple[int, str] | None, *, floor: int | None = None, ceiling: int | None = None) -> dict[str, Any]:
    """One page of ``index``, newest first, of the items ``load`` finds (by member) and ``wanted``
    keeps, after the cursor ``seen``, with scores from ``floor`` to ``ceiling`` (inclusive, when given):
    ``{"items", "next_cursor"}``."""
    start = _start(db, index, seen, ceiling)
    batch = max(limit * 2, 100)
    items: list[dict[str, Any]] = []
    last = seen
    for _ in range(SCAN_ROUNDS):
        rows = cast(list[tuple[str, float]], db.zrevrange(index, start, start + batch - 1, withscores=True))
        start += len(rows)
        members, window_ends = _keep(rows, seen, floor, ceiling)
        for item, (member, score) in zip(load([m for m, _ in members]), members, strict=True):
            last = (score, member)
            if item is not None and wanted(item):
                items.append(item)
                if len(items) == limit:
                    return {"items": items, "next_cursor": f"{score}:{member}"}
        if len(rows) < batch or window_ends:  # the index, or the window, is read to its end
            return {"items": items, "next_cursor": None}
    # Scanned enough for one request: hand back where to go on from.
    return {"items": items, "next_cursor": f"{last[0]}:{last[1]}" if last else None}
