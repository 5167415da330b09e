"""Slack: an incoming webhook message (``slack.message``) and ``chat.postMessage`` with a bot token
(``slack.chat_post_message``).

The two answer differently, so they are classified differently:

- An incoming webhook answers ``200 ok``, or a plain-text code with the status: 400
  ``invalid_payload``/``no_text``/``invalid_blocks``, 403 ``action_prohibited``/``invalid_token``,
  404 ``channel_not_found``/``no_service`` (the hook was revoked), 410 ``channel_is_archived``,
  429 (``Retry-After``), 500 ``rollup_error``. Each failure is recorded with Slack's code as its
  reason; 4xx are errors (not retried), 5xx and 429 bounce (retried, never before ``Retry-After``,
  which hookgate reads from the answer). A 410 is an error too, and hookgate disables the
  destination on a 410 whatever the verdict says.
- ``chat.postMessage`` answers HTTP 200 for most failures, with ``{"ok": false, "error": "..."}``:
  ``ratelimited`` and Slack's transient errors bounce, everything else (``channel_not_found``,
  ``invalid_auth``, ``not_authed``, ``token_revoked``, ``account_inactive``, ...) is an error.

Template filter ``slack_escape`` escapes ``&``, ``<`` and ``>`` as Slack's ``mrkdwn`` requires, so
event data cannot ping ``<!channel>`` or forge a link; the presets' bodies use it on every value
taken from the event.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Undefined

from hookgate import Verdict, hookimpl, load_preset

__all__ = ["MESSAGE", "POST_MESSAGE", "slack_escape"]

MESSAGE = "slack.message"
POST_MESSAGE = "slack.chat_post_message"

# chat.postMessage errors worth another try (Slack's "transient" errors and its rate limit).
RETRYABLE_API_ERRORS = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error",
                                  "service_unavailable", "request_timeout"})
REASON_MAX = 200


@hookimpl
def register_presets(register):
    register(load_preset(MESSAGE))
    register(load_preset(POST_MESSAGE))


@hookimpl
def register_template_filters():
    return {"slack_escape": slack_escape}


def slack_escape(value: Any) -> str:
    """Text for Slack's mrkdwn: ``&``, ``<`` and ``>`` escaped; nothing (None, undefined) → ``""``."""
    if value is None or isinstance(value, Undefined):
        return ""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@hookimpl
def classify_response(preset, response, references):
    if preset.name == MESSAGE:
        return _incoming_webhook(response)
    if preset.name == POST_MESSAGE:
        return _web_api(response)
    return None


def _incoming_webhook(response) -> Verdict | None:
    status = response.status_code
    if status is None or 200 <= status < 400:
        return None  # no answer (hookgate's rule: bounced), or accepted
    reason = f"slack: {_code(response.body) or f'HTTP {status}'}"
    if status == 429 or status >= 500:
        return Verdict("bounced", reason=reason)  # Retry-After, when sent, is honoured by hookgate
    return Verdict("error", reason=reason)


def _web_api(response) -> Verdict | None:
    status = response.status_code
    if status is None or 300 <= status < 400:
        return None
    answer = response.json()
    error = answer.get("error") if isinstance(answer, dict) else None
    code = _code(error) if isinstance(error, str) else None
    if 200 <= status < 300:
        if not isinstance(answer, dict) or answer.get("ok") is not False:
            return None  # {"ok": true, ...}
        code = code or "unknown_error"
        outcome = "bounced" if code in RETRYABLE_API_ERRORS else "error"
        return Verdict(outcome, reason=f"slack: {code}")
    reason = f"slack: {code or _code(response.body) or f'HTTP {status}'}"
    if status == 429 or status >= 500 or code in RETRYABLE_API_ERRORS:
        return Verdict("bounced", reason=reason)
    return Verdict("error", reason=reason)


def _code(text: str | None) -> str | None:
    """Slack's error code from an answer: its first line, cut short (an HTML error page stays short)."""
    first = (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""
    return first[:REASON_MAX] or None
