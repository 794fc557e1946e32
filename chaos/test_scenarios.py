"""The chaos suite: one test per [scenarios.NAME] of the stack file (the test id is the
scenario's name), run by the generic experiment or the scenario's hook, judged against
[objectives.chaos.NAME]. A stack file without scenarios gets one NOT EVALUATED check."""

from __future__ import annotations

import pytest
from stackcheck.fixtures.chaos import ExperimentFactory, assert_passed

from stackcheck.chaos.scenarios import run_scenario
from stackcheck.chaos.spec import Scenario

pytestmark = pytest.mark.chaos


def test_scenario(
    chaos_scenario: Scenario | None, request: pytest.FixtureRequest, experiment: ExperimentFactory
) -> None:
    scenario = chaos_scenario
    if scenario is None:
        pytest.skip("the stack file declares no [scenarios]")
    stack = request.getfixturevalue("fresh_stack" if scenario.fresh else "stack")
    assert_passed(run_scenario(stack, experiment(scenario.name, stack), scenario))
