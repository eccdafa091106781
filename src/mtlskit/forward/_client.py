"""The client as the gateway saw it: the one value every header writer reads.

``ForwardedClient`` is deliberately independent of ``mtlskit.verify``: the gateway
builds it from its ``Decision`` (verdict, reason code, chain, identity), a backend
reader builds it from a peer's headers, and the writers and the ASGI helper only
ever see this value.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from mtlskit.certs import Fingerprint
from mtlskit.identity import ClientIdentity, IdentityError

__all__ = ["ForwardedClient", "identity_from_sans"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardedClient:
    """What is known about the client certificate of one connection.

    ``present``: the client sent a certificate. ``verified``: mtlskit (or, when read
    from headers, the proxy that wrote them) accepted it. ``error``: why not — a
    stable code of DESIGN.md §5 when mtlskit decided; a reader keeps a peer's own
    code when it has no exact mtlskit equivalent. ``chain`` is leaf first and may be
    empty when a header carried only fields (XFCC without ``Cert``, GCP without
    ``_leaf``). ``fingerprint`` is the leaf's SHA-256, filled from the chain when
    not given, and checked against it when both are.
    """

    present: bool
    verified: bool
    error: str | None = None
    chain: tuple[x509.Certificate, ...] = ()
    identity: ClientIdentity | None = None
    fingerprint: Fingerprint | None = None

    def __post_init__(self) -> None:
        if self.verified and not self.present:
            raise ValueError("a client without a certificate cannot be verified")
        if self.verified and self.error is not None:
            raise ValueError("a verified client carries no error")
        if self.chain and not self.present:
            raise ValueError("a chain was given for a client that sent no certificate")
        if self.chain:
            leaf = Fingerprint.of(self.chain[0])
            if self.fingerprint is None:
                object.__setattr__(self, "fingerprint", leaf)
            elif self.fingerprint != leaf:
                raise ValueError("fingerprint does not match the leaf certificate")

    @classmethod
    def missing(cls) -> ForwardedClient:
        """No certificate at all: the verdict GCP reports as ``client_cert_not_provided``."""
        return cls(present=False, verified=False, error="cert_not_provided")

    @classmethod
    def from_chain(
        cls,
        chain: tuple[x509.Certificate, ...] | list[x509.Certificate],
        *,
        verified: bool,
        error: str | None = None,
        allow_cn: bool = False,
    ) -> ForwardedClient:
        """A presented chain (leaf first); the identity is taken the one way mtlskit takes it.

        A leaf without a usable identity yields ``identity=None`` rather than an error:
        the verdict, not this value, says whether the client is acceptable.
        """
        chain = tuple(chain)
        if not chain:
            raise ValueError("from_chain needs at least the leaf certificate")
        try:
            identity: ClientIdentity | None = ClientIdentity.from_certificate(
                chain[0], allow_cn=allow_cn
            )
        except IdentityError:
            identity = None
        return cls(present=True, verified=verified, error=error, chain=chain, identity=identity)

    @property
    def leaf(self) -> x509.Certificate | None:
        return self.chain[0] if self.chain else None


def identity_from_sans(
    uris: tuple[str, ...] | list[str],
    dns: tuple[str, ...] | list[str],
    emails: tuple[str, ...] | list[str] = (),
) -> ClientIdentity | None:
    """The identity a header's SAN fields name, in ``ClientIdentity.from_certificate``'s order.

    For headers that carry SAN values but not the certificate (XFCC without
    ``Cert``, GCP without ``_leaf``). The precedence and the SVID rule (a SPIFFE URI
    must be the only URI SAN and valid) are the same; ``None`` when nothing usable.
    """
    try:
        return ClientIdentity.from_sans(uris, dns, emails)
    except IdentityError:
        return None
