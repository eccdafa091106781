"""Issue 28: a certificate and PKCS#12 from mtlskit, read and used by the clients people run.

`mtlskit ca init/issue` and `mtlskit export pkcs12` (default and --legacy) as processes; Go,
Java, Node, curl, requests and httpx connect to a running gateway with an echo backend, which
must see the client's identity. Each client is one case. With MTLSKIT_INTEROP_REPORT set, the
run writes every case's outcome and the tool versions there as JSON; tests/interop_report.py
renders it into docs/interop.md.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cryptography
import pytest

from _gateway_support import EchoBackend, GatewayThread, Site, write_config
from conftest import require_program, write

pytestmark = pytest.mark.integration

ID = "spiffe://acme.com/billing/payments"
P12_PASSWORD = "export pw"
GOPATH_SRC = Path("/usr/share/gocode/src")
X_CRYPTO = GOPATH_SRC / "golang.org/x/crypto/pkcs12"
SSLMATE = GOPATH_SRC / "software.sslmate.com/src/go-pkcs12"
RESULTS: list[dict[str, str]] = []
VERSIONS: dict[str, str] = {}

GO_CLIENT = r"""
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"golang.org/x/crypto/pkcs12"
)

// pem CERT KEY CA URL | p12 FILE PASSWORD CA URL
func main() {
	var pair tls.Certificate
	var err error
	if os.Args[1] == "pem" {
		pair, err = tls.LoadX509KeyPair(os.Args[2], os.Args[3])
	} else {
		pair, err = fromP12(os.Args[2], os.Args[3])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(3)
	}
	roots := x509.NewCertPool()
	caPEM, _ := os.ReadFile(os.Args[4])
	roots.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots},
	}}
	resp, err := client.Get(os.Args[5])
	if err != nil {
		fmt.Fprintln(os.Stderr, "request:", err)
		os.Exit(4)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d\n%s", resp.StatusCode, body)
}

func fromP12(path, password string) (tls.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return tls.Certificate{}, err
	}
	blocks, err := pkcs12.ToPEM(data, password)
	if err != nil {
		return tls.Certificate{}, err
	}
	var certs, key []byte
	for _, b := range blocks {
		if b.Type == "CERTIFICATE" {
			certs = append(certs, pem.EncodeToMemory(b)...)
		} else {
			key = pem.EncodeToMemory(b)
		}
	}
	return tls.X509KeyPair(certs, key)
}
"""

JAVA_CLIENT = r"""
import java.io.FileInputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

// Main P12 PASSWORD CA URL: the PKCS#12 as the key store, the CA's PEM as the trust store
public class Main {
    public static void main(String[] args) throws Exception {
        char[] password = args[1].toCharArray();
        KeyStore keys = KeyStore.getInstance("PKCS12");
        keys.load(new FileInputStream(args[0]), password);
        KeyManagerFactory kmf = KeyManagerFactory.getInstance("PKIX");
        kmf.init(keys, password);
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        trust.setCertificateEntry("ca", CertificateFactory.getInstance("X.509")
            .generateCertificate(new FileInputStream(args[2])));
        TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
        tmf.init(trust);
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        HttpResponse<String> response = HttpClient.newBuilder().sslContext(context).build()
            .send(HttpRequest.newBuilder(URI.create(args[3])).build(),
                  HttpResponse.BodyHandlers.ofString());
        System.out.println(response.statusCode());
        System.out.print(response.body());
    }
}
"""

NODE_CLIENT = r"""
const fs = require('fs'), https = require('https');
const [p12, password, ca, url] = process.argv.slice(2);
const req = https.request(url, {pfx: fs.readFileSync(p12), passphrase: password,
                                ca: fs.readFileSync(ca)}, (res) => {
  let body = '';
  res.on('data', (chunk) => { body += chunk; });
  res.on('end', () => { process.stdout.write(res.statusCode + '\n' + body); });
});
req.on('error', (e) => { console.error('request:', e.message); process.exit(4); });
req.end();
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Pki:
    """What `mtlskit` wrote for one client, plus the gateway's server CA (trustme)."""

    dir: Path
    chain: Path
    key: Path
    root: Path
    p12: Path
    p12_legacy: Path
    server_ca: Path


def _mtlskit(*args: str | os.PathLike[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mtlskit", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, gateway_server_ca) -> Pki:
    base = tmp_path_factory.mktemp("interop")
    passphrase = write(base / "ca.pass", b"correct horse battery staple\n")
    p12_pass = write(base / "p12.pass", P12_PASSWORD.encode() + b"\n")
    _mtlskit("ca", "init", base / "ca", "--trust-domain", "acme.com",
             "--passphrase-file", passphrase)  # fmt: skip
    _mtlskit("ca", "issue", base / "ca", "--id", ID, "--out", base / "client",
             "--passphrase-file", passphrase)  # fmt: skip
    client = base / "client"
    for name, extra in (("client.p12", []), ("legacy.p12", ["--legacy"])):
        _mtlskit("export", "pkcs12", "--cert", client / "chain.pem", "--key", client / "key.pem",
                 "--out", base / name, "--password-file", p12_pass, *extra)  # fmt: skip
    gateway_server_ca.cert_pem.write_to_path(str(base / "server-ca.pem"))
    return Pki(
        dir=base,
        chain=client / "chain.pem",
        key=client / "key.pem",
        root=base / "ca" / "root.pem",
        p12=base / "client.p12",
        p12_legacy=base / "legacy.p12",
        server_ca=base / "server-ca.pem",
    )


@pytest.fixture(scope="module")
def gateway_url(pki: Pki, gateway_server_ca) -> Iterator[str]:
    backend = EchoBackend()
    site_dir = pki.dir / "site"
    site_dir.mkdir()
    site = Site(dir=site_dir, server_ca=gateway_server_ca, backend=backend)
    config = write_config(site, pki.root.read_bytes(), '[client_auth]\ntrust = ["trust.pem"]\n')
    running = GatewayThread(config)
    yield f"https://127.0.0.1:{running.port}/interop"
    running.stop()
    backend.stop()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    """Every case's outcome and the tool versions, as JSON, where MTLSKIT_INTEROP_REPORT says."""
    yield
    target = os.environ.get("MTLSKIT_INTEROP_REPORT")
    if target:
        Path(target).write_text(
            json.dumps({"versions": VERSIONS, "results": RESULTS}, indent=2) + "\n"
        )


def _version(name: str, argv: list[str]) -> None:
    if name not in VERSIONS:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
        VERSIONS[name] = (done.stdout or done.stderr).strip().splitlines()[0]


def _run(argv: list[str | os.PathLike[str]], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
    )


def _backend_saw(output: str) -> str:
    """The identity header the echo backend received, from a client's "STATUS\\nBODY" output."""
    status, _, body = output.partition("\n")
    assert status.strip() == "200", output
    headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
    return headers.get("x-mtlskit-client-identity", "")


def _go_build(pki: Pki, name: str, package: Path, debian: str, source: str) -> Path:
    """The Go client built against a Debian-packaged PKCS#12 library (no network: GOPATH mode)."""
    require_program("go")
    if not package.is_dir():
        message = f"{package} is missing (apt {debian}; .ci/run installs it)"
        if os.environ.get("MTLSKIT_REQUIRE_INTEGRATION") == "1":
            pytest.fail(message)
        pytest.skip(message)
    main = pki.dir / name / "main.go"
    main.parent.mkdir()
    main.write_text(source)
    env = {"GOPATH": "/usr/share/gocode", "GO111MODULE": "off", "GOFLAGS": ""}
    if not os.access(Path.home(), os.W_OK):
        env["GOCACHE"] = str(pki.dir / "gocache")
    built = _run(["go", "build", "-o", main.parent / "client", main], **env)
    assert built.returncode == 0, built.stderr
    _version("go", ["go", "version"])
    VERSIONS[package.relative_to(GOPATH_SRC).as_posix()] = _debian_version(debian)
    return main.parent / "client"


@pytest.fixture(scope="module")
def go_client(pki: Pki) -> Path:
    return _go_build(pki, "go", X_CRYPTO, "golang-golang-x-crypto-dev", GO_CLIENT)


@pytest.fixture(scope="module")
def go_sslmate_client(pki: Pki) -> Path:
    """The same client, reading the PKCS#12 with x/crypto's maintained fork (same API)."""
    source = GO_CLIENT.replace(
        '"golang.org/x/crypto/pkcs12"', '"software.sslmate.com/src/go-pkcs12"'
    )
    return _go_build(pki, "go-sslmate", SSLMATE, "golang-sslmate-src-go-pkcs12-dev", source)


def _debian_version(package: str) -> str:
    if not shutil.which("dpkg-query"):
        return "unknown"
    done = _run(["dpkg-query", "-W", "-f", "${Version}", package])
    return f"{package} {done.stdout.strip()}" if done.returncode == 0 else "unknown"


def _record(client: str, reads: str, outcome: str) -> None:
    RESULTS.append({"client": client, "reads": reads, "outcome": outcome})


# Each case: (what it reads, run it -> the identity the backend saw, or the reader's refusal).
def case_go_pem(pki: Pki, url: str, go: Path) -> str:
    done = _run([go, "pem", pki.chain, pki.key, pki.server_ca, url])
    assert done.returncode == 0, done.stderr
    return _backend_saw(done.stdout)


def case_go_x_crypto_legacy(pki: Pki, url: str, go: Path) -> str:
    done = _run([go, "p12", pki.p12_legacy, P12_PASSWORD, pki.server_ca, url])
    assert done.returncode == 0, done.stderr
    return _backend_saw(done.stdout)


def case_go_x_crypto_default(pki: Pki, url: str, go: Path) -> str:
    """docs/interop.md: x/crypto/pkcs12 knows neither PBES2 nor a SHA-256 MAC; --legacy."""
    done = _run([go, "p12", pki.p12, P12_PASSWORD, pki.server_ca, url])
    assert done.returncode == 3, done.stdout
    assert "unknown digest algorithm: 2.16.840.1.101.3.4.2.1" in done.stderr
    return "refused (needs --legacy): " + done.stderr.strip().removeprefix("load: ")


def case_go_sslmate_default(pki: Pki, url: str, go: Path) -> str:
    done = _run([go, "p12", pki.p12, P12_PASSWORD, pki.server_ca, url])
    assert done.returncode == 0, done.stderr
    return _backend_saw(done.stdout)


def _keytool(p12: Path) -> str:
    keytool = require_program("keytool")
    _version("java", ["java", "-version"])
    done = _run([keytool, "-list", "-keystore", p12, "-storetype", "PKCS12",
                 "-storepass", P12_PASSWORD])  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PrivateKeyEntry" in done.stdout and ID in done.stdout
    return "listed PrivateKeyEntry " + ID


def case_java_keytool_default(pki: Pki, url: str) -> str:
    return _keytool(pki.p12)


def case_java_keytool_legacy(pki: Pki, url: str) -> str:
    return _keytool(pki.p12_legacy)


def case_java_httpclient_default(pki: Pki, url: str) -> str:
    java = require_program("java")
    require_program("javac")  # `java Main.java` compiles in memory: a JDK, not only a JRE
    _version("java", ["java", "-version"])
    source = pki.dir / "java" / "Main.java"
    source.parent.mkdir(exist_ok=True)
    source.write_text(JAVA_CLIENT)
    done = _run([java, source, pki.p12, P12_PASSWORD, pki.server_ca, url])
    assert done.returncode == 0, done.stderr
    return _backend_saw(done.stdout)


def _node(pki: Pki, url: str, p12: Path) -> str:
    node = require_program("node")
    _version("node", ["node", "--version"])
    script = pki.dir / "client.js"
    script.write_text(NODE_CLIENT)
    done = _run([node, script, p12, P12_PASSWORD, pki.server_ca, url])
    assert done.returncode == 0, done.stderr
    return _backend_saw(done.stdout)


def case_node_pfx_default(pki: Pki, url: str) -> str:
    return _node(pki, url, pki.p12)


def case_node_pfx_legacy(pki: Pki, url: str) -> str:
    return _node(pki, url, pki.p12_legacy)


def case_curl_pem(pki: Pki, url: str) -> str:
    curl = require_program("curl")
    _version("curl", ["curl", "--version"])
    done = _run([curl, "-sS", "--cert", pki.chain, "--key", pki.key, "--cacert", pki.server_ca,
                 "-w", "%{http_code}", "-o", pki.dir / "curl.out", url])  # fmt: skip
    assert done.returncode == 0, done.stderr
    return _backend_saw(done.stdout + "\n" + (pki.dir / "curl.out").read_text())


def case_openssl_pkcs12_default(pki: Pki, url: str) -> str:
    openssl = require_program("openssl")
    _version("openssl", ["openssl", "version"])
    done = _run([openssl, "pkcs12", "-in", pki.p12, "-nodes", "-passin", f"pass:{P12_PASSWORD}"])
    assert done.returncode == 0, done.stderr
    assert "PRIVATE KEY" in done.stdout and ID.split("//")[1] in done.stdout
    return "read key and " + str(done.stdout.count("BEGIN CERTIFICATE")) + " certificates"


def case_python_requests_pem(pki: Pki, url: str) -> str:
    requests = pytest.importorskip("requests")
    VERSIONS["requests"] = f"requests {requests.__version__}"
    response = requests.get(url, cert=(str(pki.chain), str(pki.key)), verify=str(pki.server_ca))
    return _backend_saw(f"{response.status_code}\n{response.text}")


def case_python_httpx_pem(pki: Pki, url: str) -> str:
    httpx = pytest.importorskip("httpx")
    VERSIONS["httpx"] = f"httpx {httpx.__version__}"
    context = ssl.create_default_context(cafile=str(pki.server_ca))
    context.load_cert_chain(pki.chain, pki.key)
    with httpx.Client(verify=context) as client:
        response = client.get(url)
    return _backend_saw(f"{response.status_code}\n{response.text}")


CASES: dict[str, tuple[str, Callable[..., str], str | None]] = {
    # client: (what it reads, the case, the fixture of the Go client it needs)
    "Go net/http, tls.LoadX509KeyPair": ("chain.pem + key.pem", case_go_pem, "go_client"),
    "Go x/crypto/pkcs12": ("PKCS#12 --legacy", case_go_x_crypto_legacy, "go_client"),
    "Go x/crypto/pkcs12 (default file)": ("PKCS#12 default", case_go_x_crypto_default, "go_client"),
    "Go software.sslmate.com/src/go-pkcs12": (
        "PKCS#12 default",
        case_go_sslmate_default,
        "go_sslmate_client",
    ),
    "Java keytool -list": ("PKCS#12 default", case_java_keytool_default, None),
    "Java keytool -list (legacy file)": ("PKCS#12 --legacy", case_java_keytool_legacy, None),
    "Java HttpClient, PKCS12 KeyStore": ("PKCS#12 default", case_java_httpclient_default, None),
    "Node https, pfx": ("PKCS#12 default", case_node_pfx_default, None),
    "Node https, pfx (legacy file)": ("PKCS#12 --legacy", case_node_pfx_legacy, None),
    "curl --cert/--key": ("chain.pem + key.pem", case_curl_pem, None),
    "openssl pkcs12": ("PKCS#12 default", case_openssl_pkcs12_default, False),
    "Python requests": ("chain.pem + key.pem", case_python_requests_pem, None),
    "Python httpx": ("chain.pem + key.pem", case_python_httpx_pem, None),
}


@pytest.mark.parametrize("client", list(CASES))
def test_client_reads_mtlskit_files_and_the_backend_sees_its_identity(
    client: str, request: pytest.FixtureRequest, pki: Pki, gateway_url: str
) -> None:
    reads, case, go = CASES[client]
    extra = [request.getfixturevalue(go)] if go else []
    VERSIONS.setdefault("python", sys.version.split()[0])
    VERSIONS.setdefault("cryptography (mtlskit's PKCS#12 writer)", cryptography.__version__)
    outcome = case(pki, gateway_url, *extra)
    if outcome.startswith(("refused", "listed", "read ")):
        _record(client, reads, outcome)
        return
    assert outcome == ID, f"{client}: the backend saw identity {outcome!r}"
    _record(client, reads, f"backend saw {ID}")


def test_default_pkcs12_iterations_and_who_needs_legacy(pki: Pki) -> None:
    """What a reader sees in the default file (100,000 PBKDF2 iterations, not OWASP's 600,000
    for password tables: each load paid it, 0.16 s in Python, 0.23 s in Node), and the
    --legacy help naming every reader in docs/interop.md that cannot read the default."""
    openssl = require_program("openssl")
    done = _run([openssl, "pkcs12", "-in", pki.p12, "-info", "-noout",
                 "-passin", f"pass:{P12_PASSWORD}"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "MAC: sha256" in done.stdout + done.stderr
    schemes = [line for line in (done.stdout + done.stderr).splitlines() if "PBES2" in line]
    assert len(schemes) == 2, done.stdout + done.stderr  # the certificates and the key
    for line in schemes:
        assert "AES-256-CBC, Iteration 100000, PRF hmacWithSHA256" in line
    help_text = " ".join(_mtlskit("export", "pkcs12", "--help").split())
    for reader in ("golang.org/x/crypto/pkcs12", "Java before 8u301/11.0.12",
                   "Windows before 10 1709", "macOS Keychain"):  # fmt: skip
        assert reader in help_text
