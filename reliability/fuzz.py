"""Coverage-guided fuzzing (atheris/libFuzzer) of every parser that reads untrusted bytes.

``python -m reliability.fuzz TARGET --seconds N [--corpus DIR]``, TARGET one of
``TARGETS`` (or ``all``). A target fails only on an exception outside the parser's
documented error types: ``MtlskitError`` (``InputError``, ``ConfigError``,
``SpiffeIdError``, ...) is how every parser here says "bad input", so anything else —
``ValueError`` from deep inside, ``KeyError``, ``RecursionError`` — is a bug. Seeds
are valid inputs of each kind, so the fuzzer starts from the interesting shapes.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["mtlskit"]):
    import tomllib

    from mtlskit.authz import Policy
    from mtlskit.certs import load_certificates, load_private_key
    from mtlskit.errors import MtlskitError
    from mtlskit.forward import (
        parse_xfcc,
        read_aws,
        read_gcp,
        read_nginx,
        read_rfc9440,
        read_verdict,
        read_xfcc,
    )
    from mtlskit.gateway._config import config_from_mapping
    from mtlskit.identity import SpiffeId
    from mtlskit.issue import CLIENT_AUTH, load_csr, parse_identity, review_csr

_IDENTITY = parse_identity("spiffe://acme.com/fuzz")


def _certificates(data: bytes) -> None:
    load_certificates(data, source="fuzz")


def _private_key(data: bytes) -> None:
    load_private_key(data, source="fuzz", password=b"fuzz")


def _pkcs12(data: bytes) -> None:
    load_certificates(data, source="fuzz", password=b"fuzz")


def _csr(data: bytes) -> None:
    csr = load_csr(data, source="fuzz")
    review_csr(csr, identity=_IDENTITY, profile=CLIENT_AUTH, source="fuzz")


def _spiffe(data: bytes) -> None:
    SpiffeId.parse(data.decode("utf-8", "surrogateescape"))


def _policy(data: bytes) -> None:
    Policy.from_toml(data, source="fuzz")


def _gateway_config(data: bytes) -> None:
    try:
        mapping = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return
    config_from_mapping(mapping, source="fuzz", base=Path("/nonexistent"))


def _xfcc(data: bytes) -> None:
    parse_xfcc(data.decode("latin-1"))


_READERS = (read_xfcc, read_gcp, read_aws, read_rfc9440, read_verdict)
_NAMES = (
    b"x-forwarded-client-cert",
    b"x-client-cert-present",
    b"x-client-cert-chain-verified",
    b"x-client-cert-spiffe",
    b"x-client-cert-leaf",
    b"x-amzn-mtls-clientcert",
    b"x-amzn-mtls-clientcert-leaf",
    b"client-cert",
    b"client-cert-chain",
    b"x-ssl-client-cert",
    b"x-ssl-client-verify",
    b"x-mtlskit-verdict",
)


def _forwarded(data: bytes) -> None:
    """Header lists of up to 4 fields (names from every format), through every reader."""
    provider = atheris.FuzzedDataProvider(data)
    headers = [
        (
            _NAMES[provider.ConsumeIntInRange(0, len(_NAMES) - 1)],
            provider.ConsumeBytes(provider.ConsumeIntInRange(0, 4096)),
        )
        for _ in range(provider.ConsumeIntInRange(1, 4))
    ]
    for reader in _READERS:
        with contextlib.suppress(MtlskitError):
            reader(headers)
    values = [value.decode("latin-1") for _, value in headers]
    with contextlib.suppress(MtlskitError):
        read_nginx(values[0], values[1] if len(values) > 1 else None)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "certificates": _certificates,
    "private-key": _private_key,
    "pkcs12": _pkcs12,
    "csr": _csr,
    "spiffe-id": _spiffe,
    "policy-toml": _policy,
    "gateway-config": _gateway_config,
    "xfcc": _xfcc,
    "forwarded-headers": _forwarded,
}


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start from: real PEM/DER/PKCS#12, a CSR, IDs, TOML, header values."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from mtlskit.certs import private_key_pem
    from mtlskit.client._enroll import build_csr
    from mtlskit.forward import ForwardConfig, ForwardedClient, forward_headers
    from mtlskit.testca import LeafSpec, TestCA

    leaf = TestCA(name="fuzz").issue(LeafSpec(uris=("spiffe://acme.com/fuzz",)))
    der = leaf.cert.public_bytes(serialization.Encoding.DER)
    if target == "certificates":
        return [leaf.chain_pem, der]
    if target == "private-key":
        return [private_key_pem(leaf.key), private_key_pem(leaf.key, b"fuzz")]
    if target == "pkcs12":
        return [
            pkcs12.serialize_key_and_certificates(
                b"fuzz",
                leaf.key,
                leaf.cert,
                None,
                serialization.BestAvailableEncryption(b"fuzz"),
            )
        ]
    if target == "csr":
        csr = build_csr(leaf.key, "spiffe://acme.com/fuzz")
        return [csr.public_bytes(serialization.Encoding.PEM)]
    if target == "spiffe-id":
        return [b"spiffe://acme.com/billing/payments", b"spiffe://a.b-c_d.e/x/y.z"]
    if target == "policy-toml":
        return [
            b'mode = "enforce"\n[[allow]]\nid = "spiffe://acme.com/billing/*"\n'
            b'routes = ["GET /invoices"]\n[[allow]]\ntrust_domain = "partner.example"\n'
            b'[[allow]]\ndns = "client.acme.com"\n'
        ]
    if target == "gateway-config":
        return [
            b'[listen]\naddress = "127.0.0.1:8443"\ncert = "s.pem"\nkey = "s.key"\n'
            b'[client_auth]\ntrust = ["t.pem"]\n[upstream]\nurls = ["http://127.0.0.1:9000"]\n'
            b'[limits]\nidle_timeout = 5.0\n[forward]\nformats = ["xfcc", "gcp"]\n'
        ]
    client = ForwardedClient.from_chain([leaf.cert], verified=True)
    config = ForwardConfig()  # every format
    headers = forward_headers(client, config)
    if target == "xfcc":
        return [value for name, value in headers if name.lower() == _NAMES[0]]
    return [b"".join(bytes([i]) + value[:4096] for i, (_, value) in enumerate(headers))]


def _one_input(target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    def test_one_input(data: bytes) -> None:
        with contextlib.suppress(MtlskitError):  # the documented way to reject input
            target(data)

    return test_one_input


def fuzz(target: str, seconds: int, corpus: Path | None) -> None:
    """Run libFuzzer on ``target`` for ``seconds``; exits the process (libFuzzer does)."""
    work = corpus or Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    work.mkdir(parents=True, exist_ok=True)
    for number, seed in enumerate(seeds(target)):
        (work / f"seed-{number}").write_bytes(seed)
    argv = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={work}/",  # a failing input lands beside the corpus, not in cwd
        str(work),
    ]
    atheris.Setup(argv, _one_input(TARGETS[target]))
    atheris.Fuzz()


def run_all(seconds: int) -> list[tuple[str, bool, str]]:
    """Each target in its own process: (target, passed, libFuzzer's last status line)."""
    out = []
    for target in TARGETS:
        done = subprocess.run(
            [sys.executable, "-m", "reliability.fuzz", target, "--seconds", str(seconds)],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=False,
        )
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        runs = next((line for line in reversed(lines) if line.startswith("Done ")), "")
        crash = next((line for line in lines if "Uncaught Python exception" in line), "")
        detail = runs or crash or (lines[-1] if lines else f"exit {done.returncode}")
        if crash:
            trace = [line for line in lines if line.startswith(("  File", "Error", "Traceback"))]
            detail = crash + " " + " | ".join(trace[-3:])
        out.append((target, done.returncode == 0 and not crash, detail))
    return out


def run(quick: bool) -> list:  # type: ignore[type-arg]
    from reliability.report import Row

    seconds = 5 if quick else 30
    results = run_all(seconds)
    rows = []
    for target, passed, detail in results:
        rows.append(
            Row(
                part="4 Fuzzing",
                test=f"atheris: {target}",
                load=f"libFuzzer, {seconds} s, seeded with valid inputs",
                observed=detail,
                crashes=0 if passed else 1,
                ok=passed,
            )
        )
    return rows


NOTES = """## Longer fuzzing runs

`python -m reliability.fuzz TARGET --seconds N --corpus DIR` runs one target (or `all`)
under libFuzzer; keep `DIR` between runs so the corpus grows. Targets: certificates,
private-key, pkcs12, csr, spiffe-id, policy-toml, gateway-config, xfcc,
forwarded-headers. For a night: `for t in certificates csr xfcc forwarded-headers;
do python -m reliability.fuzz $t --seconds 3600 --corpus fuzz-corpus/$t; done`.
A failure prints the input that raised something other than `MtlskitError`; libFuzzer
writes it to `crash-*` in the working directory. Hypothesis properties over the same
parsers run in `make test` (tests/test_*_properties.py, tests/test_certs.py, ...)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability.fuzz")
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--corpus", type=Path)
    args = parser.parse_args(argv)
    if args.target == "all":
        results = run_all(args.seconds)
        for target, passed, detail in results:
            print(f"{'ok  ' if passed else 'FAIL'} {target}: {detail}")
        return 0 if all(passed for _, passed, _ in results) else 1
    fuzz(args.target, args.seconds, args.corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
