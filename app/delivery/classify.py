"""Classifying an attempt, and when to try again.

- ``delivered``: 2xx.
- ``error``: the request is wrong (4xx, a 3xx that hookgate does not follow, a template that failed,
  an address the guard refuses). Not retried, except 408, 409, 425 and 429.
- ``bounced``: the receiver could not take it (5xx, timeout, connection failure). Retried.
- ``failed``: retries exhausted (dead letter). ``skipped``: not sent, with a reason.

A preset's verdict (its plugin's reading of the answer) wins over these rules; ``classify_attempt`` puts the
two together with the retry schedule: the ``classify`` step of a delivery.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import NamedTuple

from ..presets import Verdict
from .http import Response

__all__ = ["DEFAULT_RETRY_SCHEDULE", "Decision", "classify", "classify_attempt", "is_retryable", "next_delay",
           "retry_after_s", "status_error"]

# Like Svix: the first attempt at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
JITTER = 0.2


def classify(response: Response) -> str:
    status = response.status_code
    if status is None:
        return "error" if response.error_kind in ("blocked", "invalid") else "bounced"
    if 200 <= status < 300:
        return "delivered"
    if status >= 500:
        return "bounced"
    return "error"


def is_retryable(outcome: str, status_code: int | None) -> bool:
    return outcome == "bounced" or (outcome == "error" and status_code in RETRYABLE_4XX)


def next_delay(attempts_made: int, schedule: Sequence[float]) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` attempts, or None when exhausted."""
    if attempts_made > len(schedule):
        return None
    delay = float(schedule[attempts_made - 1])
    return max(0.0, delay * random.uniform(1 - JITTER, 1 + JITTER))


MAX_RETRY_AFTER_S = 86400.0


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date), at most a day; None if absent."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,12}", value):
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(moment.timestamp() - time.time(), MAX_RETRY_AFTER_S))


def status_error(status_code: int | None) -> str | None:
    """What a non-2xx answer says for ``last_error``: ``HTTP 500 Internal Server Error``; None for 2xx
    or no answer (then the request's own error says what happened)."""
    if status_code is None or 200 <= status_code < 300:
        return None
    try:
        return f"HTTP {status_code} {HTTPStatus(status_code).phrase}"
    except ValueError:
        return f"HTTP {status_code}"


class Decision(NamedTuple):
    """What one attempt comes to."""

    outcome: str  # delivered, error or bounced: what this attempt got
    status: str  # the delivery's status after it: the outcome, or failed when its retries ran out
    error: str | None  # for the attempt log: the request's error and the verdict's reason
    due: int | None  # when it is tried again (ms since the epoch), None: not again


def _attempt_error(response: Response, verdict: Verdict | None, outcome: str) -> str | None:
    """The attempt's error text: the request's error and the verdict's reason, else for an answer
    that is not delivered its status line (``HTTP 500 Internal Server Error``)."""
    error = response.error
    if verdict is not None and verdict.reason:
        error = verdict.reason if not error else f"{error}; {verdict.reason}"
    if error is None and outcome != "delivered":  # a bare non-2xx answer still says what it was
        error = status_error(response.status_code)
    return error


def classify_attempt(response: Response, verdict: Verdict | None, attempt_no: int, schedule: Sequence[float] | None,
           now: int) -> Decision:
    """Classify attempt ``attempt_no`` (``verdict`` first: a preset's, which wins over the status
    code) and schedule the next one: by ``schedule`` (None: the default; empty: no retries), never
    sooner than the receiver or the verdict asked, within a day."""
    outcome = verdict.outcome if verdict is not None else classify(response)
    error = _attempt_error(response, verdict, outcome)
    retryable = (outcome == "bounced" if verdict is not None
                 else is_retryable(outcome, response.status_code) or response.error_kind == "auth")
    if outcome == "delivered" or not retryable:
        return Decision(outcome, outcome, error, None)
    delay = next_delay(attempt_no, DEFAULT_RETRY_SCHEDULE if schedule is None else schedule)
    if delay is None:
        return Decision(outcome, "failed", error, None)
    asked = (min(verdict.retry_after_s, MAX_RETRY_AFTER_S) if verdict is not None and verdict.retry_after_s is not None
             else retry_after_s(response.headers))
    if asked is not None:
        delay = max(delay, asked)
    return Decision(outcome, outcome, error, now + int(delay * 1000))
