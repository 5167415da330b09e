"""Destinations made from a preset: their parameters, secrets, and the request parts sent.

A destination made from a preset stores what it needs to send under ``destination["preset"]``:
the preset's name, base URL, path and header patterns, its public parameter values, and its secret
ones encrypted. At send time ``request_parts`` renders the URL and headers with the revealed values,
and gives the URL to log (secrets masked) and the ``Scrubber`` of its secrets.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import marshmallow

from .errors import ValidationError
from .headers import nested, preset_problems
from .preset_templates import preset_url, render_text
from .presets import MASK, URL_MASK, Preset, PresetCatalog
from .rendering import RenderError
from .scrub import Scrubber
from .secrets import SecretBox

__all__ = ["check_headers", "from_preset_body", "masked_params", "patch_preset_params", "preset_destination",
           "public_state", "request_parts", "resolve_params", "revealed_params"]


# -- parameters -------------------------------------------------------------------------------------

def resolve_params(preset: Preset, given: Any, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check ``given`` against the preset's parameters (422 with one message per parameter) and return
    every value, defaults filled in. ``current`` (the values a destination has) fills in what a
    change leaves out, so a PATCH need not repeat its secrets."""
    if not isinstance(given, dict):
        raise ValidationError("params must be a JSON object", {"params": ["Expected a JSON object."]})
    values = _checked_values(preset, given, {**(current or {}), **given})
    for p in preset.params:
        if p.name not in values and p.default is not None:
            values[p.name] = p.default
    if preset.check is not None and (more := preset.check(values)):
        raise ValidationError("invalid params: " + ", ".join(sorted(more)), {"params": more})
    return values


def _checked_values(preset: Preset, given: dict[str, Any], merged: dict[str, Any]) -> dict[str, Any]:
    """The values of ``merged`` (``given`` over the current ones) that are set, each checked by its
    parameter's field; one 422 naming every parameter of ``given`` the preset lacks and every bad value."""
    unknown = sorted(set(given) - {p.name for p in preset.params})
    schema = marshmallow.Schema.from_dict(
        {p.name: p.field() for p in preset.params}, name=f"Params_{preset.name}")()
    problems: dict[str, Any] = {name: ["Not a parameter of this preset."] for name in unknown}
    try:
        values = schema.load({k: v for k, v in merged.items() if k not in unknown and v is not None})
    except marshmallow.ValidationError as exc:
        problems.update(exc.messages if isinstance(exc.messages, dict) else {"_": exc.messages})
        values = {}
    if problems:
        raise ValidationError("invalid params: " + ", ".join(sorted(problems)), {"params": problems})
    return values


def masked_params(preset_state: dict[str, Any]) -> dict[str, Any]:
    """A destination's parameters as the API shows them: secrets masked."""
    return {**preset_state.get("params", {}), **{name: MASK for name in preset_state.get("secrets", {})}}


def preset_destination(preset: Preset, values: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    """The destination fields a preset gives for these parameter values (secrets encrypted)."""
    secret = {n: values[n] for n in preset.secret_names if values.get(n) not in (None, "")}
    state: dict[str, Any] = {
        "name": preset.name,
        "origin": preset.origin,
        "base_url": preset.base_url,
        "path": preset.path,
        "headers": dict(preset.headers),
        "params": {k: v for k, v in values.items() if k not in preset.secret_names},
        "secrets": {n: box.encrypt(json.dumps(v)) for n, v in secret.items()},
    }
    shown_url = preset_url(state, {**state["params"], **{n: URL_MASK for n in secret}})
    fields: dict[str, Any] = {"url": shown_url, "method": preset.method, "format": preset.format,
                              "template": preset.template, "timeout_s": preset.timeout_s, "preset": state}
    if preset.batch:
        size = values.get("batch_size") or preset.batch.get("size", 100)
        fields["batch"] = {"size": int(size), "max_wait_s": float(preset.batch.get("max_wait_s", 5.0)),
                           "item_template": preset.batch.get("item_template"),
                           "root_template": preset.batch.get("root_template")}
    return fields


def revealed_params(state: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    return {**state.get("params", {}), **{n: json.loads(box.decrypt(c)) for n, c in state.get("secrets", {}).items()}}


def request_parts(destination: dict[str, Any], box: SecretBox
                  ) -> tuple[str, str, dict[str, str], dict[str, Any], Scrubber]:
    """For sending a preset destination: the URL, the URL to log (secrets masked), the preset's
    headers, the parameter values the templates see, and the ``Scrubber`` of its secret parameters
    (each value, and a URL's path: the secret part of a webhook URL). Raises ``RenderError``."""
    state = destination["preset"]
    if state.get("needs_secrets"):  # imported without them: never send with a secret left empty
        raise RenderError("preset secrets were not re-entered after an import: " + ", ".join(state["needs_secrets"]))
    try:
        params = revealed_params(state, box)
    except RuntimeError as exc:
        raise RenderError(f"preset secrets: {exc}") from None
    masked = {**params, **{n: URL_MASK for n in state.get("secrets", {})}}
    headers = {name: render_text(source, params) for name, source in state.get("headers", {}).items()}
    headers = {k: v for k, v in headers.items() if v}  # an optional header left empty is not sent
    return (preset_url(state, params), preset_url(state, masked), headers, params,
            Scrubber(_secret_texts(state, params)))


def _secret_texts(state: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """A preset destination's secret parameter values (as text), and the path of those that are
    URLs (the path of a Slack or Zapier hook URL is what makes it secret)."""
    texts = []
    for name in state.get("secrets", {}):
        value = params[name] if isinstance(params[name], str) else json.dumps(params[name])
        texts.append(value)
        path = urlsplit(value).path
        if value.startswith(("http://", "https://")) and len(path) > 1:
            texts.append(path)
    return texts


# -- destinations made from presets -------------------------------------------------------------------

def from_preset_body(catalog: PresetCatalog, box: SecretBox,
                     body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{"preset": name, "params": {...}, ...destination fields}`` → the destination fields to check
    with the destination schema, and the preset state to store beside them. Fields given beside the
    preset (name, events, template, batch size, ...) win over the preset's."""
    name = body.get("preset")
    if not isinstance(name, str):
        raise ValidationError("preset must be a preset's name", {"preset": ["Expected a string."]})
    preset = catalog.find(name)
    if preset is None:
        raise ValidationError(f"no preset {name!r}", {"preset": [f"No preset {name!r}; see GET /v1/presets."]})
    if "url" in body:
        raise ValidationError("a preset destination takes its URL from the preset",
                              {"url": ["Set params.url to replace the preset's base URL."]})
    values = resolve_params(preset, body.get("params", {}))
    fields = _built(preset, values, box)
    state = fields.pop("preset")
    check_headers(state["headers"], values)
    given = {k: v for k, v in body.items() if k not in ("preset", "params")}
    if isinstance(given.get("batch"), dict) and fields.get("batch"):
        given["batch"] = {**fields["batch"], **given["batch"]}
    return {"name": preset.title, **fields, **given}, state


def patch_preset_params(catalog: PresetCatalog, box: SecretBox, destination: dict[str, Any],
                        changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A PATCH of a preset destination's ``params``: the secrets it leaves out are kept. Returns the
    changed destination fields (its URL) and the new preset state."""
    state = destination["preset"]
    preset = catalog.find(state["name"])
    if preset is None:
        raise ValidationError(f"preset {state['name']!r} is no longer installed: its params cannot change",
                              {"params": [f"No preset {state['name']!r}."]})
    if "url" in changes:
        raise ValidationError("a preset destination takes its URL from the preset",
                              {"url": ["Set params.url to replace the preset's base URL."]})
    given = changes.get("params")
    current = revealed_params(state, box)
    if isinstance(given, dict) and "url" in given and given["url"] != current.get("url"):
        # a new endpoint does not inherit secrets it was never given (as an import, and OAuth's token_url)
        current = {k: v for k, v in current.items() if k not in preset.secret_names}
    values = resolve_params(preset, given, current)
    fields = _built(preset, values, box)
    new_state = {**fields["preset"], "path": state["path"], "headers": state["headers"],
                 "base_url": state["base_url"]}
    check_headers(new_state["headers"], values)
    masked = {**new_state["params"], **{n: URL_MASK for n in new_state["secrets"]}}
    changed: dict[str, Any] = {"url": preset_url(new_state, masked)}
    if fields.get("batch") and destination.get("batch") and "batch_size" in (given or {}):
        changed["batch"] = {**destination["batch"], "size": fields["batch"]["size"]}
    return changed, new_state


def check_headers(patterns: dict[str, str], values: dict[str, Any]) -> None:
    """The preset's headers, rendered over these parameter values, keep the header rule (headers.py):
    a 422 naming each parameter that would break it (``params.<name>``), or the preset's header."""
    problems = preset_problems(patterns, values)
    if problems:
        raise ValidationError("invalid params: " + ", ".join(".".join(map(str, p)) for p in problems), nested(problems))


def _built(preset: Preset, values: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    try:
        return preset_destination(preset, values, box)
    except RenderError as exc:
        raise ValidationError(f"the preset's URL does not render with these params: {exc}",
                              {"params": [str(exc)]}) from None
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"invalid params: batch_size: {exc}", {"params": {"batch_size": [str(exc)]}}) from None


def public_state(state: dict[str, Any]) -> dict[str, Any]:
    """A destination's preset as the API shows it: name, origin, parameters with secrets masked."""
    shown = {"name": state["name"], "origin": state.get("origin"), "params": masked_params(state)}
    if state.get("needs_secrets"):
        shown["needs_secrets"] = state["needs_secrets"]
    return shown
