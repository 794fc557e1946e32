"""The product's load gate: a profile (default smoke) against the session stack's objectives.

    .venv/bin/pytest load -m load [--profile steady] [--workers 2] [--history-url postgresql://...]

Fails with the table of every breached objective, on an early abort (an objective breached
for a sustained window), and on a regression against the history's baseline. A stack file
without a ``[load]`` mix is not evaluated (skipped before anything boots).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from stackcheck.fixtures.stack import stack_file

from stackcheck import stackfile
from stackcheck.load import LoadReport, Verdict, breach_table
from stackcheck.load.runner import NO_MIX
from stackcheck.stack import Stack

pytestmark = [pytest.mark.load, pytest.mark.exclusive("measures latency percentiles")]


def test_load_gate(request: pytest.FixtureRequest, load_run: Callable[..., LoadReport]) -> None:
    if stackfile.load(stack_file(request.config)).load_mix is None:
        pytest.skip(NO_MIX)
    stack: Stack = request.getfixturevalue("stack")
    report = load_run(stack)
    total = report.total
    summary = (
        f"{report.profile['name']}: {total.count} requests, {total.rps:.1f} rps, "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in total.percentiles_ms.items())
        + f", errors {total.errors_by_kind or 0}; results in reports/{report.run_id}/load/"
    )
    problems = []
    if report.aborted:
        problems.append(report.aborted)
    if report.breaches:
        problems.append(breach_table(report.breaches))
    if report.regression is not None and report.regression.verdict is Verdict.REGRESSED:
        problems.append(f"{report.regression.line()}\naccept it with --update-baseline if intended")
    if problems:
        pytest.fail(f"{summary}\n" + "\n".join(problems), pytrace=False)
