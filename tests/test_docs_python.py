"""docs/python.md runs: every ``<!-- file: NAME -->`` block is written out and used as is.

Only the ports change (8443, 8000, 9443 → free ones). ``mtlskit serve`` and uvicorn
run as subprocesses, nginx with the page's server block inside a minimal
``http {}``; the clients are the page's scripts. Everything is stopped in teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from _servers import free_port as _free_port
from _servers import nginx
from _servers import stop as _stop
from _servers import wait_for as _wait_for
from mtlskit.forward.names import identity_header_names
from mtlskit.testca import LeafSpec, TestCA

DOC = Path(__file__).resolve().parent.parent / "docs" / "python.md"
ID = "spiffe://acme.com/docs/example"
BLOCK = re.compile(r"<!-- (file|run): (\S+) -->\n```\w*\n(.*?)```", re.DOTALL)


def blocks() -> dict[str, str]:
    return {name: body for _, name, body in BLOCK.findall(DOC.read_text())}


def test_every_block_is_used():
    assert set(blocks()) == {
        "app.py",
        "gateway.toml",
        "serve",
        "app_behind_nginx.py",
        "uvicorn",
        "nginx-site.conf",
        "client_httpx.py",
        "client_requests.py",
    }


def test_nginx_block_clears_every_identity_header_mtlskit_knows():
    """The block sets the two names the middleware reads and clears every other one."""
    site = blocks()["nginx-site.conf"]
    set_here = dict(re.findall(r"proxy_set_header\s+(\S+)\s+(\S+);", site))
    cleared = {name.lower() for name, value in set_here.items() if value == '""'}
    forwarded = {name.lower() for name, value in set_here.items() if value.startswith("$")}
    assert forwarded == {"x-ssl-client-cert", "x-ssl-client-verify"}
    assert cleared == {name.lower() for name in identity_header_names()} - forwarded
    assert "underscores_in_headers" not in site  # nginx's default (off) drops X_Foo names
    assert 'proxies={"127.0.0.1": "nginx"}' in blocks()["app_behind_nginx.py"]


@pytest.mark.integration
def test_docs_python_examples_run(tmp_path):
    ports = {"8443": _free_port(), "8000": _free_port(), "9443": _free_port()}

    def ported(text: str) -> str:
        for old, new in ports.items():
            text = text.replace(f":{old}", f":{new}").replace(f"--port {old}", f"--port {new}")
        return text

    files = blocks()
    for name in ("app.py", "gateway.toml", "app_behind_nginx.py", "client_httpx.py"):
        (tmp_path / name).write_text(ported(files[name]))
    (tmp_path / "client_requests.py").write_text(ported(files["client_requests.py"]))
    certs, svc = tmp_path / "certs", tmp_path / "svc"
    certs.mkdir()
    svc.mkdir()
    server_ca = trustme.CA()
    server_ca.cert_pem.write_to_path(str(certs / "server-ca.pem"))
    server = server_ca.issue_cert("localhost", "127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(certs / "server.pem"))
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(str(certs / "server.pem"), append=True)
    server.private_key_pem.write_to_path(str(certs / "server.key"))
    (certs / "server.key").chmod(0o600)
    clients = TestCA(name="docs")  # an intermediate, as `mtlskit ca init` makes by default
    (certs / "clients-ca.pem").write_bytes(clients.bundle_pem)
    leaf = clients.issue(LeafSpec(uris=(ID,)))
    (svc / "cert.pem").write_bytes(leaf.cert_pem)  # as `mtlskit enroll` writes them
    (svc / "chain.pem").write_bytes(leaf.chain_pem)
    (svc / "key.pem").write_bytes(leaf.key_pem)

    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(tmp_path),
    }
    mtlskit = shutil.which("mtlskit", path=env["PATH"])
    assert mtlskit, "the mtlskit console script is installed in the venv"
    serve_cmd = ported(files["serve"]).split()
    uvicorn_cmd = ported(files["uvicorn"]).split()
    assert serve_cmd[0] == "mtlskit" and uvicorn_cmd[0] == "uvicorn"
    running = contextlib.ExitStack()  # stops them last started first

    def start(argv: list[str], port: int) -> None:
        process = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
        running.callback(_stop, process)
        _wait_for(port, process, argv[0])

    site = ported(files["nginx-site.conf"]).replace("certs/", f"{certs}/")
    with running:
        start(serve_cmd, ports["8443"])
        start(
            [str(Path(sys.executable).parent / "uvicorn"), *uvicorn_cmd[1:]],
            ports["8000"],
        )
        running.enter_context(nginx(tmp_path / "nginx", http=site, port=ports["9443"]))
        expected = {"id": ID, "kind": "spiffe", "subject": leaf.cert.subject.rfc4514_string()}
        for script in ("client_httpx.py", "client_requests.py"):
            done = subprocess.run(
                [sys.executable, script],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            printed = json.loads(done.stdout.strip().replace("'", '"').replace("None", "null"))
            assert printed == expected, script
