"""Sources: who sends events in, and the ingest keys they authenticate with."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

import redis

from .errors import NotFound
from .store import bump_config, keys, new_id, now_ms

__all__ = ["SourceStore", "hash_key"]

KEY_PREFIX = "hgk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def public(source: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a source: never the key or its hash."""
    return {k: v for k, v in source.items() if k != "key_hashes"}


class SourceStore:
    def __init__(self, db: redis.Redis):
        self.db = db

    def create(self, name: str, kind: str) -> tuple[dict[str, Any], str]:
        """Returns the source and its ingest key; only the key's hash is stored."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        source = {
            "id": new_id("src"),
            "name": name,
            "kind": kind,
            "key_hint": key[:8] + "…",
            "key_hashes": [hash_key(key)],
            "created_at": now_ms(),
        }
        with self.db.pipeline() as pipe:
            pipe.hset(keys.sources, source["id"], json.dumps(source))
            bump_config(pipe)
            pipe.execute()
        return source, key

    def get(self, source_id: str) -> dict[str, Any]:
        raw = self.db.hget(keys.sources, source_id)
        if raw is None:
            raise NotFound(f"no source {source_id!r}", {"id": source_id})
        return json.loads(raw)

    def list(self) -> list[dict[str, Any]]:
        return sorted((json.loads(v) for v in self.db.hvals(keys.sources)), key=lambda s: s["id"])

    def delete(self, source_id: str) -> None:
        with self.db.pipeline() as pipe:
            pipe.hdel(keys.sources, source_id)
            bump_config(pipe)
            removed, _ = pipe.execute()
        if not removed:
            raise NotFound(f"no source {source_id!r}", {"id": source_id})

    @staticmethod
    def key_matches(source: dict[str, Any], key: str) -> bool:
        """Constant-time comparison against every valid key hash of the source."""
        given = hash_key(key)
        matched = False
        for stored in source.get("key_hashes", []):
            matched |= hmac.compare_digest(given, stored)
        return matched
