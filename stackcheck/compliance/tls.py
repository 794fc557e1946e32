"""TLS rules: protocols, cipher suites, the certificate, ALPN, the HTTP redirect, PostgreSQL's STARTTLS.

One sslyze scan per endpoint (the HTTPS entrypoint; each PostgreSQL instance) is shared by the
rules of a run through ``ctx.memo``. tls-certificate shakes hands itself, as an OpenSSL client
(Python's ssl, verifying as curl does), so its verdict is the one the stack's real clients reach;
tls-certificate-strict holds the stricter Web PKI findings on the chain sslyze received. A booted
stack is always scanned on 127.0.0.1 (its ports are published there), with the URL's hostname
(localhost) as SNI and as the name the certificate must match, and the run's CA as the trust anchor.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import socket
import ssl
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtensionOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from sslyze.connection_helpers.opportunistic_tls_helpers import ProtocolWithOpportunisticTlsEnum
from sslyze.errors import ServerHostnameCouldNotBeResolved
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
    MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)
from sslyze.plugins.certificate_info.implementation import CertificateInfoScanResult
from sslyze.plugins.certificate_info.trust_stores.trust_store_repository import TrustStoresRepository
from sslyze.plugins.openssl_cipher_suites.implementation import CipherSuitesScanResult
from sslyze.plugins.scan_commands import ScanCommand
from sslyze.scanner.models import ServerScanRequest, ServerScanResult, ServerScanStatusEnum
from sslyze.scanner.scan_command_attempt import ScanCommandAttemptStatusEnum
from sslyze.scanner.scanner import Scanner
from sslyze.server_setting import ServerNetworkConfiguration, ServerNetworkLocation

from stackcheck.compliance.model import Outcome, Result, Rule
from stackcheck.compliance.runner import CheckContext, check, not_applicable
from stackcheck.errors import PolicyError, StackcheckError

# Per connection; sslyze retries once. Against 127.0.0.1 a handshake takes milliseconds.
NETWORK_TIMEOUT_S = 3
NETWORK_RETRIES = 1
CONCURRENT_CONNECTIONS = 10

# Protocol names as the policy writes them, and the sslyze scan command that tests each.
PROTOCOLS: tuple[tuple[str, ScanCommand], ...] = (
    ("SSLv2", ScanCommand.SSL_2_0_CIPHER_SUITES),
    ("SSLv3", ScanCommand.SSL_3_0_CIPHER_SUITES),
    ("TLSv1.0", ScanCommand.TLS_1_0_CIPHER_SUITES),
    ("TLSv1.1", ScanCommand.TLS_1_1_CIPHER_SUITES),
    ("TLSv1.2", ScanCommand.TLS_1_2_CIPHER_SUITES),
    ("TLSv1.3", ScanCommand.TLS_1_3_CIPHER_SUITES),
)
PROTOCOL_NAMES = tuple(name for name, _ in PROTOCOLS)
HTTPS_COMMANDS = frozenset(SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER | {cmd for _, cmd in PROTOCOLS})
STARTTLS_COMMANDS = frozenset(cmd for _, cmd in PROTOCOLS)

# Mozilla checker issues about cipher suites and protocol settings. Its certificate findings
# (trust, key type, lifespan) belong to the tls-certificate rules and tls-expiry: a run CA's certificate is
# neither publicly trusted nor short-lived, and that is not a configuration mistake of the stack.
MOZILLA_CERTIFICATE_ISSUES = (
    "certificate_path_validation",
    "certificate_curves",
    "rsa_key_size",
    "certificate_types",
    "certificate_signatures",
    "maximum_certificate_lifespan",
)


def mozilla_guidelines_version() -> str:
    """The version of Mozilla's Server Side TLS guidelines that sslyze checks against (e.g. "5.7")."""
    # The very file sslyze's checker reads: it ships one version and names it only there.
    return str(json.loads(MozillaTlsConfiguration._JSON_PROFILE_PATH.read_text())["version"])


# Key exchanges with ephemeral keys. TLS 1.3 suites (TLS_AES_*, TLS_CHACHA20_*) always have them.
_FORWARD_SECRET = re.compile(r"^TLS_(ECDHE|DHE|ECDH_anon|DH_anon)_|^TLS_(AES|CHACHA20|SM4)_")


# -- pure helpers -----------------------------------------------------------------------------------


def weak_reason(names: Iterable[str], forbidden: Iterable[str]) -> str | None:
    """The first forbidden word in any of ``names`` (IANA and OpenSSL names of one suite), else None.

    A word matches where no letter touches it on either side: DES matches 3DES_EDE and DES-CBC3,
    not ECDSA; anon matches DH_anon.
    """
    for word in forbidden:
        pattern = re.compile(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", re.IGNORECASE)
        if any(pattern.search(name) for name in names):
            return word
    return None


def has_forward_secrecy(iana_name: str) -> bool:
    """Whether a cipher suite's key exchange is ephemeral (ECDHE/DHE), by its IANA name."""
    return bool(_FORWARD_SECRET.match(iana_name))


def days_left(not_after: datetime.datetime, now: datetime.datetime | None = None) -> int:
    """Whole days from ``now`` (UTC) until ``not_after``; negative once expired."""
    now = now or datetime.datetime.now(datetime.UTC)
    return (not_after - now) // datetime.timedelta(days=1)


def protocol_verdict(
    supported: Mapping[str, bool], refused: Iterable[str], accepted: Iterable[str]
) -> tuple[list[str], str]:
    """Problems (protocols on the wrong side) and the evidence line for a protocol scan."""
    unknown = sorted((set(refused) | set(accepted)) - set(PROTOCOL_NAMES))
    if unknown:
        raise PolicyError(f"tls protocol names {unknown} are unknown", f"use names among: {', '.join(PROTOCOL_NAMES)}")
    on = [p for p in PROTOCOL_NAMES if supported.get(p)]
    off = [p for p in PROTOCOL_NAMES if p in supported and not supported[p]]
    problems = [f"{p} accepted (must be refused)" for p in refused if supported.get(p)]
    problems += [f"{p} refused (must be accepted)" for p in accepted if p in supported and not supported[p]]
    evidence = f"accepted: {', '.join(on) or 'none'}; refused: {', '.join(off) or 'none'}"
    return problems, evidence


def _join(items: Iterable[str]) -> str:
    return ", ".join(items)


# -- scanning ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A TLS endpoint: the name to verify (and send as SNI), the port, and where to connect."""

    host: str
    port: int
    ip: str | None = None  # None: resolve host (external targets only)
    ca_file: Path | None = None  # the trust anchor; None: the system store
    starttls: ProtocolWithOpportunisticTlsEnum | None = None
    label: str | None = None  # subject shown in results; default host:port

    @property
    def subject(self) -> str:
        return self.label or f"{self.host}:{self.port}"


def https_endpoint(rule: Rule, ctx: CheckContext) -> Endpoint:
    target = ctx.http_target()
    if urlsplit(target.base_url).scheme != "https":
        raise not_applicable(rule, f"{target.base_url} is not an https:// URL: no TLS to check")
    # A booted stack publishes on 127.0.0.1 only; its URL names localhost, which the certificate names.
    return Endpoint(target.host, target.port, "127.0.0.1" if target.booted else None, target.ca_file)


def trust_anchor(endpoint: Endpoint) -> tuple[Path, str]:
    """The CA file the certificate must chain to, and how to name it: the target's, else the system store."""
    if endpoint.ca_file is not None:
        return endpoint.ca_file, f"CA file {endpoint.ca_file}"
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate), f"the system store {candidate}"
    mozilla = TrustStoresRepository.get_default().get_main_store()
    return mozilla.path, f"Mozilla's trust store ({mozilla.version})"


# Extension names for the dotted OIDs in cryptography's reasons ("2.5.29.15" is key usage).
_EXTENSION_NAMES = {
    oid.dotted_string: name.lower().replace("_", " ")
    for name, oid in vars(ExtensionOID).items()
    if isinstance(oid, x509.ObjectIdentifier)
}
_DOTTED_OID = re.compile(r"\b\d+(?:\.\d+){2,}\b")


def name_oids(reason: str) -> str:
    """``reason`` unchanged, followed by the names of the extension OIDs it cites."""
    cited = [
        f"{oid} = {_EXTENSION_NAMES[oid]}"
        for oid in dict.fromkeys(_DOTTED_OID.findall(reason))
        if oid in _EXTENSION_NAMES
    ]
    return f"{reason} [{'; '.join(cited)}]" if cited else reason


def verify_chain(
    chain: list[x509.Certificate], ca_file: Path, hostname: str, now: datetime.datetime | None = None
) -> tuple[int, str | None]:
    """Validate a received chain (leaf first) with cryptography's Web PKI verifier, unrelaxed.

    That verifier enforces RFC 5280 and the CA/Browser Forum baseline requirements (key usage on
    CAs, a non-critical subjectAltName beside a non-empty subject, authority key identifiers, ...),
    stricter than OpenSSL-based clients. Returns the verified chain's length and None, or 0 and
    cryptography's reason verbatim.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # system bundles hold a few certificates cryptography frowns upon
        anchors = x509.load_pem_x509_certificates(ca_file.read_bytes())
    try:
        subject: x509.verification.Subject = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        subject = x509.DNSName(hostname)
    verifier = (
        PolicyBuilder()
        .store(Store(anchors))
        .time(now or datetime.datetime.now(datetime.UTC))
        .build_server_verifier(subject)
    )
    try:
        verified = verifier.verify(chain[0], chain[1:])
    except VerificationError as exc:
        return 0, str(exc)
    return len(verified), None


# -- what OpenSSL clients (curl, Python's ssl, ...) accept -------------------------------------------


@dataclass(frozen=True)
class ClientProfile:
    """How a client shakes hands; a server with several certificates picks one by what the client offers."""

    name: str
    maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ciphers: str | None = None  # OpenSSL cipher string (TLS 1.2 and below); None: the library default


# The default client sees the certificate most clients get; TLS 1.2 with ECDSA- or RSA-authenticated
# suites only makes a server with both kinds show each.
CLIENT_PROFILES = (
    ClientProfile("default client"),
    ClientProfile("TLS 1.2, ECDSA suites", ssl.TLSVersion.TLSv1_2, "aECDSA"),
    ClientProfile("TLS 1.2, RSA suites", ssl.TLSVersion.TLSv1_2, "aRSA"),
)


def client_context(profile: ClientProfile, ca_file: Path | None) -> ssl.SSLContext:
    """An OpenSSL client context verifying like curl against ``ca_file``; None: no verification at all.

    curl verifies with OpenSSL's default flags plus X509_V_FLAG_PARTIAL_CHAIN (a CA file may hold an
    intermediate), and never X509_V_FLAG_X509_STRICT (which Python 3.13 turns on by default).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    context.maximum_version = profile.maximum_version
    if profile.ciphers:
        context.set_ciphers(profile.ciphers)
    if ca_file is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=ca_file)
        context.verify_flags = (context.verify_flags | ssl.VERIFY_X509_PARTIAL_CHAIN) & ~ssl.VERIFY_X509_STRICT
    return context


def _handshake(endpoint: Endpoint, context: ssl.SSLContext, timeout: float = 5.0) -> bytes:
    """The DER of the leaf the server presented in a completed handshake."""
    with (
        socket.create_connection((endpoint.ip or endpoint.host, endpoint.port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=endpoint.host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None  # a client in TLS always receives the server's certificate
    return der


def served_leaves(endpoint: Endpoint) -> dict[bytes, ClientProfile]:
    """Each distinct leaf the server presents (DER), with the first client profile that receives it."""
    out: dict[bytes, ClientProfile] = {}
    failures = []
    for profile in CLIENT_PROFILES:
        try:
            der = _handshake(endpoint, client_context(profile, None))
        except ssl.SSLError as exc:  # the server does not speak this profile (e.g. no RSA certificate)
            failures.append(f"{profile.name}: {exc}")
            continue
        except OSError as exc:
            raise StackcheckError(f"no TCP connection to {endpoint.subject}: {exc}", "check the target") from exc
        out.setdefault(der, profile)
    if not out:
        raise StackcheckError(
            f"no TLS handshake with {endpoint.subject}: {'; '.join(failures)}", "check that the target serves TLS"
        )
    return out


def client_verdict(endpoint: Endpoint, profile: ClientProfile, ca_file: Path) -> str | None:
    """None if an OpenSSL client of ``profile`` trusting ``ca_file`` accepts the server for its host, else why not."""
    try:
        _handshake(endpoint, client_context(profile, ca_file))
    except ssl.SSLCertVerificationError as exc:
        return f"{exc.verify_message} (X509 error {exc.verify_code})"
    except (ssl.SSLError, OSError) as exc:  # the same handshake without verification just worked
        raise StackcheckError(
            f"TLS handshake with {endpoint.subject} ({profile.name}) failed beyond verification: {exc}",
            "rerun; if it persists, try `curl -v` against the endpoint",
        ) from exc
    return None


def run_scan(endpoint: Endpoint, commands: frozenset[ScanCommand]) -> ServerScanResult:
    try:
        location = ServerNetworkLocation(hostname=endpoint.host, port=endpoint.port, ip_address=endpoint.ip)
    except ServerHostnameCouldNotBeResolved as exc:
        raise StackcheckError(f"cannot resolve {endpoint.host}: {exc}", "check the target URL") from exc
    config = ServerNetworkConfiguration(
        tls_server_name_indication=endpoint.host,
        tls_opportunistic_encryption=endpoint.starttls,
        network_timeout=NETWORK_TIMEOUT_S,
        network_max_retries=NETWORK_RETRIES,
    )
    # No custom_ca_file: tls-certificate verifies as OpenSSL clients do, tls-certificate-strict with verify_chain.
    request = ServerScanRequest(server_location=location, network_configuration=config, scan_commands=set(commands))
    scanner = Scanner(per_server_concurrent_connections_limit=CONCURRENT_CONNECTIONS, concurrent_server_scans_limit=1)
    with warnings.catch_warnings():
        # sslyze loads its bundled trust stores, where cryptography warns about a few old roots.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        scanner.queue_scans([request])
        return next(iter(scanner.get_results()))


def _scan(ctx: CheckContext, endpoint: Endpoint, commands: frozenset[ScanCommand]) -> ServerScanResult:
    key = f"tls-scan:{endpoint.host}:{endpoint.port}:{endpoint.ip}:{endpoint.ca_file}:{endpoint.starttls}"
    result: ServerScanResult = ctx.memo(key, lambda: run_scan(endpoint, commands))
    return result


def connectivity_error(scan: ServerScanResult) -> str | None:
    """Why sslyze could not even complete a first TLS handshake, or None."""
    if scan.scan_status is not ServerScanStatusEnum.ERROR_NO_CONNECTIVITY:
        return None
    trace = scan.connectivity_error_trace
    return "".join(trace.format_exception_only()).strip() if trace else "no TLS connectivity"


def _reachable(ctx: CheckContext, endpoint: Endpoint, commands: frozenset[ScanCommand]) -> ServerScanResult:
    scan = _scan(ctx, endpoint, commands)
    problem = connectivity_error(scan)
    if problem:
        raise StackcheckError(
            f"no TLS handshake with {endpoint.subject}: {problem}", "check that the target serves TLS on that port"
        )
    return scan


def _attempt(scan: ServerScanResult, command: ScanCommand) -> Any:
    assert scan.scan_result is not None
    attempt = getattr(scan.scan_result, command.value)
    if attempt.status is not ScanCommandAttemptStatusEnum.COMPLETED or attempt.result is None:
        reason = attempt.error_reason.value if attempt.error_reason else attempt.status.value
        trace = "".join(attempt.error_trace.format_exception_only()).strip() if attempt.error_trace else ""
        raise StackcheckError(
            f"sslyze's {command.value} scan did not complete ({reason}{': ' + trace if trace else ''})",
            "rerun; if it persists, run `sslyze` by hand against the endpoint",
        )
    return attempt.result


def supported_protocols(scan: ServerScanResult) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for name, command in PROTOCOLS:
        result: CipherSuitesScanResult = _attempt(scan, command)
        out[name] = result.is_tls_version_supported
    return out


@dataclass(frozen=True)
class AcceptedSuite:
    protocol: str
    iana: str
    openssl: str


def accepted_suites(scan: ServerScanResult) -> list[AcceptedSuite]:
    out = []
    for name, command in PROTOCOLS:
        result: CipherSuitesScanResult = _attempt(scan, command)
        for accepted in result.accepted_cipher_suites:
            suite = accepted.cipher_suite
            out.append(AcceptedSuite(name, suite.name, suite.openssl_name))
    return out


# -- HTTPS entrypoint rules -------------------------------------------------------------------------


@check("tls-protocols")
def tls_protocols(rule: Rule, ctx: CheckContext) -> list[Result]:
    endpoint = https_endpoint(rule, ctx)
    scan = _reachable(ctx, endpoint, HTTPS_COMMANDS)
    problems, evidence = protocol_verdict(supported_protocols(scan), rule.param("refused"), rule.param("accepted"))
    if problems:
        return [Result(rule, Outcome.FAIL, endpoint.subject, f"{'; '.join(problems)} ({evidence})")]
    return [Result(rule, Outcome.PASS, endpoint.subject, evidence)]


@check("tls-mozilla-profile")
def tls_mozilla_profile(rule: Rule, ctx: CheckContext) -> list[Result]:
    endpoint = https_endpoint(rule, ctx)
    name = rule.param("profile")
    try:
        profile_enum = TlsConfigurationEnum(name)
    except ValueError:
        raise PolicyError(
            f"rule {rule.id}: profile {name!r} is not a Mozilla profile", 'write profile = "intermediate" or "modern"'
        ) from None
    scan = _reachable(ctx, endpoint, HTTPS_COMMANDS)
    for command in SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER:
        _attempt(scan, command)  # an incomplete scan is an ERROR with the reason, not a FAIL
    profile = MozillaTlsConfiguration.get(profile_enum)
    try:
        check_server_against_tls_configuration(scan, profile)
        issues: dict[str, str] = {}
    except ServerNotCompliantWithTlsConfiguration as exc:
        issues = dict(exc.issues)
    label = f"Mozilla {name} (Server Side TLS guidelines {mozilla_guidelines_version()})"
    relevant = {k: v for k, v in issues.items() if k not in MOZILLA_CERTIFICATE_ISSUES}
    ignored = sorted(k for k in issues if k in MOZILLA_CERTIFICATE_ISSUES)
    note = (
        f" (certificate findings left to the tls-certificate rules and tls-expiry: {_join(ignored)})" if ignored else ""
    )
    if relevant:
        found = "; ".join(f"{k}: {v}" for k, v in sorted(relevant.items()))
        return [Result(rule, Outcome.FAIL, endpoint.subject, f"not {label}: {found}{note}")]
    versions = _join(p for p, on in supported_protocols(scan).items() if on)
    return [
        Result(
            rule,
            Outcome.PASS,
            endpoint.subject,
            f"protocols ({versions}), cipher suites, curves and TLS features match {label}{note}",
        )
    ]


@check("tls-weak-ciphers")
def tls_weak_ciphers(rule: Rule, ctx: CheckContext) -> list[Result]:
    endpoint = https_endpoint(rule, ctx)
    scan = _reachable(ctx, endpoint, HTTPS_COMMANDS)
    suites = accepted_suites(scan)
    forbidden = rule.param("forbidden")
    weak = []
    for suite in suites:
        word = weak_reason((suite.iana, suite.openssl), forbidden)
        if word:
            weak.append(f"{suite.iana} ({suite.protocol}, {word})")
    if weak:
        return [Result(rule, Outcome.FAIL, endpoint.subject, f"accepts {_join(dict.fromkeys(weak))}")]
    return [
        Result(
            rule,
            Outcome.PASS,
            endpoint.subject,
            f"{len({s.iana for s in suites})} accepted suites, none matches {_join(forbidden)}",
        )
    ]


@check("tls-forward-secrecy")
def tls_forward_secrecy(rule: Rule, ctx: CheckContext) -> list[Result]:
    endpoint = https_endpoint(rule, ctx)
    scan = _reachable(ctx, endpoint, HTTPS_COMMANDS)
    legacy = [s for s in accepted_suites(scan) if s.protocol != "TLSv1.3"]
    without = list(dict.fromkeys(f"{s.iana} ({s.protocol})" for s in legacy if not has_forward_secrecy(s.iana)))
    if without:
        return [Result(rule, Outcome.FAIL, endpoint.subject, f"accepts without forward secrecy: {_join(without)}")]
    names = _join(dict.fromkeys(s.iana for s in legacy)) or "none (TLS 1.3 only)"
    return [
        Result(
            rule,
            Outcome.PASS,
            endpoint.subject,
            f"every TLS 1.2-and-below suite has an ephemeral key exchange: {names}",
        )
    ]


def _certificate_info(ctx: CheckContext, endpoint: Endpoint) -> CertificateInfoScanResult:
    scan = _reachable(ctx, endpoint, HTTPS_COMMANDS)
    info: CertificateInfoScanResult = _attempt(scan, ScanCommand.CERTIFICATE_INFO)
    if not info.certificate_deployments:
        raise StackcheckError(f"{endpoint.subject} sent no certificate", "configure a certificate")
    return info


def describe_leaf(leaf: x509.Certificate) -> str:
    key = leaf.public_key()
    kind = (
        "RSA"
        if isinstance(key, rsa.RSAPublicKey)
        else "ECDSA"
        if isinstance(key, ec.EllipticCurvePublicKey)
        else "other"
    )
    return f"{kind} leaf {leaf.subject.rfc4514_string() or '(empty subject)'} issued by {leaf.issuer.rfc4514_string()}"


@check("tls-certificate")
def tls_certificate(rule: Rule, ctx: CheckContext) -> list[Result]:
    endpoint = https_endpoint(rule, ctx)
    ca_file, trust = trust_anchor(endpoint)
    out = []
    # One result per certificate the server presents (e.g. an ECDSA and an RSA one).
    for der, profile in served_leaves(endpoint).items():
        what = describe_leaf(x509.load_der_x509_certificate(der))
        problem = client_verdict(endpoint, profile, ca_file)
        client = f"an OpenSSL client ({ssl.OPENSSL_VERSION}, {profile.name}, hostname check)"
        if problem:
            evidence = f"{what}: not valid for {endpoint.host} against {trust}: {client} rejects it: {problem}"
            out.append(Result(rule, Outcome.FAIL, endpoint.subject, evidence))
        else:
            evidence = f"{what}: valid for {endpoint.host} against {trust}: {client} accepts it"
            out.append(Result(rule, Outcome.PASS, endpoint.subject, evidence))
    return out


@check("tls-certificate-strict")
def tls_certificate_strict(rule: Rule, ctx: CheckContext) -> list[Result]:
    endpoint = https_endpoint(rule, ctx)
    info = _certificate_info(ctx, endpoint)
    ca_file, trust = trust_anchor(endpoint)
    out = []
    for deployment in info.certificate_deployments:
        chain = deployment.received_certificate_chain
        what = f"{describe_leaf(chain[0])} (chain of {len(chain)} served)"
        depth, problem = verify_chain(chain, ca_file, endpoint.host)
        if problem:
            evidence = f"{what}: cryptography's Web PKI verifier rejects it against {trust}: {name_oids(problem)}"
            out.append(Result(rule, Outcome.FAIL, endpoint.subject, evidence))
        else:
            evidence = f"{what}: cryptography's Web PKI verifier accepts it against {trust} (verified chain of {depth})"
            out.append(Result(rule, Outcome.PASS, endpoint.subject, evidence))
    return out


@check("tls-expiry")
def tls_expiry(rule: Rule, ctx: CheckContext) -> list[Result]:
    endpoint = https_endpoint(rule, ctx)
    info = _certificate_info(ctx, endpoint)
    min_days = int(rule.param("min_days"))
    out = []
    for deployment in info.certificate_deployments:
        leaf = deployment.received_certificate_chain[0]
        left = days_left(leaf.not_valid_after_utc)
        evidence = f"{leaf.subject.rfc4514_string()} notAfter {leaf.not_valid_after_utc:%Y-%m-%d}: {left} days left"
        if left < min_days:
            out.append(Result(rule, Outcome.FAIL, endpoint.subject, f"{evidence}, fewer than {min_days}"))
        else:
            out.append(Result(rule, Outcome.PASS, endpoint.subject, f"{evidence} (at least {min_days})"))
    return out


def negotiate_alpn(endpoint: Endpoint, offered: list[str], timeout: float = 5.0) -> tuple[str | None, str]:
    """The ALPN protocol the server selects from ``offered``, and the TLS version of the handshake."""
    context = ssl.create_default_context()
    context.check_hostname = False  # ALPN only: the certificate is tls-certificate's business
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(offered)
    address = (endpoint.ip or endpoint.host, endpoint.port)
    with (
        socket.create_connection(address, timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=endpoint.host) as tls,
    ):
        return tls.selected_alpn_protocol(), str(tls.version())


@check("tls-alpn-h2")
def tls_alpn_h2(rule: Rule, ctx: CheckContext) -> list[Result]:
    endpoint = https_endpoint(rule, ctx)
    offered = ["h2", "http/1.1"]
    try:
        selected, version = negotiate_alpn(endpoint, offered)
    except (OSError, ssl.SSLError) as exc:
        raise StackcheckError(f"no TLS handshake with {endpoint.subject}: {exc}", "check the target") from exc
    evidence = f"offered {_join(offered)} over {version}: server selected {selected or 'no protocol'}"
    return [Result(rule, Outcome.PASS if selected == "h2" else Outcome.FAIL, endpoint.subject, evidence)]


def _redirect_result(rule: Rule, subject: str, url: str, host: str | None = None) -> Result:
    headers = {"Host": host} if host else {}
    try:
        response = httpx.get(url, headers=headers, follow_redirects=False, timeout=5.0)
    except httpx.HTTPError as exc:
        return Result(rule, Outcome.FAIL, subject, f"GET {url} got no HTTP answer: {type(exc).__name__}: {exc}")
    location = response.headers.get("location")
    evidence = f"GET {url} answered {response.status_code}" + (f" Location: {location}" if location else "")
    ok = response.status_code == 301 and bool(location) and str(location).startswith("https://")
    return Result(rule, Outcome.PASS if ok else Outcome.FAIL, subject, evidence)


@check("tls-http-redirect")
def tls_http_redirect(rule: Rule, ctx: CheckContext) -> list[Result]:
    target = ctx.http_target()
    if ctx.stack is None or not target.booted:
        if target.http_url:  # --target-http-url; the Host a browser sends to the site's plain-HTTP URL
            parts = urlsplit(target.http_url)
            return [_redirect_result(rule, parts.netloc, f"{target.http_url.rstrip('/')}/", target.host)]
        result = _redirect_result(rule, f"{target.host}:80", f"http://{target.host}:80/")
        note = f"no --target-http-url given: tried port 80 of {target.host}"
        return [replace(result, evidence=f"{result.evidence} ({note})")]
    stack = ctx.stack
    if not stack.spec.entrypoint_url:
        raise not_applicable(rule, f"stack {stack.spec.name} has no entrypoint")
    entry = urlsplit(stack.spec.entrypoint_url)
    service = str(entry.hostname)
    plain = [p for p in stack.spec.services[service].ports if p != entry.port]
    if not plain:
        raise not_applicable(
            rule,
            f"{service} publishes no plain-HTTP port besides {entry.port}: nothing answers plain HTTP",
            f"publish the port that redirects to HTTPS in [services.{service}] ports",
        )
    handle = stack.service(service)
    # The Host a browser would send to the HTTPS URL's host on port 80.
    return [
        _redirect_result(rule, f"{service}:{port}", f"http://127.0.0.1:{handle.port(port)}/", ctx.http_target().host)
        for port in plain
    ]


# -- PostgreSQL -------------------------------------------------------------------------------------


@check("tls-postgres", needs_stack=True)
def tls_postgres(rule: Rule, ctx: CheckContext) -> list[Result]:
    stack = ctx.require_stack(rule)
    images = rule.param("images")
    services = [name for name, svc in stack.spec.services.items() if svc.image in images]
    if not services:
        raise not_applicable(rule, f"no service of stack {stack.spec.name} runs an image in {images}")
    out = []
    for service in services:
        for handle in stack.instances(service):
            endpoint = Endpoint(
                handle.name,
                handle.port(5432),
                "127.0.0.1",
                starttls=ProtocolWithOpportunisticTlsEnum.POSTGRES,
                label=f"{handle.name}:5432",
            )
            scan = _scan(ctx, endpoint, STARTTLS_COMMANDS)
            problem = connectivity_error(scan)
            if problem:
                evidence = f"no TLS via STARTTLS on 127.0.0.1:{endpoint.port}: {problem}"
                out.append(Result(rule, Outcome.FAIL, endpoint.subject, evidence))
                continue
            below = [p for p in PROTOCOL_NAMES if p not in ("TLSv1.2", "TLSv1.3")]
            problems, evidence = protocol_verdict(supported_protocols(scan), below, [])
            if problems:
                out.append(Result(rule, Outcome.FAIL, endpoint.subject, f"{'; '.join(problems)} ({evidence})"))
            else:
                out.append(Result(rule, Outcome.PASS, endpoint.subject, f"TLS offered via STARTTLS; {evidence}"))
    return out
