"""hookgate: a webhook gateway.

This module is hookgate's public API: what a plugin package or an embedding application may import
and rely on. Everything else (``hookgate.delivery``, ``hookgate.store``, …) is internal and may
change between releases. ``tests/test_exported_members.py`` pins this list.

- ``create_app`` and ``Settings``: the Flask application factory and its settings.
- ``hookimpl``: the marker for a plugin's hook implementations (the hooks are in
  ``hookgate.hookspecs`` and in the README).
- ``Preset``, ``Param``, ``load_preset``: what ``register_presets`` registers.
- ``Verdict``: what ``classify_response`` returns; ``Response``: what it is given.
- ``PluginError``: raised at start-up by a plugin that breaks the rules.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .config import Settings
from .delivery.http import Response
from .factory import create_app
from .hookspecs import hookimpl
from .plugins import PluginError
from .presets import Param, Preset, Verdict, load_preset

try:
    __version__ = version("hookgate")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "Param",
    "PluginError",
    "Preset",
    "Response",
    "Settings",
    "Verdict",
    "__version__",
    "create_app",
    "hookimpl",
    "load_preset",
]
