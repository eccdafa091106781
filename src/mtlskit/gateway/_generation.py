"""Everything a reload replaces, built whole from the files and swapped in one assignment.

A ``Generation`` holds the TLS context (OpenSSL's gate), the ``Verifier``
(mtlskit's gate), the policy and the forwarding formats. A connection keeps the
TLS session it started with, but its next request is decided again under the newest
generation (its chain re-verified, the new policy applied); new connections take it. A reload that
fails (a bad CRL, a typo in the policy) is logged and the old generation stays.
"""

from __future__ import annotations

import itertools
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509

from mtlskit.authz import Policy
from mtlskit.certs import Fingerprint, chain_pem, load_certificates
from mtlskit.errors import ConfigError
from mtlskit.files import check_secret_permissions, read_bytes
from mtlskit.forward import ForwardConfig, XfccConfig, is_spoofable
from mtlskit.gateway._config import ClientAuthMode, GatewayConfig
from mtlskit.gateway._http import KINDS_LIMIT, gateway_owned, header_kind
from mtlskit.gateway._tls import server_context
from mtlskit.identity import san_entries
from mtlskit.trustfiles import parse_pin
from mtlskit.verify import TrustStore, VerificationCache, Verifier, load_crl, parse_spiffe_bundle

__all__ = ["Generation", "file_stamps", "load_generation", "watched_files"]

_NUMBERS: Final = itertools.count(1)
_CERT_SUFFIXES: Final = (".pem", ".crt", ".cer", ".der")


@dataclass(frozen=True, slots=True, kw_only=True)
class Generation:
    number: int
    context: ssl.SSLContext
    verifier: Verifier
    cache: VerificationCache
    policy: Policy | None
    forward: ForwardConfig
    mode: ClientAuthMode
    stamps: tuple[tuple[str, float, int], ...]
    server_cert: x509.Certificate | None = None  # the leaf, for the ASGI TLS extension
    # ``header_kind`` per request header name under this generation's sanitized names,
    # for the keep-alive fast path (``fast_upstream_head``): the same few names recur.
    header_kinds: dict[bytes, int] = field(default_factory=dict, compare=False)
    # ``sanitize``'s verdict per request header name: the lower-cased name to keep, or
    # ``b""`` for one a client may not send. Both memos live as long as the generation.
    kept_names: dict[bytes, bytes] = field(default_factory=dict, compare=False)

    @property
    def require_client_cert(self) -> bool:
        return self.mode is ClientAuthMode.REJECT_INVALID

    def sanitize(
        self, headers: Iterable[tuple[bytes, bytes]], *, lower: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """``headers`` without the identity names a client may not send (``forward``'s rule).

        Also without the client-address names the gateway owns (``gateway_owned``: it
        writes its own X-Forwarded-For). ``lower``: names lower-cased as well, as an ASGI
        scope has them, in the same pass.
        The verdict per name is memoized (``kept_names``): the same few names recur on
        every request, and deciding each afresh was ~3% of a relayed request.
        """
        memo = self.kept_names
        out = []
        for name, value in headers:
            kept = memo.get(name)
            if kept is None:
                kept = b"" if self._client_may_not_send(name) else name.lower()
                if len(memo) < KINDS_LIMIT:
                    memo[name] = kept
            if kept:
                out.append((kept, value) if lower else (name, value))
        return out

    def _client_may_not_send(self, name: bytes) -> bool:
        """An identity header (``forward``'s rule) or one the gateway owns (``GATEWAY_SET``)."""
        return is_spoofable(name, self.forward.sanitized_names) or gateway_owned(name)

    def classify_header(self, name: bytes) -> int:
        """``header_kind`` for a name not yet in ``header_kinds``; memoized, bounded."""
        kind = header_kind(name, spoofable=self._client_may_not_send(name))
        if len(self.header_kinds) < KINDS_LIMIT:
            self.header_kinds[name] = kind
        return kind


def _expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given; directories contribute their certificate files, sorted."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix.lower() in _CERT_SUFFIXES)
        else:
            out.append(path)
    return out


def watched_files(config: GatewayConfig) -> list[Path]:
    auth = config.client_auth
    files = [config.listen.cert, config.listen.key, *_expand(auth.trust), *auth.crls]
    files += _expand(p for p in map(parse_pin, auth.pins) if isinstance(p, Path))
    files += list(auth.spiffe_bundles.values())
    if auth.policy is not None:
        files.append(auth.policy)
    return files


def file_stamps(paths: Iterable[Path]) -> tuple[tuple[str, float, int], ...]:
    """(path, mtime, size) per file: cheap to poll, changes when a file is replaced."""
    stamps = []
    for path in paths:
        try:
            info = os.stat(path)
            stamps.append((str(path), info.st_mtime, info.st_size))
        except OSError:
            stamps.append((str(path), -1.0, -1))
    return tuple(stamps)


def _certificates(path: Path, what: str) -> list[x509.Certificate]:
    return load_certificates(read_bytes(path, what=what), source=str(path))


def _check_hex_pins(pins: Iterable[Fingerprint], openssl_trust: list[x509.Certificate]) -> None:
    """Every fingerprint pin matches a certificate OpenSSL is given: else its client is
    refused ``unknown_ca`` in the handshake, before mtlskit could compare the fingerprint
    (Python's ``ssl`` has no verify callback). Also what makes a fingerprint beside its
    file refuse a swapped file."""
    loaded = {Fingerprint.of(cert) for cert in openssl_trust}
    for pin in pins:
        if pin not in loaded:
            raise ConfigError(
                f"no pinned certificate file or trust file holds {pin}: the TLS handshake "
                "needs the certificate itself, so list its file: "
                'pins = ["client/cert.pem"] (with its fingerprint beside it to refuse a '
                "swapped file), as mtlskit selfsigned prints",
                source="client_auth.pins",
            )


def load_generation(config: GatewayConfig) -> Generation:
    """Read every file the config names; ``ConfigError``/``InputError`` name the bad one."""
    auth = config.client_auth
    stamps = file_stamps(watched_files(config))
    anchors = [cert for path in _expand(auth.trust) for cert in _certificates(path, "trust file")]
    pins: list[Fingerprint] = []
    pinned: list[x509.Certificate] = []
    for pin in map(parse_pin, auth.pins):
        if isinstance(pin, Fingerprint):
            pins.append(pin)
        else:  # certificate files: pinned by fingerprint, and OpenSSL must see them too
            certs = [
                c for path in _expand([pin]) for c in _certificates(path, "pinned certificate")
            ]
            pinned += certs
            pins += [Fingerprint.of(cert) for cert in certs]
    bundles = {
        domain: parse_spiffe_bundle(read_bytes(path, what="SPIFFE bundle"), source=str(path))
        for domain, path in auth.spiffe_bundles.items()
    }
    crls = [load_crl(read_bytes(path, what="CRL"), source=str(path)) for path in auth.crls]
    trust = TrustStore.build(
        anchors=anchors,
        spiffe_bundles=bundles,
        pins=pins,
        crls=crls,
        allow_public_roots=auth.allow_public_roots,
    )
    policy = None
    if auth.policy is not None:
        policy = Policy.from_toml(read_bytes(auth.policy, what="policy"), source=str(auth.policy))
    if auth.allow_public_roots and policy is None:
        raise ConfigError(
            "allow_public_roots needs a policy: a public CA certifies anyone who controls a "
            "domain, so 'any certificate from a public CA' is never a valid client policy",
            source="client_auth.allow_public_roots",
        )
    verifier = Verifier(
        trust=trust,
        allow_missing_eku=auth.allow_missing_eku,
        max_chain_depth=auth.max_chain_depth,
        # Connection-level check (route rules count as matching); requests are
        # authorized again per route. Required by the verifier with public roots.
        authorize=policy.authorize if auth.allow_public_roots and policy else None,
    )
    openssl_trust = [*trust.anchors, *(c for certs in trust.bundles.values() for c in certs)]
    openssl_trust += pinned
    _check_hex_pins(pins, openssl_trust)
    if not openssl_trust and auth.mode is ClientAuthMode.REJECT_INVALID:
        raise ConfigError(
            "no certificate for OpenSSL to trust: hex pins need the pinned certificate "
            "file in client_auth.pins or client_auth.trust",
            source="client_auth",
        )
    check_secret_permissions(config.listen.key, what="server key")
    try:
        context = server_context(
            cert=str(config.listen.cert),
            key=str(config.listen.key),
            trust_pem=chain_pem(openssl_trust) if openssl_trust else b"",
            require_client_cert=auth.mode is ClientAuthMode.REJECT_INVALID,
            versions=tuple(config.listen.tls_versions),
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load the server certificate/key ({config.listen.cert}, "
            f"{config.listen.key}): {exc}",
            source="listen",
        ) from None
    server_cert = _certificates(config.listen.cert, "server certificate")[0]
    san = san_entries(server_cert)
    # XFCC's By=, as Envoy sets it: one per URI SAN of the proxy's own certificate.
    own_uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san else []
    xfcc = XfccConfig(by=tuple(own_uris))
    try:
        forward = ForwardConfig(formats=tuple(config.forward.formats), xfcc=xfcc)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(str(exc), source="forward.formats") from None
    return Generation(
        server_cert=server_cert,
        number=next(_NUMBERS),
        context=context,
        verifier=verifier,
        cache=VerificationCache(),
        policy=policy,
        forward=forward,
        mode=auth.mode,
        stamps=stamps,
    )
