"""Sanitizer: every spoofable name, in several spellings, is removed; nothing else moves."""

from __future__ import annotations

import pytest

from mtlskit.forward import (
    ForwardConfig,
    ForwardedClient,
    GcpHeaderNames,
    is_spoofable,
    rewrite_headers,
    sanitize_headers,
)

SPOOFABLE = [
    "X-Forwarded-Client-Cert",
    "Client-Cert",
    "Client-Cert-Chain",
    "X-Client-Cert",
    "X-Client-Cert-Present",
    "X-Client-Cert-Chain-Verified",
    "X-Client-Cert-Error",
    "X-Client-Cert-Hash",
    "X-Client-Cert-SPIFFE",
    "X-Client-Cert-Leaf",
    "X-Amzn-Mtls-Clientcert",
    "X-Amzn-Mtls-Clientcert-Leaf",
    "X-Amzn-Mtls-Clientcert-Subject",
    "X-Amzn-Tls-Version",
    "X-Mtlskit-Client-Verified",
    "X-Mtlskit-Client-Identity",
    "X-Mtlskit-Anything-New",
    "X-SSL-Client-Cert",
    "X-SSL-Client-S-DN",
    "X-SSL-Client-Verify",
    "X-SSL-Cert",
    "SSL-Client-Cert",
    "SSL-Client-Verify",
    "X-Client-Verify",
    "X-Client-DN",
    "X-ARR-ClientCert",
    "X-Forwarded-Tls-Client-Cert",
    "X-Forwarded-Tls-Client-Cert-Info",
    "CloudFront-Viewer-Cert-Sha256",
    "Cf-Client-Cert-Sha256",
]


def spellings(name: str) -> list[str]:
    under = name.replace("-", "_")
    return [name, name.lower(), name.upper(), under, under.lower(), under.upper(), f"{name} "]


@pytest.mark.parametrize("name", [s for name in SPOOFABLE for s in spellings(name)])
def test_every_spelling_is_removed(name):
    headers = [(b"Host", b"api"), (name.encode(), b"spoofed"), (b"Accept", b"*/*")]
    assert sanitize_headers(headers) == [(b"Host", b"api"), (b"Accept", b"*/*")]
    assert is_spoofable(name)


@pytest.mark.parametrize(
    "name",
    ["X-Client-Id", "X-Forwarded-For", "Authorization", "Cookie", "X-Request-Id", "Client-Id"],
)
def test_unrelated_names_are_kept(name):
    assert not is_spoofable(name)


def test_unrelated_headers_keep_order_case_values_and_repeats():
    headers = [
        (b"Host", b"api.acme.com"),
        (b"x-client-cert", b"a"),
        (b"X-Custom", b"1"),
        (b"X-Forwarded-Client-Cert", b"By=x"),
        (b"x-custom", b"2"),
        (b"Cookie", b"a=b; c=d"),
        (b"SSL_CLIENT_CERT", b"-----BEGIN"),
    ]
    assert sanitize_headers(headers) == [
        (b"Host", b"api.acme.com"),
        (b"X-Custom", b"1"),
        (b"x-custom", b"2"),
        (b"Cookie", b"a=b; c=d"),
    ]


def test_configured_names_are_removed_in_every_mode():
    config = ForwardConfig(
        formats=(), gcp=GcpHeaderNames(present="X-Peer-Present"), sanitize_also=("X-Legacy-Dn",)
    )
    headers = [(b"x_peer_present", b"true"), (b"X-LEGACY-DN", b"CN=admin"), (b"Accept", b"*/*")]
    assert rewrite_headers(headers, ForwardedClient.missing(), config) == [(b"Accept", b"*/*")]


def test_rewrite_never_passes_a_spoofed_header_next_to_the_real_one():
    headers = [(b"x-mtlskit-client-verified", b"true"), (b"client-cert", b":AAAA:")]
    out = rewrite_headers(headers, ForwardedClient.missing(), ForwardConfig())
    assert (b"X-Mtlskit-Client-Verified", b"false") in out
    assert all(
        value != b"true" or name.lower() != b"x-mtlskit-client-verified" for name, value in out
    )
    assert not [name for name, _ in out if name.lower() == b"client-cert"]
