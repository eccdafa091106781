"""The probe's side of a real CA directory: read its issuing key, revoke through its store,
publish its CRL, and have ``openssl`` sign the one certificate cryptography will not (SHA-1).

The CA directory is the one ``mtlskit ca init`` made; its files are read the same way
``mtlskit ca`` reads them. The probe's variants never pass the CA's lint gate (that
is the point of them), but the store still learns what happened: the revoked
certificate is recorded and revoked like any other, and a ``probe`` event in the
hash-chained audit log lists every variant the probe signed with the CA's key.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mtlskit.cadir import CaDirectory
from mtlskit.certs import Fingerprint, certificate_pem
from mtlskit.errors import InputError
from mtlskit.files import write_public
from mtlskit.issue import (
    PROFILES,
    CaConfig,
    CertificateAuthority,
    CertificateRecord,
    Issuer,
    build_crl,
)

__all__ = ["ProbeCa", "load_ca_directory"]

OPENSSL_TIMEOUT: Final = 20.0
_PROBE_NOTE: Final = "mtlskit probe signed these variants with the CA key, outside the lint gate"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeCa:
    """A CA directory opened for probing: its issuing CA and (with an intermediate) root."""

    directory: CaDirectory
    issuer: Issuer
    root: Issuer | None

    @property
    def path(self) -> Path:
        return self.directory.path

    @property
    def config(self) -> CaConfig:
        return self.directory.config

    def _store(self):  # noqa: ANN202 - SqlStore; SQLAlchemy loads only when a CA is probed
        return self.directory.store()

    def log_probe(self, *, signed: dict[str, str], now: dt.datetime) -> None:
        """Audit that the probe signed these variants with the CA key, outside the lint gate."""
        store = self._store()
        try:
            store.record_event("probe", {"note": _PROBE_NOTE, "signed": signed}, at=now)
        finally:
            store.close()

    def revoke_and_publish(
        self,
        revoked: x509.Certificate,
        *,
        signed: dict[str, str],
        crl_out: Path | None,
        now: dt.datetime,
    ) -> int:
        """Record and revoke ``revoked`` in the CA's store, log the probe, write the CRL.

        Returns the CRL number. With an intermediate, ``crl_out`` also gets the root's
        CRL (over the intermediate) after the issuing CA's, as ``mtlskit ca crl`` writes
        it: nginx and HAProxy check a CRL for every CA in the chain.
        """
        default_ttl, _, crl_validity = self.config.durations()
        store = self._store()
        try:
            store.record_event("probe", {"note": _PROBE_NOTE, "signed": signed}, at=now)
            store.add_certificate(
                CertificateRecord(
                    serial=revoked.serial_number,
                    identity="mtlskit-probe:revoked",
                    fingerprint=str(Fingerprint.of(revoked)),
                    not_before=revoked.not_valid_before_utc,
                    not_after=revoked.not_valid_after_utc,
                    profile="probe",
                    pem=certificate_pem(revoked),
                    issued_at=now,
                )
            )
            store.revoke(revoked.serial_number, reason=x509.ReasonFlags.key_compromise, at=now)
            authority = CertificateAuthority(
                issuer=self.issuer,
                profile=PROFILES[self.config.profile],
                policy=self.config.policy(),
                store=store,
                default_ttl=default_ttl,
                crl_validity=crl_validity,
            )
            crl = authority.crl(now=now)
        finally:
            store.close()
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        crls = [crl]
        if self.root is not None:
            crls.append(
                build_crl(
                    issuer=self.root,
                    revoked=(),
                    number=number,
                    this_update=now,
                    next_update=now + crl_validity,
                )
            )
        if crl_out is not None:
            write_public(
                crl_out,
                b"".join(item.public_bytes(serialization.Encoding.PEM) for item in crls),
            )
        return number

    def sign_sha1(self, csr: x509.CertificateSigningRequest) -> x509.Certificate | str:
        """The CSR signed by the issuing CA with SHA-1 via ``openssl``, or why it could not be.

        The CA key reaches openssl re-encrypted under a one-time passphrase that only
        the child's environment holds; it never touches the disk in the clear.
        """
        openssl = shutil.which("openssl")
        if openssl is None:
            return "the openssl CLI is not installed (cryptography refuses to sign with SHA-1)"
        one_time = secrets.token_urlsafe(24)
        with tempfile.TemporaryDirectory(prefix="mtlskit-probe-") as work:
            folder = Path(work)
            (folder / "csr.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
            (folder / "ca.pem").write_bytes(certificate_pem(self.issuer.cert))
            key_path = folder / "ca.key"
            key_path.touch(mode=0o600)
            key_path.write_bytes(
                self.issuer.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(one_time.encode()),
                )
            )
            command = [
                openssl, "x509", "-req", "-in", "csr.pem", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-passin", "env:MTLSKIT_PROBE_ONE_TIME", "-sha1", "-days", "1",
                "-copy_extensions", "copyall",
                "-set_serial", f"0x{x509.random_serial_number():x}", "-out", "leaf.pem",
            ]  # fmt: skip
            done = subprocess.run(
                command,
                cwd=folder,
                env={**os.environ, "MTLSKIT_PROBE_ONE_TIME": one_time},
                capture_output=True,
                timeout=OPENSSL_TIMEOUT,
                check=False,
            )
            if done.returncode != 0:
                message = done.stderr.decode(errors="replace").strip().splitlines()
                return f"openssl could not sign with SHA-1: {message[-1] if message else '?'}"
            return x509.load_pem_x509_certificate((folder / "leaf.pem").read_bytes())


def load_ca_directory(directory: Path, *, passphrase: bytes | None) -> ProbeCa:
    """Open a ``mtlskit ca init`` directory; ``InputError`` names the file that is wrong."""
    opened = CaDirectory.open(directory)
    if opened.config.pkcs11 is not None:
        # The probe signs defective variants (SHA-1 through openssl, odd encodings) with
        # the raw CA key; a key that never leaves its token cannot do that.
        raise InputError(
            "the CA keys are in a PKCS#11 token, and the probe signs its defective test "
            "certificates with the CA key itself: probe against a file-key test CA",
            source=str(directory),
        )
    if opened.config.intermediate:
        issuer = opened.issuer(passphrase)
        root = opened.issuer(passphrase, stem="root")
    else:
        issuer, root = opened.issuer(passphrase), None
    return ProbeCa(directory=opened, issuer=issuer, root=root)
