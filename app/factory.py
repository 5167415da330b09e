"""The application factory: ``create_app`` builds the Flask application (flaskr's shape)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from . import api, errors
from .config import Settings
from .runtime import Runtime

__all__ = ["create_app"]


def create_app(test_config: dict[str, Any] | Settings | None = None) -> Flask:
    """The application factory. ``test_config`` overrides settings read from the environment."""
    if isinstance(test_config, Settings):
        settings = test_config
    else:
        settings = Settings.from_env(**(test_config or {}))
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = Flask("hookgate", static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["hookgate"] = rt = Runtime(settings)
    rt.plugins  # load plugins now: a misspelt hook or a clashing preset stops start-up  # noqa: B018
    errors.init_app(app)
    api.init_app(app)
    return app
