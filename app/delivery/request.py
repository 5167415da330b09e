"""What a delivery sends: its headers, what a preset adds to it, and how a GET carries a form.

A preset destination's requests get the preset's URL and headers (secrets decrypted), its parameters
for the templates, and, if its plugin has them, a screening of events before rendering and a reading
of the answer after sending (``Verdict``). A drain job and a trial (``trial.py``) build requests
the same way, from here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from ..headers import check_sent
from ..preset_destinations import request_parts
from ..presets import Preset, Verdict
from ..rendering import Rendered
from ..runtime import Runtime
from ..scrub import NOTHING, Scrubber
from .http import Response

__all__ = ["NO_PRESET", "Outgoing", "PresetRequest", "Presets", "outgoing", "request_headers", "with_query"]

log = logging.getLogger(__name__)

Screen = Callable[[dict[str, Any], dict[str, Any]], str | None]  # (event, params) → the reason not to send it


class PresetRequest(NamedTuple):
    """A preset destination's request parts: real URL, URL to log, headers, parameter values, the
    plugin's preset (None for a user preset or a removed plugin) and its screening of events."""

    url: str | None
    log_url: str | None
    headers: dict[str, str]
    params: dict[str, Any]
    plugin: Preset | None
    screen: Screen | None
    hidden: Scrubber  # masks the preset's secrets in what is kept of the request and its answer


NO_PRESET = PresetRequest(None, None, {}, {}, None, None, NOTHING)


class Outgoing(NamedTuple):
    """One request as it goes out, and the URL its attempt logs (no preset secret in it)."""

    method: str
    url: str
    log_url: str
    headers: dict[str, str]
    body: bytes | None


def request_headers(content_type: str, *layers: dict[str, str]) -> dict[str, str]:
    """A request's headers: the format's Content-Type, then each layer in turn (the preset's, the
    destination's, hookgate's own), a later one winning whatever the case of its name (one field
    per name); a layer may set its own Content-Type (``application/json; charset=utf-8``)."""
    headers = {"Content-Type": content_type}
    spelt = {"content-type": "Content-Type"}  # each name as it is spelt in ``headers``
    for layer in layers:
        for name, value in layer.items():
            lowered = name.lower()
            name = "Content-Type" if lowered == "content-type" else name
            before = spelt.get(lowered)
            if before is not None and before != name:
                del headers[before]
            spelt[lowered] = name
            headers[name] = value
    return headers


def with_query(url: str, query: str) -> str:
    """``url`` with ``query`` added to its query string (a GET sends its form body so)."""
    return url + ("&" if "?" in url else "?") + query


def outgoing(destination: dict[str, Any], preset: PresetRequest, rendered: Rendered,
             headers: dict[str, str]) -> Outgoing:
    """The request for a rendered body: to the preset's URL if it has one; a GET sends no body and no
    Content-Type, and a form body as the URL's query."""
    method = destination["method"]
    url = preset.url or destination["url"]
    log_url = preset.log_url or destination["url"]
    if method != "GET":
        return Outgoing(method, url, log_url, headers, rendered.body)
    if destination["format"] == "form" and rendered.body:
        query = rendered.body.decode()
        url, log_url = with_query(url, query), preset.hidden.text(with_query(log_url, query))
    headers.pop("Content-Type")
    return Outgoing(method, url, log_url, headers, None)


def _safe_screen(preset_name: str, screen: Screen) -> Screen:
    """A plugin's screen whose failure skips the event with the reason, instead of crashing the drain
    job (whose leases would bring the same batch back, and crash it again, forever)."""
    def screened(event: dict[str, Any], params: dict[str, Any]) -> str | None:
        try:
            return screen(event, params)
        except Exception as exc:
            log.exception("the screen of preset %s failed", preset_name)
            return f"preset {preset_name} could not screen the event: {type(exc).__name__}: {exc}"
    return screened


class Presets:
    """What presets add to one job's requests, and their plugins' reading of the answers."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self._cached: dict[tuple[str, Any], PresetRequest] = {}

    def request(self, destination: dict[str, Any]) -> PresetRequest:
        """What a preset adds to this destination's requests (nothing for a plain destination); its
        secrets are decrypted once per change of the destination, not once per delivery. Raises
        ``RenderError`` (secrets that do not decrypt, a URL that does not render) and ``HeaderRefused``:
        the send-time check of the header rule (headers.py) on the destination's headers and the
        preset's as rendered, once per change too (hookgate's own are made from checked ids)."""
        key = (destination["id"], destination.get("updated_at"))
        cached = self._cached.get(key)
        if cached is None:
            check_sent(destination.get("headers") or {}, "the destination")
            cached = self._preset_request(destination) if destination.get("preset") else NO_PRESET
            self._cached = {key: cached}
        return cached

    def _preset_request(self, destination: dict[str, Any]) -> PresetRequest:
        url, log_url, headers, params, hidden = request_parts(destination, self.rt.secrets)
        state = destination["preset"]
        check_sent(headers, f"preset {state['name']}")
        # a user's preset is never read by a plugin that later registers the same name
        plugin = None if state.get("origin") == "user" else self.rt.plugins.presets.get(state["name"])
        screen = _safe_screen(plugin.name, plugin.screen) if plugin is not None and plugin.screen else None
        return PresetRequest(url, log_url, headers, params, plugin, screen, hidden)

    def verdict(self, preset: PresetRequest, response: Response, references: list[str]) -> Verdict | None:
        """The preset plugin's reading of the answer (a 200 that says it failed; per-message outcomes)."""
        if preset.plugin is None:
            return None
        try:
            return self.rt.plugins.classify(preset.plugin, response, references)
        except Exception:  # a plugin's bug must not lose the attempt: hookgate's own rule applies
            log.exception("classify_response failed for preset %s", preset.plugin.name)
            return None
