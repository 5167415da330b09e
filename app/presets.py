"""Presets: ready destination templates, contributed by plugins or saved by users.

A preset says how to reach one kind of receiver: method, base URL and path, format, headers, body
template (or a batch's item and root templates), and the parameters a user fills in. Its path,
headers and templates are Jinja over ``params``; secret parameters are encrypted in the destination
and only revealed on the way out (never in a response, an export or the delivery log).

Every preset takes a ``url`` parameter that replaces its base URL (a proxy, a regional endpoint, a
local test receiver); the path is kept.

A destination made from a preset (``app/preset_destinations.py``) stores what it needs to send, so
it keeps working if the plugin is later removed; the plugin adds its classification of answers
(``classify_response``) and its screening of events (``Preset.screen``) while it is installed.

A user preset as data is checked by ``PresetSchema`` and ``ParamSchema`` (with ``NAME`` and
``PARAM_NAME``): one set of rules, which ``POST /v1/presets`` (its parameters) and an import use.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from marshmallow import Schema, validate, validates
from marshmallow import fields as mf

from .delivery.batch import render_batch
from .errors import Conflict, NotFound, TemplateError
from .events import canonical_event
from .headers import pattern_problems, validate_headers
from .preset_templates import preset_url, render_text
from .rendering import RenderError, render_delivery, validate_template
from .schemas import FORMATS, METHODS
from .store import keys

__all__ = ["MASK", "PARAM_TYPES", "Param", "ParamSchema", "Preset", "PresetCatalog", "PresetSchema", "Verdict",
           "load_preset", "public_preset", "sample_event", "SAMPLE_EVENT"]

MASK = "••••••"
URL_MASK = "xxxxxx"  # in a URL shown to users: stays a valid URL
PARAM_TYPES = ("string", "text", "integer", "number", "boolean", "url", "list", "object")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$")
PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# presets/ in the source tree, installed as hookgate.builtin_presets (a folder on disk in every install)
PRESETS_DIR = Path(str(resources.files("hookgate.builtin_presets")))

# Non-personal sample data for examples and ``POST /v1/destinations/<id>/test``: the fields a source
# would send, made into an event by ``canonical_event`` (the shape every real event has).
_SAMPLE_FIELDS: dict[str, Any] = {
    "name": "order_completed",
    "category": "activity",
    "origin": "generic",
    "user_id": "user_123",
    "profile": {"email": "jane.doe@example.com", "phone": "+15555550100", "first_name": "Jane",
                "last_name": "Doe", "city": "Springfield", "country": "US", "zip": "12345"},
    "data": {"order_id": "A-1001", "value": 42.5, "currency": "USD", "message": "Your order A-1001 is on its way."},
}


def sample_event(now: dt.datetime) -> dict[str, Any]:
    """The sample event as of ``now`` (its ``time`` and ``received_at``), canonical like every real one."""
    return {**canonical_event("src_sample", _SAMPLE_FIELDS, received_at=now), "id": "evt_sample_0001"}


SAMPLE_EVENT: dict[str, Any] = sample_event(dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))


@dataclass(frozen=True)
class Param:
    name: str
    type: str = "string"
    required: bool = False
    secret: bool = False
    default: Any = None
    description: str = ""
    choices: tuple[Any, ...] = ()
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None

    def public(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required,
                                 "secret": self.secret, "default": None if self.secret else self.default,
                                 "description": self.description}
        if self.choices:
            shown["choices"] = list(self.choices)
        for bound in ("minimum", "maximum", "max_length"):
            if getattr(self, bound) is not None:
                shown[bound] = getattr(self, bound)
        return shown

    def field(self) -> mf.Field:
        """The marshmallow field that checks a value given for this parameter."""
        kinds: dict[str, Callable[..., mf.Field]] = {
            "string": mf.String, "text": mf.String, "integer": mf.Integer, "number": mf.Float,
            "boolean": mf.Boolean, "list": lambda **kw: mf.List(mf.Raw(), **kw), "object": mf.Dict,
            "url": lambda **kw: mf.Url(schemes={"http", "https"}, require_tld=False, **kw),
        }
        checks: list[Any] = []
        if self.choices:
            checks.append(validate.OneOf(self.choices))
        if self.type in ("integer", "number") and (self.minimum is not None or self.maximum is not None):
            checks.append(validate.Range(self.minimum, self.maximum))
        if self.type in ("string", "text", "url"):
            checks.append(validate.Length(max=self.max_length or (40000 if self.type == "text" else 2048)))
        elif self.type == "list" and self.max_length:
            checks.append(validate.Length(max=self.max_length))
        options: dict[str, Any] = {"validate": checks, "required": self.required}
        if self.type == "integer":
            options["strict"] = True
        return kinds[self.type](**options)


@dataclass(frozen=True)
class Verdict:
    """A preset's reading of an answer: ``outcome`` is delivered, error or bounced (retried).

    ``items`` maps event ids of a batch to their own verdicts (per-message outcomes)."""

    outcome: str
    reason: str | None = None
    retry_after_s: float | None = None
    items: dict[str, Verdict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in ("delivered", "error", "bounced"):
            raise ValueError(f"a verdict's outcome is delivered, error or bounced, not {self.outcome!r}")

    def for_item(self, reference: str) -> Verdict:
        return self.items.get(reference, self)


@dataclass
class Preset:
    name: str
    title: str
    base_url: str
    description: str = ""
    method: str = "POST"
    path: str = ""
    format: str = "json"
    headers: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    batch: dict[str, Any] | None = None  # {"size", "max_size", "max_wait_s", "item_template", "root_template"}
    params: tuple[Param, ...] = ()
    auth: dict[str, Any] = field(default_factory=lambda: {"type": "none"})
    timeout_s: float = 10.0
    docs_url: str = ""
    example_params: dict[str, Any] = field(default_factory=dict)
    # The event's reason not to send it (e.g. Meta refuses events older than 7 days), or None.
    screen: Callable[[dict[str, Any], dict[str, Any]], str | None] | None = None
    # Checks across parameters (one of two required, ...): parameter name → messages, or None.
    check: Callable[[dict[str, Any]], dict[str, list[str]] | None] | None = None
    origin: str = "plugin"  # plugin (which one is set when registered) or user

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(f"preset name {self.name!r}: use dotted lower-case words, like slack.message")
        self.params = tuple(self.params)
        names = [p.name for p in self.params]
        if "url" not in names:
            self.params += (Param("url", "url", default=self.base_url,
                                  description="Replaces the base URL (a proxy, a regional endpoint, a test "
                                              "receiver); the path is kept."),)
        bad = [n for n in names if not PARAM_NAME.match(n)]
        if bad or len(set(names)) != len(names):
            raise ValueError(f"preset {self.name}: parameter names must be unique snake_case words: {names}")

    def check_templates(self) -> None:
        """Every template compiles (a 422 naming the template and the line otherwise). Run once the
        plugins' filters are installed: a preset may use its own plugin's filters."""
        for where, source in self.sources().items():
            text = where == "path" or where.startswith("headers.")  # the URL's path and headers are text
            validate_template(source, field=where, fmt="text" if text else self.format)
        self.check_headers()

    def check_headers(self) -> None:
        """Its header names and patterns keep the header rule (headers.py), as written and rendered
        over example values, every parameter set (a ``{{ '\\r\\n' }}`` is only seen rendered): a 422 naming each."""
        problems = pattern_problems(self.headers, {**{p.name: _placeholder(p) for p in self.params},
                                                   **_example_values(self)})
        if problems:
            raise TemplateError(f"invalid headers: {', '.join(problems)}", {"headers": problems})

    def sources(self) -> dict[str, str]:
        """Every template of the preset, by where it is used."""
        found = {"path": self.path, **{f"headers.{k}": v for k, v in self.headers.items()}}
        if self.template is not None:
            found["template"] = self.template
        for part in ("item_template", "root_template"):
            if self.batch and self.batch.get(part):
                found[f"batch.{part}"] = self.batch[part]
        return found

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def secret_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.secret)

    def to_data(self) -> dict[str, Any]:
        """The preset as data (what a user preset stores, and what export carries)."""
        return {"name": self.name, "title": self.title, "description": self.description, "method": self.method,
                "base_url": self.base_url, "path": self.path, "format": self.format, "headers": self.headers,
                "template": self.template, "batch": self.batch, "auth": self.auth, "timeout_s": self.timeout_s,
                "docs_url": self.docs_url, "example_params": self.example_params,
                "params": [p.public() for p in self.params if p.name != "url"]}

    @classmethod
    def from_data(cls, data: dict[str, Any], **code: Any) -> Preset:
        params = tuple(_param(p) for p in data.get("params", ()))
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "params"}
        return cls(**known, params=params, **code)


def _param(data: dict[str, Any]) -> Param:
    given: dict[str, Any] = {k: tuple(v) if k == "choices" else v for k, v in data.items()}
    return Param(**given)


# -- a preset as data: the rules a user preset is checked by, wherever it comes from --------------------

class ParamSchema(Schema):
    """A parameter as ``Param.public()`` writes it."""

    name = mf.String(required=True, validate=validate.Regexp(PARAM_NAME))
    type = mf.String(load_default="string", validate=validate.OneOf(PARAM_TYPES))
    required = mf.Boolean(load_default=False)
    secret = mf.Boolean(load_default=False)
    default = mf.Raw(load_default=None, allow_none=True)
    description = mf.String(load_default="", validate=validate.Length(max=1000))
    choices = mf.List(mf.Raw(), validate=validate.Length(max=100))
    max_length = mf.Integer(allow_none=True, validate=validate.Range(1, 1_000_000))
    minimum = mf.Float(allow_none=True)
    maximum = mf.Float(allow_none=True)


class PresetBatchSchema(Schema):
    size = mf.Integer(load_default=100, validate=validate.Range(1, 1000))
    max_size = mf.Integer(validate=validate.Range(1, 1000))
    max_wait_s = mf.Float(load_default=5.0, validate=validate.Range(0, 3600))
    item_template = mf.String(load_default=None, allow_none=True, validate=validate.Length(max=64 * 1024))
    root_template = mf.String(load_default=None, allow_none=True, validate=validate.Length(max=64 * 1024))


class PresetSchema(Schema):
    """A user preset as ``Preset.to_data()`` writes it (what is stored, and what an export carries)."""

    name = mf.String(required=True, validate=validate.Regexp(NAME))
    title = mf.String(required=True, validate=validate.Length(1, 200))
    description = mf.String(load_default="", validate=validate.Length(max=2000))
    method = mf.String(load_default="POST", validate=validate.OneOf(METHODS))
    base_url = mf.Url(required=True, schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2048))
    path = mf.String(load_default="", validate=validate.Length(max=2048))
    format = mf.String(load_default="json", validate=validate.OneOf(FORMATS))
    headers = mf.Dict(keys=mf.String(), values=mf.String(), load_default=dict)
    template = mf.String(load_default=None, allow_none=True, validate=validate.Length(max=64 * 1024))
    batch = mf.Nested(PresetBatchSchema, load_default=None, allow_none=True)
    auth = mf.Dict(load_default=lambda: {"type": "none"})
    timeout_s = mf.Float(load_default=10.0, validate=validate.Range(0.1, 60))
    docs_url = mf.String(load_default="", validate=validate.Length(max=2048))
    example_params = mf.Dict(load_default=dict)
    params = mf.List(mf.Nested(ParamSchema), load_default=list, validate=validate.Length(max=50))

    @validates("headers")
    def _headers(self, value: dict[str, str], data_key: str) -> None:
        validate_headers(value)  # the one header rule (headers.py), on the patterns as written


def load_preset(name: str, folder: Path | None = None, **code: Any) -> Preset:
    """A preset from its folder ``presets/<name>/``: ``preset.json`` (everything but the templates),
    ``body.j2`` (the body template) and, for a batch, ``item.j2`` and ``root.j2``. ``code`` adds
    what data cannot hold (``screen``)."""
    folder = folder or PRESETS_DIR / name
    data = json.loads((folder / "preset.json").read_text())
    data.setdefault("name", name)
    if (folder / "body.j2").exists():
        data["template"] = (folder / "body.j2").read_text().rstrip("\n")
    if data.get("batch") is not None:
        for part, filename in (("item_template", "item.j2"), ("root_template", "root.j2")):
            if (folder / filename).exists():
                data["batch"][part] = (folder / filename).read_text().rstrip("\n")
    return Preset.from_data(data, **code)


def public_preset(preset: Preset) -> dict[str, Any]:
    """What ``GET /v1/presets/<name>`` shows: parameters, request shape, auth, and a rendered example."""
    shown = preset.to_data()
    shown["params"] = [p.public() for p in preset.params]
    shown["origin"] = preset.origin
    path = preset.path
    shown["url_pattern"] = preset.base_url.rstrip("/") + (path if not path or path[0] in "/?{" else "/" + path)
    shown["example"] = example_request(preset)
    return shown


def example_request(preset: Preset) -> dict[str, Any]:
    """The request this preset would send for the sample event, with example parameters (secrets masked)."""
    values = _example_values(preset)
    shown = {**values, **{n: URL_MASK for n in preset.secret_names}}
    state = {"base_url": preset.base_url, "path": preset.path, "headers": preset.headers}
    example: dict[str, Any] = {"method": preset.method, "params": {**values, **{n: MASK for n in preset.secret_names}}}
    try:
        example["url"] = preset_url(state, shown)
        example["headers"] = {k: (MASK if any(n in v for n in preset.secret_names) else render_text(v, shown))
                              for k, v in preset.headers.items()}
        example["body"] = _example_body(preset, example["url"], shown)
    except RenderError as exc:
        example["error"] = str(exc)
    return example


def _example_values(preset: Preset) -> dict[str, Any]:
    """Defaults, then the preset's example parameters, then a placeholder for each required one left."""
    values = {p.name: p.default for p in preset.params if p.default is not None}
    values.update(preset.example_params)
    for p in preset.params:
        if p.required:  # optional ones stay unset, as a user would leave them
            values.setdefault(p.name, _placeholder(p))
    return values


def _example_body(preset: Preset, url: str, params: dict[str, Any]) -> Any:
    """The body for the sample event (two of them for a batch); parsed when it is JSON. Raises ``RenderError``."""
    destination = {"format": preset.format, "template": preset.template, "name": preset.title, "url": url,
                   "method": preset.method, "id": "dst_example", "batch": preset.batch and {**preset.batch, "size": 2}}
    if preset.batch:
        second = {**SAMPLE_EVENT, "id": "evt_sample_0002", "user_id": "user_456"}
        rendered, errors = render_batch(destination, [SAMPLE_EVENT, second], max_bytes=65536, timeout_s=2.0,
                                        params=params)
        if rendered is None:
            raise RenderError("; ".join(errors.values()))
    else:
        rendered = render_delivery(destination, SAMPLE_EVENT, max_bytes=65536, timeout_s=2.0, params=params)
    body = rendered.body.decode()
    return json.loads(body) if preset.format == "json" else body


def _placeholder(p: Param) -> Any:
    return {"integer": 1, "number": 1.0, "boolean": False, "list": [], "object": {},
            "url": "https://example.com"}.get(p.type, f"<{p.name}>")


class PresetCatalog:
    """Every preset one process knows: the plugins' (loaded once) and the users' (in Redis)."""

    def __init__(self, db: Any, builtin: dict[str, Preset]):
        self.db = db
        self.builtin = builtin

    def find(self, name: str) -> Preset | None:
        if name in self.builtin:
            return self.builtin[name]
        raw = self.db.hget(keys.presets, name) if self.db is not None else None
        return Preset.from_data({**json.loads(raw), "origin": "user"}) if raw is not None else None

    def get(self, name: str) -> Preset:
        preset = self.find(name)
        if preset is None:
            raise NotFound(f"no preset {name!r}", {"name": name})
        return preset

    def all(self) -> list[Preset]:
        stored = self.db.hvals(keys.presets) if self.db is not None else []
        users = [Preset.from_data({**json.loads(v), "origin": "user"}) for v in stored]
        return sorted([*self.builtin.values(), *users], key=lambda p: p.name)

    def save_user_preset(self, preset: Preset, *, replace: bool = False) -> None:
        if preset.name in self.builtin:
            raise Conflict(f"{preset.name!r} is a plugin's preset", {"name": preset.name})
        data = preset.to_data()
        if not replace and not self.db.hsetnx(keys.presets, preset.name, json.dumps(data)):
            raise Conflict(f"a preset named {preset.name!r} exists", {"name": preset.name})
        if replace:
            self.db.hset(keys.presets, preset.name, json.dumps(data))

    def delete_user_preset(self, name: str) -> None:
        if not self.db.hdel(keys.presets, name):
            raise NotFound(f"no user preset {name!r}", {"name": name})
