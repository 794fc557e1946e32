"""Prometheus as the stack runs it: every rule file it is given is loaded, valid on disk and
evaluates without error (prometheus-rules); every scrape target is up (prometheus-targets).

The policy picks the servers by image (``images``; with ``only_with_images = true`` a stack that
runs none has the rules DISABLED as not applicable). The checks read Prometheus's HTTP API and
run promtool inside its container (``docker exec``): nothing has to be published, and the
container's own wget and promtool do the work (stackcheck's image and prom/prometheus have both).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from stackcheck.compliance.datastores import image_instances
from stackcheck.compliance.model import Outcome, Result, Rule
from stackcheck.compliance.runner import CheckContext, check, not_applicable
from stackcheck.errors import StackError
from stackcheck.stack import ServiceHandle
from stackcheck.waiting import wait_until

CHECKING = re.compile(r"^Checking (\S.*)$", re.MULTILINE)
RULES_FOUND = re.compile(r"SUCCESS: (\d+) rules found")
UNKNOWN = "unknown"  # the health of a rule not yet evaluated, a target not yet scraped


@dataclass(frozen=True)
class LoadedRule:
    group: str
    name: str
    health: str  # "ok" | "err" | "unknown"
    last_error: str

    def problem(self) -> str | None:
        if self.health == "ok" and not self.last_error:
            return None
        error = f": {self.last_error}" if self.last_error else ""
        return f"group {self.group!r} rule {self.name!r} health {self.health}{error}"


@dataclass(frozen=True)
class Target:
    pool: str
    url: str
    health: str  # "up" | "down" | "unknown"
    last_error: str


@dataclass(frozen=True)
class Promtool:
    """One `promtool check ...` run: its exit code and what it printed."""

    code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def output(self) -> str:
        return " ".join(line.strip() for line in (self.stderr or self.stdout).splitlines() if line.strip())


def loaded_rules(payload: dict[str, Any]) -> dict[str, list[LoadedRule]]:
    """/api/v1/rules: rule file -> the rules Prometheus runs from it."""
    out: dict[str, list[LoadedRule]] = defaultdict(list)
    for group in payload["groups"]:
        for rule in group["rules"]:
            out[group["file"]].append(
                LoadedRule(group["name"], rule["name"], rule.get("health", UNKNOWN), rule.get("lastError") or "")
            )
    return dict(out)


def active_targets(payload: dict[str, Any]) -> list[Target]:
    """/api/v1/targets: the targets Prometheus scrapes."""
    return [
        Target(t["scrapePool"], t["scrapeUrl"], t.get("health", UNKNOWN), t.get("lastError") or "")
        for t in payload["activeTargets"]
    ]


def checked_rule_files(config_check: Promtool, config_file: str) -> list[str]:
    """The rule files `promtool check config` checked: the config's rule_files, globs expanded."""
    return [path.strip() for path in CHECKING.findall(config_check.stdout) if path.strip() != config_file]


def rules_on_disk(rules_check: Promtool) -> int | None:
    """How many rules `promtool check rules FILE` found; None when the file does not pass."""
    found = RULES_FOUND.search(rules_check.stdout)
    return int(found.group(1)) if rules_check.ok and found else None


def file_problems(path: str, on_disk: Promtool | None, loaded: list[LoadedRule]) -> list[str]:
    """What is wrong with one rule file: invalid on disk, not (or not as written) loaded, or a
    rule that does not evaluate."""
    problems = []
    if on_disk is None:
        problems.append("loaded, but no longer among the config's rule_files on disk")
    else:
        count = rules_on_disk(on_disk)
        if count is None:  # Prometheus keeps running the last good version; its next start fails
            problems.append(f"promtool check rules fails on the file on disk: {on_disk.output()}")
        elif count != len(loaded):
            state = "not loaded" if not loaded else f"Prometheus runs {len(loaded)}"
            problems.append(f"{count} rules on disk, {state} (changed since Prometheus last loaded it?)")
    problems.extend(p for p in (r.problem() for r in loaded) if p)
    return problems


def _summary(loaded: list[LoadedRule]) -> str:
    groups = sorted({r.group for r in loaded})
    return f"{len(loaded)} rules in {len(groups)} groups ({', '.join(groups)}) loaded, every one health ok"


class PrometheusServer:
    """The API and promtool of one Prometheus container, through `docker exec`."""

    def __init__(self, handle: ServiceHandle, port: int) -> None:
        self.handle = handle
        self.port = port

    def run(self, argv: list[str]) -> Promtool:
        """``argv`` run in the container."""
        self.handle.docker.reload()
        if self.handle.docker.status != "running":
            raise StackError(
                f"{self.handle.name} is {self.handle.docker.status}, not running",
                f"see its log: docker logs {self.handle.docker.name}",
            )
        code, (out, err) = self.handle.docker.exec_run(argv, demux=True)
        return Promtool(code, (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace"))

    def api(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        done = self.run(["wget", "-q", "-O", "-", url])
        if not done.ok:
            raise StackError(
                f"{self.handle.name}: wget {url} in the container failed (exit {done.code}): {done.output()}",
                "the check reads Prometheus's API with the container's wget: install it in the image, "
                "and check the rule's `port` is the one Prometheus listens on",
            )
        body = json.loads(done.stdout)
        if body.get("status") != "success":
            raise StackError(f"{self.handle.name}: {path} answered {body}", "see the Prometheus log")
        return body["data"]

    def promtool(self, *args: str) -> Promtool:
        return self.run(["promtool", "check", *args])

    def settled(self, path: str, healths: Any, settle_s: float) -> Any:
        """The API's answer once nothing in it is health "unknown" (not evaluated or scraped yet),
        or as it is after ``settle_s``."""
        last: list[Any] = []

        def read() -> Any:
            last[:] = [self.api(path)]
            return last[0] if UNKNOWN not in healths(last[0]) else None

        return wait_until(read, settle_s, interval_s=0.5) or last[0]


def _servers(rule: Rule, ctx: CheckContext) -> list[PrometheusServer]:
    _, handles = image_instances(rule, ctx)
    return [PrometheusServer(h, int(rule.param("port"))) for h in handles]


def _rule_healths(data: dict[str, Any]) -> Iterable[str]:
    return (r.health for rules in loaded_rules(data).values() for r in rules)


def _target_healths(data: dict[str, Any]) -> Iterable[str]:
    # Settled once every target is up. No target yet is not settled: after a start Prometheus
    # syncs discovered targets to its scrape manager only after about 5 s. A target down is
    # re-read too: one failed scrape while a service restarted (another check's fault) is a blip,
    # a target still down after settle_s is down.
    return [UNKNOWN if t.health != "up" else t.health for t in active_targets(data)] or [UNKNOWN]


@check("prometheus-rules")
def rules_loaded(rule: Rule, ctx: CheckContext) -> list[Result]:
    out = []
    for server in _servers(rule, ctx):
        config_file = server.api("/api/v1/status/flags")["config.file"]
        config = server.promtool("config", "--lint-fatal", config_file)
        on_disk = {
            path: server.promtool("rules", "--lint-fatal", path) for path in checked_rule_files(config, config_file)
        }
        if not config.ok and not on_disk:  # the config file itself does not pass: it names no rule file
            problem = f"promtool check config fails on {config_file}: {config.output()}"
            out.append(Result(rule, Outcome.FAIL, f"{server.handle.name}:{config_file}", problem))
            continue
        loaded = loaded_rules(server.settled("/api/v1/rules", _rule_healths, float(rule.param("settle_s"))))
        if not on_disk and not loaded:
            raise not_applicable(rule, f"{server.handle.name} is given no rule file (rule_files in {config_file})")
        for path in sorted(set(on_disk) | set(loaded)):
            problems = file_problems(path, on_disk.get(path), loaded.get(path, []))
            evidence = "; ".join(problems) or _summary(loaded[path])
            out.append(
                Result(rule, Outcome.FAIL if problems else Outcome.PASS, f"{server.handle.name}:{path}", evidence)
            )
    return out


@check("prometheus-targets")
def targets_up(rule: Rule, ctx: CheckContext) -> list[Result]:
    out = []
    for server in _servers(rule, ctx):
        data = server.settled("/api/v1/targets?state=active", _target_healths, float(rule.param("settle_s")))
        targets = active_targets(data)
        if not targets:
            raise not_applicable(rule, f"{server.handle.name} scrapes no target (scrape_configs)")
        for target in targets:
            subject = f"{server.handle.name}:{target.pool} {target.url}"
            if target.health == "up":
                out.append(Result(rule, Outcome.PASS, subject, f"up (scrape pool {target.pool})"))
            else:
                error = f": {target.last_error}" if target.last_error else ""
                out.append(Result(rule, Outcome.FAIL, subject, f"health {target.health}{error}"))
    return out
