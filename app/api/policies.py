"""``/v1/policies``: throughput policies shared by destinations."""

from __future__ import annotations

from flask import Blueprint
from marshmallow import Schema, fields, validate

from ..destinations import DestinationStore
from ..policies import PolicyStore
from . import load, read_json, require_admin, runtime

bp = Blueprint("policies", __name__, url_prefix="/v1/policies")
bp.before_request(require_admin)


class PolicySchema(Schema):
    name = fields.String(required=True, validate=validate.Length(1, 200))
    concurrency = fields.Integer(required=True, validate=validate.Range(1, 1000))
    rate_per_s = fields.Float(load_default=None, allow_none=True, validate=validate.Range(0.01, 100000))


_schema = PolicySchema()


def _store() -> PolicyStore:
    return PolicyStore(runtime().db)


@bp.post("")
def create():
    return _store().create(load(_schema, read_json())), 201


@bp.get("")
def list_policies():
    return {"items": _store().all()}


@bp.get("/<policy_id>")
def get(policy_id: str):
    return _store().get(policy_id)


@bp.patch("/<policy_id>")
def update(policy_id: str):
    return _store().update(policy_id, load(_schema, read_json(), partial=True))


@bp.delete("/<policy_id>")
def delete(policy_id: str):
    users = [d["id"] for d in DestinationStore(runtime().db).all() if d.get("policy_id") == policy_id]
    _store().delete(policy_id, users)
    return "", 204
