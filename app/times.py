"""One reading of a moment for every input: an RFC 3339 string, or epoch seconds or milliseconds.

A number (or a string of digits) below ``MS_FROM`` is seconds, from it milliseconds: 10^11 seconds is
the year 5138, 10^11 milliseconds March 1973, so no time a sender means falls between the two
readings. A string must be RFC 3339 with its offset (``Z`` or ``±hh:mm``): a time without one could
be anyone's local time.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

__all__ = ["MESSAGE", "MS_FROM", "parse_moment", "to_ms"]

MS_FROM = 10**11
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                      r"([Zz]|[+-][0-9]{2}:[0-9]{2})")
_EPOCH = re.compile(r"-?[0-9]{1,16}(\.[0-9]{1,9})?")
MESSAGE = "Must be an RFC 3339 time with its offset (2026-11-20T00:00:00Z) or epoch seconds or milliseconds."


def parse_moment(value: Any) -> dt.datetime:
    """``value`` as an aware UTC datetime; ``ValueError`` (saying what is accepted) when it is none of
    the forms, or out of range."""
    if isinstance(value, bool):
        raise ValueError(MESSAGE)
    if isinstance(value, str) and _EPOCH.fullmatch(value.strip()):
        value = float(value)
    try:
        if isinstance(value, int | float):
            seconds = value / 1000 if abs(value) >= MS_FROM else value
            return dt.datetime.fromtimestamp(seconds, dt.UTC)
        if isinstance(value, str) and _RFC3339.fullmatch(value.strip()):
            return dt.datetime.fromisoformat(value.strip().upper().replace("Z", "+00:00")).astimezone(dt.UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise ValueError(MESSAGE)


def to_ms(moment: dt.datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return int(moment.timestamp() * 1000)
