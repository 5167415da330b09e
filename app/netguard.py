"""The SSRF guard: outbound requests go only to global addresses, unless an operator allows a network.

The address that is checked is the address that is connected to: the HTTP adapter resolves the host
once, checks the address, and pins the connection pool to it (the ``Host`` header and TLS SNI keep
the name), so a DNS answer that changes between the check and the connect cannot redirect a request.
Answers are cached for ``_CACHE_TTL_S``, and the verdict on an address (for an allow-list) is
remembered, since every request checks the address it is about to use.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
import time

from .errors import BlockedDestination

__all__ = ["check_address", "resolve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges Python's ``is_global`` does not flag, but that reach internal networks or translate to them.
_EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "100.64.0.0/10",  # CGNAT (shared address space)
        "192.0.0.0/24",  # IETF protocol assignments
        "192.88.99.0/24",  # 6to4 relay anycast
        "64:ff9b::/96",  # NAT64: embeds an IPv4 address
        "64:ff9b:1::/48",  # local-use NAT64
        "2002::/16",  # 6to4: embeds an IPv4 address
        "2001::/32",  # Teredo
        "5f00::/16",  # segment routing
        "3fff::/20",  # documentation
    )
)

_CACHE_TTL_S = 10.0
_cache: dict[tuple[str, int], tuple[float, str]] = {}
_cache_lock = threading.Lock()


def _normalise(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def check_address(ip: IPAddress | str, allowed: tuple) -> None:
    """Raise ``BlockedDestination`` unless ``ip`` is global or inside an allowed network."""
    ip = _normalise(ipaddress.ip_address(ip))
    refusal = _refusal(ip, allowed)
    if refusal is not None:
        raise BlockedDestination(refusal, {"address": str(ip)})


def _refusal(ip: IPAddress, allowed: tuple) -> str | None:
    if any(ip in network for network in allowed if network.version == ip.version):
        return None
    if not ip.is_global or ip.is_multicast or any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version):
        return (f"refusing to connect to {ip}: not a global address "
                "(allow its network with HOOKGATE_ALLOWED_NETWORKS)")
    return None


@functools.lru_cache(maxsize=4096)
def _checked(address: str, allowed: tuple) -> tuple[str, str] | None:
    """``check_address`` for one resolved address, remembered: (message, address) of a refusal, or None."""
    ip = _normalise(ipaddress.ip_address(address))
    refusal = _refusal(ip, allowed)
    return None if refusal is None else (refusal, str(ip))


def resolve(host: str, port: int, allowed: tuple) -> str:
    """Resolve ``host`` once, check the address, and return it (the address to connect to)."""
    now = time.monotonic()
    cached = _cache.get((host, port))
    if cached and cached[0] > now:
        address = cached[1]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ConnectionError(f"cannot resolve {host!r}: {exc}") from None
        if not infos:
            raise ConnectionError(f"cannot resolve {host!r}")
        address = str(infos[0][4][0])  # an IPv4 or IPv6 sockaddr: (host, port, ...)
        with _cache_lock:
            if len(_cache) > 4096:
                _cache.clear()
            _cache[(host, port)] = (now + _CACHE_TTL_S, address)
    try:
        refusal = _checked(address, allowed)  # the same verdict as check_address(address, allowed)
    except TypeError:  # an allow-list that is not hashable (a list): not remembered
        check_address(address, allowed)
        return address
    if refusal is not None:
        raise BlockedDestination(refusal[0], {"address": refusal[1]})
    return address
