"""Export and import: an instance's configuration as one JSON document, without a single secret.

``export_document`` writes::

    {"hookgate_export": 1, "exported_at": iso, "policies": [...], "auth_profiles": [...],
     "presets": [...user presets...], "destinations": [...]}

- **No secrets, no ciphertext.** An auth profile loses every secret field (password, token,
  client_secret, private_key, secret header values, query values, signing secrets) and says which it
  needs in ``secrets_needed`` (secret headers keep their name, query parameters their name with a
  null value). A preset destination loses ``preset.secrets``; ``preset.secret_params`` names them.
  A user preset's secret parameters lose their default. Plugins' presets are not exported (the target
  has its plugins).
- **Ids are kept**, so ``policy_id``, ``auth_profile_id`` and ``fail_destination_id`` still resolve.
  Runtime state (statistics, ``disabled_at``, cached tokens, pending deliveries) does not move;
  ``enabled`` does.

``import_document`` is **all or nothing**: the whole document is checked first (shape, version,
templates, references, an auth profile's prefix covering its destinations' URLs); any problem is a
422 naming each item (``details[section][id]``) and nothing is written. Then everything is written in
one Redis transaction (policies, auth profiles, user presets, destinations). A reference may point at
an item of the document or one the target already has.

- **Existing ids**: ``mode="overwrite"`` (the default) replaces them; ``mode="skip"`` leaves them as
  they are (counted under ``skipped``). When an overwritten auth profile (or a preset destination's
  preset) is the same as the target's apart from its name and timestamps, the target's stored
  secrets are kept: importing the same document again changes nothing and undoes no re-entered secret.
- **Secrets to re-enter**: an auth profile without its secrets is stored with ``needs_secrets`` and is
  never applied (``auth_profiles.reveal`` refuses it; a delivery through it fails, not retried). A
  destination that uses such a profile, or a preset destination missing secret parameters
  (``preset.needs_secrets``), is stored disabled with ``disabled_reason: "needs_secrets"`` — so is any
  destination the target already had that uses a profile the import left without secrets. Re-enter
  with ``PATCH /v1/auth-profiles/<id>`` (the fields; a signing ``secret`` too) and
  ``PATCH /v1/destinations/<id> {"params": {...}}``, then ``POST /v1/destinations/<id>/enable``
  (a 409 until nothing is missing).

The answer: ``{"mode", "imported": {section: n}, "replaced": {section: n}, "skipped": {section: n},
"needs_secrets": [{"kind": "auth_profile"|"destination", "id", "name", "fields": [...]}]}`` (a
destination waiting for its profile also names ``auth_profile_id``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import marshmallow
import redis
from marshmallow import Schema, fields, validate

from .auth_profiles import SCALAR_SECRETS, SIGNING_TYPES, covers
from .errors import HookgateError, ValidationError
from .presets import NAME, PARAM_NAME, PARAM_TYPES, Preset, PresetCatalog
from .rendering import validate_template
from .schemas import FORMATS, METHODS, DestinationSchema
from .store import bump_config, keys, now_ms

__all__ = ["VERSION", "MODES", "export_document", "import_document"]

VERSION = 1
MODES = ("overwrite", "skip")
SECTIONS = ("policies", "auth_profiles", "presets", "destinations")
NEEDS_SECRETS = "needs_secrets"  # the marker, on an auth profile and in a destination's preset state
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_STAMPS = ("created_at", "updated_at")
_DISABLED = ("disabled_reason", "disabled_detail", "disabled_at")


# -- export ------------------------------------------------------------------------------------------

def export_document(db: redis.Redis, catalog: PresetCatalog) -> dict[str, Any]:
    def every(key: str) -> list[dict[str, Any]]:
        return sorted((json.loads(v) for v in db.hvals(key)), key=lambda item: item["id"])

    return {
        "hookgate_export": VERSION,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "policies": every(keys.policies),
        "auth_profiles": [export_profile(p) for p in every(keys.auth_profiles)],
        "presets": [export_preset(p) for p in catalog.all() if p.origin == "user"],
        "destinations": [export_destination(d) for d in every(keys.destinations)],
    }


def export_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """An auth profile with no secret: ``secrets_needed`` names the fields to re-enter."""
    kind = profile["type"]
    scalars = SCALAR_SECRETS.get(kind, ())
    shown = {k: v for k, v in profile.items() if k not in (*scalars, "secrets", "secret", NEEDS_SECRETS)}
    needed = set(profile.get(NEEDS_SECRETS) or ())
    needed |= {name for name in scalars if profile.get(name) is not None}
    if kind == "headers":
        shown["headers"] = [{"name": h["name"], "secret": True} if h["secret"] else h for h in profile["headers"]]
        needed |= {"headers"} if any(h["secret"] for h in profile["headers"]) else set()
    if profile.get("query") is not None:
        shown["query"] = {name: None for name in profile["query"]}
        needed.add("query")
    if kind in SIGNING_TYPES:
        needed.add("secret")
    shown["secrets_needed"] = sorted(needed)
    return shown


def export_preset(preset: Preset) -> dict[str, Any]:
    data = preset.to_data()
    data["params"] = [{**p, "default": None} if p["secret"] else p for p in data["params"]]
    data["example_params"] = {k: v for k, v in (data.get("example_params") or {}).items()
                              if k not in preset.secret_names}
    return data


def export_destination(destination: dict[str, Any]) -> dict[str, Any]:
    """A destination without runtime state; a preset destination without its encrypted secrets."""
    shown = {k: v for k, v in destination.items() if k != "disabled_at"}
    if destination.get("enabled", True):
        for name in _DISABLED:
            shown.pop(name, None)
    state = destination.get("preset")
    if state:
        shown["preset"] = _public_state(state)
    return shown


def _public_state(state: dict[str, Any]) -> dict[str, Any]:
    public = {k: v for k, v in state.items() if k not in ("secrets", NEEDS_SECRETS)}
    public["secret_params"] = sorted(set(state.get("secrets") or {}) | set(state.get(NEEDS_SECRETS) or ()))
    return public


# -- the document's shape ------------------------------------------------------------------------------

class _ParamData(Schema):
    name = fields.String(required=True, validate=validate.Regexp(PARAM_NAME))
    type = fields.String(load_default="string", validate=validate.OneOf(PARAM_TYPES))
    required = fields.Boolean(load_default=False)
    secret = fields.Boolean(load_default=False)
    default = fields.Raw(load_default=None, allow_none=True)
    description = fields.String(load_default="", validate=validate.Length(max=1000))
    choices = fields.List(fields.Raw(), validate=validate.Length(max=100))
    max_length = fields.Integer(allow_none=True, validate=validate.Range(1, 1_000_000))
    minimum = fields.Float(allow_none=True)
    maximum = fields.Float(allow_none=True)


class _PresetBatch(Schema):
    size = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    max_size = fields.Integer(validate=validate.Range(1, 1000))
    max_wait_s = fields.Float(load_default=5.0, validate=validate.Range(0, 3600))
    item_template = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64 * 1024))
    root_template = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64 * 1024))


class _PresetData(Schema):
    """A user preset as ``Preset.to_data()`` writes it."""

    name = fields.String(required=True, validate=validate.Regexp(NAME))
    title = fields.String(required=True, validate=validate.Length(1, 200))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    method = fields.String(load_default="POST", validate=validate.OneOf(METHODS))
    base_url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False,
                          validate=validate.Length(max=2048))
    path = fields.String(load_default="", validate=validate.Length(max=2048))
    format = fields.String(load_default="json", validate=validate.OneOf(FORMATS))
    headers = fields.Dict(keys=fields.String(validate=validate.Length(1, 200)), values=fields.String(),
                          load_default=dict)
    template = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64 * 1024))
    batch = fields.Nested(_PresetBatch, load_default=None, allow_none=True)
    auth = fields.Dict(load_default=lambda: {"type": "none"})
    timeout_s = fields.Float(load_default=10.0, validate=validate.Range(0.1, 60))
    docs_url = fields.String(load_default="", validate=validate.Length(max=2048))
    example_params = fields.Dict(load_default=dict)
    params = fields.List(fields.Nested(_ParamData), load_default=list, validate=validate.Length(max=50))


class _PresetState(Schema):
    """A destination's ``preset`` as exported: everything but the secrets."""

    name = fields.String(required=True, validate=validate.Regexp(NAME))
    origin = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    base_url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False,
                          validate=validate.Length(max=2048))
    path = fields.String(load_default="", validate=validate.Length(max=2048))
    headers = fields.Dict(keys=fields.String(validate=validate.Length(1, 200)), values=fields.String(),
                          load_default=dict)
    params = fields.Dict(keys=fields.String(validate=validate.Regexp(PARAM_NAME)), load_default=dict)
    secret_params = fields.List(fields.String(validate=validate.Regexp(PARAM_NAME)), load_default=list,
                                validate=validate.Length(max=50))


class _Document(Schema):
    hookgate_export = fields.Integer(required=True, strict=True)
    exported_at = fields.String(load_default=None, allow_none=True)
    policies = fields.List(fields.Dict(), load_default=list)
    auth_profiles = fields.List(fields.Dict(), load_default=list)
    presets = fields.List(fields.Dict(), load_default=list)
    destinations = fields.List(fields.Dict(), load_default=list)


class _Problems:
    """Problems by section and item (its id, or its position when it has none)."""

    def __init__(self) -> None:
        self.found: dict[str, dict[str, Any]] = {}

    def add(self, section: str, item: str, problem: Any) -> None:
        slot = self.found.setdefault(section, {}).setdefault(item, {})
        if isinstance(problem, dict):
            for field, messages in problem.items():
                slot.setdefault(field, [])
                slot[field] += messages if isinstance(messages, list) else [messages]
        else:
            slot.setdefault("_", []).append(problem)

    def raise_any(self) -> None:
        if self.found:
            where = ", ".join(f"{section} {', '.join(items)}" for section, items in self.found.items())
            raise ValidationError(f"the document cannot be imported (nothing was written): {where}", self.found)


# -- import --------------------------------------------------------------------------------------------

def import_document(db: redis.Redis, catalog: PresetCatalog, document: Any, *, mode: str = "overwrite",
                    https_only: bool = False) -> dict[str, Any]:
    if mode not in MODES:
        raise ValidationError("invalid query", {"mode": [f"Must be one of: {', '.join(MODES)}."]})
    if not isinstance(document, dict):
        raise ValidationError("the document must be a JSON object", {"_schema": ["Expected a JSON object."]})
    try:
        doc = _Document().load(document)
    except marshmallow.ValidationError as exc:
        raise ValidationError("not a hookgate export: " + ", ".join(sorted(map(str, exc.messages))),
                              exc.messages) from None
    if doc["hookgate_export"] != VERSION:
        raise ValidationError(f"unknown export version {doc['hookgate_export']}: this hookgate reads version "
                              f"{VERSION}", {"hookgate_export": [f"Must be {VERSION}."]})
    plan = _Plan(db, catalog, doc, mode, https_only)
    plan.check()
    return plan.write()


class _Plan:
    def __init__(self, db: redis.Redis, catalog: PresetCatalog, doc: dict[str, Any], mode: str,
                 https_only: bool):
        self.db, self.catalog, self.doc, self.mode, self.https_only = db, catalog, doc, mode, https_only
        self.problems = _Problems()
        self.stamp = now_ms()
        self.existing = {
            "policies": {k: json.loads(v) for k, v in db.hgetall(keys.policies).items()},
            "auth_profiles": {k: json.loads(v) for k, v in db.hgetall(keys.auth_profiles).items()},
            "presets": {k: json.loads(v) for k, v in db.hgetall(keys.presets).items()},
            "destinations": {k: json.loads(v) for k, v in db.hgetall(keys.destinations).items()},
        }
        # What each section will hold by id once written (only the items the import writes).
        self.records: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in SECTIONS}
        self.skipped = {s: 0 for s in SECTIONS}

    # ---- checking

    def check(self) -> None:
        checks = {"policies": self._policy, "auth_profiles": self._auth_profile, "presets": self._preset,
                  "destinations": self._destination}
        for section, key in (("policies", "id"), ("auth_profiles", "id"), ("presets", "name"),
                             ("destinations", "id")):
            seen: set[str] = set()
            for position, item in enumerate(self.doc[section]):
                ident = item.get(key)
                label = ident if isinstance(ident, str) and ident else f"#{position}"
                if not isinstance(ident, str) or not (_ID.match(ident) if key == "id" else ident):
                    self.problems.add(section, label, {key: [f"Missing or not a valid {key}."]})
                    continue
                if ident in seen:
                    self.problems.add(section, label, {key: [f"{ident!r} appears twice in the document."]})
                    continue
                seen.add(ident)
                if self.mode == "skip" and ident in self.existing[section]:
                    self.skipped[section] += 1
                    continue
                try:
                    record = checks[section](item)
                except HookgateError as exc:
                    self.problems.add(section, label, exc.details or exc.message)
                    continue
                self.records[section][ident] = record
        self.problems.raise_any()
        for destination in self.records["destinations"].values():
            self._references(destination)
        self.problems.raise_any()

    def _load(self, schema: Schema, data: dict[str, Any], **options: Any) -> dict[str, Any]:
        try:
            return schema.load(data, **options)
        except marshmallow.ValidationError as exc:
            raise ValidationError("invalid", exc.messages) from None

    def _policy(self, item: dict[str, Any]) -> dict[str, Any]:
        from .api.policies import PolicySchema

        loaded = self._load(PolicySchema(), {k: v for k, v in item.items() if k not in ("id", *_STAMPS)})
        return {"id": item["id"], **loaded, **self._stamps(item)}

    def _auth_profile(self, item: dict[str, Any]) -> dict[str, Any]:
        from .api.auth_profiles import SCHEMAS

        kind = item.get("type")
        if not isinstance(kind, str) or kind not in SCHEMAS:
            raise ValidationError("invalid", {"type": [f"Must be one of: {', '.join(SCHEMAS)}."]})
        scalars = SCALAR_SECRETS.get(kind, ())
        body = {k: v for k, v in item.items() if k not in ("id", "certificate_info", "secrets_needed", *_STAMPS)}
        given = [name for name in (*scalars, "secret", "secrets") if name in body]
        headers = body.get("headers") if kind == "headers" else None
        if isinstance(headers, list):
            given += [f"headers.{h.get('name')}" for h in headers
                      if isinstance(h, dict) and h.get("secret", True) and "value" in h]
        query = body.get("query")
        if isinstance(query, dict):
            given += [f"query.{name}" for name, value in query.items() if value is not None]
        if given:
            raise ValidationError("invalid", {name: ["Secrets are not imported: leave them out and re-enter "
                                                     "them after the import."] for name in given})
        listed = item.get("secrets_needed", [])
        allowed = {"url": {"password"}}.get(kind, set())
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise ValidationError("invalid", {"secrets_needed": ["A list of field names."]})
        # Check the shape with the API's schema, a placeholder standing in for each secret value.
        probe = dict(body)
        if isinstance(headers, list):
            probe["headers"] = [{**h, "value": "placeholder"} if isinstance(h, dict) and h.get("secret", True)
                                else h for h in headers]
        if isinstance(query, dict):
            probe["query"] = {name: "placeholder" for name in query}
        loaded = self._load(SCHEMAS[kind], probe, partial=scalars)
        record: dict[str, Any] = {"id": item["id"], **loaded, **self._stamps(item)}
        if "headers" in loaded:
            record["headers"] = [{"name": h["name"], "secret": True} if h["secret"] else h for h in loaded["headers"]]
        if "query" in loaded:
            record["query"] = {name: None for name in loaded["query"]}
        if isinstance(item.get("certificate_info"), dict):
            record["certificate_info"] = item["certificate_info"]
        needed = {n for n in scalars if n not in allowed} | (set(listed) & allowed)
        needed |= {"query"} if "query" in loaded else set()
        needed |= {"headers"} if any(h["secret"] for h in record.get("headers") or ()) else set()
        if kind in SIGNING_TYPES:
            needed.add("secret")
            record["secrets"] = []
        if kind == "url" and "password" in needed and not record.get("username"):
            raise ValidationError("invalid", {"username": ["A password needs a username."]})
        if kind == "url" and not (record.get("username") or record.get("query")):
            raise ValidationError("invalid", {"username": ["Give a username, query parameters, or both."]})
        if needed:
            record[NEEDS_SECRETS] = sorted(needed)
        current = self.existing["auth_profiles"].get(item["id"])
        if current is not None and _same(export_profile(current), export_profile(record)):
            return {**current, "name": record["name"], "updated_at": self.stamp}  # its secrets stay
        return record

    def _preset(self, item: dict[str, Any]) -> dict[str, Any]:
        loaded = self._load(_PresetData(), item)
        if self.catalog.builtin.get(loaded["name"]) is not None:
            raise ValidationError("invalid", {"name": [f"{loaded['name']!r} is a plugin's preset here."]})
        secret = [p["name"] for p in loaded["params"] if p["secret"] and p.get("default") is not None]
        if secret:
            raise ValidationError("invalid", {"params": [f"Secrets are not imported: {name} has a default."
                                                         for name in secret]})
        try:
            preset = Preset.from_data(loaded, origin="user")
        except (TypeError, ValueError) as exc:
            raise ValidationError("invalid", {"name": [str(exc)]}) from None
        preset.check_templates()
        return preset.to_data()

    def _destination(self, item: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in item.items() if k not in ("id", "preset", *_STAMPS, *_DISABLED)}
        loaded = self._load(DestinationSchema(), body)
        for name, source in (("template", loaded.get("template")),
                             ("batch.item_template", (loaded.get("batch") or {}).get("item_template")),
                             ("batch.root_template", (loaded.get("batch") or {}).get("root_template"))):
            if source is not None:
                validate_template(source, field=name)
        record: dict[str, Any] = {"id": item["id"], **loaded, **self._stamps(item)}
        if not loaded["enabled"]:
            record.update({k: item[k] for k in ("disabled_reason", "disabled_detail")
                           if isinstance(item.get(k), str) and len(item[k]) <= 2000})
        if item.get("preset") is not None:
            if not isinstance(item["preset"], dict):
                raise ValidationError("invalid", {"preset": ["Expected a JSON object."]})
            if "secrets" in item["preset"]:
                raise ValidationError("invalid", {"preset.secrets": [
                    "Secrets are not imported: leave them out and re-enter them after the import."]})
            state = self._load(_PresetState(), item["preset"])
            leaked = sorted(set(state["params"]) & set(state["secret_params"]))
            if leaked:
                raise ValidationError("invalid", {f"preset.params.{n}": ["A secret parameter: not imported."]
                                                  for n in leaked})
            for where, source in {"preset.path": state["path"],
                                  **{f"preset.headers.{k}": v for k, v in state["headers"].items()}}.items():
                validate_template(source, field=where)
            record["preset"] = self._preset_state(record, state)
        return record

    def _preset_state(self, record: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        """The stored preset state: the target's, secrets included, when it is the same one."""
        current = self.existing["destinations"].get(record["id"])
        if (current is not None and current.get("preset") and current.get("url") == record["url"]
                and _public_state(current["preset"]) == state):
            return current["preset"]
        needed = state.pop("secret_params")
        return {**state, "secrets": {}, **({NEEDS_SECRETS: needed} if needed else {})}

    def _stamps(self, item: dict[str, Any]) -> dict[str, Any]:
        created = item.get("created_at")
        return {"created_at": created if isinstance(created, int) and created > 0 else self.stamp,
                "updated_at": self.stamp}

    def _find(self, section: str, ident: str) -> dict[str, Any] | None:
        return self.records[section].get(ident) or self.existing[section].get(ident)

    def _references(self, destination: dict[str, Any]) -> None:
        ident = destination["id"]
        problems: dict[str, list[str]] = {}
        if destination.get("policy_id") and self._find("policies", destination["policy_id"]) is None:
            problems["policy_id"] = [f"No policy {destination['policy_id']!r} in the document or here."]
        fallback = destination.get("fail_destination_id")
        if fallback == ident:
            problems["fail_destination_id"] = ["A destination cannot be its own fail branch."]
        elif fallback and self._find("destinations", fallback) is None:
            problems["fail_destination_id"] = [f"No destination {fallback!r} in the document or here."]
        profile_id = destination.get("auth_profile_id")
        profile = self._find("auth_profiles", profile_id) if profile_id else None
        if profile_id and profile is None:
            problems["auth_profile_id"] = [f"No auth profile {profile_id!r} in the document or here."]
        elif profile is not None and not covers(profile["endpoint_prefix"], destination["url"]):
            problems["url"] = [f"Outside the auth profile's endpoint prefix {profile['endpoint_prefix']!r}."]
        if (self.https_only or destination.get("https_only")) and destination["url"].lower().startswith("http:"):
            problems["url"] = ["Only https URLs are allowed here (https_only)."]
        state = destination.get("preset")
        if state and state.get(NEEDS_SECRETS) and self.catalog.find(state["name"]) is None \
                and state["name"] not in self.records["presets"]:
            problems["preset"] = [f"Preset {state['name']!r} is not installed here, so its secret parameters "
                                  f"({', '.join(state[NEEDS_SECRETS])}) could not be re-entered."]
        if problems:
            self.problems.add("destinations", ident, problems)

    # ---- writing

    def _waiting(self, destination: dict[str, Any]) -> tuple[list[str], str | None]:
        """A destination's own secrets to re-enter, and the auth profile it waits for (if any)."""
        own = [f"params.{n}" for n in (destination.get("preset") or {}).get(NEEDS_SECRETS) or ()]
        profile_id = destination.get("auth_profile_id")
        profile = self._find("auth_profiles", profile_id) if profile_id else None
        return own, profile_id if profile is not None and profile.get(NEEDS_SECRETS) else None

    def _hold(self, destination: dict[str, Any], own: list[str], profile_id: str | None) -> dict[str, Any]:
        if not destination.get("enabled", True):
            return destination
        what = own + ([f"auth profile {profile_id}'s secrets"] if profile_id else [])
        return {**destination, "enabled": False, "disabled_reason": "needs_secrets", "disabled_at": self.stamp,
                "disabled_detail": f"re-enter {', '.join(what)}, then POST /v1/destinations/"
                                   f"{destination['id']}/enable"}

    def write(self) -> dict[str, Any]:
        needs: list[dict[str, Any]] = []
        for profile in self.records["auth_profiles"].values():
            if profile.get(NEEDS_SECRETS):
                needs.append({"kind": "auth_profile", "id": profile["id"], "name": profile["name"],
                              "fields": profile[NEEDS_SECRETS]})
        destinations = dict(self.records["destinations"])
        touched = set(self.records["auth_profiles"])
        for ident, current in self.existing["destinations"].items():  # the target's own, using a profile
            if ident not in destinations and current.get("auth_profile_id") in touched:  # left without secrets
                destinations[ident] = current
        held: dict[str, dict[str, Any]] = {}
        for ident, destination in destinations.items():
            own, profile_id = self._waiting(destination)
            if not own and not profile_id:
                if ident in self.records["destinations"]:
                    held[ident] = destination
                continue
            held[ident] = self._hold(destination, own, profile_id)
            entry = {"kind": "destination", "id": ident, "name": destination["name"], "fields": own}
            if profile_id:
                entry["auth_profile_id"] = profile_id
            needs.append(entry)
        with self.db.pipeline(transaction=True) as pipe:
            for policy in self.records["policies"].values():
                pipe.hset(keys.policies, policy["id"], json.dumps(policy))
            for profile in self.records["auth_profiles"].values():
                pipe.hset(keys.auth_profiles, profile["id"], json.dumps(profile))
                pipe.delete(keys.oauth_token(profile["id"]))
            for name, preset in self.records["presets"].items():
                pipe.hset(keys.presets, name, json.dumps(preset))
            for ident, destination in held.items():
                pipe.hset(keys.destinations, ident, json.dumps(destination))
                before = self.existing["destinations"].get(ident)
                if destination.get("enabled", True) and before is not None and not before.get("enabled", True):
                    # Enabled again, as DestinationStore.update does: its backlog is due, the breaker restarts.
                    pipe.zadd(keys.due, {ident: self.stamp}, lt=True)
                    pipe.zrem(keys.notify, ident)
                    pipe.delete(keys.failing_since(ident))
            bump_config(pipe)
            pipe.execute()
        return {
            "mode": self.mode,
            "imported": {s: len(self.records[s]) for s in SECTIONS},
            "replaced": {s: len(set(self.records[s]) & set(self.existing[s])) for s in SECTIONS},
            "skipped": self.skipped,
            "needs_secrets": needs,
        }


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for the name and the timestamps: the same credentials' binding."""
    cosmetic = ("name", *_STAMPS, "certificate_info")
    return ({k: v for k, v in a.items() if k not in cosmetic} == {k: v for k, v in b.items() if k not in cosmetic})
