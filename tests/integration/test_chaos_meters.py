"""The chaos meters against ground truth, and faults that are always reverted.

- RTO: outages of known, random length (refused and hung connections) measured within the
  probe period + 20 ms.
- RPO: a known loss (writes made while replication is cut, then the async replica promoted)
  reported write for write, and a failover after catch-up reported as no loss.
- Revert: a test that fails inside faults leaves no toxic, paused or disconnected container.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stackcheck.chaos import faults, postgres
from stackcheck.chaos.experiment import Experiment
from stackcheck.chaos.journal import Journal
from stackcheck.chaos.meters import RtoMeter, WriteLedger
from stackcheck.stack import DEFAULT_STACK, Stack
from stackcheck.stackfile import RecoveryObjective, parse

pytestmark = [pytest.mark.docker, pytest.mark.chaos]
PERIOD = 0.05
TOLERANCE = PERIOD + 0.020


@pytest.fixture(scope="module")
def probe_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """nginx behind a Toxiproxy link whose listen port is published: the probe sees the link directly."""
    data = {
        "stack": {"name": "rto-truth", "proxy": "toxiproxy"},
        "networks": {"control": {}},
        "services": {
            "nginx": {"image": "nginx", "networks": {"control": []}},
            "toxiproxy": {"image": "toxiproxy", "networks": {"control": []}, "ports": [8474, 18080]},
        },
        "links": {"toxiproxy->nginx": {"upstream": "nginx:8080", "listen": 18080}},
    }
    with Stack(parse(data, tmp_path_factory.mktemp("rto") / "stack.toml")) as stack:
        yield stack


def raw_http_probe(port: int) -> Callable[[float], bool]:
    """One fresh TCP connection per probe: HTTP/1.0 GET, success on a 200 status line."""

    def probe(timeout: float) -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")

    return probe


def test_rto_meter_measures_known_outages_within_one_period(probe_stack: Stack) -> None:
    rng = random.Random(20261122)
    link = probe_stack.link("toxiproxy->nginx")
    probe = raw_http_probe(probe_stack.service("toxiproxy").port(18080))
    rows = []
    for style in ["refused", "hang"] * 5:
        outage = rng.uniform(0.5, 5.0)
        journal = Journal()
        fault = faults.link_down(link, journal) if style == "refused" else faults.timeout(link, 0, journal=journal)
        with RtoMeter(probe, period=PERIOD, probe_timeout=0.25, k=3) as meter:
            time.sleep(0.5)
            with fault:
                time.sleep(outage)
            assert meter.wait_for_recovery(5), f"{style} outage of {outage:.2f}s: never recovered"
        window = journal.window(journal.events[0].name)
        assert window is not None
        truth = window[1] - window[0]
        result = meter.result()
        assert result.rto_s is not None
        rows.append((style, truth, result.rto_s, result.rto_s - truth))
    print("\nstyle    true outage  measured RTO   error")
    for style, truth, measured, error in rows:
        print(f"{style:<8} {truth:10.3f}s {measured:12.3f}s {error * 1000:+7.1f} ms")
    worst = max(abs(error) for *_, error in rows)
    assert worst <= TOLERANCE, f"worst error {worst * 1000:.1f} ms > {TOLERANCE * 1000:.0f} ms (probe period + 20 ms)"


def test_an_rto_over_its_objective_fails_the_experiment(probe_stack: Stack) -> None:
    exp = Experiment("rto-breach", probe_stack, objective_override=RecoveryObjective(rto_s=0.5))
    probe = raw_http_probe(probe_stack.service("toxiproxy").port(18080))
    with exp.rto(probe, period=PERIOD):
        time.sleep(0.3)
        with faults.link_down(probe_stack.link("toxiproxy->nginx"), exp.journal):
            time.sleep(1.5)
        exp.await_recovery(5)
    result = exp.finish()
    assert not result.passed
    [breach] = result.breaches
    measured = float(breach.split()[1].rstrip("s"))
    assert abs(measured - 1.5) <= TOLERANCE, breach  # the 1.5 s outage, within one probe period + 20 ms
    assert breach.endswith("> objective 0.5s"), breach


# -- RPO ---------------------------------------------------------------------------------------


def replication_stack(tmp_path: Path) -> Stack:
    """The reference primary, async replica and the Toxiproxy link replication runs through."""
    import copy
    import tomllib

    reference = tomllib.loads(DEFAULT_STACK.read_text())
    services = {
        name: copy.deepcopy(reference["services"][name])
        for name in ("postgres-primary", "postgres-replica", "toxiproxy")
    }
    data = {
        "stack": {"name": "rpo-truth", "proxy": "toxiproxy"},
        "secrets": reference["secrets"],
        "networks": {"control": {}, "internal": {"internal": True}},
        "services": services,
        "links": {"postgres-replica->postgres-primary": reference["links"]["postgres-replica->postgres-primary"]},
    }
    return Stack(parse(data, tmp_path / "stack.toml"))


def sql_writer(stack: Stack) -> tuple[Callable[[int], None], psycopg.Connection[Any]]:
    """Numbered inserts on the primary, acknowledged when the (autocommit) INSERT returns."""
    conn = stack.postgres("postgres-primary", superuser=True, autocommit=True)
    conn.execute("CREATE TABLE IF NOT EXISTS ledger (n integer PRIMARY KEY, at timestamptz DEFAULT now())")

    def write(n: int) -> None:
        conn.execute("INSERT INTO ledger (n) VALUES (%s)", (n,))

    return write, conn


def surviving(stack: Stack) -> list[int]:
    with stack.postgres("postgres-replica", superuser=True) as conn:
        return [row[0] for row in conn.execute("SELECT n FROM ledger ORDER BY n")]


def test_rpo_ledger_reports_exactly_the_writes_made_while_replication_was_cut(tmp_path: Path) -> None:
    with replication_stack(tmp_path) as stack:
        # A 0.1 s RPO objective, so the measured loss must also fail the experiment.
        exp = Experiment("rpo-truth", stack, objective_override=RecoveryObjective(rpo_s=0.1))
        write, conn = sql_writer(stack)
        ledger = exp.ledger(write)
        for _ in range(50):
            assert ledger.write()
        postgres.wait_for_catch_up(stack)
        with faults.link_down(stack.link("postgres-replica->postgres-primary"), exp.journal):
            for _ in range(30):
                assert ledger.write()
                time.sleep(0.01)
        written_during_block = ledger.acked_between(*exp.window("link down postgres-replica->postgres-primary"))
        conn.close()
        with faults.kill(stack.service("postgres-primary"), exp.journal, restart=False):
            postgres.promote(stack)
            report = exp.reconcile(surviving(stack))
    print(f"\n{report.describe()}")
    assert set(report.lost) == written_during_block
    assert report.lost == tuple(range(51, 81))
    assert report.unexpected == ()
    assert report.duplicates == ()
    assert report.rpo_s > 0
    assert exp.finish().breaches == (f"RPO {report.rpo_s:.3f}s (30 writes) > objective 0.1s",)


def test_rpo_ledger_reports_no_loss_after_catch_up(tmp_path: Path) -> None:
    with replication_stack(tmp_path) as stack:
        write, conn = sql_writer(stack)
        ledger = WriteLedger(write)
        for _ in range(80):
            assert ledger.write()
        postgres.wait_for_catch_up(stack)
        conn.close()
        with faults.kill(stack.service("postgres-primary"), restart=False):
            postgres.promote(stack)
            report = ledger.reconcile(surviving(stack))
    print(f"\n{report.describe()}")
    assert report.lost == ()
    assert report.rpo_s == 0.0
    assert report.acknowledged == 80


# -- revert --------------------------------------------------------------------------------------


def _assert_nothing_left(stack: Stack) -> None:
    proxies = stack.toxiproxy.proxies()
    assert all(p.enabled and not p.toxics for p in proxies), [p for p in proxies if not p.enabled or p.toxics]
    for handle in stack.handles():
        handle.docker.reload()
        assert handle.docker.status == "running", f"{handle.name} is {handle.docker.status}"
        attached = set(handle.docker.attrs["NetworkSettings"]["Networks"])
        assert attached == {stack.network_name(n) for n in handle.service.networks}, f"{handle.name} on {attached}"


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_faults_are_reverted_when_the_block_fails(stack: Stack, error: BaseException) -> None:
    replica = stack.service("postgres-replica")
    with (
        pytest.raises(type(error)),
        faults.latency(stack.link("backend->postgres-primary"), 100),
        faults.reset_peer(stack.link("backend->redis")),
        faults.link_down(stack.link("backend->postgres-replica")),
        faults.pause(stack.service("redis")),
        faults.disconnect(stack, replica, "internal"),
    ):
        raise error
    _assert_nothing_left(stack)
    with stack.postgres("postgres-replica") as conn:  # reconnected with its alias: replication works again
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    with stack.http() as api:
        assert api.get("/api/prompt-cards").status_code == 200
