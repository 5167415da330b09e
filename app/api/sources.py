"""``/v1/sources``: create (the ingest key is shown once), list, read, delete."""

from __future__ import annotations

from flask import Blueprint

from ..schemas import SourceSchema
from ..sources import SourceStore, public
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
    return {"items": [public(s) for s in SourceStore(runtime().db).list()]}


@bp.get("/<source_id>")
def get(source_id: str):
    return public(SourceStore(runtime().db).get(source_id))


@bp.delete("/<source_id>")
def delete(source_id: str):
    SourceStore(runtime().db).delete(source_id)
    return "", 204
