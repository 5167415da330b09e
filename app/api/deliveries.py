"""``/v1/deliveries``: list (filter by destination, status, event; cursor pagination) and read one."""

from __future__ import annotations

from flask import Blueprint, request

from ..deliveries import DeliveryStore
from . import query_limit, require_admin, runtime

bp = Blueprint("deliveries", __name__, url_prefix="/v1/deliveries")
bp.before_request(require_admin)


@bp.get("")
def list_deliveries():
    args = request.args
    return DeliveryStore(runtime().db).page(
        destination_id=args.get("destination_id") or None,
        status=args.get("status") or None,
        event_id=args.get("event_id") or None,
        limit=query_limit(),
        cursor=args.get("cursor") or None,
    )


@bp.get("/<delivery_id>")
def get(delivery_id: str):
    return DeliveryStore(runtime().db).get(delivery_id)
