"""One process's wiring: settings, Redis clients, the RQ queue, the router and the HTTP sender.

The web app builds one in ``create_app``; a worker builds one from the environment the first time a
job asks (``current()``), or a test installs its own with ``install()``.
"""

from __future__ import annotations

import threading
from functools import cached_property

import redis
from rq import Queue

from . import store
from .config import Settings
from .delivery.async_http import SyncBridge
from .plugins import Plugins, load
from .presets import PresetCatalog
from .routing import Router
from .secrets import SecretBox
from .tls import TrustStore
from .tls import install as install_trust

__all__ = ["Runtime", "current", "install"]


class Runtime:
    def __init__(self, settings: Settings) -> None:
        if not settings.external_store:
            raise RuntimeError(
                "HOOKGATE_REDIS_URL is not set: point it at Redis/Valkey (or HOOKGATE_REDIS_SENTINELS and "
                "HOOKGATE_REDIS_SENTINEL_MASTER at Sentinel), or run `hookgate up`, which starts an embedded server"
            )
        self.settings = settings
        # what every outbound TLS connection of this process trusts (the OS store + HOOKGATE_CA_BUNDLE)
        install_trust(TrustStore(settings.ca_bundle))

    @cached_property
    def db(self) -> redis.Redis:
        return store.open_store(self.settings)

    @cached_property
    def rq_connection(self) -> redis.Redis:
        return store.open_rq(self.settings)

    @cached_property
    def queue(self) -> Queue:
        return Queue(self.settings.queue_name, connection=self.rq_connection)

    @cached_property
    def secrets(self) -> SecretBox:
        return SecretBox(self.settings.secret_key)

    @cached_property
    def router(self) -> Router:
        return Router(self.db)

    @cached_property
    def plugins(self) -> Plugins:
        """Loaded when the runtime is built (``create_app``, a worker): a misspelt hook stops start-up."""
        return load(self.settings.blocked_plugins)

    def load_plugins(self) -> Plugins:
        """Load the plugins now rather than at first use: a misspelt hook or a clashing preset stops
        start-up (the web app, a worker) before any request or job is taken."""
        return self.plugins

    @property
    def presets(self) -> PresetCatalog:
        return PresetCatalog(self.db, self.plugins.presets)

    @cached_property
    def sender(self) -> SyncBridge:
        """The one sender of this process: deliveries, trials and notifications all go through it."""
        return SyncBridge(self.settings.allowed_networks, self.settings.worker_concurrency)

    def close(self) -> None:
        """Stop the sender's event loop and close its connections, if it was started."""
        sender = self.__dict__.pop("sender", None)
        if sender is not None:
            sender.close()


_lock = threading.Lock()
_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = Runtime(Settings.from_env())
    return _current
