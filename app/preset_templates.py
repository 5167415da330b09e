"""A preset's path and header patterns, rendered over parameter values.

One place for the two renderings every preset request needs: ``presets.example_request`` shows them
for a preset's example, ``preset_destinations`` for a destination (what it stores, and what it sends).
Both import this module; neither imports the other for it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .rendering import render_body

__all__ = ["preset_url", "render_text"]


def render_text(source: str, params: dict[str, Any]) -> str:
    """A path or header pattern over ``params``. Raises ``RenderError``."""
    return render_body(source, "text", {"params": params}, max_bytes=16384, timeout_s=1.0).body.decode()


def join_path(base: str, path: str) -> str:
    """``path`` (and its query) joined to ``base``: after the base URL's path, before its query and
    fragment — not appended to the whole URL (``https://x/api?key=k`` + ``/lists`` is
    ``https://x/api/lists?key=k``); the two queries are both kept, the base's first."""
    if not path:
        return base
    if not path.startswith(("/", "?")):
        path = "/" + path
    scheme, netloc, base_path, base_query, fragment = urlsplit(base)
    extra_path, _, extra_query = path.partition("?")
    query = "&".join(q for q in (base_query, extra_query) if q)
    return urlunsplit((scheme, netloc, base_path.rstrip("/") + extra_path, query, fragment))


def preset_url(state: dict[str, Any], params: dict[str, Any]) -> str:
    """The URL of a preset request: ``params.url`` (else the preset's base URL) and the rendered path
    joined to it (``join_path``). ``state`` has ``base_url`` and ``path``, as a preset and a
    destination's preset state both do."""
    base = str(params.get("url") or state["base_url"])
    path = render_text(state.get("path", ""), params) if state.get("path") else ""
    return join_path(base, path) if path else base.rstrip("/")
