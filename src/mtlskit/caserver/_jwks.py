"""The issuers' key sets for ``[[provisioners]]``: a static JWKS file, or OIDC discovery.

IO for the pure ``verify_token``. Each key set is fetched once and kept; a token whose
``kid`` is not in it (the issuer rotated its keys) makes one refetch, at most once per
``refresh_interval`` per issuer, so a stream of tokens with made-up ``kid`` values costs
the issuer one request per interval, not one per token. Discovery is https, or http to
a loopback address only (a test or a sidecar issuer): keys fetched in clear text from
elsewhere would let anyone on the path mint identities (``fetchable``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from mtlskit.issue._provisioner import OidcProvisioner, fetchable

__all__ = ["JwksCache", "JwksUnavailable"]

MAX_DOCUMENT: Final = 1024 * 1024
TIMEOUT: Final = 5.0


class JwksUnavailable(Exception):
    """The issuer's keys could not be had: the CA's problem (503), not the token holder's."""


def _get(url: str) -> dict[str, Any]:
    if not fetchable(url):
        raise JwksUnavailable(f"{url}: only https (or http to loopback) is fetched")
    try:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as http:
            response = http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise JwksUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200 or len(response.content) > MAX_DOCUMENT:
        raise JwksUnavailable(f"{url}: HTTP {response.status_code}, {len(response.content)} B")
    try:
        document = response.json()
    except ValueError:
        raise JwksUnavailable(f"{url}: not JSON") from None
    if not isinstance(document, dict):
        raise JwksUnavailable(f"{url}: not a JSON object")
    return document


@dataclass(slots=True, kw_only=True)
class _Entry:
    jwks: dict[str, Any]
    refreshed: float | None = None  # the last refetch an unknown kid asked for


class JwksCache:
    """Key sets by provisioner source; thread-safe (verification runs off the event loop)."""

    def __init__(self, *, base: Path, refresh_interval: float = 30.0) -> None:
        self._base = base
        self._interval = refresh_interval
        self._entries: dict[tuple[str, str | None], _Entry] = {}
        self._lock = threading.Lock()

    def _load(self, p: OidcProvisioner) -> dict[str, Any]:
        if p.jwks is not None:
            path = self._base / p.jwks
            try:
                document = json.loads(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise JwksUnavailable(f"{path}: {exc}") from None
        else:
            discovery = _get(p.issuer.rstrip("/") + "/.well-known/openid-configuration")
            if discovery.get("issuer") != p.issuer:
                raise JwksUnavailable(
                    f"discovery of {p.issuer} names issuer {discovery.get('issuer')!r}"
                )
            uri = discovery.get("jwks_uri")
            if not isinstance(uri, str):
                raise JwksUnavailable(f"discovery of {p.issuer} has no jwks_uri")
            document = _get(uri)
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise JwksUnavailable(f"{p.name}: the JWKS has no 'keys' list")
        return document

    def keys(self, p: OidcProvisioner, *, refresh: bool = False) -> tuple[dict[str, Any], bool]:
        """(the key set, whether it was fetched just now). ``refresh`` asks for a fresh copy,
        granted once per interval (the first fetch does not count: a rotation right after
        start is picked up)."""
        source = (p.issuer, p.jwks)
        with self._lock:
            entry = self._entries.get(source)
            now = time.monotonic()
            if entry is None:
                entry = self._entries[source] = _Entry(jwks=self._load(p))
                return entry.jwks, True
            if not refresh or (
                entry.refreshed is not None and now - entry.refreshed < self._interval
            ):
                return entry.jwks, False
            entry.refreshed = now  # counted even if the fetch fails: the issuer is spared
            entry.jwks = self._load(p)
            return entry.jwks, True
