"""Which certificate authorities an outbound TLS connection trusts, as one ``ssl.SSLContext`` each.

An https request (a delivery, a trial, a notification, an OAuth 2.0 token request, a profile probe)
trusts, together:

1. the operating system's trust store, through ``truststore`` (on Linux: OpenSSL's default
   locations, which ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` override; the Keychain on macOS; the
   Windows store). certifi's list is not used, and neither is ``REQUESTS_CA_BUNDLE``;
2. the PEM bundle ``HOOKGATE_CA_BUNDLE`` names, when set (checked at start-up);
3. for that request only: the destination's ``ca_certificate`` and its auth profile's
   ``ca_certificate``, when they have one.

A request with none of these that meets a certificate from an unknown CA fails closed: the
handshake is refused and the attempt is a connection failure. An mTLS profile's client certificate
goes into the context too; its private key is read from memory (a ``memfd`` on Linux), never from a
file left on disk.

Contexts are made once per combination and kept (urllib3 keys its connection pools by context, and
loading the system store costs milliseconds), at most ``_KEPT`` of them.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import truststore

__all__ = ["Trust", "TrustStore", "check_bundle", "check_ca", "context", "install"]

_KEPT = 256


@dataclass(frozen=True)
class Trust:
    """What one request adds to the trust every request has: CA certificates (PEM) and a client pair."""

    ca_pems: tuple[str, ...] = ()
    client_cert: str | None = field(default=None, repr=False)
    client_key: str | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return bool(self.ca_pems or self.client_cert)


def check_ca(pem: str) -> None:
    """Raise ``ValueError`` unless ``pem`` holds PEM certificates OpenSSL will take as trust anchors
    (a destination's or an auth profile's ``ca_certificate``)."""
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError, TypeError):
        raise ValueError("Not a PEM certificate.") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("Not a PEM certificate.")


def check_bundle(path: str) -> str:
    """``HOOKGATE_CA_BUNDLE``: a readable file that OpenSSL accepts as a PEM CA bundle."""
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{path}: not a readable PEM bundle of CA certificates ({exc})") from None
    return path


class TrustStore:
    """The contexts of one process, for one ``HOOKGATE_CA_BUNDLE``."""

    def __init__(self, ca_bundle: str | None = None):
        self.ca_bundle = ca_bundle
        self._contexts: OrderedDict[Trust, ssl.SSLContext] = OrderedDict()
        self._lock = threading.Lock()

    def context(self, trust: Trust | None = None) -> ssl.SSLContext:
        trust = trust or Trust()
        with self._lock:
            made = self._contexts.get(trust)
            if made is not None:
                self._contexts.move_to_end(trust)
                return made
        made = self._make(trust)
        with self._lock:
            self._contexts[trust] = made
            while len(self._contexts) > _KEPT:
                self._contexts.popitem(last=False)
        return made

    def _make(self, trust: Trust) -> ssl.SSLContext:
        made = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca_bundle:
            made.load_verify_locations(cafile=self.ca_bundle)
        for pem in trust.ca_pems:
            made.load_verify_locations(cadata=pem)
        if trust.client_cert and trust.client_key:
            with _in_memory(trust.client_cert) as cert_path, _in_memory(trust.client_key) as key_path:
                made.load_cert_chain(cert_path, key_path)
        return made


@contextlib.contextmanager
def _in_memory(text: str) -> Iterator[str]:
    """A path OpenSSL can read ``text`` from: an anonymous memory file where the system has them
    (Linux), otherwise a 0600 file in a fresh 0700 directory, removed as soon as it was read."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("hookgate-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, text.encode())
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="hookgate-tls-") as folder:
        path = Path(folder) / "material.pem"
        path.touch(mode=0o600)
        path.write_text(text)
        yield str(path)


_installed = TrustStore()


def install(store: TrustStore) -> None:
    """Make ``store`` the process's (the runtime does, with ``HOOKGATE_CA_BUNDLE``)."""
    global _installed
    _installed = store


def context(trust: Trust | None = None) -> ssl.SSLContext:
    """The installed store's context for ``trust`` (None: only what every request trusts)."""
    return _installed.context(trust)
