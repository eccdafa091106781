"""nginx + authz-server against nginx alone, under the same load: the latency mtlskit adds.

One client certificate (P-256, leaf + intermediate), nginx with one worker, the
backend an nginx ``return 200`` on another port. "nginx alone" is the very
config ``mtlskit config nginx`` writes with its ``auth_request`` line removed, so
the only difference is the check. ``ab -E`` presents the client certificate;
concurrency 1, so ab's mean time per request is the latency a client sees:

- new connection: ``ab`` without ``-k`` (a full TLS handshake per request);
- keep-alive: ``ab -k`` (one connection, many requests).

The generated config runs as written (nginx keeps authz-server's answer for the
rest of the current second) and without its ``proxy_cache`` line (one subrequest
to authz-server per request, authz-server's own cache on). Then the same three
setups at 16 concurrent clients, requests/s: the goals of issue 25 (≥ 0.9× nginx
alone keep-alive, ≥ 0.95× full handshakes). Medians over interleaved runs.
"""

from __future__ import annotations

import datetime as dt
import getpass
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
        f"daemon off;\nuser {getpass.getuser()};\nworker_processes 1;\npid {work}/nginx.pid;\n"
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
            for scenario, removed in NGINX_SCENARIOS.items():
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
                for line in removed:
                    snippet = snippet.replace(line, "")
                if scenario != "alone":
                    text = toml.read_text().replace('decisions = "-"', 'decisions = "/dev/null"')
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
            rates: dict[tuple[str, bool], list[float]] = {
                (s, k): [] for s in ports for k in (False, True)
            }
            for _ in range(repeats):
                for scenario, port in ports.items():
                    for keepalive in (False, True):
                        rate = _ab_rate(port, client, 2 if quick else 5, keepalive=keepalive)
                        rates[(scenario, keepalive)].append(rate)
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
            '"alone" is the generated config without its `auth_request` line '
            "(`ssl_verify_client on` + `proxy_pass`). Without nginx's cache the check is one "
            "HTTP/1.1 request to authz-server per proxied request (authz-server answers from "
            "its own cache: a dict lookup plus the policy match); with it, nginx answers the "
            "subrequest from its cache for all but the first request per client, method and "
            "URI in each second.",
            "",
            *_nginx_rates(rates, repeats, 2 if quick else 5),
        ]
    )
    goals = _nginx_goals(rates)
    if haproxy is not None:
        body += "\n\n" + haproxy[0]
        goals += haproxy[1]
    return Section(title="authz-server behind nginx: added latency", body=body, goals=goals)


# scenario -> lines taken out of the generated config
NGINX_SCENARIOS = {
    "alone": ("auth_request /_mtlskit_authz;",),
    "generated": (),
    "no nginx cache": ("proxy_cache mtlskit_authz;",),
}


def _pairs(rates: dict[tuple[str, bool], list[float]], key: tuple[str, bool]) -> list[float]:
    """Each repeat's ratio to nginx alone, measured back to back: load hits both alike."""
    return [x / y for x, y in zip(rates[key], rates[("alone", key[1])], strict=True)]


def _nginx_ratios(rates: dict[tuple[str, bool], list[float]]) -> dict[tuple[str, bool], float]:
    return {key: statistics.median(_pairs(rates, key)) for key in rates}


def _nginx_rates(rates: dict[tuple[str, bool], list[float]], repeats: int, seconds: int) -> list:
    rate = {key: statistics.median(values) for key, values in rates.items()}
    ratio = _nginx_ratios(rates)
    rows = [
        [
            f"nginx {s}" if s == "alone" else f"nginx + authz-server, {s}",
            f"{rate[(s, False)]:,.0f}",
            _spread(rates, ratio, (s, False)),
            f"{rate[(s, True)]:,.0f}",
            _spread(rates, ratio, (s, True)),
        ]
        for s in NGINX_SCENARIOS
    ]
    return [
        f"### nginx, {HAPROXY_CLIENTS} clients",
        "",
        f"Requests/s with {HAPROXY_CLIENTS} concurrent `ab -E` clients (same certificate), "
        f"nginx 1 worker, medians of {repeats} interleaved {seconds} s runs; a ratio is the "
        "median of the runs' ratios to the nginx-alone run just before (in brackets: the lowest "
        "and highest).",
        "",
        table(["setup", "new conn req/s", "vs alone", "keep-alive req/s", "vs alone"], rows),
    ]


def _spread(rates: dict, ratio: dict, key: tuple[str, bool]) -> str:
    if key[0] == "alone":
        return "1.00×"
    pairs = _pairs(rates, key)
    return f"{ratio[key]:.2f}× ({min(pairs):.2f}–{max(pairs):.2f})"


def _nginx_goals(rates: dict[tuple[str, bool], list[float]]) -> list[Goal]:
    ratio = _nginx_ratios(rates)
    return [
        Goal(
            name="nginx + authz-server keep-alive req/s vs nginx alone, 16 clients",
            target="≥ 0.9×",
            measured=f"{ratio[('generated', True)]:.2f}×",
            met=ratio[("generated", True)] >= 0.9,
            issue="#25",
        ),
        Goal(
            name="nginx + authz-server full-handshake req/s vs nginx alone, 16 clients",
            target="≥ 0.95×",
            measured=f"{ratio[('generated', False)]:.2f}×",
            met=ratio[("generated", False)] >= 0.95,
            issue="#25",
        ),
    ]


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


def _ab_rates_together(
    ports: dict[str, int], client: Path, seconds: int, *, keepalive: bool
) -> dict[str, float]:
    """Requests/s of one ``ab`` per setup, all running at once: under the same load."""
    args = ["ab", "-q", "-r", "-c", str(HAPROXY_CLIENTS), "-t", str(seconds), "-n", "10000000"]
    args += ["-E", str(client), *(["-k"] if keepalive else [])]
    running = {
        name: subprocess.Popen(
            [*args, f"https://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True
        )
        for name, port in ports.items()
    }
    rates = {}
    for name, process in running.items():
        out, _ = process.communicate(timeout=seconds + 60)
        if process.returncode or re.search(r"Non-2xx responses:\s+(\d+)", out):
            raise RuntimeError(f"ab failed against {name}:\n{out}")
        rates[name] = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
    return rates


def _haproxy_part(tmp: Path, backend_port: int, quick: bool) -> tuple[str, list[Goal]]:
    """Bare HAProxy (``verify required`` + plain proxy) vs HAProxy + Lua + authz-server."""
    seconds, repeats = (2, 3) if quick else (3, 7)
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
        together: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(repeats):
            for keepalive in (False, True):  # alternate which goes first: no order bias
                for scenario in sorted(ports, reverse=bool(repeat % 2)):
                    rate = _ab_rate(ports[scenario], client, seconds, keepalive=keepalive)
                    samples[(scenario, keepalive)].append(rate)
                both = _ab_rates_together(ports, client, seconds, keepalive=keepalive)
                together[keepalive].append(both["with mtlskit"] / both["alone"])
    finally:
        for process in reversed(processes):
            stop_process(process)
    rate = {key: statistics.median(values) for key, values in samples.items()}
    # The machine is shared: the ratio is the median of back-to-back pairs, not of medians.
    pairs = {
        k: sorted(
            w / a for w, a in zip(samples[("with mtlskit", k)], samples[("alone", k)], strict=True)
        )
        for k in (False, True)
    }
    ratio = {k: statistics.median(values) for k, values in pairs.items()}
    spread = {k: f"{ratio[k]:.2f}× ({pairs[k][0]:.2f}–{pairs[k][-1]:.2f})" for k in pairs}
    side = {k: sorted(values) for k, values in together.items()}
    beside = {k: statistics.median(values) for k, values in side.items()}
    beside_text = {k: f"{beside[k]:.2f}× ({side[k][0]:.2f}–{side[k][-1]:.2f})" for k in side}
    rows = [
        [
            "HAProxy alone" if s == "alone" else "HAProxy + Lua + authz-server",
            f"{rate[(s, False)]:,.0f}",
            "1.00×" if s == "alone" else spread[False],
            "1.00×" if s == "alone" else beside_text[False],
            f"{rate[(s, True)]:,.0f}",
            "1.00×" if s == "alone" else spread[True],
            "1.00×" if s == "alone" else beside_text[True],
        ]
        for s in ports
    ]
    body = "\n".join(
        [
            f"### HAProxy {HAPROXY_CLIENTS} clients",
            "",
            f"Requests/s with {HAPROXY_CLIENTS} concurrent `ab -E` clients (same certificate), "
            "HAProxy 2.6 with its default threads (one per core), medians of "
            f"{repeats} interleaved {seconds} s runs; the ratio is the median of the {repeats} "
            "back-to-back pairs' ratios (in brackets: the lowest and highest pair). "
            '"alone" is the config '
            "`mtlskit config haproxy` writes without its Lua lines (`verify required`, header "
            'deletion, plain proxy). "side by side": both setups loaded at once by one `ab` '
            "each for the same seconds, so both see the same load from the rest of the machine "
            "(the sequential pairs' ratios swing widely when it is busy); the goals use it.",
            "",
            table(
                [
                    "setup",
                    "new conn req/s",
                    "ratio",
                    "side by side",
                    "keep-alive req/s",
                    "ratio",
                    "side by side",
                ],
                rows,
            ),
            "",
            "A decision lasts until the end of the second it was asked in: on a kept-alive "
            "connection the repeat (same second, method, URL) is an HAProxy variable comparison "
            "without Lua; a new connection of the same client is a lookup in the Lua table.",
        ]
    )
    goals = [
        Goal(
            name="HAProxy + authz-server keep-alive req/s vs HAProxy alone, 16 clients",
            target="≥ 0.9×",
            measured=f"{beside[True]:.2f}× side by side; {ratio[True]:.2f}× one after the other",
            met=beside[True] >= 0.9,
            issue="#25",
        ),
        Goal(
            name="HAProxy + authz-server full-handshake req/s vs HAProxy alone, 16 clients",
            target="≥ 0.95×",
            measured=f"{beside[False]:.2f}× side by side; {ratio[False]:.2f}× one after the other",
            met=beside[False] >= 0.95,
            issue="#25",
        ),
    ]
    return body, goals
