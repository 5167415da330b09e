"""hookgate: a webhook gateway. ``create_app`` builds the Flask application."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from .config import Settings
from .runtime import Runtime

__all__ = ["create_app", "Settings"]


def create_app(test_config: dict[str, Any] | Settings | None = None) -> Flask:
    """The application factory. ``test_config`` overrides settings read from the environment."""
    if isinstance(test_config, Settings):
        settings = test_config
    else:
        settings = Settings.from_env(**(test_config or {}))
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    app.json.sort_keys = False
    app.extensions["hookgate"] = rt = Runtime(settings)
    rt.plugins  # load plugins now: a misspelt hook or a clashing preset stops start-up

    from . import api, errors

    errors.init_app(app)
    api.init_app(app)
    return app
