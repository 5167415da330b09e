"""Sources: who sends events in, their ingest keys, and the signatures their requests must carry."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

import redis

from .errors import NotFound
from .secrets import SecretBox
from .signatures import new_hmac_secret, new_whsec
from .store import bump_config, keys, new_id, now_ms

__all__ = ["SourceStore", "hash_key", "public"]

KEY_PREFIX = "hgk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _hint(secret: str) -> str:
    """What identifies a key or secret hookgate generated: its first characters (its prefix and a
    few of 32 random bytes)."""
    return secret[:8] + "…"


def _given_hint(secret: str) -> str:
    """What is shown of a secret the user gave: not one of its characters (a user's secret may be
    guessable, or used elsewhere), only its length."""
    return f"given, {len(secret)} characters"


def public(source: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a source: never a key, a hash or a secret."""
    shown = {k: v for k, v in source.items() if k != "key_hashes"}
    if source.get("signature"):
        shown["signature"] = {k: v for k, v in source["signature"].items() if k != "secrets"}
    return shown


class SourceStore:
    def __init__(self, db: redis.Redis, box: SecretBox | None = None):
        self.db = db
        self.box = box

    def create(self, fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Returns the source and what is shown once: its ingest key, and a signing secret if any."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        shown_once = {"key": key}
        source = {
            "id": new_id("src"),
            "name": fields["name"],
            "kind": fields["kind"],
            "key_required": fields.get("key_required", True),
            "key_hint": _hint(key),
            "key_hashes": [hash_key(key)],
            "signature": None,
            "created_at": now_ms(),
        }
        signature = fields.get("signature")
        if signature:
            given = signature.get("secret")
            secret = given or (new_whsec() if signature["type"] == "standard_webhooks" else new_hmac_secret())
            assert self.box is not None
            source["signature"] = {
                "type": signature["type"],
                "secret_hint": _given_hint(secret) if given else _hint(secret),
                "secrets": [self.box.encrypt(secret)],
                **({"header": signature["header"], "timestamp_header": signature["timestamp_header"]}
                   if signature["type"] == "hmac_sha256" else {}),
            }
            if not given:
                shown_once["signing_secret"] = secret
        with self.db.pipeline() as pipe:
            pipe.hset(keys.sources, source["id"], json.dumps(source))
            bump_config(pipe)
            pipe.execute()
        return source, shown_once

    def get(self, source_id: str) -> dict[str, Any]:
        raw = self.db.hget(keys.sources, source_id)
        if raw is None:
            raise NotFound(f"no source {source_id!r}", {"id": source_id})
        return json.loads(raw)

    def all(self) -> list[dict[str, Any]]:
        return sorted((json.loads(v) for v in self.db.hvals(keys.sources)), key=lambda s: s["id"])

    def delete(self, source_id: str, retention_s: float) -> None:
        """Remove the source; its index of events goes when the newest of them does (``retention_s``:
        HOOKGATE_EVENT_RETENTION; the ticker trims only the indexes of sources that exist)."""
        with self.db.pipeline() as pipe:
            pipe.hdel(keys.sources, source_id)
            bump_config(pipe)
            pipe.expire(keys.source_events(source_id), max(1, int(retention_s)))
            removed = pipe.execute()[0]
        if not removed:
            raise NotFound(f"no source {source_id!r}", {"id": source_id})

    def signing_secrets(self, source: dict[str, Any]) -> list[str]:
        assert self.box is not None
        return [self.box.decrypt(token) for token in source["signature"]["secrets"]]

    def rotate_key(self, source_id: str, grace_s: float) -> tuple[dict[str, Any], str]:
        """A new ingest key; the current ones stay valid for ``grace_s`` (no downtime while senders
        switch over). Returns the source and the new key (shown once)."""
        source = self.get(source_id)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = now_ms()
        until = now + int(grace_s * 1000)
        kept = []
        for entry in source.get("key_hashes", []):
            stored, expires = (entry, None) if isinstance(entry, str) else (entry["hash"], entry.get("expires_at"))
            if expires is None or expires > now:
                kept.append({"hash": stored, "expires_at": min(expires or until, until)})
        source["key_hashes"] = [hash_key(key)] + (kept if grace_s > 0 else [])
        source["key_hint"] = _hint(key)
        source["key_rotated_at"] = now
        with self.db.pipeline() as pipe:
            pipe.hset(keys.sources, source_id, json.dumps(source))
            bump_config(pipe)
            pipe.execute()
        return source, key

    @staticmethod
    def key_matches(source: dict[str, Any], key: str) -> bool:
        """Constant-time comparison against every valid key hash of the source (a rotated-out key
        until its grace period ends)."""
        given = hash_key(key)
        now = now_ms()
        matched = False
        for entry in source.get("key_hashes", []):
            stored, expires = (entry, None) if isinstance(entry, str) else (entry["hash"], entry.get("expires_at"))
            matched |= hmac.compare_digest(given, stored) and (expires is None or expires > now)
        return matched
