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
    http_url: str | None = None  # an external deployment's plain-HTTP URL (the redirect rule's)

    @classmethod
    def external(cls, url: str, ca_file: str | None = None, http_url: str | None = None) -> HttpTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StackcheckError(
                f"--target {url!r} is not an http(s) URL", "pass e.g. --target https://staging.example.com"
            )
        plain = urlsplit(http_url or "http://x")
        if plain.scheme != "http" or not plain.hostname:
            raise StackcheckError(
                f"--target-http-url {http_url!r} is not an http:// URL", "pass e.g. --target-http-url http://host:8080"
            )
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        ca = Path(ca_file) if ca_file else None
        return cls(
            url.rstrip("/"), verify, booted=False, ca_file=ca, http_url=http_url.rstrip("/") if http_url else None
        )

    @property
    def host(self) -> str:
        return str(urlsplit(self.base_url).hostname)

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    def http(self, timeout: float = 10.0, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=self.verify, timeout=timeout, **kwargs)
