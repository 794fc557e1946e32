"""The pytest layer over the library, run in a separate pytest process with pytester."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from stackcheck.fixtures.plugin import MARKERS

REPO_ROOT = Path(__file__).resolve().parents[2]

REQUIRED_MARKERS = {"compliance", "load", "chaos", "drill", "gpu", "slow"}


@pytest.fixture
def run(pytester: pytest.Pytester) -> pytest.Pytester:
    # Nothing but the installed package: the plugin comes from its pytest11 entry point.
    pytester.makeini("[pytest]\naddopts = --strict-markers\n")
    return pytester


def test_markers_are_registered_and_strict(run: pytest.Pytester) -> None:
    run.makepyfile(
        """
        import pytest
        @pytest.mark.compliance
        @pytest.mark.chaos
        def test_known(): pass
        @pytest.mark.complience
        def test_typo(): pass
        """
    )
    result = run.runpytest_subprocess()
    result.stdout.fnmatch_lines(["*'complience' not found in `markers` configuration option*"])
    assert result.ret != 0
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in pyproject["addopts"]
    assert set(MARKERS) >= REQUIRED_MARKERS


def test_external_target_boots_nothing_and_container_checks_skip(run: pytest.Pytester) -> None:
    tests = run.makepyfile(
        """
        def test_http_level(target):
            assert target.base_url == "https://staging.example.test"
            assert target.booted is False

        def test_container_level(stack):
            raise AssertionError("must not run against an external target")
        """
    )
    result = run.runpytest_subprocess("--target", "https://staging.example.test", "-rs", tests)
    result.stdout.fnmatch_lines(
        [
            "stackcheck target: https://staging.example.test (external: container-level checks skip)",
            "*container-level check: --target https://staging.example.test is an external deployment*",
        ]
    )
    result.assert_outcomes(passed=1, skipped=1)


def test_report_header_names_the_stack(run: pytest.Pytester) -> None:
    run.makepyfile("def test_nothing(): pass")
    result = run.runpytest_subprocess()
    result.stdout.fnmatch_lines(["stackcheck stack: promptcard from *stack.toml: 7 services, 5 links"])


def test_a_bad_stack_file_is_one_clear_error(run: pytest.Pytester) -> None:
    run.makefile(".toml", bad="[stack]\nname = 'x'\n")
    tests = run.makepyfile("def test_needs_stack(stack): pass")
    result = run.runpytest_subprocess("--stack", "bad.toml", tests)
    result.stdout.fnmatch_lines(["*unreadable: StackFileError*", "*StackFileError*defines no service*"])
    result.assert_outcomes(errors=1)


def test_a_malformed_target_url_is_rejected(run: pytest.Pytester) -> None:
    tests = run.makepyfile("def test_http_level(target): pass")
    result = run.runpytest_subprocess("--target", "staging.example.test", tests)
    result.stdout.fnmatch_lines(["*--target 'staging.example.test' is not an http(s) URL*"])
    result.assert_outcomes(errors=1)
