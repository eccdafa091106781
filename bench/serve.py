"""``mtlskit serve`` vs uvicorn serving the same trivial ASGI app over mTLS (issue 13).

Same machine, certificates, app and load tool, one run: ``ab -E client.pem``
(apache2-utils presents a client certificate), keep-alive (``-k``) and a new
TLS connection per request, 16 concurrent clients. uvicorn verifies the client
(``--ssl-cert-reqs 2 --ssl-ca-certs``) but cannot pass the certificate to the
app; ``mtlskit serve`` verifies it twice (OpenSSL, then mtlskit's policy) and
fills the ASGI TLS extension and the ``Decision`` in every scope. Both run one
process on uvloop with httptools; uvicorn without its access log, the gateway
writing its JSON access log to a file (so any bias is against mtlskit).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import trustme

from bench.report import Goal, Section
from bench.report import free_port as _port
from bench.report import wait_for_port as _wait
from mtlskit.testca import LeafSpec, TestCA

AB = shutil.which("ab") or "/usr/bin/ab"
APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\\n"})
"""


def _ab(port: int, pem: Path, *, requests: int, keep_alive: bool) -> tuple[float, int, int]:
    """(requests/s, failed requests, requests served on a kept-alive connection) from ``ab``."""
    args = [AB, "-q", "-c", "16", "-n", str(requests), "-E", str(pem)]
    if keep_alive:
        args.append("-k")
    done = subprocess.run(
        [*args, f"https://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout + done.stderr
    rate = re.search(r"Requests per second:\s+([\d.]+)", out)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    if not rate or not failed:
        raise RuntimeError(f"ab printed no rate: {out[-400:]}")
    kept = re.search(r"Keep-Alive requests:\s+(\d+)", out)
    bad = int(failed.group(1)) + int(non2xx.group(1) if non2xx else 0)
    return float(rate.group(1)), bad, int(kept.group(1)) if kept else 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def run(quick: bool) -> Section:
    keep_alive_n = 4000 if quick else 40000
    handshake_n = 500 if quick else 5000
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "bench_app.py").write_text(APP)
        ca = TestCA(name="bench", intermediate=False)  # ab sends the leaf only
        client = ca.issue(LeafSpec(uris=("spiffe://acme.com/bench",)))
        (d / "client.pem").write_bytes(client.chain_pem + client.key_pem)
        (d / "trust.pem").write_bytes(ca.bundle_pem)
        server_ca = trustme.CA()
        server = server_ca.issue_cert("127.0.0.1", "localhost")
        server.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
        server.private_key_pem.write_to_path(str(d / "server.key"))
        (d / "server.key").chmod(0o600)  # the gateway refuses group/world-readable keys
        mtlskit_port, uvicorn_port = _port(), _port()
        (d / "gateway.toml").write_text(
            f"""
[listen]
address = "127.0.0.1:{mtlskit_port}"
cert = "server.pem"
key = "server.key"
[client_auth]
trust = ["trust.pem"]
[log]
access = "access.log"
connection = "connection.log"
"""
        )
        servers = {
            "mtlskit": (
                [
                    sys.executable, "-m", "mtlskit", "serve", "bench_app:app",
                    "--config", str(d / "gateway.toml"), "--app-dir", str(d),
                ],
                mtlskit_port,
            ),
            "uvicorn": (
                [
                    sys.executable, "-m", "uvicorn", "bench_app:app", "--app-dir", str(d),
                    "--host", "127.0.0.1", "--port", str(uvicorn_port),
                    "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                    "--log-level", "warning", "--lifespan", "off",
                    "--ssl-certfile", str(d / "server.pem"), "--ssl-keyfile", str(d / "server.key"),
                    "--ssl-cert-reqs", "2", "--ssl-ca-certs", str(d / "trust.pem"),
                ],
                uvicorn_port,
            ),
        }  # fmt: skip
        rates: dict[tuple[str, str], float] = {}
        failures: dict[str, int] = {}
        kept: dict[str, int] = {}
        for name, (command, port) in servers.items():
            process = subprocess.Popen(command, cwd=d, stdout=subprocess.DEVNULL)
            try:
                _wait(port, process)
                _ab(port, d / "client.pem", requests=200, keep_alive=True)  # warm-up
                for load, n, keep in (
                    ("keep-alive", keep_alive_n, True),
                    ("new connection", handshake_n, False),
                ):
                    rates[(name, load)], failed, reused = _ab(
                        port, d / "client.pem", requests=n, keep_alive=keep
                    )
                    failures[name] = failures.get(name, 0) + failed
                    kept[name] = kept.get(name, 0) + reused
            finally:
                _stop(process)
        served = sum('"status":200' in line for line in (d / "access.log").read_text().splitlines())
    loads = ("keep-alive", "new connection")
    ratios = {load: rates[("mtlskit", load)] / rates[("uvicorn", load)] for load in loads}
    rows = "\n".join(
        f"| {load} | {rates[('mtlskit', load)]:,.0f} | {rates[('uvicorn', load)]:,.0f} "
        f"| {ratios[load]:.2f}× |"
        for load in loads
    )
    fair = ratios["new connection"]
    return Section(
        title="mtlskit serve vs uvicorn (ASGI app over mTLS)",
        body=(
            "The same trivial ASGI app (`200 ok`), client certificate required by both, "
            f"`ab -E` with 16 concurrent clients: {keep_alive_n:,} requests with keep-alive "
            f"(`-k`) and {handshake_n:,} with a new TLS connection each.\n\n"
            "| load | mtlskit serve req/s | uvicorn req/s | ratio |\n|---|---:|---:|---:|\n"
            + rows
            + f"\n\nFailed or non-2xx requests: mtlskit {failures['mtlskit']}, uvicorn "
            f"{failures['uvicorn']}; the gateway's access log shows {served:,} requests "
            "answered 200 (the rate counts served requests, not refusals). uvicorn "
            "verifies the client but gives the app nothing; mtlskit's app gets the TLS "
            "extension and the `Decision` in every scope.\n\n"
            f"Requests served on a kept-alive connection: mtlskit {kept['mtlskit']:,}, "
            f"uvicorn {kept['uvicorn']:,}. `ab` speaks only HTTP/1.0, and uvicorn never keeps "
            'an HTTP/1.0 connection alive (`keep_alive = http_version != "1.0"` in its '
            "httptools protocol), so its keep-alive row is a handshake per request too. "
            "The goal is therefore judged on the new-connection row, the one load where "
            "both servers do the same work.\n"
        ),
        goals=[
            Goal(
                name="mtlskit serve req/s vs uvicorn (mTLS)",
                target="≥ 1.0×",
                measured=f"{fair:.2f}× new connection; {ratios['keep-alive']:.1f}× with ab -k",
                met=fair >= 1.0,
                issue="#13",
            )
        ],
        peer="uvicorn (--ssl-cert-reqs 2, uvloop, httptools)",
        method=f"ab -E -c 16, {keep_alive_n:,} keep-alive + {handshake_n:,} new-connection "
        "requests, one process each",
    )


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv).body)
