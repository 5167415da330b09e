"""``/v1/policies``: throughput policies shared by destinations."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..destinations import DestinationStore
from ..policies import PolicyStore
from ..schemas import PolicySchema
from . import load, read_json, require_admin, runtime

bp = Blueprint("policies", __name__, url_prefix="/v1/policies")
bp.before_request(require_admin)
_schema = PolicySchema()


def _store() -> PolicyStore:
    return PolicyStore(runtime().db)


@bp.post("")
def create() -> tuple[dict[str, Any], int]:
    return _store().create(load(_schema, read_json())), 201


@bp.get("")
def list_policies() -> dict[str, Any]:
    return {"items": _store().all()}


@bp.get("/<policy_id>")
def get(policy_id: str) -> dict[str, Any]:
    return _store().get(policy_id)


@bp.patch("/<policy_id>")
def update(policy_id: str) -> dict[str, Any]:
    return _store().update(policy_id, load(_schema, read_json(), partial=True))


@bp.delete("/<policy_id>")
def delete(policy_id: str) -> tuple[str, int]:
    users = [d["id"] for d in DestinationStore(runtime().db).all() if d.get("policy_id") == policy_id]
    _store().delete(policy_id, users)
    return "", 204
