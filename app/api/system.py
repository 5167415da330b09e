"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint

from ..errors import ServiceUnavailable
from . import runtime

bp = Blueprint("system", __name__)


@bp.get("/healthz")
def health():
    try:
        runtime().db.ping()
    except Exception:
        raise ServiceUnavailable("the store is not reachable") from None
    return {"status": "ok"}
