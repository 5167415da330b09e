"""Batch bodies: an item template rendered per event, and a root template around the rendered items.

The root sees ``items`` (the rendered items, as strings) and ``events``; its default joins the items
into a JSON array, an ``<events>`` element, or lines of text. An item that fails to render is left
out of the batch (its delivery records the error); the rest still go.
"""

from __future__ import annotations

from typing import Any

from ..escaping import trusted
from ..rendering import Rendered, RenderError, render_body, render_delivery

__all__ = ["DEFAULT_ITEMS", "DEFAULT_ROOTS", "render_batch"]

DEFAULT_ITEMS = {"json": "{{ event | tojson }}", "xml": "{{ event | toxml('event') }}",
                 "text": "{{ event.name }} {{ event.data | tojson }}"}
DEFAULT_ROOTS = {"json": '[{{ items | join(",") }}]', "xml": "<events>{{ items | join('') }}</events>",
                 "text": "{{ items | join('\\n') }}"}


def render_batch(destination: dict[str, Any], events: list[dict[str, Any]], *, max_bytes: int,
                 timeout_s: float, params: dict[str, Any] | None = None) -> tuple[Rendered | None, dict[int, str]]:
    """The batch body, and the render errors of items left out (by position in ``events``).

    Each item is rendered as the destination renders a single delivery (its ``item_template``, else
    its ``template``, else the default of its format and ``payload_style``; extra properties
    included), so a batch carries the same payloads one request each would."""
    fmt = destination["format"]
    batch = destination["batch"]
    as_item = {**destination, "template": batch.get("item_template") or destination.get("template")}
    if as_item["template"] is None and fmt == "text":
        as_item["template"] = DEFAULT_ITEMS["text"]
    items: list[str] = []
    included: list[dict[str, Any]] = []
    errors: dict[int, str] = {}
    for position, event in enumerate(events):
        try:
            rendered = render_delivery(as_item, event, max_bytes=max_bytes, timeout_s=timeout_s, params=params)
        except RenderError as exc:
            errors[position] = f"render: item: {exc}"
            continue
        items.append(trusted(rendered.body.decode(), fmt))  # checked JSON or XML: the root writes it as is
        included.append(event)
    if not items:
        return None, errors
    root_source = batch.get("root_template") or DEFAULT_ROOTS[fmt]
    # extra properties went into the items
    context = {"destination": {k: destination.get(k) for k in ("id", "name", "url", "method", "format")},
               "items": items, "events": included, "extra": {}, "params": params or {}}
    rendered = render_body(root_source, fmt, context, max_bytes=max_bytes * max(1, len(items)),
                           timeout_s=timeout_s * 4)
    return rendered, errors
