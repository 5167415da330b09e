"""``GET /metrics``: Prometheus text format, read from the store at scrape time (``metrics.py``), so
any gunicorn process answers for every worker on every host. Open unless ``HOOKGATE_METRICS_TOKEN``
is set; then it wants ``Authorization: Bearer <that token>`` (401 otherwise)."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import Unauthorized
from ..metrics import registry
from . import runtime

bp = Blueprint("metrics", __name__)


def _check_token(expected: str | None) -> None:
    if not expected:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send the metrics token as Authorization: Bearer <token>")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("the metrics token is not valid")


@bp.get("/metrics")
def scrape():
    rt = runtime()
    _check_token(rt.settings.metrics_token)
    return Response(generate_latest(registry(rt.db)), mimetype=None, content_type=CONTENT_TYPE_LATEST)
