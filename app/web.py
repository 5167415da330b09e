"""Serving the API with gunicorn: the options shared by ``gunicorn.conf.py`` and ``hookgate web``."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]  # gunicorn ships no types

from .factory import create_app
from .logs import GunicornLogger

__all__ = ["gunicorn_options", "WebServer"]


def gunicorn_options(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    return {
        "bind": environ.get("HOOKGATE_BIND", "127.0.0.1:8000"),
        "workers": int(environ.get("HOOKGATE_WEB_WORKERS", 2 * multiprocessing.cpu_count() + 1)),
        "worker_class": "sync",
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": environ.get("HOOKGATE_ACCESS_LOG") or None,
        "errorlog": "-",
        "loglevel": environ.get("HOOKGATE_LOG_LEVEL", "info").lower(),
        "logger_class": GunicornLogger,  # HOOKGATE_LOG_FORMAT for gunicorn's own lines too
        # gunicorn's walls, above the API's own limits (api.MAX_URL_BYTES, MAX_HEADER_FIELDS,
        # MAX_HEADER_BYTES) so that what lies between gets hookgate's JSON 414/431. The request line
        # stays at 8190, gunicorn's maximum: past it the only setting is "unlimited", and its parser
        # copies the buffer on every read (a 4 MB line cost a worker 3 s of CPU). The header walls
        # are kept low for the same reason: fields x field size is what it buffers (2 MB here).
        "limit_request_line": 8190,
        "limit_request_fields": 128,
        "limit_request_field_size": 16384,
        # gunicorn >= 24 opens a control socket under ~/.gunicorn; hookgate does not use it.
        "control_socket_disable": True,
    }


class WebServer(BaseApplication):
    def __init__(self, options: dict[str, Any]):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if value is not None and key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app()
