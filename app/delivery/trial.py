"""Trying a destination: the request it would send for an event, and, if asked, what answered it.

``POST /v1/destinations/<id>/test`` renders with hookgate's non-personal sample event (or one given),
shows the request (secrets masked: the logged URL, and headers a preset fills from secret
parameters), and with ``send`` sends it exactly as a worker would (auth profile, SSRF guard, preset
headers) and shows the answer and how it was classified. Nothing is recorded as a delivery.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..events import isoformat
from ..preset_destinations import scrub
from ..presets import MASK, SAMPLE_EVENT
from ..rendering import RenderError, render_delivery
from .batch import render_batch
from .drain import Drainer, request_headers
from .outcomes import classify

__all__ = ["try_destination"]


def try_destination(rt: Any, destination: dict[str, Any], event: dict[str, Any] | None = None, *,
                    send: bool = False) -> dict[str, Any]:
    drainer = Drainer(rt)
    # the sample is "now": a receiver may refuse old events (Meta's 7 days)
    event = event or {**SAMPLE_EVENT, "time": isoformat(dt.datetime.now(dt.timezone.utc))}
    settings = rt.settings
    result: dict[str, Any] = {"event": event}
    try:
        preset = drainer.preset_request(destination)
        if preset.skip is not None and (reason := preset.skip(event, preset.params)):
            return {**result, "skipped": reason}
        if destination.get("batch"):
            rendered, errors = render_batch(destination, [event], max_bytes=settings.template_max_bytes,
                                            timeout_s=settings.template_timeout_s, params=preset.params)
            if rendered is None:
                raise RenderError("; ".join(errors.values()))
        else:
            rendered = render_delivery(destination, event, max_bytes=settings.template_max_bytes,
                                       timeout_s=settings.template_timeout_s, params=preset.params)
    except RenderError as exc:
        return {**result, "error": {"code": "render_failed", "message": str(exc)}}
    headers = request_headers(rendered.content_type, preset.headers, destination.get("headers", {}),
                              {"webhook-id": event.get("id", "evt_test")})
    secret_headers = _secret_headers(destination)
    result["request"] = {
        "method": destination["method"],
        "url": preset.log_url or destination["url"],
        "headers": {k: (MASK if k in secret_headers else v) for k, v in headers.items()},
        "body": scrub(rendered.body.decode(errors="replace"), preset.hidden),  # CM.com's token is in it
        "auth_profile_id": destination.get("auth_profile_id"),
    }
    if not send:
        return result
    url = preset.url or destination["url"]
    try:
        response, _ = drainer.send(destination, destination["method"], url, headers, rendered.body,
                                   headers["webhook-id"], preset.log_url, preset.hidden)
        verdict = drainer.preset_verdict(preset, response, [event.get("id", "evt_test")])
    finally:
        drainer.recorder.close()
    outcome = verdict.outcome if verdict is not None else classify(response)
    result["response"] = {
        "status_code": response.status_code, "headers": response.headers, "body": response.body,
        "latency_ms": round(response.latency_ms, 1), "error": response.error, "outcome": outcome,
        "reason": verdict.reason if verdict is not None else None,
    }
    return result


def _secret_headers(destination: dict[str, Any]) -> set[str]:
    """Headers a preset fills from secret parameters (``Authorization: Bearer {{ params.token }}``)."""
    state = destination.get("preset") or {}
    secrets = state.get("secrets", {})
    return {name for name, pattern in state.get("headers", {}).items()
            if any(f"params.{secret}" in pattern for secret in secrets)}
