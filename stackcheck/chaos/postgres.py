"""PostgreSQL replication steps used by failover experiments (stackcheck's postgres image)."""

from __future__ import annotations

import time

from stackcheck.chaos.faults import network_aliases
from stackcheck.errors import StackError
from stackcheck.stack import Stack
from stackcheck.waiting import wait_until

PGDATA = "/var/lib/postgresql/data"


def lag_bytes(stack: Stack, primary: str, replica: str) -> int:
    """How many bytes of WAL the replica has yet to replay."""
    with (
        stack.postgres(primary, superuser=True, autocommit=True) as p,
        stack.postgres(replica, superuser=True, autocommit=True) as r,
    ):
        current = p.execute("SELECT pg_current_wal_lsn()").fetchone()
        assert current is not None
        row = r.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())", (current[0],)).fetchone()
        assert row is not None
        return max(0, int(row[0]))


def wait_for_catch_up(stack: Stack, primary: str, replica: str, timeout_s: float = 30.0) -> float:
    """Wait until the replica has replayed everything the primary has written; return seconds waited."""
    started = time.monotonic()
    if wait_until(lambda: True if lag_bytes(stack, primary, replica) == 0 else None, timeout_s, interval_s=0.05):
        return time.monotonic() - started
    raise StackError(
        f"{replica} did not catch up with {primary} within {timeout_s:g}s", "check the replication link and logs"
    )


def promote(stack: Stack, replica: str) -> None:
    """The seed's procedure: ``pg_ctl promote`` on the replica, then it must take writes."""
    code, output = stack.service(replica).docker.exec_run(["pg_ctl", "promote", "-D", PGDATA, "-w", "-t", "30"])
    if code != 0:
        raise StackError(
            f"pg_ctl promote on {replica} failed: {output.decode(errors='replace').strip()}", "read its logs"
        )
    with stack.postgres(replica, superuser=True, autocommit=True) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        if row is None or row[0]:
            raise StackError(f"{replica} is still in recovery after promotion", "read its logs")


def take_over_name(stack: Stack, name: str, service: str, network: str) -> None:
    """Give ``service`` the DNS name ``name`` on ``network``, as a DNS or VIP failover does: whatever
    reaches the old primary by name (a Toxiproxy link, say) reaches ``service`` from now on.

    Not a change of the Toxiproxy proxy: Toxiproxy dials the upstream inside its accept loop, with
    no timeout, and every change of a proxy (update, delete) waits for that loop. Once the primary
    is dead its name is unknown to Docker's DNS, the lookups are forwarded and some stall for the
    resolver's full 5 s timeout, so a proxy change then blocks for up to that long. With the name
    moved, lookups are answered at once again and Toxiproxy is never touched. A dial that raced
    the kill (Docker's DNS answers the dead address for about a second) holds the accept loop, and
    so the link, until the kernel gives up on the SYN: the proxy's ``net.ipv4.tcp_syn_retries``
    in the stack file bounds that. ``service`` is reconnected to ``network``: its connections on
    that network drop (clients reconnect)."""
    handle = stack.service(service)
    aliases = network_aliases(stack, handle, network)
    net = stack.docker_network(network)
    net.disconnect(handle.docker, force=True)
    net.connect(handle.docker, aliases=[*aliases, name])
