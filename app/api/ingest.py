"""``POST /v1/sources/<id>/events``: authenticate, parse, validate, store, then acknowledge.

Nothing is acknowledged before Redis has it: the 202 comes after the transaction that stores the
events and their deliveries. A JSON list is taken item by item (``?atomic=true``: all or nothing).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from flask import Blueprint, request

from .. import adapters, metrics
from ..adapters._common import loads_lenient
from ..errors import Conflict, InvalidJSON, NotFound, Unauthorized, UnsupportedMediaType, ValidationError
from ..events import canonical_event
from ..intake import Intake
from ..runtime import Runtime
from ..signatures import verify_hmac, verify_standard
from ..sources import SourceStore
from ..store import keys
from . import read_json, runtime

bp = Blueprint("ingest", __name__)

IN_PROGRESS = "…"
XML_TYPES = ("application/xml", "text/xml")


def _ingest_key() -> str:
    key = request.headers.get("X-Hookgate-Key", "")
    if not key:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    return key


def _authenticate(store: SourceStore, source: dict) -> tuple[str, int] | None:
    """Check the key and the signature; for a signed request, the key under which its answer is kept
    (so that a repeat of it is answered as a duplicate) and for how long."""
    if source.get("key_required", True):
        key = _ingest_key()
        if not key:
            raise Unauthorized("send the source's ingest key in the X-Hookgate-Key header")
        if not SourceStore.key_matches(source, key):
            raise Unauthorized("the ingest key is not valid for this source")
    signature = source.get("signature")
    if not signature:
        return None
    rt = runtime()
    tolerance = rt.settings.signature_tolerance_s
    body = request.get_data(cache=True)
    secrets = store.signing_secrets(source)
    headers = request.headers  # werkzeug's Headers: case-insensitive getlist(), which the verifiers read
    if signature["type"] == "standard_webhooks":
        # A sender retries under the same webhook-id with a fresh timestamp and signature, for days (Svix).
        message = verify_standard(secrets, headers, body, tolerance_s=tolerance)
        return keys.seen_signature(source["id"], message), int(rt.settings.event_retention_s)
    # The same HMAC signature is the same timestamp and body: stale after the tolerance window anyway.
    message = verify_hmac(secrets, headers, body, signature_header=signature["header"],
                          timestamp_header=signature["timestamp_header"], tolerance_s=tolerance)
    return keys.seen_signature(source["id"], message), int(tolerance * 2) + 1


def _payload(kind: str):
    """The parsed body: JSON for every kind, XML where the platform sends XML."""
    if (request.mimetype or "") in XML_TYPES:
        if not adapters.accepts_xml(kind):
            raise UnsupportedMediaType(f"a {kind} source takes JSON only", {"content_type": request.content_type})
        return None, adapters.parse_xml(kind, request.get_data(cache=True))
    try:
        return read_json(), None
    except InvalidJSON:
        if kind != "webengage":
            raise
        # WebEngage's own examples carry // comments; take them as documented.
        try:
            return loads_lenient(request.get_data(cache=True)), None
        except (InvalidJSON, UnicodeDecodeError):
            raise InvalidJSON("the body is not valid JSON") from None


def _request_key(source_id: str, signed: tuple[str, int] | None) -> tuple[str, int, dict[str, str]] | None:
    """Where the answer to this request is kept, for how long, and what a 409 names: the
    ``Idempotency-Key`` header's, else the signed message's (``webhook-id`` or HMAC signature)."""
    idempotency_key = (request.headers.get("Idempotency-Key") or "").strip()
    if idempotency_key:
        return (keys.idempotent_request(source_id, idempotency_key[:200]), int(runtime().settings.event_retention_s),
                {"idempotency_key": idempotency_key})
    if signed is not None:
        return signed[0], signed[1], {"signed_message": "repeated"}
    return None


@bp.post("/v1/sources/<source_id>/events")
def ingest(source_id: str):
    rt = runtime()
    store = SourceStore(rt.db, rt.secrets)
    rt.router.refresh()  # the one configuration read of this request: sources and destinations
    source = rt.router.source(source_id)
    if source is None:
        raise NotFound(f"no source {source_id!r}", {"id": source_id})
    signed = _authenticate(store, source)
    request.get_data(cache=True)  # 413 before any work past the limit

    remembered = _request_key(source_id, signed)
    if remembered is not None and not rt.db.set(remembered[0], IN_PROGRESS, nx=True, ex=60):
        previous = rt.db.get(remembered[0])
        if previous in (None, IN_PROGRESS):
            raise Conflict("the same request (Idempotency-Key, webhook-id or signature) is still being processed; "
                           "retry", remembered[2])
        return json.loads(previous), 202, {"Idempotent-Replayed": "true"}
    try:
        body = _accept(rt, source)
    except Exception:
        if remembered is not None:  # not accepted: a retry of it is judged afresh, not taken for a repeat
            rt.db.delete(remembered[0])
        raise
    metrics.count_ingest(rt.db, source, body)
    if remembered is not None:
        rt.db.set(remembered[0], json.dumps(body), ex=remembered[1])
    return body, 202


def _accept(rt: Runtime, source: dict[str, Any]) -> dict[str, Any]:
    """Parse, validate and store the request's events: the 202's body. Each item of a JSON list is
    taken or rejected on its own, unless ``?atomic=true`` (then one bad item rejects them all)."""
    payload, from_xml = _payload(source["kind"])
    one_by_one = isinstance(payload, list) and request.args.get("atomic", "").lower() not in ("1", "true", "yes")
    parsed, errors = _parsed(source["kind"], payload, from_xml, one_by_one)
    events = _canonical(source["id"], parsed, errors, one_by_one)
    if errors and not events:
        raise ValidationError("none of the events is valid", errors)
    result = Intake(rt).accept(source["id"], events, from_request=True)
    for position, details in errors.items():
        result.results.append({"index": int(position), "status": "rejected", "errors": details})
    result.results.sort(key=lambda r: r["index"])
    if not isinstance(payload, list) and result.results and result.results[0]["status"] == "conflict":
        raise Conflict("an event with this id is still being stored; retry", {"id": parsed[0][1].get("id")})
    return result.body()


def _parsed(kind: str, payload: Any, from_xml: list[dict[str, Any]] | None,
            one_by_one: bool) -> tuple[list[tuple[int, dict[str, Any]]], dict[str, Any]]:
    """The fields of each event by the source kind's adapter, with their item's index, and the
    errors of items left out (by index, as text)."""
    if from_xml is not None:
        return [(0, fields) for fields in from_xml], {}
    if not one_by_one:
        return list(enumerate(adapters.parse(kind, payload))), {}
    parsed, errors = adapters.parse_each(kind, payload)
    if errors and not parsed:
        raise ValidationError(f"none of the {len(payload)} events is valid", errors)
    return parsed, errors


def _canonical(source_id: str, parsed: list[tuple[int, dict[str, Any]]], errors: dict[str, Any],
               one_by_one: bool) -> list[tuple[int, dict[str, Any]]]:
    """Canonical events, with their item's index; taken one by one, an invalid one joins ``errors``."""
    received_at = dt.datetime.now(dt.UTC)
    events = []
    for index, fields in parsed:
        try:
            events.append((index, canonical_event(source_id, fields, received_at=received_at)))
        except ValidationError as exc:
            if not one_by_one:
                raise
            errors[str(index)] = exc.details
    return events
