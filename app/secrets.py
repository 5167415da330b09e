"""Secrets at rest: encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``).

The key comes from ``HOOKGATE_SECRET_KEY`` (``hookgate up`` generates one into the data directory).
Several comma-separated keys rotate: the first encrypts, any of them decrypts.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import ValidationError

__all__ = ["SecretBox", "generate_key"]


def generate_key() -> str:
    return Fernet.generate_key().decode()


def _fernet(key: str) -> Fernet:
    key = key.strip()
    try:
        return Fernet(key.encode())
    except ValueError:
        # Not a Fernet key: derive one (use a long random string).
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


class SecretBox:
    def __init__(self, keys: str | None):
        parts = [k for k in (keys or "").split(",") if k.strip()]
        self._box = MultiFernet([_fernet(k) for k in parts]) if parts else None

    @property
    def ready(self) -> bool:
        return self._box is not None

    def encrypt(self, plaintext: str) -> str:
        if self._box is None:
            raise ValidationError(
                "hookgate cannot store secrets: HOOKGATE_SECRET_KEY is not set",
                {"secret": ["Set HOOKGATE_SECRET_KEY (hookgate up generates one)."]},
            )
        return self._box.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        if self._box is None:
            raise RuntimeError("HOOKGATE_SECRET_KEY is not set: stored secrets cannot be read")
        try:
            return self._box.decrypt(token.encode()).decode()
        except InvalidToken:
            raise RuntimeError("a stored secret does not decrypt with HOOKGATE_SECRET_KEY") from None
