"""The TLS rules' pure helpers: cipher classification, protocol verdicts, expiry, chain validation."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from stackcheck.compliance.model import Policy
from stackcheck.compliance.tls import days_left, has_forward_secrecy, protocol_verdict, verify_chain, weak_reason
from stackcheck.errors import PolicyError

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
def run_ca() -> trustme.CA:
    return trustme.CA(organization_name="stackcheck run CA")


def _chain(ca: trustme.CA, *names: str, **kwargs: object) -> list[x509.Certificate]:
    leaf = ca.issue_cert(*names, **kwargs)  # type: ignore[arg-type]
    return [x509.load_pem_x509_certificate(pem.bytes()) for pem in leaf.cert_chain_pems]


def test_a_run_certificate_verifies_for_its_names(run_ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(run_ca.cert_pem.bytes())
    chain = _chain(run_ca, "localhost", "127.0.0.1")
    assert verify_chain(chain, ca_file, "localhost") == (2, None)
    assert verify_chain(chain, ca_file, "127.0.0.1") == (2, None)
    depth, problem = verify_chain(chain, ca_file, "elsewhere.example")
    assert depth == 0
    assert problem is not None
    assert "no matching subjectAltName" in problem


def test_a_certificate_of_another_ca_or_out_of_date_fails(run_ca: trustme.CA, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(trustme.CA().cert_pem.bytes())
    chain = _chain(run_ca, "localhost")
    assert verify_chain(chain, other, "localhost")[1] is not None
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(run_ca.cert_pem.bytes())
    expired = _chain(run_ca, "localhost", not_after=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
    assert "not valid at validation time" in str(verify_chain(expired, ca_file, "localhost")[1])
