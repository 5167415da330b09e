"""Replays: one delivery, a destination's deliveries by status and window, and a replay's progress."""

from __future__ import annotations

from flask import Blueprint
from marshmallow import Schema, fields, validate

from ..deliveries import STATUSES
from ..destinations import DestinationStore
from ..replay import read_replay, replay_delivery, start_bulk_replay
from . import load, read_json, require_admin, runtime

bp = Blueprint("replays", __name__)
bp.before_request(require_admin)


class BulkReplaySchema(Schema):
    status = fields.String(load_default="failed", validate=validate.OneOf([s for s in STATUSES if s != "pending"]))
    since = fields.AwareDateTime(load_default=None, allow_none=True)
    until = fields.AwareDateTime(load_default=None, allow_none=True)


_bulk = BulkReplaySchema()


@bp.post("/v1/deliveries/<delivery_id>/replay")
def replay_one(delivery_id: str):
    return replay_delivery(runtime(), delivery_id), 202


@bp.post("/v1/destinations/<destination_id>/replay")
def replay_many(destination_id: str):
    DestinationStore(runtime().db).get(destination_id)
    fields_ = load(_bulk, read_json(optional=True))
    return start_bulk_replay(runtime(), destination_id, fields_["status"], fields_["since"], fields_["until"]), 202


@bp.get("/v1/replays/<replay_id>")
def progress(replay_id: str):
    return read_replay(runtime().db, replay_id)
