"""``/v1/sources``: create (the ingest key is shown once), list, read, change, delete."""

from __future__ import annotations

from flask import Blueprint
from marshmallow import Schema, fields, validate

from ..schemas import SourceSchema
from ..sources import SourceStore, editable, public
from . import load, read_json, require_admin, runtime

bp = Blueprint("sources", __name__, url_prefix="/v1/sources")
bp.before_request(require_admin)
_schema = SourceSchema()


@bp.post("")
def create():
    fields = load(_schema, read_json())
    source, shown_once = SourceStore(runtime().db, runtime().secrets).create(fields)
    return {**public(source), **shown_once}, 201


@bp.get("")
def list_sources():
    return {"items": [public(s) for s in SourceStore(runtime().db).all()]}


@bp.get("/<source_id>")
def get(source_id: str):
    return public(SourceStore(runtime().db).get(source_id))


@bp.patch("/<source_id>")
def update(source_id: str):
    """Change what a POST set (not the id, not the key: ``rotate-key``). The body is checked as given,
    then the source it makes is checked whole (a source without its key must require a signature)."""
    body = read_json()
    load(_schema, body, partial=True)
    store = SourceStore(runtime().db, runtime().secrets)
    fields_ = load(_schema, editable(store.get(source_id), body))
    source, shown_once = store.update(source_id, fields_, signature_changed="signature" in body)
    return {**public(source), **shown_once}


@bp.delete("/<source_id>")
def delete(source_id: str):
    SourceStore(runtime().db).delete(source_id, runtime().settings.event_retention_s)
    return "", 204


class RotateSchema(Schema):
    grace_s = fields.Float(load_default=86400.0, validate=validate.Range(0, 30 * 86400))


@bp.post("/<source_id>/rotate-key")
def rotate_key(source_id: str):
    """A new ingest key, shown once; the old one keeps working for ``grace_s`` (default 24 h)."""
    grace = load(RotateSchema(), read_json(optional=True))["grace_s"]
    source, key = SourceStore(runtime().db, runtime().secrets).rotate_key(source_id, grace)
    return {**public(source), "key": key}
