"""``probe``: an attack battery against any mTLS endpoint, reporting expected vs observed.

testssl.sh and sslyze test a server's own TLS; this tests how an endpoint treats
*client* certificates: no certificate, a copied certificate without its key
(tlslite-ng signs CertificateVerify with a foreign key), impostors from an unknown
CA or self-signed, defective certificates from a CA the endpoint trusts, a revoked
one, and identity headers a client tries to smuggle to the backend. The case
table and verdict logic are pure (``_cases``); the rest is the IO shell.

>>> from mtlskit.probe import CASES, Expect
>>> [case.id for case in CASES if case.expect is Expect.INFO]
['no-eku']

Run it (a live endpoint is needed)::

    report = run_probe("127.0.0.1:8443", chain=[cert], key=key, ca_dir=Path("ca"),
                       passphrase=b"...", crl_out=Path("ca/crl.pem"))
    report.exit_code, report.result("foreign-key-tls1.3").observation.alert
"""

from mtlskit.probe._cases import (
    CASES,
    SPOOF_HEADERS,
    Case,
    CaseResult,
    Expect,
    Needs,
    Observation,
    Outcome,
    ProbeReport,
    Verdict,
    alert_from_ssl_error,
    judge,
)
from mtlskit.probe._render import report_lines, report_table
from mtlskit.probe._run import parse_target, run_probe

__all__ = [
    "CASES",
    "SPOOF_HEADERS",
    "Case",
    "CaseResult",
    "Expect",
    "Needs",
    "Observation",
    "Outcome",
    "ProbeReport",
    "Verdict",
    "alert_from_ssl_error",
    "judge",
    "parse_target",
    "report_lines",
    "report_table",
    "run_probe",
]
