"""The TLS rules' pure helpers: cipher classification, protocol verdicts, expiry, strict chain validation."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from stackcheck.compliance.model import Policy
from stackcheck.compliance.tls import (
    days_left,
    has_forward_secrecy,
    mozilla_guidelines_version,
    name_oids,
    protocol_verdict,
    verify_chain,
    weak_reason,
)
from stackcheck.errors import PolicyError
from stackcheck.tls import LEAF_LIFETIME, RunCA

FORBIDDEN = Policy.load().rules["tls-weak-ciphers"].param("forbidden")


@pytest.mark.parametrize(
    ("names", "word"),
    [
        (("TLS_RSA_WITH_3DES_EDE_CBC_SHA", "DES-CBC3-SHA"), "DES"),
        (("TLS_RSA_WITH_DES_CBC_SHA", "DES-CBC-SHA"), "DES"),
        (("TLS_ECDHE_ECDSA_WITH_NULL_SHA", "ECDHE-ECDSA-NULL-SHA"), "NULL"),
        (("TLS_RSA_EXPORT_WITH_RC4_40_MD5", "EXP-RC4-MD5"), "EXPORT"),
        (("TLS_RSA_WITH_RC4_128_SHA", "RC4-SHA"), "RC4"),
        (("TLS_ECDH_anon_WITH_AES_128_CBC_SHA", "AECDH-AES128-SHA"), "anon"),
        (("TLS_DH_anon_WITH_AES_256_GCM_SHA384", "ADH-AES256-GCM-SHA384"), "anon"),
        (("TLS_RSA_WITH_RC4_128_MD5",), "RC4"),
    ],
)
def test_weak_suites_are_named_by_the_forbidden_word(names: tuple[str, ...], word: str) -> None:
    assert weak_reason(names, FORBIDDEN) == word


@pytest.mark.parametrize(
    "names",
    [
        ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"),  # ECDSA holds "DS", not DES
        ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"),
        ("TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384"),
        ("TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384", "ECDHE-ECDSA-CAMELLIA256-SHA384"),
        ("TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"),  # no forward secrecy, but not "weak"
    ],
)
def test_strong_suites_are_not_weak(names: tuple[str, ...]) -> None:
    assert weak_reason(names, FORBIDDEN) is None


def test_the_policy_word_list_is_what_counts() -> None:
    assert weak_reason(["TLS_RSA_WITH_3DES_EDE_CBC_SHA"], ["RC4"]) is None
    assert weak_reason(["ecdh_ANON_suite"], ["anon"]) == "anon"  # case does not matter


@pytest.mark.parametrize(
    ("name", "fs"),
    [
        ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", True),
        ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", True),
        ("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", True),
        ("TLS_ECDH_anon_WITH_AES_128_CBC_SHA", True),  # ephemeral, though anonymous (a weak-cipher finding)
        ("TLS_AES_128_GCM_SHA256", True),  # TLS 1.3
        ("TLS_CHACHA20_POLY1305_SHA256", True),
        ("TLS_RSA_WITH_AES_128_GCM_SHA256", False),
        ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", False),
        ("TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA", False),  # static ECDH
        ("TLS_ECDH_RSA_WITH_AES_256_GCM_SHA384", False),
        ("TLS_DH_RSA_WITH_AES_128_CBC_SHA", False),
        ("TLS_PSK_WITH_AES_128_GCM_SHA256", False),
        ("TLS_RSA_PSK_WITH_AES_128_GCM_SHA256", False),
    ],
)
def test_forward_secrecy_by_key_exchange(name: str, fs: bool) -> None:
    assert has_forward_secrecy(name) is fs


def test_days_left_counts_whole_days_and_goes_negative() -> None:
    now = datetime.datetime(2025, 1, 1, 12, tzinfo=datetime.UTC)
    assert days_left(now + datetime.timedelta(days=21), now) == 21
    assert days_left(now + datetime.timedelta(days=20, hours=23), now) == 20
    assert days_left(now - datetime.timedelta(hours=1), now) == -1


def test_protocol_verdict_lists_both_sides() -> None:
    supported = {"SSLv2": False, "SSLv3": False, "TLSv1.0": True, "TLSv1.1": False, "TLSv1.2": True, "TLSv1.3": False}
    problems, evidence = protocol_verdict(supported, ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"], ["TLSv1.2", "TLSv1.3"])
    assert problems == ["TLSv1.0 accepted (must be refused)", "TLSv1.3 refused (must be accepted)"]
    assert evidence == "accepted: TLSv1.0, TLSv1.2; refused: SSLv2, SSLv3, TLSv1.1, TLSv1.3"


def test_protocol_verdict_rejects_unknown_names() -> None:
    with pytest.raises(PolicyError, match=r"\['TLSv1'\] are unknown"):
        protocol_verdict({}, ["TLSv1"], [])


@pytest.fixture(scope="module")
def run_ca() -> RunCA:
    return RunCA.issue(("localhost", "127.0.0.1"))


def test_a_run_certificate_passes_the_strict_verifier_for_its_names(run_ca: RunCA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(run_ca.ca_pem)
    chain = [x509.load_pem_x509_certificate(run_ca.cert_pem)]
    assert verify_chain(chain, ca_file, "localhost") == (2, None)
    assert verify_chain(chain, ca_file, "127.0.0.1") == (2, None)
    depth, problem = verify_chain(chain, ca_file, "elsewhere.example")
    assert depth == 0
    assert problem is not None
    assert "no matching subjectAltName" in problem


def test_the_strict_verifier_is_not_relaxed(tmp_path: Path) -> None:
    """trustme marks subjectAltName critical beside a non-empty subject: OpenSSL accepts it, CA/B Forum does not."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    chain = [x509.load_pem_x509_certificate(ca.issue_cert("localhost").cert_chain_pems[0].bytes())]
    problem = verify_chain(chain, ca_file, "localhost")[1]
    assert problem is not None
    assert "EE subjectAltName MUST NOT be critical when subject is nonempty" in problem


def test_a_certificate_of_another_ca_or_out_of_date_fails(run_ca: RunCA, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(RunCA.issue(("localhost",)).ca_pem)
    chain = [x509.load_pem_x509_certificate(run_ca.cert_pem)]
    assert verify_chain(chain, other, "localhost")[1] is not None
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(run_ca.ca_pem)
    after_expiry = datetime.datetime.now(datetime.UTC) + LEAF_LIFETIME + datetime.timedelta(days=1)
    assert "not valid at validation time" in str(verify_chain(chain, ca_file, "localhost", after_expiry)[1])


def test_name_oids_keeps_the_reason_and_names_the_extensions() -> None:
    reason = "invalid extension: 2.5.29.15: Certificate is missing required extension"
    assert name_oids(reason) == f"{reason} [2.5.29.15 = key usage]"
    assert name_oids("cert is not valid at validation time") == "cert is not valid at validation time"
    assert name_oids("2.5.29.19 then 2.5.29.35") == (
        "2.5.29.19 then 2.5.29.35 [2.5.29.19 = basic constraints; 2.5.29.35 = authority key identifier]"
    )


def test_the_policy_names_the_mozilla_guidelines_version_sslyze_checks() -> None:
    """If sslyze ships another version of Mozilla's guidelines, the policy text must follow."""
    version = mozilla_guidelines_version()
    assert version == "5.7"
    description = Policy.load().rules["tls-mozilla-profile"].description
    assert f"Server Side TLS guidelines version {version}" in description
