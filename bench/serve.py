"""``mtlskit serve`` vs uvicorn serving the same trivial ASGI app over mTLS (issue 13).

Same machine, certificates, app and load tools, one run, both servers up at once and
measured in alternation (median of five rounds):

- HTTP/1.1 keep-alive: ``curl -Z --parallel-max 16`` (one C process, 16 parallel
  connections from its pool, each reused for request after request; ``--cert``
  presents the client certificate). ``ab -k`` cannot be used here: it speaks
  HTTP/1.0, and uvicorn never keeps an HTTP/1.0 connection alive.
- A new TLS connection per request: ``ab -E -c 16``.

uvicorn verifies the client (``--ssl-cert-reqs 2 --ssl-ca-certs``) but cannot pass the
certificate to the app; ``mtlskit serve`` verifies it twice (OpenSSL, then mtlskit's
policy) and fills the ASGI TLS extension and the ``Decision`` in every scope. Both run
one process on uvloop with httptools; uvicorn without its access log, the gateway
writing its JSON access log to a file (so any bias is against mtlskit). Each server's
CPU time per request (from /proc) is reported beside the rates: the load tools share
the two cores, so the rate is bounded by them too, while CPU time is the server's own.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import Goal, Section, mtls_files, stop_process
from bench.report import free_port as _port
from bench.report import wait_for_port as _wait

AB = shutil.which("ab") or "/usr/bin/ab"
CURL = shutil.which("curl") or "/usr/bin/curl"
CLIENTS = 16
APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\\n"})
"""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ab(port: int, pem: Path, *, requests: int) -> tuple[float, int]:
    """(requests/s, failed or non-2xx requests), a new TLS connection per request."""
    args = [AB, "-q", "-c", str(CLIENTS), "-n", str(requests), "-E", str(pem)]
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
    return float(rate.group(1)), int(failed.group(1)) + int(non2xx.group(1) if non2xx else 0)


def _curl(port: int, d: Path, *, requests: int) -> tuple[float, int, int]:
    """(requests/s, failed or non-2xx requests, TLS connections opened): HTTP/1.1 keep-alive."""
    urls = d / f"urls-{port}-{requests}.cfg"
    if not urls.exists():
        urls.write_text(f'url = "https://127.0.0.1:{port}/"\noutput = "/dev/null"\n' * requests)
    began = time.perf_counter()
    done = subprocess.run(
        [
            CURL, "-s", "-Z", "--parallel-max", str(CLIENTS),
            "--cert", str(d / "client-full.pem"), "--cacert", str(d / "server-ca.pem"),
            "-w", "%{http_code} %{num_connects}\n", "-K", str(urls),
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - began
    fields = done.stdout.split()
    codes, connects = fields[0::2], fields[1::2]
    if len(codes) != requests:
        raise RuntimeError(f"curl reported {len(codes)} of {requests}: {done.stderr[-400:]}")
    return requests / elapsed, sum(code != "200" for code in codes), sum(map(int, connects))


def _site(d: Path) -> None:
    (d / "bench_app.py").write_text(APP)
    mtls_files(d)


def _servers(d: Path) -> dict[tuple[str, bool], tuple[list[str], int, Path | None]]:
    """(server, logs each request?) → (command, port, where its stdout goes)."""
    servers: dict[tuple[str, bool], tuple[list[str], int, Path | None]] = {}
    for logs in (True, False):
        port = _port()
        config = d / f"gateway-{port}.toml"
        # Without logs, neither log: uvicorn writes nothing per connection either.
        access = f"access-{port}.log" if logs else "off"
        connection = f"connection-{port}.log" if logs else "off"
        config.write_text(
            f'[listen]\naddress = "127.0.0.1:{port}"\ncert = "server.pem"\nkey = "server.key"\n'
            f'[client_auth]\ntrust = ["trust.pem"]\n'
            f'[log]\naccess = "{access}"\nconnection = "{connection}"\n'
        )
        command = [
            sys.executable, "-m", "mtlskit", "serve", "bench_app:app",
            "--config", str(config), "--app-dir", str(d),
        ]  # fmt: skip
        servers[("mtlskit", logs)] = (command, port, None)
        port = _port()
        command = [
            sys.executable, "-m", "uvicorn", "bench_app:app", "--app-dir", str(d),
            "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--lifespan", "off",
            "--ssl-certfile", str(d / "server.pem"), "--ssl-keyfile", str(d / "server.key"),
            "--ssl-cert-reqs", "2", "--ssl-ca-certs", str(d / "trust.pem"),
        ]  # fmt: skip
        # uvicorn's access log is its default (a line per request on stdout, to a file here)
        command += (
            ["--log-level", "info"] if logs else ["--no-access-log", "--log-level", "warning"]
        )
        servers[("uvicorn", logs)] = (command, port, d / f"uvicorn-{port}.log" if logs else None)
    return servers


def run(quick: bool) -> Section:
    keep_alive_n = 2000 if quick else 16000
    handshake_n = 300 if quick else 2000
    rounds = 1 if quick else 5  # rates on this VM move ±15% run to run: a median of 5
    loads = ("HTTP/1.1 keep-alive (curl -Z)", "new TLS connection (ab)")
    Key = tuple[str, bool, str]
    rates: dict[Key, list[float]] = {}
    cpu: dict[Key, list[float]] = {}
    failures: dict[str, int] = {"mtlskit": 0, "uvicorn": 0}
    connects: dict[str, int] = {"mtlskit": 0, "uvicorn": 0}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _site(d)
        servers = _servers(d)
        processes: dict[tuple[str, bool], subprocess.Popen[bytes]] = {}
        try:
            for key, (command, port, out) in servers.items():
                sink = out.open("wb") if out else subprocess.DEVNULL
                processes[key] = subprocess.Popen(
                    command, cwd=d, stdout=sink, stderr=subprocess.STDOUT
                )
                _wait(port, processes[key])
                _curl(port, d, requests=400)  # warm-up
            for _ in range(rounds):
                for (name, logs), (_, port, _) in servers.items():
                    pid = processes[(name, logs)].pid
                    for load in loads:
                        before = _cpu_seconds(pid)
                        if load == loads[0]:
                            rate, bad, opened = _curl(port, d, requests=keep_alive_n)
                            connects[name] += opened
                            count = keep_alive_n
                        else:
                            rate, bad = _ab(port, d / "client-full.pem", requests=handshake_n)
                            count = handshake_n
                        rates.setdefault((name, logs, load), []).append(rate)
                        spent = (_cpu_seconds(pid) - before) / count * 1e6
                        cpu.setdefault((name, logs, load), []).append(spent)
                        failures[name] += bad
        finally:
            for process in processes.values():
                stop_process(process)
        logged = sum(
            '"status":200' in line
            for path in d.glob("access-*.log")
            for line in path.read_text().splitlines()
        )
        uvicorn_logged = sum(
            " 200" in line
            for path in d.glob("uvicorn-*.log")
            for line in path.read_text().splitlines()
        )
    rate = {key: statistics.median(values) for key, values in rates.items()}
    cost = {key: statistics.median(values) for key, values in cpu.items()}
    ratios = {
        (logs, load): rate[("mtlskit", logs, load)] / rate[("uvicorn", logs, load)]
        for logs in (True, False)
        for load in loads
    }
    rows = "\n".join(
        f"| {'both' if logs else 'neither'} | {load} | {rate[('mtlskit', logs, load)]:,.0f} "
        f"| {rate[('uvicorn', logs, load)]:,.0f} | {ratios[(logs, load)]:.2f}× "
        f"| {cost[('mtlskit', logs, load)]:,.0f} | {cost[('uvicorn', logs, load)]:,.0f} |"
        for logs in (False, True)
        for load in loads
    )
    strict = [ratios[(False, load)] for load in loads]
    requests_kept = rounds * keep_alive_n * 2
    return Section(
        title="mtlskit serve vs uvicorn (ASGI app over mTLS)",
        body=(
            "The same trivial ASGI app (`200 ok`), client certificate required by both, 16 "
            f"concurrent clients: {keep_alive_n:,} requests over HTTP/1.1 keep-alive (`curl -Z "
            f"--parallel-max 16`) and {handshake_n:,} with a new TLS connection each (`ab -E`). "
            "Two like-for-like pairings: neither server logs (mtlskit's `[log] access = "
            '"off"` and `connection = "off"` / uvicorn\'s `--no-access-log`), and both log '
            "requests (mtlskit's JSON access and connection logs to files; uvicorn's default "
            "access log, through `logging`, to a file). All four servers are up at "
            f"once and measured in alternation, median of {rounds}.\n\n"
            "| access log | load | mtlskit serve req/s | uvicorn req/s | ratio "
            "| mtlskit CPU µs/req | uvicorn CPU µs/req |\n|---|---|---:|---:|---:|---:|---:|\n"
            + rows
            + f"\n\nTLS connections curl opened for {requests_kept:,} keep-alive requests per "
            f"server kind: mtlskit {connects['mtlskit']}, uvicorn {connects['uvicorn']} (16 per "
            "run: all other requests reused one). Failed or non-2xx requests: mtlskit "
            f"{failures['mtlskit']}, uvicorn {failures['uvicorn']}. Access-log lines with status "
            f"200: mtlskit {logged:,}, uvicorn {uvicorn_logged:,}. uvicorn verifies the client "
            "but gives the app nothing; mtlskit's app gets the TLS extension and the `Decision` "
            "in every scope.\n\n"
            "CPU µs/req is the server process's user + system time per request: the load tools "
            "share the two cores, so a rate is bounded by them too, while CPU time is the "
            "server's own. The goal is judged on the pairing without access logs (the one "
            "where mtlskit's cheaper log cannot help it). `ab -k` is not used: it speaks "
            "HTTP/1.0, which uvicorn never keeps alive.\n"
        ),
        goals=[
            Goal(
                name="mtlskit serve req/s vs uvicorn (mTLS, no access logs)",
                target="≥ 1.0×",
                measured=", ".join(f"{ratios[(False, load)]:.2f}× {load}" for load in loads)
                + f"; with access logs {ratios[(True, loads[0])]:.2f}× / "
                f"{ratios[(True, loads[1])]:.2f}×",
                met=min(strict) >= 1.0,
                issue="#13",
            )
        ],
        peer="uvicorn (--ssl-cert-reqs 2, uvloop, httptools)",
        method=f"curl -Z (HTTP/1.1 keep-alive, {keep_alive_n:,} requests) and ab -E "
        f"({handshake_n:,} new connections), 16 clients, with and without access logs, "
        f"median of {rounds} alternating rounds",
    )


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv).body)
