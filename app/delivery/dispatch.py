"""Authenticating and sending one request: the ``authenticate → send`` steps of a delivery.

The destination's auth profile is applied (credentials only under its endpoint prefix), an OAuth
token refused with a 401 is replaced once, ``https_only`` is enforced, and what is kept never
shows a credential: the URL without the profile's userinfo, and the answer (error text, body,
headers: a receiver may echo the request) scrubbed of every secret the request had in play — a
preset's and the auth profile's, the OAuth access token as fetched — in every encoding
(``scrub.py``). A drain job and a trial send through here alike.
"""

from __future__ import annotations

from typing import Any

from ..auth_profiles import AuthProfileStore
from ..errors import DeliveryError
from ..outbound_auth import apply_auth, handle_unauthorized
from ..runtime import Runtime
from ..scrub import NOTHING, Scrubber
from ..tls import Trust
from .http import RESPONSE_LIMIT, Response

__all__ = ["Dispatcher"]


class Dispatcher:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self.db = rt.db
        self.settings = rt.settings

    def send(self, destination: dict[str, Any], method: str, url: str, headers: dict[str, str],
             body: bytes | None, event_id: str, log_url: str | None = None,
             hidden: Scrubber = NOTHING) -> tuple[Response, str]:
        """Send, with the destination's auth profile applied (and one retry with a fresh OAuth
        token on a 401). Returns the response, scrubbed of ``hidden`` (the caller's secrets: a
        preset's) and of the profile's credentials, and the URL to log (never one with
        credentials): ``log_url`` when the caller's URL carries a preset's secrets."""
        response, shown_url, used = self._send(destination, method, url, headers, body, event_id, log_url or url)
        return _scrubbed(response, hidden + used), shown_url

    def _send(self, destination: dict[str, Any], method: str, url: str, headers: dict[str, str],
              body: bytes | None, event_id: str, log_url: str) -> tuple[Response, str, Scrubber]:
        timeout = float(destination["timeout_s"])
        if (self.settings.https_only or destination.get("https_only")) and not url.lower().startswith("https:"):
            return Response(None, error="refused: only https URLs are allowed (https_only)",
                            error_kind="invalid"), log_url, NOTHING
        profile_id = destination.get("auth_profile_id")
        own_ca = destination.get("ca_certificate")
        if not profile_id:
            return self.rt.sender.send(method, url, headers, body, timeout,
                                       trust=Trust((own_ca,)) if own_ca else None), log_url, NOTHING
        profile = AuthProfileStore(self.db, self.rt.secrets).find(profile_id)
        if profile is None:
            return Response(None, error="its auth profile was deleted", error_kind="invalid"), log_url, NOTHING
        response, safe_url, used = self._authenticated(profile, method, url, headers, body, event_id, timeout, own_ca)
        return response, safe_url if safe_url is not None and log_url == url else log_url, used

    def _authenticated(self, profile: dict[str, Any], method: str, url: str, headers: dict[str, str],
                       body: bytes | None, event_id: str, timeout: float,
                       own_ca: str | None) -> tuple[Response, str | None, Scrubber]:
        """Send with the profile's credentials, once more with fresh ones if a 401 says the ones it
        had are stale (OAuth). Returns the response, the URL without credentials (None when the
        credentials could not be had, and nothing was sent) and the scrubber of those credentials."""
        used = NOTHING
        for first in (True, False):
            try:
                prepared = apply_auth(profile, self.rt.secrets, self.db, method=method, url=url, headers=dict(headers),
                                      body=body, event_id=event_id,
                                      allowed_networks=self.settings.allowed_networks, timeout=timeout)
            except DeliveryError as exc:
                kind = "auth" if (exc.details or {}).get("retryable") else "invalid"
                return Response(None, error=f"auth: {exc.message}", error_kind=kind), None, used
            used += prepared.scrubber  # both tokens, when a 401 brought a fresh one
            response = self.rt.sender.send(method, prepared.url, prepared.headers, body, timeout,
                                           trust=_with_ca(prepared.trust, own_ca))
            if not (first and response.status_code == 401 and handle_unauthorized(profile, self.db, prepared)):
                break
        return response, prepared.safe_url, used


def _scrubbed(response: Response, hidden: Scrubber) -> Response:
    """``response`` with ``hidden``'s secrets masked in all it kept (a body read up to the limit
    may end in part of one). All of it is looked through once; most answers hold no secret."""
    if not hidden:
        return response
    cut = len(response.body) * 4 >= RESPONSE_LIMIT  # up to 4 bytes a character: maybe cut
    everything = "\n".join([response.error or "", response.body, *response.headers, *response.headers.values()])
    if not cut and hidden.text(everything) == everything:
        return response
    response.error = hidden.text(response.error)
    response.body = hidden.text(response.body, cut=cut)
    response.headers = {hidden.text(k): hidden.text(v) for k, v in response.headers.items()}
    return response


def _with_ca(trust: Trust | None, ca_pem: str | None) -> Trust | None:
    """The profile's trust plus the destination's own ``ca_certificate``."""
    if not ca_pem:
        return trust
    if trust is None:
        return Trust((ca_pem,))
    return Trust((ca_pem, *trust.ca_pems), trust.client_cert, trust.client_key)
