"""The chaos suite on a stack that is not Prompt Card, with scenarios that are data only (no
hook, nothing under stackcheck/ knows this stack): a service stopped, latency and a cut on a
link, a database killed with an SQL ledger. The suite runs as the gate runs it (pytest on the
chaos suite with --stack and --report-dir) and its verdicts are read from results.json: the
scenarios pass, and one whose RTO objective is below the outage it causes fails by its name
with the measured RTO in the breach."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stackcheck import resources

pytestmark = [
    pytest.mark.docker,
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.exclusive("runs the chaos suite: faults and measured recovery"),
]

STACK = """
[stack]
name = "generic-chaos"
entrypoint = "http://toxiproxy:18080"
health_path = "/healthz"
proxy = "toxiproxy"

[secrets]
generate = ["db"]

[networks.control]

[services.web]
image = "nginx"
networks = { control = [] }

[services.db]
image = "postgres"
networks = { control = [] }
ports = [5432]
env = { POSTGRES_DB = "app", POSTGRES_PASSWORD = "${secret.db}" }

[services.toxiproxy]
image = "toxiproxy"
networks = { control = [] }
ports = [8474, 18080]

[links."toxiproxy->web"]
upstream = "web:8080"
listen = 18080

[workloads.home]
path = "/healthz"
expect_status = [200]
expect_body = "ok"

# Committed rows survive a SIGKILL of PostgreSQL (fsync on): RPO 0. The table is made by the
# first write (several statements in one simple query).
[ledgers.rows]
interval_s = 0.02
write = { service = "db", sql = "CREATE TABLE IF NOT EXISTS ledger (id text); INSERT INTO ledger VALUES ('${id}')" }
read = { service = "db", sql = "SELECT id FROM ledger" }

[scenarios.web-stop]
fault = "stop"
target = "web"
params = { grace_s = 1 }
duration_s = 2
recovery_timeout_s = 20
probe = "home"
verify = { healthy = true, outage = true }

[scenarios.web-slow]
fault = "latency"
target = "toxiproxy->web"
params = { ms = 100 }
warmup_s = 2
duration_s = 3
after_s = 2
settle_s = 0.5
traffic = "home"
concurrency = 2
verify = { during_statuses = [200], p95_impact_min_ms = 90, p50_after_slack_ms = 20 }

[scenarios.db-kill]
fault = "kill"
target = "db"
duration_s = 1
ledger = "rows"
verify = { healthy = true }

[scenarios.web-down-tight]
fault = "down"
target = "toxiproxy->web"
duration_s = 2
recovery_timeout_s = 10
probe = "home"

[objectives.chaos.web-stop]
rto_s = 30

[objectives.chaos.db-kill]
rpo_s = 0

[objectives.chaos.web-down-tight]
rto_s = 0.5  # the link is down for 2 s: must fail
"""


def test_data_only_scenarios_of_another_stack_pass_and_a_breached_objective_fails(tmp_path: Path) -> None:
    (tmp_path / "stack.toml").write_text(STACK)
    suite, ini = resources.product_suites()["chaos"], resources.package_dir("stackcheck.suites") / "gate.ini"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(suite), "-c", str(ini), "--rootdir", str(tmp_path),
         "--stack", "stack.toml", "--report-dir", "out", "-q", "-s"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    print(run.stdout[-6000:])
    assert run.returncode == 1, run.stderr[-2000:]  # one scenario fails
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    checks = {c["check"]: c for c in results["checks"]}
    assert {name: c["status"] for name, c in checks.items()} == {
        "web-stop": "passed", "web-slow": "passed", "db-kill": "passed", "web-down-tight": "failed",
    }  # fmt: skip
    chaos = {e["scenario"]: e for e in results["chaos"]}
    assert chaos["web-stop"]["rto"]["rto_s"] is not None
    assert chaos["db-kill"]["rpo"]["acknowledged"] > 20
    assert chaos["db-kill"]["rpo"]["lost"] == []
    rto = chaos["web-down-tight"]["rto"]["rto_s"]
    assert rto > 1.5
    [breach] = [b for b in results["breaches"] if b["check"] == "web-down-tight"]
    assert breach["message"] == f"RTO {rto:.3f}s > objective 0.5s"
