"""Every blueprint of the HTTP API, registered on the app, after the size check every request passes first.

Apart from ``api/__init__.py`` so that the blueprints can import the request helpers from the
package (``from . import load, runtime``) while the package imports none of them: the package is
complete before any blueprint module runs.
"""

from __future__ import annotations

from flask import Flask

from . import (
    admin_tokens,
    auth_profiles,
    check_request_size,
    deliveries,
    destinations,
    events,
    exchange,
    ingest,
    metrics,
    policies,
    presets,
    replays,
    sources,
    system,
    trials,
)

__all__ = ["init_app"]


def init_app(app: Flask) -> None:
    app.before_request(check_request_size)  # the app's own runs before any blueprint's (require_admin)
    for module in (system, ingest, sources, destinations, trials, deliveries, events, policies, replays, auth_profiles,
                   admin_tokens, presets, exchange, metrics):
        app.register_blueprint(module.bp)
