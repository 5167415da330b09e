"""A test PKI made with ``cryptography``, and a real HTTPS receiver on 127.0.0.1 (client certificates).

``PKI`` holds a CA, a server certificate for 127.0.0.1/localhost, a client certificate, an expired client
certificate and a client certificate from another CA (all EC P-256, PEM strings and files).
``TLSReceiver`` is ``tests.receiver.Receiver`` behind ``ssl.SSLContext`` with ``verify_mode=CERT_REQUIRED``
(or ``CERT_NONE``); ``peers`` lists the client certificates it accepted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .receiver import Received, Receiver, Reply

_NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Pair:
    cert: str  # PEM
    key: str  # PEM (PKCS#8, unencrypted)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(name: str = "hookgate test CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - dt.timedelta(days=1)).not_valid_after(_NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], common_name: str, *, server: bool,
          not_before: dt.datetime | None = None, not_after: dt.datetime | None = None) -> Pair:
    """A leaf certificate signed by ``ca``: for a server (SAN 127.0.0.1 and localhost) or a client."""
    ca_cert, ca_key = ca
    key = _key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_before or _NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or _NOW + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    return Pair(_pem(builder.sign(ca_key, hashes.SHA256())), _pem_key(key))


class PKI:
    """Everything the TLS tests need, with files under ``directory``."""

    def __init__(self, directory: Path):
        ca = make_ca()
        self.ca_pem = _pem(ca[0])
        self.server = issue(ca, "127.0.0.1", server=True)
        self.client = issue(ca, "hookgate client", server=False)
        self.expired_client = issue(ca, "expired client", server=False,
                                    not_before=_NOW - dt.timedelta(days=10),
                                    not_after=_NOW - dt.timedelta(days=1))
        self.future_client = issue(ca, "future client", server=False, not_before=_NOW + dt.timedelta(days=1),
                                   not_after=_NOW + dt.timedelta(days=10))
        self.stranger = issue(make_ca("another CA"), "stranger", server=False)
        self.ca_file = directory / "ca.pem"
        self.server_cert_file = directory / "server.crt"
        self.server_key_file = directory / "server.key"
        self.ca_file.write_text(self.ca_pem)
        self.server_cert_file.write_text(self.server.cert)
        self.server_key_file.write_text(self.server.key)


class TLSReceiver(Receiver):
    """An HTTPS receiver. With ``require_client_cert`` the handshake fails unless the client presents
    a certificate the test CA signed and that is valid now. The handshake happens in the accept loop,
    where ``peers`` and ``handshake_failures`` are counted; with ``handshake_per_connection`` it happens
    in each connection's own thread instead (nothing is counted), so that one slow client never holds
    up the others."""

    def __init__(self, pki: PKI, reply: Callable[[Received], Reply] | None = None, *,
                 require_client_cert: bool = True, handshake_per_connection: bool = False):
        super().__init__(reply)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.server_cert_file, pki.server_key_file)
        if require_client_cert:
            context.load_verify_locations(pki.ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=not handshake_per_connection)
        self.url = f"https://127.0.0.1:{self.port}"
        self.peers: list[dict] = []
        self.handshake_failures = 0
        if handshake_per_connection:
            return
        accept = self.server.get_request

        def get_request():
            try:
                connection, address = accept()  # the TLS handshake happens here
            except ssl.SSLError:
                self.handshake_failures += 1
                raise
            self.peers.append(connection.getpeercert() or {})
            return connection, address

        self.server.get_request = get_request  # type: ignore[method-assign]
