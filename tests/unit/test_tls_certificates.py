"""tls-certificate judges a chain as curl and Python's ssl do; tls-certificate-strict as cryptography's verifier.

Every chain (made by the openssl CLI, by trustme, or by cryptography) is served by a real TLS
server on 127.0.0.1 (a Python ssl server thread), then:
- curl (`--cacert CA --resolve localhost:PORT:127.0.0.1`) and a default Python ssl client give the
  ground truth, measured, and pinned in the case table so a change of either shows up;
- tls-certificate, evaluated by the runner against that server, must give curl's verdict;
- the strict verifier judges the chain the server sends, and must give the pinned reason.
"""

from __future__ import annotations

import datetime
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from stackcheck.compliance import runner
from stackcheck.compliance.model import Outcome, Policy, Result
from stackcheck.compliance.runner import CheckContext
from stackcheck.compliance.tls import verify_chain
from stackcheck.target import HttpTarget
from stackcheck.tls import Extensions, RunCA, ca_extensions, common_name, key_pem, leaf_extensions, pem, san, sign

HOST = "localhost"
CURL = shutil.which("curl") or "/usr/bin/curl"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
POLICY = Policy.load()
NOW = datetime.datetime.now(datetime.UTC)
IN_A_MONTH = NOW + datetime.timedelta(days=30)


@dataclass(frozen=True)
class Material:
    """What the server serves (leaf first, then intermediates) and what the client trusts."""

    chain: bytes
    key: bytes
    ca: bytes


# -- a real TLS server ------------------------------------------------------------------------------


class _Handler(socketserver.BaseRequestHandler):
    server: _TlsServer

    def handle(self) -> None:
        self.request.settimeout(5)
        try:
            with self.server.context.wrap_socket(self.request, server_side=True) as tls:
                tls.recv(4096)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        except OSError:  # includes ssl.SSLError: the client refused the certificate, or probed and left
            pass


class _TlsServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__(("127.0.0.1", 0), _Handler)


@contextmanager
def tls_server(directory: Path, *served: Material) -> Iterator[int]:
    """A TLS server on 127.0.0.1 serving each material's chain (one per key type); yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for index, material in enumerate(served):
        chain, key = directory / f"served-{index}.pem", directory / f"served-{index}.key"
        chain.write_bytes(material.chain)
        key.write_bytes(material.key)
        context.load_cert_chain(chain, key)
    server = _TlsServer(context)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- the clients whose verdicts are the ground truth ----------------------------------------------


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str


def curl_verdict(port: int, ca_file: Path, *options: str) -> Verdict:
    url = f"https://{HOST}:{port}/"
    resolve = f"{HOST}:{port}:127.0.0.1"  # the name to verify is localhost; the address is 127.0.0.1
    command = [CURL, "-q", "-sS", "--noproxy", "*", "--max-time", "10", "--cacert", str(ca_file), *options,
               "--resolve", resolve, "-o", "/dev/null", url]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
    )
    return Verdict(done.returncode == 0, done.stderr.strip() or f"exit {done.returncode}")


def python_verdict(port: int, ca_file: Path) -> Verdict:
    """What an ordinary Python client (httpx, requests, urllib) does: ssl.create_default_context."""
    context = ssl.create_default_context(cafile=ca_file)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=HOST),
        ):
            pass  # the handshake verified the chain
    except ssl.SSLCertVerificationError as exc:
        return Verdict(False, str(exc.verify_message))
    return Verdict(True, "")


def rule_results(rule_id: str, port: int, ca_file: Path) -> list[Result]:
    target = HttpTarget(f"https://{HOST}:{port}", booted=True, ca_file=ca_file)
    return runner.evaluate(POLICY.rules[rule_id], CheckContext(target, None, POLICY))


def strict_problem(material: Material, ca_file: Path) -> str | None:
    return verify_chain(x509.load_pem_x509_certificates(material.chain), ca_file, HOST)[1]


# -- chains made by the openssl CLI ---------------------------------------------------------------


def openssl(directory: Path, *args: str) -> None:
    subprocess.run([OPENSSL, *args], cwd=directory, check=True, capture_output=True)


def openssl_ca(directory: Path) -> None:
    """The internal CA everybody makes: `openssl req -x509`, nothing added (no keyUsage)."""
    openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "365", "-subj", "/O=Example/CN=Example Internal CA")  # fmt: skip


def openssl_leaf(directory: Path, names: str) -> Material:
    openssl_ca(directory)
    openssl(directory, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
            "-subj", f"/CN={HOST}", "-addext", f"subjectAltName={names}")  # fmt: skip
    openssl(directory, "x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "30", "-copy_extensions", "copy", "-out", "leaf.crt")  # fmt: skip
    return Material(*((directory / name).read_bytes() for name in ("leaf.crt", "leaf.key", "ca.crt")))


def openssl_cli(directory: Path) -> Material:
    return openssl_leaf(directory, f"DNS:{HOST},IP:127.0.0.1")


def openssl_cli_wrong_host(directory: Path) -> Material:
    return openssl_leaf(directory, "DNS:other.example")


def openssl_cli_self_signed(directory: Path) -> Material:
    """`openssl req -x509 ... -addext subjectAltName=...` used as the server certificate, trusted as itself."""
    openssl(directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "self.key", "-out", "self.crt", "-days", "30", "-subj", f"/CN={HOST}",
            "-addext", f"subjectAltName=DNS:{HOST}")  # fmt: skip
    cert = (directory / "self.crt").read_bytes()
    return Material(cert, (directory / "self.key").read_bytes(), cert)


# -- chains made by trustme -----------------------------------------------------------------------


def _trustme(ca: trustme.CA, trusted: trustme.CA | None = None, **kwargs: object) -> Material:
    leaf = ca.issue_cert(HOST, "127.0.0.1", **kwargs)  # type: ignore[arg-type]
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return Material(chain, leaf.private_key_pem.bytes(), (trusted or ca).cert_pem.bytes())


def trustme_good(directory: Path) -> Material:
    return _trustme(trustme.CA())


def trustme_expired(directory: Path) -> Material:
    return _trustme(trustme.CA(), not_after=NOW - datetime.timedelta(days=1))


def trustme_unknown_ca(directory: Path) -> Material:
    return _trustme(trustme.CA(), trusted=trustme.CA())


def trustme_intermediate(directory: Path) -> Material:
    root = trustme.CA()
    return _trustme(root.create_child_ca(), trusted=root)


# -- chains made by cryptography directly (stackcheck.tls's Web PKI builders, then one thing off) -


@dataclass(frozen=True)
class Issuer:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def root(
    cn: str = "Test Root", extensions: Callable[[ec.EllipticCurvePublicKey], Extensions] = ca_extensions
) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = common_name(cn)
    return Issuer(name, key, sign(name, key.public_key(), name, key, extensions(key.public_key()), IN_A_MONTH))


def intermediate(parent: Issuer) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    name = common_name("Test Intermediate")
    extensions = ca_extensions(key.public_key(), parent.key.public_key())
    return Issuer(name, key, sign(name, key.public_key(), parent.name, parent.key, extensions, IN_A_MONTH))


def leaf(
    issuer: Issuer,
    *,
    names: tuple[str, ...] = (HOST, "127.0.0.1"),
    change: Callable[[Extensions], Extensions] = lambda e: e,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime = IN_A_MONTH,
    chain: tuple[Issuer, ...] = (),
    trusted: bytes | None = None,
) -> Material:
    key = ec.generate_private_key(ec.SECP256R1())
    extensions = change(leaf_extensions(names, key.public_key(), issuer.key.public_key()))
    cert = sign(common_name(names[0]), key.public_key(), issuer.name, issuer.key, extensions, not_after, not_before)
    served = pem(cert) + b"".join(pem(i.cert) for i in chain)
    return Material(served, key_pem(key), trusted if trusted is not None else pem(issuer.cert))


def replacing(
    kind: type[x509.ExtensionType], new: x509.ExtensionType | None, critical: bool = False
) -> Callable[[Extensions], Extensions]:
    """An extension list with ``kind`` replaced by ``new`` (or dropped when None)."""

    def change(extensions: Extensions) -> Extensions:
        kept = [(e, c) for e, c in extensions if not isinstance(e, kind)]
        return kept + ([(new, critical)] if new is not None else [])

    return change


def cryptography_clean(directory: Path) -> Material:
    top = root()
    middle = intermediate(top)
    return leaf(middle, chain=(middle,), trusted=pem(top.cert))


def run_ca(directory: Path) -> Material:
    ca = RunCA.issue((HOST, "127.0.0.1"))
    return Material(ca.cert_pem, ca.key_pem, ca.ca_pem)


def cryptography_wrong_host(directory: Path) -> Material:
    return leaf(root(), names=("other.example",))


def cryptography_expired(directory: Path) -> Material:
    return leaf(root(), not_before=NOW - datetime.timedelta(days=60), not_after=NOW - datetime.timedelta(days=1))


def cryptography_not_yet_valid(directory: Path) -> Material:
    return leaf(root(), not_before=NOW + datetime.timedelta(days=1))


def cryptography_missing_intermediate(directory: Path) -> Material:
    top = root()
    return leaf(intermediate(top), trusted=pem(top.cert))  # the server sends the leaf alone


def cryptography_intermediate_as_anchor(directory: Path) -> Material:
    """The CA file holds the intermediate only (no root): a partial chain."""
    middle = intermediate(root())
    return leaf(middle, chain=(middle,))


def self_signed_leaf(trusted_as_itself: bool) -> Material:
    key = ec.generate_private_key(ec.SECP256R1())
    name = common_name(HOST)
    extensions = leaf_extensions((HOST,), key.public_key(), key.public_key())
    cert = sign(name, key.public_key(), name, key, extensions, IN_A_MONTH)
    return Material(pem(cert), key_pem(key), pem(cert) if trusted_as_itself else pem(root().cert))


def cryptography_self_signed_leaf(directory: Path) -> Material:
    return self_signed_leaf(trusted_as_itself=False)


def cryptography_self_signed_leaf_pinned(directory: Path) -> Material:
    return self_signed_leaf(trusted_as_itself=True)


def cryptography_issuer_not_a_ca(directory: Path) -> Material:
    """The issuer says CA:FALSE."""
    not_ca = replacing(x509.BasicConstraints, x509.BasicConstraints(ca=False, path_length=None), critical=True)
    return leaf(root(extensions=lambda key: not_ca(ca_extensions(key))))


def cryptography_root_without_basic_constraints(directory: Path) -> Material:
    drop = replacing(x509.BasicConstraints, None)
    return leaf(root(extensions=lambda key: drop(ca_extensions(key))))


def cryptography_common_name_only(directory: Path) -> Material:
    return leaf(root(), change=replacing(x509.SubjectAlternativeName, None))


def cryptography_client_auth_only(directory: Path) -> Material:
    client_only = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    return leaf(root(), change=replacing(x509.ExtendedKeyUsage, client_only))


def cryptography_critical_san(directory: Path) -> Material:
    return leaf(root(), change=replacing(x509.SubjectAlternativeName, san((HOST,)), critical=True))


# -- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], Material]
    accepted: bool  # by curl, measured (curl 7.88.1, OpenSSL 3.0.19)
    strict: str | None  # a part of cryptography's reason; None: the strict verifier accepts the chain
    python_differs: bool = False  # Python's default client disagrees with curl (see the case)

    @property
    def name(self) -> str:
        return self.build.__name__


MISSING_KEY_USAGE = (
    "validation failed: candidates exhausted: invalid extension: 2.5.29.15: Certificate is missing required extension"
)
CRITICAL_SAN = "EE subjectAltName MUST NOT be critical when subject is nonempty"
NOT_VALID_NOW = "cert is not valid at validation time"
NO_PATH = "all candidates exhausted with no interior errors"
CASES = [
    # The issue: a plain `openssl req -x509` CA has no keyUsage; every OpenSSL client accepts it.
    Case(openssl_cli, True, MISSING_KEY_USAGE),
    Case(openssl_cli_wrong_host, False, "leaf certificate has no matching subjectAltName"),
    Case(openssl_cli_self_signed, True, "basicConstraints.cA must not be asserted in an EE certificate"),
    Case(trustme_good, True, CRITICAL_SAN),
    Case(trustme_intermediate, True, CRITICAL_SAN),
    Case(trustme_expired, False, NOT_VALID_NOW),
    Case(trustme_unknown_ca, False, CRITICAL_SAN),  # cryptography stops at the leaf's first problem
    Case(cryptography_clean, True, None),
    Case(run_ca, True, None),
    Case(cryptography_wrong_host, False, "leaf certificate has no matching subjectAltName"),
    Case(cryptography_expired, False, NOT_VALID_NOW),
    Case(cryptography_not_yet_valid, False, NOT_VALID_NOW),
    Case(cryptography_missing_intermediate, False, NO_PATH),
    # curl sets X509_V_FLAG_PARTIAL_CHAIN, Python 3.11's default context does not (3.13's does).
    Case(cryptography_intermediate_as_anchor, True, None, python_differs=True),
    Case(cryptography_self_signed_leaf, False, NO_PATH),
    Case(cryptography_self_signed_leaf_pinned, True, None),
    Case(cryptography_issuer_not_a_ca, False, "basicConstraints.cA must be asserted in a CA certificate"),
    Case(
        cryptography_root_without_basic_constraints,
        True,
        "2.5.29.19: missing required extension: CA certificate has no basicConstraints",
    ),
    Case(
        cryptography_common_name_only, True, "missing required extension: leaf server certificate has no subjectAltName"
    ),
    Case(cryptography_client_auth_only, False, "required EKU not found"),
    Case(cryptography_critical_san, True, CRITICAL_SAN),
]


@dataclass(frozen=True)
class Row:
    curl: Verdict
    python: Verdict
    rule: list[Result]
    strict: str | None


def measure(case: Case, directory: Path) -> Row:
    material = case.build(directory)
    ca_file = directory / "trusted-ca.pem"
    ca_file.write_bytes(material.ca)
    with tls_server(directory, material) as port:
        return Row(
            curl_verdict(port, ca_file),
            python_verdict(port, ca_file),
            rule_results("tls-certificate", port, ca_file),
            strict_problem(material, ca_file),
        )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_tls_certificate_gives_curls_verdict(case: Case, tmp_path: Path) -> None:
    row = measure(case, tmp_path)
    assert row.curl.accepted is case.accepted, f"curl now says otherwise: {row.curl.reason}"
    [result] = row.rule
    assert result.outcome is (Outcome.PASS if row.curl.accepted else Outcome.FAIL), (
        f"{row.curl.reason}\n{result.line()}"
    )
    assert (row.python.accepted is row.curl.accepted) is not case.python_differs, row.python.reason
    if not row.python.accepted and not case.python_differs:
        assert f"rejects it: {row.python.reason}" in result.evidence  # the same OpenSSL reason
    if case.strict is None:
        assert row.strict is None
    else:
        assert row.strict is not None, "the strict verifier accepted it"
        assert case.strict in row.strict


def test_curl_and_the_rule_name_the_same_openssl_reason(tmp_path: Path) -> None:
    row = measure(Case(cryptography_issuer_not_a_ca, False, None), tmp_path)
    assert "SSL certificate problem: invalid CA certificate" in row.curl.reason
    assert "rejects it: invalid CA certificate (X509 error 79)" in row.rule[0].evidence


# -- a server with an ECDSA and an RSA certificate -------------------------------------------------


def rsa_leaf() -> tuple[Material, bytes]:
    ca = trustme.CA()
    cert = ca.issue_cert(HOST, key_type=trustme.KeyType.RSA)
    material = Material(cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes(), ca.cert_pem.bytes())
    return material, ca.cert_pem.bytes()


@pytest.mark.parametrize("rsa_trusted", [True, False])
def test_each_certificate_of_a_server_is_judged(tmp_path: Path, rsa_trusted: bool) -> None:
    ecdsa = cryptography_clean(tmp_path)
    rsa_material, rsa_ca = rsa_leaf()
    ca_file = tmp_path / "trusted-ca.pem"
    ca_file.write_bytes(ecdsa.ca + (rsa_ca if rsa_trusted else b""))
    with tls_server(tmp_path, ecdsa, rsa_material) as port:
        results = rule_results("tls-certificate", port, ca_file)
        curl_rsa = curl_verdict(port, ca_file, "--tls-max", "1.2", "--ciphers", "ECDHE-RSA-AES128-GCM-SHA256")
        curl_default = curl_verdict(port, ca_file)
    by_kind = {r.evidence.split(" leaf ")[0]: r for r in results}
    assert sorted(by_kind) == ["ECDSA", "RSA"], [r.line() for r in results]
    assert curl_default.accepted, curl_default.reason  # curl gets the ECDSA certificate
    assert by_kind["ECDSA"].outcome is Outcome.PASS, by_kind["ECDSA"].line()
    assert "default client" in by_kind["ECDSA"].evidence
    assert curl_rsa.accepted is rsa_trusted, curl_rsa.reason
    assert by_kind["RSA"].outcome is (Outcome.PASS if rsa_trusted else Outcome.FAIL), by_kind["RSA"].line()
    assert "TLS 1.2, RSA suites" in by_kind["RSA"].evidence
    assert isinstance(x509.load_pem_x509_certificate(rsa_material.chain).public_key(), rsa.RSAPublicKey)


# -- what is not a pass ---------------------------------------------------------------------------


def test_a_port_without_tls_is_an_error_not_a_pass(tmp_path: Path) -> None:
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as plain:
        thread = threading.Thread(target=plain.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            [result] = rule_results("tls-certificate", plain.server_address[1], tmp_path / "unused.pem")
        finally:
            plain.shutdown()
            thread.join(5)
    assert result.outcome is Outcome.ERROR, result.line()
    assert "no TLS handshake with localhost:" in result.evidence


def test_a_plain_http_url_is_not_evaluated() -> None:
    target = HttpTarget("http://localhost:8080", booted=True)
    [result] = runner.evaluate(POLICY.rules["tls-certificate"], CheckContext(target, None, POLICY))
    assert result.outcome is Outcome.NOT_EVALUATED, result.line()


# -- tls-certificate-strict through the runner (sslyze receives the chain) --------------------------


def test_strict_rule_flags_the_openssl_cli_ca_with_the_exact_reason(tmp_path: Path) -> None:
    material = openssl_cli(tmp_path)
    ca_file = tmp_path / "trusted-ca.pem"
    ca_file.write_bytes(material.ca)
    with tls_server(tmp_path, material) as port:
        [main] = rule_results("tls-certificate", port, ca_file)
        [strict] = rule_results("tls-certificate-strict", port, ca_file)
    assert main.outcome is Outcome.PASS, main.line()
    assert strict.outcome is Outcome.FAIL, strict.line()
    assert strict.rule.severity.value == "low"
    assert f"rejects it against CA file {ca_file}: {MISSING_KEY_USAGE} [2.5.29.15 = key usage]" in strict.evidence


def test_strict_rule_passes_a_clean_cryptography_chain(tmp_path: Path) -> None:
    material = cryptography_clean(tmp_path)
    ca_file = tmp_path / "trusted-ca.pem"
    ca_file.write_bytes(material.ca)
    with tls_server(tmp_path, material) as port:
        [strict] = rule_results("tls-certificate-strict", port, ca_file)
    assert strict.outcome is Outcome.PASS, strict.line()
    assert "(chain of 2 served)" in strict.evidence
    assert "accepts it against CA file" in strict.evidence
    assert "(verified chain of 3)" in strict.evidence
