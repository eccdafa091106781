"""``mtlskit serve APP --config gateway.toml`` re-reads gateway.toml on SIGHUP, as
``mtlskit gateway`` does (issue 26): before, serve gave the reloader no config path, so a
reload re-read only the files the config names and an edit of gateway.toml itself (a
policy added) was never applied, while the reload record still said ``ok: true``.

A real ``mtlskit serve`` process (one process, or a master with two workers), a real
ASGI app, real mTLS requests.
"""

from __future__ import annotations

import re
import socket
import sys

import pytest

from _gateway_support import gateway_process, https_request, sighup_reloads, write_config

APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"from the app"})
"""
GET = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def served(request, echo_site, ca):
    """A real `mtlskit serve reload_app:app` process; yields (site, config, process, port)."""
    (echo_site.dir / "reload_app.py").write_text(APP)
    (echo_site.dir / "deny.toml").write_text('[[allow]]\nid = "spiffe://acme.com/nobody"\n')
    config = write_config(echo_site, ca.bundle_pem, '[client_auth]\ntrust = ["trust.pem"]\n')
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = re.sub(r"\[upstream\]\n(?:.+\n)+", "", config.read_text())  # serve serves APP
    text = text.replace("127.0.0.1:0", f"127.0.0.1:{port}")
    config.write_text(
        text.replace('key = "server.key"', f'key = "server.key"\nworkers = {request.param}')
    )
    echo_site.extra["workers"] = request.param
    argv = [
        *(sys.executable, "-m", "mtlskit", "serve", "reload_app:app"),
        *("--config", str(config), "--app-dir", str(echo_site.dir)),
    ]
    with gateway_process(echo_site, argv) as process:
        yield echo_site, config, process, port


def test_a_policy_added_to_gateway_toml_denies_after_sighup(served, clean_leaf):
    site, config, process, port = served
    context = site.client_context(clean_leaf)
    answer = https_request(port, context, GET)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"from the app"), answer
    config.write_text(
        config.read_text().replace(
            'trust = ["trust.pem"]', 'trust = ["trust.pem"]\npolicy = "deny.toml"'
        )
    )
    records = sighup_reloads(site, process)
    assert [(r["ok"], r["applied"]) for r in records] == [(True, ["client_auth.policy"])] * len(
        records
    ), records
    for _ in range(4):  # any worker takes it
        assert https_request(port, context, GET).startswith(b"HTTP/1.1 403 ")
    assert process.poll() is None
