"""A preset's path and header patterns, rendered over parameter values.

One place for the two renderings every preset request needs: ``presets.example_request`` shows them
for a preset's example, ``preset_destinations`` for a destination (what it stores, and what it sends).
Both import this module; neither imports the other for it.
"""

from __future__ import annotations

from typing import Any

from .rendering import render_body

__all__ = ["preset_url", "render_text"]


def render_text(source: str, params: dict[str, Any]) -> str:
    """A path or header pattern over ``params``. Raises ``RenderError``."""
    return render_body(source, "text", {"params": params}, max_bytes=16384, timeout_s=1.0).body.decode()


def preset_url(state: dict[str, Any], params: dict[str, Any]) -> str:
    """The URL of a preset request: ``params.url`` (else the preset's base URL) and the rendered path.
    ``state`` has ``base_url`` and ``path``, as a preset and a destination's preset state both do."""
    base = str(params.get("url") or state["base_url"]).rstrip("/")
    path = render_text(state.get("path", ""), params) if state.get("path") else ""
    if path and not path.startswith(("/", "?")):
        path = "/" + path
    return base + path
