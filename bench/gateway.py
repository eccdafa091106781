"""Gateway vs nginx as an mTLS reverse proxy: full-handshake requests/s with ``openssl s_time``.

Same machine, certificates, backend (an nginx server block answering a fixed body)
and load generator for both: ``openssl s_time -new -cert -key -www /`` opens a new
TLS connection per request. nginx runs one worker with ``ssl_verify_client on``;
the gateway is one process (uvloop when installed). Keep-alive req/s and p99 need
a load tool that presents client certificates with keep-alive (``ab -E``), which
this machine lacks: those goals stay pending rather than guessed.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trustme

from bench.report import Goal, Section
from mtlskit.testca import LeafSpec, TestCA

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def _s_time(port: int, d: Path, version: str, seconds: int) -> float:
    out = subprocess.run(
        [
            "openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
            "-cert", str(d / "client.pem"), "-key", str(d / "client.key"),
            "-CAfile", str(d / "server-ca.pem"), "-www", "/", f"-{version}",
            "-time", str(seconds),
        ],
        capture_output=True, text=True, timeout=seconds + 30, check=False,
    )  # fmt: skip
    out = out.stdout + out.stderr
    match = re.search(r"(\d+) connections in ([\d.]+)s", out)
    if not match:
        raise RuntimeError(f"openssl s_time printed no rate: {out[-300:]}")
    return int(match.group(1)) / float(match.group(2))


def run(quick: bool) -> Section:
    seconds = 3 if quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ca = TestCA(name="bench", intermediate=False)  # s_time sends the leaf only
        client = ca.issue(LeafSpec(uris=("spiffe://acme.com/bench",)))
        (d / "client.pem").write_bytes(client.chain_pem)
        (d / "client.key").write_bytes(client.key_pem)
        (d / "trust.pem").write_bytes(ca.bundle_pem)
        server_ca = trustme.CA()
        server_ca.cert_pem.write_to_path(str(d / "server-ca.pem"))
        server = server_ca.issue_cert("127.0.0.1", "localhost")
        server.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
        server.private_key_pem.write_to_path(str(d / "server.key"))
        backend, nginx_port, gateway_port = _port(), _port(), _port()
        (d / "nginx.conf").write_text(
            f"""
worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{ listen 127.0.0.1:{backend}; location / {{ return 200 "ok\\n"; }} }}
  server {{
    listen 127.0.0.1:{nginx_port} ssl;
    ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server.key;
    ssl_client_certificate {d}/trust.pem; ssl_verify_client on; ssl_verify_depth 3;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets off;
    location / {{
      proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-SSL-Client-Verify $ssl_client_verify;
    }}
  }}
}}
"""
        )
        (d / "gateway.toml").write_text(
            f"""
[listen]
address = "127.0.0.1:{gateway_port}"
cert = "server.pem"
key = "server.key"
[client_auth]
trust = ["trust.pem"]
[upstream]
urls = ["http://127.0.0.1:{backend}"]
[forward]
formats = ["xfcc", "verdict"]
[log]
access = "{d}/access.log"
connection = "{d}/connection.log"
"""
        )
        nginx = subprocess.Popen([NGINX, "-c", str(d / "nginx.conf"), "-p", str(d)])
        gateway = subprocess.Popen(
            [sys.executable, "-m", "mtlskit", "gateway", "--config", str(d / "gateway.toml")]
        )
        try:
            _wait(nginx_port)
            _wait(gateway_port)
            rates: dict[tuple[str, str], float] = {}
            for version in ("tls1_3", "tls1_2"):
                for name, port in (("nginx", nginx_port), ("mtlskit", gateway_port)):
                    rates[(name, version)] = _s_time(port, d, version, seconds)
            log = (d / "access.log").read_text().splitlines()
            ok = sum('"status":200' in line for line in log)
        finally:
            for process in (gateway, nginx):
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
    ratios = {v: rates[("mtlskit", v)] / rates[("nginx", v)] for v in ("tls1_3", "tls1_2")}
    rows = "\n".join(
        f"| {v.replace('_', '.').upper()} full handshake | {rates[('mtlskit', v)]:,.0f} "
        f"| {rates[('nginx', v)]:,.0f} | {ratios[v]:.2f}× |"
        for v in ("tls1_3", "tls1_2")
    )
    worst = min(ratios.values())
    return Section(
        title="Gateway vs nginx (mTLS reverse proxy)",
        body=(
            "New TLS connection per request (`openssl s_time -new`), client certificate "
            "presented, both proxies verifying it and relaying to the same nginx backend.\n\n"
            "| load | mtlskit req/s | nginx req/s | ratio |\n|---|---:|---:|---:|\n"
            + rows
            + f"\n\nThe gateway's access log shows {ok:,} of {len(log):,} requests answered 200 "
            "(a check that the rate counts relayed requests, not refused handshakes).\n\n"
            "Keep-alive req/s and p99 are pending: `ab -E` (apache2-utils) is not "
            "installed here, and wrk/h2load cannot present client certificates.\n"
        ),
        goals=[
            Goal(
                name="gateway full-handshake req/s vs nginx",
                target="≥ 0.8×",
                measured=f"{worst:.2f}× (worst of TLS 1.3/1.2)",
                met=worst >= 0.8,
                issue="#6",
            ),
            Goal(
                name="gateway keep-alive req/s vs nginx",
                target="≥ 0.6×",
                measured="not measured (no keep-alive mTLS load tool)",
                met=None,
                issue="#6",
            ),
        ],
        peer="nginx (ssl_verify_client on, proxy_pass)",
        method=f"openssl s_time -new, {seconds} s per run, 1 nginx worker vs 1 gateway process",
    )


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv).body)
