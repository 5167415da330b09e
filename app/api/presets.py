"""``/v1/presets``: the presets plugins registered, and the users' own (saved from a destination)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from marshmallow import Schema, fields, validate, validates, validates_schema
from marshmallow import ValidationError as SchemaError

from ..destinations import DestinationStore
from ..errors import ValidationError
from ..headers import validate_headers
from ..presets import ParamSchema as PresetParamSchema
from ..presets import Preset, public_preset
from ..rendering import default_template
from ..schemas import FORMATS, METHODS
from . import load, read_json, require_admin, runtime

bp = Blueprint("presets", __name__, url_prefix="/v1/presets")
bp.before_request(require_admin)


class ParamSchema(PresetParamSchema):
    """A parameter of a preset saved here: every preset's rules (``presets.ParamSchema``), without
    the bounds, and a secret parameter has no default."""

    class Meta:
        exclude = ("max_length", "minimum", "maximum")

    choices = fields.List(fields.Raw(), load_default=list, validate=validate.Length(max=100))

    @validates_schema
    def _no_secret_default(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("secret") and data.get("default") is not None:
            raise SchemaError("A secret parameter has no default: each destination enters its own.", "default")


class UserPresetSchema(Schema):
    """A user's preset: a destination's request, with ``{{ params.x }}`` where later users fill in."""

    name = fields.String(required=True, validate=validate.Length(3, 100))
    title = fields.String(load_default=None, validate=validate.Length(1, 200))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    from_destination = fields.String(load_default=None, validate=validate.Length(max=64))
    base_url = fields.Url(schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2048))
    path = fields.String(validate=validate.Length(max=2048))
    method = fields.String(validate=validate.OneOf(METHODS))
    format = fields.String(validate=validate.OneOf(FORMATS))
    headers = fields.Dict(keys=fields.String(), values=fields.String())
    template = fields.String(allow_none=True, validate=validate.Length(max=64 * 1024))
    params = fields.List(fields.Nested(ParamSchema), load_default=list, validate=validate.Length(max=50))

    @validates("headers")
    def _headers(self, value: dict[str, str], data_key: str) -> None:
        validate_headers(value)  # the one header rule (headers.py), on the patterns as written


def summary(preset: Preset) -> dict[str, Any]:
    return {"name": preset.name, "title": preset.title, "description": preset.description,
            "origin": preset.origin, "method": preset.method, "format": preset.format,
            "batch": bool(preset.batch), "auth": preset.auth,
            "params": [p.name for p in preset.params]}


@bp.get("")
def list_presets() -> dict[str, Any]:
    return {"items": [summary(p) for p in runtime().presets.all()]}


@bp.get("/<name>")
def get(name: str) -> dict[str, Any]:
    return public_preset(runtime().presets.get(name))


@bp.post("")
def create() -> tuple[dict[str, Any], int]:
    data = load(UserPresetSchema(), read_json())
    source = data.pop("from_destination")
    if source:
        base = _copied(DestinationStore(runtime().db).get(source))
    elif "base_url" not in data:
        raise ValidationError("a preset needs base_url, or from_destination to copy one",
                              {"base_url": ["Missing data for required field."]})
    else:
        base = {}
    merged = {**base, **{k: v for k, v in data.items() if v is not None or k == "template"}}
    merged["title"] = data["title"] or data["name"]
    merged["params"] = [{k: v for k, v in p.items() if k != "choices" or v} for p in data["params"]]
    try:
        preset = Preset.from_data(merged, origin="user")
    except ValueError as exc:
        raise ValidationError(f"invalid preset: {exc}", {"name": [str(exc)]}) from None
    preset.check_templates()
    runtime().presets.save_user_preset(preset)
    return public_preset(preset), 201


def _copied(destination: dict[str, Any]) -> dict[str, Any]:
    """What a preset takes from the destination it is saved from: its request (a preset destination's
    patterns, not their rendering), and the body template it uses."""
    state = destination.get("preset")
    return {
        "method": destination["method"], "format": destination["format"],
        "base_url": state["base_url"] if state else destination["url"],
        "path": state["path"] if state else "",
        "headers": {**(state["headers"] if state else {}), **destination.get("headers", {})},
        "template": destination.get("template") or default_template(
            destination["format"], destination.get("payload_style") or "canonical"),
        "batch": destination.get("batch"), "timeout_s": destination["timeout_s"],
    }


@bp.delete("/<name>")
def delete(name: str) -> tuple[str, int]:
    runtime().presets.delete_user_preset(name)
    return "", 204
