"""Authenticating and sending one request: the ``authenticate → send`` steps of a delivery.

The destination's auth profile is applied (credentials only under its endpoint prefix), an OAuth
token refused with a 401 is replaced once, ``https_only`` is enforced, and what is logged never
shows a credential: the URL without the profile's userinfo, and a preset's secrets masked in the
error text and the echoed answer. A drain job and a trial send through here alike.
"""

from __future__ import annotations

from typing import Any

from ..auth_profiles import AuthProfileStore
from ..errors import DeliveryError
from ..outbound_auth import apply_auth, handle_unauthorized
from ..preset_destinations import scrub
from ..runtime import Runtime
from ..tls import Trust
from .http import Response

__all__ = ["Dispatcher"]


class Dispatcher:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.db = rt.db
        self.settings = rt.settings

    def send(self, destination: dict[str, Any], method: str, url: str, headers: dict[str, str],
             body: bytes | None, event_id: str, log_url: str | None = None,
             hidden: tuple[str, ...] = ()) -> tuple[Response, str]:
        """Send, with the destination's auth profile applied (and one retry with a fresh OAuth
        token on a 401). Returns the response and the URL to log (never one with credentials):
        ``log_url`` when the caller's URL carries a preset's secrets, which ``hidden`` lists so that
        an error text (a connection error names the URL) does not show them."""
        response, shown_url = self._send(destination, method, url, headers, body, event_id, log_url or url)
        if hidden:  # a connection error names the URL; a receiver may echo the request
            response.error = scrub(response.error, hidden)
            response.body = scrub(response.body, hidden) or ""
            response.headers = {k: scrub(v, hidden) or "" for k, v in response.headers.items()}
        return response, shown_url

    def _send(self, destination: dict[str, Any], method: str, url: str, headers: dict[str, str],
              body: bytes | None, event_id: str, log_url: str) -> tuple[Response, str]:
        timeout = float(destination["timeout_s"])
        if (self.settings.https_only or destination.get("https_only")) and not url.lower().startswith("https:"):
            return Response(None, error="refused: only https URLs are allowed (https_only)",
                            error_kind="invalid"), log_url
        profile_id = destination.get("auth_profile_id")
        own_ca = destination.get("ca_certificate")
        if not profile_id:
            return self.rt.sender.send(method, url, headers, body, timeout,
                                       trust=Trust((own_ca,)) if own_ca else None), log_url
        profile = AuthProfileStore(self.db, self.rt.secrets).find(profile_id)
        if profile is None:
            return Response(None, error="its auth profile was deleted", error_kind="invalid"), log_url
        response, safe_url = self._authenticated(profile, method, url, headers, body, event_id, timeout, own_ca)
        return response, safe_url if safe_url is not None and log_url == url else log_url

    def _authenticated(self, profile: dict[str, Any], method: str, url: str, headers: dict[str, str],
                       body: bytes | None, event_id: str, timeout: float,
                       own_ca: str | None) -> tuple[Response, str | None]:
        """Send with the profile's credentials, once more with fresh ones if a 401 says the ones it
        had are stale (OAuth). Returns the response and the URL without credentials (None when the
        credentials could not be had, and nothing was sent)."""
        for first in (True, False):
            try:
                prepared = apply_auth(profile, self.rt.secrets, self.db, method=method, url=url, headers=dict(headers),
                                      body=body, event_id=event_id,
                                      allowed_networks=self.settings.allowed_networks, timeout=timeout)
            except DeliveryError as exc:
                kind = "auth" if (exc.details or {}).get("retryable") else "invalid"
                return Response(None, error=f"auth: {exc.message}", error_kind=kind), None
            response = self.rt.sender.send(method, prepared.url, prepared.headers, body, timeout,
                                           trust=_with_ca(prepared.trust, own_ca))
            if not (first and response.status_code == 401 and handle_unauthorized(profile, self.db, prepared)):
                break
        return response, prepared.safe_url


def _with_ca(trust: Trust | None, ca_pem: str | None) -> Trust | None:
    """The profile's trust plus the destination's own ``ca_certificate``."""
    if not ca_pem:
        return trust
    if trust is None:
        return Trust((ca_pem,))
    return Trust((ca_pem, *trust.ca_pems), trust.client_cert, trust.client_key)
