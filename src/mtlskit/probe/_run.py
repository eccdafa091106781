"""``run_probe``: build the battery's credentials, run every case in order, collect a report.

The one IO entry point: the CLI and ``mtlskit demo`` both call it. Preparation comes
first — impostors, CA variants, the SHA-1 certificate from ``openssl``, revocation
and the CRL — so that an endpoint reloading its CRL (on a poll or on ``after_crl``)
has the whole battery's duration to do so before ``revoked`` runs last.
"""

from __future__ import annotations

import datetime as dt
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Final

from cryptography import x509

from mtlskit.certs import Fingerprint, PrivateKey
from mtlskit.errors import InputError
from mtlskit.probe._attempt import Target, attempt_foreign_key, attempt_ssl
from mtlskit.probe._cadir import load_ca_directory
from mtlskit.probe._cases import (
    CASES,
    SPOOF_HEADERS,
    Case,
    CaseResult,
    Needs,
    Observation,
    Outcome,
    ProbeReport,
    Verdict,
    judge,
    spoofed_arrivals,
)
from mtlskit.probe._forge import (
    Credential,
    Names,
    ca_variants,
    foreign_key_for,
    self_signed_impostor,
    sha1_request,
    unknown_ca_impostor,
)
from mtlskit.verify import NO_INTERMEDIATE

__all__ = ["parse_target", "run_probe"]

Progress = Callable[[Case, int, int], None]


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port); ``InputError`` otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError("expected HOST:PORT, e.g. 127.0.0.1:8443", source=text)
    return host, int(port)


def _skipped(reason: str) -> Observation:
    return Observation(outcome=Outcome.SKIPPED, detail=reason)


def _spoof(target: Target, legit: Credential, workdir: Path) -> Observation:
    token = secrets.token_hex(4)
    markers = {
        name: f"mtlskit-probe-spoof-{index}-{token}" for index, name in enumerate(SPOOF_HEADERS)
    }
    observation, body = attempt_ssl(target, legit, workdir, headers=list(markers.items()))
    if observation.outcome is not Outcome.ACCEPTED:
        return observation  # the request itself was refused: nothing can have arrived
    arrived = spoofed_arrivals(body, markers)
    if arrived:
        return Observation(
            outcome=Outcome.ACCEPTED,
            http_status=observation.http_status,
            tls_version=observation.tls_version,
            detail="arrived at the backend: " + ", ".join(arrived),
        )
    return Observation(
        outcome=Outcome.REFUSED,
        tls_version=observation.tls_version,
        detail=f"all {len(markers)} stripped before the backend",
    )


def run_probe(
    target: str,
    *,
    chain: Sequence[x509.Certificate],
    key: PrivateKey | None = None,
    ca_dir: Path | None = None,
    passphrase: bytes | None = None,
    crl_out: Path | None = None,
    after_crl: Callable[[], None] | None = None,
    server_name: str | None = None,
    path: str = "/",
    echo: bool = False,
    timeout: float = 5.0,
    progress: Progress | None = None,
    now: dt.datetime | None = None,
) -> ProbeReport:
    """Probe the mTLS endpoint at ``target`` (``HOST:PORT``) and report every case.

    ``chain`` is the legitimate client's certificate chain (leaf first; public, not
    secret). ``key`` (its private key) enables the control and header-spoofing
    cases. ``ca_dir`` is a ``mtlskit ca init`` directory the endpoint trusts, opened
    with ``passphrase``: it enables the defective-certificate cases; with
    ``crl_out`` the revoked case's CRL is written there and ``after_crl`` is called
    (reload the endpoint). ``echo``: the backend echoes request headers, so spoofed
    identity headers can be seen arriving. ``progress(case, index, total)`` is
    called before each case.
    """
    if not chain:
        raise InputError("no certificate in the client chain", source="--cert")
    host, port = parse_target(target)
    place = Target(host=host, port=port, server_name=server_name, path=path, timeout=timeout)
    now = now or dt.datetime.now(dt.UTC).replace(microsecond=0)
    legit_leaf = chain[0]
    names = Names.of(legit_leaf)
    notes: list[str] = []
    if key is not None and key.public_key() != legit_leaf.public_key():
        raise InputError("the key does not belong to the certificate", source="--key")

    plan: dict[str, Credential | str] = {
        "unknown-ca": unknown_ca_impostor(names, now),
        "self-signed-impostor": self_signed_impostor(names, now),
    }
    if ca_dir is not None:
        plan.update(
            _prepare_ca(
                names,
                ca_dir=ca_dir,
                passphrase=passphrase,
                crl_out=crl_out,
                after_crl=after_crl,
                now=now,
                notes=notes,
            )
        )

    results: list[CaseResult] = []
    missing = _missing_issuer(chain)
    with tempfile.TemporaryDirectory(prefix="mtlskit-probe-") as work:
        workdir = Path(work)
        legit = Credential(chain=tuple(chain), key=key) if key is not None else None
        for index, case in enumerate(CASES):
            if progress is not None:
                progress(case, index, len(CASES))
            observe = partial(
                _observe,
                case,
                plan=plan,
                target=place,
                legit=legit,
                chain=chain,
                workdir=workdir,
                ca_dir=ca_dir,
                echo=echo,
            )
            observation = observe()
            if case.id in _SENDS_GIVEN_CHAIN and observation.alert == "unknown_ca" and missing:
                detail = "; ".join(filter(None, (observation.detail, missing)))
                observation = replace(observation, detail=detail)
                note = f"--cert: {missing}; give it the chain (leaf, then intermediates)"
                if note not in notes:  # several cases send the same chain: one note
                    notes.append(note)
            if case.id == "revoked" and crl_out is not None and after_crl is None:
                observation = _await_crl_reload(
                    observe,
                    first=observation,
                    case=case,
                    notes=notes,
                )
            results.append(
                CaseResult(case=case, observation=observation, verdict=judge(case, observation))
            )
    report = ProbeReport(
        target=target, server_name=server_name, results=tuple(results), notes=tuple(notes)
    )
    return _with_control_notes(report)


# An endpoint that polls its CRL (the gateway's [reload] poll_interval, 2 s by default) may
# not have read the new one when the battery reaches ``revoked``; nginx/HAProxy never do
# without a reload (--after-crl), so this only spares pollers a false FAIL.
CRL_RELOAD_WAIT: Final = 10.0


def _await_crl_reload(
    observe: Callable[[], Observation], *, first: Observation, case: Case, notes: list[str]
) -> Observation:
    """Retry the revoked case until the endpoint refuses it or CRL_RELOAD_WAIT passes."""
    started = time.monotonic()
    observation = first
    while judge(case, observation) is Verdict.FAIL:
        if time.monotonic() - started > CRL_RELOAD_WAIT:
            notes.append(
                f"revoked: still accepted {CRL_RELOAD_WAIT:.0f} s after the CRL was written: "
                "the endpoint does not reload it (give --after-crl the reload command)"
            )
            return observation
        time.sleep(0.5)
        observation = observe()
    if observation is not first:
        waited = time.monotonic() - started
        notes.append(f"revoked: refused after waiting {waited:.1f} s for the CRL reload")
    return observation


def _prepare_ca(
    names: Names,
    *,
    ca_dir: Path,
    passphrase: bytes | None,
    crl_out: Path | None,
    after_crl: Callable[[], None] | None,
    now: dt.datetime,
    notes: list[str],
) -> dict[str, Credential | str]:
    """Sign the CA variants (SHA-1 through openssl), revoke one, publish the CRL."""
    authority = load_ca_directory(ca_dir, passphrase=passphrase)
    plan = ca_variants(names, authority.issuer, now)
    csr, sha1_key = sha1_request(names, now)
    signed_sha1 = authority.sign_sha1(csr)
    if isinstance(signed_sha1, str):
        plan["sha1"] = signed_sha1
    else:
        plan["sha1"] = Credential(chain=(signed_sha1, *authority.issuer.chain[:-1]), key=sha1_key)
    signed = {
        case_id: str(Fingerprint.of(item.leaf))
        for case_id, item in plan.items()
        if isinstance(item, Credential)
    }
    revoked = plan["revoked"]
    assert isinstance(revoked, Credential)
    if crl_out is None:
        # Revoking in the store without publishing would only make a CRL nobody reads.
        plan["revoked"] = "needs --crl-out (the CRL file the endpoint reads)"
        authority.log_probe(signed=signed, now=now)
        return plan
    number = authority.revoke_and_publish(revoked.leaf, signed=signed, crl_out=crl_out, now=now)
    notes.append(
        f"revoked serial {revoked.leaf.serial_number:x} in {ca_dir}; "
        f"CRL number {number} written to {crl_out}"
    )
    if after_crl is not None:
        after_crl()
    return plan


def _observe(
    case: Case,
    *,
    plan: dict[str, Credential | str],
    target: Target,
    legit: Credential | None,
    chain: Sequence[x509.Certificate],
    workdir: Path,
    ca_dir: Path | None,
    echo: bool,
) -> Observation:
    if case.needs is Needs.KEY and legit is None:
        return _skipped("needs --key (the legitimate client's key)")
    if case.needs is Needs.CA and ca_dir is None:
        return _skipped("needs --ca-dir (a CA the endpoint trusts)")
    if case.needs is Needs.ECHO:
        if legit is None:
            return _skipped("needs --key (sent by the legitimate client)")
        if not echo:
            return _skipped("needs --echo (a backend that echoes the request headers)")
        return _spoof(target, legit, workdir)
    if case.id == "control":
        assert legit is not None
        return attempt_ssl(target, legit, workdir)[0]
    if case.id == "no-client-cert":
        return attempt_ssl(target, None, workdir)[0]
    if case.id.startswith("foreign-key-"):
        version = "1.2" if case.id.endswith("1.2") else "1.3"
        return attempt_foreign_key(target, chain, foreign_key_for(chain[0]), version)
    credential = plan[case.id]
    if isinstance(credential, str):
        return _skipped(credential)
    return attempt_ssl(target, credential, workdir)[0]


# The cases that present the --cert chain as given (the rest forge their own).
_SENDS_GIVEN_CHAIN: Final = frozenset(
    {"control", "foreign-key-tls1.2", "foreign-key-tls1.3", "header-spoofing"}
)


def _missing_issuer(chain: Sequence[x509.Certificate]) -> str | None:
    """Why an endpoint may say unknown_ca to the given chain: its top is not self-issued,
    so its issuer must be one of the endpoint's anchors (``None`` when the chain ends in
    a self-issued certificate)."""
    top = chain[-1]
    if top.issuer == top.subject:
        return None
    if len(chain) == 1:
        return f"{NO_INTERMEDIATE} ({top.issuer.rfc4514_string()})"
    return (
        f"the chain ends at {top.subject.rfc4514_string()}, whose issuer "
        f"({top.issuer.rfc4514_string()}) is not in it and is not a trust anchor"
    )


def _with_control_notes(report: ProbeReport) -> ProbeReport:
    notes = list(report.notes)
    for control, scope in (("control", "every case"), ("ca-control", "the CA cases")):
        if report.result(control).verdict is Verdict.FAIL:
            notes.append(
                f"the {control} case was refused: refusals in {scope} may be a broken setup "
                "(wrong --cert/--key, --server-name, or a CA the endpoint does not trust)"
            )
    return ProbeReport(
        target=report.target,
        server_name=report.server_name,
        results=report.results,
        notes=tuple(notes),
    )
