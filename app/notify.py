"""Telling people about a destination's breaker: a webhook and/or an e-mail.

- ``destination.disabled`` (it failed for ``failing_for_s``, or answered 410 Gone) is repeated every
  ``interval_s`` until it is enabled: the ticker calls ``send_due``, and every destination in
  ``hookgate:notify`` whose time has come is notified once more (or dropped from the list once it is
  enabled again).
- ``destination.paused`` (the breaker tripped) and ``destination.recovered`` (a probe got through,
  the backlog flows again) are told once each, by an RQ job (``send_notice``), so the drain job that
  decided it does not wait for an SMTP server.

E-mail goes through SMTP at ``HOOKGATE_SMTP_URL`` (``smtp://user:password@host:587?starttls=true`` or
``smtps://…``) from ``HOOKGATE_SMTP_FROM``.
"""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.parse
from email.message import EmailMessage
from typing import Any, cast

from .destinations import DestinationStore
from .runtime import Runtime, current
from .store import keys, now_ms

__all__ = ["send_due", "notify_once", "notice", "enqueue_notice", "send_notice", "NOTICE_JOB"]

# The job by its dotted path, as RQ imports it in the worker.
NOTICE_JOB = "hookgate.notify.send_notice"
# What each notification says happened, for the e-mail's subject.
HAPPENED = {"destination.disabled": "was disabled", "destination.paused": "was paused",
            "destination.recovered": "recovered"}

log = logging.getLogger(__name__)


def _message(destination: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "destination.disabled",
        "destination": {k: destination.get(k) for k in ("id", "name", "url")},
        "reason": destination.get("disabled_reason"),
        "detail": destination.get("disabled_detail"),
        "disabled_at": destination.get("disabled_at"),
        "action": f"re-enable it with POST /v1/destinations/{destination['id']}/enable",
    }


def notice(kind: str, destination: dict[str, Any], detail: str, **facts: Any) -> dict[str, Any]:
    """A one-off notification's message: ``destination.paused`` or ``destination.recovered``."""
    return {"type": kind, "destination": {k: destination.get(k) for k in ("id", "name", "url")}, "detail": detail,
            **facts}


def _send_email(rt: Runtime, to: str, message: dict[str, Any]) -> None:
    url = rt.settings.smtp_url
    if not url:
        log.warning("cannot e-mail %s about destination %s: HOOKGATE_SMTP_URL is not set", to,
                    message["destination"]["id"])
        return
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    mail = EmailMessage()
    mail["From"] = rt.settings.smtp_from
    mail["To"] = to
    name = " ".join(str(message["destination"]["name"]).split())  # no CR/LF in a header
    mail["Subject"] = f"hookgate: destination {name} {HAPPENED.get(message['type'], message['type'])}"
    mail.set_content(f"{message['detail']}\n\n{json.dumps(message, indent=2)}\n")
    client_class = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    with client_class(parts.hostname or "localhost", parts.port or (465 if parts.scheme == "smtps" else 25),
                      timeout=10) as smtp:
        if query.get("starttls", "").lower() in ("1", "true", "yes"):
            smtp.starttls()
        if parts.username:
            smtp.login(urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
        smtp.send_message(mail)


def notify_once(rt: Runtime, destination: dict[str, Any], message: dict[str, Any] | None = None) -> None:
    """Send ``message`` (by default: that the destination is disabled) to its ``notify`` webhook
    and/or address; a failure is logged, not raised."""
    notify = destination.get("notify") or {}
    message = message or _message(destination)
    if notify.get("url"):
        body = json.dumps(message).encode()
        response = rt.sender.send("POST", notify["url"], {"Content-Type": "application/json"}, body, 10.0)
        if response.status_code is None or response.status_code >= 300:
            # not the URL: a webhook URL is often its own secret (Slack's, Zapier's)
            log.warning("the notification webhook of destination %s failed: %s", destination["id"],
                        response.status_code or response.error_kind or "no answer",
                        extra={"destination_id": destination["id"]})
    if notify.get("email"):
        try:
            _send_email(rt, notify["email"], message)
        except (OSError, smtplib.SMTPException, ValueError) as exc:
            log.warning("notification e-mail to %s failed: %s", notify["email"], exc,
                        extra={"destination_id": destination["id"]})


def send_due(rt: Runtime, limit: int = 100) -> int:
    """Notify every disabled destination whose next notification is due. Returns how many."""
    due = cast(list[str], rt.db.zrangebyscore(keys.notify, "-inf", now_ms(), start=0, num=limit))
    store = DestinationStore(rt.db)
    sent = 0
    for destination_id in due:
        destination = store.find(destination_id)
        if destination is None or destination.get("enabled", True) or not destination.get("notify"):
            rt.db.zrem(keys.notify, destination_id)
            continue
        # Claim this round first, so several tickers do not all send it.
        interval_ms = int(float(destination["notify"].get("interval_s", 3600)) * 1000)
        if rt.db.zadd(keys.notify, {destination_id: now_ms() + interval_ms}, xx=True, gt=True, ch=True):
            try:
                notify_once(rt, destination)
            except Exception:  # one bad destination must not stop the others' notifications
                log.exception("notifying about destination %s failed", destination_id,
                              extra={"destination_id": destination_id})
            sent += 1
    return sent


def enqueue_notice(rt: Runtime, destination_id: str, message: dict[str, Any]) -> None:
    """Have a worker send ``message`` (see ``notice``) once, by an RQ job."""
    rt.queue.enqueue_call(NOTICE_JOB, args=(destination_id, message), result_ttl=0, failure_ttl=86400,
                          description=f"notify {message['type']} {destination_id}")


def send_notice(destination_id: str, message: dict[str, Any]) -> None:
    """RQ job: send a one-off notification to whom the destination names now (none if it was deleted)."""
    rt = current()
    destination = DestinationStore(rt.db).find(destination_id)
    if destination is not None and destination.get("notify"):
        notify_once(rt, destination, message)
