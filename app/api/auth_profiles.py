"""``/v1/auth-profiles``: reusable outbound credentials — create, list, read, update, delete, test, rotate.

Every body is ``{"name", "type", "endpoint_prefix", "ca_certificate"?, …fields of the type}``, checked by
the type's marshmallow schema (unknown fields refused). Secrets are write-only: every answer masks
them; a generated signing secret is shown once, in the answer that created it. ``/test`` answers
with what the endpoint said, scrubbed of every credential the probe carried (an endpoint may echo
the request: ``outbound_auth.probe``). The type of a profile
does not change (PATCH with another ``type`` is a 422); a PATCH replaces the fields it names.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, request
from marshmallow import Schema, ValidationError, fields, validate

from ..auth_profiles import (
    DEFAULT_GRACE_S,
    SCHEMAS,
    AuthProfileStore,
    ProfileSchema,
    check_whsec,
    public,
)
from ..destinations import DestinationStore
from ..errors import Conflict
from ..errors import ValidationError as Invalid
from ..outbound_auth import probe
from . import load, query_limit, read_json, require_admin, runtime

bp = Blueprint("auth_profiles", __name__, url_prefix="/v1/auth-profiles")
bp.before_request(require_admin)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class RotateSchema(Schema):
    grace_s = fields.Float(load_default=DEFAULT_GRACE_S, validate=validate.Range(0, 30 * 86400))
    secret = fields.String(load_default=None, allow_none=True, validate=validate.Length(16, 512))


class TestSchema(Schema):
    method = fields.String(load_default="GET", validate=validate.OneOf(METHODS))
    path = fields.String(load_default="/", validate=[validate.Length(max=2048), validate.Regexp(
        re.compile(r"^[^\s#\x00-\x1f\x7f]*$"), error="A path: no spaces, controls or fragment.")])


def _store() -> AuthProfileStore:
    return AuthProfileStore(runtime().db, runtime().secrets)


@bp.post("")
def create() -> tuple[dict[str, Any], int]:
    body = read_json()
    kind = body.get("type") if isinstance(body, dict) else None
    fields_ = load(SCHEMAS[kind] if isinstance(kind, str) and kind in SCHEMAS else ProfileSchema(), body)
    profile, shown_once = _store().create(fields_)
    return {**public(profile), **shown_once}, 201


@bp.get("")
def list_profiles() -> dict[str, Any]:
    limit = query_limit()
    after = request.args.get("cursor", "")
    items = [p for p in _store().all() if p["id"] > after]
    page = items[:limit]
    return {"items": [public(p) for p in page], "next_cursor": page[-1]["id"] if len(items) > limit else None}


@bp.get("/<profile_id>")
def get(profile_id: str) -> dict[str, Any]:
    return public(_store().get(profile_id))


@bp.patch("/<profile_id>")
def update(profile_id: str) -> dict[str, Any]:
    store = _store()
    kind = store.get(profile_id)["type"]
    body = read_json()
    if isinstance(body, dict) and body.get("type", kind) != kind:
        raise Invalid("invalid fields: type",
                      {"type": ["The type of a profile does not change; create another."]})
    return public(store.update(profile_id, load(SCHEMAS[kind], body, partial=True)))


@bp.delete("/<profile_id>")
def delete(profile_id: str) -> tuple[str, int]:
    users = [d["id"] for d in DestinationStore(runtime().db).all() if d.get("auth_profile_id") == profile_id]
    if users:
        raise Conflict("the auth profile is used by destinations", {"destinations": users})
    _store().delete(profile_id)
    return "", 204


@bp.post("/<profile_id>/rotate")
def rotate(profile_id: str) -> dict[str, Any]:
    options = load(RotateSchema(), read_json(optional=True))
    store = _store()
    if options["secret"] and store.get(profile_id)["type"] == "standard_webhooks":
        try:
            check_whsec(options["secret"])
        except ValidationError as exc:
            raise Invalid("invalid fields: secret", {"secret": exc.messages}) from None
    profile, shown_once = store.rotate(profile_id, grace_s=options["grace_s"], secret=options["secret"])
    return {**public(profile), **shown_once}


@bp.post("/<profile_id>/test")
def test(profile_id: str) -> dict[str, Any]:
    options = load(TestSchema(), read_json(optional=True))
    rt = runtime()
    profile = _store().get(profile_id)
    return probe(profile, rt.secrets, rt.db, rt.sender, method=options["method"], path=options["path"],
                 allowed_networks=rt.settings.allowed_networks)
