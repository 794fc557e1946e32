"""pytest-xdist: one session stack for all workers, measurements alone, one merged results.json.

The inner runs (pytester, ``-n 2``) use a fake at the Docker boundary only: the plugin's
``boot``/``attach``/``remove_run`` write what they were asked to do into a log, so one boot,
one removal and every worker's attach can be counted; the sharing code (state file, locks,
refcount, merge) is the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FAKE_BOUNDARY = """
import os, time, uuid
from pathlib import Path
import pytest
from stackcheck.fixtures import sharing, stack as stack_fixtures

LOG = Path(__file__).parent / "events.log"


def note(*words):
    with LOG.open("a") as log:
        log.write(" ".join([os.environ.get("PYTEST_XDIST_WORKER", "serial"), *map(str, words)]) + "\\n")


class FakeStack:
    _toxiproxy = None

    def __init__(self, run_id):
        self.run_id = run_id

    def handles(self):
        return []

    def stop(self):
        note("remove", self.run_id)


def boot(config):
    time.sleep(0.5)  # long enough for the other worker to wait at the lock
    stack = FakeStack(f"fake-{uuid.uuid4().hex[:6]}")
    note("boot", stack.run_id)
    return stack


def attach(config, state):
    note("attach", state.run_id)
    return FakeStack(state.run_id)


stack_fixtures.boot, stack_fixtures.attach = boot, attach
sharing.remove_run = lambda run_id: note("remove", run_id)


@pytest.fixture(autouse=True)
def interval(request):
    started = time.time()
    yield
    exclusive = request.node.get_closest_marker("exclusive") is not None
    note("ran", request.node.name, started, time.time(), "exclusive" if exclusive else "shared")
"""


def events(pytester: pytest.Pytester) -> list[list[str]]:
    return [line.split() for line in (pytester.path / "events.log").read_text().splitlines()]


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)  # this run itself may be a worker: the inner run is not
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider\n")
    pytester.makeconftest(FAKE_BOUNDARY)
    return pytester


def test_workers_share_one_stack_booted_once_and_removed_once_by_the_last(run: pytest.Pytester) -> None:
    run.makepyfile(
        test_reads="""
        import time
        import pytest

        @pytest.mark.parametrize("n", range(8))
        def test_reads_the_stack(stack, n):
            time.sleep(0.2)
            print(stack.run_id)

        @pytest.mark.xdist_group("late")
        def test_late_reader(stack):
            time.sleep(3)  # the other worker is long done with its tests by then
        """
    )
    result = run.runpytest_subprocess("-n", "2", "--dist", "loadgroup")
    result.assert_outcomes(passed=9)
    log = events(run)
    boots = [e for e in log if e[1] == "boot"]
    attaches = [e for e in log if e[1] == "attach"]
    removes = [e for e in log if e[1] == "remove"]
    assert len(boots) == 1, log
    run_id = boots[0][2]
    assert [e[2] for e in attaches] == [run_id], f"the other worker attaches once: {log}"
    assert attaches[0][0] != boots[0][0]
    assert [e[2] for e in removes] == [run_id], f"removed once: {log}"
    ran = [e for e in log if e[1] == "ran"]
    assert {e[0] for e in ran} == {"gw0", "gw1"}, "both workers ran tests"
    assert log.index(removes[0]) > max(log.index(e) for e in ran), "removed after the last test that read it"


def test_a_worker_that_never_reads_the_stack_still_counts_for_its_removal(run: pytest.Pytester) -> None:
    run.makepyfile(
        test_one_reader="""
        import time
        def test_reader(stack):
            time.sleep(1)
        def test_not_a_reader():
            time.sleep(1)
        """
    )
    run.runpytest_subprocess("-n", "2").assert_outcomes(passed=2)
    log = events(run)
    assert [e[1] for e in log if e[1] in ("boot", "attach", "remove")] == ["boot", "remove"], log


def test_serial_run_boots_and_removes_its_own_stack_as_before(run: pytest.Pytester) -> None:
    run.makepyfile("def test_a(stack): pass\ndef test_b(stack): pass\n")
    run.runpytest_subprocess().assert_outcomes(passed=2)
    assert [e[:2] for e in events(run) if e[1] in ("boot", "attach", "remove")] == [
        ["serial", "boot"],
        ["serial", "remove"],
    ]


def test_an_exclusive_test_never_overlaps_another_and_shared_ones_do(run: pytest.Pytester) -> None:
    run.makepyfile(
        test_lock="""
        import time
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_shared(n):
            time.sleep(0.4)

        @pytest.mark.exclusive("measures alone")
        @pytest.mark.parametrize("n", range(2))
        def test_measurement(n):
            time.sleep(0.4)
        """
    )
    run.runpytest_subprocess("-n", "2", "-p", "no:randomly").assert_outcomes(passed=8)
    ran = [(e[2], float(e[3]), float(e[4]), e[5]) for e in events(run) if e[1] == "ran"]
    exclusive = [r for r in ran if r[3] == "exclusive"]
    assert len(exclusive) == 2
    for name, start, end, _ in exclusive:
        overlapping = [o for o in ran if o[0] != name and o[1] < end and o[2] > start]
        assert not overlapping, f"{name} ran {start:.2f}-{end:.2f} alongside {overlapping}"
    shared = [r for r in ran if r[3] == "shared"]
    assert any(a[1] < b[2] and a[2] > b[1] for a in shared for b in shared if a is not b), (
        f"shared tests run in parallel: {shared}"
    )


PRODUCT_CHECKS = """
import time
import pytest
from stackcheck.compliance.model import Outcome, Result
from stackcheck.fixtures import compliance


@pytest.mark.parametrize("n", range(4))
def test_passes(n):
    time.sleep(0.2)


def test_fails():
    raise AssertionError("the objective was breached")


def test_not_evaluated():
    pytest.skip("nothing to judge")


def test_finds_a_rule_failure(request):
    rule = compliance.policy(request.config).rules["headers-hsts"]
    request.config.stash.setdefault(compliance.RESULTS, []).append(Result(rule, Outcome.FAIL, "/", "no HSTS header"))
    time.sleep(0.2)
"""


def test_results_of_all_workers_merge_into_one_results_json_equal_to_a_serial_one(run: pytest.Pytester) -> None:
    # Folders named like the product suites: their tests are product checks (chaos, compliance).
    for folder in ("chaos", "suites"):
        (run.path / folder).mkdir()
        (run.path / folder / f"test_{folder}_checks.py").write_text(PRODUCT_CHECKS)
    found = {}
    for name, extra in (("serial", []), ("parallel", ["-n", "2"])):
        result = run.runpytest_subprocess("--report-dir", f"reports/{name}", "chaos", "suites", *extra)
        result.assert_outcomes(passed=10, failed=2, skipped=2)
        found[name] = json.loads((run.path / "reports" / name / "results.json").read_text())
    serial, parallel = found["serial"], found["parallel"]
    assert len(serial["checks"]) == 14
    for key in ("checks", "breaches", "warnings", "compliance", "tests", "verdict", "disabled"):
        assert parallel[key] == serial[key], f"{key} differs:\n{parallel[key]}\n{serial[key]}"
    assert {p["name"] for p in parallel["phases"]} == {p["name"] for p in serial["phases"]}
    assert (run.path / "reports" / "parallel" / "index.html").exists(), "the controller renders the report"
    assert sorted(p.name for p in (run.path / "reports").iterdir()) == ["parallel", "serial"]


def test_the_shared_run_folder_is_removed_at_the_end(run: pytest.Pytester, tmp_path: Path) -> None:
    run.makepyfile("def test_a(stack): pass\ndef test_b(stack): pass\n")
    result = run.runpytest_subprocess("-n", "2", "--testrunuid", "stackcheck-plugin-test")
    result.assert_outcomes(passed=2)
    from stackcheck.sharing import run_directory

    assert not run_directory("stackcheck-plugin-test").exists()
