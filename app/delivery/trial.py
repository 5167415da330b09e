"""Trying a destination: the request it would send for an event, and, if asked, what answered it.

``POST /v1/destinations/<id>/test`` renders with hookgate's non-personal sample event (canonical, as
real events are: ``source``, ``external_id``, ``received_at``; or one given),
shows the request (secrets masked: the logged URL, and headers a preset fills from secret
parameters), and with ``send`` sends it exactly as a worker would (auth profile, SSRF guard, preset
headers) and shows the answer and how it was classified. Nothing is recorded as a delivery. The
answer is scrubbed of the preset's secrets, once, as a whole (an error text or an echoed request may
hold one); the auth profile's credentials are scrubbed from the response where it is sent
(``dispatch.py``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..config import Settings
from ..headers import HeaderRefused
from ..presets import MASK, URL_MASK, sample_event
from ..rendering import Rendered, RenderError, render_delivery
from ..runtime import Runtime
from ..scrub import NOTHING
from .batch import render_batch
from .classify import classify
from .dispatch import Dispatcher
from .request import PresetRequest, Presets, request_headers, with_query

__all__ = ["try_destination"]


def try_destination(rt: Runtime, destination: dict[str, Any], event: dict[str, Any] | None = None, *,
                    send: bool = False) -> dict[str, Any]:
    presets = Presets(rt)
    # the sample is "now": a receiver may refuse old events (Meta's 7 days)
    event = event or sample_event(dt.datetime.now(dt.UTC))
    result: dict[str, Any] = {"event": event}
    hidden = NOTHING
    try:
        preset = presets.request(destination)
        hidden = preset.hidden
        if preset.screen is not None and (reason := preset.screen(event, preset.params)):
            return hidden.value({**result, "skipped": reason})
        secret_names = set((destination.get("preset") or {}).get("secrets", {}))
        shown_params = {**preset.params, **{n: URL_MASK for n in secret_names}}
        rendered = _render(destination, event, rt.settings, preset.params)
        shown = _render(destination, event, rt.settings, shown_params) if secret_names else rendered
    except RenderError as exc:  # HeaderRefused too: a header that breaks the rule (headers.py) is not sent
        code = "header_refused" if isinstance(exc, HeaderRefused) else "render_failed"
        return hidden.value({**result, "error": {"code": code, "message": str(exc)}})
    method, url, headers, body, shown_request = _request(destination, event, preset, rendered, shown)
    result["request"] = shown_request
    if send:
        result["response"] = _answer(rt, presets, destination, preset, event, method, url, headers, body)
    return hidden.value(result)


def _request(destination: dict[str, Any], event: dict[str, Any], preset: PresetRequest, rendered: Rendered,
             shown: Rendered) -> tuple[str, str, dict[str, str], bytes | None, dict[str, Any]]:
    """The request as a worker sends it (method, URL, headers, body), and as the trial shows it."""
    headers = request_headers(rendered.content_type, preset.headers, destination.get("headers", {}),
                              {"webhook-id": event.get("id", "evt_test")})
    method = destination["method"]
    url, log_url = preset.url or destination["url"], preset.log_url or destination["url"]
    body: bytes | None = rendered.body
    if method == "GET":  # as a worker sends it
        if destination["format"] == "form" and rendered.body:
            url = with_query(url, rendered.body.decode())
            log_url = with_query(log_url, shown.body.decode())
        body = None
        headers.pop("Content-Type", None)
    secret_headers = _secret_headers(destination)
    return method, url, headers, body, {
        "method": method,
        "url": log_url,
        "headers": {k: (MASK if k in secret_headers else v) for k, v in headers.items()},
        "body": shown.body.decode(errors="replace") if body is not None else None,
        "auth_profile_id": destination.get("auth_profile_id"),
    }


def _answer(rt: Runtime, presets: Presets, destination: dict[str, Any], preset: PresetRequest, event: dict[str, Any],
            method: str, url: str, headers: dict[str, str], body: bytes | None) -> dict[str, Any]:
    """Send the request, and show the answer and how a worker would classify it."""
    response, _ = Dispatcher(rt).send(destination, method, url, headers, body, headers["webhook-id"],
                                      preset.log_url, preset.hidden)
    reference = event.get("id", "evt_test")
    verdict = presets.verdict(preset, response, [reference])
    verdict = verdict.for_item(reference) if verdict is not None else None
    return {
        "status_code": response.status_code, "headers": response.headers, "body": response.body,
        "latency_ms": round(response.latency_ms, 1), "error": response.error,
        "outcome": verdict.outcome if verdict is not None else classify(response),
        "reason": verdict.reason if verdict is not None else None,
    }


def _render(destination: dict[str, Any], event: dict[str, Any], settings: Settings,
            params: dict[str, Any]) -> Rendered:
    if destination.get("batch"):
        rendered, errors = render_batch(destination, [event], max_bytes=settings.template_max_bytes,
                                        timeout_s=settings.template_timeout_s, params=params)
        if rendered is None:
            raise RenderError("; ".join(errors.values()))
        return rendered
    return render_delivery(destination, event, max_bytes=settings.template_max_bytes,
                           timeout_s=settings.template_timeout_s, params=params)


def _secret_headers(destination: dict[str, Any]) -> set[str]:
    """Headers a preset fills from secret parameters (``Authorization: Bearer {{ params.token }}``)."""
    state = destination.get("preset") or {}
    secrets = state.get("secrets", {})
    return {name for name, pattern in state.get("headers", {}).items()
            if any(secret in pattern for secret in secrets)}
