"""deploy/'s systemd units and Dockerfile start the commands they name, as written.

Each unit's ExecStart (and the Dockerfile's ENTRYPOINT + CMD) is run as a real process, with
only the install paths moved into a temp dir (/usr/local/bin/mtlskit → this venv's,
/etc/mtlskit and /var/lib/mtlskit → under tmp_path) and the ports made free. It must come up
(its port answers, /healthz where it has one) and exit on SIGTERM. Shell completion is
checked the same way: the installed entry point prints click's bash script.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from _servers import free_port, wait_for
from conftest import require_program

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MTLSKIT = Path(sys.executable).parent / "mtlskit"
UNITS = sorted(DEPLOY.glob("*.service"))
HARDENING = ("NoNewPrivileges", "ProtectSystem", "ReadWritePaths", "User")
PASSPHRASE = "a deploy test passphrase"


def unit(path: Path) -> configparser.SectionProxy:
    """The [Service] section, read as systemd would (repeated keys allowed)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser["Service"]


def dockerfile() -> dict[str, str]:
    """The Dockerfile's instructions, last one of each kind (as Docker applies them)."""
    found: dict[str, str] = {}
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found[word.upper()] = rest.strip()
    return found


def localize(argv: list[str], root: Path, ports: dict[str, int]) -> list[str]:
    """ARGV with the install paths under ROOT and the documented ports replaced by free ones."""
    out = []
    for given in argv:
        word = str(MTLSKIT) if given in ("/usr/local/bin/mtlskit", "mtlskit") else given
        for prefix in ("/etc/mtlskit", "/var/lib/mtlskit"):
            word = word.replace(prefix, str(root / prefix.lstrip("/")))
        word = word.replace("https://ca.internal:8444", f"https://127.0.0.1:{ports['ca']}")
        out.append(word.replace("127.0.0.1:8444", f"127.0.0.1:{ports['ca']}"))
    return out


def _run(*args: str, cwd: Path) -> str:
    env = {**os.environ, "MTLSKIT_CA_PASSPHRASE": PASSPHRASE}
    done = subprocess.run(
        [str(MTLSKIT), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def host(tmp_path):
    """/etc/mtlskit and /var/lib/mtlskit as the units expect them, under tmp_path."""
    require_program("openssl")
    etc = tmp_path / "etc/mtlskit"
    lib = tmp_path / "var/lib/mtlskit"
    (tmp_path / "var/log/mtlskit").mkdir(parents=True)
    etc.mkdir(parents=True)
    lib.mkdir(parents=True)
    (etc / "ca.pass").write_text(PASSPHRASE + "\n")
    (etc / "ca.pass").chmod(0o600)
    # 6 s certificates: the renew daemon renews one (at ~2/3) while the test watches
    _run(
        "ca",
        "init",
        str(lib / "ca"),
        "--trust-domain",
        "acme.com",
        "--default-ttl",
        "6s",
        cwd=tmp_path,
    )
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-keyout", str(etc / "server.key"), "-out", str(etc / "server.pem")),
            *("-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    (etc / "server.key").chmod(0o600)
    ports = {"ca": free_port(), "gateway": free_port(), "authz": free_port()}
    root = lib / "ca/root.pem"
    (etc / "gateway.toml").write_text(
        f'[listen]\naddress = "127.0.0.1:{ports["gateway"]}"\ncert = "server.pem"\n'
        f'key = "server.key"\n\n[client_auth]\ntrust = ["{root}"]\n\n'
        f'[upstream]\nurls = ["http://127.0.0.1:{free_port()}"]\n\n'
        f'[log]\naccess = "{tmp_path}/var/log/mtlskit/access.log"\n'
    )
    (etc / "authz.toml").write_text(
        f'[listen]\naddress = "127.0.0.1:{ports["authz"]}"\n\n[client_auth]\ntrust = ["{root}"]\n'
    )
    return tmp_path, ports


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MTLSKIT_CA_PASSPHRASE"}
    return subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _stops_on_sigterm(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    assert process.returncode in (0, -15), process.returncode


def _reloads(path: Path, process: subprocess.Popen) -> None:
    """Send the signal the unit's ExecReload sends; a server it killed fails the caller."""
    assert unit(path)["ExecReload"] == "/bin/kill -HUP $MAINPID"
    process.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert process.poll() is None, f"{path.name}: SIGHUP ended the process"


def _first_line(process: subprocess.Popen) -> str:
    """PROCESS's first stdout line, or '' if it exits or stays silent for 60 s."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    return lines[0] if lines else ""


def _healthz(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


@pytest.mark.parametrize("path", UNITS, ids=[p.stem for p in UNITS])
def test_unit_is_hardened(path):
    service = unit(path)
    for key in HARDENING:
        assert service.get(key), f"{path.name}: no {key}="
    assert service["User"] != "root"
    assert service["ProtectSystem"] == "strict"
    reload = service.get("ExecReload")
    if reload is not None:
        assert reload == "/bin/kill -HUP $MAINPID"


def test_units_cover_every_server():
    commands = {" ".join(shlex.split(unit(p)["ExecStart"])[1:3]) for p in UNITS}
    assert {"ca serve", "gateway --config", "authz-server --config"} <= commands
    assert any("renew" in c for c in commands)


def test_ca_unit_serves_then_renew_unit_runs(host):
    root, ports = host
    ca = _start(
        localize(shlex.split(unit(DEPLOY / "mtlskit-ca.service")["ExecStart"]), root, ports), root
    )
    try:
        wait_for(ports["ca"], ca, "ca serve")
        _reloads(DEPLOY / "mtlskit-ca.service", ca)  # the enrollment below needs it alive
        client = root / "var/lib/mtlskit/client"
        token = _run(
            "ca",
            "token",
            str(root / "var/lib/mtlskit/ca"),
            "--id",
            "spiffe://acme.com/svc",
            cwd=root,
        ).strip()
        fingerprint = json.loads(
            _run("inspect", "--json", str(root / "var/lib/mtlskit/ca/root.pem"), cwd=root)
        )["results"][0]["fingerprint_sha256"]
        _run(
            "enroll",
            f"https://127.0.0.1:{ports['ca']}",
            "--token",
            token,
            "--out",
            str(client),
            "--ca-fingerprint",
            fingerprint,
            cwd=root,
        )
        argv = localize(
            shlex.split(unit(DEPLOY / "mtlskit-renew.service")["ExecStart"]), root, ports
        )
        renew = _start(argv, root)
        line = _first_line(renew)
        assert line.startswith("renewed spiffe://acme.com/svc"), line + renew.stderr.read()
        assert renew.poll() is None
        _stops_on_sigterm(renew)
    finally:
        _stops_on_sigterm(ca)


def test_gateway_unit_comes_up(host):
    root, ports = host
    argv = localize(shlex.split(unit(DEPLOY / "mtlskit-gateway.service")["ExecStart"]), root, ports)
    gateway = _start(argv, root)
    wait_for(ports["gateway"], gateway, "gateway")
    _reloads(DEPLOY / "mtlskit-gateway.service", gateway)
    wait_for(ports["gateway"], gateway, "gateway after SIGHUP")
    _stops_on_sigterm(gateway)


def test_authz_unit_answers_healthz(host):
    root, ports = host
    argv = localize(shlex.split(unit(DEPLOY / "mtlskit-authz.service")["ExecStart"]), root, ports)
    authz = _start(argv, root)
    try:
        wait_for(ports["authz"], authz, "authz-server")
        assert _healthz(f"http://127.0.0.1:{ports['authz']}/healthz") == 200
    finally:
        _stops_on_sigterm(authz)


def test_dockerfile_entrypoint_runs(host):
    root, ports = host
    steps = dockerfile()
    assert steps["FROM"] == "python:3.11-slim"
    assert "pip install" in steps["RUN"] or "pip install" in (DEPLOY / "Dockerfile").read_text()
    assert steps["USER"] not in ("root", "0")
    argv = json.loads(steps["ENTRYPOINT"]) + json.loads(steps["CMD"])
    assert argv[0] == "mtlskit"
    gateway = _start(localize(argv, root, ports), root)
    wait_for(ports["gateway"], gateway, "gateway (Dockerfile CMD)")
    _stops_on_sigterm(gateway)


def test_bash_completion_script_from_the_entry_point(tmp_path):
    env = {**os.environ, "_MTLSKIT_COMPLETE": "bash_source"}
    done = subprocess.run([str(MTLSKIT)], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "complete -o nosort -F _mtlskit_completion mtlskit" in done.stdout
    env = {
        **os.environ,
        "_MTLSKIT_COMPLETE": "bash_complete",
        "COMP_WORDS": "mtlskit ca i",
        "COMP_CWORD": "2",
    }
    done = subprocess.run([str(MTLSKIT)], env=env, capture_output=True, text=True, check=False)
    assert "plain,init" in done.stdout.splitlines()
