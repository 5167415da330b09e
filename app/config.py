"""Settings, read once from ``HOOKGATE_*`` environment variables.

Every setting hookgate reads lives here, with its default; the README's configuration table is
written from this module. Tests and ``create_app(test_config)`` override fields directly.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .tls import check_bundle

__all__ = ["Settings", "parse_addresses", "parse_duration", "parse_networks"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_duration(value: str | int | float) -> float:
    """``"7d"``, ``"90s"``, ``"250ms"`` or a plain number of seconds → seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_names(value: str) -> tuple[str, ...]:
    """``"a, b"`` → ``("a", "b")`` (sorted, so equal lists compare equal)."""
    return tuple(sorted({name.strip() for name in value.split(",") if name.strip()}))


def parse_positive(value: str | int) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, not {number}")
    return number


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r} (use true or false)")


def parse_addresses(value: str | tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """``"10.0.0.1:26379, sentinel-2:26379"`` → ``(("10.0.0.1", 26379), ("sentinel-2", 26379))``."""
    if isinstance(value, tuple):
        return value
    addresses = []
    for item in (part.strip() for part in value.split(",")):
        host, _, port = item.rpartition(":")
        if not item:
            continue
        if not host or not port.isdigit():
            raise ValueError(f"not host:port: {item!r}")
        addresses.append((host.strip("[]"), int(port)))
    return tuple(addresses)


DURABILITY = ("local", "replicated")


def parse_durability(value: str) -> str:
    if value.strip().lower() not in DURABILITY:
        raise ValueError(f"not one of {', '.join(DURABILITY)}: {value!r}")
    return value.strip().lower()


LOG_FORMATS = ("text", "json")


def parse_log_format(value: str) -> str:
    if value.strip().lower() not in LOG_FORMATS:
        raise ValueError(f"not a log format: {value!r} (use text or json)")
    return value.strip().lower()


def parse_networks(value: str | list[str] | tuple[Network, ...]) -> tuple[Network, ...]:
    """Comma-separated CIDRs (``"127.0.0.0/8, ::1/128"``) → networks."""
    if isinstance(value, tuple):
        return value
    items = value.split(",") if isinstance(value, str) else value
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())


@dataclasses.dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str | None = None
    redis_password: str | None = dataclasses.field(default=None, repr=False)  # never in a traceback or log
    durability: str = "local"
    durability_timeout_s: float = 0.5
    data_dir: str = "./var"
    admin_token: str | None = None
    secret_key: str | None = None
    max_body_bytes: int = 1024 * 1024
    allowed_networks: tuple[Network, ...] = ()
    event_retention_s: float = 7 * 86400.0
    queue_name: str = "hookgate"
    lease_s: float = 60.0
    drain_chunk: int = 100
    drain_budget_s: float = 5.0
    worker_concurrency: int = 256
    tick_interval_s: float = 1.0
    template_max_bytes: int = 256 * 1024
    template_timeout_s: float = 1.0
    log_level: str = "INFO"
    log_format: str = "text"
    signature_tolerance_s: float = 300.0
    smtp_url: str | None = None
    https_only: bool = False
    smtp_from: str = "hookgate@localhost"
    blocked_plugins: tuple[str, ...] = ()
    ca_bundle: str | None = None
    metrics_token: str | None = dataclasses.field(default=None, repr=False)  # GET /metrics wants it when set

    # name of the field → (environment variable, parser)
    ENV: ClassVar[dict[str, tuple[str, Callable[[str], Any]]]] = {
        "redis_url": ("HOOKGATE_REDIS_URL", str),
        "redis_sentinels": ("HOOKGATE_REDIS_SENTINELS", parse_addresses),
        "redis_sentinel_master": ("HOOKGATE_REDIS_SENTINEL_MASTER", str),
        "redis_password": ("HOOKGATE_REDIS_PASSWORD", str),
        "durability": ("HOOKGATE_DURABILITY", parse_durability),
        "durability_timeout_s": ("HOOKGATE_DURABILITY_TIMEOUT", parse_duration),
        "data_dir": ("HOOKGATE_DATA_DIR", str),
        "admin_token": ("HOOKGATE_ADMIN_TOKEN", str),
        "secret_key": ("HOOKGATE_SECRET_KEY", str),
        "max_body_bytes": ("HOOKGATE_MAX_BODY_BYTES", int),
        "allowed_networks": ("HOOKGATE_ALLOWED_NETWORKS", parse_networks),
        "event_retention_s": ("HOOKGATE_EVENT_RETENTION", parse_duration),
        "queue_name": ("HOOKGATE_QUEUE", str),
        "lease_s": ("HOOKGATE_LEASE", parse_duration),
        "drain_chunk": ("HOOKGATE_DRAIN_CHUNK", int),
        "drain_budget_s": ("HOOKGATE_DRAIN_BUDGET", parse_duration),
        "worker_concurrency": ("HOOKGATE_WORKER_CONCURRENCY", parse_positive),
        "tick_interval_s": ("HOOKGATE_TICK", parse_duration),
        "template_max_bytes": ("HOOKGATE_TEMPLATE_MAX_BYTES", int),
        "template_timeout_s": ("HOOKGATE_TEMPLATE_TIMEOUT", parse_duration),
        "log_level": ("HOOKGATE_LOG_LEVEL", str),
        "log_format": ("HOOKGATE_LOG_FORMAT", parse_log_format),
        "signature_tolerance_s": ("HOOKGATE_SIGNATURE_TOLERANCE", parse_duration),
        "smtp_url": ("HOOKGATE_SMTP_URL", str),
        "https_only": ("HOOKGATE_HTTPS_ONLY", parse_bool),
        "smtp_from": ("HOOKGATE_SMTP_FROM", str),
        "blocked_plugins": ("HOOKGATE_BLOCK_PLUGINS", parse_names),
        "ca_bundle": ("HOOKGATE_CA_BUNDLE", check_bundle),
        "metrics_token": ("HOOKGATE_METRICS_TOKEN", str),
    }

    def __post_init__(self) -> None:
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            raise ValueError("HOOKGATE_REDIS_SENTINELS and HOOKGATE_REDIS_SENTINEL_MASTER go together: "
                             "set both (the sentinels and the name of the primary they watch) or neither")
        if self.redis_sentinels and self.redis_url:
            raise ValueError("set HOOKGATE_REDIS_URL or HOOKGATE_REDIS_SENTINELS, not both")

    @property
    def external_store(self) -> bool:
        """Whether a store is configured (a URL or Sentinel); else `hookgate up` embeds one."""
        return bool(self.redis_url or self.redis_sentinels)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every ``HOOKGATE_*`` variable; ``overrides`` win over the environment."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, (var, parse) in cls.ENV.items():
            raw = environ.get(var)
            if raw is not None and raw != "":
                try:
                    values[field] = parse(raw)
                except ValueError as exc:
                    raise ValueError(f"{var}: {exc}") from None
        for field, value in overrides.items():
            if field not in cls.ENV:
                raise TypeError(f"unknown setting: {field}")
            parse = cls.ENV[field][1]
            values[field] = parse(value) if isinstance(value, str) and parse is not str else value
        return cls(**values)
