"""The HTTP API: the request helpers its blueprints share (the blueprints are in ``api/*.py``, and
``api.blueprints`` registers every one of them on the app)."""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

import marshmallow
from flask import current_app, request

from ..admin_tokens import AdminTokenStore
from ..errors import InvalidJSON, Unauthorized, UnsupportedMediaType, ValidationError
from ..runtime import Runtime

__all__ = ["read_json", "load", "runtime", "require_admin", "query_int", "query_limit"]


def runtime() -> Runtime:
    return current_app.extensions["hookgate"]


def read_json(*, optional: bool = False) -> Any:
    """The request body as JSON: 415 unless it says JSON, 413 past the limit, 400 if it does not parse."""
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    if optional and not raw:
        return {}
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or mimetype.endswith("+json")):
        raise UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json",
            {"content_type": request.content_type},
        )
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise InvalidJSON("the body is not UTF-8", {"position": exc.start}) from None
    except json.JSONDecodeError as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc.msg}",
                          {"line": exc.lineno, "column": exc.colno, "position": exc.pos}) from None
    except RecursionError:
        raise InvalidJSON("the body is nested too deeply") from None


def load(schema: marshmallow.Schema, data: Any, *, partial: bool = False) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object", {"_schema": ["Expected a JSON object."]})
    try:
        return schema.load(data, partial=partial)
    except marshmallow.ValidationError as exc:
        fields = ", ".join(sorted(str(k) for k in exc.messages)) if isinstance(exc.messages, dict) else ""
        raise ValidationError(f"invalid fields: {fields}" if fields else "invalid body", exc.messages) from None


def query_int(name: str, default: int, maximum: int) -> int:
    """A whole-number query parameter from 1 to ``maximum`` (422 otherwise)."""
    raw = request.args.get(name, str(default))
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= maximum:
        raise ValidationError("invalid query", {name: [f"Must be a whole number from 1 to {maximum}."]})
    return int(raw)


def query_limit(default: int = 50, maximum: int = 200) -> int:
    return query_int("limit", default, maximum)


def require_admin() -> None:
    """``Authorization: Bearer <admin token>``: the bootstrap token (compared in constant time) or
    one made through ``/v1/admin-tokens`` (looked up by its hash)."""
    expected = runtime().settings.admin_token
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send the admin token as Authorization: Bearer <token>")
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        return
    if AdminTokenStore(runtime().db).valid(token):
        return
    raise Unauthorized("the admin token is not valid")
