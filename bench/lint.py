"""mtlskit's ``client-auth`` lint against pkilint's RFC 5280 linter over the same certificates.

Both sides start from DER bytes and do all their own work per certificate (parse, then
lint), with their validators built once, so the ratio compares linters, not loaders.
The certificates vary in key type, SAN kind and defects, so rules take their failure
branches as well as the clean ones. pkilint's validator is the one its
``lint_pkix_cert`` command builds.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable
from itertools import cycle

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from bench.report import Goal, Section, machine, table
from mtlskit.lint import lint_chain
from mtlskit.testca import CLIENT_AUTH, SERVER_AUTH, LeafSpec, TestCA

GOAL = 4.0


def _specs() -> list[tuple[LeafSpec, str]]:
    """(spec, key kind) pairs cycled through: half clean (one dual-use), half with defects."""
    clean = LeafSpec(uris=("spiffe://acme.com/billing/payments",))
    return [
        (clean, "p256"),
        (LeafSpec(dns=("api.acme.com", "api2.acme.com")), "p256"),
        (LeafSpec(emails=("alice@acme.com",), common_name="alice"), "rsa"),
        (clean.replace(eku=(CLIENT_AUTH, SERVER_AUTH)), "p384"),
        (clean.replace(ca=True), "p256"),
        (clean.replace(include_san=False, common_name="legacy-client"), "p256"),
        (clean.replace(eku=(SERVER_AUTH,), lifetime=dt.timedelta(days=500)), "ed25519"),
        (clean.replace(uris=("spiffe://ACME.com/x", "https://acme.com/")), "p256"),
    ]


def _keys() -> dict[str, Callable[[], object]]:
    # RSA keys are slow to generate and lint never looks at the private half: reuse a few.
    rsa_pool = cycle(
        [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(4)]
    )
    return {
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
        "rsa": lambda: next(rsa_pool),
    }


def build_certificates(count: int) -> list[bytes]:
    ca = TestCA(name="bench")
    keys = _keys()
    specs = _specs()
    ders = []
    for index in range(count):
        spec, kind = specs[index % len(specs)]
        issued = ca.issue(spec, key=keys[kind]())  # type: ignore[arg-type]
        ders.append(issued.cert.public_bytes(Encoding.DER))
    return ders


def _mtlskit(at: dt.datetime) -> Callable[[bytes], int]:
    def lint(der: bytes) -> int:
        report = lint_chain([x509.load_der_x509_certificate(der)], ["client-auth"], at=at)[0]
        return len(report.findings)

    return lint


def _pkilint() -> Callable[[bytes], int]:
    from pkilint import loader
    from pkilint.pkix import certificate, extension, name

    validator = certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(
            name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
        ),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )
    document_loader = loader.RFC5280CertificateDocumentLoader()

    def lint(der: bytes) -> int:
        document = document_loader.load_der_document(der)
        results = validator.validate(document.root)
        return sum(len(result.finding_descriptions) for result in results)

    return lint


def _rate(lint: Callable[[bytes], int], ders: list[bytes]) -> tuple[float, int]:
    start = time.perf_counter()
    findings = sum(lint(der) for der in ders)
    return len(ders) / (time.perf_counter() - start), findings


def run(quick: bool) -> Section:
    count, repeats = (100, 3) if quick else (1000, 5)
    started = time.perf_counter()
    ders = build_certificates(count)
    built = time.perf_counter() - started
    at = dt.datetime.now(dt.UTC)
    linters = {"mtlskit lint (client-auth)": _mtlskit(at), "pkilint lint_pkix_cert": _pkilint()}
    for lint in linters.values():  # warm-up: imports, caches, first-call costs
        for der in ders[:20]:
            lint(der)
    rates: dict[str, list[float]] = {name: [] for name in linters}
    findings: dict[str, int] = {}
    for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
        for name, lint in linters.items():
            per_second, findings[name] = _rate(lint, ders)
            rates[name].append(per_second)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    ours, theirs = medians.values()
    ratio = ours / theirs
    rows = [
        [
            name,
            f"{medians[name]:,.0f}",
            f"{min(rates[name]):,.0f}–{max(rates[name]):,.0f}",
            findings[name],
        ]
        for name in linters
    ]
    verdict = "meets" if ratio >= GOAL else "misses"
    body = "\n".join(
        [
            f"{count} varied client certificates (P-256, P-384, RSA-2048, Ed25519; SPIFFE, DNS, "
            f"email and CN-only identities; one in two with a defect), built once in {built:.1f}s. "
            f"Each linter parses DER and lints every certificate; median of {repeats} interleaved "
            "passes. pkilint's validator is the one `lint_pkix_cert` uses, built once.",
            "",
            table(["linter", "certs/s (median)", "range", "findings per pass"], rows),
            "",
            f"**Ratio: {ratio:.1f}× pkilint** (goal ≥ {GOAL:.0f}×: {verdict}). "
            "The two answer different questions — pkilint checks RFC 5280 encoding rules, "
            "mtlskit checks fitness for client authentication — so findings counts differ "
            "by design.",
            "",
            f"Machine: {machine()}.",
        ]
    )
    return Section(
        title="lint: certificates per second vs pkilint",
        body=body,
        goals=[
            Goal(
                name="lint certificates/s vs pkilint",
                target=f"≥ {GOAL:.0f}× pkilint",
                measured=f"{ratio:.1f}× ({medians[next(iter(linters))]:,.0f}/s vs {theirs:,.0f}/s)",
                met=ratio >= GOAL,
                issue="#2",
            )
        ],
        peer="pkilint `lint_pkix_cert` (Python API, validator built once)",
        method=f"{count} varied certificates, DER in, median of {repeats} interleaved passes",
    )
