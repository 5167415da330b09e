"""The HTTP API: the request helpers its blueprints share (the blueprints are in ``api/*.py``, and
``api.blueprints`` registers every one of them on the app), and the size limits of every request."""

from __future__ import annotations

import hmac
import re
from typing import Any

import marshmallow
from flask import current_app, request

from ..admin_tokens import AdminTokenStore
from ..errors import HeadersTooLarge, Unauthorized, UnsupportedMediaType, URLTooLong, ValidationError
from ..runtime import Runtime
from ..schemas import decode_json
from ..times import MESSAGE as MOMENT_MESSAGE
from ..times import parse_moment, to_ms

__all__ = ["read_json", "load", "runtime", "require_admin", "query_int", "query_limit", "query_moment_ms",
           "check_request_size", "MAX_URL_BYTES", "MAX_HEADER_FIELDS", "MAX_HEADER_BYTES"]

# What a request may carry, checked before any view (``check_request_size``). gunicorn's own limits
# (``web.gunicorn_options``: 128 fields, 16 KiB a field) sit above these, so that a request between
# the two gets hookgate's JSON error rather than gunicorn's page; the total bounds a server without
# limits of its own. No URL of this API is longer than a few hundred bytes.
MAX_URL_BYTES = 4096
MAX_HEADER_FIELDS = 100
MAX_HEADER_BYTES = 256 * 1024  # every ``Name: value`` together


def _header_fields(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """The request's header fields from the WSGI environ (a repeated field arrives joined, as one)."""
    return [(key, value) for key, value in environ.items()
            if isinstance(value, str) and (key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH"))]


def check_request_size() -> None:
    """Before every request: 414 past ``MAX_URL_BYTES`` of request target (path and query, as sent),
    431 past ``MAX_HEADER_FIELDS`` header fields or ``MAX_HEADER_BYTES`` of them. (A body past
    ``MAX_CONTENT_LENGTH`` is a 413 where a view reads it: ``read_json``.)"""
    environ = request.environ
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or (
        environ.get("PATH_INFO", "") + "?" + environ.get("QUERY_STRING", ""))
    if len(target) > MAX_URL_BYTES:
        raise URLTooLong(f"the URL is longer than {MAX_URL_BYTES} bytes", {"length": len(target)})
    fields = _header_fields(environ)
    if len(fields) > MAX_HEADER_FIELDS:
        raise HeadersTooLarge(f"more than {MAX_HEADER_FIELDS} header fields", {"count": len(fields)})
    size = sum(len(key.removeprefix("HTTP_")) + 2 + len(value) for key, value in fields)
    if size > MAX_HEADER_BYTES:
        raise HeadersTooLarge(f"the header fields are longer than {MAX_HEADER_BYTES} bytes", {"length": size})


def runtime() -> Runtime:
    return current_app.extensions["hookgate"]


def read_json(*, optional: bool = False) -> Any:
    """The request body as JSON: 415 unless it says JSON, 413 past the limit, 400 if it does not
    parse, 422 for a value JSON does not hold (``schemas.decode_json``: NaN, a lone surrogate…)."""
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    if optional and not raw:
        return {}
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or mimetype.endswith("+json")):
        raise UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json",
            {"content_type": request.content_type},
        )
    return decode_json(raw)


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


def query_moment_ms(name: str) -> int | None:
    """A moment query parameter (RFC 3339, or epoch seconds or milliseconds: ``times.parse_moment``)
    as epoch milliseconds; None when absent, 422 naming it when it is none of those."""
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        return to_ms(parse_moment(raw))
    except ValueError:
        raise ValidationError("invalid query", {name: [MOMENT_MESSAGE]}) from None


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
