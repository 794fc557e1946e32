"""Running a stack file's ``[scenarios.NAME]``: the generic experiment, its building blocks
(which a hook in the stack's folder reuses), and the loading of hooks.

The generic experiment: steady state (the probe answers, the target is healthy) -> traffic,
ledger writes and the RTO probe start -> warm-up -> the fault, held for its duration, then
reverted -> recovery (optionally awaited) -> observation -> read-back of the ledger -> the
[verify] checks -> RTO and RPO judged against [objectives.chaos.NAME].
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

from stackcheck.chaos import faults
from stackcheck.chaos.experiment import Experiment, ExperimentResult
from stackcheck.chaos.journal import EventKind
from stackcheck.chaos.meters import LedgerReport, RtoMeter
from stackcheck.chaos.spec import Fault, Hook, Scenario
from stackcheck.chaos.workloads import HttpRequest, LedgerStore, Traffic, Window, answer_problem, probe
from stackcheck.errors import StackcheckError, StackFileError
from stackcheck.stack import LinkHandle, ServiceHandle, Stack
from stackcheck.toxiproxy import Stream

STEADY_TIMEOUT_S = 2.0  # the probe's answer before the fault may take this long (a cold TLS handshake)

_TOXICS: dict[Fault, Callable[..., AbstractContextManager[Any]]] = {
    Fault.LATENCY: faults.latency,
    Fault.BANDWIDTH: faults.bandwidth,
    Fault.SLOW_CLOSE: faults.slow_close,
    Fault.TIMEOUT: faults.timeout,
    Fault.RESET_PEER: faults.reset_peer,
    Fault.SLICER: faults.slicer,
    Fault.LIMIT_DATA: faults.limit_data,
    Fault.LINK_DOWN: faults.link_down,
}


@contextlib.contextmanager
def _restart(handle: ServiceHandle, **kw: Any) -> Iterator[None]:
    """A restart is one action (it returns once healthy again): the fault's window is the restart."""
    faults.restart(handle, **kw)
    yield


_CONTAINER: dict[Fault, Callable[..., AbstractContextManager[Any]]] = {
    Fault.KILL: faults.kill,
    Fault.STOP: faults.stop,
    Fault.PAUSE: faults.pause,
    Fault.RESTART: _restart,
}


class ScenarioRun:
    """One scenario on one stack, in steps: ``run()`` is the generic experiment; a hook calls
    the steps it needs and adds its own between them."""

    def __init__(self, stack: Stack, exp: Experiment, scenario: Scenario) -> None:
        self.stack, self.exp, self.scenario = stack, exp, scenario
        self.run_tag = f"{scenario.name}-{uuid.uuid4().hex[:8]}"  # ${run}: this experiment's writes only
        chaos = stack.spec.chaos
        self.probe = self.request(scenario.probe) if scenario.probe else None
        self.traffic = (
            Traffic(stack, self.request(scenario.traffic).send, concurrency=scenario.concurrency)
            if scenario.traffic
            else None
        )
        self.ledger = (
            LedgerStore(stack, chaos.ledgers[scenario.ledger], chaos.workloads, self.run_tag)
            if scenario.ledger
            else None
        )
        self.meter: RtoMeter | None = None

    def request(self, workload: str) -> HttpRequest:
        """A workload of the stack file, bound to this experiment's ``${run}``."""
        return HttpRequest(self.stack.spec.chaos.workloads[workload], self.run_tag)

    # -- targets ----------------------------------------------------------------------------------

    def instances(self) -> list[ServiceHandle]:
        """The containers a container fault acts on: every instance of a service, or the one named."""
        if self.scenario.fault.on_links:
            return []
        found: list[ServiceHandle] = []
        for target in self.scenario.targets:
            found += (
                self.stack.instances(target) if target in self.stack.spec.services else [self.stack.service(target)]
            )
        return found

    def links(self) -> list[LinkHandle]:
        return [self.stack.link(t) for t in self.scenario.targets] if self.scenario.fault.on_links else []

    # -- steps ------------------------------------------------------------------------------------

    def steady_state(self) -> None:
        if self.probe is not None:
            request = self.probe
            self.exp.steady_state(
                f"{request.workload.describe()} answers", lambda: answer_problem(self.stack, request, STEADY_TIMEOUT_S)
            )
        if self.instances():
            self.exp.steady_state("every instance of the target healthy", lambda: faults.not_healthy(self.instances()))

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Traffic, ledger writes and the RTO probe, running for the block."""
        with contextlib.ExitStack() as running:
            if self.traffic is not None:
                running.enter_context(self.traffic)
            if self.ledger is not None:
                running.callback(self.ledger.close)  # after the writer thread has stopped
                running.enter_context(self.exp.ledger(self.ledger.write, interval_s=self.ledger.ledger.interval_s))
            if self.probe is not None:
                meter = self.exp.rto(probe(self.stack, self.probe), probe_timeout=self.scenario.probe_timeout_s)
                self.meter = running.enter_context(meter)
            yield

    @contextlib.contextmanager
    def fault(self) -> Iterator[None]:
        """The scenario's fault on every target, journaled, reverted on exit whatever happens."""
        s, journal = self.scenario, self.exp.journal
        params = dict(s.params)
        if "stream" in params:
            params["stream"] = Stream(params["stream"])
        with contextlib.ExitStack() as held:
            if s.fault.on_links:
                for link in self.links():
                    held.enter_context(_TOXICS[s.fault](link, **params, journal=journal))
            elif s.fault is Fault.PARTITION:
                held.enter_context(faults.partition(self.stack, self.instances(), **params, journal=journal))
            elif s.fault is Fault.DISCONNECT:
                for handle in self.instances():
                    held.enter_context(faults.disconnect(self.stack, handle, **params, journal=journal))
            else:
                for handle in self.instances():
                    held.enter_context(_CONTAINER[s.fault](handle, **params, journal=journal))
            yield

    def window(self) -> tuple[float, float]:
        """Monotonic start of the first fault and end of the last one in the journal."""
        starts = self.exp.journal.find(EventKind.FAULT_START)
        ends = self.exp.journal.find(EventKind.FAULT_END)
        if not starts or not ends:
            raise StackcheckError(f"{self.scenario.name}: no fault window in the journal", "run the fault first")
        return min(e.mono for e in starts), max(e.mono for e in ends)

    def reconcile(self) -> LedgerReport | None:
        """Read the ledger back: which acknowledged writes survived."""
        if self.ledger is None:
            return None
        report = self.exp.reconcile(self.ledger.surviving())
        self.exp.observe(f"ledger {self.ledger.ledger.name}: {report.describe()}")
        self.exp.observe(f"{report.attempted - report.acknowledged} writes not acknowledged (refused during the fault)")
        self.exp.verify(
            "no write duplicated", lambda: None if not report.duplicates else f"duplicates {list(report.duplicates)}"
        )
        return report

    def verify(self) -> None:
        """The scenario's [verify] checks, each a breach when it does not hold."""
        _verified.add(id(self.exp))
        v = self.scenario.verify
        if v.healthy:
            self.exp.verify("every instance of the target healthy again", lambda: faults.not_healthy(self.instances()))
        if self.meter is not None:
            rto = self.meter.result(self.window()[0])
            if v.min_probes is not None:
                least = v.min_probes
                self.exp.verify(
                    f"the probe ran at least {least} times",
                    lambda: None if rto.total_probes >= least else f"{rto.total_probes} probes",
                )
            if v.outage:
                self.exp.verify(
                    "the fault interrupted the probe",
                    lambda: None if rto.first_failure is not None else "no probe failed: the fault was not felt",
                )
        if self.traffic is not None:
            self._verify_traffic()

    def _verify_traffic(self) -> None:
        assert self.traffic is not None
        v, settle = self.scenario.verify, self.scenario.timing.settle_s
        start, end = self.window()
        before = self.traffic.window(0, start)
        during = self.traffic.window(start + settle, end)
        after = self.traffic.window(end + settle)
        what = self.stack.spec.chaos.workloads[str(self.scenario.traffic)].describe()
        for name, window in (("before", before), ("during", during), ("after", after)):
            self.exp.observe(f"{what} {name} the fault: {window.describe()}")
        if not v.uses_traffic:
            return
        self.exp.verify("traffic ran during the fault", lambda: None if during.count else "no request in the window")
        if v.during_statuses:
            allowed = set(v.during_statuses)
            self.exp.verify(
                f"every answer during the fault is one of {sorted(allowed)}",
                lambda: (
                    None if set(during.statuses) <= allowed else f"statuses {dict(sorted(during.statuses.items()))}"
                ),
            )
        if v.allowed_5xx is not None:
            clean = set(v.allowed_5xx)
            other = {s: n for s, n in during.statuses.items() if s >= 500 and s not in clean}
            self.exp.verify(
                f"server errors during the fault are only {sorted(clean)}",
                lambda: None if not other else f"other 5xx: {other}",
            )
        if v.felt_status is not None:
            felt = v.felt_status
            self.exp.verify(
                f"the fault was felt ({felt} during the fault)",
                lambda: None if during.statuses.get(felt) else f"no {felt}: statuses {during.statuses}",
            )
        if v.p95_impact_min_ms is not None:
            self._verify_impact(v.p95_impact_min_ms, before, during)
        if v.p50_after_slack_ms is not None:
            slack = v.p50_after_slack_ms
            self.exp.verify(
                f"median back to normal after the fault (<= before + {slack:.0f} ms)",
                lambda: _after_problem(before, after, slack),
            )

    def _verify_impact(self, minimum: float, before: Window, during: Window) -> None:
        impact = None if before.p95_ms is None or during.p95_ms is None else during.p95_ms - before.p95_ms
        if impact is not None:
            self.exp.observe(f"p95 impact of the fault: {impact:+.0f} ms")
        self.exp.verify(
            f"the fault shows in p95 (impact >= {minimum:.0f} ms)",
            lambda: (
                "no successful request before or during the fault"
                if impact is None
                else (None if impact >= minimum else f"impact {impact:+.0f} ms")
            ),
        )

    def finish(self) -> ExperimentResult:
        if self.traffic is not None:
            self.exp.traffic = self.traffic.errors_per_second()
        return self.exp.finish()

    def run(self) -> ExperimentResult:
        """The generic experiment (see the module docstring)."""
        timing = self.scenario.timing
        self.steady_state()
        with self.measuring():
            time.sleep(timing.warmup_s)
            with self.fault():
                time.sleep(timing.duration_s)
            if timing.recovery_timeout_s is not None:
                self.exp.await_recovery(timing.recovery_timeout_s)
            time.sleep(timing.after_s)
        self.reconcile()
        self.verify()
        return self.finish()


def _sorted(statuses: dict[int, int]) -> dict[int, int]:
    return dict(sorted(statuses.items()))


def _after_problem(before: Window, after: Window, slack: float) -> str | None:
    if before.p50_ms is None or after.p50_ms is None:
        return "no successful request before or after the fault"
    limit = before.p50_ms + slack
    return None if after.p50_ms <= limit else f"median {after.p50_ms:.0f} ms > {limit:.0f} ms"


# -- hooks ----------------------------------------------------------------------------------------

HookFunction = Callable[[Stack, Experiment, Scenario], ExperimentResult]
_modules: dict[Path, ModuleType] = {}
_verified: set[int] = set()  # experiments whose [verify] checks ran (id(): a hook must not skip them)


def load_hook(hook: Hook) -> HookFunction:
    """The hook's function, its file imported by path (once per process)."""
    module = _modules.get(hook.file)
    if module is None:
        spec = importlib.util.spec_from_file_location(f"stackcheck_hook_{uuid.uuid4().hex[:8]}", hook.file)
        if spec is None or spec.loader is None or not hook.file.is_file():
            raise StackFileError(f"hook file {hook.file} not found", "fix hook = FILE.py:FUNCTION in the scenario")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
        spec.loader.exec_module(module)
        _modules[hook.file] = module
    function = getattr(module, hook.function, None)
    if not callable(function):
        raise StackFileError(
            f"hook {hook.describe()}: {hook.file.name} defines no function {hook.function}",
            f"define def {hook.function}(stack, experiment, scenario) -> ExperimentResult",
        )
    return function  # type: ignore[no-any-return]


def run_scenario(stack: Stack, exp: Experiment, scenario: Scenario) -> ExperimentResult:
    """The scenario's hook when it names one, else the generic experiment."""
    if scenario.hook is None:
        return ScenarioRun(stack, exp, scenario).run()
    _verified.discard(id(exp))
    result = load_hook(scenario.hook)(stack, exp, scenario)
    if not isinstance(result, ExperimentResult):
        raise StackcheckError(
            f"hook {scenario.hook.describe()} returned {type(result).__name__}, not an ExperimentResult",
            "end the hook with `return ScenarioRun(...).finish()` or `return experiment.finish()`",
        )
    # What the stack file declares must be judged, whatever the hook does: else a silent pass.
    skipped = [
        what
        for what, missing in (
            ("the RTO probe (ScenarioRun.measuring)", scenario.probe is not None and result.rto is None),
            ("the ledger read-back (ScenarioRun.reconcile)", scenario.ledger is not None and result.rpo is None),
            ("the [verify] checks (ScenarioRun.verify)", scenario.verify.any and id(exp) not in _verified),
        )
        if missing
    ]
    _verified.discard(id(exp))
    if skipped:
        raise StackcheckError(
            f"hook {scenario.hook.describe()} left out {' and '.join(skipped)} of scenario {scenario.name}",
            "call those steps of ScenarioRun in the hook (see stacks/promptcard/hooks.py)",
        )
    return result
