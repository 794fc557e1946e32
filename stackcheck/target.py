"""What HTTP/TLS-level checks aim at: a booted stack's entrypoint or an external URL."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from stackcheck.errors import StackcheckError


@dataclass(frozen=True)
class HttpTarget:
    base_url: str
    verify: ssl.SSLContext | bool = True
    booted: bool = False  # False: an external deployment; container-level checks do not apply
    ca_file: Path | None = None  # the CA that signs the certificate, when not a system-trusted one

    @classmethod
    def external(cls, url: str, ca_file: str | None = None) -> HttpTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StackcheckError(
                f"--target {url!r} is not an http(s) URL", "pass e.g. --target https://staging.example.com"
            )
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        return cls(url.rstrip("/"), verify, booted=False, ca_file=Path(ca_file) if ca_file else None)

    @property
    def host(self) -> str:
        return str(urlsplit(self.base_url).hostname)

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    def http(self, timeout: float = 10.0, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=self.verify, timeout=timeout, **kwargs)
