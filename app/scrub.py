"""Masking the secrets a request had in play out of everything made from it: one ``Scrubber``.

A secret leaves hookgate in the request that needs it and in no other way. But receivers echo what
they got (a debugging endpoint answers with the request's headers; a token endpoint's error repeats
the request), and client libraries name what they refused. So every text made from a request — its
attempt log and ``last_error``, outcome events, a trial's answer, an auth profile test's answer, a
log line — is scrubbed with the secrets that request had in play: the auth profile's credentials
(``auth_profiles.scrubber``), the OAuth access token as fetched, a preset's secret parameters,
signing secrets.

Each secret is looked for in every encoding it travels in:

- as text, each character as it is or escaped the way URLs and JSON escape it, in any mixture:
  percent-encoded UTF-8 (either case of hex: ``quote``, ``quote_plus``'s ``+`` for a space, and
  what yarl leaves decoded when it re-quotes a URL), a JSON escape (``\\u00fc``, ``\\"``, ``\\/``,
  Go's ``\\u0026``), and a non-ASCII character's UTF-8 bytes read as latin-1 (how a receiver that
  reads headers as latin-1 echoes a UTF-8 header). ASCII letters, digits and ``-._``, which none of
  these escapes, are looked for as they are: a run of them is what a text is searched for first, so a
  text without one costs a substring search, not a pattern match. This covers the raw secret inside
  any longer text, ``Bearer <token>``, a query value, a form field, a JSON string;
- base64, standard and URL-safe alphabets, of the secret and of its URL-encoded forms, from its UTF-8
  and latin-1 bytes: as a whole text, padded or not, and as the fragment that only the secret decides
  at each of the three alignments it can start at inside a longer base64 text (``Basic`` of
  ``user:password``, Twilio's ``account_sid:auth_token``, an echo that base64-encodes the request);
- for a ``user:password`` pair, the pair's base64 as a whole too (it catches a short password).

Found, each is replaced by ``MASK``. A secret shorter than 4 characters is not looked for as text (it
would garble whole messages), nor a base64 form shorter than 8. A text that was cut (a response body
read up to a limit) may end in the first part of a secret: ``cut=True`` masks that too.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import re
from collections.abc import Iterable
from typing import Any, overload
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "NOTHING", "Scrubber"]

MASK = "xxxxxx"  # as presets.URL_MASK: a scrubbed URL stays a URL, a header value a header value
SHORTEST = 4
SHORTEST_BASE64 = 8
_ENCODED_UP_TO = 8192  # longer secrets (a PEM key) are looked for as they are: nothing sends them encoded
_URLSAFE = str.maketrans("+/", "-_")


def _hex(byte: int) -> str:
    """A byte's two hex digits, either case."""
    return "".join(f"[{d}{d.lower()}]" if d.isalpha() else d for d in f"{byte:02X}")


_AS_IS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._")  # nothing escapes them


def _char(char: str) -> str:
    """A pattern for one character of a secret, as it is or escaped (see the module's docstring)."""
    if char in _AS_IS:
        return char if char.isalnum() else re.escape(char)
    utf8 = char.encode("utf-8", "surrogatepass")
    options = {re.escape(char), "".join("%" + _hex(b) for b in utf8),
               re.escape(json.dumps(char)[1:-1]), re.escape(json.dumps(char, ensure_ascii=False)[1:-1])}
    units = char.encode("utf-16-be", "surrogatepass")
    options.add("".join(r"\\u" + _hex(units[i]) + _hex(units[i + 1]) for i in range(0, len(units), 2)))
    if len(utf8) > 1:  # UTF-8 read as latin-1, each of those characters as it is or JSON-escaped
        options.add("".join(f"(?:{re.escape(chr(b))}|\\\\u00{_hex(b)})" for b in utf8))
    if char == " ":
        options.add(r"\+")
    if char == "/":
        options.add(r"\\/")
    return "(?:" + "|".join(sorted(options, key=len, reverse=True)) + ")"


@functools.lru_cache(maxsize=4096)
def _pattern(secret: str) -> tuple[str | None, re.Pattern[str]]:
    """The pattern of ``secret`` in its text encodings, and the longest run of it that every one of
    them writes as it is (None when it has no run of ``SHORTEST`` such characters)."""
    if len(secret) > _ENCODED_UP_TO:
        return secret, re.compile(re.escape(secret))
    runs = "".join(c if c in _AS_IS else " " for c in secret).split()
    anchor = max(runs, key=len, default="")
    return anchor if len(anchor) >= SHORTEST else None, re.compile("".join(_char(c) for c in secret))


def _base64(data: bytes) -> set[str]:
    """``data`` in base64 as a whole text (padded or not), and the fragment only ``data`` decides when
    it starts 0, 1 or 2 bytes into a longer encoded text (the first and last partial groups depend on
    the bytes around it)."""
    whole = base64.b64encode(data).decode()
    forms = {whole, whole.rstrip("=")}
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data).decode()
        forms.add(encoded[4 if shift else 0:(shift + len(data)) // 3 * 4])
    forms |= {form.translate(_URLSAFE) for form in forms}
    return {form for form in forms if len(form) >= SHORTEST_BASE64}


def _encoded(text: str) -> set[str]:
    """``text`` in base64 from its UTF-8 and (when it has them) latin-1 bytes."""
    forms = _base64(text.encode("utf-8", "surrogatepass"))
    with contextlib.suppress(UnicodeEncodeError):
        forms |= _base64(text.encode("latin-1"))
    return forms


@functools.lru_cache(maxsize=4096)
def _base64_forms(secret: str) -> frozenset[str]:
    if len(secret) > _ENCODED_UP_TO:
        return frozenset()
    return frozenset(form for text in {secret, quote(secret, safe=""), quote_plus(secret)} for form in _encoded(text))


@functools.lru_cache(maxsize=1024)
def _pair_forms(user: str, password: str) -> frozenset[str]:
    """``user:password`` in base64 as HTTP Basic sends it (RFC 7617), and as OAuth 2.0 client
    authentication does (each part form-encoded first, RFC 6749 2.3.1)."""
    pairs = {f"{user}:{password}", f"{quote_plus(user)}:{quote_plus(password)}"}
    return frozenset(form for pair in pairs for form in _encoded(pair))


def _plain_forms(secret: str) -> set[str]:
    """The common ways a secret is written out, for finding the first part of one at a cut."""
    escaped = json.dumps(secret)[1:-1]
    return {secret, quote(secret, safe=""), quote_plus(secret), escaped, json.dumps(secret, ensure_ascii=False)[1:-1]}


class Scrubber:
    """Masks a set of secrets, in every encoding they travel in, in texts, bytes and JSON values.
    Scrubbers add up (``a + b``: both sets); an empty one changes nothing and costs nothing."""

    __slots__ = ("_secrets", "_patterns", "_literals", "_starts")

    def __init__(self, secrets: Iterable[str | None] = (), pairs: Iterable[tuple[str | None, str | None]] = ()):
        kept = {s for s in secrets if s and len(s) >= SHORTEST}
        literals: set[str] = set()
        for secret in kept:
            literals |= _base64_forms(secret)
        for user, password in pairs:
            if password:
                literals |= _pair_forms(user or "", password)
        self._set(kept, literals)

    def _set(self, secrets: set[str], literals: set[str]) -> None:
        self._secrets = frozenset(secrets)
        ordered = sorted(secrets, key=lambda s: (-len(s), s))  # a secret inside another is masked with it
        self._patterns = tuple(_pattern(s) for s in ordered)
        self._literals = tuple(sorted(literals, key=lambda f: (-len(f), f)))
        self._starts: tuple[str, ...] | None = None  # made when a cut text needs them

    def __add__(self, other: Scrubber) -> Scrubber:
        if not other:
            return self
        if not self:
            return other
        both = Scrubber()
        both._set(set(self._secrets | other._secrets), {*self._literals, *other._literals})
        return both

    def __bool__(self) -> bool:
        return bool(self._patterns or self._literals)

    def __repr__(self) -> str:
        return f"Scrubber({len(self._secrets)} secrets)"  # never the secrets themselves

    @overload
    def text(self, text: str, *, cut: bool = False) -> str: ...

    @overload
    def text(self, text: None, *, cut: bool = False) -> None: ...

    def text(self, text: str | None, *, cut: bool = False) -> str | None:
        """``text`` with every secret masked; with ``cut``, also the first part of one it ends in."""
        if not text or not self:
            return text
        for anchor, pattern in self._patterns:
            if anchor is None or anchor in text:
                text = pattern.sub(MASK, text)
        for form in self._literals:
            if form in text:
                text = text.replace(form, MASK)
        return self._cut_tail(text) if cut else text

    def bytes(self, data: bytes, *, cut: bool = False) -> bytes:
        """``data`` with every secret masked (read as UTF-8; bytes that are not stay as they are)."""
        if not data or not self:
            return data
        return self.text(data.decode("utf-8", "surrogateescape"), cut=cut).encode("utf-8", "surrogateescape")

    def value(self, value: Any) -> Any:
        """A JSON-like value (dicts, lists, strings) with every string in it scrubbed, keys too."""
        if not self:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(item) for item in value]
        return value

    def _cut_tail(self, text: str) -> str:
        """``text`` with its end masked when it is the first ``SHORTEST`` or more characters of a
        secret written out (as it is, URL-encoded, JSON-escaped, or in base64)."""
        if self._starts is None:
            starts = {form for secret in self._secrets for form in _plain_forms(secret)} | set(self._literals)
            self._starts = tuple(sorted(starts, key=len, reverse=True))
        for form in self._starts:
            for size in range(min(len(form) - 1, len(text)), SHORTEST - 1, -1):
                if text.endswith(form[:size]):
                    return text[:-size] + MASK
        return text


NOTHING = Scrubber()
