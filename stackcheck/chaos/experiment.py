"""Experiments in the chaostoolkit shape: steady state -> fault (with probes and writes
running) -> recovery -> verify -> rollback, with the outcome as a typed result and journal.

    exp = Experiment("backend-kill", stack)
    exp.steady_state("api answers", lambda: None if ok() else "api down")
    with exp.rto(probe), faults.kill(stack.service("backend-1"), journal=exp.journal):
        time.sleep(2)
    result = exp.finish()          # RTO/RPO against the stack's objectives for the scenario
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stackcheck.chaos.journal import Event, EventKind, Journal
from stackcheck.chaos.meters import LedgerReport, Probe, RtoMeter, RtoResult, WriteLedger, Writer
from stackcheck.errors import StackcheckError
from stackcheck.stack import Stack
from stackcheck.stackfile import RecoveryObjective

Check = Callable[[], str | None]  # None when fine, else what deviates


class SteadyStateError(StackcheckError):
    """The stack was not in its steady state before the fault: the experiment did not run."""


@dataclass(frozen=True)
class ExperimentResult:
    scenario: str
    rto: RtoResult | None
    rpo: LedgerReport | None
    objective: RecoveryObjective | None
    breaches: tuple[str, ...]
    observations: tuple[str, ...]
    events: tuple[Event, ...]
    timeline: str
    traffic: tuple[tuple[float, int, int], ...] = ()  # (monotonic second, requests, errors)

    @property
    def passed(self) -> bool:
        return not self.breaches

    def summary(self) -> str:
        lines = [f"scenario {self.scenario}: {'PASS' if self.passed else 'FAIL'}"]
        if self.rto is not None:
            target = (
                f" (objective {self.objective.rto_s:g}s)" if self.objective and self.objective.rto_s is not None else ""
            )
            lines.append(f"  {self.rto.describe()}{target}")
        if self.rpo is not None:
            target = (
                f" (objective {self.objective.rpo_s:g}s)" if self.objective and self.objective.rpo_s is not None else ""
            )
            lines.append(f"  {self.rpo.describe()}{target}")
        lines += [f"  observed: {o}" for o in self.observations]
        lines += [f"  BREACH: {b}" for b in self.breaches]
        return "\n".join([*lines, "  timeline:", self.timeline])

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "passed": self.passed,
            "rto": None if self.rto is None else self.rto.__dict__,
            "rpo": None if self.rpo is None else self.rpo.__dict__,
            "objective": None if self.objective is None else self.objective.__dict__,
            "breaches": list(self.breaches),
            "observations": list(self.observations),
            "events": [e.to_dict() for e in self.events],
            "traffic": [{"mono": t, "requests": n, "errors": e} for t, n, e in self.traffic],
        }


@dataclass
class Experiment:
    scenario: str
    stack: Stack
    journal: Journal = field(default_factory=Journal)
    objective_override: RecoveryObjective | None = None  # default: the stack file's [objectives.chaos.SCENARIO]
    observations: list[str] = field(default_factory=list)
    _rto: RtoMeter | None = None
    _ledger: WriteLedger | None = None
    _ledger_report: LedgerReport | None = None
    _deviations: list[str] = field(default_factory=list)
    result: ExperimentResult | None = None
    traffic: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def objective(self) -> RecoveryObjective | None:
        return self.objective_override or self.stack.spec.objectives.chaos.get(self.scenario)

    def steady_state(self, name: str, check: Check) -> None:
        problem = check()
        self.journal.record(EventKind.STEADY_STATE, name, problem or "ok")
        if problem:
            raise SteadyStateError(
                f"{self.scenario}: not in steady state before the fault: {name}: {problem}",
                "restore the stack (or use a fresh one) and run again",
            )

    def rto(self, probe: Probe, period: float = 0.05, probe_timeout: float = 1.0, k: int = 3) -> RtoMeter:
        """Probe every ``period``; a probe slower than ``probe_timeout`` counts as down. The timeout
        is generous by default: a TLS handshake on a busy 2-core machine can take 250 ms."""
        self._rto = RtoMeter(probe, period, probe_timeout, k)
        return self._rto

    def ledger(self, writer: Writer, interval_s: float = 0.02) -> WriteLedger:
        self._ledger = WriteLedger(writer, interval_s)
        return self._ledger

    def action(self, name: str, fn: Callable[[], Any], detail: str = "") -> Any:
        self.journal.record(EventKind.ACTION, name, detail)
        return fn()

    def verify(self, name: str, check: Check) -> None:
        """A check after recovery; a deviation becomes a breach of the experiment."""
        problem = check()
        self.journal.record(EventKind.VERIFY, name, problem or "ok")
        if problem:
            self._deviations.append(f"{name}: {problem}")

    def reconcile(self, surviving: list[int]) -> LedgerReport:
        assert self._ledger is not None, "start a ledger with exp.ledger(writer) first"
        self._ledger_report = self._ledger.reconcile(surviving)
        return self._ledger_report

    def window(self, fault: str) -> tuple[float, float]:
        """Monotonic start and end of a fault recorded in this experiment's journal."""
        window = self.journal.window(fault)
        if window is None:
            recorded = ", ".join(e.name for e in self.journal.find(EventKind.FAULT_START))
            raise StackcheckError(f"{self.scenario}: no fault {fault!r} in the journal", f"use one of: {recorded}")
        return window

    def observe(self, text: str) -> None:
        self.observations.append(text)
        self.journal.record(EventKind.NOTE, "observation", text)

    def await_recovery(self, timeout_s: float) -> bool:
        assert self._rto is not None
        recovered = self._rto.wait_for_recovery(timeout_s, self._fault_start())
        if not recovered:
            self._deviations.append(f"not recovered within {timeout_s:g}s")
        return recovered

    def _fault_start(self) -> float | None:
        """When the first fault began (monotonic): the RTO meter measures the outage that had not
        recovered by then (a probe in flight then can have met it)."""
        starts = self.journal.find(EventKind.FAULT_START)
        if not starts or self._rto is None:
            return None
        return min(e.mono for e in starts)

    def finish(self) -> ExperimentResult:
        rto = self._rto.result(self._fault_start()) if self._rto is not None else None
        if rto is not None and rto.failed_before:
            self.observe(f"{rto.failed_before} probes failed before the fault began (not counted as the outage)")
        if rto is not None and rto.first_failure is not None:
            self.journal.events.append(
                Event(EventKind.FIRST_ERROR, "first failed probe", rto.first_failure, _wall(rto.first_failure))
            )
            if rto.recovered_at is not None:
                recovered = Event(
                    EventKind.RECOVERED,
                    f"first of {rto.k} consecutive answers arrived",
                    rto.recovered_at,
                    _wall(rto.recovered_at),
                )
                self.journal.events.append(recovered)
        self.journal.events.sort(key=lambda e: e.mono)
        breaches = list(self._deviations)
        objective = self.objective
        rto_target = objective.rto_s if objective is not None else None
        outage = rto is not None and rto.first_failure is not None
        if rto is not None and outage and rto_target is not None and (rto.rto_s is None or rto.rto_s > rto_target):
            measured = "not reached" if rto.rto_s is None else f"{rto.rto_s:.3f}s"
            breaches.append(f"RTO {measured} > objective {rto_target:g}s")
        rpo = self._ledger_report
        if objective is not None and rpo is not None and objective.rpo_s is not None and rpo.rpo_s > objective.rpo_s:
            breaches.append(f"RPO {rpo.rpo_s:.3f}s ({rpo.rpo_writes} writes) > objective {objective.rpo_s:g}s")
        self.result = ExperimentResult(
            self.scenario,
            rto,
            rpo,
            objective,
            tuple(breaches),
            tuple(self.observations),
            tuple(self.journal.events),
            self.journal.timeline(),
            tuple(self.traffic),
        )
        return self.result


def _wall(mono: float) -> float:
    return time.time() - (time.monotonic() - mono)
