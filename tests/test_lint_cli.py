"""``mtlskit lint`` in-process: exit codes 0/1/2, the --json shape, --at and --profile."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from conftest import CLEAN, write
from mtlskit.testca import SERVER_AUTH, IssuedCert, TestCA

FINDING_KEYS = {"code", "severity", "message", "reference"}


@pytest.fixture
def clean_pem(tmp_path: Path, clean_leaf: IssuedCert) -> Path:
    return write(tmp_path / "clean.pem", clean_leaf.chain_pem)


@pytest.fixture
def server_only_pem(tmp_path: Path, ca: TestCA) -> Path:
    return write(
        tmp_path / "server-only.pem", ca.issue(CLEAN.replace(eku=(SERVER_AUTH,))).chain_pem
    )


def test_clean_exits_0_with_a_pass_line(run_cli, clean_pem: Path) -> None:
    result = run_cli("lint", clean_pem)
    assert result.code == 0, result.err
    assert "PASS (client-auth)" in result.out and "clean" in result.out


def test_error_finding_exits_1_and_names_the_code(run_cli, server_only_pem: Path) -> None:
    result = run_cli("lint", server_only_pem)
    assert result.code == 1
    assert "eku_missing_client_auth" in result.out and "FAIL" in result.out


def test_json_shape(run_cli, clean_pem: Path, server_only_pem: Path) -> None:
    result = run_cli("lint", "--json", clean_pem, server_only_pem)
    assert result.code == 1
    document = json.loads(result.out)
    assert set(document) == {"results"}
    results = document["results"]
    # Each file is a chain: leaf and intermediate (the root is not sent by clients).
    assert [(Path(r["path"]).name, r["index"]) for r in results] == [
        ("clean.pem", 0),
        ("clean.pem", 1),
        ("server-only.pem", 0),
        ("server-only.pem", 1),
    ]
    for entry in results:
        assert set(entry) == {"path", "index", "subject", "findings"}
        for finding in entry["findings"]:
            assert set(finding) == FINDING_KEYS
            assert finding["severity"] in {"error", "warning", "notice", "info"}
    assert results[1]["subject"] == "CN=acme issuing CA"
    assert results[0]["findings"] == []
    (finding,) = results[2]["findings"]
    assert finding["code"] == "eku_missing_client_auth" and finding["severity"] == "error"
    assert finding["reference"].startswith("RFC 5280 §4.2.1.12")


def test_at_changes_the_verdict(run_cli, clean_pem: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    assert run_cli("lint", "--at", now.isoformat(), clean_pem).code == 0
    later = run_cli("lint", "--json", "--at", (now + dt.timedelta(days=3)).isoformat(), clean_pem)
    assert later.code == 1
    codes = [f["code"] for f in json.loads(later.out)["results"][0]["findings"]]
    assert codes == ["cert_expired"]
    # A date without a zone means UTC; a date alone means its midnight.
    earlier = run_cli("lint", "--at", (now - dt.timedelta(days=3)).date().isoformat(), clean_pem)
    assert earlier.code == 1 and "cert_not_yet_valid" in earlier.out


def test_profile_selection(run_cli, tmp_path: Path, ca: TestCA, clean_pem: Path) -> None:
    dns_only = write(
        tmp_path / "dns.pem", ca.issue(CLEAN.replace(uris=(), dns=("a.acme.com",))).chain_pem
    )
    assert run_cli("lint", dns_only).code == 0
    spiffe = run_cli("lint", "--profile", "spiffe", "--json", dns_only)
    assert spiffe.code == 1
    assert "spiffe_id_missing" in {
        f["code"] for f in json.loads(spiffe.out)["results"][0]["findings"]
    }
    both = run_cli("lint", "--profile", "client-auth", "--profile", "spiffe", "--json", clean_pem)
    assert both.code == 0  # a notice is not a failure
    codes = {f["code"] for f in json.loads(both.out)["results"][0]["findings"]}
    assert codes == {"spiffe_eku_missing_server_auth"}


def test_public_ca_profile_with_extra_public_roots(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = TestCA(name="public-like")
    monkeypatch.setenv(
        "MTLSKIT_EXTRA_PUBLIC_ROOTS", str(write(tmp_path / "roots.pem", public.bundle_pem))
    )
    chain = write(tmp_path / "public.pem", public.issue(CLEAN).chain_pem)
    result = run_cli("lint", "--profile", "public-ca", "--json", chain)
    codes = {f["code"] for f in json.loads(result.out)["results"][0]["findings"]}
    assert "public_ca_issuer" in codes


def test_pkcs12_with_password_file(run_cli, tmp_path: Path, clean_leaf: IssuedCert) -> None:
    bundle = pkcs12.serialize_key_and_certificates(
        b"client",
        clean_leaf.key,
        clean_leaf.cert,
        [clean_leaf.chain[1]],
        BestAvailableEncryption(b"pw"),
    )
    p12 = write(tmp_path / "client.p12", bundle)
    password = write(tmp_path / "password", b"pw\n")
    assert run_cli("lint", "--password-file", password, p12).code == 0
    wrong = write(tmp_path / "wrong", b"nope\n")
    result = run_cli("lint", "--password-file", wrong, p12)
    assert result.code == 2 and "wrong password" in result.err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\x00\xff garbage \x13", "client.pem"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "truncated"),
    ],
    ids=["empty", "garbage", "truncated"],
)
def test_unreadable_input_exits_2_with_one_line(
    run_cli, tmp_path: Path, content: bytes, message: str
) -> None:
    result = run_cli("lint", write(tmp_path / "client.pem", content))
    assert result.code == 2
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err


def test_missing_file_bad_at_and_unknown_profile_exit_2(
    run_cli, clean_pem: Path, tmp_path: Path
) -> None:
    assert run_cli("lint", tmp_path / "absent.pem").code == 2
    bad_at = run_cli("lint", "--at", "yesterday", clean_pem)
    assert bad_at.code == 2 and "ISO 8601" in bad_at.err
    assert run_cli("lint", "--profile", "webpki", clean_pem).code == 2


def test_help_lists_the_profiles(run_cli) -> None:
    result = run_cli("lint", "--help")
    assert result.code == 0
    for name in ("client-auth", "spiffe", "gcp-lb", "aws-alb", "public-ca"):
        assert name in result.out
