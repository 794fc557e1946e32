"""prometheus-rules and prometheus-targets against a fake container: its `docker exec` answers
with Prometheus API bodies and promtool 2.42's own output (recorded from Debian's promtool)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import pytest

from stackcheck.compliance import prometheus, runner
from stackcheck.compliance.model import Outcome, Policy, Result
from stackcheck.compliance.runner import CheckContext
from tests.unit.compliance_fakes import FakeStack, fake_handle

POLICY = Policy.load()
CONFIG = "/etc/prometheus/prometheus.yml"
RULES = "/etc/prometheus/rules/chatbot.yml"
CONFIG_OK = f"""Checking {CONFIG}
  SUCCESS: 1 rule files found
 SUCCESS: {CONFIG} is valid prometheus config file syntax

Checking {RULES}
  SUCCESS: 2 rules found

"""
RULES_OK = f"Checking {RULES}\n  SUCCESS: 2 rules found\n\n"
PARSE_ERROR = (
    f'  FAILED:\n{RULES}: 5:15: group "alerts", rule 1, "Broken": could not parse expression: 1:16: '
    "parse error: unclosed left parenthesis\n"
)


def rule(name: str, health: str = "ok", error: str = "") -> dict[str, Any]:
    out = {"name": name, "query": "up", "health": health, "type": "recording"}
    return out | ({"lastError": error} if error else {})


def groups(*rules: dict[str, Any], file: str = RULES) -> dict[str, Any]:
    return {"groups": [{"name": "alerts", "file": file, "rules": list(rules), "interval": 1}]}


def targets(*health: tuple[str, str]) -> dict[str, Any]:
    return {
        "activeTargets": [
            {"scrapePool": "api", "scrapeUrl": "http://api:8000/metrics", "health": h, "lastError": e}
            for h, e in health
        ],
        "droppedTargets": [],
    }


class FakeContainer:
    """`docker exec` of one Prometheus container: wget answers from ``api`` (path -> data, or a
    callable for answers that change), promtool from ``promtool`` (argv tail -> code, out, err)."""

    name = "chatbot-prometheus-1"

    def __init__(self, api: dict[str, Any], promtool: dict[tuple[str, ...], tuple[int, str, str]]) -> None:
        self.api, self.promtool_runs, self.status = api, promtool, "running"
        self.calls: list[list[str]] = []

    def reload(self) -> None:
        pass

    def exec_run(self, argv: list[str], demux: bool = False) -> tuple[int, tuple[bytes | None, bytes | None]]:
        assert demux
        self.calls.append(argv)
        if argv[0] == "wget":
            path = argv[-1].removeprefix("http://127.0.0.1:9090")
            if path not in self.api:
                return 1, (None, b"wget: server returned error: HTTP/1.1 404 Not Found\n")
            data = self.api[path]
            body = {"status": "success", "data": data() if callable(data) else data}
            return 0, (json.dumps(body).encode(), None)
        code, out, err = self.promtool_runs[tuple(argv[1:])]
        return code, (out.encode(), err.encode() or None)


def world(
    rules: Any = None, disk: tuple[int, str, str] = (0, RULES_OK, ""), config: tuple[int, str, str] = (0, CONFIG_OK, "")
) -> FakeContainer:
    api = {
        "/api/v1/status/flags": {"config.file": CONFIG},
        "/api/v1/rules": rules if rules is not None else groups(rule("a:one"), rule("a:two")),
        "/api/v1/targets?state=active": targets(("up", "")),
    }
    promtool = {("check", "config", "--lint-fatal", CONFIG): config, ("check", "rules", "--lint-fatal", RULES): disk}
    return FakeContainer(api, promtool)


def judge(rule_id: str, container: FakeContainer, settle_s: float | None = None) -> list[Result]:
    handles = [fake_handle("prometheus", image="prometheus", docker=container), fake_handle("api", "api")]
    stack = FakeStack(handles, spec=SimpleNamespace(name="mini", entry_service=None, services={}, links={}))
    rule = POLICY.rules[rule_id]
    if settle_s is not None:
        rule = dataclasses.replace(rule, params={**rule.params, "settle_s": settle_s})
    return runner.evaluate(rule, CheckContext(None, stack, POLICY))  # type: ignore[arg-type]


def test_the_rule_files_promtool_checked_are_the_configs_rule_files() -> None:
    done = prometheus.Promtool(0, CONFIG_OK, "")
    assert prometheus.checked_rule_files(done, CONFIG) == [RULES]
    assert prometheus.rules_on_disk(prometheus.Promtool(0, RULES_OK, "")) == 2
    assert prometheus.rules_on_disk(prometheus.Promtool(1, f"Checking {RULES}\n\n", PARSE_ERROR)) is None


def test_every_rule_loaded_and_healthy_passes() -> None:
    [result] = judge("prometheus-rules", world())
    assert result.outcome is Outcome.PASS, result.line()
    assert result.subject == f"prometheus:{RULES}"
    assert result.evidence == "2 rules in 1 groups (alerts) loaded, every one health ok"


def test_a_rule_that_fails_to_evaluate_fails_with_its_error() -> None:
    error = "invalid regular expression in label_replace(): ("
    [result] = judge("prometheus-rules", world(groups(rule("a:one"), rule("a:two", "err", error))))
    assert result.outcome is Outcome.FAIL
    assert result.evidence == f"group 'alerts' rule 'a:two' health err: {error}"


def test_a_rule_file_broken_on_disk_fails_though_prometheus_still_runs_the_old_one() -> None:
    broken = (1, f"Checking {RULES}\n\n", PARSE_ERROR)
    [result] = judge("prometheus-rules", world(disk=broken, config=(1, CONFIG_OK.split("  SUCCESS: 2")[0], "")))
    assert result.outcome is Outcome.FAIL
    assert result.evidence.startswith("promtool check rules fails on the file on disk: FAILED: ")
    assert "could not parse expression: 1:16: parse error: unclosed left parenthesis" in result.evidence


def test_a_rule_file_changed_since_the_last_load_fails() -> None:
    [result] = judge("prometheus-rules", world(groups(rule("a:one"))))
    assert result.outcome is Outcome.FAIL
    assert result.evidence == "2 rules on disk, Prometheus runs 1 (changed since Prometheus last loaded it?)"
    [result] = judge("prometheus-rules", world({"groups": []}))
    assert result.evidence == "2 rules on disk, not loaded (changed since Prometheus last loaded it?)"


def test_a_config_that_does_not_pass_promtool_fails() -> None:
    bad = (1, f"Checking {CONFIG}\n\n", f'  FAILED: parsing YAML file {CONFIG}: not a valid duration string: "1x"\n')
    [result] = judge("prometheus-rules", world(config=bad))
    assert result.outcome is Outcome.FAIL
    assert result.subject == f"prometheus:{CONFIG}"
    assert result.evidence == (
        f"promtool check config fails on {CONFIG}: FAILED: parsing YAML file {CONFIG}: "
        'not a valid duration string: "1x"'
    )


def test_rules_not_yet_evaluated_are_waited_for() -> None:
    answers = iter([groups(rule("a:one", "unknown"), rule("a:two", "unknown"))])

    def rules_now() -> Any:
        return next(answers, groups(rule("a:one"), rule("a:two")))

    container = world()
    container.api["/api/v1/rules"] = rules_now
    [result] = judge("prometheus-rules", container)
    assert result.outcome is Outcome.PASS, result.line()
    assert sum(c[-1].endswith("/api/v1/rules") for c in container.calls) == 2


def test_targets_up_pass_and_a_target_down_fails_with_the_scrape_error() -> None:
    [up] = judge("prometheus-targets", world())
    assert (up.outcome, up.subject, up.evidence) == (
        Outcome.PASS,
        "prometheus:api http://api:8000/metrics",
        "up (scrape pool api)",
    )
    container = world()
    error = 'Get "http://api:8000/metrics": context deadline exceeded'
    container.api["/api/v1/targets?state=active"] = targets(("up", ""), ("down", error))
    results = judge("prometheus-targets", container, settle_s=0.5)
    assert [r.outcome for r in results] == [Outcome.PASS, Outcome.FAIL]
    assert results[1].evidence == f"health down: {error}"


@pytest.mark.parametrize(
    ("rule_id", "empty", "missing"),
    [
        ("prometheus-rules", ("/api/v1/rules", {"groups": []}), "is given no rule file (rule_files in "),
        ("prometheus-targets", ("/api/v1/targets?state=active", targets()), "scrapes no target (scrape_configs)"),
    ],
)
def test_nothing_to_judge_is_not_evaluated(rule_id: str, empty: tuple[str, Any], missing: str) -> None:
    container = world(config=(0, f"Checking {CONFIG}\n  SUCCESS: 0 rule files found\n", ""))
    container.api[empty[0]] = empty[1]
    [result] = judge(rule_id, container, settle_s=0.5)
    assert result.outcome is Outcome.NOT_EVALUATED
    assert f"prometheus {missing}" in result.evidence


def test_an_api_the_check_cannot_read_is_an_error_that_says_what_to_fix() -> None:
    container = world()
    del container.api["/api/v1/status/flags"]
    [result] = judge("prometheus-rules", container)
    assert result.outcome is Outcome.ERROR
    assert "wget http://127.0.0.1:9090/api/v1/status/flags in the container failed (exit 1)" in result.evidence
    assert "check the rule's `port`" in result.evidence


def test_a_stopped_prometheus_is_an_error_naming_its_log() -> None:
    container = world()
    container.status = "exited"
    [result] = judge("prometheus-targets", container)
    assert result.outcome is Outcome.ERROR
    assert result.evidence.startswith("prometheus is exited, not running (fix: see its log: docker logs ")


def test_a_stack_without_prometheus_has_the_rules_disabled_as_not_applicable() -> None:
    spec: Any = type(
        "Spec", (), {"policy": None, "disabled": {}, "services": {"web": fake_handle("web", "nginx").service}}
    )
    disabled = runner.scoped_policy(spec, None).disabled
    for rule_id in ("prometheus-rules", "prometheus-targets"):
        assert disabled[rule_id] == (
            "not applicable: no service runs an image in ['prometheus'] (the policy's only_with_images)"
        )


def test_targets_not_yet_discovered_after_a_start_are_waited_for() -> None:
    answers = iter([targets(), targets(("unknown", ""))])
    container = world()
    container.api["/api/v1/targets?state=active"] = lambda: next(answers, targets(("up", "")))
    [result] = judge("prometheus-targets", container)
    assert result.outcome is Outcome.PASS, result.line()
    assert sum(c[-1].endswith("/api/v1/targets?state=active") for c in container.calls) == 3


def test_a_target_down_for_a_moment_is_read_again_before_it_is_judged() -> None:
    """One failed scrape while a service restarted is a blip, not a target down."""
    answers = iter([targets(("down", "connection refused"))])
    container = world()
    container.api["/api/v1/targets?state=active"] = lambda: next(answers, targets(("up", "")))
    [result] = judge("prometheus-targets", container)
    assert result.outcome is Outcome.PASS, result.line()
