"""Trust, revocation and policy read from the files an operator names, one way for every shell.

``mtlskit verify`` takes them as options, ``authz-server`` and ``config`` from a
TOML file or options; all of them build the same ``TrustStore`` and ``Policy``
through here, so a file that one command accepts the others accept too, and an
unreadable one is reported with the same one-line ``InputError`` naming it.
Directories are read as every ``*.pem``/``*.crt``/``*.der`` file inside, sorted,
the way ``gateway.toml``'s ``trust`` documents them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from mtlskit.authz import Policy
from mtlskit.certs import Fingerprint, load_certificates
from mtlskit.errors import InputError
from mtlskit.files import read_bytes
from mtlskit.verify import TrustStore, load_crl, parse_spiffe_bundle

__all__ = [
    "TrustFiles",
    "parse_pin",
    "read_certificate_files",
    "read_crls",
    "read_policy",
    "read_spiffe_bundles",
]

_CERT_SUFFIXES = (".pem", ".crt", ".cer", ".der")

PathLike = str | os.PathLike[str]


def _expand(paths: Iterable[PathLike]) -> list[Path]:
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in _CERT_SUFFIXES)
            if not found:
                raise InputError("directory holds no .pem/.crt/.der file", source=str(path))
            out += found
        else:
            out.append(path)
    return out


def parse_pin(text: str) -> Fingerprint | Path:
    """A pin as configured: a SHA-256 fingerprint (``sha256:HEX``, bare or openssl's colon
    hex), else the pinned certificate's file (or a directory of them).

    The TLS servers need the certificate itself, not only its fingerprint: OpenSSL checks
    a client certificate against its verify locations before mtlskit sees it, and Python's
    ``ssl`` has no verify callback to let a pinned one through (DESIGN §4).
    """
    try:
        return Fingerprint.parse(text)
    except InputError:
        if text.lower().startswith("sha256:"):
            raise  # a malformed fingerprint, not a file name
        return Path(text)


def read_certificate_files(paths: Iterable[PathLike], *, what: str) -> list[x509.Certificate]:
    """Every certificate in the files (or directories) given, in order."""
    return [
        cert
        for path in _expand(paths)
        for cert in load_certificates(read_bytes(path, what=what), source=str(path))
    ]


def read_crls(paths: Iterable[PathLike]) -> list[x509.CertificateRevocationList]:
    """One CRL per file; a PEM file holding several (``ca crl`` writes two) yields each."""
    crls: list[x509.CertificateRevocationList] = []
    for path in map(Path, paths):
        data = read_bytes(path, what="CRL file")
        marker = b"-----BEGIN X509 CRL-----"
        if data.count(marker) > 1:
            crls += [load_crl(marker + part, source=str(path)) for part in data.split(marker)[1:]]
        else:
            crls.append(load_crl(data, source=str(path)))
    return crls


def read_spiffe_bundles(
    bundles: Mapping[str, Iterable[PathLike]],
) -> dict[str, list[x509.Certificate]]:
    """Trust domain → the authorities of its bundle files (PEM or SPIFFE JSON)."""
    out: dict[str, list[x509.Certificate]] = {}
    for domain, paths in bundles.items():
        for path in paths:
            data = read_bytes(path, what="SPIFFE bundle")
            out.setdefault(domain, []).extend(parse_spiffe_bundle(data, source=os.fspath(path)))
    return out


def read_policy(path: PathLike) -> Policy:
    return Policy.from_toml(read_bytes(path, what="policy file"), source=os.fspath(path))


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustFiles:
    """The file names behind one ``TrustStore``; ``load()`` reads them all again.

    Kept as names rather than contents so that a reload (CRL refresh, new anchor)
    is one call that builds a whole new store, never a patch of the old one.
    Any iterable is accepted and kept as a tuple; pins are parsed on construction
    so a malformed one fails at start-up, not at the first client.
    """

    trust: tuple[Path, ...] = ()
    pins: tuple[Fingerprint, ...] = ()  # given as ``parse_pin`` strings: files go to pin_files
    pin_files: tuple[Path, ...] = ()
    crls: tuple[Path, ...] = ()
    spiffe_bundles: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    allow_public_roots: bool = False
    allow_stale_crls: bool = False

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "trust", tuple(Path(p) for p in self.trust))
        put(self, "crls", tuple(Path(p) for p in self.crls))
        parsed = [p if isinstance(p, Fingerprint | Path) else parse_pin(p) for p in self.pins]
        put(self, "pins", tuple(p for p in parsed if isinstance(p, Fingerprint)))
        put(
            self,
            "pin_files",
            (*map(Path, self.pin_files), *(p for p in parsed if isinstance(p, Path))),
        )
        put(
            self,
            "spiffe_bundles",
            {d: tuple(Path(p) for p in paths) for d, paths in self.spiffe_bundles.items()},
        )

    @property
    def empty(self) -> bool:
        return not (self.trust or self.pins or self.pin_files or self.spiffe_bundles)

    def pinned_certificates(self) -> list[x509.Certificate]:
        """The certificates of ``pin_files``: pinned by fingerprint, and what a TLS server
        puts in its verify locations so that OpenSSL lets them in."""
        return read_certificate_files(self.pin_files, what="pinned certificate")

    def load(self) -> TrustStore:
        return TrustStore.build(
            anchors=read_certificate_files(self.trust, what="certificate file"),
            spiffe_bundles=read_spiffe_bundles(self.spiffe_bundles),
            pins=(*self.pins, *map(Fingerprint.of, self.pinned_certificates())),
            crls=read_crls(self.crls),
            allow_public_roots=self.allow_public_roots,
            allow_stale_crls=self.allow_stale_crls,
        )
