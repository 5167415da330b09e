"""``/v1/export`` and ``/v1/import``: the configuration of one instance, moved to another as JSON.

``GET /v1/export`` answers the document (policies, auth profiles, user presets, destinations; not one
secret). ``POST /v1/import`` takes it (``?mode=overwrite``, the default, replaces existing ids;
``?mode=skip`` leaves them), all or nothing: a 422 names every item that cannot be imported and
nothing is written. The answer lists the secrets to re-enter (see ``hookgate.exchange``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from ..exchange import export_document, import_document
from . import read_json, require_admin, runtime

bp = Blueprint("exchange", __name__, url_prefix="/v1")
bp.before_request(require_admin)


@bp.get("/export")
def export() -> dict[str, Any]:
    rt = runtime()
    return export_document(rt.db, rt.presets)


@bp.post("/import")
def import_() -> dict[str, Any]:
    rt = runtime()
    return import_document(rt.db, rt.presets, read_json(), mode=request.args.get("mode", "overwrite"),
                           https_only=rt.settings.https_only)
