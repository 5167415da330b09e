"""``POST /v1/sources/<id>/events``: authenticate, parse, validate, store, then acknowledge."""

from __future__ import annotations

import datetime as dt
import logging

import redis
from flask import Blueprint, request

from ..adapters import parse
from ..delivery.queue import store_events, wake
from ..errors import Unauthorized
from ..events import canonical_event
from ..sources import SourceStore
from . import read_json, runtime

bp = Blueprint("ingest", __name__)
log = logging.getLogger(__name__)


def _ingest_key() -> str:
    key = request.headers.get("X-Hookgate-Key", "")
    if not key:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    return key


@bp.post("/v1/sources/<source_id>/events")
def ingest(source_id: str):
    rt = runtime()
    source = SourceStore(rt.db).get(source_id)
    key = _ingest_key()
    if not key:
        raise Unauthorized("send the source's ingest key in the X-Hookgate-Key header")
    if not SourceStore.key_matches(source, key):
        raise Unauthorized("the ingest key is not valid for this source")
    payload = read_json()
    received_at = dt.datetime.now(dt.timezone.utc)
    events = [canonical_event(source_id, fields, received_at=received_at) for fields in parse(source["kind"], payload)]
    index = rt.router.index()
    routed = [(event, index.match(event)) for event in events]
    destination_ids = store_events(rt.db, routed, rt.settings.event_retention_s)
    try:
        wake(rt.db, rt.queue, destination_ids, rt.settings)
    except redis.RedisError as exc:  # stored already: the ticker wakes them; do not fail an accepted request
        log.warning("could not wake drain jobs (the ticker will): %s", exc)
    return {"accepted": len(events), "ids": [event["id"] for event in events]}, 202
