"""The ``generic`` kind: hookgate's canonical event, one object or a list of them."""

from __future__ import annotations

from typing import Any

import marshmallow

from ..errors import ValidationError
from ..events import check_count
from ..schemas import EventSchema

__all__ = ["parse"]

_schema = EventSchema()


def parse(payload: Any) -> list[dict[str, Any]]:
    items = payload if isinstance(payload, list) else [payload]
    check_count(items)
    events: list[dict[str, Any]] = []
    errors: dict[str, Any] = {}  # index → marshmallow's messages for that event
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors[str(index)] = {"_schema": ["An event is a JSON object."]}
            continue
        try:
            events.append(_schema.load(item))
        except marshmallow.ValidationError as exc:
            errors[str(index)] = exc.messages
    if errors:
        if not isinstance(payload, list):
            raise ValidationError("the event is not valid", errors["0"])
        raise ValidationError(f"{len(errors)} of {len(items)} events are not valid", errors)
    return events
