"""``POST /v1/destinations/<id>/test``: show the request a destination would send; send it if asked."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint
from marshmallow import Schema, fields

from ..delivery.trial import try_destination
from ..destinations import DestinationStore
from ..events import canonical_event
from ..schemas import EventSchema
from . import load, read_json, require_admin, runtime

bp = Blueprint("trials", __name__, url_prefix="/v1/destinations")
bp.before_request(require_admin)


class TrialSchema(Schema):
    send = fields.Boolean(load_default=False)
    event = fields.Nested(EventSchema, load_default=None, allow_none=True)


@bp.post("/<destination_id>/test")
def test(destination_id: str):
    destination = DestinationStore(runtime().db).get(destination_id)
    options = load(TrialSchema(), read_json(optional=True))
    event = None
    if options["event"] is not None:
        event = canonical_event("src_test", options["event"], received_at=dt.datetime.now(dt.UTC))
    return try_destination(runtime(), destination, event, send=options["send"])
