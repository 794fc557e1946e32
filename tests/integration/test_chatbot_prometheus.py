"""The chatbot's Prometheus (stacks/chatbot/prometheus, design doc 002 section 7) on real
containers, every observation read fresh from Prometheus's own API:

- prometheus-rules and prometheus-targets PASS on the shipped stack: the doc's eight rules are
  loaded with health ok, the API's /metrics is scraped; each recorded dashboard expression has
  data once a chat has run (the translations use metric names the API really exports).
- Broken variants FAIL with the reason: the rule file edited on disk with an expression that does
  not parse (Prometheus still runs the old version; promtool names the parse error); a rule that
  parses but cannot evaluate, loaded by a reload (health err with Prometheus's error); the API
  paused (its scrape target down with the scrape error; ChatbotApiDown fires).
- The doc's alerts fire on a fault: the LLM link cut makes ChatbotHighErrorRate and
  ChatbotLlmUnavailable fire.

Run under the engine lock:
    flock /tmp/stackcheck-engine.lock .venv/bin/python -m pytest tests/integration/test_chatbot_prometheus.py
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from stackcheck import stackfile
from stackcheck.chaos import faults
from stackcheck.compliance import prometheus, runner
from stackcheck.compliance.model import Outcome, Policy, Result
from stackcheck.errors import StackError
from stackcheck.stack import Stack
from stackcheck.stackfile import StackSpec
from stackcheck.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CHATBOT = Path(__file__).resolve().parents[2] / "stacks" / "chatbot"
RULES_IN_CONTAINER = "/etc/prometheus/rules/chatbot.yml"
RECORDED = ("chatbot:requests:rate5m", "chatbot:request_duration_seconds:p95_5m", "chatbot:active_sessions")
RECORDED_AFTER_A_CHAT = ("chatbot:tokens:rate1h",)
ALERTS = ("ChatbotApiDown", "ChatbotHighErrorRate", "ChatbotLlmUnavailable", "ChatbotSlowResponses")
# Parses (promtool passes it) but cannot evaluate: the regular expression is compiled at evaluation.
UNEVALUABLE = 'label_replace(up, "broken", "$1", "instance", "(")'


@pytest.fixture(scope="module", autouse=True)
def _built(own_images: Callable[[StackSpec], None]) -> None:
    own_images(stackfile.load(CHATBOT / "stack.toml"))  # its own API image, whatever ran before


@pytest.fixture(scope="module")
def chatbot() -> Iterator[Stack]:
    with Stack.from_file(CHATBOT / "stack.toml") as stack:
        print(f"\nchatbot booted in {stack.boot_seconds:.1f}s")
        yield stack


@pytest.fixture(scope="module")
def policy(chatbot: Stack) -> Policy:
    return runner.scoped_policy(chatbot.spec, None)


@pytest.fixture(scope="module")
def server(chatbot: Stack) -> prometheus.PrometheusServer:
    return prometheus.PrometheusServer(chatbot.service("prometheus"), 9090)


def judge(chatbot: Stack, policy: Policy, rule_id: str) -> list[Result]:
    results = runner.evaluate(policy.rules[rule_id], runner.CheckContext(None, chatbot, policy))
    print(f"\n{runner.table(results)}")
    return results


def alert_states(server: prometheus.PrometheusServer) -> dict[str, str]:
    return {a["labels"]["alertname"]: a["state"] for a in server.api("/api/v1/alerts")["alerts"]}


def firing(server: prometheus.PrometheusServer) -> set[str]:
    return {name for name, state in alert_states(server).items() if state == "firing"}


def await_alerts(server: prometheus.PrometheusServer, names: set[str], timeout_s: float) -> float:
    started = time.monotonic()
    assert wait_until(lambda: names <= firing(server) or None, timeout_s), (
        f"{sorted(names)} not all firing within {timeout_s:g}s: {alert_states(server)}"
    )
    return time.monotonic() - started


def chat(client: Any, expect: int) -> None:
    body = {"title": "prometheus", "message": {"content": "metrics", "max_tokens": 1}}
    response = client.post("/api/v1/conversations", json=body)
    assert response.status_code == expect, response.text


@contextlib.contextmanager
def rules_on_disk(chatbot: Stack, text: str, reload: bool) -> Iterator[None]:
    """The mounted rule file rewritten in place (the container sees it at once), optionally loaded
    with SIGHUP; the shipped file restored and reloaded on exit."""
    container = chatbot.service("prometheus").docker
    container.reload()
    [source] = [m["Source"] for m in container.attrs["Mounts"] if m["Destination"] == RULES_IN_CONTAINER]
    host = Path(source)
    shipped = host.read_text()
    try:
        host.write_text(text)  # same inode: the bind mount shows the new content
        if reload:
            container.kill(signal="SIGHUP")
        yield
    finally:
        host.write_text(shipped)
        if reload:
            container.kill(signal="SIGHUP")


def test_the_doc_rules_are_loaded_healthy_and_the_api_is_scraped(
    chatbot: Stack, policy: Policy, server: prometheus.PrometheusServer
) -> None:
    [rules] = judge(chatbot, policy, "prometheus-rules")
    assert (rules.outcome, rules.subject) == (Outcome.PASS, f"prometheus:{RULES_IN_CONTAINER}"), rules.line()
    [target] = judge(chatbot, policy, "prometheus-targets")
    assert (target.outcome, target.subject) == (Outcome.PASS, "prometheus:chatbot-api http://api:8000/metrics")

    loaded = prometheus.loaded_rules(server.api("/api/v1/rules"))[RULES_IN_CONTAINER]
    assert {r.name for r in loaded} == {*RECORDED, *RECORDED_AFTER_A_CHAT, *ALERTS}
    assert {r.group for r in loaded} == {"chatbot-dashboard", "chatbot-alerts"}
    assert all(r.problem() is None for r in loaded), [r.problem() for r in loaded]
    assert not firing(server), f"alerts firing on a healthy stack: {alert_states(server)}"

    # Two answered chats more than a scrape apart: the token counter rises between two samples.
    with chatbot.http(timeout=10, headers=chatbot.synthetic_headers()) as client:
        chat(client, 201)
        time.sleep(1.5)
        chat(client, 201)

    def recorded() -> dict[str, float] | None:
        values = {}
        for name in (*RECORDED, *RECORDED_AFTER_A_CHAT):
            result = server.api(f"/api/v1/query?query={quote(f'sum({name})')}")["result"]
            if not result or result[0]["value"][1] in ("NaN", "0"):
                return None
            values[name] = float(result[0]["value"][1])
        return values if values["chatbot:active_sessions"] >= 2 else None  # both chats' conversations

    values = wait_until(recorded, 15, interval_s=0.5)
    assert values, f"a recorded dashboard expression has no data 15 s after two chats: {recorded()}"
    print(f"\nrecorded after two chats: {values}")

    # The API's exposition passes promtool's lint, run where the scrape runs.
    lint = server.run(["sh", "-c", "wget -q -O - http://api:8000/metrics | promtool check metrics"])
    assert lint.ok, lint.output()
    assert not lint.output(), f"promtool check metrics on the API's /metrics: {lint.output()}"


def test_memory_of_prometheus(chatbot: Stack, server: prometheus.PrometheusServer) -> None:
    status = server.run(["cat", "/proc/1/status"]).stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss, peak = fields["VmRSS"].strip(), fields["VmHWM"].strip()
    stats: dict[str, Any] = chatbot.service("prometheus").docker.stats(stream=False)
    usage = stats["memory_stats"]["usage"] / 2**20
    limit = stats["memory_stats"]["limit"] / 2**20
    print(f"\nprometheus: VmRSS {rss}, VmHWM {peak}, cgroup usage {usage:.1f} MiB of {limit:.0f} MiB")
    assert limit == 128
    assert int(peak.split()[0]) < 96 * 1024, f"peak RSS {peak} is past GOMEMLIMIT (96 MiB)"


def test_a_rule_file_broken_on_disk_fails_while_prometheus_runs_the_old_one(
    chatbot: Stack, policy: Policy, server: prometheus.PrometheusServer
) -> None:
    shipped = (CHATBOT / "prometheus" / "rules.yml").read_text()
    broken = shipped.replace('expr: up{job="chatbot-api"} == 0', 'expr: up{job="chatbot-api"} == (0')
    assert broken != shipped
    with rules_on_disk(chatbot, broken, reload=False):
        [result] = judge(chatbot, policy, "prometheus-rules")
        assert result.outcome is Outcome.FAIL
        assert result.evidence.startswith("promtool check rules fails on the file on disk: FAILED: ")
        assert 'rule 1, "ChatbotApiDown": could not parse expression' in result.evidence
        assert len(prometheus.loaded_rules(server.api("/api/v1/rules"))[RULES_IN_CONTAINER]) == 8  # still running
    [again] = judge(chatbot, policy, "prometheus-rules")
    assert again.outcome is Outcome.PASS, again.line()


def test_a_rule_that_cannot_evaluate_fails_with_prometheus_error(
    chatbot: Stack, policy: Policy, server: prometheus.PrometheusServer
) -> None:
    shipped = (CHATBOT / "prometheus" / "rules.yml").read_text()
    broken = shipped.replace("expr: chatbot_active_sessions", f"expr: {UNEVALUABLE}")
    assert broken != shipped

    def evaluated_with(query: str) -> bool | None:
        """Whether the active-sessions rule runs ``query`` and has been evaluated since loaded."""
        groups = server.api("/api/v1/rules")["groups"]
        [active] = [r for g in groups for r in g["rules"] if r["name"] == RECORDED[2]]
        return (active["query"] == query and active["health"] != "unknown") or None

    with rules_on_disk(chatbot, broken, reload=True):
        assert wait_until(lambda: evaluated_with(UNEVALUABLE), 10), "the reload did not load the broken rule"
        [result] = judge(chatbot, policy, "prometheus-rules")
        assert result.outcome is Outcome.FAIL
        assert result.evidence.startswith("group 'chatbot-dashboard' rule 'chatbot:active_sessions' health err: ")
        assert "invalid regular expression in label_replace()" in result.evidence
    assert wait_until(lambda: evaluated_with("chatbot_active_sessions"), 10), "the shipped rules were not reloaded"
    [again] = judge(chatbot, policy, "prometheus-rules")
    assert again.outcome is Outcome.PASS, again.line()


def test_the_api_paused_is_a_target_down_and_fires_api_down(
    chatbot: Stack, policy: Policy, server: prometheus.PrometheusServer
) -> None:
    def health() -> str:
        [target] = prometheus.active_targets(server.api("/api/v1/targets?state=active"))
        return target.health

    with faults.pause(chatbot.service("api")):
        assert wait_until(lambda: health() == "down" or None, 10), "the paused API's target never went down"
        fired = await_alerts(server, {"ChatbotApiDown"}, 15)
        print(f"\nChatbotApiDown firing {fired:.1f}s after the target went down")
        [result] = judge(chatbot, policy, "prometheus-targets")  # re-read for settle_s: still down
        assert (result.outcome, result.subject) == (Outcome.FAIL, "prometheus:chatbot-api http://api:8000/metrics")
        assert result.evidence.startswith("health down: ")
        assert "context deadline exceeded" in result.evidence
    assert wait_until(lambda: health() == "up" or None, 10), "the target did not come back up"
    [again] = judge(chatbot, policy, "prometheus-targets")
    assert again.outcome is Outcome.PASS, again.line()


def test_llm_down_fires_the_error_rate_and_llm_alerts(chatbot: Stack, server: prometheus.PrometheusServer) -> None:
    wanted = {"ChatbotHighErrorRate", "ChatbotLlmUnavailable"}
    assert not wanted & firing(server), alert_states(server)
    started = time.monotonic()
    with (
        faults.link_down(chatbot.link("api->llm")),
        chatbot.http(timeout=10, headers=chatbot.synthetic_headers()) as client,
    ):
        # Chats keep coming (each stored and answered 503 llm_unavailable): a rate needs the
        # counters to rise between samples.
        while not wanted <= firing(server):
            assert time.monotonic() - started < 20, (
                f"{sorted(wanted)} not all firing within 20s: {alert_states(server)}"
            )
            chat(client, 503)
            time.sleep(0.25)
    print(f"\n{sorted(wanted)} firing {time.monotonic() - started:.1f}s after the LLM link was cut")


def test_a_rule_file_that_does_not_parse_fails_the_boot_naming_the_error(tmp_path: Path) -> None:
    """At boot Prometheus refuses a rule file that does not parse: the boot fails at once with its
    log (a stack of Prometheus alone, with the chatbot's config and a broken rule file)."""
    (tmp_path / "rules.yml").write_text(
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: sum(up\n"
    )
    (tmp_path / "stack.toml").write_text(
        '[stack]\nname = "prometheus-broken"\n[networks.internal]\ninternal = true\n'
        '[services.prometheus]\nimage = "prometheus"\nnetworks = { internal = [] }\nread_only = true\n'
        'tmpfs = ["/prometheus"]\nready_timeout_s = 20\n[services.prometheus.files]\n'
        '"/etc/prometheus/rules/broken.yml" = { template_file = "rules.yml" }\n'
        f'"/etc/prometheus/prometheus.yml" = {{ template_file = "{CHATBOT}/prometheus/prometheus.yml" }}\n'
    )
    started = time.monotonic()
    with pytest.raises(StackError) as failed, Stack.from_file(tmp_path / "stack.toml"):
        pass
    print(f"\nboot refused in {time.monotonic() - started:.1f}s: {failed.value.problem}")
    assert "prometheus is exited (exit code 1) while starting" in failed.value.problem
    # Prometheus's own refusal (logfmt: the rule's name in escaped quotes).
    assert "/etc/prometheus/rules/broken.yml: 5:15: group" in failed.value.problem
    assert "could not parse expression: 1:7: parse error: unclosed left parenthesis" in failed.value.problem
