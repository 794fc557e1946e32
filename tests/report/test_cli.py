"""`stackcheck report`: re-render a run; bad results.json is one clear error, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackcheck import cli
from stackcheck.results import SCHEMA, ResultsError, load_results
from tests.report.conftest import MakeRun

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"schema": "stackcheck.results/1", "run_id": ', "is not readable JSON"),
        ("\xff\xfe", "is not readable JSON"),
        ("[1, 2]", "does not hold a results object"),
        ('{"schema": "stackcheck.results/0", "run_id": "x"}', "has schema 'stackcheck.results/0'"),
        ("{}", "has schema None"),
    ],
    ids=["truncated", "not-utf8", "array", "older-schema", "no-schema"],
)
def test_unusable_results_are_one_clear_error(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "results.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ResultsError, match=problem) as err:
        load_results(path)
    assert err.value.fix


def test_a_missing_key_is_named(make_run: MakeRun) -> None:
    run_dir = make_run("clean")
    data = json.loads((run_dir / "results.json").read_text())
    del data["chaos"]
    (run_dir / "results.json").write_text(json.dumps(data))
    with pytest.raises(ResultsError, match="'chaos' is missing or not a list"):
        load_results(run_dir / "results.json")


def test_report_renders_a_run_by_id_and_the_latest(make_run: MakeRun, capsys: pytest.CaptureFixture[str]) -> None:
    clean = make_run("clean")
    failing = make_run("failing")
    os.utime(clean / "results.json", (time.time() - 60, time.time() - 60))
    reports = str(clean.parent)
    assert cli.main(["report", clean.name, "--reports-dir", reports]) == 0
    assert capsys.readouterr().out.splitlines() == [str(clean / "index.html"), str(clean / "summary.md")]
    assert cli.main(["report", "--latest", "--reports-dir", reports]) == 0
    assert capsys.readouterr().out.splitlines() == [str(failing / "index.html"), str(failing / "summary.md")]
    assert 'class="verdict fail"' in (failing / "index.html").read_text()


def test_report_on_an_older_schema_exits_2(make_run: MakeRun, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run("clean", schema="stackcheck.results/0")
    assert cli.main(["report", run_dir.name, "--reports-dir", str(run_dir.parent)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"stackcheck: error: {run_dir / 'results.json'} has schema 'stackcheck.results/0'; ")
    assert f"this stackcheck reads '{SCHEMA}'" in err
    assert "Traceback" not in err


def test_report_on_nothing_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--latest", "--reports-dir", str(tmp_path)]) == 2
    assert "no runs under" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "entry"])
def test_corrupted_results_through_the_real_command(make_run: MakeRun, damage: str) -> None:
    """The installed entry point, in its own process: exit 2, the message, no traceback."""
    run_dir = make_run("failing", checks=[{"check": "x"}])  # no area, no status
    if damage == "truncate":
        results = run_dir / "results.json"
        results.write_text(results.read_text()[:200])
    proc = subprocess.run(
        [sys.executable, "-m", "stackcheck.cli", "report", run_dir.name, "--reports-dir", str(run_dir.parent)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    expected = "is not readable JSON" if damage == "truncate" else "an entry is malformed (KeyError"
    assert proc.stderr.startswith("stackcheck: error: ")
    assert expected in proc.stderr
    assert "fix: " in proc.stderr
    assert "Traceback" not in proc.stderr
