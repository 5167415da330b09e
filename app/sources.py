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

__all__ = ["SourceStore", "editable", "hash_key", "public"]

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


def editable(source: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The fields a POST would take that make the source as it is with ``changes`` (a PATCH's body)
    applied: what the source's schema checks whole. A signature's fields are changed one by one; its
    secret is never in it (stored encrypted: kept unless the changes give one)."""
    signature = source.get("signature")
    current = {"name": source["name"], "kind": source["kind"], "key_required": source.get("key_required", True),
               "signature": {k: v for k, v in signature.items() if k in ("type", "header", "timestamp_header")}
               if signature else None}
    merged = {**current, **changes}
    if isinstance(changes.get("signature"), dict) and current["signature"]:
        merged["signature"] = {**current["signature"], **changes["signature"]}
    return merged


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
        source["signature"] = self._signature(fields.get("signature"), shown_once)
        self._save(source)
        return source, shown_once

    def update(self, source_id: str, fields: dict[str, Any], *, signature_changed: bool) -> tuple[
            dict[str, Any], dict[str, str]]:
        """The source with ``fields`` (every field a POST takes, checked whole); its signature made
        again only when ``signature_changed``. Returns the source and what is shown once: a signing
        secret generated because the signature's type changed and none was given."""
        source = self.get(source_id)
        shown_once: dict[str, str] = {}
        source.update(name=fields["name"], kind=fields["kind"], key_required=fields["key_required"],
                      updated_at=now_ms())
        if signature_changed:
            source["signature"] = self._signature(fields.get("signature"), shown_once, source.get("signature"))
        self._save(source)
        return source, shown_once

    def _signature(self, signature: dict[str, Any] | None, shown_once: dict[str, str],
                   current: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A signature's record: the secret given (encrypted), else the current secrets when the type
        stays, else a new secret (shown once)."""
        if not signature:
            return None
        given = signature.get("secret")
        if not given and current and current["type"] == signature["type"]:
            secrets_, hint = current["secrets"], current["secret_hint"]
        else:
            secret = given or (new_whsec() if signature["type"] == "standard_webhooks" else new_hmac_secret())
            assert self.box is not None
            secrets_, hint = [self.box.encrypt(secret)], _given_hint(secret) if given else _hint(secret)
            if not given:
                shown_once["signing_secret"] = secret
        return {
            "type": signature["type"],
            "secret_hint": hint,
            "secrets": secrets_,
            **({"header": signature["header"], "timestamp_header": signature["timestamp_header"]}
               if signature["type"] == "hmac_sha256" else {}),
        }

    def _save(self, source: dict[str, Any]) -> None:
        with self.db.pipeline() as pipe:
            pipe.hset(keys.sources, source["id"], json.dumps(source))
            bump_config(pipe)
            pipe.execute()

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
            pipe.expire(keys.metrics_ingest(source_id), max(1, int(retention_s)))  # its /metrics counters
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
        self._save(source)
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
