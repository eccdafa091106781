"""Regression (issue 11): a request head trickled in, each byte inside the idle timeout.

Before the fix every byte restarted the idle timeout, so such a client held its slot
for as long as it liked; now the whole head must arrive within ``idle_timeout`` of its
first byte, as nginx's ``client_header_timeout``. The same holds for raw bytes that
never complete a TLS record. Loops are bounded: at most 40 sends, 0.1 s apart.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme

from _gateway_support import EchoBackend, GatewayThread, Site, write_config

CONFIG = '[client_auth]\ntrust = ["trust.pem"]\n[limits]\nidle_timeout = 0.8\n'


@pytest.fixture
def gateway(tmp_path: Path, ca):
    backend = EchoBackend()
    site = Site(dir=tmp_path, server_ca=trustme.CA(), backend=backend)
    running = GatewayThread(write_config(site, ca.bundle_pem, CONFIG))
    yield site, running
    running.stop()
    backend.stop()


def _trickle(tls: ssl.SSLSocket, first: bytes, each: bytes) -> bytes:
    """Send ``first``, then ``each`` every 0.1 s (at most 40 times); what the gateway said."""
    tls.sendall(first)
    tls.settimeout(0.1)
    for _ in range(40):
        try:
            answer = tls.recv(65536)
        except TimeoutError:
            try:
                tls.sendall(each)
            except OSError:
                return b""
            continue
        except OSError:
            return b""
        return answer
    return b"(still open)"


def test_trickled_request_head_gets_408_and_is_closed(gateway, clean_leaf):
    site, running = gateway
    context = site.client_context(clean_leaf)
    with (
        socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        answer = _trickle(tls, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a")
        assert answer.startswith(b"HTTP/1.1 408 ")
        tls.settimeout(5)
        with pytest.raises((ssl.SSLError, OSError)):  # closed after the 408
            while tls.recv(65536):
                pass
            raise OSError("closed")


def test_trickled_tls_record_does_not_hold_the_slot(gateway, clean_leaf):
    """Raw bytes of a TLS record that never completes, after a good handshake."""
    site, running = gateway
    context = site.client_context(clean_leaf)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        sock.sendall(outgoing.read())
        tls.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        record = outgoing.read()
        sock.sendall(record[:5])  # the record header only; the rest one byte at a time
        sock.settimeout(0.1)
        closed = False
        for index in range(5, min(len(record) - 1, 45)):
            try:
                if sock.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                sock.sendall(record[index : index + 1])
                time.sleep(0)
            except OSError:
                closed = True
                break
        assert closed
