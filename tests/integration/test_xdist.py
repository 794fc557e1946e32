"""The compliance gate on a real stack, serially and with two pytest-xdist workers: the same
verdict for every check and every rule's subject, on the clean stack and on a broken variant
(the same breaches, found by either run), one boot for the two workers (the second attaches to
the first's stack), and nothing left behind.

The minimal stack (tests/integration/data/minimal/) keeps it cheap: one nginx container.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from stackcheck.stack import RUN_LABEL, STACK_LABEL
from tests.integration.leftovers import run_ids, wait_gone

pytestmark = [
    pytest.mark.docker,
    pytest.mark.compliance,
    pytest.mark.slow,
    pytest.mark.exclusive("its own workers time a stack's life against a killed worker"),
]

MINIMAL = Path(__file__).parent / "data" / "minimal" / "stack.toml"


def gate(cwd: Path, *extra: str, stack: Path = MINIMAL) -> tuple[dict[str, Any], float, str]:
    cwd.mkdir()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "stackcheck.cli", "gate", "--stack", str(stack), "--area", "compliance", *extra],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
    )
    seconds = time.monotonic() - started
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    (results,) = (cwd / "reports").glob("*/results.json")
    return json.loads(results.read_text()), seconds, proc.stdout


def verdicts(results: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the number of workers (evidence may hold timings, so: outcomes;
    a subject may name the entrypoint, published on another port each run)."""
    return {
        "verdict": results["verdict"],
        "checks": [(c["area"], c["check"], c["status"]) for c in results["checks"]],
        "compliance": [
            (r["rule"], re.sub(r":\d+\b", ":PORT", r["subject"]), r["outcome"]) for r in results["compliance"]
        ],
        "breaches": sorted((b["area"], b["check"]) for b in results["breaches"]),
        "tests": results["tests"],
    }


def containers_created(client: docker.DockerClient, since: datetime.datetime, until: datetime.datetime) -> int:
    found = client.events(
        since=since, until=until, decode=True, filters={"type": "container", "event": "create", "label": STACK_LABEL}
    )
    return sum(1 for event in found if event["Actor"]["Attributes"].get(STACK_LABEL) == "minimal")


def broken_minimal(folder: Path) -> Path:
    """The minimal stack without its HSTS header and with Docker's default capabilities."""
    shutil.copytree(MINIMAL.parent, folder)
    conf, stack = folder / "nginx.conf", folder / "stack.toml"
    hsts = 'add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;\n'
    caps = 'cap_drop = ["ALL"]\n'
    assert hsts in conf.read_text()
    assert caps in stack.read_text()
    conf.write_text(conf.read_text().replace(hsts, ""))
    stack.write_text(stack.read_text().replace(caps, ""))
    return stack


@pytest.mark.parametrize("variant", ["clean", "broken"])
def test_two_workers_give_every_check_the_verdict_a_serial_run_gives(
    variant: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    stack = MINIMAL if variant == "clean" else broken_minimal(tmp_path / "broken")
    serial, serial_s, _ = gate(tmp_path / "serial", stack=stack)
    since = datetime.datetime.now(datetime.UTC)
    parallel, parallel_s, out = gate(tmp_path / "parallel", "--workers", "2", stack=stack)
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
    print(f"\n{variant} minimal stack, compliance gate: serial {serial_s:.1f}s, 2 workers {parallel_s:.1f}s")
    print(out[-2500:])
    assert len(serial["checks"]) > 20
    assert verdicts(parallel) == verdicts(serial)
    if variant == "broken":  # both runs fail it, on what was broken
        assert serial["verdict"] == "fail"
        found = {b["check"] for b in serial["breaches"]}
        assert {"headers-hsts", "containers-capabilities"} <= found, serial["breaches"]
    assert containers_created(docker_client, since, until) == 1, "one boot for both workers"
    left = docker_client.containers.list(all=True, filters={"label": [RUN_LABEL, f"{STACK_LABEL}=minimal"]})
    assert not left, f"left behind: {[c.name for c in left]}"


INNER = """
import json, os, time
from pathlib import Path
import pytest

def note(**what):
    with (Path(__file__).parent / "events.jsonl").open("a") as log:
        log.write(json.dumps({"worker": os.environ["PYTEST_XDIST_WORKER"], "at": time.time(), **what}) + "\\n")

@pytest.mark.xdist_group("early")
def test_boots_and_ends_early(stack):
    with stack.http() as client:
        note(test="early", run_id=stack.run_id, status=client.get("/").status_code)
    if os.environ["CRASH"] == "1":
        os._exit(3)  # the booting worker dies: with it its reaper connection

@pytest.mark.xdist_group("late")
def test_reads_long_after_the_booting_worker_ended(request):
    time.sleep(float(os.environ["LATE_S"]))
    stack = request.getfixturevalue("stack")
    with stack.http() as client:
        note(test="late", run_id=stack.run_id, status=client.get("/").status_code)
    time.sleep(float(os.environ["HOLD_S"]))
"""


def inner_run(tmp_path: Path, late_s: float, hold_s: float, crash: bool = False) -> subprocess.Popen[str]:
    (tmp_path / "test_inner.py").write_text(INNER)
    # A short reconnection timeout: the reaper would remove an unwatched stack within 2 s.
    env = {**os.environ, "RYUK_RECONNECTION_TIMEOUT": "2s", "LATE_S": str(late_s), "HOLD_S": str(hold_s)}
    env["CRASH"] = "1" if crash else "0"
    args = ["-n", "2", "--dist", "loadgroup", "--stack", str(MINIMAL), "-p", "no:cacheprovider", "test_inner.py"]
    args += ["--max-worker-restart", "0"]  # a replacement worker would rerun (and attach) the crashed test
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_the_shared_stack_outlives_its_booting_worker_when_that_worker_dies(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """xdist keeps a finished worker's process (and its reaper connection) until the run ends; a
    worker that dies takes its connection along: the controller then holds the reaper, so the
    stack is still there for a worker that reads it seconds later, and is removed at the end."""
    before = run_ids(docker_client)
    proc = inner_run(tmp_path, late_s=8, hold_s=0, crash=True)
    out, _ = proc.communicate(timeout=300)
    print(out[-3000:])
    assert "worker 'gw" in out, out[-3000:]
    assert "crashed" in out, out[-3000:]
    assert "removed the shared stack" in out, "the dead worker could not count itself out: the controller removed it"
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    early, late = (next(e for e in events if e["test"] == name) for name in ("early", "late"))
    assert early["run_id"] == late["run_id"], "the late worker attached to the stack the dead one booted"
    assert early["worker"] != late["worker"]
    assert late["status"] == early["status"] == 200
    assert late["at"] - early["at"] > 6, "the late read came long after the booting worker died"
    assert not run_ids(docker_client) - before, "removed at the end"


def test_a_killed_parallel_run_is_reaped(tmp_path: Path, docker_client: docker.DockerClient) -> None:
    before = run_ids(docker_client)
    proc = inner_run(tmp_path, late_s=0, hold_s=600)
    try:
        events = tmp_path / "events.jsonl"
        deadline = time.monotonic() + 120
        while not events.exists() or len(events.read_text().splitlines()) < 2:  # both workers read the stack
            assert proc.poll() is None, "the inner run ended early"
            assert time.monotonic() < deadline, "the inner run did not get going within 120 s"
            time.sleep(0.2)
        (run_id,) = run_ids(docker_client) - before
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = time.monotonic()
    left = wait_gone(docker_client, run_id, (), 30)
    assert not left, f"30 s after SIGKILL of the whole run: {left}"
    print(f"shared stack reaped {time.monotonic() - killed:.1f}s after SIGKILL")
