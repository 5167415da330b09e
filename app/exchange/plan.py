"""Checking a document: each item through the schemas and rules the API uses, every problem collected.

``check_document`` answers a ``Plan``: by section and id, the records an import would write (as
stored: stamps set, secrets left out and marked ``needs_secrets``), and how many items it skips. Any
problem — an item's shape, a template, a reference to something neither the document nor the target
has — is one 422 naming each item, before anything is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import marshmallow
import redis
from marshmallow import Schema, fields, validate

from ..auth_profiles import SCALAR_SECRETS, SCHEMAS, SIGNING_TYPES, covers
from ..destinations import DISABLED_FIELDS, check_templates
from ..errors import HookgateError, ValidationError
from ..headers import check_saved, nested, preset_problems
from ..presets import NAME, PARAM_NAME, Preset, PresetCatalog, PresetSchema
from ..rendering import validate_template
from ..schemas import DestinationSchema, PolicySchema
from ..store import keys, now_ms
from .export import NEEDS_SECRETS, VERSION, export_profile, exported_state

__all__ = ["MODES", "SECTIONS", "Plan", "check_document"]

MODES = ("overwrite", "skip")
SECTIONS = ("policies", "auth_profiles", "presets", "destinations")
IDENTIFIED_BY = {"policies": "id", "auth_profiles": "id", "presets": "name", "destinations": "id"}
STAMPS = ("created_at", "updated_at")
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_NOT_IMPORTED = "Secrets are not imported: leave them out and re-enter them after the import."
_PLACEHOLDER = "placeholder"  # stands in for a secret value left out, to check a profile with the API's schema


# -- the document's shape ------------------------------------------------------------------------------

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


class Problems:
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


def check_document(db: redis.Redis, catalog: PresetCatalog, document: Any, *, mode: str,
                   https_only: bool) -> Plan:
    """The checked plan of an import of ``document``; a 422 (nothing written) for any problem."""
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
    plan = Plan(db, catalog, doc, mode, https_only)
    plan.check()
    return plan


def _load(schema: Schema, data: dict[str, Any], **options: Any) -> dict[str, Any]:
    try:
        return schema.load(data, **options)
    except marshmallow.ValidationError as exc:
        raise ValidationError("invalid", exc.messages) from None


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for the name and the timestamps: the same credentials' binding."""
    cosmetic = ("name", *STAMPS, "certificate_info")
    return ({k: v for k, v in a.items() if k not in cosmetic} == {k: v for k, v in b.items() if k not in cosmetic})


# -- an auth profile, which comes without its secrets ----------------------------------------------------

def _given_secrets(kind: str, body: dict[str, Any]) -> list[str]:
    """The secret fields an item gives (an export never has them): each one is refused."""
    given = [name for name in (*SCALAR_SECRETS.get(kind, ()), "secret", "secrets") if name in body]
    headers = body.get("headers") if kind == "headers" else None
    if isinstance(headers, list):
        given += [f"headers.{h.get('name')}" for h in headers
                  if isinstance(h, dict) and h.get("secret", True) and "value" in h]
    query = body.get("query")
    if isinstance(query, dict):
        given += [f"query.{name}" for name, value in query.items() if value is not None]
    return given


def _listed_secrets(item: dict[str, Any]) -> list[str]:
    listed = item.get("secrets_needed", [])
    if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
        raise ValidationError("invalid", {"secrets_needed": ["A list of field names."]})
    return listed


def _with_placeholders(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with a placeholder for each secret header and query value, which the schema requires."""
    probe = dict(body)
    headers = body.get("headers") if kind == "headers" else None
    if isinstance(headers, list):
        probe["headers"] = [{**h, "value": _PLACEHOLDER} if isinstance(h, dict) and h.get("secret", True)
                            else h for h in headers]
    if isinstance(body.get("query"), dict):
        probe["query"] = {name: _PLACEHOLDER for name in body["query"]}
    return probe


def _without_secrets(loaded: dict[str, Any]) -> dict[str, Any]:
    """The loaded fields with the placeholders gone: a secret header keeps its name, a query its names."""
    record = dict(loaded)
    if "headers" in loaded:
        record["headers"] = [{"name": h["name"], "secret": True} if h["secret"] else h for h in loaded["headers"]]
    if "query" in loaded:
        record["query"] = {name: None for name in loaded["query"]}
    return record


def _secrets_to_enter(kind: str, listed: list[str], record: dict[str, Any]) -> set[str]:
    """The fields the profile waits for. A url profile's password is optional: needed when the export
    says so; every other type's scalar secret always is."""
    allowed = {"url": {"password"}}.get(kind, set())
    needed = {n for n in SCALAR_SECRETS.get(kind, ()) if n not in allowed} | (set(listed) & allowed)
    needed |= {"query"} if "query" in record else set()
    needed |= {"headers"} if any(h["secret"] for h in record.get("headers") or ()) else set()
    if kind in SIGNING_TYPES:
        needed.add("secret")
    return needed


def _check_url_profile(record: dict[str, Any], needed: set[str]) -> None:
    """The rules ``AuthProfileStore`` applies to a whole url profile, on what the import knows of it."""
    if "password" in needed and not record.get("username"):
        raise ValidationError("invalid", {"username": ["A password needs a username."]})
    if not (record.get("username") or record.get("query")):
        raise ValidationError("invalid", {"username": ["Give a username, query parameters, or both."]})


def _check_preset_headers(state: dict[str, Any]) -> None:
    """A preset state's headers keep the header rule as written, and rendered over its parameters (a
    placeholder for each secret one, checked again when it is re-entered)."""
    check_saved(state["headers"], ("preset", "headers"))
    values = {**state["params"], **{name: _PLACEHOLDER for name in state["secret_params"]}}
    problems = preset_problems(state["headers"], values)
    if problems:
        raise ValidationError("invalid", nested({(path if path[0] == "preset" else ("preset", *path)): messages
                                                 for path, messages in problems.items()}))


class Plan:
    """What an import would write, by section and id, once ``check`` found no problem."""

    def __init__(self, db: redis.Redis, catalog: PresetCatalog, doc: dict[str, Any], mode: str,
                 https_only: bool):
        self.db, self.catalog, self.doc, self.mode, self.https_only = db, catalog, doc, mode, https_only
        self.problems = Problems()
        self.stamp = now_ms()
        hashes = {"policies": keys.policies, "auth_profiles": keys.auth_profiles, "presets": keys.presets,
                  "destinations": keys.destinations}
        # What the target has, by section and id (the store's connections decode replies: str keys).
        self.existing: dict[str, dict[str, dict[str, Any]]] = {
            section: {str(k): json.loads(v) for k, v in db.hgetall(key).items()} for section, key in hashes.items()}
        # What each section will hold by id once written (only the items the import writes).
        self.records: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in SECTIONS}
        self.skipped = {s: 0 for s in SECTIONS}

    def find(self, section: str, ident: str) -> dict[str, Any] | None:
        """The item as it will be: the document's, else the target's."""
        return self.records[section].get(ident) or self.existing[section].get(ident)

    # ---- checking

    def check(self) -> None:
        checks: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "policies": self._policy, "auth_profiles": self._auth_profile, "presets": self._preset,
            "destinations": self._destination}
        for section in SECTIONS:
            seen: set[str] = set()
            for position, item in enumerate(self.doc[section]):
                self._take(section, position, item, seen, checks[section])
        self.problems.raise_any()
        for destination in self.records["destinations"].values():
            problems = self._reference_problems(destination)
            if problems:
                self.problems.add("destinations", destination["id"], problems)
        self.problems.raise_any()

    def _take(self, section: str, position: int, item: dict[str, Any], seen: set[str],
              check: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """One item: its id, then (unless skipped) its record, or its problems."""
        key = IDENTIFIED_BY[section]
        ident = item.get(key)
        label = ident if isinstance(ident, str) and ident else f"#{position}"
        if not isinstance(ident, str) or not (_ID.match(ident) if key == "id" else ident):
            self.problems.add(section, label, {key: [f"Missing or not a valid {key}."]})
            return
        if ident in seen:
            self.problems.add(section, label, {key: [f"{ident!r} appears twice in the document."]})
            return
        seen.add(ident)
        if self.mode == "skip" and ident in self.existing[section]:
            self.skipped[section] += 1
            return
        try:
            self.records[section][ident] = check(item)
        except HookgateError as exc:
            self.problems.add(section, label, exc.details or exc.message)

    def _stamps(self, item: dict[str, Any]) -> dict[str, Any]:
        created = item.get("created_at")
        return {"created_at": created if isinstance(created, int) and created > 0 else self.stamp,
                "updated_at": self.stamp}

    def _policy(self, item: dict[str, Any]) -> dict[str, Any]:
        loaded = _load(PolicySchema(), {k: v for k, v in item.items() if k not in ("id", *STAMPS)})
        return {"id": item["id"], **loaded, **self._stamps(item)}

    def _auth_profile(self, item: dict[str, Any]) -> dict[str, Any]:
        """The profile as stored, its secrets left out and named in ``needs_secrets``; the target's own
        (secrets kept) when it is the same one but for its name."""
        kind = item.get("type")
        if not isinstance(kind, str) or kind not in SCHEMAS:
            raise ValidationError("invalid", {"type": [f"Must be one of: {', '.join(SCHEMAS)}."]})
        body = {k: v for k, v in item.items() if k not in ("id", "certificate_info", "secrets_needed", *STAMPS)}
        given = _given_secrets(kind, body)
        if given:
            raise ValidationError("invalid", {name: [_NOT_IMPORTED] for name in given})
        listed = _listed_secrets(item)
        loaded = _load(SCHEMAS[kind], _with_placeholders(kind, body), partial=SCALAR_SECRETS.get(kind, ()))
        record: dict[str, Any] = {"id": item["id"], **_without_secrets(loaded), **self._stamps(item)}
        if isinstance(item.get("certificate_info"), dict):
            record["certificate_info"] = item["certificate_info"]
        needed = _secrets_to_enter(kind, listed, record)
        if kind in SIGNING_TYPES:
            record["secrets"] = []
        if kind == "url":
            _check_url_profile(record, needed)
        if needed:
            record[NEEDS_SECRETS] = sorted(needed)
        current = self.existing["auth_profiles"].get(item["id"])
        if current is not None and _same(export_profile(current), export_profile(record)):
            return {**current, "name": record["name"], "updated_at": self.stamp}  # its secrets stay
        return record

    def _preset(self, item: dict[str, Any]) -> dict[str, Any]:
        loaded = _load(PresetSchema(), item)
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
        body = {k: v for k, v in item.items() if k not in ("id", "preset", *STAMPS, *DISABLED_FIELDS)}
        loaded = _load(DestinationSchema(), body)
        check_templates(loaded)
        record: dict[str, Any] = {"id": item["id"], **loaded, **self._stamps(item)}
        if not loaded["enabled"]:
            record.update({k: item[k] for k in ("disabled_reason", "disabled_detail")
                           if isinstance(item.get(k), str) and len(item[k]) <= 2000})
        if item.get("preset") is not None:
            record["preset"] = self._preset_state(record, item["preset"])
        return record

    def _preset_state(self, record: dict[str, Any], given: Any) -> dict[str, Any]:
        """The stored preset state: the target's, secrets included, when it is the same one; else the
        exported one, its secret parameters to re-enter."""
        if not isinstance(given, dict):
            raise ValidationError("invalid", {"preset": ["Expected a JSON object."]})
        if "secrets" in given:
            raise ValidationError("invalid", {"preset.secrets": [_NOT_IMPORTED]})
        state = _load(_PresetState(), given)
        leaked = sorted(set(state["params"]) & set(state["secret_params"]))
        if leaked:
            raise ValidationError("invalid", {f"preset.params.{n}": ["A secret parameter: not imported."]
                                              for n in leaked})
        for where, source in {"preset.path": state["path"],
                              **{f"preset.headers.{k}": v for k, v in state["headers"].items()}}.items():
            validate_template(source, field=where)
        _check_preset_headers(state)
        current = self.existing["destinations"].get(record["id"])
        if (current is not None and current.get("preset") and current.get("url") == record["url"]
                and exported_state(current["preset"]) == state):
            return current["preset"]
        needed = state.pop("secret_params")
        return {**state, "secrets": {}, **({NEEDS_SECRETS: needed} if needed else {})}

    # ---- references, once every item is known

    def _reference_problems(self, destination: dict[str, Any]) -> dict[str, list[str]]:
        """What a destination names must exist (in the document or here), its URL lie under its auth
        profile's prefix and be https when required, and a preset it must get secrets for be installed."""
        return {**self._link_problems(destination), **self._profile_problems(destination),
                **self._https_problems(destination), **self._preset_problems(destination)}

    def _link_problems(self, destination: dict[str, Any]) -> dict[str, list[str]]:
        problems: dict[str, list[str]] = {}
        if destination.get("policy_id") and self.find("policies", destination["policy_id"]) is None:
            problems["policy_id"] = [f"No policy {destination['policy_id']!r} in the document or here."]
        fallback = destination.get("fail_destination_id")
        if fallback == destination["id"]:
            problems["fail_destination_id"] = ["A destination cannot be its own fail branch."]
        elif fallback and self.find("destinations", fallback) is None:
            problems["fail_destination_id"] = [f"No destination {fallback!r} in the document or here."]
        return problems

    def _profile_problems(self, destination: dict[str, Any]) -> dict[str, list[str]]:
        profile_id = destination.get("auth_profile_id")
        if not profile_id:
            return {}
        profile = self.find("auth_profiles", profile_id)
        if profile is None:
            return {"auth_profile_id": [f"No auth profile {profile_id!r} in the document or here."]}
        if not covers(profile["endpoint_prefix"], destination["url"]):
            return {"url": [f"Outside the auth profile's endpoint prefix {profile['endpoint_prefix']!r}."]}
        return {}

    def _https_problems(self, destination: dict[str, Any]) -> dict[str, list[str]]:
        if (self.https_only or destination.get("https_only")) and destination["url"].lower().startswith("http:"):
            return {"url": ["Only https URLs are allowed here (https_only)."]}
        return {}

    def _preset_problems(self, destination: dict[str, Any]) -> dict[str, list[str]]:
        state = destination.get("preset")
        if state and state.get(NEEDS_SECRETS) and self.catalog.find(state["name"]) is None \
                and state["name"] not in self.records["presets"]:
            return {"preset": [f"Preset {state['name']!r} is not installed here, so its secret parameters "
                               f"({', '.join(state[NEEDS_SECRETS])}) could not be re-entered."]}
        return {}
