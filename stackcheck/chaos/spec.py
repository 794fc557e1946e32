"""Chaos scenarios as stack-file data: ``[workloads.NAME]`` (HTTP requests through the edge),
``[ledgers.NAME]`` (numbered writes and a read-back of the survivors, for RPO) and
``[scenarios.NAME]`` (a fault on a target, its timing, what measures it and what it must show).

Everything is checked against the rest of the stack file when it is read: an unknown fault,
target, workload, ledger or hook, a probe without an RTO objective, a ledger without an RPO
objective, a scenario that judges nothing: each is one StackFileError naming the key and the fix.

Templates (request paths, bodies, headers, SQL, Redis keys) take three fields:
``${run}`` (unique to one experiment), ``${n}`` (the request or write number) and ``${id}``
(``${run}-${n}``: the unique id a ledger write carries and its read-back finds again).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stackcheck.loadmix import method_and_path
from stackcheck.tomldata import NAME, Reader

if TYPE_CHECKING:  # stackfile imports this module: the types only, no import cycle at run time
    from stackcheck.stackfile import StackSpec

FIELD = re.compile(r"\$\{([^}]*)\}")
FIELDS = ("id", "n", "run")
POSTGRES_PORT, REDIS_PORT = 5432, 6379  # what stack.postgres() / stack.redis() connect to


def render(template: str, run: str, n: int) -> str:
    """Fill ``${run}``, ``${n}`` and ``${id}`` (the parser has rejected any other field)."""
    values = {"run": run, "n": str(n), "id": f"{run}-{n}"}
    return FIELD.sub(lambda m: values[m.group(1)], template)


def render_value(value: Any, run: str, n: int) -> Any:
    """``render`` over every string of a JSON-like value (keys and values)."""
    if isinstance(value, str):
        return render(value, run, n)
    if isinstance(value, list):
        return [render_value(v, run, n) for v in value]
    if isinstance(value, dict):
        return {render(str(k), run, n): render_value(v, run, n) for k, v in value.items()}
    return value


# -- workloads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One HTTP request through the stack's entrypoint: an RTO probe, background traffic or a ledger write."""

    name: str
    path: str
    method: str = "GET"
    json: Any = None  # a JSON body template
    body: str | None = None  # a text body template
    headers: Mapping[str, str] = field(default_factory=dict)
    expect_status: tuple[int, ...] = ()  # empty: any status below 400
    expect_body: str | None = None  # a substring the answer must contain

    def describe(self) -> str:
        return f"{self.method} {self.path}"

    def templates(self) -> list[str]:
        found: list[str] = [self.path, *self.headers.values(), *([self.body] if self.body is not None else [])]
        _strings(self.json, found)
        return found


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)
    elif isinstance(value, dict):
        for key, item in value.items():
            out.append(str(key))
            _strings(item, out)


# -- ledgers ------------------------------------------------------------------------------------


class Store(Enum):
    HTTP = "http"  # a workload through the edge
    SQL = "sql"  # a PostgreSQL service (stackcheck's postgres image: credentials from its env)
    REDIS = "redis"  # a Redis service (stackcheck's redis image)


@dataclass(frozen=True)
class LedgerWrite:
    """How write ``${n}`` is made: a workload request, an SQL statement or a Redis SET of a key."""

    store: Store
    workload: str | None = None
    service: str | None = None
    statement: str | None = None  # the SQL statement, or the Redis key to SET
    privileged: bool = False  # SQL: as the superuser; Redis: as the admin user


@dataclass(frozen=True)
class LedgerRead:
    """Where the surviving writes are listed: a workload's answer, an SQL query's rows, Redis keys."""

    store: Store
    workload: str | None = None
    service: str | None = None
    query: str | None = None  # the SQL query, or the Redis key pattern (SCAN MATCH)
    privileged: bool = False
    records: str | None = None  # HTTP: dotted path to the JSON list whose items are the records


@dataclass(frozen=True)
class Ledger:
    name: str
    write: LedgerWrite
    read: LedgerRead
    regex: str = r"${run}-(\d+)"  # finds a write's number in a record; ${run} is matched literally
    interval_s: float = 0.02

    def pattern(self, run: str) -> re.Pattern[str]:
        return re.compile(self.regex.replace("${run}", re.escape(run)))


# -- scenarios ----------------------------------------------------------------------------------


class Fault(Enum):
    """Every fault of ``stackcheck.chaos.faults``: on containers (targets are services or
    instances) or on Toxiproxy links (targets are links ``client->upstream``)."""

    KILL = "kill"
    STOP = "stop"
    PAUSE = "pause"
    RESTART = "restart"
    DISCONNECT = "disconnect"
    PARTITION = "partition"
    LATENCY = "latency"
    BANDWIDTH = "bandwidth"
    SLOW_CLOSE = "slow_close"
    TIMEOUT = "timeout"
    RESET_PEER = "reset_peer"
    SLICER = "slicer"
    LIMIT_DATA = "limit_data"
    LINK_DOWN = "link_down"

    @property
    def on_links(self) -> bool:
        return self not in CONTAINER_FAULTS


CONTAINER_FAULTS = {Fault.KILL, Fault.STOP, Fault.PAUSE, Fault.RESTART, Fault.DISCONNECT, Fault.PARTITION}
ALIASES = {"down": Fault.LINK_DOWN}


@dataclass(frozen=True)
class Param:
    key: str  # in the stack file
    kind: type | tuple[type, ...]
    kwarg: str = ""  # the fault function's parameter, when it is not ``key``
    required: bool = False

    @property
    def argument(self) -> str:
        return self.kwarg or self.key


_TOXIC = (Param("stream", str), Param("toxicity", (int, float)))
PARAMS: dict[Fault, tuple[Param, ...]] = {
    Fault.KILL: (Param("signal", str), Param("restart", bool)),
    Fault.STOP: (Param("grace_s", int),),
    Fault.PAUSE: (),
    Fault.RESTART: (Param("timeout_s", int),),
    Fault.DISCONNECT: (Param("network", str, required=True),),
    Fault.PARTITION: (Param("network", str, required=True),),
    Fault.LATENCY: (Param("ms", int, required=True), Param("jitter_ms", int), *_TOXIC),
    Fault.BANDWIDTH: (Param("kb_per_s", int, required=True), *_TOXIC),
    Fault.SLOW_CLOSE: (Param("delay_ms", int, required=True), *_TOXIC),
    Fault.TIMEOUT: (Param("ms", int), *_TOXIC),
    Fault.RESET_PEER: (Param("after_ms", int), *_TOXIC),
    Fault.SLICER: (Param("average_size", int), Param("size_variation", int), Param("delay_us", int), *_TOXIC),
    Fault.LIMIT_DATA: (Param("bytes", int, kwarg="bytes_", required=True), *_TOXIC),
    Fault.LINK_DOWN: (),
}
STREAMS = ("downstream", "upstream")


class Profile(Enum):
    SMOKE = "smoke"  # in every gate
    FULL = "full"  # marked slow: only in the full gate (and drills)


@dataclass(frozen=True)
class Timing:
    warmup_s: float = 1.0  # measuring before the fault
    duration_s: float = 3.0  # the fault held (0 for restart: it is one action)
    after_s: float = 1.0  # measuring after the fault was reverted
    settle_s: float = 0.0  # left out of the during/after traffic windows at their start (requests in flight)
    recovery_timeout_s: float | None = None  # after the revert, wait this long for the probe to recover


@dataclass(frozen=True)
class Verify:
    """Checks after recovery, each a breach when it does not hold."""

    healthy: bool = False  # every instance of the target healthy again (the engine's fresh state)
    outage: bool = False  # the probe saw the fault (else the scenario proved nothing about recovery)
    min_probes: int | None = None  # the RTO probe ran at least this often
    # Traffic during the fault window:
    during_statuses: tuple[int, ...] = ()  # every answer has one of these statuses (0: no answer)
    allowed_5xx: tuple[int, ...] | None = None  # server errors other than these are a breach
    felt_status: int | None = None  # at least one answer had this status (the fault was felt)
    p95_impact_min_ms: float | None = None  # p95 during - p95 before is at least this
    p50_after_slack_ms: float | None = None  # median after <= median before + this (back to normal)

    @property
    def uses_traffic(self) -> bool:
        return bool(self.during_statuses) or any(
            v is not None for v in (self.allowed_5xx, self.felt_status, self.p95_impact_min_ms, self.p50_after_slack_ms)
        )

    @property
    def any(self) -> bool:
        return self.healthy or self.outage or self.min_probes is not None or self.uses_traffic


@dataclass(frozen=True)
class Hook:
    """A Python function in the stack's folder, ``f(stack, experiment, scenario) -> ExperimentResult``."""

    file: Path
    function: str

    def describe(self) -> str:
        return f"{self.file}:{self.function}"


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Fault
    targets: tuple[str, ...]  # services, instances (backend-1) or links
    params: Mapping[str, Any] = field(default_factory=dict)  # the fault function's keyword arguments
    timing: Timing = field(default_factory=Timing)
    probe: str | None = None  # workload: the RTO probe
    probe_timeout_s: float = 1.0
    traffic: str | None = None  # workload: background traffic
    concurrency: int = 4
    ledger: str | None = None  # the RPO ledger
    profile: Profile = Profile.SMOKE
    fresh: bool = False  # needs a stack of its own (it leaves damage behind)
    verify: Verify = field(default_factory=Verify)
    hook: Hook | None = None
    drill: str | None = None  # the DR drill this scenario is (`stackcheck drill NAME`, pytest mark drill)


@dataclass(frozen=True)
class ChaosSpec:
    workloads: Mapping[str, Workload] = field(default_factory=dict)
    ledgers: Mapping[str, Ledger] = field(default_factory=dict)
    scenarios: Mapping[str, Scenario] = field(default_factory=dict)

    def drills(self) -> dict[str, Scenario]:
        """Drill name -> its scenario (``drill = "q1"`` of a [scenarios.NAME])."""
        return {s.drill: s for s in self.scenarios.values() if s.drill is not None}

    def drillable(self, name: str) -> Scenario | None:
        """The scenario ``stackcheck drill NAME`` runs: a drill name, else a scenario's own name."""
        return self.drills().get(name) or self.scenarios.get(name)


# -- parsing ------------------------------------------------------------------------------------


def parse(top: Reader, spec: StackSpec) -> ChaosSpec:
    """The [workloads], [ledgers] and [scenarios] of a stack file, checked against ``spec``."""
    wt = top.table("workloads")
    workloads = {name: _workload(wt, wt.name(name, "workload")) for name in wt.data}
    lt = top.table("ledgers")
    ledgers = {name: _ledger(lt, lt.name(name, "ledger"), workloads, spec) for name in lt.data}
    st = top.table("scenarios")
    scenarios = {name: _scenario(st, st.name(name, "scenario"), workloads, ledgers, spec) for name in st.data}
    _check_drills(st, scenarios)
    # A misspelt objective would never be judged. (Without any scenario, the chaos suite's one
    # check is NOT EVALUATED anyway: objectives kept for scenarios to come are no silent pass.)
    objectives = top.table("objectives").table("chaos")
    for name in spec.objectives.chaos:
        if scenarios and name not in scenarios:
            raise objectives.fail(
                name,
                "is an objective for a scenario the stack file does not declare",
                f"declare [scenarios.{name}] or use one of: {', '.join(scenarios)}",
            )
    return ChaosSpec(workloads, ledgers, scenarios)


def _check_drills(st: Reader, scenarios: Mapping[str, Scenario]) -> None:
    """A drill name must say one scenario: not two, not another scenario's own name."""
    owner: dict[str, str] = {}
    for scenario in scenarios.values():
        drill = scenario.drill
        if drill is None:
            continue
        if drill in owner:
            raise st.table(scenario.name).fail(
                "drill", f"{drill!r} is already the drill of [scenarios.{owner[drill]}]", "give each drill one scenario"
            )
        if drill in scenarios and drill != scenario.name:
            raise st.table(scenario.name).fail(
                "drill", f"{drill!r} is the name of another scenario", "choose a drill name no scenario has"
            )
        owner[drill] = scenario.name


def _check_fields(table: Reader, key: str, text: str) -> None:
    for found in FIELD.findall(text):
        if found not in FIELDS:
            raise table.fail(key, f"uses the unknown field ${{{found}}}", "use ${run}, ${n} or ${id} (= ${run}-${n})")


def _workload(wt: Reader, name: str) -> Workload:
    entry = wt.table(name)
    entry.only({"method", "path", "json", "body", "headers", "expect_status", "expect_body"})
    method, path = method_and_path(entry, default_method="GET")
    statuses = _statuses(entry, "expect_status")
    workload = Workload(
        name,
        path,
        method,
        json=entry.get("json", (dict, list)),
        body=entry.get("body", str),
        headers=entry.str_map("headers"),
        expect_status=statuses,
        expect_body=entry.get("expect_body", str),
    )
    for text in workload.templates():
        _check_fields(entry, "", text)
    return workload


def _statuses(entry: Reader, key: str, allow_none: bool = False) -> tuple[int, ...]:
    raw = entry.get(key, (int, list), [])
    items = [raw] if isinstance(raw, int) else raw
    low = 0 if allow_none else 100
    for status in items:
        if isinstance(status, bool) or not isinstance(status, int) or not low <= status <= 599:
            raise entry.fail(
                key,
                f"must be HTTP statuses ({low}-599), found {status!r}" + (" (0: no answer)" if allow_none else ""),
                f"write {key} = [200, 503]",
            )
    return tuple(items)


def _workload_ref(entry: Reader, key: str, workloads: Mapping[str, Workload], required: bool = False) -> str | None:
    name: str | None = entry.get(key, str, required=required)
    if name is not None and name not in workloads:
        raise entry.fail(
            key,
            f"names unknown workload {name!r}",
            f"define [workloads.{name}] or use one of: {', '.join(workloads) or '(none defined)'}",
        )
    return name


def _store_service(entry: Reader, spec: StackSpec, store: Store) -> str:
    service: str = entry.get("service", str, required=True)
    port = POSTGRES_PORT if store is Store.SQL else REDIS_PORT
    if service not in spec.services:
        raise entry.fail("service", f"names unknown service {service!r}", f"use one of: {', '.join(spec.services)}")
    if port not in spec.services[service].ports:
        raise entry.fail(
            "service",
            f"{service} does not publish port {port}: stackcheck cannot reach its {store.value} store",
            f"add {port} to ports of [services.{service}]",
        )
    return service


def _one_of(entry: Reader, keys: dict[str, Store], example: str) -> tuple[str, Store]:
    given = [k for k in keys if k in entry.data]
    if len(given) != 1:
        raise entry.fail("", f"needs exactly one of {', '.join(keys)}", example)
    return given[0], keys[given[0]]


def _ledger(lt: Reader, name: str, workloads: Mapping[str, Workload], spec: StackSpec) -> Ledger:
    entry = lt.table(name)
    entry.only({"write", "read", "regex", "interval_s"})
    for key in ("write", "read"):
        if key not in entry.data:
            raise entry.fail(key, "is missing", f"add [ledgers.{name}.{key}] (see the README: ledgers)")

    wt = entry.table("write")
    wt.only({"workload", "sql", "redis_set", "service", "privileged"})
    key, store = _one_of(
        wt, {"workload": Store.HTTP, "sql": Store.SQL, "redis_set": Store.REDIS}, 'write workload = "create-item"'
    )
    if store is Store.HTTP:
        if "service" in wt.data or "privileged" in wt.data:
            raise wt.fail("service", "is for sql and redis_set writes", "remove it: the workload says the request")
        workload = _workload_ref(wt, "workload", workloads, required=True)
        assert workload is not None
        carries_id = any("${id}" in t for t in workloads[workload].templates())
        write = LedgerWrite(store, workload=workload)
    else:
        statement = wt.get(key, str, required=True)
        _check_fields(wt, key, statement)
        carries_id = "${id}" in statement
        write = LedgerWrite(store, None, _store_service(wt, spec, store), statement, wt.get("privileged", bool, False))
    if not carries_id:
        raise wt.fail(key, "does not carry ${id}: the read-back could not tell the writes apart", "put ${id} in it")

    rt = entry.table("read")
    rt.only({"workload", "sql", "redis_keys", "service", "privileged", "records"})
    key, store = _one_of(
        rt,
        {"workload": Store.HTTP, "sql": Store.SQL, "redis_keys": Store.REDIS},
        """write sql = "SELECT id FROM items WHERE tag = '${run}'" and service = "db\"""",
    )
    if store is Store.HTTP:
        if "service" in rt.data or "privileged" in rt.data:
            raise rt.fail("service", "is for sql and redis_keys reads", "remove it: the workload says the request")
        read = LedgerRead(store, _workload_ref(rt, "workload", workloads, required=True), records=_records(rt))
    else:
        if "records" in rt.data:
            raise rt.fail("records", "is for workload reads (a JSON list in the answer)", "remove it")
        query = rt.get(key, str, required=True)
        _check_fields(rt, key, query)
        read = LedgerRead(store, None, _store_service(rt, spec, store), query, rt.get("privileged", bool, False))

    regex = entry.get("regex", str, Ledger.regex)
    try:
        groups = re.compile(regex.replace("${run}", "run")).groups
    except re.error as exc:
        raise entry.fail("regex", f"is not a regular expression: {exc}", r'write regex = "${run}-(\\d+)"') from None
    if groups != 1:
        raise entry.fail("regex", f"has {groups} groups, not 1", r"capture the write number only: (\d+)")
    interval = float(entry.get("interval_s", (int, float), Ledger.interval_s))
    if interval <= 0:
        raise entry.fail("interval_s", "must be positive", "write interval_s = 0.05")
    return Ledger(name, write, read, regex, interval)


def _records(rt: Reader) -> str | None:
    records: str | None = rt.get("records", str)
    if records is not None and not all(records.split(".")):
        raise rt.fail("records", f"{records!r} is not a dotted path", 'write records = "items" or "data.items"')
    return records


SCENARIO_KEYS = {
    "fault", "target", "params", "warmup_s", "duration_s", "after_s", "settle_s", "recovery_timeout_s",
    "probe", "probe_timeout_s", "traffic", "concurrency", "ledger", "profile", "fresh", "verify", "hook", "drill",
}  # fmt: skip


def _scenario(
    st: Reader, name: str, workloads: Mapping[str, Workload], ledgers: Mapping[str, Ledger], spec: StackSpec
) -> Scenario:
    entry = st.table(name)
    entry.only(SCENARIO_KEYS)
    kinds = ", ".join([*(f.value for f in Fault), *ALIASES])
    raw = entry.get("fault", str, required=True)
    try:
        fault = ALIASES.get(raw) or Fault(raw)
    except ValueError:
        raise entry.fail(
            "fault", f"{raw!r} is not a fault of stackcheck.chaos.faults", f"use one of: {kinds}"
        ) from None
    params = _params(entry, fault, spec)
    targets = _targets(entry, fault, spec, params)

    def seconds(key: str, default: float | None, low: float = 0.0) -> float | None:
        value = entry.get(key, (int, float), default)
        if value is not None and not low <= value <= 3600:
            raise entry.fail(key, f"must be between {low:g} and 3600 seconds, not {value}", f"write {key} = 3")
        return None if value is None else float(value)

    if fault is Fault.RESTART and "duration_s" in entry.data:
        raise entry.fail("duration_s", "is not used by restart (one action)", "remove it; time after with after_s")
    timing = Timing(
        warmup_s=seconds("warmup_s", Timing.warmup_s) or 0.0,
        duration_s=0.0 if fault is Fault.RESTART else seconds("duration_s", Timing.duration_s) or 0.0,
        after_s=seconds("after_s", Timing.after_s) or 0.0,
        settle_s=seconds("settle_s", Timing.settle_s) or 0.0,
        recovery_timeout_s=seconds("recovery_timeout_s", None, low=0.1),
    )
    probe = _workload_ref(entry, "probe", workloads)
    traffic = _workload_ref(entry, "traffic", workloads)
    concurrency = entry.get("concurrency", int, 4)
    if not 1 <= concurrency <= 64:
        raise entry.fail("concurrency", f"must be between 1 and 64, not {concurrency}", "write concurrency = 2")
    if "concurrency" in entry.data and traffic is None:
        raise entry.fail("concurrency", "is given without traffic", 'name the traffic workload: traffic = "..."')
    probe_timeout = seconds("probe_timeout_s", 1.0, low=0.01) or 1.0
    if timing.recovery_timeout_s is not None and probe is None:
        raise entry.fail("recovery_timeout_s", "needs a probe to see the recovery", 'add probe = "WORKLOAD"')
    ledger: str | None = entry.get("ledger", str)
    if ledger is not None and ledger not in ledgers:
        raise entry.fail(
            "ledger",
            f"names unknown ledger {ledger!r}",
            f"define [ledgers.{ledger}] or use one of: {', '.join(ledgers) or '(none defined)'}",
        )
    profile_name = entry.get("profile", str, Profile.SMOKE.value)
    try:
        profile = Profile(profile_name)
    except ValueError:
        raise entry.fail("profile", f"must be smoke or full, not {profile_name!r}", 'write profile = "full"') from None
    verify = _verify(entry, fault, probe, traffic)
    hook = _hook(entry, spec.path)
    _check_objectives(entry, name, spec, probe, ledger, verify, hook)
    return Scenario(
        name=name,
        fault=fault,
        targets=targets,
        params=params,
        timing=timing,
        probe=probe,
        probe_timeout_s=probe_timeout,
        traffic=traffic,
        concurrency=concurrency,
        ledger=ledger,
        profile=profile,
        fresh=entry.get("fresh", bool, False),
        verify=verify,
        hook=hook,
        drill=_drill(entry),
    )


def _drill(entry: Reader) -> str | None:
    drill: str | None = entry.get("drill", str)
    if drill is not None and not NAME.match(drill):
        raise entry.fail(
            "drill", f"{drill!r} is not a drill name", 'write drill = "q1" (lower-case letters, digits, -)'
        )
    return drill


def _params(entry: Reader, fault: Fault, spec: StackSpec) -> dict[str, Any]:
    pt = entry.table("params")
    allowed = {p.key: p for p in PARAMS[fault]}
    if pt.data and not allowed:
        raise pt.fail(next(iter(pt.data)), f"{fault.value} takes no params", "remove [params]")
    pt.only(set(allowed))
    out: dict[str, Any] = {}
    for param in allowed.values():
        value = pt.get(param.key, param.kind, required=param.required)
        if value is None:
            continue
        if param.key == "stream" and value not in STREAMS:
            raise pt.fail("stream", f"must be downstream or upstream, not {value!r}", 'write stream = "upstream"')
        if param.key == "network" and value not in spec.networks:
            raise pt.fail(
                "network", f"{value!r} is not a network of this stack", f"use one of: {', '.join(spec.networks)}"
            )
        if param.key == "toxicity" and not 0 <= value <= 1:
            raise pt.fail("toxicity", f"must be between 0 and 1, not {value}", "write toxicity = 0.5")
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise pt.fail(param.key, f"must not be negative, not {value}", f"write {param.key} = 100")
        out[param.argument] = value
    return out


def _targets(entry: Reader, fault: Fault, spec: StackSpec, params: Mapping[str, Any]) -> tuple[str, ...]:
    raw = entry.get("target", (str, list), required=True)
    targets = (raw,) if isinstance(raw, str) else tuple(raw)
    if not targets or not all(isinstance(t, str) for t in targets):
        raise entry.fail("target", f"must be a name or a list of names, not {raw!r}", 'write target = "backend-1"')
    if len(set(targets)) != len(targets):
        raise entry.fail("target", f"names a target twice: {list(targets)}", "name each target once")
    instances = {i: svc for svc in spec.services.values() for i in svc.instances()}
    for target in targets:
        if fault.on_links:
            if target not in spec.links:
                raise entry.fail(
                    "target",
                    f"{target!r} is not a link of this stack ({fault.value} acts on a Toxiproxy link)",
                    f"use one of: {', '.join(spec.links) or '(none: define [links])'}",
                )
            continue
        svc = spec.services.get(target) or instances.get(target)
        if svc is None:
            names = sorted({*spec.services, *instances})
            raise entry.fail(
                "target",
                f"{target!r} is not a service or an instance of this stack",
                f"use one of: {', '.join(names)}",
            )
        network = params.get("network")
        if network is not None and network not in svc.networks:
            raise entry.fail(
                "target", f"{target} is not on network {network!r}", f"use one of: {', '.join(svc.networks)}"
            )
    return targets


def _verify(entry: Reader, fault: Fault, probe: str | None, traffic: str | None) -> Verify:
    vt = entry.table("verify")
    vt.only({
        "healthy", "outage", "min_probes", "during_statuses", "allowed_5xx", "felt_status",
        "p95_impact_min_ms", "p50_after_slack_ms",
    })  # fmt: skip

    def number(key: str) -> float | None:
        value = vt.get(key, (int, float))
        if value is not None and value < 0:
            raise vt.fail(key, f"must not be negative, not {value}", f"write {key} = 15")
        return None if value is None else float(value)

    min_probes = vt.get("min_probes", int)
    if min_probes is not None and min_probes < 1:
        raise vt.fail("min_probes", f"must be at least 1, not {min_probes}", "write min_probes = 50")
    felt = _statuses(vt, "felt_status", allow_none=True) if "felt_status" in vt.data else ()
    if "felt_status" in vt.data and len(felt) != 1:
        raise vt.fail("felt_status", "must be one status", "write felt_status = 503")
    verify = Verify(
        healthy=vt.get("healthy", bool, False),
        outage=vt.get("outage", bool, False),
        min_probes=min_probes,
        during_statuses=_statuses(vt, "during_statuses", allow_none=True),
        allowed_5xx=_statuses(vt, "allowed_5xx") if "allowed_5xx" in vt.data else None,
        felt_status=felt[0] if felt else None,
        p95_impact_min_ms=number("p95_impact_min_ms"),
        p50_after_slack_ms=number("p50_after_slack_ms"),
    )
    if verify.healthy and fault.on_links:
        raise vt.fail("healthy", f"checks containers, but {fault.value} targets a link", "remove it")
    if (verify.outage or verify.min_probes is not None) and probe is None:
        raise vt.fail("outage" if verify.outage else "min_probes", "needs a probe", 'add probe = "WORKLOAD"')
    if verify.uses_traffic and traffic is None:
        raise vt.fail("", "checks traffic during the fault, but the scenario has none", 'add traffic = "WORKLOAD"')
    return verify


def _hook(entry: Reader, stack_path: Path) -> Hook | None:
    raw: str | None = entry.get("hook", str)
    if raw is None:
        return None
    rel, _, function = raw.rpartition(":")
    if not rel or not function.isidentifier():
        raise entry.fail("hook", f"{raw!r} is not FILE.py:FUNCTION", 'write hook = "hooks.py:primary_failover"')
    file = (stack_path.parent / rel).resolve()
    try:
        tree = ast.parse(file.read_text(), str(file))
    except OSError as exc:
        raise entry.fail(
            "hook", f"cannot read {file}: {exc.strerror}", "fix the path (relative to the stack file)"
        ) from None
    except (SyntaxError, ValueError, UnicodeDecodeError) as exc:
        raise entry.fail("hook", f"{file} is not valid Python: {exc}", "fix the hook file") from None
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    if function not in defined:
        raise entry.fail(
            "hook",
            f"{file} defines no function {function}",
            f"define def {function}(stack, experiment, scenario) or use one of: {', '.join(sorted(defined)) or '-'}",
        )
    return Hook(file, function)


def _check_objectives(
    entry: Reader, name: str, spec: StackSpec, probe: str | None, ledger: str | None, verify: Verify, hook: Hook | None
) -> None:
    """A measure without an objective judges nothing: a silent pass. Say which one is missing."""
    objective = spec.objectives.chaos.get(name)
    if probe is not None and (objective is None or objective.rto_s is None):
        raise entry.fail(
            "probe", "measures an RTO, but there is no objective for it", f"add rto_s to [objectives.chaos.{name}]"
        )
    if ledger is not None and (objective is None or objective.rpo_s is None):
        raise entry.fail(
            "ledger", "measures an RPO, but there is no objective for it", f"add rpo_s to [objectives.chaos.{name}]"
        )
    # An objective nothing measures would show in the report as if it had been met.
    if objective is not None and hook is None:
        for key, measure, what in (("rto_s", probe, "probe"), ("rpo_s", ledger, "ledger")):
            if getattr(objective, key) is not None and measure is None:
                raise entry.fail(
                    what,
                    f"is missing, but [objectives.chaos.{name}] sets {key}: nothing would measure it",
                    f"add {what} = ... to the scenario, or remove {key} from the objective",
                )
    if probe is None and ledger is None and not verify.any and hook is None:
        raise entry.fail(
            "",
            "judges nothing: no probe (RTO), no ledger (RPO), no [verify] check and no hook",
            'add probe = "WORKLOAD" with [objectives.chaos.NAME] rto_s, or a [verify] check',
        )
