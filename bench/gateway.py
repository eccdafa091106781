"""Gateway vs nginx as an mTLS reverse proxy: handshakes, keep-alive, concurrency and memory.

Same machine, certificates, backend and load tools for both, in one run:

- the backend is a separate nginx (one worker) answering a fixed body, so neither
  proxy shares its process with the backend;
- the peer is nginx with one worker, ``ssl_verify_client on``, ``proxy_pass`` with an
  upstream keep-alive pool of 256 idle connections (``keepalive 256``, the gateway's
  default ``pool_size``); mtlskit is one gateway process (the CLI, on uvloop when
  installed);
- full handshakes: ``openssl s_time -new -cert -key`` (a new TLS connection per request,
  TLS 1.3 and 1.2);
- keep-alive and the concurrency curve: ``ab -k -E`` (HTTP/1.0 with ``Connection:
  keep-alive``, which both proxies honour). That connections really are reused is
  checked, not assumed: the gateway's connection log counts handshakes, nginx's
  access log carries ``$connection``;
- memory: a fresh gateway and a fresh nginx, VmRSS from ``/proc/<pid>/status`` as a
  client process holds 100 … 10,000 idle mTLS connections open (non-blocking
  sockets driven by a selector; ``RLIMIT_NOFILE`` raised on both sides).

Runs of the two proxies are interleaved so the shared machine's load hits both alike.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import selectors
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.report import Goal, Section, mtls_files, plot, stop_process, table
from bench.report import free_port as _port
from bench.report import wait_for_port as _wait

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
AB = shutil.which("ab") or "/usr/bin/ab"
NOFILE = 20_000
PROXIES = ("mtlskit", "nginx")


def _raise_nofile() -> None:
    """Room for 10,000 connections (and their upstream/log descriptors) in this process."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


# --- the site: certificates, configs, processes ------------------------------------------


@dataclass
class Site:
    """One directory with both proxies' configs, the shared certificates and the backend."""

    dir: Path
    backend: int
    ports: dict[str, int]
    status_port: int

    @classmethod
    def create(cls, d: Path) -> Site:
        mtls_files(d)
        site = cls(
            dir=d,
            backend=_port(),
            ports={"mtlskit": _port(), "nginx": _port()},
            status_port=_port(),
        )
        site._write_configs()
        return site

    def _write_configs(self) -> None:
        d = self.dir
        temp = (
            f"client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};"
            f" uwsgi_temp_path {d}; scgi_temp_path {d};"
        )
        (d / "backend.conf").write_text(
            f"""
worker_processes 1; daemon off; pid {d}/backend.pid; error_log {d}/backend-error.log;
worker_rlimit_nofile {NOFILE};
events {{ worker_connections 4096; }}
http {{
  access_log off; {temp}
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{self.backend}; location / {{ return 200 "ok\\n"; }} }}
}}
"""
        )
        # A JSON line per request with the facts the gateway's access log has (as a real
        # mTLS deployment logs them), and $connection: the TLS connections that carried them.
        (d / "nginx.conf").write_text(
            f"""
worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx-error.log;
worker_rlimit_nofile {NOFILE};
events {{ worker_connections {NOFILE}; }}
http {{
  {temp}
  log_format mtls escape=json '{{"time":"$time_iso8601","event":"request",'
    '"request_id":"$request_id","peer":"$remote_addr:$remote_port",'
    '"method":"$request_method","path":"$uri","status":$status,'
    '"identity":"$ssl_client_s_dn","verified":"$ssl_client_verify",'
    '"upstream":"$upstream_addr","bytes_sent":$bytes_sent,'
    '"request_time":$request_time,"connection":$connection}}';
  access_log {d}/nginx-access.log mtls buffer=64k flush=1s;
  keepalive_requests 1000000; keepalive_timeout 600s; client_header_timeout 600s;
  upstream backend {{ server 127.0.0.1:{self.backend}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{self.ports["nginx"]} ssl;
    ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server.key;
    ssl_client_certificate {d}/trust.pem; ssl_verify_client on; ssl_verify_depth 3;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-SSL-Client-Verify $ssl_client_verify;
    }}
  }}
  server {{ listen 127.0.0.1:{self.status_port}; access_log off; stub_status; }}
}}
"""
        )
        (d / "gateway.toml").write_text(
            f"""
[listen]
address = "127.0.0.1:{self.ports["mtlskit"]}"
cert = "server.pem"
key = "server.key"
[client_auth]
trust = ["trust.pem"]
[upstream]
urls = ["http://127.0.0.1:{self.backend}"]
[forward]
formats = ["xfcc", "verdict"]
[limits]
idle_timeout = 600.0
[log]
access = "access.log"
connection = "connection.log"
"""
        )

    def all_cores(self) -> None:
        """Both proxies on every core from now on: nginx ``worker_processes auto``, the
        gateway ``workers = "auto"`` (their production settings; one of each before)."""
        for name in ("nginx.conf", "gateway.toml"):
            path = self.dir / name
            text = path.read_text().replace("worker_processes 1;", "worker_processes auto;")
            path.write_text(
                text.replace('key = "server.key"\n', 'key = "server.key"\nworkers = "auto"\n')
            )

    def start(self, name: str) -> subprocess.Popen[bytes]:
        d = self.dir
        if name == "backend":
            command = [NGINX, "-c", str(d / "backend.conf"), "-p", str(d)]
            port = self.backend
        elif name == "nginx":
            command = [NGINX, "-c", str(d / "nginx.conf"), "-p", str(d)]
            port = self.ports["nginx"]
        else:
            command = [
                sys.executable,
                "-m",
                "mtlskit",
                "gateway",
                "--config",
                str(d / "gateway.toml"),
            ]
            port = self.ports["mtlskit"]
        process = subprocess.Popen(command, cwd=d, preexec_fn=_raise_nofile)  # noqa: PLW1509
        _wait(port, process)
        return process

    def worker(self, name: str, process: subprocess.Popen[bytes]) -> int:
        """The pid that holds the connections: nginx's (only) worker, or the gateway."""
        if name == "mtlskit":
            return process.pid
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            children = _children(process.pid)
            if children:
                return children[0]
            time.sleep(0.05)
        raise RuntimeError("nginx has no worker")

    def handshakes(self) -> int:
        """Handshakes the gateway accepted so far (its connection log)."""
        path = self.dir / "connection.log"
        if not path.exists():
            return 0
        return path.read_text().count('"outcome":"accepted"')

    def nginx_connections(self) -> tuple[int, int]:
        """(requests, distinct connections) in nginx's access log so far."""
        path = self.dir / "nginx-access.log"
        if not path.exists():
            return 0, 0
        connections = re.findall(r'"connection":(\d+)', path.read_text())
        return len(connections), len(set(connections))

    def nginx_active(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/", timeout=5) as r:
            return int(re.search(rb"Active connections: (\d+)", r.read()).group(1))


# --- load tools ------------------------------------------------------------------------


def _s_time(site: Site, port: int, version: str, seconds: int) -> float:
    d = site.dir
    out = subprocess.run(
        [
            "openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
            "-cert", str(d / "client.pem"), "-key", str(d / "client.key"),
            "-CAfile", str(d / "server-ca.pem"), "-www", "/", f"-{version}",
            "-time", str(seconds),
        ],
        capture_output=True, text=True, timeout=seconds + 30, check=False,
    )  # fmt: skip
    text = out.stdout + out.stderr
    match = re.search(r"(\d+) connections in ([\d.]+)s", text)
    if not match:
        raise RuntimeError(f"openssl s_time printed no rate: {text[-300:]}")
    return int(match.group(1)) / float(match.group(2))


@dataclass(frozen=True, slots=True)
class AbRun:
    rate: float  # requests/s
    p99_ms: float
    requests: int
    kept_alive: int  # ab's "Keep-Alive requests"
    bad: int  # failed + non-2xx


def _ab(site: Site, port: int, *, concurrency: int, seconds: int, keep_alive: bool) -> AbRun:
    args = [AB, "-q", "-r", "-c", str(concurrency), "-t", str(seconds), "-n", "10000000"]
    args += ["-E", str(site.dir / "client-full.pem")]
    if keep_alive:
        args.append("-k")
    done = subprocess.run(
        [*args, f"https://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    out = done.stdout + done.stderr
    rate = re.search(r"Requests per second:\s+([\d.]+)", out)
    complete = re.search(r"Complete requests:\s+(\d+)", out)
    p99 = re.search(r"^\s*99%\s+(\d+)", out, re.MULTILINE)
    if not rate or not complete or not p99:
        raise RuntimeError(f"ab printed no rate: {out[-400:]}")
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    kept = re.search(r"Keep-Alive requests:\s+(\d+)", out)
    return AbRun(
        rate=float(rate.group(1)),
        p99_ms=float(p99.group(1)),
        requests=int(complete.group(1)),
        kept_alive=int(kept.group(1)) if kept else 0,
        bad=(int(failed.group(1)) if failed else 0) + (int(non2xx.group(1)) if non2xx else 0),
    )


def _median_run(runs: list[AbRun]) -> AbRun:
    by_rate = sorted(runs, key=lambda r: r.rate)
    middle = by_rate[len(by_rate) // 2]
    return AbRun(
        rate=middle.rate,
        p99_ms=statistics.median(r.p99_ms for r in runs),
        requests=sum(r.requests for r in runs),
        kept_alive=sum(r.kept_alive for r in runs),
        bad=sum(r.bad for r in runs),
    )


# --- idle connections ------------------------------------------------------------------


class IdleClients:
    """Many idle mTLS connections from one process: non-blocking sockets, one selector.

    asyncio's SSL transports keep a 256 KiB buffer per connection; plain ``SSLSocket``
    objects driven by a selector keep the client small enough to hold 10,000.
    """

    def __init__(self, site: Site, port: int) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(site.dir / "server-ca.pem"))
        self.context.load_cert_chain(site.dir / "client.pem", site.dir / "client.key")
        self.open: list[ssl.SSLSocket] = []

    def grow(self, total: int, *, in_flight: int = 64) -> None:
        """Open connections (full mTLS handshakes) until ``total`` are established."""
        selector = selectors.DefaultSelector()
        pending = 0
        deadline = time.monotonic() + 300
        while len(self.open) < total:
            while pending < in_flight and len(self.open) + pending < total:
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", self.port))
                tls = self.context.wrap_socket(
                    sock, server_hostname="localhost", do_handshake_on_connect=False
                )
                selector.register(tls, selectors.EVENT_WRITE)
                pending += 1
            for key, _ in selector.select(timeout=1):
                tls = key.fileobj
                assert isinstance(tls, ssl.SSLSocket)
                try:
                    tls.do_handshake()
                except ssl.SSLWantReadError:
                    selector.modify(tls, selectors.EVENT_READ)
                    continue
                except ssl.SSLWantWriteError:
                    selector.modify(tls, selectors.EVENT_WRITE)
                    continue
                except (ssl.SSLError, OSError) as exc:
                    raise RuntimeError(f"idle client handshake failed: {exc!r}") from None
                selector.unregister(tls)
                pending -= 1
                self.open.append(tls)
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.open)} of {total} connections in 300 s")
        selector.close()

    def close(self) -> None:
        for tls in self.open:
            tls.close()
        self.open.clear()


def _settle(count: Callable[[], int], want: int, pid: int) -> float:
    """VmRSS once the server has finished ``want`` handshakes and its memory stopped moving."""
    deadline = time.monotonic() + 60
    while count() < want and time.monotonic() < deadline:
        time.sleep(0.1)
    if count() < want:
        raise RuntimeError(f"server saw {count()} of {want} connections")
    last = _rss_mb(pid)
    for _ in range(20):
        time.sleep(0.2)
        now = _rss_mb(pid)
        if abs(now - last) < 0.1:
            return now
        last = now
    return last


def _memory_curve(site: Site, sizes: list[int]) -> dict[str, list[tuple[float, float]]]:
    """VmRSS (MB) of each proxy's connection-holding process vs idle TLS connections."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for name in PROXIES:
        process = site.start(name)
        clients = IdleClients(site, site.ports[name])
        try:
            pid = site.worker(name, process)
            base_handshakes = site.handshakes()
            if name == "mtlskit":

                def count(base: int = base_handshakes) -> int:
                    return site.handshakes() - base
            else:

                def count(base: int = 0) -> int:
                    return site.nginx_active() - 1 - base  # less the status request itself

            points = [(0.0, _settle(count, 0, pid))]
            for size in sizes:
                clients.grow(size)
                points.append((float(size), _settle(count, size, pid)))
            curves[name] = points
        finally:
            clients.close()
            stop_process(process)
    return curves


# --- the run ---------------------------------------------------------------------------


def run(quick: bool) -> Section:
    _raise_nofile()
    s_time_seconds = 2 if quick else 5
    ab_seconds = 1 if quick else 4  # ab -t takes whole seconds
    repeats = 1 if quick else 3
    concurrency = [1, 16, 64] if quick else [1, 4, 16, 64, 256]
    sizes = [100, 1_000] if quick else [100, 1_000, 5_000, 10_000]
    with tempfile.TemporaryDirectory() as tmp:
        site = Site.create(Path(tmp))
        backend = site.start("backend")
        try:
            load = _load(site, s_time_seconds, ab_seconds, repeats, concurrency)
            memory = _memory_curve(site, sizes)
            site.all_cores()
            load.cores_full, load.cores_keep = _all_cores(site, s_time_seconds, ab_seconds, repeats)
        finally:
            stop_process(backend)
    return _section(
        quick=quick,
        load=load,
        memory=memory,
        ab_seconds=ab_seconds,
        method=(
            f"s_time {s_time_seconds} s × {repeats}, ab {ab_seconds} s per point"
            f" (× {repeats} at 16 clients), idle connections up to {sizes[-1]:,}"
        ),
    )


@dataclass
class Load:
    """Everything measured under request load, for the report."""

    full: dict[tuple[str, str], float]
    keep_run: dict[str, AbRun]
    reuse: tuple[int, int, int]  # gateway handshakes, nginx requests, nginx connections
    curve: dict[tuple[str, bool], list[tuple[int, AbRun]]]
    served: tuple[int, int]  # gateway access log: 200s, all
    cores_full: dict[str, float] = dataclasses.field(default_factory=dict)  # TLS 1.3, all cores
    cores_keep: dict[str, AbRun] = dataclasses.field(default_factory=dict)  # 16 clients


def _load(
    site: Site, s_time_seconds: int, ab_seconds: int, repeats: int, concurrency: list[int]
) -> Load:
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in PROXIES:
            processes[name] = site.start(name)
        for name in PROXIES:  # warm-up: imports, caches, upstream pools
            _ab(site, site.ports[name], concurrency=4, seconds=1, keep_alive=True)
        full: dict[tuple[str, str], float] = {}
        for version in ("tls1_3", "tls1_2"):
            samples: dict[str, list[float]] = {name: [] for name in PROXIES}
            for _ in range(repeats):
                for name in PROXIES:
                    samples[name].append(_s_time(site, site.ports[name], version, s_time_seconds))
            for name in PROXIES:
                full[(name, version)] = statistics.median(samples[name])
        # keep-alive at 16 clients, with proof of reuse from both servers' own logs
        handshakes_before = site.handshakes()
        time.sleep(1.2)  # nginx flushes its access log buffer every second
        nginx_before = site.nginx_connections()
        keep: dict[str, list[AbRun]] = {name: [] for name in PROXIES}
        for _ in range(repeats):
            for name in PROXIES:
                keep[name].append(
                    _ab(site, site.ports[name], concurrency=16, seconds=ab_seconds,
                        keep_alive=True)
                )  # fmt: skip
        time.sleep(1.2)
        gateway_conns = site.handshakes() - handshakes_before
        nginx_after = site.nginx_connections()
        # the concurrency curve, keep-alive and a new connection per request
        curve: dict[tuple[str, bool], list[tuple[int, AbRun]]] = {}
        for c in concurrency:
            for keep_alive in (True, False):
                for name in PROXIES:
                    result = _ab(
                        site, site.ports[name], concurrency=c, seconds=ab_seconds,
                        keep_alive=keep_alive,
                    )  # fmt: skip
                    curve.setdefault((name, keep_alive), []).append((c, result))
        log = (site.dir / "access.log").read_text().splitlines()
    finally:
        for process in processes.values():
            stop_process(process)
    return Load(
        full=full,
        keep_run={name: _median_run(runs) for name, runs in keep.items()},
        reuse=(
            gateway_conns,
            nginx_after[0] - nginx_before[0],
            nginx_after[1] - nginx_before[1],
        ),
        curve=curve,
        served=(sum('"status":200' in line for line in log), len(log)),
    )


def _all_cores(
    site: Site, s_time_seconds: int, ab_seconds: int, repeats: int
) -> tuple[dict[str, float], dict[str, AbRun]]:
    """TLS 1.3 full handshakes and keep-alive at 16 clients, both proxies on every core."""
    full: dict[str, list[float]] = {name: [] for name in PROXIES}
    keep: dict[str, list[AbRun]] = {name: [] for name in PROXIES}
    for _ in range(repeats):
        for name in PROXIES:  # one proxy at a time: each has the machine to itself
            process = site.start(name)
            try:
                _ab(site, site.ports[name], concurrency=4, seconds=1, keep_alive=True)  # warm
                full[name].append(_s_time(site, site.ports[name], "tls1_3", s_time_seconds))
                keep[name].append(
                    _ab(site, site.ports[name], concurrency=16, seconds=ab_seconds,
                        keep_alive=True)
                )  # fmt: skip
            finally:
                stop_process(process)
    return (
        {name: statistics.median(samples) for name, samples in full.items()},
        {name: _median_run(runs) for name, runs in keep.items()},
    )


def _section(
    *,
    quick: bool,
    load: Load,
    memory: dict[str, list[tuple[float, float]]],
    ab_seconds: int,
    method: str,
) -> Section:
    full, keep_run, curve, served = load.full, load.keep_run, load.curve, load.served
    full_ratio = {v: full[("mtlskit", v)] / full[("nginx", v)] for v in ("tls1_3", "tls1_2")}
    keep_ratio = keep_run["mtlskit"].rate / keep_run["nginx"].rate
    rows = [
        [
            f"{v.replace('_', '.').upper()} full handshake (`s_time -new`)",
            f"{full[('mtlskit', v)]:,.0f}",
            f"{full[('nginx', v)]:,.0f}",
            f"{full_ratio[v]:.2f}×",
        ]
        for v in ("tls1_3", "tls1_2")
    ]
    mk, ng = keep_run["mtlskit"], keep_run["nginx"]
    rows.append(
        [
            "keep-alive, 16 clients (`ab -k`)",
            f"{mk.rate:,.0f} (p99 {mk.p99_ms:.0f} ms)",
            f"{ng.rate:,.0f} (p99 {ng.p99_ms:.0f} ms)",
            f"{keep_ratio:.2f}×",
        ]
    )
    gateway_conns, nginx_reqs, nginx_conns = load.reuse
    curve_rows = []
    for keep_alive in (True, False):
        for (c, m), (_, n) in zip(
            curve[("mtlskit", keep_alive)], curve[("nginx", keep_alive)], strict=True
        ):
            curve_rows.append(
                [
                    "keep-alive" if keep_alive else "new connection",
                    c,
                    f"{m.rate:,.0f}",
                    f"{n.rate:,.0f}",
                    f"{m.rate / n.rate:.2f}×",
                    f"{m.p99_ms:.0f}",
                    f"{n.p99_ms:.0f}",
                    f"{m.bad}/{n.bad}",
                ]
            )
    images = [
        plot(
            "gateway-clients-rate",
            title="Gateway vs nginx: requests/s vs concurrent clients (mTLS)",
            xlabel="concurrent clients (ab -E)",
            ylabel="requests/s",
            series={
                f"{name} {'keep-alive' if keep_alive else 'new connection'}": [
                    (c, r.rate) for c, r in curve[(name, keep_alive)]
                ]
                for keep_alive in (True, False)
                for name in PROXIES
            },
            quick=quick,
        ),
        plot(
            "gateway-clients-p99",
            title="Gateway vs nginx: p99 latency vs concurrent clients (mTLS)",
            xlabel="concurrent clients (ab -E)",
            ylabel="p99 latency (ms)",
            series={
                f"{name} {'keep-alive' if keep_alive else 'new connection'}": [
                    (c, max(r.p99_ms, 0.5)) for c, r in curve[(name, keep_alive)]
                ]
                for keep_alive in (True, False)
                for name in PROXIES
            },
            quick=quick,
            logy=True,
        ),
        plot(
            "gateway-memory",
            title="Resident memory vs idle mTLS connections",
            xlabel="open idle TLS connections",
            ylabel="VmRSS (MB)",
            series={
                f"{name} ({'gateway process' if name == 'mtlskit' else 'nginx worker'})": [
                    (max(x, 10), y) for x, y in points
                ]
                for name, points in memory.items()
            },
            quick=quick,
        ),
    ]
    mem = memory["mtlskit"]
    largest, rss = mem[-1]
    per_conn_kb = (rss - mem[0][1]) * 1024 / largest
    nginx_per_conn_kb = (memory["nginx"][-1][1] - memory["nginx"][0][1]) * 1024 / largest
    memory_rows = [
        [f"{x:,.0f}", f"{m:,.1f}", f"{n:,.1f}"]
        for (x, m), (_, n) in zip(memory["mtlskit"], memory["nginx"], strict=True)
    ]
    cores = len(os.sched_getaffinity(0))
    core_full = load.cores_full["mtlskit"] / load.cores_full["nginx"]
    cm, cn = load.cores_keep["mtlskit"], load.cores_keep["nginx"]
    core_keep = cm.rate / cn.rate
    core_rows = [
        [
            "TLS1.3 full handshake (`s_time -new`)",
            f"{load.cores_full['mtlskit']:,.0f}",
            f"{load.cores_full['nginx']:,.0f}",
            f"{core_full:.2f}×",
        ],
        [
            "keep-alive, 16 clients (`ab -k`)",
            f"{cm.rate:,.0f} (p99 {cm.p99_ms:.0f} ms)",
            f"{cn.rate:,.0f} (p99 {cn.p99_ms:.0f} ms)",
            f"{core_keep:.2f}×",
        ],
    ]
    body = "\n".join(
        [
            f'**On every core** ({cores}): mtlskit `workers = "auto"` (a master handing '
            f"connections to {cores} gateway processes in turn) against nginx "
            f"`worker_processes auto` ({cores} "
            "workers), each proxy alone on the machine in turn with the same backend and "
            "load tools; medians of "
            f"{'1 run' if quick else '3 interleaved runs'}. This is how both are run in "
            "production, and the #6 throughput goals are judged on it.",
            "",
            table(["load", "mtlskit req/s", "nginx req/s", "ratio"], core_rows),
            "",
            "### One process each",
            "",
            "Both proxies verify the client certificate and relay to the same backend (a "
            "separate one-worker nginx answering `ok`); nginx runs **one worker**, mtlskit "
            "**one gateway process** (uvloop); each keeps up to 256 idle upstream connections "
            "(nginx `keepalive 256`, the gateway's default `pool_size`). Load tools: "
            "`openssl s_time -new` for full "
            "handshakes, `ab -E` (client certificate) for the rest. Both write a JSON access line "
            "per request with the same facts (nginx: `log_format ... escape=json` with the "
            "client's DN and verify result); medians of "
            f"{'1 run' if quick else '3 interleaved runs'} where stated.",
            "",
            table(["load", "mtlskit req/s", "nginx req/s", "ratio"], rows),
            "",
            f"Connection reuse under `ab -k`: ab counted {mk.kept_alive:,} of {mk.requests:,} "
            f"requests (mtlskit) and {ng.kept_alive:,} of {ng.requests:,} (nginx) on kept-alive "
            f"connections; the gateway's connection log shows {gateway_conns:,} handshakes for "
            f"its {mk.requests:,} requests, nginx's `$connection` {nginx_conns:,} connections "
            f"for {nginx_reqs:,} requests. The gateway's access log has {served[0]:,} of "
            f"{served[1]:,} requests answered 200.",
            "",
            "### Requests/s and p99 vs concurrent clients",
            "",
            f"`ab -E -c N` for {ab_seconds} s per point, "
            "with keep-alive (`-k`) and with a new TLS connection per request. "
            "ab is single-threaded and shares the 2 cores with the proxy and the backend, so "
            "at high rates it is part of what is measured, for both proxies alike.",
            "",
            table(
                [
                    "load",
                    "clients",
                    "mtlskit req/s",
                    "nginx req/s",
                    "ratio",
                    "mtlskit p99 ms",
                    "nginx p99 ms",
                    "failed (m/n)",
                ],
                curve_rows,
            ),
            "",
            "### Memory vs idle TLS connections",
            "",
            "A fresh process each, then one client process opening full mTLS handshakes "
            "(TLS 1.3, client certificate) and leaving the connections idle; VmRSS of the "
            "gateway process and of nginx's worker once every handshake was counted by the "
            "server (gateway connection log, nginx `stub_status`).",
            "",
            table(["idle connections", "mtlskit VmRSS MB", "nginx worker VmRSS MB"], memory_rows),
            "",
            f"Per connection: mtlskit {per_conn_kb:.1f} KiB, nginx {nginx_per_conn_kb:.1f} KiB.",
        ]
    )
    return Section(
        title="Gateway vs nginx (mTLS reverse proxy)",
        body=body,
        images=images,
        goals=[
            Goal(
                name="gateway full-handshake req/s vs nginx (all cores)",
                target="≥ 0.8×",
                measured=f"{core_full:.2f}× TLS 1.3 on {cores} cores; one process each: "
                f"TLS 1.3 {full_ratio['tls1_3']:.2f}×, TLS 1.2 {full_ratio['tls1_2']:.2f}×",
                met=core_full >= 0.8,
                issue="#6",
            ),
            Goal(
                name="gateway keep-alive req/s vs nginx (all cores)",
                target="≥ 0.6×",
                measured=f"{core_keep:.2f}× at 16 clients on {cores} cores (p99 "
                f"{cm.p99_ms:.0f} vs {cn.p99_ms:.0f} ms); one process each: {keep_ratio:.2f}×",
                met=core_keep >= 0.6,
                issue="#6",
            ),
            Goal(
                name="gateway memory, 10,000 idle TLS connections",
                target="< 300 MB RSS",
                measured=f"{rss:,.0f} MB at {largest:,.0f} ({per_conn_kb:.1f} KiB each)",
                met=(rss < 300) if largest >= 10_000 else None,
                issue="#6",
            ),
        ],
        peer="nginx, worker_processes auto and 1 (ssl_verify_client on, proxy_pass)",
        method=method,
    )


if __name__ == "__main__":
    section = run(quick="--quick" in sys.argv)
    print(section.body)
    print(json.dumps([dataclasses.asdict(g) for g in section.goals], indent=1))
