"""The plugin manager: hookgate's built-in plugins and anyone's, loaded the same way.

Built-ins live in ``plugins/`` (``slack``, ``zapier``, ``meta``, ``sms``); third-party plugins are
packages with an entry point in the ``hookgate`` group. ``HOOKGATE_BLOCK_PLUGINS`` names plugins
(built-in module names or entry-point names) not to load. ``check_pending()`` runs before anything is
used, so a function marked ``@hookimpl`` under a name that is no hook stops start-up.

One process loads its plugins once per block list (``load``); what they register (presets, template
filters and globals) is collected into a ``Plugins`` registry.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
from typing import Any

import pluggy

from . import hookspecs
from .errors import TemplateError
from .presets import Preset, Verdict
from .rendering import BUILTIN_NAMES, install_extensions

__all__ = ["BUILTIN_PLUGINS", "ENTRY_POINT_GROUP", "PluginError", "Plugins", "load"]

log = logging.getLogger(__name__)

BUILTIN_PLUGINS = ("slack", "zapier", "meta", "sms")
ENTRY_POINT_GROUP = "hookgate"


class PluginError(RuntimeError):
    """A plugin cannot be loaded: a misspelt hook, a clashing name, a bad preset."""


class Plugins:
    def __init__(self, manager: pluggy.PluginManager):
        self.manager = manager
        self.presets: dict[str, Preset] = {}
        self.filters: dict[str, Any] = {}
        self.globals: dict[str, Any] = {}
        for plugin_name, plugin in manager.list_name_plugin():
            if plugin is not None:  # None: a name HOOKGATE_BLOCK_PLUGINS blocked
                self._collect(plugin_name or "?", plugin)
        self.activate()
        for preset in self.presets.values():
            try:
                preset.check_templates()
            except TemplateError as exc:
                raise PluginError(f"plugin {preset.origin!r}: preset {preset.name!r}: {exc.message}") from None

    def _collect(self, plugin_name: str, plugin: Any) -> None:
        caller = self.manager.subset_hook_caller  # call one plugin's hooks only: errors name their plugin
        others = [p for p in self.manager.get_plugins() if p is not plugin]
        found: list[Preset] = []
        caller("register_presets", others)(register=found.append)
        for preset in found:
            if not isinstance(preset, Preset):
                raise PluginError(f"plugin {plugin_name!r} registered {preset!r}, not a hookgate.Preset")
            if preset.name in self.presets:
                raise PluginError(f"plugin {plugin_name!r}: preset {preset.name!r} is registered twice")
            preset.origin = plugin_name
            self.presets[preset.name] = preset
        for kind, target in (("register_template_filters", self.filters), ("register_template_globals", self.globals)):
            for extensions in caller(kind, others)():
                for name, value in (extensions or {}).items():
                    if name in target or name in BUILTIN_NAMES:
                        raise PluginError(f"plugin {plugin_name!r}: template name {name!r} is taken")
                    target[name] = value

    def activate(self) -> None:
        """Make these plugins' filters and globals the ones every template sees (once per change)."""
        global _active
        if _active is not self:
            install_extensions(self.filters, self.globals)
            _active = self

    def names(self) -> list[str]:
        """The loaded plugins' names (not the blocked ones)."""
        return sorted(name for name, plugin in self.manager.list_name_plugin() if name and plugin is not None)

    def classify(self, preset: Preset, response: Any, references: list[str]) -> Verdict | None:
        verdict = self.manager.hook.classify_response(preset=preset, response=response, references=references)
        if verdict is not None:
            _check_verdict(preset.name, verdict)
            for item in verdict.items.values():
                _check_verdict(preset.name, item)
        return verdict


def _check_verdict(name: str, verdict: Any) -> None:
    """A verdict hookgate can act on: a ``Verdict`` (items too), a retry delay that is a number of seconds."""
    if not isinstance(verdict, Verdict) or not isinstance(verdict.items, dict):
        raise PluginError(f"classify_response for {name!r} returned {verdict!r}, not a Verdict")
    wait = verdict.retry_after_s
    if wait is not None and (isinstance(wait, bool) or not isinstance(wait, (int, float)) or not math.isfinite(wait)
                             or wait < 0):
        raise PluginError(f"classify_response for {name!r}: retry_after_s {wait!r} is not a number of seconds")
    if verdict.reason is not None and not isinstance(verdict.reason, str):
        raise PluginError(f"classify_response for {name!r}: reason {verdict.reason!r} is not text")


def make_manager(blocked: tuple[str, ...] = (), *, entry_points: bool = True,
                 extra: tuple[Any, ...] = ()) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for name in blocked:
        manager.set_blocked(name)
    for name in BUILTIN_PLUGINS:
        if not manager.is_blocked(name):
            manager.register(importlib.import_module(f"hookgate.builtin_plugins.{name}"), name=name)
    if entry_points:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra:
        manager.register(plugin)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r}: {exc}") from None
    return manager


_active: Plugins | None = None


@functools.lru_cache(maxsize=8)
def _load(blocked: tuple[str, ...], extra: tuple[Any, ...]) -> Plugins:
    plugins = Plugins(make_manager(blocked, extra=extra))
    log.info("plugins: %s; presets: %s", ", ".join(plugins.names()), ", ".join(sorted(plugins.presets)))
    return plugins


def load(blocked: tuple[str, ...] = (), extra: tuple[Any, ...] = ()) -> Plugins:
    """The plugins of this process (built-ins, entry points, ``extra``), loaded once per block list;
    their template filters and globals are the ones in use after this call."""
    plugins = _load(blocked, extra)
    plugins.activate()
    return plugins


load.cache_clear = _load.cache_clear  # type: ignore[attr-defined]  # tests load plugins afresh
