"""nginx + authz-server against nginx alone, under the same load: the latency mtlskit adds.

One client certificate (P-256, leaf + intermediate), nginx with one worker, the
backend an nginx ``return 200`` on another port. "nginx alone" is the very
config ``mtlskit config nginx`` writes with its ``auth_request`` line removed, so
the only difference is the check. ``ab -E`` presents the client certificate;
concurrency 1, so ab's mean time per request is the latency a client sees:

- new connection: ``ab`` without ``-k`` (a full TLS handshake per request);
- keep-alive: ``ab -k`` (one connection, many requests).

The generated config runs as written (nginx keeps authz-server's answer for the
rest of the current second), with ``--forward xfcc`` (one identity header, not
seven) and without its ``proxy_cache`` line (one subrequest to authz-server per
request). "nginx alone" forwards no identity; two more baselines forward what bare
nginx can: the subject DN, or the escaped certificate. Then every setup at 16
concurrent clients, requests/s, one after the other and side by side with nginx
alone: the goals of issue 25 (≥ 0.9× nginx alone keep-alive, ≥ 0.95× full
handshakes). Medians over interleaved runs.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
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


def _generate(
    proxy: str, tmp: Path, out: Path, port: int, backend: int, authz: int, *extra: str
) -> None:
    """``mtlskit config PROXY`` for the bench's CA, backend and authz-server port."""
    args = [
        "config", proxy, "--trust", tmp / "root.pem",
        "--intermediate", tmp / "issuing.pem", "--crl", tmp / "crl.pem",
        "--policy", tmp / "policy.toml", "--server-cert", tmp / "server.pem",
        "--server-key", tmp / "server.key", "--listen", f"127.0.0.1:{port}",
        "--upstream", f"http://127.0.0.1:{backend}", "--authz", f"http://127.0.0.1:{authz}",
        "--out", out, "--authz-config", out.with_suffix(".toml"), *extra,
    ]  # fmt: skip
    if mtlskit([str(a) for a in args]) != 0:
        raise RuntimeError(f"mtlskit config {proxy} failed")


def _nginx_conf(work: Path, body: str, main: str = "") -> Path:
    temp = " ".join(
        f"{kind}_temp_path {work};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = work / "nginx.conf"
    conf.write_text(
        f"{main}daemon off;\nuser {getpass.getuser()};\nworker_processes 1;\n"
        f"pid {work}/nginx.pid;\n"
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
    seconds = 2 if quick else 4
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
            masters: dict[str, int] = {}
            module, unbuilt = _build_module()
            for scenario, edit in NGINX_SCENARIOS.items():
                if edit.module and module is None:
                    continue
                authz_port = _port()
                port = _port()
                out = tmp / f"{re.sub(r'[^a-z]+', '-', scenario)}.conf"
                toml = out.with_suffix(".toml")
                _generate("nginx", tmp, out, port, backend_port, authz_port, *edit.args)
                snippet = out.read_text()
                for before, after in edit.replace:
                    if before not in snippet:
                        raise RuntimeError(f"{scenario}: {before!r} not in the generated config")
                    snippet = snippet.replace(before, after)
                main = ""
                if edit.module:
                    snippet, main = _module_config(snippet), f"load_module {module};\n"
                if not scenario.startswith("alone"):
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
                conf = _nginx_conf(work, snippet, main)
                processes.append(subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)]))
                _wait(port, processes[-1])
                ports[scenario] = port
                masters[scenario] = processes[-1].pid

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
            rates, beside, cpu = _nginx_16_clients(ports, masters, client, repeats, seconds)
            haproxy = _haproxy_part(tmp, backend_port, quick) if shutil.which("haproxy") else None
        finally:
            for process in reversed(processes):
                stop_process(process)

    ms = {key: statistics.median(values) for key, values in samples.items()}
    rows = []
    for scenario in ports:
        row: list[object] = [
            f"nginx {scenario}"
            if scenario.startswith("alone")
            else f"nginx + authz-server, {scenario}"
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
            *_nginx_rates(rates, beside, cpu, repeats, seconds),
            "",
            "C module (prototype): bench/nginx_module, a C module keeping authz-server's answers "
            "in worker memory until the end of the second instead of nginx's file cache; not part "
            "of mtlskit (stock nginx cannot do this; docs/proxies.md)."
            + (f" Not measured: {unbuilt}." if module is None else ""),
        ]
    )
    goals = _nginx_goals(rates, beside)
    if haproxy is not None:
        body += "\n\n" + haproxy[0]
        goals += haproxy[1]
    return Section(title="authz-server behind nginx: added latency", body=body, goals=goals)


@dataclass(frozen=True, slots=True, kw_only=True)
class Edit:
    """How a scenario's config differs from ``mtlskit config nginx``'s output."""

    args: tuple[str, ...] = ()  # more options for mtlskit config nginx
    replace: tuple[tuple[str, str], ...] = ()  # (text, replacement) in the written config
    module: bool = False  # the check by bench/nginx_module instead of auth_request + cache


_NO_CHECK = ("auth_request /_mtlskit_authz;", "")
# "alone" forwards no identity at all; a backend behind bare nginx that must know who called
# gets a header nginx can fill itself: the subject DN, or (the only way to a SPIFFE ID or
# any SAN) the certificate. Those two are the like-for-like baselines.
NGINX_SCENARIOS = {
    "alone": Edit(replace=(_NO_CHECK,)),
    "alone, forwarding the DN": Edit(
        replace=(
            _NO_CHECK,
            ('X-SSL-Client-S-DN "";', "X-SSL-Client-S-DN $ssl_client_s_dn;"),
            ('X-SSL-Client-Verify "";', "X-SSL-Client-Verify $ssl_client_verify;"),
        )
    ),
    "alone, forwarding the certificate": Edit(
        replace=(
            _NO_CHECK,
            ('Escaped-Cert "";', "Escaped-Cert $ssl_client_escaped_cert;"),
        )
    ),
    "generated": Edit(),
    "generated, --forward xfcc": Edit(args=("--forward", "xfcc")),
    "no nginx cache": Edit(replace=(("proxy_cache mtlskit_authz;", ""),)),
    "C module (prototype)": Edit(module=True),
}
MODULE = Path(__file__).parent / "nginx_module"


def _module_config(snippet: str) -> str:
    """The generated config with auth_request + proxy_cache swapped for the prototype module.

    The module's key is the generated cache key without its ``$time_iso8601`` (the module
    flushes its answers at every new second itself), read from the config, not copied."""
    cache_key = re.search(r'proxy_cache_key "([^"]*)";', snippet)
    if cache_key is None:
        raise RuntimeError("no proxy_cache_key in the generated nginx config")
    key = cache_key.group(1).removesuffix(" $time_iso8601")
    snippet = snippet.replace(
        "auth_request /_mtlskit_authz;",
        f'mtlskit_check /_mtlskit_authz;\n        mtlskit_check_key "{key}";',
    )
    snippet = re.sub(
        r"auth_request_set \$(\S+) \$upstream_http_(\S+);", r"mtlskit_check_set $\1 \2;", snippet
    )
    return re.sub(r"\n\s*proxy_cache[ _][^;]*;", "", snippet)


def _build_module() -> tuple[Path | None, str]:
    """bench/nginx_module built for this nginx (source from Debian's archive), or why not.

    Kept in ~/.cache/mtlskit-bench by nginx version and module source, so it is built once.
    """
    version = re.search(
        r"nginx/(\S+)",
        subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr,
    )
    if version is None or not all(shutil.which(p) for p in ("apt-get", "make", "cc", "tar")):
        return None, "needs nginx, apt-get, make, cc and tar"
    release = version.group(1)
    source = b"".join(f.read_bytes() for f in sorted(MODULE.iterdir()))
    tag = f"{release}-{hashlib.sha256(source).hexdigest()[:12]}"
    cache = Path.home() / ".cache" / "mtlskit-bench" / f"nginx-module-{tag}"
    built = cache / "ngx_http_mtlskit_module.so"
    if built.exists():
        return built, ""
    cache.mkdir(parents=True, exist_ok=True)
    lists = cache / "apt-lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (cache / "src.sources").write_text(
        "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    apt = [
        "-o", f"Dir::Etc::sourcelist={cache / 'src.sources'}", "-o", "Dir::Etc::sourceparts=-",
        "-o", f"Dir::State::Lists={lists}", "-o", "APT::Get::List-Cleanup=0",
    ]  # fmt: skip
    tarball = cache / f"nginx_{release}.orig.tar.gz"
    for step in (["update"], ["source", "--download-only", "nginx"]):
        done = subprocess.run(
            ["apt-get", *apt, *step], cwd=cache, capture_output=True, text=True, check=False
        )
    if not tarball.exists():  # only the upstream tarball is needed, whatever else failed
        return None, f"apt-get source nginx gave no {tarball.name}: {done.stderr.strip()[-200:]}"
    subprocess.run(["tar", "xzf", tarball.name], cwd=cache, check=True)
    tree = cache / f"nginx-{release}"
    for argv in (
        [
            "./configure",
            "--with-compat",
            "--with-http_ssl_module",
            f"--add-dynamic-module={MODULE}",
        ],
        ["make", "modules"],
    ):
        done = subprocess.run(argv, cwd=tree, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return None, f"{argv[0]} failed: {(done.stdout + done.stderr).strip()[-300:]}"
    shutil.copy(tree / "objs" / "ngx_http_mtlskit_module.so", built)
    return built, ""


Rates = dict[tuple[str, bool], list[float]]


def _worker_seconds(master: int) -> float:
    """CPU seconds (user + system) of an nginx master's one worker so far."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    (worker,) = (c for c in children if b"worker" in Path(f"/proc/{c}/cmdline").read_bytes())
    fields = Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _nginx_16_clients(
    ports: dict[str, int], masters: dict[str, int], client: Path, repeats: int, seconds: int
) -> tuple[Rates, Rates, Rates]:
    """Requests/s at 16 clients: each setup alone in turn, and each beside nginx alone.

    ``rates[(setup, keepalive)]`` one after the other (the order reversed every repeat), with
    ``cpu``: the nginx worker's CPU µs per request in those runs (less swayed by the rest of
    the machine than the rates); ``beside[(setup, keepalive)]`` the setup's rate over nginx
    alone's, both loaded at once (same seconds, same load from the rest of the machine).
    """
    rates: Rates = {(s, k): [] for s in ports for k in (False, True)}
    cpu: Rates = {(s, k): [] for s in ports for k in (False, True)}
    beside: Rates = {(s, k): [] for s in ports if s != "alone" for k in (False, True)}
    for repeat in range(repeats):
        for keepalive in (False, True):
            for scenario in sorted(ports, key=list(ports).index, reverse=bool(repeat % 2)):
                before = _worker_seconds(masters[scenario])
                rate = _ab_rate(ports[scenario], client, seconds, keepalive=keepalive)
                used = _worker_seconds(masters[scenario]) - before
                rates[(scenario, keepalive)].append(rate)
                cpu[(scenario, keepalive)].append(used / (rate * seconds) * 1e6)
            for scenario in ports:
                if scenario != "alone":
                    pair = {name: ports[name] for name in ("alone", scenario)}
                    both = _ab_rates_together(pair, client, seconds, keepalive=keepalive)
                    beside[(scenario, keepalive)].append(both[scenario] / both["alone"])
    return rates, beside, cpu


def _pairs(rates: Rates, key: tuple[str, bool], base: str = "alone") -> list[float]:
    """Each repeat's ratio to ``base``, measured in the same repeat: load hits both alike."""
    return [x / y for x, y in zip(rates[key], rates[(base, key[1])], strict=True)]


def _spread(values: list[float]) -> str:
    """Median, and in brackets the lowest and highest."""
    return f"{statistics.median(values):.2f}× ({min(values):.2f}–{max(values):.2f})"


def _nginx_rates(rates: Rates, beside: Rates, cpu: Rates, repeats: int, seconds: int) -> list:
    rate = {key: statistics.median(values) for key, values in rates.items()}
    worker = {key: statistics.median(values) for key, values in cpu.items()}
    rows = [
        [
            f"nginx {s}" if s.startswith("alone") else f"nginx + authz-server, {s}",
            f"{rate[(s, False)]:,.0f}",
            "1.00×" if s == "alone" else _spread(_pairs(rates, (s, False))),
            "1.00×" if s == "alone" else _spread(beside[(s, False)]),
            f"{rate[(s, True)]:,.0f}",
            "1.00×" if s == "alone" else _spread(_pairs(rates, (s, True))),
            "1.00×" if s == "alone" else _spread(beside[(s, True)]),
            f"{worker[(s, True)]:.1f}",
        ]
        for s in NGINX_SCENARIOS
        if (s, True) in rate
    ]
    like = [
        f"- {gen} vs nginx {base}: keep-alive "
        f"{_spread(_pairs(rates, (gen, True), base))}; worker CPU per request "
        f"{worker[(gen, True)] / worker[(base, True)]:.2f}×"
        for base in ("alone", "alone, forwarding the DN", "alone, forwarding the certificate")
        for gen in ("generated", "generated, --forward xfcc")
    ]
    return [
        f"### nginx, {HAPROXY_CLIENTS} clients",
        "",
        f"Requests/s with {HAPROXY_CLIENTS} concurrent `ab -E` clients (same certificate), "
        f'nginx 1 worker, medians of {repeats} interleaved {seconds} s runs. "vs alone": '
        "the median of the repeats' ratios to the nginx-alone run of the same repeat (in "
        'brackets: the lowest and highest); "side by side": the setup and nginx alone loaded '
        "at once by one `ab` each, so both see the same load from the rest of the machine; "
        '"worker µs/req": CPU time of the nginx worker per keep-alive request (median). '
        '"alone" forwards no identity; "forwarding the DN" adds `$ssl_client_s_dn` and '
        '`$ssl_client_verify`, "forwarding the certificate" `$ssl_client_escaped_cert` (the '
        "only way a backend behind bare nginx learns a SPIFFE ID or other SAN). "
        "`--forward xfcc`: one identity header instead of the default seven (XFCC + verdict).",
        "",
        table(
            [
                "setup",
                "new conn req/s",
                "vs alone",
                "side by side",
                "keep-alive req/s",
                "vs alone",
                "side by side",
                "worker µs/req",
            ],
            rows,
        ),
        "",
        "Like for like (one after the other, each repeat's two ratios to nginx alone divided):",
        "",
        *like,
    ]


def _nginx_goals(rates: Rates, beside: Rates) -> list[Goal]:
    def measured(keepalive: bool) -> tuple[str, bool]:
        key = ("generated", keepalive)
        after, side = _pairs(rates, key), beside[key]
        text = f"{_spread(side)} side by side; {_spread(after)} one after the other"
        return text, statistics.median(side) >= (0.9 if keepalive else 0.95)

    (keep, keep_met), (new, new_met) = measured(True), measured(False)
    return [
        Goal(
            name="nginx + authz-server keep-alive req/s vs nginx alone, 16 clients",
            target="≥ 0.9×",
            measured=keep,
            met=keep_met,
            issue="#25",
        ),
        Goal(
            name="nginx + authz-server full-handshake req/s vs nginx alone, 16 clients",
            target="≥ 0.95×",
            measured=new,
            met=new_met,
            issue="#25",
        ),
    ]


# --- HAProxy: generated config + Lua against the same config without the Lua check ---------

HAPROXY_CLIENTS = 16


def _ab_failures(out: str) -> tuple[int, int]:
    """ab's failed (connect, read, length) and non-2xx request counts."""
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    return tuple(int(m.group(1)) if m else 0 for m in (failed, non2xx))


def _ab_rate(
    port: int, client: Path, seconds: int, *, keepalive: bool, bad: list[int] | None = None
) -> float:
    """Requests/s of ``ab`` with HAPROXY_CLIENTS concurrent clients for ``seconds``.

    A failed or non-2xx request raises, unless ``bad`` is given: then its port is appended
    once per such request and the run counts (one odd answer must not lose the numbers).
    """
    args = ["ab", "-q", "-r", "-c", str(HAPROXY_CLIENTS), "-t", str(seconds), "-n", "10000000"]
    args += ["-E", str(client), *(["-k"] if keepalive else [])]
    out = subprocess.run(
        [*args, f"https://127.0.0.1:{port}/"], check=True, capture_output=True, text=True
    ).stdout
    failures = sum(_ab_failures(out))
    if (failures or not _per_second(out)) and bad is None:
        raise RuntimeError(f"ab saw failures on port {port}:\n{out}")
    if bad is not None:
        bad += [port] * failures
    return _per_second(out)


def _per_second(out: str) -> float:
    """ab's requests/s; 0 when it completed none (it then prints no rate)."""
    rate = re.search(r"Requests per second:\s+([\d.]+)", out)
    return float(rate.group(1)) if rate else 0.0


def _ab_rates_together(
    ports: dict[str, int],
    client: Path,
    seconds: int,
    *,
    keepalive: bool,
    bad: list[int] | None = None,
) -> dict[str, float]:
    """Requests/s of one ``ab`` per setup, all running at once: under the same load.

    ``bad`` as for ``_ab_rate``.
    """
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
        failures = 0 if process.returncode else sum(_ab_failures(out))
        if process.returncode or (failures and bad is None):
            raise RuntimeError(f"ab failed against {name}:\n{out}")
        if bad is not None:
            bad += [ports[name]] * failures
        rates[name] = _per_second(out)
    return rates


_LOG = "log stderr format raw local0 info"
_LOG_DEFAULTS = "    log global\n    option httplog\n    option dontlog-normal\n"


def _haproxy_failures(ports: dict[str, int], logs: dict[str, Path], bad: list[int]) -> list[str]:
    """Lines for the report: each setup's failed or non-2xx requests and what HAProxy logged.

    Counted, not fatal: under load one odd answer must not lose the whole run's numbers.
    """
    lines = []
    for scenario, port in ports.items():
        text = logs[scenario].read_text(errors="replace")
        statuses: dict[str, int] = {}
        for status in re.findall(r" mtlskit_mtls~ \S+ \S+ (\d{3}) .* \"GET ", text):
            if not status.startswith("2"):
                statuses[status] = statuses.get(status, 0) + 1
        reasons = sorted(set(re.findall(r"no decision from authz-server \S+ \((.*)\)", text)))
        count = bad.count(port)
        if count or statuses or reasons:
            logged = ", ".join(f"{n}× {status}" for status, n in sorted(statuses.items()))
            lines.append(
                f"- **HAProxy {scenario}: {count} request(s) failed or answered non-2xx** "
                f"(HAProxy's log: {logged or 'no non-2xx answer'}"
                + (f"; no decision from authz-server: {'; '.join(reasons)}" if reasons else "")
                + ")"
            )
    return lines or ["No request failed or was answered non-2xx in these runs."]


def _haproxy_part(tmp: Path, backend_port: int, quick: bool) -> tuple[str, list[Goal]]:
    """Bare HAProxy (``verify required`` + plain proxy) vs HAProxy + Lua + authz-server."""
    seconds, repeats = (2, 3) if quick else (3, 7)
    processes: list[subprocess.Popen] = []
    ports: dict[str, int] = {}
    logs: dict[str, Path] = {}
    bad: list[int] = []  # a port per failed or non-2xx request
    try:
        for scenario in ("alone", "with mtlskit"):
            authz_port, port = _port(), _port()
            out = tmp / f"haproxy-{scenario.replace(' ', '-')}.cfg"
            toml = out.with_suffix(".toml")
            _generate("haproxy", tmp, out, port, backend_port, authz_port)
            if scenario == "alone":  # the very same config without the check
                lines = out.read_text().splitlines()
                check = ("lua-load", "lua.mtlskit", "mtlskit_key", "mtlskit_allowed", "mtlskit_h")
                check += ("mtlskit_unavailable",)
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
            # Log only what went wrong (dontlog-normal): the status and termination state of
            # any odd answer, next to the Lua's warnings on stderr.
            text = out.read_text().replace("global\n", f"global\n    {_LOG}\n", 1)
            out.write_text(text.replace("defaults\n", f"defaults\n{_LOG_DEFAULTS}", 1))
            with out.with_suffix(".log").open("w") as log:
                processes.append(subprocess.Popen(["haproxy", "-db", "-f", str(out)], stderr=log))
            _wait(port, processes[-1])
            ports[scenario] = port
            logs[scenario] = out.with_suffix(".log")
        client = tmp / "client.pem"
        for port in ports.values():  # warm up
            _ab_rate(port, client, 1, keepalive=True, bad=bad)
        samples: dict[tuple[str, bool], list[float]] = {(s, k): [] for s in ports for k in (0, 1)}
        together: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(repeats):
            for keepalive in (False, True):  # alternate which goes first: no order bias
                for scenario in sorted(ports, reverse=bool(repeat % 2)):
                    port = ports[scenario]
                    rate = _ab_rate(port, client, seconds, keepalive=keepalive, bad=bad)
                    samples[(scenario, keepalive)].append(rate)
                both = _ab_rates_together(ports, client, seconds, keepalive=keepalive, bad=bad)
                together[keepalive].append(both["with mtlskit"] / both["alone"])
    finally:
        for process in reversed(processes):
            stop_process(process)
    failures = _haproxy_failures(ports, logs, bad)
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
            "",
            *failures,
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
