"""A per-run certificate authority: the stack's TLS is real, and clients verify against this CA."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

# Like a real ACME certificate: short-lived, so an expiry policy measures something real.
LEAF_LIFETIME = datetime.timedelta(days=90)


@dataclass(frozen=True)
class RunCA:
    ca_pem: bytes
    cert_pem: bytes  # leaf followed by nothing else: the CA signs it directly
    key_pem: bytes
    hostnames: tuple[str, ...]

    @classmethod
    def issue(cls, hostnames: tuple[str, ...]) -> RunCA:
        ca = trustme.CA(organization_name="stackcheck run CA")
        leaf = ca.issue_cert(*hostnames, not_after=datetime.datetime.now(datetime.UTC) + LEAF_LIFETIME)
        return cls(ca.cert_pem.bytes(), leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes(), hostnames)

    def write(self, directory: Path) -> dict[str, Path]:
        paths = {"ca": directory / "ca.pem", "cert": directory / "server.crt", "key": directory / "server.key"}
        for kind, data in (("ca", self.ca_pem), ("cert", self.cert_pem), ("key", self.key_pem)):
            paths[kind].write_bytes(data)
        return paths

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        return context
