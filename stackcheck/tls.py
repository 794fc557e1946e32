"""A per-run certificate authority: the stack's TLS is real, and clients verify against this CA.

The certificates follow the Web PKI profile (RFC 5280 and the CA/Browser Forum baseline
requirements, as cryptography's verifier enforces them), so a stack using them passes
tls-certificate-strict as well as the OpenSSL-client verdict of tls-certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificateIssuerPublicKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Like a real ACME certificate: short-lived, so an expiry policy measures something real.
LEAF_LIFETIME = datetime.timedelta(days=90)
CA_LIFETIME = datetime.timedelta(days=365)
# Issued a little in the past: a container whose clock lags the host's still accepts it.
BACKDATE = datetime.timedelta(hours=1)

Extensions = list[tuple[x509.ExtensionType, bool]]  # (extension, critical)


def key_usage(ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; a TLS server's (EC) key only signs the handshake."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def ca_extensions(
    key: CertificatePublicKeyTypes, issuer_key: CertificateIssuerPublicKeyTypes | None = None
) -> Extensions:
    """A CA's extensions; ``issuer_key`` None for a self-signed root (which needs no authority key id)."""
    out: Extensions = [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (key_usage(ca=True), True),
        (x509.SubjectKeyIdentifier.from_public_key(key), False),
    ]
    if issuer_key is not None:
        out.append((x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), False))
    return out


def san(hostnames: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def leaf_extensions(
    hostnames: tuple[str, ...], key: CertificatePublicKeyTypes, issuer_key: CertificateIssuerPublicKeyTypes
) -> Extensions:
    """A TLS server certificate's extensions: the names (not critical: the subject is not empty), serverAuth."""
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (key_usage(ca=False), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (san(hostnames), False),
        (x509.SubjectKeyIdentifier.from_public_key(key), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), False),
    ]


def common_name(name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stackcheck"), x509.NameAttribute(NameOID.COMMON_NAME, name)]
    )


def sign(
    subject: x509.Name,
    key: CertificatePublicKeyTypes,
    issuer: x509.Name,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    extensions: Extensions,
    not_after: datetime.datetime,
    not_before: datetime.datetime | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or datetime.datetime.now(datetime.UTC) - BACKDATE)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class RunCA:
    ca_pem: bytes
    cert_pem: bytes  # leaf followed by nothing else: the CA signs it directly
    key_pem: bytes
    hostnames: tuple[str, ...]

    @classmethod
    def issue(cls, hostnames: tuple[str, ...]) -> RunCA:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = common_name("stackcheck run CA")
        ca = sign(ca_name, ca_key.public_key(), ca_name, ca_key, ca_extensions(ca_key.public_key()), now + CA_LIFETIME)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        extensions = leaf_extensions(hostnames, leaf_key.public_key(), ca_key.public_key())
        leaf = sign(common_name(hostnames[0]), leaf_key.public_key(), ca_name, ca_key, extensions, now + LEAF_LIFETIME)
        return cls(pem(ca), pem(leaf), key_pem(leaf_key), hostnames)

    def write(self, directory: Path) -> dict[str, Path]:
        paths = {"ca": directory / "ca.pem", "cert": directory / "server.crt", "key": directory / "server.key"}
        for kind, data in (("ca", self.ca_pem), ("cert", self.cert_pem), ("key", self.key_pem)):
            paths[kind].write_bytes(data)
        return paths

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        return context
