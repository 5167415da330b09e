"""One exception hierarchy, mapped once to JSON errors.

    HookgateError                      500 internal
     ├── BadRequest                    400 bad_request
     │    └── InvalidJSON              400 invalid_json
     ├── Unauthorized                  401 unauthorized
     ├── Forbidden                     403 forbidden
     ├── NotFound                      404 not_found
     ├── Conflict                      409 conflict
     ├── PayloadTooLarge               413 payload_too_large
     ├── URLTooLong                    414 url_too_long
     ├── UnsupportedMediaType          415 unsupported_media_type
     ├── ValidationError               422 validation_failed
     │    └── TemplateError            422 template_invalid
     ├── HeadersTooLarge               431 headers_too_large
     ├── ServiceUnavailable            503 unavailable (not_replicated: no replica acknowledged in time)
     └── DeliveryError                 (never reaches HTTP: a delivery attempt that could not be made)
          └── BlockedDestination       (the address is not allowed: SSRF guard)

Every response for an error has the shape ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

__all__ = [
    "HookgateError",
    "BadRequest",
    "InvalidJSON",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "URLTooLong",
    "UnsupportedMediaType",
    "ValidationError",
    "TemplateError",
    "HeadersTooLarge",
    "ServiceUnavailable",
    "DeliveryError",
    "BlockedDestination",
    "init_app",
]

log = logging.getLogger(__name__)


class HookgateError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, details: Any = None, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details if details is not None else {}
        if code:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(HookgateError):
    status, code = 400, "bad_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class Unauthorized(HookgateError):
    status, code = 401, "unauthorized"


class Forbidden(HookgateError):
    status, code = 403, "forbidden"


class NotFound(HookgateError):
    status, code = 404, "not_found"


class Conflict(HookgateError):
    status, code = 409, "conflict"


class PayloadTooLarge(HookgateError):
    status, code = 413, "payload_too_large"


class URLTooLong(HookgateError):
    status, code = 414, "url_too_long"


class UnsupportedMediaType(HookgateError):
    status, code = 415, "unsupported_media_type"


class ValidationError(HookgateError):
    status, code = 422, "validation_failed"


class TemplateError(ValidationError):
    code = "template_invalid"


class HeadersTooLarge(HookgateError):
    status, code = 431, "headers_too_large"


class ServiceUnavailable(HookgateError):
    status, code = 503, "unavailable"


class DeliveryError(HookgateError):
    code = "delivery_failed"


class BlockedDestination(DeliveryError):
    code = "destination_blocked"


def _too_large() -> dict[str, Any]:
    """The 413's error: the limit (``HOOKGATE_MAX_BODY_BYTES``) in its message and details."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    details: dict[str, Any] = {"limit_bytes": limit}
    if request.content_length is not None:
        details["received_bytes"] = request.content_length
    return {"code": "payload_too_large", "details": details,
            "message": f"the request body is larger than the limit of {limit} bytes (HOOKGATE_MAX_BODY_BYTES)"}


def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    error: dict[str, Any] = {"code": code, "message": exc.description or exc.name, "details": {}}
    if exc.code == 413:
        error = _too_large()
    body = {"error": error}
    response = jsonify(body)
    response.status_code = exc.code or 500
    allowed = getattr(exc, "valid_methods", None)  # werkzeug's MethodNotAllowed has it
    if exc.code == 405 and allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response


def _hookgate_error(exc: HookgateError) -> Response:
    response = jsonify(exc.to_dict())
    response.status_code = exc.status
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _redis_down(exc: redis.RedisError) -> Response:
    log.error("redis error: %s", exc)
    return _hookgate_error(ServiceUnavailable("the store is unavailable; nothing was accepted, retry later"))


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return _hookgate_error(HookgateError("internal error"))


def init_app(app: Flask) -> None:
    app.register_error_handler(HookgateError, _hookgate_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.RedisError, _redis_down)
    app.register_error_handler(Exception, _unexpected)
