"""Google Cloud load balancer style ``X-Client-Cert-*`` headers: writer and reader.

GCP has no fixed header names: an operator maps its mTLS variables
(``{client_cert_present}`` ...) to custom request headers. Values here are encoded
as those variables are, per "Create custom headers in backend services — mTLS
variables" (cloud.google.com/load-balancing/docs/https/custom-headers) and checked
against the LB's real output recorded in GoogleCloudPlatform/apigee-samples
``mtls-northbound/README.md``:

* ``present``/``chain_verified``: ``true``/``false``; ``error``: GCP's codes
  (``client_cert_not_provided``, ``client_cert_chain_invalid_eku``, ...), several
  joined by ``,``, empty when verified.
* ``sha256_fingerprint``: base64 **without padding** (the sample shows 43
  characters, ``om8vGt3r...8To``); the reader accepts it with padding too.
* ``serial_number``: the DER INTEGER bytes as lower-case colon-separated hex,
  sign byte kept (``00:ad:3e:...``).
* ``uri_sans``/``dnsname_sans``: each value base64 (padded), joined by ``,``;
  the SPIFFE ID is in ``spiffe_id`` and left out of ``uri_sans``.
* ``valid_not_before``/``_after``: RFC 3339 with ``+00:00``.
* ``issuer_dn``/``subject_dn``: base64 of the DER Name; ``leaf``/``chain``: RFC 9440
  byte sequences (``chain`` without the leaf, as RFC 9440 §2.3's Client-Cert-Chain).

The sample shows an unverified certificate gets only present/verified/error and
the fingerprint; every other field stays empty, and this writer does the same.
Size limits follow GCP's documented ones (serial 50 bytes, SPIFFE ID 2048, SAN
lists and DNs 512, leaf and leaf+chain 16 KiB): an oversized field is left empty
and ``client_cert_<field>_exceeded_size_limit`` is added to the error. Empty
values are not sent as headers at all.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass, fields
from typing import Final

from cryptography import x509

from mtlskit.certs import Fingerprint
from mtlskit.errors import ConfigError, InputError
from mtlskit.forward._client import ForwardedClient, identity_from_sans
from mtlskit.forward._encoding import (
    byte_sequence,
    byte_sequence_list,
    certificate_der,
    certificate_from_der,
    der_serial,
    name_der,
    parse_byte_sequence,
    parse_byte_sequence_list,
)
from mtlskit.forward._headers import Headers, header, header_values
from mtlskit.identity import ClientIdentity, IdentityError, SpiffeId, SpiffeIdError, san_entries
from mtlskit.verify import GCP_ERRORS

__all__ = ["GCP_ERRORS", "GcpHeaderNames", "gcp_error", "gcp_headers", "read_gcp"]

# mtlskit's stable codes → GCP's client_cert_error words live with the codes, in verify;
# codes with no GCP counterpart take its catch-all, as GCP itself does.
_GCP_CATCH_ALL: Final = "client_cert_validation_failed"
_FROM_GCP: Final = {gcp: code.value for code, gcp in GCP_ERRORS.items() if gcp != _GCP_CATCH_ALL}
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SERIAL: Final = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2})*")
_LIMITS: Final = {
    "serial_number": 50,
    "spiffe_id": 2048,
    "uri_sans": 512,
    "dnsname_sans": 512,
    "issuer_dn": 512,
    "subject_dn": 512,
}
_LEAF_LIMIT: Final = 16 * 1024


def gcp_error(code: str | None) -> str | None:
    """GCP's ``client_cert_error`` word for an mtlskit code (``None`` stays ``None``)."""
    if code is None:
        return None
    return GCP_ERRORS.get(code, _GCP_CATCH_ALL)


@dataclass(frozen=True, slots=True, kw_only=True)
class GcpHeaderNames:
    """The header name for each GCP variable; ``None`` leaves that variable out.

    Defaults are the names Google's own mTLS examples use (``X-Client-Cert-Present``,
    ``X-Client-Cert-Hash``, ``X-Client-Cert-SPIFFE``, ...); the DN, leaf and chain
    names, which those examples do not set, follow the same pattern.
    """

    present: str | None = "X-Client-Cert-Present"
    chain_verified: str | None = "X-Client-Cert-Chain-Verified"
    error: str | None = "X-Client-Cert-Error"
    sha256_fingerprint: str | None = "X-Client-Cert-Hash"
    serial_number: str | None = "X-Client-Cert-Serial-Number"
    spiffe_id: str | None = "X-Client-Cert-SPIFFE"
    uri_sans: str | None = "X-Client-Cert-URI-SANs"
    dnsname_sans: str | None = "X-Client-Cert-DNSName-SANs"
    valid_not_before: str | None = "X-Client-Cert-Valid-Not-Before"
    valid_not_after: str | None = "X-Client-Cert-Valid-Not-After"
    issuer_dn: str | None = "X-Client-Cert-Issuer-DN"
    subject_dn: str | None = "X-Client-Cert-Subject-DN"
    leaf: str | None = "X-Client-Cert-Leaf"
    chain: str | None = "X-Client-Cert-Chain"

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for item in fields(self):
            name = getattr(self, item.name)
            if name is None:
                continue
            if not _TOKEN.fullmatch(name):
                raise ConfigError(f"{name!r} is not a valid header name", source=f"gcp.{item.name}")
            if name.lower() in seen:
                raise ConfigError(f"{name!r} is used twice", source=f"gcp.{item.name}")
            seen.add(name.lower())

    def names(self) -> tuple[str, ...]:
        """Every configured name, for the sanitizer."""
        return tuple(n for n in (getattr(self, f.name) for f in fields(self)) if n is not None)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def _spiffe_and_other_uris(cert: x509.Certificate) -> tuple[str, list[str], list[str]]:
    san = san_entries(cert)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san else []
    dns = san.get_values_for_type(x509.DNSName) if san else []
    spiffe = ""
    for uri in uris:
        if SpiffeId.is_spiffe_uri(uri):
            try:
                spiffe = str(SpiffeId.parse(uri))
            except SpiffeIdError:
                continue
            break
    return spiffe, [u for u in uris if u != spiffe], dns


def _variables(client: ForwardedClient) -> tuple[dict[str, str], list[str]]:
    """Variable name → value, and the size-limit errors to add."""
    values: dict[str, str] = {
        "present": "true" if client.present else "false",
        "chain_verified": "true" if client.verified else "false",
    }
    errors: list[str] = []
    if client.fingerprint is not None:
        values["sha256_fingerprint"] = client.fingerprint.base64.rstrip("=")
    if not (client.verified and client.chain):
        return values, errors
    leaf = client.chain[0]
    spiffe, uris, dns = _spiffe_and_other_uris(leaf)
    serial = der_serial(leaf)
    candidates = {
        "serial_number": (":".join(f"{b:02x}" for b in serial), len(serial)),
        "spiffe_id": (spiffe, len(spiffe.encode())),
        "uri_sans": (",".join(_b64(u.encode()) for u in uris), None),
        "dnsname_sans": (",".join(_b64(d.encode()) for d in dns), None),
        "issuer_dn": (_b64(name_der(leaf.issuer)), len(name_der(leaf.issuer))),
        "subject_dn": (_b64(name_der(leaf.subject)), len(name_der(leaf.subject))),
    }
    for variable, (text, size) in candidates.items():
        if (len(text) if size is None else size) > _LIMITS[variable]:
            errors.append(f"client_cert_{variable}_exceeded_size_limit")
        elif text:
            values[variable] = text
    values["valid_not_before"] = _rfc3339(leaf.not_valid_before_utc)
    values["valid_not_after"] = _rfc3339(leaf.not_valid_after_utc)
    leaf_value = byte_sequence(certificate_der(leaf))
    chain_value = byte_sequence_list([certificate_der(c) for c in client.chain[1:]])
    if len(leaf_value) > _LEAF_LIMIT:
        errors.append("client_cert_validated_leaf_exceeded_size_limit")
    else:
        values["leaf"] = leaf_value
    if len(leaf_value) + len(chain_value) > _LEAF_LIMIT:
        errors.append("client_cert_validated_chain_exceeded_size_limit")
    elif chain_value:
        values["chain"] = chain_value
    return values, errors


def gcp_headers(
    client: ForwardedClient, names: GcpHeaderNames = GcpHeaderNames()
) -> list[tuple[bytes, bytes]]:
    """The ``X-Client-Cert-*`` headers GCP would send for this client, in variable order."""
    values, limit_errors = _variables(client)
    error = gcp_error(client.error if not client.verified else None)
    if error is None and not client.verified:
        error = _GCP_CATCH_ALL if client.present else GCP_ERRORS["cert_not_provided"]
    all_errors = ([error] if error else []) + limit_errors
    if all_errors:
        values["error"] = ",".join(all_errors)
    out: list[tuple[bytes, bytes]] = []
    for item in fields(names):
        name = getattr(names, item.name)
        if name is not None and values.get(item.name):
            out.append(header(name, values[item.name]))
    return out


# --- reading ----------------------------------------------------------------------


def _one(headers: Headers, name: str | None) -> str | None:
    if name is None:
        return None
    values = header_values(headers, name)
    if len(values) > 1:
        raise InputError("appears more than once", source=name)
    return values[0].strip(" \t") if values else None


def _boolean(text: str | None, name: str | None) -> bool | None:
    if text is None or text == "":
        return None
    if text not in {"true", "false"}:
        raise InputError(f"expected true or false, got {text[:20]!r}", source=name)
    return text == "true"


def _b64_list(text: str | None, name: str | None) -> list[str]:
    if not text:
        return []
    out: list[str] = []
    for item in text.split(","):
        try:
            out.append(base64.b64decode(item.strip(" \t"), validate=True).decode("utf-8"))
        except (binascii.Error, ValueError):
            raise InputError("an entry is not base64 of UTF-8 text", source=name) from None
    return out


def read_gcp(headers: Headers, names: GcpHeaderNames = GcpHeaderNames()) -> ForwardedClient | None:
    """The client as GCP-style headers describe it; ``None`` when the present header is absent.

    ``error`` comes back as mtlskit's code where GCP's word maps to exactly one
    (``client_cert_chain_invalid_eku`` → ``eku_missing_client_auth``), else as GCP's
    own word. With ``leaf`` the identity is the certificate's; without, it is taken
    from ``spiffe_id``/``uri_sans``/``dnsname_sans``. Every field present is checked
    against the leaf when both are there.
    """
    present = _boolean(_one(headers, names.present), names.present)
    if present is None:
        return None
    verified = bool(_boolean(_one(headers, names.chain_verified), names.chain_verified))
    if verified and not present:
        raise InputError("says verified but no certificate present", source=names.chain_verified)
    error_text = _one(headers, names.error) or None
    error = None
    if error_text and not verified:
        first = error_text.split(",")[0].strip(" \t")
        error = _FROM_GCP.get(first, first)
    fingerprint = _fingerprint(_one(headers, names.sha256_fingerprint), names.sha256_fingerprint)
    chain: tuple[x509.Certificate, ...] = ()
    leaf_text = _one(headers, names.leaf)
    if leaf_text:
        leaf = certificate_from_der(
            parse_byte_sequence(leaf_text, source=names.leaf or ""), source=names.leaf or ""
        )
        rest = parse_byte_sequence_list(_one(headers, names.chain) or "", source=names.chain or "")
        chain = (leaf, *(certificate_from_der(d, source=names.chain or "") for d in rest))
        if fingerprint is not None and fingerprint != Fingerprint.of(leaf):
            raise InputError("does not match the forwarded leaf", source=names.sha256_fingerprint)
    spiffe = _one(headers, names.spiffe_id) or ""
    uris = _b64_list(_one(headers, names.uri_sans), names.uri_sans)
    dns = _b64_list(_one(headers, names.dnsname_sans), names.dnsname_sans)
    serial = _one(headers, names.serial_number)
    if serial and not _SERIAL.fullmatch(serial):
        raise InputError("is not colon-separated hex", source=names.serial_number)
    if chain:
        if serial and bytes.fromhex(serial.replace(":", "")) != der_serial(chain[0]):
            raise InputError("does not match the forwarded leaf", source=names.serial_number)
        try:
            identity: ClientIdentity | None = ClientIdentity.from_certificate(chain[0])
        except IdentityError:
            identity = None
    else:
        identity = identity_from_sans(([spiffe] if spiffe else []) + uris, dns)
    if not present and (chain or fingerprint is not None):
        raise InputError(
            "says no certificate, yet certificate fields are set", source=names.present
        )
    return ForwardedClient(
        present=present,
        verified=verified,
        error=error if not verified else None,
        chain=chain,
        identity=identity if verified else None,
        fingerprint=fingerprint,
    )


def _fingerprint(text: str | None, name: str | None) -> Fingerprint | None:
    if not text:
        return None
    try:
        digest = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InputError("is not base64", source=name) from None
    if len(digest) != 32:
        raise InputError(f"is {len(digest)} bytes, a SHA-256 is 32", source=name)
    return Fingerprint(digest)
