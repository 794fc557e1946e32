"""`stackcheck sign-off`: a reviewer's verdict stored on the drill run's history entry (once),
and the run's drill.html/.md written again with it; later records show it in their history."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

import pytest

from stackcheck import cli
from stackcheck.load.errors import HistoryError
from stackcheck.load.history import History, SignOff
from stackcheck.report.drill import render_drill
from tests.report.conftest import MakeRun
from tests.report.test_drill import breached

STACK = "stacks/promptcard/stack.toml"  # the samples' stack


@pytest.fixture
def history(tmp_path: Path) -> History:
    return History(tmp_path / "reports" / "history.sqlite")


def drill(
    make_run: MakeRun, history: History, run_id: str, passed: bool = True, operator: str | None = "alice"
) -> Path:
    changes = {} if passed else {"chaos": breached("failing", "redis-kill")}
    scenario = "backend-kill" if passed else "redis-kill"
    run_dir = make_run("clean" if passed else "failing", run_id=run_id, **changes)
    render_drill(run_dir, scenario, operator, history, drill="q1")
    return run_dir


def sign(reviewer: str = "carol", accepted: bool = True, **kw: str) -> SignOff:
    return SignOff(reviewer, accepted, "2026-12-02 05:30:00.000 UTC", **kw)


def test_a_sign_off_updates_the_stored_run_not_a_new_one(make_run: MakeRun, history: History) -> None:
    drill(make_run, history, "r1-q1")
    record = history.sign_off("r1-q1", sign(note="RTO well inside Tier 1"))
    assert (record.reviewer, record.accepted, record.signed_off_at, record.note) == (
        "carol", True, "2026-12-02 05:30:00.000 UTC", "RTO well inside Tier 1",
    )  # fmt: skip
    (stored,) = history.drills("q1", STACK)  # re-read: still one run, now signed
    assert stored == record
    assert (stored.operator, stored.passed, stored.rto_s) == ("alice", True, 0.25)  # the rest untouched


def test_an_unknown_run_is_one_clear_error_naming_recent_runs(make_run: MakeRun, history: History) -> None:
    drill(make_run, history, "r1-q1")
    with pytest.raises(HistoryError) as caught:
        history.sign_off("r9-q1", sign())
    assert caught.value.problem.startswith("no drill run 'r9-q1' in the history at ")
    assert "pass the run id `stackcheck drill` printed" in caught.value.fix
    assert "e.g. r1-q1" in caught.value.fix


def test_a_second_sign_off_is_refused_and_keeps_the_first(make_run: MakeRun, history: History) -> None:
    drill(make_run, history, "r1-q1")
    history.sign_off("r1-q1", sign(accepted=False, note="no ledger"))
    with pytest.raises(HistoryError) as caught:
        history.sign_off("r1-q1", sign("dave"))
    assert str(caught.value) == (
        "drill run r1-q1 was already signed off: rejected by carol at 2026-12-02 05:30:00.000 UTC\n"
        "  fix: a sign-off is final; run the drill again for a new record to sign off"
    )
    stored = history.drill_run("r1-q1")
    assert stored is not None
    assert (stored.reviewer, stored.accepted, stored.note) == ("carol", False, "no ledger")


def test_a_breached_drill_is_accepted_only_with_a_reason(make_run: MakeRun, history: History) -> None:
    drill(make_run, history, "r1-q1", passed=False)
    with pytest.raises(HistoryError) as caught:
        history.sign_off("r1-q1", sign())
    assert caught.value.problem == (
        "drill run r1-q1 breached its objectives (RTO 7.250s > objective 5s): a plain accept is refused"
    )
    assert caught.value.fix == "--reject it, or accept the breach knowingly with --accept-breach 'REASON'"
    assert history.drill_run("r1-q1").reviewer is None  # type: ignore[union-attr]  # nothing stored
    record = history.sign_off("r1-q1", sign(breach_accepted="Tier 2 only this quarter"))
    assert (record.accepted, record.breach_accepted) == (True, "Tier 2 only this quarter")


def test_a_breach_reason_on_a_drill_that_met_its_objectives_is_refused(make_run: MakeRun, history: History) -> None:
    drill(make_run, history, "r1-q1")
    with pytest.raises(HistoryError, match="met its objectives: there is no breach to accept"):
        history.sign_off("r1-q1", sign(breach_accepted="why not"))


def test_the_operator_is_filled_in_only_where_it_was_left_blank(make_run: MakeRun, history: History) -> None:
    drill(make_run, history, "r1-q1", operator=None)
    drill(make_run, history, "r2-q1")
    assert history.sign_off("r1-q1", sign(operator="bob")).operator == "bob"
    with pytest.raises(HistoryError, match="was run by operator alice, not bob"):
        history.sign_off("r2-q1", sign(operator="bob"))


def test_a_history_written_before_sign_off_columns_gets_them(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as old:  # the drill_runs table as the first drill histories had it
        old.execute(
            "CREATE TABLE drill_runs (run_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, drill TEXT NOT NULL,"
            " scenario TEXT NOT NULL, stack TEXT NOT NULL, git_rev TEXT NOT NULL, rto_s DOUBLE PRECISION,"
            " rto_objective_s DOUBLE PRECISION, rpo_s DOUBLE PRECISION, rpo_objective_s DOUBLE PRECISION,"
            " acknowledged INTEGER, lost INTEGER, passed INTEGER NOT NULL, breaches TEXT NOT NULL, operator TEXT,"
            " reviewer TEXT, accepted INTEGER)"
        )
        old.execute(
            "INSERT INTO drill_runs VALUES ('old-q1', '2026-09-01', 'q1', 'primary-kill', 's.toml', 'abc', 9.8, 30,"
            " 0, 0, 500, 0, 1, '[]', 'alice', NULL, NULL)"
        )
    old.close()
    history = History(path)
    assert history.sign_off("old-q1", sign()).signed_off_at == "2026-12-02 05:30:00.000 UTC"


def test_the_cli_signs_off_and_writes_the_record_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_run: MakeRun, history: History,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    earlier = drill(make_run, history, "r1-q1")  # the samples: this one ran 43 s before the breached one
    later = drill(make_run, history, "r2-q1", passed=False)
    monkeypatch.chdir(tmp_path)
    today = {datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")}
    assert cli.main(["sign-off", "r1-q1", "--reviewer", "dave", "--accept", "--note", "RTO | well inside"]) == 0
    today.add(datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"))  # (a run across midnight)
    out = capsys.readouterr().out
    day = out.split("signed off by dave at ", 1)[1][:10]
    assert day in today, out  # the sign-off is stamped with the clock of its moment, in UTC
    assert f"drill run r1-q1: signed off by dave at {day} " in out
    assert f"record: {earlier / 'drill.html'}" in out
    html, md = (earlier / "drill.html").read_text(), (earlier / "drill.md").read_text()
    assert "<td>reviewer</td><td>dave</td>" in html
    assert "<td>outcome accepted</td><td>yes</td>" in html
    assert "<td>notes</td><td>RTO | well inside</td>" in html
    assert "- Reviewer: dave" in md
    assert f"- Date: {day} " in md
    assert "- Outcome accepted: yes" in md
    assert "- Notes: RTO \\| well inside" in md
    assert "none: this is the first run of this drill in the history" in md  # later runs are not earlier drills
    # The breached run: a plain accept refused, a rejection taken; its record lists the earlier sign-off.
    assert cli.main(["sign-off", "r2-q1", "--reviewer", "carol", "--accept"]) == 2
    err = capsys.readouterr().err
    assert "breached its objectives (RTO 7.250s > objective 5s): a plain accept is refused" in err
    assert "fix: --reject it, or accept the breach knowingly with --accept-breach 'REASON'" in err
    assert cli.main(["sign-off", "r2-q1", "--reviewer", "carol", "--reject"]) == 0
    md2 = (later / "drill.md").read_text()
    assert "1 earlier run(s) of drill q1 on this stack in the history" in md2
    assert f"| PASS | alice | dave | {day} " in md2
    assert "| yes | RTO \\| well inside |" in md2
    assert "- Outcome accepted: no" in md2
    assert "- Notes: -" in md2
    # Once only, and the unknown run: each one error naming the fix, exit 2.
    assert cli.main(["sign-off", "r2-q1", "--reviewer", "erin", "--accept-breach", "changed my mind"]) == 2
    assert "already signed off: rejected by carol" in capsys.readouterr().err
    assert cli.main(["sign-off", "nope", "--reviewer", "erin", "--reject"]) == 2
    assert "no drill run 'nope' in the history" in capsys.readouterr().err


def test_the_cli_accepts_a_breach_with_its_reason_and_needs_a_verdict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_run: MakeRun, history: History,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run_dir = drill(make_run, history, "r1-q1", passed=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):  # argparse: one of --accept, --reject, --accept-breach is required
        cli.main(["sign-off", "r1-q1", "--reviewer", "carol"])
    assert "one of the arguments --accept --reject --accept-breach is required" in capsys.readouterr().err
    assert cli.main(["sign-off", "r1-q1", "--reviewer", "carol", "--accept-breach", "known: Tier 2 link"]) == 0
    assert (
        "<td>outcome accepted</td><td>yes, breach accepted: known: Tier 2 link</td>"
        in (run_dir / "drill.html").read_text()
    )


def test_without_the_record_folder_only_the_history_is_signed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_run: MakeRun, history: History,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    drill(make_run, history, "r1-q1")
    monkeypatch.chdir(tmp_path)
    argv = ["sign-off", "r1-q1", "--reviewer", "carol", "--accept", "--reports-dir", str(tmp_path / "elsewhere")]
    assert cli.main(argv) == 0
    assert "the sign-off is in the history only" in capsys.readouterr().out
    assert history.drill_run("r1-q1").reviewer == "carol"  # type: ignore[union-attr]
