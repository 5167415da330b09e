"""``/v1/admin-tokens``: create (shown once), list (masked), revoke."""

from __future__ import annotations

from flask import Blueprint
from marshmallow import Schema, fields, validate

from ..admin_tokens import AdminTokenStore
from . import load, read_json, require_admin, runtime

bp = Blueprint("admin_tokens", __name__, url_prefix="/v1/admin-tokens")
bp.before_request(require_admin)


class TokenSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 200))


@bp.post("")
def create():
    record, token = AdminTokenStore(runtime().db).create(load(TokenSchema(), read_json())["name"])
    return {**record, "token": token}, 201


@bp.get("")
def list_tokens():
    return {"items": AdminTokenStore(runtime().db).all()}


@bp.delete("/<token_id>")
def revoke(token_id: str):
    AdminTokenStore(runtime().db).revoke(token_id)
    return "", 204
