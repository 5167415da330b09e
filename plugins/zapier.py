"""Zapier: a catch hook that starts a Zap (``zapier.catch_hook``).

Zapier answers ``200 {"status": "success", ...}`` even when the Zap is off; anything else in a 2xx
is not an accepted event. ``429`` (about 30 requests/s per hook, 20,000 per 5 minutes per user)
comes without ``Retry-After``: hookgate's retry schedule backs off.
"""

from __future__ import annotations

from hookgate import Verdict, hookimpl, load_preset

NAME = "zapier.catch_hook"


@hookimpl
def register_presets(register):
    register(load_preset(NAME))


@hookimpl
def classify_response(preset, response, references):
    if preset.name != NAME or response.status_code is None or not 200 <= response.status_code < 300:
        return None
    answer = response.json()
    if isinstance(answer, dict) and answer.get("status") not in (None, "success"):
        return Verdict("error", reason=f"zapier: status {answer.get('status')!r}")
    return None
