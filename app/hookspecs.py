"""The hooks a hookgate plugin may implement (pluggy project name ``hookgate``).

A plugin is a module (or object) with functions marked ``@hookimpl``; hookgate's own presets in
``plugins/`` are written exactly like a third-party package's, which is found through the
``hookgate`` entry-point group::

    # pyproject.toml of a plugin package
    [project.entry-points.hookgate]
    acme = "hookgate_acme"

    # hookgate_acme.py
    from hookgate import Preset, hookimpl

    @hookimpl
    def register_presets(register):
        register(Preset(name="acme.notify", ...))

Every hook is optional. A function marked ``@hookimpl`` whose name is not a hook below stops
start-up (``check_pending``), so a misspelt hook is found at once, not when it silently never runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "hookgate"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_presets(register: Callable[[Any], None]) -> None:
    """Register destination presets by calling ``register(preset)`` once per ``hookgate.Preset``.

    One plugin may register many presets. Names are dotted, ``<family>.<what>`` (``slack.message``);
    a name registered twice stops start-up.
    """


@hookspec
def register_template_filters() -> dict[str, Callable[..., Any]] | None:
    """Return Jinja filters (name → function) for every template, user templates included.

    Templates are user code run in a sandbox: a filter must only compute on the values it is given
    (no I/O, no access to hookgate's state) and should be quick. A name that clashes with another
    plugin's filter or one of hookgate's own stops start-up.
    """


@hookspec
def register_template_globals() -> dict[str, Any] | None:
    """Return Jinja globals (name → value or function) for every template; the same rules as filters."""


@hookspec(firstresult=True)
def classify_response(preset: Any, response: Any, references: list[str]) -> Any:
    """Classify the answer to a request made for a destination built from ``preset``.

    ``response`` is an ``hookgate.delivery.http.Response`` (``status_code``, ``headers``, ``body``, ``json()``;
    ``status_code`` is None when nothing was answered). ``references`` are the event ids the request
    carried, in the order they were rendered: one for a single delivery, many for a batch.

    Return None to leave the answer to the next plugin and, in the end, to hookgate's rule (2xx
    delivered, 4xx error, 5xx bounced). Otherwise return an ``hookgate.Verdict``: its ``outcome``
    (``delivered``, ``error`` or ``bounced``; bounced is retried) holds for every event of the request,
    except those named in its ``items`` (event id → ``Verdict``), which is how a batch records
    per-message outcomes (CM.com answers per message inside one 200). Return it only for presets you
    registered: check ``preset.name``.
    """
