"""The gateway under hostile load (issue 11, item 3), each attack bounded in count and time.

The gateway runs as ``mtlskit gateway`` (uvloop, as in production) in its own process
with a ``reliability.backend`` upstream; attacks run from this process; legitimate
mTLS clients run in another process throughout each attack, and their success rate
and p99 (full handshake + one request each) are reported beside what the attack saw.
Gateway memory is read from ``/proc/<pid>/status`` (VmRSS) every 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reliability.report import Row

LEGIT_THREADS = 2
LEGIT_PAUSE = 0.02  # between one legitimate client's requests: ~80 req/s in all
LEGIT_FLOOR = 0.95  # a check fails when fewer legitimate requests than this succeed
HANDSHAKE_TIMEOUT = 3.0
IDLE_TIMEOUT = 5.0  # also the budget for a whole request head (slowloris)
IDLE_HOLD_TIMEOUT = 120.0  # the gateway that holds the idle connections


# --- the site: certificates, backend, gateway process ---------------------------------


@dataclass
class Site:
    dir: Path
    backend: subprocess.Popen[str]
    backend_port: int
    gateway: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def client(self) -> tuple[str, str, str]:
        """(client chain+key PEM, server CA PEM) paths, for the legitimate process."""
        return str(self.dir / "client.pem"), str(self.dir / "server-ca.pem"), "127.0.0.1"

    def context(self) -> ssl.SSLContext:
        return client_context(str(self.dir / "client.pem"), str(self.dir / "server-ca.pem"))

    def rss_kb(self) -> int:
        assert self.gateway is not None
        for line in Path(f"/proc/{self.gateway.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def log_errors(self) -> int:
        """Connection-log entries for exceptions the gateway caught from its own code."""
        path = self.dir / "connection.log"
        if not path.exists():
            return 0
        return sum('"event":"error"' in line for line in path.read_text().splitlines())


def client_context(cert: str, ca: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert)
    return context


def _make_site(directory: Path) -> Site:
    import trustme

    from mtlskit.testca import LeafSpec, TestCA

    server_ca = trustme.CA()
    server = server_ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    os.chmod(directory / "server.key", 0o600)
    server_ca.cert_pem.write_to_path(str(directory / "server-ca.pem"))
    client_ca = TestCA(name="reliability")
    leaf = client_ca.issue(LeafSpec(uris=("spiffe://acme.com/reliability/legit",)))
    (directory / "client.pem").write_bytes(leaf.chain_pem + leaf.key_pem)
    os.chmod(directory / "client.pem", 0o600)
    (directory / "trust.pem").write_bytes(client_ca.bundle_pem)
    backend = subprocess.Popen(
        [sys.executable, "-m", "reliability.backend"], stdout=subprocess.PIPE, text=True
    )
    assert backend.stdout is not None
    port = int(backend.stdout.readline())
    return Site(dir=directory, backend=backend, backend_port=port)


def start_gateway(
    site: Site,
    upstream_port: int | None = None,
    name: str = "gateway",
    idle_timeout: float = IDLE_TIMEOUT,
) -> None:
    """Write the config and start ``mtlskit gateway``; its port comes from the start record."""
    log = site.dir / "connection.log"
    config = site.dir / f"{name}.toml"
    config.write_text(
        f"""
[listen]
address = "127.0.0.1:0"
cert = "server.pem"
key = "server.key"

[client_auth]
trust = ["trust.pem"]

[upstream]
urls = ["http://127.0.0.1:{upstream_port or site.backend_port}"]
connect_timeout = 1.0
read_timeout = 2.0
health_interval = 0.5

[limits]
handshake_timeout = {HANDSHAKE_TIMEOUT}
idle_timeout = {idle_timeout}

[log]
access = "{name}-access.log"
connection = "connection.log"

[reload]
poll_interval = 0
"""
    )
    before = log.read_text().count('"event":"start"') if log.exists() else 0
    site.gateway = subprocess.Popen(
        [sys.executable, "-m", "mtlskit", "gateway", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(site.dir / f"{name}.stderr", "ab"),  # noqa: SIM115 - the child owns it
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        starts = [
            json.loads(line)
            for line in (log.read_text().splitlines() if log.exists() else [])
            if '"event":"start"' in line
        ]
        if len(starts) > before:
            site.port = int(starts[-1]["address"].rsplit(":", 1)[1])
            return
        if site.gateway.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"gateway did not start: {(site.dir / f'{name}.stderr').read_text()}")


def stop_gateway(site: Site) -> None:
    if site.gateway is not None and site.gateway.poll() is None:
        site.gateway.send_signal(signal.SIGTERM)
        try:
            site.gateway.wait(timeout=15)
        except subprocess.TimeoutExpired:
            site.gateway.kill()
            site.gateway.wait(timeout=5)


# --- legitimate clients, in their own process -------------------------------------------


def _legit_worker(
    port: int, cert: str, ca: str, until: float, out: list[tuple[bool, float]]
) -> None:
    context = client_context(cert, ca)
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    while time.time() < until:
        started = time.monotonic()
        ok = False
        with (
            contextlib.suppress(OSError, ssl.SSLError),
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(request)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            ok = data.startswith(b"HTTP/1.1 200")
        out.append((ok, time.monotonic() - started))
        time.sleep(LEGIT_PAUSE)


def _legit_process(port: int, cert: str, ca: str, seconds: float, pipe: Any) -> None:
    until = time.time() + seconds
    results: list[tuple[bool, float]] = []
    threads = [
        threading.Thread(target=_legit_worker, args=(port, cert, ca, until, results))
        for _ in range(LEGIT_THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pipe.send(results)
    pipe.close()


@dataclass
class Legit:
    count: int
    ok: int
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.ok / self.count if self.count else 0.0

    def text(self) -> str:
        return (
            f"legit clients {self.ok}/{self.count} ok ({self.rate:.1%}), "
            f"p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms"
        )


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class RssSampler:
    """Peak VmRSS of the gateway while an attack runs."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.peak = site.rss_kb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, self.site.rss_kb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def under_attack(
    site: Site, seconds: float, attack: Callable[[], Awaitable[dict[str, Any]]]
) -> tuple[dict[str, Any], Legit, int, int]:
    """Run ``attack`` while legitimate clients run for ``seconds``; (result, legit, rss0, peak)."""
    spawn = multiprocessing.get_context("spawn")
    receiver, sender = spawn.Pipe(duplex=False)
    cert, ca, _ = site.client
    process = spawn.Process(target=_legit_process, args=(site.port, cert, ca, seconds, sender))
    rss_before = site.rss_kb()
    with RssSampler(site) as sampler:
        process.start()
        result = asyncio.run(attack())
        results = receiver.recv() if receiver.poll(seconds + 60) else []
        process.join(timeout=30)
    if process.is_alive():
        process.kill()
    latencies = [latency * 1000 for ok, latency in results if ok]
    legit = Legit(
        count=len(results),
        ok=sum(ok for ok, _ in results),
        p50_ms=statistics.median(latencies) if latencies else 0.0,
        p99_ms=_percentile(latencies, 0.99),
    )
    return result, legit, rss_before, sampler.peak


# --- attack building blocks ---------------------------------------------------------------


async def _closed_by_server(reader: asyncio.StreamReader, timeout: float) -> tuple[bool, bytes]:
    """Read until the server closes (True) or ``timeout`` passes (False); what was read."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        return False, data
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    return True, data


async def _tls(site: Site, context: ssl.SSLContext) -> tuple[Any, Any]:
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", site.port, ssl=context, server_hostname="localhost"),
        10,
    )


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()


async def slowloris_handshake(site: Site, count: int) -> dict[str, Any]:
    """``count`` connections send a TLS record header, then one byte a second."""
    started = time.monotonic()

    async def one() -> float | None:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        opened = time.monotonic()
        try:
            writer.write(b"\x16\x03\x01\x02\x00")  # a 512-byte handshake record follows... slowly
            async with asyncio.timeout(HANDSHAKE_TIMEOUT + 10):
                while True:
                    closed, _ = await _closed_by_server(reader, 1.0)
                    if closed:
                        return time.monotonic() - opened
                    writer.write(b"\x01")
        except (TimeoutError, ConnectionError, OSError):
            return None if time.monotonic() - opened > HANDSHAKE_TIMEOUT + 9 else 0.0
        finally:
            _close(writer)

    times = await asyncio.gather(*(one() for _ in range(count)))
    freed = [value for value in times if value is not None]
    return {
        "count": count,
        "freed": len(freed),
        "max_s": max(freed, default=0.0),
        "seconds": time.monotonic() - started,
    }


async def slowloris_headers(site: Site, count: int) -> dict[str, Any]:
    """``count`` mTLS connections send a request head one byte a second, forever."""
    context = site.context()
    semaphore = asyncio.Semaphore(50)

    async def one() -> tuple[float | None, bytes]:
        async with semaphore:
            reader, writer = await _tls(site, context)
        opened = time.monotonic()
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            await writer.drain()
            async with asyncio.timeout(IDLE_TIMEOUT + 10):
                while True:
                    closed, data = await _closed_by_server(reader, 1.0)
                    if closed:
                        return time.monotonic() - opened, data
                    writer.write(b"X")  # a header name that never ends, inside the idle timeout
                    await writer.drain()
        except TimeoutError:
            return None, b""
        except (ConnectionError, OSError, ssl.SSLError):
            return time.monotonic() - opened, b""
        finally:
            _close(writer)

    results = await asyncio.gather(*(one() for _ in range(count)))
    freed = [seconds for seconds, _ in results if seconds is not None]
    statuses = {data[:12].decode("latin-1") for _, data in results if data}
    return {
        "count": count,
        "freed": len(freed),
        "max_s": max(freed, default=0.0),
        "statuses": sorted(statuses),
    }


async def idle_connections(site: Site, count: int, hold: float) -> dict[str, Any]:
    """``count`` completed mTLS handshakes that then send nothing, held for ``hold`` seconds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 512:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1024), hard))
    context = site.context()
    semaphore = asyncio.Semaphore(64)
    writers: list[asyncio.StreamWriter] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with semaphore:
            try:
                _, writer = await _tls(site, context)
            except (OSError, ssl.SSLError, TimeoutError):
                failed += 1
                return
        writers.append(writer)

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    opened_in = time.monotonic() - started
    established = len(writers)
    await asyncio.sleep(hold)
    still_open = sum(not writer.transport.is_closing() for writer in writers)
    for writer in writers:
        _close(writer)
    await asyncio.sleep(0.5)
    return {
        "count": count,
        "established": established,
        "failed": failed,
        "open_after_hold": still_open,
        "opened_in_s": opened_in,
    }


def _garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    body = rng.randbytes(rng.randrange(1, 2048))
    if kind == 0:
        return body  # not TLS at all
    if kind == 1:  # a handshake record header with a lying length
        return b"\x16\x03\x01" + rng.randrange(65536).to_bytes(2, "big") + body
    if kind == 2:  # a ClientHello message type with random contents
        return b"\x16\x03\x01" + len(body + b"\x01").to_bytes(2, "big") + b"\x01" + body
    return b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"  # plain HTTP to the TLS port


async def garbage_flood(site: Site, seconds: float, concurrency: int) -> dict[str, Any]:
    rng = random.Random(3)
    deadline = time.monotonic() + seconds
    sent = closed = 0

    async def worker() -> None:
        nonlocal sent, closed
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            except OSError:
                continue
            sent += 1
            try:
                writer.write(_garbage(rng))
                done, _ = await _closed_by_server(reader, HANDSHAKE_TIMEOUT + 2)
                closed += done
            except (ConnectionError, OSError):
                closed += 1
            finally:
                _close(writer)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"sent": sent, "closed": closed}


async def _exchange(site: Site, context: ssl.SSLContext, raw: bytes) -> tuple[bytes, bool]:
    """Send ``raw`` on a fresh mTLS connection; (everything read, closed by the server)."""
    reader, writer = await _tls(site, context)
    try:
        writer.write(raw)
        await writer.drain()
        closed, data = await _closed_by_server(reader, 6)
        return data, closed
    except (ConnectionError, OSError, ssl.SSLError):
        return b"", True
    finally:
        _close(writer)


OVERSIZED = {
    "one 64 KiB header": b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: "
    + b"a" * 65536
    + b"\r\n\r\n",
    "200 header fields": b"GET / HTTP/1.1\r\nHost: localhost\r\n"
    + b"".join(b"X-F%d: v\r\n" % n for n in range(200))
    + b"\r\n",
    "32 KiB request target": b"GET /" + b"a" * 32768 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "1 MiB header, never ending": b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 2**20,
}

_SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
SMUGGLING = {
    "CL + TE": b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + _SMUGGLED,
    "TE + CL": b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 48\r\n\r\n0\r\n\r\n" + _SMUGGLED,
    "duplicate CL (different)": b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
    b"Content-Length: 46\r\n\r\n" + _SMUGGLED,
    "duplicate CL (equal)": b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 46\r\n"
    b"Content-Length: 46\r\n\r\n" + _SMUGGLED,
    "CL list '0, 46'": b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0, 46\r\n\r\n"
    + _SMUGGLED,
    "CL '+46'": b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: +46\r\n\r\n" + _SMUGGLED,
    "obs-fold in TE": b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\r\n chunked\r\n"
    b"\r\n0\r\n\r\n" + _SMUGGLED,
    "obs-fold in a header": b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n folded\r\n\r\n"
    + _SMUGGLED,
    "TE 'chunked, identity'": b"POST / HTTP/1.1\r\nHost: localhost\r\n"
    b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + _SMUGGLED,
    "TE 'xchunked'": b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\r\n"
    b"0\r\n\r\n" + _SMUGGLED,
    "space before colon": b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n"
    b"\r\n0\r\n\r\n" + _SMUGGLED,
    "bad chunk size 'zz'": b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
    b"\r\nzz\r\nhello\r\n0\r\n\r\n" + _SMUGGLED,
    "chunk size overflow": b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
    b"\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n" + _SMUGGLED,
    "chunk size '-1'": b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n-1\r\nhello\r\n0\r\n\r\n" + _SMUGGLED,
    "bare LF in chunk": b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n5\nhello\n0\n\n" + _SMUGGLED,
    "two Host headers": b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\n\r\n" + _SMUGGLED,
    "NUL in a header value": b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n"
    + _SMUGGLED,
}


async def probes(site: Site, cases: dict[str, bytes], wanted: set[bytes]) -> dict[str, Any]:
    """Each case on its own connection: the status wanted, then the connection closed."""
    context = site.context()
    outcomes = {}
    for name, raw in cases.items():
        data, closed = await _exchange(site, context, raw)
        status = data[9:12]
        responses = data.count(b"HTTP/1.1 ")
        outcomes[name] = (status.decode("latin-1") or "none", closed, responses)
    bad = {
        name: value
        for name, value in outcomes.items()
        if value[0].encode() not in wanted or not value[1] or value[2] != 1
    }
    return {"outcomes": outcomes, "bad": bad}


async def slow_backend(site: Site, seconds: float, concurrency: int) -> dict[str, Any]:
    """Requests the backend answers after 10 s (the gateway's read_timeout is 2 s)."""
    context = site.context()
    deadline = time.monotonic() + seconds
    statuses: dict[str, int] = {}

    async def worker() -> None:
        while time.monotonic() < deadline:
            try:
                data, _ = await _exchange(
                    site, context, b"GET /slow?s=10 HTTP/1.1\r\nHost: localhost\r\n\r\n"
                )
            except (OSError, ssl.SSLError, TimeoutError):
                data = b""
            key = data[9:12].decode("latin-1") or "none"
            statuses[key] = statuses.get(key, 0) + 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"statuses": statuses}


async def dead_backend(site: Site, requests: int) -> dict[str, Any]:
    context = site.context()
    statuses: dict[str, int] = {}
    times = []
    for _ in range(requests):
        started = time.monotonic()
        data, _closed = await _exchange(
            site, context, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        times.append(time.monotonic() - started)
        key = data[9:12].decode("latin-1") or "none"
        statuses[key] = statuses.get(key, 0) + 1
    return {"statuses": statuses, "max_s": max(times), "p99_ms": _percentile(times, 0.99) * 1000}


async def never_reads(site: Site, count: int, mib: int, hold: float) -> dict[str, Any]:
    """``count`` clients ask for ``mib`` MiB each and never read a byte of it."""
    context = site.context()
    writers = []
    for _ in range(count):
        _reader, writer = await _tls(site, context)
        writer.transport.pause_reading()  # the kernel buffers fill, then the gateway must wait
        writer.write(b"GET /big?mb=%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % mib)
        writers.append(writer)
    await asyncio.sleep(hold)
    alive = sum(not writer.transport.is_closing() for writer in writers)
    for writer in writers:
        _close(writer)
    await asyncio.sleep(0.5)
    return {"count": count, "alive": alive}


# --- the run ------------------------------------------------------------------------------


def _row(
    test: str,
    load: str,
    observed: str,
    legit: Legit | None,
    site: Site,
    *,
    ok: bool,
    unexpected: int = 0,
    errors_before: int = 0,
    notes: list[str] | None = None,
) -> Row:
    crashes = site.log_errors() - errors_before
    alive = site.gateway is not None and site.gateway.poll() is None
    crashes += not alive
    if legit is not None:
        ok = ok and legit.rate >= LEGIT_FLOOR
        observed = f"{observed}; {legit.text()}"
    return Row(
        part="3 Gateway",
        test=test,
        load=load,
        observed=observed + ("" if alive else "; GATEWAY PROCESS DIED"),
        unexpected=unexpected,
        crashes=crashes,
        ok=ok and crashes == 0 and unexpected == 0,
        notes=notes or [],
    )


def run(quick: bool) -> list[Row]:
    rows: list[Row] = []
    window = 5.0 if quick else 12.0
    with tempfile.TemporaryDirectory(prefix="rel-gw-") as temp:
        site = _make_site(Path(temp))
        try:
            start_gateway(site)
            rows += _attacks(site, quick, window)
        finally:
            stop_gateway(site)
            site.backend.kill()
            site.backend.wait()
    return rows


def _attacks(site: Site, quick: bool, window: float) -> list[Row]:
    rows = []

    def errors() -> int:
        return site.log_errors()

    _, legit, rss0, peak = under_attack(site, window, _sleep(window))
    rows.append(
        _row(
            "baseline (no attack)",
            f"{LEGIT_THREADS} clients, {window:.0f} s",
            f"gateway RSS {rss0 // 1024}→{peak // 1024} MiB",
            legit,
            site,
            ok=True,
        )
    )

    count = 200 if quick else 1000
    before = errors()
    result, legit, rss0, peak = under_attack(
        site, HANDSHAKE_TIMEOUT + 4, lambda: slowloris_handshake(site, count)
    )
    rows.append(
        _row(
            "slowloris during the handshake",
            f"{count} connections, a TLS record header then 1 byte/s; "
            f"handshake_timeout {HANDSHAKE_TIMEOUT:.0f} s",
            f"{result['freed']}/{count} closed by the gateway, the last after "
            f"{result['max_s']:.1f} s",
            legit,
            site,
            ok=result["freed"] == count,
            errors_before=before,
        )
    )

    count = 100 if quick else 500
    before = errors()
    result, legit, rss0, peak = under_attack(
        site, IDLE_TIMEOUT + 4, lambda: slowloris_headers(site, count)
    )
    rows.append(
        _row(
            "slowloris during the request head",
            f"{count} mTLS connections, request head at 1 byte/s (each byte inside the "
            f"{IDLE_TIMEOUT:.0f} s idle timeout, which also bounds the whole head)",
            f"{result['freed']}/{count} closed by the gateway, the last after "
            f"{result['max_s']:.1f} s, answers {', '.join(result['statuses']) or 'none'}",
            legit,
            site,
            ok=result["freed"] == count,
            errors_before=before,
        )
    )

    rows.append(_idle(site, 500 if quick else 5000, window))

    before = errors()
    result, legit, rss0, peak = under_attack(
        site, window, lambda: garbage_flood(site, window - 2, 50)
    )
    rows.append(
        _row(
            "garbage ClientHello flood",
            f"50 concurrent connections for {window - 2:.0f} s, each random bytes, a lying TLS "
            "record header, a random ClientHello body, or plain HTTP",
            f"{result['sent']} sent, {result['closed']} closed by the gateway; RSS "
            f"{rss0 // 1024}→{peak // 1024} MiB",
            legit,
            site,
            ok=result["closed"] == result["sent"],
            errors_before=before,
        )
    )

    before = errors()
    result, legit, _, _ = under_attack(site, 4, lambda: probes(site, OVERSIZED, {b"431", b"414"}))
    outcomes = "; ".join(f"{name} → {value[0]}" for name, value in result["outcomes"].items())
    rows.append(
        _row(
            "oversized request heads",
            f"{len(OVERSIZED)} requests (limits: 16 KiB head, 100 fields)",
            f"{outcomes}; {len(result['bad'])} not answered 431/414 and closed",
            legit,
            site,
            ok=not result["bad"],
            unexpected=len(result["bad"]),
            errors_before=before,
        )
    )

    before = errors()
    result, legit, _, _ = under_attack(site, 6, lambda: probes(site, SMUGGLING, {b"400"}))
    smuggled = _backend_stats(site)["smuggled"]
    bad = result["bad"]
    rows.append(
        _row(
            "request-smuggling probes",
            f"{len(SMUGGLING)} probes, each hiding `GET /smuggled` after an ambiguous body: "
            + ", ".join(SMUGGLING),
            f"{len(SMUGGLING) - len(bad)}/{len(SMUGGLING)} answered 400 and closed; "
            f"requests reaching the backend as /smuggled: {smuggled}"
            + (f"; other: {bad}" if bad else ""),
            legit,
            site,
            ok=not bad and smuggled == 0,
            unexpected=len(bad) + smuggled,
            errors_before=before,
        )
    )

    before = errors()
    result, legit, _, _ = under_attack(site, window, lambda: slow_backend(site, window - 2, 20))
    statuses = ", ".join(f"{k}×{v}" for k, v in sorted(result["statuses"].items()))
    rows.append(
        _row(
            "slow backend",
            f"20 concurrent requests the backend answers after 10 s (read_timeout 2 s), "
            f"{window - 2:.0f} s",
            f"answers {statuses}",
            legit,
            site,
            ok=set(result["statuses"]) <= {"504"},
            errors_before=before,
        )
    )

    count, mib = (10, 64) if quick else (20, 256)
    before = errors()
    result, legit, rss0, peak = under_attack(site, window, lambda: never_reads(site, count, mib, 8))
    growth = (peak - rss0) / 1024
    rows.append(
        _row(
            "clients that never read",
            f"{count} clients each request {mib} MiB and read nothing for 8 s",
            f"gateway RSS {rss0 // 1024}→{peak // 1024} MiB (+{growth:.0f} MiB for "
            f"{count * mib} MiB requested); {result['alive']} connections held open",
            legit,
            site,
            ok=growth < 64,
            errors_before=before,
        )
    )

    rows.append(_dead_backend(site))
    return rows


def _idle(site: Site, count: int, window: float) -> Row:
    """Idle connections on a gateway whose idle timeout outlasts the test, so all stay open."""
    idle = Site(dir=site.dir, backend=site.backend, backend_port=site.backend_port)
    start_gateway(idle, name="idle", idle_timeout=IDLE_HOLD_TIMEOUT)
    try:
        before = idle.log_errors()
        hold = 3.0
        result, legit, rss0, peak = under_attack(
            idle, window + count / 400, lambda: idle_connections(idle, count, hold)
        )
        per = (peak - rss0) / max(result["established"], 1)
        return _row(
            "concurrent idle connections",
            f"{count} completed mTLS handshakes, then silence, all held {hold:.0f} s "
            f"(idle_timeout {IDLE_HOLD_TIMEOUT:.0f} s on this gateway)",
            f"{result['established']} established ({result['failed']} failed) in "
            f"{result['opened_in_s']:.1f} s, {result['open_after_hold']} still open after the "
            f"hold; gateway RSS {rss0 // 1024}→{peak // 1024} MiB (~{per:.0f} KiB per connection)",
            legit,
            idle,
            ok=result["established"] == count,
            errors_before=before,
        )
    finally:
        stop_gateway(idle)


def _sleep(seconds: float) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def nothing() -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {}

    return nothing


def _backend_stats(site: Site) -> dict[str, int]:
    with socket.create_connection(("127.0.0.1", site.backend_port), timeout=5) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"}" in data:
                break
    return json.loads(data.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


def _dead_backend(site: Site) -> Row:
    """A second gateway whose only upstream refuses connections, then comes back."""
    placeholder = socket.socket()
    placeholder.bind(("127.0.0.1", 0))
    port = placeholder.getsockname()[1]
    placeholder.close()  # nothing listens there now
    dead = Site(dir=site.dir, backend=site.backend, backend_port=port)
    start_gateway(dead, upstream_port=port, name="dead")
    revived: subprocess.Popen[str] | None = None
    try:
        before = dead.log_errors()
        result = asyncio.run(dead_backend(dead, 50))
        revived = subprocess.Popen(
            [sys.executable, "-m", "reliability.backend", str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert revived.stdout is not None
        revived.stdout.readline()
        recovered_after = None
        started = time.monotonic()
        while time.monotonic() - started < 10:
            after = asyncio.run(dead_backend(dead, 1))
            if "200" in after["statuses"]:
                recovered_after = time.monotonic() - started
                break
            time.sleep(0.1)
        statuses = ", ".join(f"{k}×{v}" for k, v in sorted(result["statuses"].items()))
        return _row(
            "dead backend, then back",
            "50 requests while the only upstream refuses connections; then it starts again",
            f"answers {statuses}, slowest {result['max_s'] * 1000:.0f} ms; served again "
            + (f"{recovered_after:.1f} s after it came back" if recovered_after else "NEVER"),
            None,
            dead,
            ok=set(result["statuses"]) <= {"502", "503"} and recovered_after is not None,
            errors_before=before,
        )
    finally:
        stop_gateway(dead)
        if revived is not None:
            revived.kill()
            revived.wait()
