"""A CA client in its own process: issue (and revoke) in a loop, print each acknowledgement.

``python -m reliability.ca_driver DIR --count N [--revoke-every K]`` prints ``ready``,
then ``issued SERIAL`` only after ``CertificateAuthority.issue`` has returned (the
store has committed), and ``revoked SERIAL`` only after ``revoke`` has returned. A
line the parent read is therefore something a client was told: the durability run
kills this process with SIGKILL at random moments and checks every such line
against the store. ``error TEXT`` lines report failures a user would have seen.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from cryptography import x509

from mtlskit.certs import generate_private_key, load_certificates, load_private_key
from mtlskit.errors import MtlskitError
from mtlskit.issue import PROFILES, CertificateAuthority, Issuer, parse_ca_config, parse_identity
from mtlskit.store import SqlStore, database_url


def open_authority(directory: Path, passphrase: bytes) -> CertificateAuthority:
    """The CA of ``directory`` as ``mtlskit ca issue`` builds it (issuing key decrypted)."""
    config = parse_ca_config((directory / "ca.toml").read_bytes(), source="ca.toml")
    stem = "issuing" if config.intermediate else "root"
    key = load_private_key((directory / f"{stem}.key").read_bytes(), password=passphrase)
    chain = tuple(load_certificates((directory / "chain.pem").read_bytes()))
    store = SqlStore.open(
        database_url(directory, config.database),
        synchronous="FULL" if config.durability == "full" else "NORMAL",
    )
    default_ttl, _, crl_validity = config.durations()
    return CertificateAuthority(
        issuer=Issuer(cert=chain[0], key=key, chain=chain),
        profile=PROFILES[config.profile],
        policy=config.policy(),
        store=store,
        default_ttl=default_ttl,
        crl_validity=crl_validity,
    )


def _say(line: str) -> None:
    # One write per line, flushed at once: a line in the pipe is an acknowledgement.
    os.write(1, (line + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability.ca_driver")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--revoke-every", type=int, default=0)
    parser.add_argument("--identity", default="spiffe://acme.com/reliability/client")
    args = parser.parse_args(argv)
    passphrase = os.environ["MTLSKIT_CA_PASSPHRASE"].encode()
    authority = open_authority(args.directory, passphrase)
    identity = parse_identity(args.identity)
    key = generate_private_key().public_key()  # one key: signing, not keygen, is under test
    _say("ready")
    issued: list[int] = []
    for number in range(1, args.count + 1):
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        try:
            result = authority.issue(identity, key, now=now)
        except (MtlskitError, Exception) as exc:  # reported, never hidden: a user saw it
            _say(f"error {type(exc).__name__}: {exc}")
            continue
        serial = result.cert.serial_number
        issued.append(serial)
        _say(f"issued {serial:x}")
        if args.revoke_every and number % args.revoke_every == 0:
            target = issued[len(issued) // 2]
            try:
                authority.revoke(target, reason=x509.ReasonFlags.key_compromise, now=now)
            except MtlskitError as exc:
                _say(f"revoke-refused {target:x} {exc}")
                continue
            issued.remove(target)
            _say(f"revoked {target:x}")
    authority.store.close()  # type: ignore[attr-defined]
    _say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
