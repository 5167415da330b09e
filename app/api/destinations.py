"""``/v1/destinations``: create, list, read, update, delete, enable and disable."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from ..delivery.breaker import Breaker
from ..delivery.engine import concurrency
from ..destinations import DestinationStore
from ..preset_destinations import from_preset_body, patch_preset_params, public_state
from ..rendering import default_template
from ..schemas import DestinationSchema
from ..stats import read as read_stats
from . import load, query_int, query_limit, read_json, require_admin, runtime

bp = Blueprint("destinations", __name__, url_prefix="/v1/destinations")
bp.before_request(require_admin)
_schema = DestinationSchema()


def _store() -> DestinationStore:
    return DestinationStore(runtime().db, https_only=runtime().settings.https_only)


def _show(destination: dict[str, Any]) -> dict[str, Any]:
    """The destination as stored (a preset's secrets masked), plus the body template actually used
    when none was given."""
    shown = dict(destination)
    if destination.get("preset"):
        shown["preset"] = public_state(destination["preset"])
    shown["template_in_use"] = destination.get("template") or default_template(
        destination["format"], destination.get("payload_style") or "canonical")
    return shown


@bp.post("")
def create() -> tuple[dict[str, Any], int]:
    body = read_json()
    if isinstance(body, dict) and "preset" in body:
        rt = runtime()
        fields, state = from_preset_body(rt.presets, rt.secrets, body)
        return _show(_store().create({**load(_schema, fields), "preset": state})), 201
    return _show(_store().create(load(_schema, body))), 201


@bp.get("")
def list_destinations() -> dict[str, Any]:
    page, next_cursor = _store().page(request.args.get("cursor", ""), query_limit())
    return {"items": [_show(d) for d in page], "next_cursor": next_cursor}


@bp.get("/<destination_id>")
def get(destination_id: str) -> dict[str, Any]:
    return _show(_store().get(destination_id))


@bp.patch("/<destination_id>")
def update(destination_id: str) -> dict[str, Any]:
    body = read_json()
    store = _store()
    destination = store.get(destination_id)
    if isinstance(body, dict) and destination.get("preset") and ("params" in body or "url" in body):
        rt = runtime()
        url, state = patch_preset_params(rt.presets, rt.secrets, destination, body)
        changes = {**load(_schema, {k: v for k, v in body.items() if k != "params"}, partial=True), **url,
                   "preset": state}
    else:
        changes = load(_schema, body, partial=True)
    if destination.get("preset") and isinstance(changes.get("batch"), dict) and destination.get("batch"):
        changes["batch"] = {**destination["batch"], **changes["batch"]}
    return _show(store.update(destination_id, changes))


@bp.delete("/<destination_id>")
def delete(destination_id: str) -> tuple[str, int]:
    _store().delete(destination_id, runtime().settings.event_retention_s)
    return "", 204


@bp.get("/<destination_id>/stats")
def stats(destination_id: str) -> dict[str, Any]:
    """Counts by outcome per minute and per hour, the circuit breaker's state, and the engine's
    concurrency: each worker's adaptive limit and requests in flight to it (engine.py)."""
    destination = _store().get(destination_id)
    minutes = query_int("minutes", 60, 120)
    hours = query_int("hours", 24, 192)
    db = runtime().db
    return {**read_stats(db, destination_id, minutes=minutes, hours=hours), "breaker": Breaker(db).show(destination),
            "concurrency": concurrency(db, destination)}


@bp.post("/<destination_id>/enable")
def enable(destination_id: str) -> dict[str, Any]:
    return _show(_store().update(destination_id, {"enabled": True}))


@bp.post("/<destination_id>/disable")
def disable(destination_id: str) -> dict[str, Any]:
    return _show(_store().update(destination_id, {"enabled": False}))
