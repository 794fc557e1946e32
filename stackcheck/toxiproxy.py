"""A small typed Toxiproxy client.

Not toxiproxy-python: that library keeps host and port in class-level globals (two stacks in
one process would share them), creates proxies listening on 127.0.0.1:0 by default (unreachable
from other containers), and sets no request timeouts (a hung API hangs the test).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpx

from stackcheck.errors import ToxiproxyError


class Stream(Enum):
    DOWNSTREAM = "downstream"  # upstream -> client
    UPSTREAM = "upstream"  # client -> upstream


@dataclass(frozen=True)
class Proxy:
    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[str, ...]


class ToxiproxyClient:
    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise ToxiproxyError(
                f"Toxiproxy at {self.base_url} did not answer {method} {path}: {exc}",
                "check that the stack's toxiproxy service is running (`stackcheck up` prints its URL)",
            ) from exc
        if response.status_code >= 300:
            raise ToxiproxyError(
                f"Toxiproxy refused {method} {path}: {response.status_code} {response.text.strip()}",
                "check the proxy/toxic name and attributes",
            )
        return response.json() if response.content else None

    def version(self) -> str:
        return str(self._http.get("/version").json()["version"])

    def create(self, name: str, listen: str, upstream: str) -> Proxy:
        return _proxy(
            self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": True})
        )

    def get(self, name: str) -> Proxy:
        return _proxy(self._call("GET", f"/proxies/{name}"))

    def proxies(self) -> list[Proxy]:
        return [_proxy(p) for p in self._call("GET", "/proxies").values()]

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    def set_upstream(self, name: str, upstream: str) -> None:
        """Point a proxy at another upstream: its clients keep their address (a client move)."""
        self._call("POST", f"/proxies/{name}", {"upstream": upstream})

    def add_toxic(
        self,
        proxy: str,
        name: str,
        kind: str,
        attributes: dict[str, Any],
        stream: Stream = Stream.DOWNSTREAM,
        toxicity: float = 1.0,
    ) -> None:
        body = {"name": name, "type": kind, "stream": stream.value, "toxicity": toxicity, "attributes": attributes}
        self._call("POST", f"/proxies/{proxy}/toxics", body)

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")


def _proxy(raw: dict[str, Any]) -> Proxy:
    return Proxy(
        raw["name"], raw["listen"], raw["upstream"], raw["enabled"], tuple(t["name"] for t in raw.get("toxics", []))
    )
