"""A certificate or CSR with the same extension twice, validly signed.

cryptography raises ``DuplicateExtension`` (no ``ValueError``) when such extensions are
read; fuzzing the forwarded-header readers found it escaping as a traceback. Every
consumer of a hostile certificate must answer with its usual refusal instead.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from _duplicated import certificate_with_two_sans, csr_with_two_sans
from conftest import SPIFFE_ID, write
from mtlskit.errors import InputError
from mtlskit.forward import read_aws
from mtlskit.forward.names import AWS_LEAF
from mtlskit.identity import ClientIdentity, IdentityError
from mtlskit.issue import CLIENT_AUTH, EnrollmentRefused, csr_identities, parse_identity
from mtlskit.issue._csr import review_csr
from mtlskit.lint import lint_chain
from mtlskit.publicca import ClientAuthStatus, client_auth_status
from mtlskit.verify import Code, TrustStore, Verifier

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def twice():
    return certificate_with_two_sans(SPIFFE_ID)


def test_identity_is_refused_with_a_code(twice):
    with pytest.raises(IdentityError) as refused:
        ClientIdentity.from_certificate(twice)
    assert refused.value.code == "san_missing"


def test_verifier_rejects_instead_of_raising(twice):
    decision = Verifier(trust=TrustStore.build(anchors=[twice])).verify([twice], at=NOW)
    assert decision.codes == (Code.CHAIN_UNTRUSTED,)
    assert "cannot be parsed" in decision.reasons[0].message
    assert "Duplicate" in decision.reasons[0].message


def test_lint_reports_extensions_malformed(twice):
    (report,) = lint_chain([twice], at=NOW)
    assert "extensions_malformed" in [finding.code for finding in report.findings]


def test_forwarded_leaf_yields_no_identity(twice):
    pem = twice.public_bytes(Encoding.PEM).decode()
    client = read_aws([(AWS_LEAF.encode(), urllib.parse.quote(pem, safe="").encode())])
    assert client is not None
    assert client.present
    assert client.identity is None


def test_ca_refuses_the_csr_as_input(twice):
    csr = csr_with_two_sans(SPIFFE_ID)
    assert csr.is_signature_valid  # refused for its extensions, not its signature
    with pytest.raises(InputError, match="malformed extensions"):
        review_csr(csr, identity=parse_identity(SPIFFE_ID), profile=CLIENT_AUTH)
    with pytest.raises(EnrollmentRefused) as refused:
        csr_identities(csr)
    assert refused.value.code == "csr_invalid"


def test_inspect_shows_the_extensions_as_unreadable(tmp_path, run_cli, twice):
    path = write(tmp_path / "twice.pem", twice.public_bytes(Encoding.PEM))
    table = run_cli("inspect", path)
    assert table.code == 0, table.err
    assert "unreadable (Duplicate 2.5.29.17 extension found)" in table.out
    result = run_cli("inspect", "--json", path)
    assert result.code == 0, result.err
    (summary,) = json.loads(result.out)["results"]
    assert summary["extensions_error"] == "Duplicate 2.5.29.17 extension found"
    assert summary["identity"] is None
    assert summary["subject_alt_names"] == []


def test_public_ca_check_flags_an_unreadable_eku(twice):
    """The clientAuth policy verdict is there to flag: an EKU that cannot be read is
    judged as if it allowed clientAuth, never silently passed as serverAuth-only."""
    verdict = client_auth_status(twice)
    assert verdict.status is not ClientAuthStatus.NOT_CLIENT_AUTH
