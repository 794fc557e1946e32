"""The real MDN HTTP Observatory scanner and a local site for it to scan.

``install_scanner`` puts the pinned npm release into a cache directory (offline-ready: no
install scripts, an empty HSTS preload list). ``CaseServer`` serves each case on its own
127.0.0.1 port, plain HTTP and TLS on the same port (told apart by the first byte), so that the
scanner, which scans a hostname, can be pointed at ``localhost:PORT``: it then asks
http://localhost:PORT/ and https://localhost:PORT/ exactly as it asks a real site on 80 and 443.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from stackcheck.compliance.observatory import SCANNER_PACKAGE, SCANNER_VERSION

RUNNER = Path(__file__).with_name("observatory_scanner.mjs")


def install_scanner(cache: Path | None = None) -> Path:
    """The pinned scanner, installed once into ~/.cache/stackcheck/observatory-VERSION."""
    root = cache or Path.home() / ".cache" / "stackcheck"
    target = root / f"observatory-{SCANNER_VERSION}"
    package = target / "node_modules" / "@mdn" / "mdn-http-observatory"
    package_spec = f"{SCANNER_PACKAGE}@{SCANNER_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"observatory-{SCANNER_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test processes install it once
        if not (package / "package.json").exists():
            target.mkdir(exist_ok=True)
            # --ignore-scripts: its postinstall downloads the HSTS preload and TLD lists.
            subprocess.run(
                [
                    "npm",
                    "install",
                    "--ignore-scripts",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(target),
                    package_spec,
                ],
                check=True,
                capture_output=True,
                timeout=600,
            )
        preload = package / "conf" / "hsts-preload.json"
        if not preload.exists():
            preload.write_text("{}")  # offline: no host is preloaded
    return target


def run_scanner(scanner: Path, hostnames: Sequence[str], ca_file: Path, timeout: float = 600) -> list[dict[str, Any]]:
    """One node process scans every host (four at a time); one result object per host."""
    env = {**os.environ, "OBSERVATORY_DIR": str(scanner), "NODE_EXTRA_CA_CERTS": str(ca_file)}
    done = subprocess.run(
        ["nice", "-n", "10", "node", str(RUNNER)],
        input=json.dumps(list(hostnames)),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the scanner's node process failed ({done.returncode}): {done.stderr[-2000:]}")
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


# -- a site per case ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""


@dataclass(frozen=True)
class Site:
    """What one case's port answers. ``{port}`` in a header value becomes the port.

    ``https``/``http``: path -> answer for GET over TLS / plain HTTP (a missing path answers 404);
    ``http`` None: plain-HTTP connections are reset. ``preflight``: the answer to any OPTIONS.
    """

    https: Mapping[str, Answer]
    http: Mapping[str, Answer] | None
    preflight: Answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    site: Site
    port: int
    tls: bool

    def _answer(self, answer: Answer) -> None:
        body = answer.body.encode()
        self.send_response_only(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value.replace("{port}", str(self.port)))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        routes = self.site.https if self.tls else self.site.http or {}
        self._answer(routes.get(self.path.split("?")[0], Answer(404, (("Content-Type", "text/plain"),), "no")))

    def do_OPTIONS(self) -> None:
        self._answer(self.site.preflight)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class CaseServer:
    """Serves each site on its own 127.0.0.1 port until the context exits."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.selector = selectors.DefaultSelector()
        self.sites: dict[int, Site] = {}
        self.listeners: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> CaseServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        for listener in self.listeners:
            listener.close()
        self.selector.close()

    def serve(self, site: Site) -> int:
        listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        listener.setblocking(False)
        port = int(listener.getsockname()[1])
        self.sites[port] = site
        self.listeners.append(listener)
        self.selector.register(listener, selectors.EVENT_READ, port)
        return port

    @contextlib.contextmanager
    def serving(self, sites: Sequence[Site]) -> Iterator[list[int]]:
        ports = [self.serve(site) for site in sites]
        try:
            yield ports
        finally:
            for port in ports:
                listener = next(sock for sock in self.listeners if sock.getsockname()[1] == port)
                self.selector.unregister(listener)
                self.listeners.remove(listener)
                listener.close()
                del self.sites[port]

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(timeout=0.1):
                listener = key.fileobj
                assert isinstance(listener, socket.socket)
                try:
                    conn, _addr = listener.accept()
                except OSError:
                    continue
                threading.Thread(target=self._handle, args=(conn, key.data), daemon=True).start()

    def _handle(self, conn: socket.socket, port: int) -> None:
        site = self.sites.get(port)
        with contextlib.suppress(OSError, ssl.SSLError), conn:
            conn.setblocking(True)
            conn.settimeout(10)
            first = conn.recv(1, socket.MSG_PEEK)
            tls = first == b"\x16"  # a TLS handshake record
            if site is None or (not tls and site.http is None):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return  # closed with a reset: nothing answers plain HTTP here
            stream = self.context.wrap_socket(conn, server_side=True) if tls else conn
            handler = type("Handler", (_Handler,), {"site": site, "port": port, "tls": tls})
            handler(stream, ("127.0.0.1", 0), None)


@contextlib.contextmanager
def forwarded(routes: Mapping[int, int]) -> Iterator[None]:
    """TCP forwarders 127.0.0.1:LISTEN -> 127.0.0.1:TARGET (e.g. 443 -> an edge's mapped port), so
    that the scanner can scan a local edge as ``localhost`` on the standard ports."""
    listeners = []
    try:
        for listen in routes:
            try:
                listeners.append(socket.create_server(("127.0.0.1", listen), backlog=64))
            except OSError as exc:
                raise RuntimeError(f"cannot listen on 127.0.0.1:{listen} for the scanner: {exc}") from exc
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    stopping = threading.Event()

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def accept(listener: socket.socket, target: int) -> None:
        listener.settimeout(0.2)
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    threads = [
        threading.Thread(target=accept, args=(listener, target), daemon=True)
        for listener, target in zip(listeners, routes.values(), strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stopping.set()
        for thread in threads:
            thread.join(timeout=2)
        for listener in listeners:
            listener.close()
