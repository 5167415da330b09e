"""Admin tokens: stored as SHA-256 hashes, shown once, listed masked, revocable.

``HOOKGATE_ADMIN_TOKEN`` stays valid as the bootstrap token (it lives in the environment, not in
Redis); tokens made through the API live in ``hookgate:admin_tokens`` (id → record) and
``hookgate:admin_token_hashes`` (hash → id), so checking a token is one HGET.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

import redis

from .errors import NotFound
from .store import keys, new_id, now_ms

__all__ = ["AdminTokenStore"]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AdminTokenStore:
    def __init__(self, db: redis.Redis):
        self.db = db

    def create(self, name: str) -> tuple[dict[str, Any], str]:
        token = "hga_" + secrets.token_urlsafe(32)
        record: dict[str, Any] = {"id": new_id("adm"), "name": name, "hint": token[:8] + "…", "created_at": now_ms()}
        with self.db.pipeline() as pipe:
            pipe.hset(keys.admin_tokens, record["id"], json.dumps({**record, "hash": _hash(token)}))
            pipe.hset(keys.admin_token_hashes, _hash(token), record["id"])
            pipe.execute()
        return record, token

    def all(self) -> list[dict[str, Any]]:
        records = (json.loads(raw) for raw in self.db.hvals(keys.admin_tokens))
        return sorted(({k: v for k, v in r.items() if k != "hash"} for r in records), key=lambda r: r["id"])

    def revoke(self, token_id: str) -> None:
        raw = self.db.hget(keys.admin_tokens, token_id)
        if raw is None:
            raise NotFound(f"no admin token {token_id!r}", {"id": token_id})
        with self.db.pipeline() as pipe:
            pipe.hdel(keys.admin_token_hashes, json.loads(raw)["hash"])
            pipe.hdel(keys.admin_tokens, token_id)
            pipe.execute()

    def valid(self, token: str) -> bool:
        return self.db.hexists(keys.admin_token_hashes, _hash(token))
