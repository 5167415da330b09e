"""The application factory: ``create_app`` builds the Flask application (flaskr's shape)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from . import errors
from .api import blueprints
from .config import Settings
from .logs import configure_logging
from .runtime import Runtime

__all__ = ["create_app"]


def create_app(test_config: dict[str, Any] | Settings | None = None) -> Flask:
    """The application factory. ``test_config`` overrides settings read from the environment."""
    settings = test_config if isinstance(test_config, Settings) else Settings.from_env(**(test_config or {}))
    configure_logging(settings)
    app = Flask("hookgate", static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["hookgate"] = rt = Runtime(settings)
    rt.load_plugins()
    errors.init_app(app)
    blueprints.init_app(app)
    return app
