"""`stackcheck drill q1 --stack stacks/patroni/stack.toml` end to end, as an operator runs it: the
command in a subprocess on the real cluster (the shipped, tuned Patroni profile: the quickest real
drill), its exit code, the drill record in the history, the record's files, the sign-off that
follows, and nothing of the run left in the engine afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import docker
import pytest

from stackcheck import resources
from stackcheck.load.history import History
from tests.integration.leftovers import RunWatch, wait_gone

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.drill,
    pytest.mark.exclusive("a drill's RTO is a measurement"),
]

CLUSTER = resources.stacks_dir() / "patroni" / "stack.toml"
TIER_1_RTO_S = 30.0  # [objectives.chaos.q1-primary-failure] of the stack file, as the record must state it
GONE_WITHIN_S = 10.0


def stackcheck(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stackcheck.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_drill_q1_on_the_cluster_writes_its_record_and_history_and_leaves_nothing(
    tmp_path: Path, docker_client: docker.DockerClient, watch: RunWatch
) -> None:
    history_url = f"sqlite:///{tmp_path / 'drills.sqlite'}"
    proc = stackcheck(
        "drill", "q1", "--stack", str(CLUSTER), "--operator", "ci-e2e", "--history-url", history_url,
        cwd=tmp_path, timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "drill q1: objectives met" in proc.stdout

    # The record's files, where the command said (under reports/ of the directory it ran in).
    html_path = Path(proc.stdout.rsplit("record: ", 1)[1].split()[0])
    run_dir = html_path.parent
    assert run_dir.parent == tmp_path / "reports"
    assert run_dir.name.endswith("-drill-q1")
    assert {"results.json", "junit.xml", "drill.html", "drill.md"} <= {p.name for p in run_dir.iterdir()}
    md = (run_dir / "drill.md").read_text()
    assert md.startswith("# DR drill record: q1-primary-failure\n")
    assert "- Outcome: **PASS**, objectives met" in md
    assert f"- Objective: RTO {TIER_1_RTO_S:.0f} s, RPO 0 s" in md
    assert "| fault injected | SIGKILL patroni-" in md
    assert "- Operator: ci-e2e" in md
    assert "none: this is the first run of this drill in the history" in md
    assert '<div class="verdict pass" id="verdict">' in html_path.read_text()

    # The history entry, read back fresh from the store.
    record = History(history_url).drill_run(run_dir.name)
    assert record is not None, f"no drill_runs row {run_dir.name}"
    print(f"\nq1 via the CLI: RTO {record.rto_s} s, {record.lost}/{record.acknowledged} lost, run {record.run_id}")
    assert (record.drill, record.scenario, record.stack) == ("q1", "q1-primary-failure", str(CLUSTER))
    assert record.passed
    assert record.breaches == ()
    assert (record.rto_objective_s, record.rpo_objective_s) == (TIER_1_RTO_S, 0.0)
    assert record.rto_s is not None
    assert 0 < record.rto_s < TIER_1_RTO_S
    assert record.lost == 0
    assert record.acknowledged is not None
    assert record.acknowledged > 0
    assert (record.operator, record.reviewer, record.accepted) == ("ci-e2e", None, None)

    # The sign-off that follows a drill: on the same entry, and in the record.
    signed = stackcheck(
        "sign-off", run_dir.name, "--reviewer", "dr-lead", "--accept", "--note", "e2e", "--history-url", history_url,
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stdout + signed.stderr
    after = History(history_url).drill_run(run_dir.name)
    assert after is not None
    assert (after.reviewer, after.accepted, after.note) == ("dr-lead", True, "e2e")
    assert "- Reviewer: dr-lead" in (run_dir / "drill.md").read_text()

    # Nothing of the drill's stack left: containers, networks, volumes its containers mounted.
    (run_id,) = watch.new_runs()  # the one cluster the drill booted (fresh = true)
    left = wait_gone(docker_client, run_id, watch.volumes.get(run_id, set()), GONE_WITHIN_S)
    assert not left, f"run {run_id} left {left}"
