"""Enrollments per second over HTTPS (`mtlskit ca serve`, 16 concurrent httpx clients),
beside the same enrollment in-process and bare CSR signing into the same store.

Every enrollment redeems its own one-time token (an atomic conditional UPDATE) and
records the certificate (SQLite, synchronous FULL, WAL). In-process, each is its own
durable transaction; the server group-commits the calls that queue while its CA thread
is busy (one COMMIT per batch, no answer before it). The CSRs are made before the clock
starts: a client's key generation is the client's cost, not the CA's. Beside them, the
same enrollment with a workload-identity token (a Kubernetes-shaped RS256 JWT from a
``[[provisioners]]`` JWKS file, its ``jti`` burned in the store) in the same run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from bench.report import ROOT, Section, machine, table
from mtlskit.certs import generate_private_key
from mtlskit.client import build_csr
from mtlskit.issue import (
    PROFILES,
    CertificateAuthority,
    RegistrationAuthority,
    load_csr,
    new_token,
    parse_ca_config,
    parse_identity,
)
from mtlskit.store import SqlStore, database_url

CLIENTS = 16
PASSPHRASE = "bench passphrase"
ISSUER = "https://kubernetes.default.svc.cluster.local"
PROVISIONER = f"""
[[provisioners]]
kind = "oidc"
name = "k8s"
issuer = "{ISSUER}"
jwks = "k8s-jwks.json"
audience = "mtlskit-ca"
identity = "spiffe://acme.com/ns/{{kubernetes.io.namespace}}/sa/{{kubernetes.io.serviceaccount.name}}"
"""
_SIGNER = RSAKey.generate_key(2048, parameters={"kid": "bench"})


def _ca(directory: Path) -> None:
    from mtlskit.cli import main

    (directory.parent / "pass").write_text(PASSPHRASE)
    (directory.parent / "pass").chmod(0o600)  # ca serve refuses a password file others may read
    passphrase = str(directory.parent / "pass")
    with contextlib.redirect_stdout(io.StringIO()):  # init's chatter is not the report
        code = main(
            [
                "ca",
                "init",
                str(directory),
                "--trust-domain",
                "acme.com",
                "--passphrase-file",
                passphrase,
            ]
        )
    assert code == 0
    with (directory / "ca.toml").open("a") as handle:
        handle.write(PROVISIONER)
    keys = KeySet([_SIGNER]).as_dict(private=False)
    (directory / "k8s-jwks.json").write_text(json.dumps(keys))


def _id_tokens(count: int, tag: str) -> list[str]:
    """Projected service-account tokens as the API server signs them, one jti each."""
    now = int(time.time())
    return [
        jwt.encode(
            {"alg": "RS256", "kid": "bench"},
            {
                "iss": ISSUER,
                "aud": ["mtlskit-ca"],
                "iat": now,
                "nbf": now,
                "exp": now + 3600,
                "jti": f"{tag}-{index}",
                "sub": f"system:serviceaccount:bench:{tag}-{index}",
                "kubernetes.io": {
                    "namespace": "bench",
                    "serviceaccount": {"name": f"{tag}-{index}", "uid": str(index)},
                },
            },
            _SIGNER,
        )
        for index in range(count)
    ]


def _tokens(directory: Path, count: int, tag: str) -> list[str]:
    store = SqlStore.open(database_url(directory, "ca.db"))
    now = dt.datetime.now(dt.UTC)
    tokens = []
    try:
        for index in range(count):
            token, record = new_token(
                parse_identity(f"spiffe://acme.com/{tag}/{index}"),
                now=now,
                ttl=dt.timedelta(hours=1),
            )
            store.add_token(record)
            tokens.append(token)
    finally:
        store.close()
    return tokens


def _csrs(count: int) -> list[str]:
    return [
        build_csr(generate_private_key()).public_bytes(serialization.Encoding.PEM).decode()
        for _ in range(count)
    ]


def _serve(directory: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "mtlskit", "ca", "serve", str(directory)]
    process = subprocess.Popen(
        [
            *command,
            *("--listen", "127.0.0.1:0", "--passphrase-file", str(directory.parent / "pass")),
            *("--max-token-failures", "1000000"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    process.stdout.readline()
    if not line.startswith("serving"):
        process.kill()
        raise RuntimeError(f"ca serve did not start: {line}")
    return process, line.split()[-1]


def _over_https(
    url: str,
    root: Path,
    tokens: list[str],
    csrs: list[str],
    *,
    reuse: bool,
    field: str = "token",
) -> float:
    """Enrollments/s with CLIENTS threads; ``reuse``: keep-alive, else a TLS handshake each;
    ``field``: ``token`` (one-time) or ``id_token`` (workload identity)."""
    context = ssl.create_default_context(cafile=root)
    work = list(zip(tokens, csrs, strict=True))
    lock = threading.Lock()
    failures: list[str] = []

    def client() -> None:
        http = httpx.Client(verify=context, timeout=60) if reuse else None
        try:
            while True:
                with lock:
                    if not work:
                        return
                    token, csr = work.pop()
                body = {field: token, "csr": csr}
                if http is not None:
                    response = http.post(f"{url}/v1/enroll", json=body)
                else:
                    response = httpx.post(f"{url}/v1/enroll", json=body, verify=context)
                if response.status_code != 201:
                    failures.append(response.text)
        finally:
            if http is not None:
                http.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{len(failures)} enrollments failed: {failures[0]}")
    return len(tokens) / elapsed


def _in_process(directory: Path, tokens: list[str], csrs: list[str]) -> tuple[float, float]:
    """(RegistrationAuthority.enroll/s, CertificateAuthority.sign/s), one thread, same store."""
    from mtlskit.cadir import CaDirectory

    ca_dir = CaDirectory.open(directory)
    issuer = ca_dir.issuer((directory.parent / "pass").read_bytes().splitlines()[0])
    store = SqlStore.open(database_url(directory, "ca.db"))
    try:
        authority: CertificateAuthority = ca_dir.authority(issuer, store)
        ra = RegistrationAuthority(authority=authority, records=store)
        start = time.perf_counter()
        for token, csr in zip(tokens, csrs, strict=True):
            ra.enroll(token, csr, now=dt.datetime.now(dt.UTC))
        enroll_rate = len(tokens) / (time.perf_counter() - start)
        loaded = [load_csr(csr.encode()) for csr in csrs]
        identity = parse_identity("spiffe://acme.com/sign")
        start = time.perf_counter()
        for csr in loaded:
            authority.sign(csr, identity, now=dt.datetime.now(dt.UTC))
        sign_rate = len(loaded) / (time.perf_counter() - start)
    finally:
        store.close()
    return enroll_rate, sign_rate


def run(quick: bool) -> Section:
    count = 96 if quick else 800
    repeats = 1 if quick else 3
    results: dict[str, list[float]] = {
        "keepalive": [],
        "handshake": [],
        "id_token": [],
        "ra": [],
        "sign": [],
    }
    # On the project's disk, not a tmpfs: an fsync that costs nothing measures nothing.
    with tempfile.TemporaryDirectory(dir=ROOT) as temp:
        directory = Path(temp, "ca")
        _ca(directory)
        profile = parse_ca_config((directory / "ca.toml").read_bytes(), source="ca.toml").profile
        for attempt in range(repeats):
            process, url = _serve(directory)
            try:
                for mode in ("keepalive", "handshake"):
                    tokens = _tokens(directory, count, f"{mode}{attempt}")
                    rate = _over_https(
                        url, directory / "root.pem", tokens, _csrs(count), reuse=mode == "keepalive"
                    )
                    results[mode].append(rate)
                rate = _over_https(
                    url,
                    directory / "root.pem",
                    _id_tokens(count, f"a{attempt}"),
                    _csrs(count),
                    reuse=True,
                    field="id_token",
                )
                results["id_token"].append(rate)
            finally:
                process.terminate()
                process.wait(timeout=10)
            tokens = _tokens(directory, count, f"ra{attempt}")
            ra_rate, sign_rate = _in_process(directory, tokens, _csrs(count))
            results["ra"].append(ra_rate)
            results["sign"].append(sign_rate)
    median = {key: statistics.median(values) for key, values in results.items()}
    sign = median["sign"]
    rows = [
        [
            f"HTTPS, {CLIENTS} clients, keep-alive",
            f"{median['keepalive']:.0f}",
            f"{median['keepalive'] / sign:.2f}×",
        ],
        [
            f"HTTPS, {CLIENTS} clients, new TLS connection each",
            f"{median['handshake']:.0f}",
            f"{median['handshake'] / sign:.2f}×",
        ],
        [
            f"HTTPS, {CLIENTS} clients, keep-alive, workload-identity id token (RS256, jti)",
            f"{median['id_token']:.0f}",
            f"{median['id_token'] / sign:.2f}×",
        ],
        [
            "in-process RegistrationAuthority.enroll (token + CSR)",
            f"{median['ra']:.0f}",
            f"{median['ra'] / sign:.2f}×",
        ],
        ["in-process CertificateAuthority.sign (CSR only)", f"{sign:.0f}", "1.00×"],
    ]
    body = "\n".join(
        [
            f"{count} enrollments per run, median of {repeats}; profile {PROFILES[profile].name}, "
            "P-256 keys, SQLite synchronous=FULL. In-process: one fsync'd transaction per "
            "token redemption and per certificate. Over HTTPS: the calls that queue while "
            "the CA thread is busy run as one batch under one COMMIT (group commit, at most "
            "32), each answered only after it. Machine: " + machine() + ".",
            "",
            table(["path", "enrollments/s", "vs in-process sign"], rows),
            "",
            "The server runs every CA call on one thread (the store is single-writer "
            "anyway), so the HTTPS figure is bounded by that thread plus TLS and HTTP "
            "parsing on the event loop, sharing one interpreter; group commit takes the "
            "fsyncs off that path, so what remains is CPU.",
        ]
    )
    return Section(title="Enrollment over HTTPS (bench/enroll)", body=body)
