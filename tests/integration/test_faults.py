"""Every fault's effect on real traffic, and its revert, on one small stack: nginx (``web``, on
the internal network only) reached through a Toxiproxy link whose listen port is published.
Each test fetches over a fresh TCP connection (HTTP/1.0, so nginx closes after the answer) and
records every recv(): sizes, arrival times and the EOF. After each block the link carries
normal traffic again, Toxiproxy has no toxic left and every container runs on its networks.

The health check a chaos verify step uses is shown to read the engine's fresh state: on a
killed container it reports the death that the cached ``attrs`` still hide.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from stackcheck.chaos import faults
from stackcheck.chaos.experiment import Experiment
from stackcheck.chaos.meters import RtoMeter
from stackcheck.stack import ServiceHandle, Stack
from stackcheck.stackfile import parse
from stackcheck.waiting import wait_until
from tests.integration.test_chaos_meters import _assert_nothing_left

pytestmark = [
    pytest.mark.docker,
    pytest.mark.chaos,
    pytest.mark.xdist_group("test_faults"),
    pytest.mark.exclusive("times each recv() of real traffic through a fault"),
]
LINK = "toxiproxy->web"
LISTEN = 18080
BLOB_BYTES = 48_000  # /blob: 2 s at the 24 KB/s bandwidth cap below
SMALL_BYTES = 4_000  # /small: cut into ~60 slices by the slicer
NGINX_CONF = """
server {
    listen 8080 default_server;
    location = /healthz { default_type text/plain; return 200 "ok\\n"; }
    location / { root /srv; default_type application/octet-stream; }
}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = {
        "stack": {"name": "faults", "proxy": "toxiproxy"},
        "networks": {"control": {}, "internal": {"internal": True}},
        "services": {
            "web": {
                "image": "nginx",
                "networks": {"internal": []},
                "files": {
                    "/etc/nginx/conf.d/default.conf": NGINX_CONF,
                    "/srv/blob": "b" * BLOB_BYTES,
                    "/srv/small": "s" * SMALL_BYTES,
                },
            },
            "toxiproxy": {"image": "toxiproxy", "networks": {"control": [], "internal": []}, "ports": [8474, LISTEN]},
        },
        "links": {LINK: {"upstream": "web:8080", "listen": LISTEN}},
    }
    with Stack(parse(data, tmp_path_factory.mktemp("faults") / "stack.toml")) as booted:
        yield booted


@dataclass(frozen=True)
class Transfer:
    started: float  # monotonic
    head: bytes  # the first bytes received (the status line)
    chunks: tuple[tuple[float, int], ...]  # (arrival, bytes) per recv()
    ended: float  # EOF or reset seen

    @property
    def ok(self) -> bool:
        return self.head.startswith(b"HTTP/1.1 200")

    @property
    def size(self) -> int:
        return sum(n for _, n in self.chunks)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def close_delay(self) -> float:
        """Seconds between the last byte and the end of the connection."""
        return self.ended - self.chunks[-1][0] if self.chunks else 0.0


def fetch(stack: Stack, path: str = "/healthz", timeout: float = 10.0) -> Transfer:
    started = time.monotonic()
    head, chunks = b"", []
    with socket.create_connection(("127.0.0.1", stack.service("toxiproxy").port(LISTEN)), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        try:
            while data := sock.recv(65536):
                chunks.append((time.monotonic(), len(data)))
                head = head or data[:32]
        except ConnectionResetError:
            pass
    return Transfer(started, head, tuple(chunks), time.monotonic())


def assert_normal(stack: Stack) -> None:
    """The revert: full answers at full speed, no toxic, every container running on its networks."""
    small, blob = fetch(stack, "/small"), fetch(stack, "/blob")
    for transfer in (small, blob):
        assert transfer.ok, transfer.head
    assert small.size > SMALL_BYTES, small.size
    assert blob.size > BLOB_BYTES, blob.size
    assert blob.seconds < 0.5, f"/blob took {blob.seconds:.2f}s after the fault"
    assert small.close_delay < 0.3, f"close delayed {small.close_delay:.2f}s after the fault"
    _assert_nothing_left(stack)


def test_bandwidth_caps_the_transfer_rate(stack: Stack) -> None:
    kb_per_s = 24
    with faults.bandwidth(stack.link(LINK), kb_per_s):
        capped = fetch(stack, "/blob")
        assert stack.toxiproxy.get(LINK).toxics, "the toxic is installed during the block"
    rate = capped.size / capped.seconds / 1000  # Toxiproxy's KB is 1000 bytes
    print(f"\nbandwidth {kb_per_s} KB/s: {capped.size} bytes in {capped.seconds:.2f}s = {rate:.1f} KB/s")
    assert capped.ok
    assert capped.size > BLOB_BYTES
    assert abs(rate - kb_per_s) <= 0.15 * kb_per_s, f"{rate:.1f} KB/s, not within 15 % of {kb_per_s}"
    assert_normal(stack)


def test_slow_close_delays_the_close_after_the_answer(stack: Stack) -> None:
    delay_ms = 1500
    with faults.slow_close(stack.link(LINK), delay_ms):
        slow = fetch(stack, "/small")
    print(f"\nslow_close {delay_ms} ms: answer complete, connection closed {slow.close_delay:.3f}s later")
    assert slow.ok
    assert slow.size > SMALL_BYTES, "the answer itself is not cut"
    assert delay_ms / 1000 - 0.05 <= slow.close_delay <= delay_ms / 1000 + 1.0, slow.close_delay
    assert_normal(stack)


def test_slicer_delivers_data_in_small_chunks(stack: Stack) -> None:
    average, variation = 64, 16
    normal = fetch(stack, "/small")
    with faults.slicer(stack.link(LINK), average_size=average, size_variation=variation, delay_us=3000):
        sliced = fetch(stack, "/small")
    sizes = sorted(n for _, n in sliced.chunks)
    print(
        f"\nslicer: {len(sizes)} recv()s, median {sizes[len(sizes) // 2]} B, max {sizes[-1]} B; without: "
        f"{len(normal.chunks)} recv()s, max {max(n for _, n in normal.chunks)} B"
    )
    assert sliced.ok
    assert sliced.size == normal.size, "slicing must not lose or add bytes"
    assert sizes[len(sizes) // 2] <= average + variation, sizes
    assert len(sizes) >= sliced.size / (average + variation) / 2, f"only {len(sizes)} chunks"
    assert len(normal.chunks) < len(sizes) / 10
    assert_normal(stack)


def test_limit_data_closes_the_connection_after_n_bytes(stack: Stack) -> None:
    limit = 1000
    with faults.limit_data(stack.link(LINK), limit):
        cut = fetch(stack, "/blob")
        again = fetch(stack, "/small")  # the limit holds per connection
    print(f"\nlimit_data {limit}: received {cut.size} bytes of /blob, {again.size} of /small")
    assert cut.ok, "the first bytes still arrive"
    assert cut.size == limit, cut.size
    assert again.size == limit, again.size
    assert_normal(stack)


def test_stop_takes_the_service_down_then_back(stack: Stack) -> None:
    web = stack.service("web")
    with faults.stop(web, grace_s=5):
        status = faults.health(web)
        during = fetch(stack)
    print(f"\nstop: web {status}, a request through the link got {during.head!r}")
    assert status == "exited"
    assert not during.ok
    assert faults.health(web) == "healthy"
    assert_normal(stack)


def test_restart_is_an_outage_followed_by_recovery(stack: Stack) -> None:
    web = stack.service("web")
    web.docker.reload()
    started_before = web.docker.attrs["State"]["StartedAt"]
    with RtoMeter(lambda timeout: fetch(stack, timeout=timeout).ok, period=0.05, probe_timeout=1.0) as meter:
        time.sleep(0.5)
        healthy_after = faults.restart(web, timeout_s=5)
        assert meter.wait_for_recovery(10)
    result = meter.result()
    web.docker.reload()
    print(f"\nrestart: healthy after {healthy_after:.2f}s; {result.describe()}")
    assert web.docker.attrs["State"]["StartedAt"] != started_before, "the container was not restarted"
    assert result.first_failure is not None, "no outage seen during the restart"
    assert result.rto_s is not None, result.describe()
    assert_normal(stack)


def test_partition_cuts_traffic_between_two_services_then_restores_it(stack: Stack) -> None:
    web = stack.service("web")
    with faults.partition(stack, [web], "internal"):
        web.docker.reload()
        networks = set(web.docker.attrs["NetworkSettings"]["Networks"])
        during = [fetch(stack, timeout=5) for _ in range(3)]
    print(f"\npartition: web on {networks or 'no network'}; through the link: {[t.head for t in during]}")
    assert stack.network_name("internal") not in networks
    assert not any(t.ok for t in during), "toxiproxy still reached web across the partition"
    assert_normal(stack)


def _docker_says_healthy(handle: ServiceHandle) -> bool | None:
    handle.docker.reload()
    return True if handle.docker.attrs["State"]["Health"]["Status"] == "healthy" else None


def test_health_check_reads_fresh_state_not_the_cached_attrs(stack: Stack) -> None:
    """The backend-kill verify step on a replica that is killed and not yet restarted must fail;
    the cached ``attrs`` it used to read still say healthy at that point."""
    web = stack.service("web")
    assert faults.not_healthy([web]) is None
    # Docker's own status must say healthy too, so that the cached read below would pass (right
    # after a boot it may still say starting: stackcheck runs the check itself until Docker's first).
    assert wait_until(lambda: _docker_says_healthy(web), 10)
    exp = Experiment("health-fresh", stack)
    with faults.kill(web, journal=exp.journal):
        cached = web.docker.attrs["State"]
        exp.verify("every replica healthy again", lambda: faults.not_healthy([web]))
    assert cached["Running"], "the cached read would have passed"
    assert cached["Health"]["Status"] == "healthy", "the cached read would have passed"
    assert exp.finish().breaches == ("every replica healthy again: web is exited",)
    assert faults.not_healthy([web]) is None
    assert_normal(stack)
