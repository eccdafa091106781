"""Client SSLContexts: files, memory, PKCS#12, requests, and rotation across a real renewal.

The server is the gateway serving an ASGI app in-process that answers with the
serial of the certificate the client presented (from the TLS extension); the CA
is a real ``mtlskit ca serve``, and the renewal is ``mtlskit.client.renew`` — what
``mtlskit renew --daemon`` runs — replacing the files in place.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
from pathlib import Path

import httpx
import pytest
import requests
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from _gateway_support import Site, write_config
from ca_server import RunningCa, init_ca, serve
from mtlskit.certs import chain_pem, load_certificates
from mtlskit.client import (
    SSLContextAdapter,
    enroll,
    pkcs12_ssl_context,
    renew,
    ssl_context,
    watching_ssl_context,
)
from mtlskit.client._context import load_key_and_chain
from mtlskit.errors import InputError
from test_asgi import InProcess

ID = "spiffe://acme.com/rotating"


async def serial_app(scope, receive, send):
    """Answers with the presented leaf's serial (hex), from the ASGI TLS extension."""
    if scope["type"] != "http":
        return
    pem = scope["extensions"]["tls"]["client_cert_chain"][0]
    serial = f"{x509.load_pem_x509_certificate(pem.encode()).serial_number:x}"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": serial.encode()})


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> RunningCa:
    running = serve(init_ca(tmp_path_factory.mktemp("rotation") / "ca"))
    yield running
    running.stop()


@pytest.fixture
def enrolled(ca, tmp_path) -> Path:
    out = tmp_path / "svc"
    enroll(ca.url, ca.token(ID), out, ca_fingerprint=ca.fingerprint)
    return out


@pytest.fixture
def server(ca, enrolled, tmp_path):
    site = Site(dir=tmp_path / "site", server_ca=trustme.CA(), backend=None)  # type: ignore[arg-type]
    site.dir.mkdir()
    chain = load_certificates((enrolled / "chain.pem").read_bytes())
    anchors = chain_pem([*chain[1:], *load_certificates(ca.root.read_bytes())])
    write_config(site, anchors, '[client_auth]\ntrust = ["trust.pem"]\n', upstream="http://x:9")
    site.server_ca.cert_pem.write_to_path(str(site.dir / "server-ca.pem"))
    running = InProcess(site.dir / "gateway.toml", serial_app)  # type: ignore[arg-type]
    try:
        yield running, site.dir / "server-ca.pem"
    finally:
        running.stop()


def _serial(path: Path) -> str:
    return f"{load_certificates(path.read_bytes())[0].serial_number:x}"


def _new_connection(client: httpx.Client, port: int) -> str:
    response = client.get(f"https://localhost:{port}/", headers={"Connection": "close"})
    response.raise_for_status()
    return response.text


def test_httpx_follows_renewal_without_restart(server, enrolled, ca):
    running, server_ca = server
    cert, key = enrolled / "cert.pem", enrolled / "key.pem"
    context = watching_ssl_context(cert=cert, key=key, trust=server_ca)
    first = _serial(cert)
    with httpx.Client(verify=context) as client:
        kept = client.get(f"https://localhost:{running.port}/")  # keep-alive connection
        assert kept.text == first == _new_connection(client, running.port)
        renewed = renew(ca.url, cert, key)  # what `mtlskit renew --daemon` does, in place
        assert renewed.serial == _serial(cert) != first
        assert _new_connection(client, running.port) == renewed.serial
        assert context.reloads == 1 and f"{context.certificate.serial_number:x}" == renewed.serial
        rekeyed = renew(ca.url, cert, key, rekey=True)  # a new key too
        assert _new_connection(client, running.port) == rekeyed.serial
    # negative control: a plain context loaded once keeps presenting the first certificate
    frozen = ssl_context(cert=cert, key=key, trust=server_ca)
    renew(ca.url, cert, key)
    with httpx.Client(verify=frozen) as client:
        assert _new_connection(client, running.port) == rekeyed.serial != _serial(cert)


def test_async_httpx_uses_the_renewed_certificate(server, enrolled, ca):
    running, server_ca = server
    cert, key = enrolled / "cert.pem", enrolled / "key.pem"
    context = watching_ssl_context(cert=cert, key=key, trust=server_ca)

    async def get() -> str:
        async with httpx.AsyncClient(verify=context) as client:
            url = f"https://localhost:{running.port}/"
            response = await client.get(url, headers={"Connection": "close"})
            return response.text

    assert asyncio.run(get()) == _serial(cert)
    renewed = renew(ca.url, cert, key)
    assert asyncio.run(get()) == renewed.serial


def test_requests_adapter_with_rotation(server, enrolled, ca):
    running, server_ca = server
    cert, key = enrolled / "cert.pem", enrolled / "key.pem"
    session = requests.Session()
    session.mount(
        "https://", SSLContextAdapter(watching_ssl_context(cert=cert, key=key, trust=server_ca))
    )
    url = f"https://localhost:{running.port}/"
    with session:
        assert session.get(url, headers={"Connection": "close"}, timeout=10).text == _serial(cert)
        renewed = renew(ca.url, cert, key)
        assert session.get(url, headers={"Connection": "close"}, timeout=10).text == renewed.serial
        with pytest.raises(ValueError, match="verify=False"):
            session.get(url, verify=False, timeout=10)
    # the adapter kept certifi out: a context trusting only the server CA still refuses others
    context = ssl_context(cert=cert, key=key, trust=ca.root)  # wrong CA for the server
    other = requests.Session()
    other.mount("https://", SSLContextAdapter(context))
    with other, pytest.raises(requests.exceptions.SSLError):
        other.get(url, timeout=10)


def test_pkcs12_and_in_memory_keys(server, enrolled):
    running, server_ca = server
    cert, key = enrolled / "cert.pem", enrolled / "key.pem"
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    private = load_pem_private_key(key.read_bytes(), None)
    leaf = load_certificates(cert.read_bytes())[0]
    p12 = pkcs12.serialize_key_and_certificates(
        b"svc", private, leaf, None, BestAvailableEncryption(b"p12 password")
    )
    for context in (
        pkcs12_ssl_context(p12, password="p12 password", trust=server_ca),
        ssl_context(cert=cert.read_bytes(), key=key.read_bytes(), trust=server_ca),
    ):
        with httpx.Client(verify=context) as client:
            assert _new_connection(client, running.port) == _serial(cert)
    with pytest.raises(InputError, match="cannot be opened"):
        pkcs12_ssl_context(p12, password="wrong", trust=server_ca)


def test_in_memory_key_file_is_private_encrypted_and_removed(enrolled):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    seen: list[tuple[int, int, bytes, bytes | None]] = []

    class Spy(ssl.SSLContext):
        def load_cert_chain(self, certfile, keyfile=None, password=None):
            path = Path(certfile)
            seen.append(
                (
                    stat.S_IMODE(path.stat().st_mode),
                    stat.S_IMODE(path.parent.stat().st_mode),
                    path.read_bytes(),
                    password,
                )
            )
            self.spied = path
            super().load_cert_chain(certfile, keyfile, password)

    context = Spy(ssl.PROTOCOL_TLS_CLIENT)
    key = load_pem_private_key((enrolled / "key.pem").read_bytes(), None)
    load_key_and_chain(context, key, load_certificates((enrolled / "cert.pem").read_bytes()))
    mode, dir_mode, content, password = seen[0]
    assert mode == 0o600 and dir_mode == 0o700
    assert b"ENCRYPTED PRIVATE KEY" in content and password  # useless without the password
    assert not context.spied.exists() and not context.spied.parent.exists()
    if os.access("/dev/shm", os.W_OK):
        assert str(context.spied).startswith("/dev/shm/")
