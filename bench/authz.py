"""nginx + authz-server against nginx alone, under the same load: the latency mtlskit adds.

One client certificate (P-256, leaf + intermediate), nginx with one worker, the
backend an nginx ``return 200`` on another port. "nginx alone" is the very
config ``mtlskit config nginx`` writes with its ``auth_request`` line removed, so
the only difference is the check. ``ab -E`` presents the client certificate;
concurrency 1, so ab's mean time per request is the latency a client sees:

- new connection: ``ab`` without ``-k`` (a full TLS handshake per request);
- keep-alive: ``ab -k`` (one connection, many requests).

authz-server runs twice, with the decision cache on and off (off = path
validation, CRL and policy for every request). Medians over interleaved runs.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from bench.report import Goal, Section, stop_process, table
from bench.report import free_port as _port
from bench.report import wait_for_port as _wait
from mtlskit.cli import main as mtlskit
from mtlskit.testca import SERVER_AUTH, IssuedCert, LeafSpec, TestCA

IDENTITY = "spiffe://acme.com/billing/payments"


def _crl(issuer: IssuedCert) -> bytes:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=1))
        .sign(issuer.key, hashes.SHA256())
        .public_bytes(Encoding.PEM)
    )


def _nginx_conf(work: Path, body: str) -> Path:
    temp = " ".join(
        f"{kind}_temp_path {work};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = work / "nginx.conf"
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {work}/nginx.pid;\n"
        f"error_log {work}/error.log error;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n  access_log off;\n  {temp}\n{body}\n}}\n"
    )
    return conf


def _ab(port: int, client: Path, requests: int, *, keepalive: bool) -> float:
    """Mean ms per request at concurrency 1 (ab's "Time per request (mean)")."""
    args = ["ab", "-q", "-n", str(requests), "-c", "1", "-E", str(client)]
    if keepalive:
        args.append("-k")
    out = subprocess.run(
        [*args, f"https://127.0.0.1:{port}/"], check=True, capture_output=True, text=True
    ).stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    if failed or non2xx:
        raise RuntimeError(f"ab saw failures on port {port}:\n{out}")
    return float(re.search(r"Time per request:\s+([\d.]+) \[ms\] \(mean\)", out).group(1))


def run(quick: bool) -> Section:
    if not (shutil.which("nginx") and shutil.which("ab")):
        return Section(
            title="authz-server behind nginx",
            body="Skipped: needs nginx and ab (apache2-utils).",
        )
    new_n, keep_n, repeats = (150, 1500, 3) if quick else (600, 6000, 5)
    with tempfile.TemporaryDirectory(prefix="bench-authz-") as name:
        tmp = Path(name)
        ca = TestCA(name="bench")
        leaf = ca.issue(LeafSpec(uris=(IDENTITY,)))
        (tmp / "root.pem").write_bytes(ca.root.cert_pem)
        (tmp / "issuing.pem").write_bytes(ca.issuer.cert_pem)
        (tmp / "client.pem").write_bytes(leaf.chain_pem + leaf.key_pem)  # ab -E: chain + key
        # nginx checks a CRL for every CA in the chain: the issuing CA's and the root's.
        (tmp / "crl.pem").write_bytes(_crl(ca.issuer) + _crl(ca.root))
        (tmp / "policy.toml").write_text(f'[[allow]]\nid = "{IDENTITY}"\n')
        server = TestCA(name="bench server").issue(LeafSpec(dns=("localhost",), eku=(SERVER_AUTH,)))
        (tmp / "server.pem").write_bytes(server.chain_pem)
        (tmp / "server.key").write_bytes(server.key_pem)

        processes: list[subprocess.Popen] = []
        try:
            backend_port = _port()
            work = tmp / "backend"
            work.mkdir()
            conf = _nginx_conf(
                work,
                f"server {{ listen 127.0.0.1:{backend_port}; keepalive_requests 100000;"
                f' location / {{ return 200 "ok"; }} }}',
            )
            processes.append(subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)]))
            _wait(backend_port, processes[-1])

            ports: dict[str, int] = {}
            for scenario in ("alone", "cache on", "cache off"):
                authz_port = _port()
                port = _port()
                out = tmp / f"{scenario.replace(' ', '-')}.conf"
                toml = out.with_suffix(".toml")
                args = [
                    "config", "nginx", "--trust", tmp / "root.pem",
                    "--intermediate", tmp / "issuing.pem", "--crl", tmp / "crl.pem",
                    "--policy", tmp / "policy.toml", "--server-cert", tmp / "server.pem",
                    "--server-key", tmp / "server.key", "--listen", f"127.0.0.1:{port}",
                    "--upstream", f"http://127.0.0.1:{backend_port}",
                    "--authz", f"http://127.0.0.1:{authz_port}",
                    "--out", out, "--authz-config", toml,
                ]  # fmt: skip
                if mtlskit([str(a) for a in args]) != 0:
                    raise RuntimeError("mtlskit config nginx failed")
                snippet = out.read_text()
                if scenario == "alone":
                    snippet = snippet.replace("auth_request /_mtlskit_authz;", "")
                else:
                    text = toml.read_text().replace('decisions = "-"', 'decisions = "/dev/null"')
                    if scenario == "cache off":
                        text = text.replace("enabled = true", "enabled = false")
                    toml.write_text(text)
                    processes.append(
                        subprocess.Popen(
                            [
                                sys.executable,
                                "-m",
                                "mtlskit",
                                "authz-server",
                                "--config",
                                str(toml),
                            ],
                            stderr=subprocess.DEVNULL,
                        )
                    )
                    _wait(authz_port, processes[-1])
                work = tmp / f"nginx-{len(ports)}"
                work.mkdir()
                snippet = snippet.replace(
                    "server_name _;", "server_name _;\n    keepalive_requests 100000;"
                )
                conf = _nginx_conf(work, snippet)
                processes.append(subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)]))
                _wait(port, processes[-1])
                ports[scenario] = port

            client = tmp / "client.pem"
            for port in ports.values():  # warm up (and fill the cache)
                _ab(port, client, 20, keepalive=True)
            samples: dict[tuple[str, bool], list[float]] = {
                (s, k): [] for s in ports for k in (False, True)
            }
            for _ in range(repeats):
                for scenario, port in ports.items():
                    samples[(scenario, False)].append(_ab(port, client, new_n, keepalive=False))
                    samples[(scenario, True)].append(_ab(port, client, keep_n, keepalive=True))
            haproxy = _haproxy_part(tmp, backend_port, quick) if shutil.which("haproxy") else None
        finally:
            for process in reversed(processes):
                stop_process(process)

    ms = {key: statistics.median(values) for key, values in samples.items()}
    rows = []
    for scenario in ports:
        row: list[object] = [
            f"nginx {scenario}" if scenario == "alone" else f"nginx + authz-server, {scenario}"
        ]
        for keepalive in (False, True):
            value = ms[(scenario, keepalive)]
            base = ms[("alone", keepalive)]
            added = "" if scenario == "alone" else f"{(value - base) * 1000:+.0f} µs"
            ratio = "1.00×" if scenario == "alone" else f"{value / base:.2f}×"
            row += [f"{value:.3f}", added, ratio]
        rows.append(row)
    body = "\n".join(
        [
            "Latency per request at concurrency 1 (`ab -E`, client certificate P-256 leaf + "
            "intermediate; nginx 1 worker; backend nginx `return 200`; authz-server one "
            f"process on uvloop). Medians of {repeats} interleaved runs of {new_n} new-connection "
            f"and {keep_n} keep-alive requests.",
            "",
            table(
                [
                    "setup",
                    "new conn ms/req",
                    "added",
                    "ratio",
                    "keep-alive ms/req",
                    "added",
                    "ratio",
                ],
                rows,
            ),
            "",
            '"alone" is the generated config without its `auth_request` line. The check is one '
            "HTTP/1.1 request over a kept-alive upstream connection per proxied request; with "
            "the cache on it costs a dict lookup plus the policy match, with it off a full path "
            "validation, CRL lookup and policy match (and the identity headers are rebuilt).",
        ]
    )
    goals: list[Goal] = []
    if haproxy is not None:
        body += "\n\n" + haproxy[0]
        goals += haproxy[1]
    return Section(title="authz-server behind nginx: added latency", body=body, goals=goals)


# --- HAProxy: generated config + Lua against the same config without the Lua check ---------

HAPROXY_CLIENTS = 16


def _ab_rate(port: int, client: Path, seconds: int, *, keepalive: bool) -> float:
    """Requests/s of ``ab`` with HAPROXY_CLIENTS concurrent clients for ``seconds``."""
    args = ["ab", "-q", "-r", "-c", str(HAPROXY_CLIENTS), "-t", str(seconds), "-n", "10000000"]
    args += ["-E", str(client), *(["-k"] if keepalive else [])]
    out = subprocess.run(
        [*args, f"https://127.0.0.1:{port}/"], check=True, capture_output=True, text=True
    ).stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    if failed or re.search(r"Non-2xx responses:\s+(\d+)", out):
        raise RuntimeError(f"ab saw failures on port {port}:\n{out}")
    return float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))


def _haproxy_part(tmp: Path, backend_port: int, quick: bool) -> tuple[str, list[Goal]]:
    """Bare HAProxy (``verify required`` + plain proxy) vs HAProxy + Lua + authz-server."""
    seconds, repeats = (2, 3) if quick else (5, 5)
    processes: list[subprocess.Popen] = []
    ports: dict[str, int] = {}
    try:
        for scenario in ("alone", "with mtlskit"):
            authz_port, port = _port(), _port()
            out = tmp / f"haproxy-{scenario.replace(' ', '-')}.cfg"
            toml = out.with_suffix(".toml")
            args = [
                "config", "haproxy", "--trust", tmp / "root.pem",
                "--intermediate", tmp / "issuing.pem", "--crl", tmp / "crl.pem",
                "--policy", tmp / "policy.toml", "--server-cert", tmp / "server.pem",
                "--server-key", tmp / "server.key", "--listen", f"127.0.0.1:{port}",
                "--upstream", f"http://127.0.0.1:{backend_port}",
                "--authz", f"http://127.0.0.1:{authz_port}",
                "--out", out, "--authz-config", toml,
            ]  # fmt: skip
            if mtlskit([str(a) for a in args]) != 0:
                raise RuntimeError("mtlskit config haproxy failed")
            if scenario == "alone":  # the very same config without the check
                lines = out.read_text().splitlines()
                check = ("lua-load", "lua.mtlskit", "mtlskit_key", "mtlskit_allowed", "mtlskit_h")
                out.write_text("\n".join(x for x in lines if not any(c in x for c in check)) + "\n")
            else:
                toml.write_text(
                    toml.read_text().replace('decisions = "-"', 'decisions = "/dev/null"')
                )
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "mtlskit", "authz-server", "--config", str(toml)],
                        stderr=subprocess.DEVNULL,
                    )
                )
                _wait(authz_port, processes[-1])
            processes.append(subprocess.Popen(["haproxy", "-db", "-f", str(out)]))
            _wait(port, processes[-1])
            ports[scenario] = port
        client = tmp / "client.pem"
        for port in ports.values():  # warm up
            _ab_rate(port, client, 1, keepalive=True)
        samples: dict[tuple[str, bool], list[float]] = {(s, k): [] for s in ports for k in (0, 1)}
        for _ in range(repeats):
            for scenario, port in ports.items():
                for keepalive in (False, True):
                    rate = _ab_rate(port, client, seconds, keepalive=keepalive)
                    samples[(scenario, keepalive)].append(rate)
    finally:
        for process in reversed(processes):
            stop_process(process)
    rate = {key: statistics.median(values) for key, values in samples.items()}
    ratio = {k: rate[("with mtlskit", k)] / rate[("alone", k)] for k in (False, True)}
    rows = [
        [
            "HAProxy alone" if s == "alone" else "HAProxy + Lua + authz-server",
            f"{rate[(s, False)]:,.0f}",
            "1.00×" if s == "alone" else f"{ratio[False]:.2f}×",
            f"{rate[(s, True)]:,.0f}",
            "1.00×" if s == "alone" else f"{ratio[True]:.2f}×",
        ]
        for s in ports
    ]
    body = "\n".join(
        [
            f"### HAProxy {HAPROXY_CLIENTS} clients",
            "",
            f"Requests/s with {HAPROXY_CLIENTS} concurrent `ab -E` clients (same certificate), "
            "HAProxy 2.6 with its default threads (one per core), medians of "
            f'{repeats} interleaved {seconds} s runs. "alone" is the config '
            "`mtlskit config haproxy` writes without its Lua lines (`verify required`, header "
            "deletion, plain proxy).",
            "",
            table(
                ["setup", "new conn req/s", "ratio", "keep-alive req/s", "ratio"],
                rows,
            ),
            "",
            "The Lua keeps each decision for at most 1 s per thread (leaf, method, URL), so the "
            "check is a table lookup for all but about one request per second per client.",
        ]
    )
    goals = [
        Goal(
            name="HAProxy + authz-server keep-alive req/s vs HAProxy alone, 16 clients",
            target="≥ 0.9×",
            measured=f"{ratio[True]:.2f}×",
            met=ratio[True] >= 0.9,
            issue="#25",
        ),
        Goal(
            name="HAProxy + authz-server full-handshake req/s vs HAProxy alone, 16 clients",
            target="≥ 0.95×",
            measured=f"{ratio[False]:.2f}×",
            met=ratio[False] >= 0.95,
            issue="#25",
        ),
    ]
    return body, goals
