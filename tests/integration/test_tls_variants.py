"""Every TLS rule fails on a deliberately broken nginx (or PostgreSQL) and passes on a good one.

Each variant is a one-service stack (nginx only) that differs from the good one by its
configuration alone; it boots once per class and every TLS rule is evaluated against it with
one shared context, so sslyze scans it once.

The nginx image's OpenSSL (3.0, Debian bookworm) has no 3DES, DES or RC4 suites at all, not
even at @SECLEVEL=0 ("no cipher match"), so the weak-cipher variant enables a NULL-encryption
and an anonymous suite instead: both are in the policy's forbidden list.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa

from stackcheck.compliance import runner, tls  # noqa: F401  (tls registers the checks)
from stackcheck.compliance.model import Area, Outcome, ParamValue, Policy, Result
from stackcheck.compliance.runner import CheckContext
from stackcheck.stack import RUN_LABEL, Stack
from stackcheck.stackfile import parse
from stackcheck.target import HttpTarget
from stackcheck.tls import LEAF_LIFETIME, ca_extensions, common_name, key_pem, leaf_extensions, pem, sign

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("test_tls_variants")]

TLS_RULES = (
    "tls-protocols",
    "tls-mozilla-profile",
    "tls-weak-ciphers",
    "tls-forward-secrecy",
    "tls-certificate",
    "tls-certificate-strict",
    "tls-expiry",
    "tls-alpn-h2",
    "tls-http-redirect",
    "tls-postgres",
)
# Mozilla "intermediate", as in the reference stack.
GOOD_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
REDIRECT = "return 301 https://$host$request_uri;"
PASS, FAIL, NOT_EVALUATED = Outcome.PASS, Outcome.FAIL, Outcome.NOT_EVALUATED
ALL_PASS = {rule: PASS for rule in TLS_RULES} | {"tls-postgres": NOT_EVALUATED}  # no PostgreSQL in an nginx-only stack


def nginx_conf(
    protocols: str = "TLSv1.2 TLSv1.3",
    ciphers: str = GOOD_CIPHERS,
    http2: bool = True,
    plain_http: str = REDIRECT,
    extra_certs: tuple[str, ...] = (),
) -> str:
    certs = "".join(
        f"    ssl_certificate {cert}.crt;\n    ssl_certificate_key {cert}.key;\n"
        for cert in ("/etc/nginx/tls/server", *extra_certs)
    )
    return f"""
server {{
    listen 8080 default_server;
    location = /healthz {{ default_type text/plain; return 200 "ok\\n"; }}
    location / {{ default_type text/plain; {plain_http} }}
}}
server {{
    listen 8443 ssl{" http2" if http2 else ""} default_server;
{certs}    ssl_protocols {protocols};
    ssl_ciphers {ciphers};
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    ssl_prefer_server_ciphers off;
    ssl_session_tickets off;
    location / {{ default_type text/plain; return 200 "ok\\n"; }}
}}
"""


def nginx_spec(directory: Path, name: str, conf: str, files: dict[str, str] | None = None) -> dict[str, object]:
    """An nginx service whose conf.d/default.conf is ``conf``; ``files`` maps container paths to extra texts."""
    (directory / "default.conf").write_text(conf)
    mounts: dict[str, object] = {
        "/etc/nginx/conf.d/default.conf": {"template_file": "default.conf"},
        "/etc/nginx/tls/server.crt": {"tls": "cert"},
        "/etc/nginx/tls/server.key": {"tls": "key"},
    }
    for index, (target, text) in enumerate((files or {}).items()):
        (directory / f"extra-{index}").write_text(text)
        mounts[target] = {"template_file": f"extra-{index}"}
    return {
        "stack": {"name": name, "entrypoint": "https://nginx:8443", "health_path": "/"},
        "networks": {"edge": {}},
        "services": {"nginx": {"image": "nginx", "networks": {"edge": []}, "ports": [8080, 8443], "files": mounts}},
    }


@dataclasses.dataclass
class Variant:
    stack: Stack
    policy: Policy
    results: dict[str, list[Result]]
    seconds: float  # the whole TLS area against this stack

    def outcomes(self) -> dict[str, Outcome]:
        """One outcome per rule: FAIL if any result failed, else the (single) outcome of its results."""
        out = {}
        for rule, results in self.results.items():
            kinds = {r.outcome for r in results}
            out[rule] = FAIL if FAIL in kinds else Outcome.ERROR if Outcome.ERROR in kinds else kinds.pop()
        return out

    def evidence(self, rule: str) -> str:
        return " | ".join(r.line() for r in self.results[rule])

    def evaluate(self, rule: str, target: HttpTarget | None = None, **params: ParamValue) -> list[Result]:
        """One rule in a fresh context: another target, or changed parameters."""
        base = self.policy.rules[rule]
        changed = dataclasses.replace(base, params={**base.params, **params}) if params else base
        ctx = CheckContext(target or self.stack.target(), self.stack, self.policy)
        return runner.evaluate(changed, ctx)


def run_tls_area(stack: Stack, target: HttpTarget | None = None) -> Variant:
    policy = Policy.load()
    ctx = CheckContext(target or stack.target(), stack, policy)
    started = time.monotonic()
    results = runner.run(ctx, [Area.TLS])
    seconds = time.monotonic() - started
    grouped: dict[str, list[Result]] = {}
    for result in results:
        grouped.setdefault(result.rule.id, []).append(result)
    return Variant(stack, policy, grouped, seconds)


@pytest.fixture(scope="class")
def variant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Variant]:
    """Boots the class's nginx configuration (``conf``, optional ``files``) and runs the TLS area once."""
    cls = request.cls
    directory = tmp_path_factory.mktemp(cls.name)
    spec = parse(nginx_spec(directory, cls.name, cls.conf, getattr(cls, "files", None)), directory / "stack.toml")
    with Stack(spec) as stack:
        yield run_tls_area(stack)


def assert_outcomes(variant: Variant, expected: dict[str, Outcome]) -> None:
    got = variant.outcomes()
    wrong = {rule: (got.get(rule), want) for rule, want in expected.items() if got.get(rule) is not want}
    details = "\n".join(variant.evidence(rule) for rule in wrong)
    assert not wrong, f"(got, expected) per rule: {wrong}\n{details}"


class TestGood:
    name = "tls-good"
    conf = nginx_conf()

    def test_every_tls_rule_passes(self, variant: Variant) -> None:
        assert_outcomes(variant, ALL_PASS)
        assert variant.seconds < 30, f"the TLS area took {variant.seconds:.1f}s"

    def test_evidence_says_what_was_observed(self, variant: Variant) -> None:
        assert "accepted: TLSv1.2, TLSv1.3; refused: SSLv2, SSLv3, TLSv1.0, TLSv1.1" in variant.evidence(
            "tls-protocols"
        )
        assert "server selected h2" in variant.evidence("tls-alpn-h2")
        assert "answered 301 Location: https://" in variant.evidence("tls-http-redirect")
        assert "no service of stack tls-good runs an image in ['postgres']" in variant.evidence("tls-postgres")
        assert "valid for localhost against CA file" in variant.evidence("tls-certificate")
        assert "an OpenSSL client (OpenSSL 3." in variant.evidence("tls-certificate")
        assert "cryptography's Web PKI verifier accepts it" in variant.evidence("tls-certificate-strict")
        assert "match Mozilla intermediate (Server Side TLS guidelines 5.7)" in variant.evidence("tls-mozilla-profile")

    def test_certificate_fails_against_another_ca(self, variant: Variant, tmp_path: Path) -> None:
        other = tmp_path / "other-ca.pem"
        other.write_bytes(trustme.CA().cert_pem.bytes())
        target = HttpTarget(variant.stack.url(), booted=True, ca_file=other)
        [result] = variant.evaluate("tls-certificate", target)
        assert result.outcome is FAIL, result.line()
        assert f"not valid for localhost against CA file {other}" in result.evidence

    def test_certificate_fails_for_a_name_it_does_not_carry(self, variant: Variant) -> None:
        # Still 127.0.0.1 (a booted target is always scanned there), but SNI and the name to verify differ.
        port = variant.stack.service("nginx").port(8443)
        target = HttpTarget(
            f"https://stackcheck-wrong-name.invalid:{port}", booted=True, ca_file=variant.stack.tls_files["ca"]
        )
        [result] = variant.evaluate("tls-certificate", target)
        assert result.outcome is FAIL, result.line()
        assert "Hostname mismatch, certificate is not valid for 'stackcheck-wrong-name.invalid'" in result.evidence

    def test_expiry_fails_when_the_certificate_ends_too_soon(self, variant: Variant) -> None:
        # Run certificates live 90 days (stackcheck.tls.LEAF_LIFETIME): a 120-day horizon is too far.
        [result] = variant.evaluate("tls-expiry", min_days=120)
        assert result.outcome is FAIL, result.line()
        assert "days left, fewer than 120" in result.evidence


class TestTls10Enabled:
    name = "tls-old-protocols"
    # TLS 1.0/1.1 need a CBC suite (GCM is TLS 1.2 only) and @SECLEVEL=0 under OpenSSL 3.
    conf = nginx_conf(
        protocols="TLSv1 TLSv1.1 TLSv1.2 TLSv1.3", ciphers=f"{GOOD_CIPHERS}:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"
    )

    def test_protocol_rules_fail_and_the_others_pass(self, variant: Variant) -> None:
        assert_outcomes(variant, ALL_PASS | {"tls-protocols": FAIL, "tls-mozilla-profile": FAIL})

    def test_evidence_names_tls_1_0(self, variant: Variant) -> None:
        evidence = variant.evidence("tls-protocols")
        assert "TLSv1.0 accepted (must be refused)" in evidence
        assert "TLSv1.1 accepted (must be refused)" in evidence
        assert "accepted: TLSv1.0, TLSv1.1, TLSv1.2, TLSv1.3" in evidence
        assert "tls_versions" in variant.evidence("tls-mozilla-profile")


class TestWeakCiphers:
    name = "tls-weak-ciphers"
    # No 3DES in this OpenSSL: a NULL-encryption suite and an anonymous one stand in for it.
    conf = nginx_conf(ciphers=f"{GOOD_CIPHERS}:ECDHE-ECDSA-NULL-SHA:AECDH-AES128-SHA:@SECLEVEL=0")

    def test_weak_cipher_rules_fail_and_the_others_pass(self, variant: Variant) -> None:
        assert_outcomes(variant, ALL_PASS | {"tls-weak-ciphers": FAIL, "tls-mozilla-profile": FAIL})

    def test_evidence_names_the_suites(self, variant: Variant) -> None:
        evidence = variant.evidence("tls-weak-ciphers")
        assert "TLS_ECDHE_ECDSA_WITH_NULL_SHA" in evidence
        assert "TLS_ECDH_anon_WITH_AES_128_CBC_SHA" in evidence
        assert "TLS_ECDHE_ECDSA_WITH_NULL_SHA" in variant.evidence("tls-mozilla-profile")


@pytest.fixture(scope="module")
def rsa_material() -> dict[str, bytes]:
    """An RSA certificate for localhost (RSA key exchange needs one; the run CA issues ECDSA) and its CA.

    Made like the run CA's (Web PKI clean), so only the forward-secrecy rules see a difference.
    """
    hostnames = ("localhost", "127.0.0.1")
    ca_key, leaf_key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    ca_name, until = common_name("stackcheck test RSA CA"), datetime.datetime.now(datetime.UTC) + LEAF_LIFETIME
    ca = sign(ca_name, ca_key.public_key(), ca_name, ca_key, ca_extensions(ca_key.public_key()), until)
    extensions = leaf_extensions(hostnames, leaf_key.public_key(), ca_key.public_key())
    leaf = sign(common_name("localhost"), leaf_key.public_key(), ca_name, ca_key, extensions, until)
    return {"ca": pem(ca), "cert": pem(leaf), "key": key_pem(leaf_key)}


class TestNoForwardSecrecy:
    name = "tls-no-fs"
    # Both certificates: ECDSA from the run CA (what clients such as the boot check get), RSA for the RSA suite.
    conf = nginx_conf(ciphers=f"{GOOD_CIPHERS}:AES128-GCM-SHA256", extra_certs=("/etc/nginx/tls/rsa",))

    @pytest.fixture(scope="class")
    @classmethod
    def variant(cls, tmp_path_factory: pytest.TempPathFactory, rsa_material: dict[str, bytes]) -> Iterator[Variant]:
        directory = tmp_path_factory.mktemp(cls.name)
        files = {
            "/etc/nginx/tls/rsa.crt": rsa_material["cert"].decode(),
            "/etc/nginx/tls/rsa.key": rsa_material["key"].decode(),
        }
        spec = parse(nginx_spec(directory, cls.name, cls.conf, files), directory / "stack.toml")
        with Stack(spec) as stack:
            bundle = directory / "ca-bundle.pem"  # the run CA and the RSA certificate's CA
            bundle.write_bytes(stack.tls_files["ca"].read_bytes() + rsa_material["ca"])
            yield run_tls_area(stack, HttpTarget(stack.url(), booted=True, ca_file=bundle))

    def test_forward_secrecy_fails_and_the_others_pass(self, variant: Variant) -> None:
        assert_outcomes(variant, ALL_PASS | {"tls-forward-secrecy": FAIL, "tls-mozilla-profile": FAIL})

    def test_evidence_names_the_rsa_key_exchange_suite(self, variant: Variant) -> None:
        evidence = variant.evidence("tls-forward-secrecy")
        assert "accepts without forward secrecy: TLS_RSA_WITH_AES_128_GCM_SHA256 (TLSv1.2)" in evidence
        assert "ECDHE" not in evidence.split("forward secrecy:")[1]
        # sslyze found both certificates, and each was checked.
        for rule in ("tls-certificate", "tls-certificate-strict"):
            kinds = sorted(r.evidence.split(" leaf ")[0] for r in variant.results[rule])
            assert kinds == ["ECDSA", "RSA"], variant.evidence(rule)


class TestNoRedirect:
    name = "tls-no-redirect"
    conf = nginx_conf(plain_http='return 200 "plain\\n";')

    def test_redirect_fails_and_the_others_pass(self, variant: Variant) -> None:
        assert_outcomes(variant, ALL_PASS | {"tls-http-redirect": FAIL})
        assert "answered 200" in variant.evidence("tls-http-redirect")


class TestNoHttp2:
    name = "tls-no-h2"
    conf = nginx_conf(http2=False)

    def test_alpn_fails_and_the_others_pass(self, variant: Variant) -> None:
        assert_outcomes(variant, ALL_PASS | {"tls-alpn-h2": FAIL})
        assert "server selected http/1.1" in variant.evidence("tls-alpn-h2")


# -- PostgreSQL over STARTTLS ----------------------------------------------------------------------

OLD_TLS = "ssl_min_protocol_version = 'TLSv1'"


def postgres_service(**env: str) -> dict[str, object]:
    return {"image": "postgres", "networks": {"edge": []}, "ports": [5432], "env": {"POSTGRES_PASSWORD": "x", **env}}


def test_tls_postgres_passes_on_good_servers_and_fails_on_weak_ones(tmp_path: Path) -> None:
    """nginx (every stack needs an entrypoint) and four PostgreSQL servers, all checked in one run."""
    data = nginx_spec(tmp_path, "tls-postgres", nginx_conf())
    services = data["services"]
    assert isinstance(services, dict)
    services["pg-good"] = postgres_service()
    # Lowering the minimum alone: OpenSSL 3 at its default security level still refuses TLS 1.0/1.1.
    services["pg-min-tlsv1"] = postgres_service(PG_EXTRA_CONF=OLD_TLS)
    # With the security level lowered too, TLS 1.0 and 1.1 are really offered.
    services["pg-tlsv1"] = postgres_service(PG_EXTRA_CONF=f"{OLD_TLS}\nssl_ciphers = 'HIGH:@SECLEVEL=0'")
    services["pg-plain"] = postgres_service(PG_SSL="off")
    with Stack(parse(data, tmp_path / "stack.toml")) as stack:
        variant = run_tls_area(stack)
    by_subject = {r.subject: r for r in variant.results["tls-postgres"]}
    evidence = variant.evidence("tls-postgres")
    assert set(by_subject) == {"pg-good:5432", "pg-min-tlsv1:5432", "pg-tlsv1:5432", "pg-plain:5432"}, evidence

    good = by_subject["pg-good:5432"]
    assert good.outcome is PASS, good.line()
    assert "TLS offered via STARTTLS; accepted: TLSv1.2, TLSv1.3; refused: SSLv2, SSLv3, TLSv1.0, TLSv1.1" in (
        good.evidence
    )
    lowered_minimum = by_subject["pg-min-tlsv1:5432"]
    assert lowered_minimum.outcome is PASS, f"OpenSSL 3 was expected to refuse TLS 1.0: {lowered_minimum.line()}"
    weak = by_subject["pg-tlsv1:5432"]
    assert weak.outcome is FAIL, weak.line()
    assert "TLSv1.0 accepted (must be refused)" in weak.evidence
    assert "TLSv1.1 accepted (must be refused)" in weak.evidence
    plain = by_subject["pg-plain:5432"]
    assert plain.outcome is FAIL, plain.line()
    assert "no TLS via STARTTLS" in plain.evidence


def test_tls_postgres_is_disabled_for_an_external_target() -> None:
    """The user chose the scope (--target): out of it, not a gap (DISABLED, not NOT EVALUATED)."""
    policy = Policy.load()
    target = HttpTarget.external("https://stackcheck-external.invalid")
    [result] = runner.evaluate(policy.rules["tls-postgres"], CheckContext(target, None, policy))
    assert result.outcome is Outcome.DISABLED
    assert result.evidence == (
        "not applicable: --target https://stackcheck-external.invalid is an external deployment (nothing booted)"
    )


def test_nothing_is_left_behind(docker_client: docker.DockerClient) -> None:
    """Runs last in this module: every variant's containers and networks are gone."""
    containers = [
        c.name
        for c in docker_client.containers.list(all=True, filters={"label": RUN_LABEL})
        if c.labels.get("org.stackcheck.stack", "").startswith("tls-")
    ]
    assert not containers
