"""The chatbot stack (stacks/chatbot, design doc 002): a second reference stack that is not Prompt
Card, written only as stack-file data and its own files. The proof of issue 11: it boots, serves
conversations through its nginx edge, and `stackcheck gate --stack` judges it to a verdict:
PASS as shipped, FAIL (with the rule and the service named) for a broken variant.

Run under the engine lock:
    flock /tmp/stackcheck-engine.lock .venv/bin/python -m pytest tests/integration/test_chatbot_stack.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackcheck.stack import Stack

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.exclusive("runs gates: their load and chaos measurements"),
]

CHATBOT = Path(__file__).resolve().parents[2] / "stacks" / "chatbot"
STACK_FILE = CHATBOT / "stack.toml"
GATE_TIMEOUT_S = 1200


@pytest.fixture(scope="module")
def chatbot() -> Iterator[Stack]:
    with Stack.from_file(STACK_FILE) as stack:
        print(f"\nchatbot booted in {stack.boot_seconds:.1f}s")
        yield stack


def test_health_reports_the_database_and_the_model(chatbot: Stack) -> None:
    with chatbot.http() as client:
        response = client.get("/api/v1/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["database"], body["llm"]) == ("ok", "ok", "ok")
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["database"]["details"] == {"journal_mode": "wal", "synchronous": "full"}
    assert checks["llm"]["details"] == {"model": "stackcheck-tiny"}


def test_a_conversation_is_written_and_read_back_through_nginx(chatbot: Stack) -> None:
    with chatbot.http() as client:
        created = client.post("/api/v1/conversations", json={"title": "integration"})
        assert created.status_code == 201, created.text
        cid = created.json()["id"]
        stored = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hello", "reply": False})
        assert stored.status_code == 201, stored.text
        answered = client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "are you there?"})
        assert answered.status_code == 201, answered.text
        assert answered.headers["strict-transport-security"].startswith("max-age=31536000")
        reply = answered.json()["reply"]
        assert (reply["role"], reply["model"]) == ("assistant", "stackcheck-tiny")  # the name the API asked for
        assert reply["content"], "the model wrote nothing"
        listed = client.get(f"/api/v1/conversations/{cid}/messages").json()
    assert [m["content"] for m in listed["items"]] == ["hello", "are you there?", reply["content"]]


def test_metrics_are_served_inside_and_not_at_the_edge(chatbot: Stack) -> None:
    with chatbot.http() as client:
        assert client.get("/metrics").status_code == 404
    api = chatbot.service("api").docker
    code, out = api.exec_run(
        [
            "python3",
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/metrics').read().decode())",
        ]
    )
    text = out.decode()
    assert code == 0, text
    for name in ("chatbot_requests_total", "chatbot_request_duration_seconds_bucket", "chatbot_conversations_stored"):
        assert name in text, f"{name} missing from /metrics"


def _gate(stack_file: Path, cwd: Path, *extra: str) -> tuple[int, str, dict]:  # type: ignore[type-arg]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "stackcheck.cli", "gate", "--stack", str(stack_file), *extra],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=GATE_TIMEOUT_S,
        check=False,
    )
    print(f"\ngate {' '.join(extra)} on {stack_file}: exit {proc.returncode} in {time.monotonic() - started:.0f}s")
    print(proc.stdout[-6000:])
    assert "report: " in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = Path(proc.stdout.rsplit("report: ", 1)[1].split()[0])
    return proc.returncode, proc.stdout, json.loads((run_dir / "results.json").read_text())


def test_the_gate_passes_the_chatbot_stack(tmp_path: Path) -> None:
    code, out, results = _gate(STACK_FILE, tmp_path)
    assert code == 0, out[-4000:]
    assert results["verdict"] == "pass"
    assert "stackcheck gate (smoke)" in out
    assert ": PASS" in out
    # Compliance, load and both chaos scenarios were judged, each against its objectives.
    verdicts = {c["check"]: c["status"] for c in results["checks"]}
    for name in ("containers-non-root", "headers-hsts", "ratelimit-api", "load-gate", "api-kill", "nginx-restart"):
        assert verdicts.get(name) == "passed", (name, verdicts.get(name))
    for scenario in results["chaos"]:
        rto, rpo, objective = scenario["rto"], scenario["rpo"], scenario["objective"]
        # A scenario whose probe never failed (llm-slow: answers slow down, none fails) has no RTO.
        seen = "no outage" if rto["rto_s"] is None else f"RTO {rto['rto_s']:.2f}s"
        print(f"{scenario['scenario']}: {seen}, {rpo['acknowledged']}/{rpo['attempted']} acknowledged")
        assert scenario["passed"], scenario["scenario"]
        if rto["rto_s"] is not None and objective.get("rto_s") is not None:
            assert rto["rto_s"] <= objective["rto_s"]
        assert rpo["acknowledged"] > 0
        assert rpo["lost"] == []


def _variant(tmp_path: Path) -> Path:
    """The chatbot stack copied, with two mistakes a team makes: the API runs as root with the
    default capabilities (root without them could not even open the 0700 /data of uid 1000), and
    the edge lost its HSTS header."""
    folder = tmp_path / "chatbot-broken"
    shutil.copytree(CHATBOT, folder)
    stack = folder / "stack.toml"
    text = stack.read_text()
    api_caps = 'cap_drop = ["ALL"]\n[services.api.env]'
    assert api_caps in text
    stack.write_text(text.replace(api_caps, 'user = "0:0"\n[services.api.env]'))
    conf = folder / "nginx" / "chatbot.conf"
    lines = conf.read_text().splitlines(keepends=True)
    conf.write_text("".join(line for line in lines if "Strict-Transport-Security" not in line))
    assert 'user = "0:0"' in stack.read_text()
    assert "Strict-Transport-Security" not in conf.read_text()
    return stack


def test_the_gate_fails_a_broken_variant_and_names_why(tmp_path: Path) -> None:
    code, out, results = _gate(_variant(tmp_path), tmp_path, "--area", "compliance")
    assert code == 1, out[-4000:]
    assert results["verdict"] == "fail"
    breaches = {b["check"]: b["message"] for b in results["breaches"]}
    assert not [m for m in breaches.values() if "failed to boot" in m], "the variant must boot to be judged"
    assert "containers-non-root" in breaches, breaches
    assert "api" in breaches["containers-non-root"]
    assert "containers-capabilities" in breaches, breaches
    assert "headers-hsts" in breaches, breaches
    assert "BREACH [high] compliance containers-non-root" in out


def test_a_database_on_tmpfs_fails_the_rpo_objective(tmp_path: Path) -> None:
    """The SQLite file moved to /tmp (a tmpfs, gone when the container restarts): api-kill's
    ledger finds the acknowledged messages lost and the chaos gate fails on the RPO."""
    folder = tmp_path / "chatbot-tmpfs"
    shutil.copytree(CHATBOT, folder)
    stack = folder / "stack.toml"
    text = stack.read_text()
    assert 'DATABASE_PATH = "/data/chatbot.db"' in text
    stack.write_text(text.replace('DATABASE_PATH = "/data/chatbot.db"', 'DATABASE_PATH = "/tmp/chatbot.db"'))
    code, out, results = _gate(stack, tmp_path, "--area", "chaos")
    assert code == 1, out[-4000:]
    breaches = {b["check"]: b["message"] for b in results["breaches"]}
    assert "api-kill" in breaches, breaches
    assert "RPO" in breaches["api-kill"] or "rpo" in breaches["api-kill"], breaches["api-kill"]
