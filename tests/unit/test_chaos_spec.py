"""The stack file's [workloads], [ledgers] and [scenarios]: parsed into typed objects, every
mistake one clear StackFileError, and the fault table in step with stackcheck.chaos.faults."""

from __future__ import annotations

import copy
import inspect
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from stackcheck import stackfile
from stackcheck.chaos import faults
from stackcheck.chaos.experiment import Experiment
from stackcheck.chaos.scenarios import run_scenario
from stackcheck.chaos.spec import PARAMS, Fault, Hook, Profile, Store, render, render_value
from stackcheck.chaos.workloads import HttpRequest, LedgerStore
from stackcheck.errors import StackcheckError, StackFileError
from stackcheck.stack import DEFAULT_STACK
from stackcheck.stackfile import StackSpec, parse

REFERENCE = tomllib.loads(DEFAULT_STACK.read_text())


def reference() -> dict[str, Any]:
    return copy.deepcopy(REFERENCE)


def spec_of(data: dict[str, Any], path: Path = DEFAULT_STACK) -> StackSpec:
    return parse(data, path)


def test_the_reference_scenarios_parse_into_typed_objects() -> None:
    chaos = spec_of(reference()).chaos
    assert list(chaos.scenarios) == [
        "backend-kill", "primary-kill", "redis-kill", "db-latency", "db-reset-peer", "replica-partition", "llm-down",
    ]  # fmt: skip
    kill = chaos.scenarios["backend-kill"]
    assert (kill.fault, kill.targets, kill.probe, kill.traffic) == (
        Fault.KILL,
        ("backend-1",),
        "list-cards",
        "list-cards",
    )
    assert kill.verify.healthy
    assert kill.verify.min_probes == 51
    primary = chaos.scenarios["primary-kill"]
    assert primary.params == {"restart": False}
    assert (primary.profile, primary.fresh, primary.ledger) == (Profile.FULL, True, "cards")
    assert primary.hook == Hook(DEFAULT_STACK.parent.resolve() / "hooks.py", "primary_failover")
    latency = chaos.scenarios["db-latency"]
    assert latency.params == {"ms": 200}
    assert (latency.timing.warmup_s, latency.timing.duration_s, latency.timing.settle_s) == (4.0, 6.0, 1.0)
    assert latency.verify.p95_impact_min_ms == 1140
    assert latency.verify.during_statuses == (201,)
    assert chaos.scenarios["db-reset-peer"].verify.allowed_5xx == (503,)
    cards = chaos.ledgers["cards"]
    assert (cards.write.store, cards.write.workload) == (Store.HTTP, "ledger-card")
    assert (cards.read.store, cards.read.service) == (Store.SQL, "postgres-replica")
    sessions = chaos.ledgers["sessions"]
    assert (sessions.write.store, sessions.read.store, sessions.interval_s) == (Store.REDIS, Store.REDIS, 0.01)
    assert chaos.workloads["ledger-card"].expect_status == (201,)


def test_templates_fill_run_n_and_id_everywhere() -> None:
    assert render("ledger ${id} of ${run} #${n}", "r1", 7) == "ledger r1-7 of r1 #7"
    body = {"title": "t ${n}", "tags": ["${run}"], "n": 3, "${run}": True}
    assert render_value(body, "r1", 2) == {"title": "t 2", "tags": ["r1"], "n": 3, "r1": True}


def test_a_workload_request_and_its_expectations() -> None:
    workload = spec_of(reference()).chaos.workloads["ledger-card"]
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201 if request.method == "POST" else 500, text="created")

    with httpx.Client(base_url="http://test", transport=httpx.MockTransport(answer)) as client:
        request = HttpRequest(workload, "primary-kill-ab12")
        response = request.send(client, 9)
        assert request.problem(response) is None
    assert sent[0].url.path == "/api/prompt-cards"
    assert b'"title":"ledger primary-kill-ab12-9"' in sent[0].content
    assert b'"category":"ledger-primary-kill-ab12"' in sent[0].content
    assert request.problem(httpx.Response(200)) == "POST /api/prompt-cards answered 200"


def test_the_ledger_finds_each_write_once_per_record_and_counts_duplicates() -> None:
    store = LedgerStore.__new__(LedgerStore)  # only the read-back's parsing: no stack
    store.ledger, store.run = spec_of(reference()).chaos.ledgers["cards"], "redis-kill-1"
    records = ["ledger redis-kill-1-1", "ledger redis-kill-1-2 (copy of redis-kill-1-2)", "ledger redis-kill-1-2"]
    store.records = lambda: records  # type: ignore[method-assign]
    assert store.surviving() == [1, 2, 2]  # 2 is in two records: a duplicate; once per record
    records.append("ledger redis-kill-10-3")  # another experiment's run tag: not ours
    assert store.surviving() == [1, 2, 2]


def test_the_fault_table_is_the_fault_functions_signatures() -> None:
    """Every option a fault function takes can be given in params, and nothing else."""
    functions = {
        Fault.KILL: faults.kill, Fault.STOP: faults.stop, Fault.PAUSE: faults.pause, Fault.RESTART: faults.restart,
        Fault.DISCONNECT: faults.disconnect, Fault.PARTITION: faults.partition, Fault.LATENCY: faults.latency,
        Fault.BANDWIDTH: faults.bandwidth, Fault.SLOW_CLOSE: faults.slow_close, Fault.TIMEOUT: faults.timeout,
        Fault.RESET_PEER: faults.reset_peer, Fault.SLICER: faults.slicer, Fault.LIMIT_DATA: faults.limit_data,
        Fault.LINK_DOWN: faults.link_down,
    }  # fmt: skip
    assert set(functions) == set(Fault)
    for fault, function in functions.items():
        signature = inspect.signature(function).parameters
        options = set(signature) - {"stack", "handle", "group", "link", "journal"}
        assert {p.argument for p in PARAMS[fault]} == options, fault
        assert signature["journal"].kind is inspect.Parameter.KEYWORD_ONLY, f"{fault}: journal is keyword-only"


def scenario(**entry: Any) -> dict[str, Any]:
    """The reference stack with one scenario of its own (and its objective)."""
    data = reference()
    data["scenarios"]["mine"] = entry
    data["objectives"]["chaos"]["mine"] = {"rto_s": 5, "rpo_s": 1}
    return data


OK = {"fault": "kill", "target": "redis", "probe": "list-cards", "ledger": "sessions"}


def test_a_minimal_scenario_and_its_defaults() -> None:
    mine = spec_of(scenario(**OK)).chaos.scenarios["mine"]
    assert (mine.timing.warmup_s, mine.timing.duration_s, mine.timing.after_s) == (1.0, 3.0, 1.0)
    assert (mine.profile, mine.fresh, mine.hook, mine.probe_timeout_s) == (Profile.SMOKE, False, None, 1.0)
    data = scenario(fault="down", target="backend->redis", probe="list-cards")
    data["objectives"]["chaos"]["mine"].pop("rpo_s")
    down = spec_of(data).chaos.scenarios["mine"]
    assert down.fault is Fault.LINK_DOWN
    both = spec_of(scenario(**{**OK, "target": ["backend", "redis"]})).chaos.scenarios["mine"]
    assert both.targets == ("backend", "redis")


def sc(**entry: Any) -> Any:
    """A change to the scenario under test."""
    return lambda d: d["scenarios"]["mine"].update(**entry)


def link(**entry: Any) -> Any:
    """The scenario under test as a latency on a link, changed."""
    return sc(**{"fault": "latency", "target": "backend->redis", **entry})


def workload(**entry: Any) -> Any:
    return lambda d: d["workloads"].update(ping=entry)


def ledger(name: str, part: str | None = None, **entry: Any) -> Any:
    return lambda d: (d["ledgers"][name][part] if part else d["ledgers"][name]).update(**entry)


def without(*path: str) -> Any:
    def mutate(d: dict[str, Any]) -> None:
        for key in path[:-1]:
            d = d[key]
        d.pop(path[-1])

    return mutate


def both(*changes: Any) -> Any:
    return lambda d: [change(d) for change in changes]


NO_PROBE = both(without("scenarios", "mine", "probe"), without("objectives", "chaos", "mine", "rto_s"))


@pytest.mark.parametrize(
    ("mutate", "message", "fix"),
    [
        # faults, targets, params
        (sc(fault="meteor"), r"\[scenarios\.mine\.fault\] 'meteor' is not a fault", "kill, stop"),
        (without("scenarios", "mine", "fault"), r"\[scenarios\.mine\.fault\] is missing", "fault"),
        (sc(target="mysql"), r"'mysql' is not a service or an instance", "backend-1"),
        (sc(target="backend-3"), "'backend-3' is not a service or an instance", "backend-2"),
        (sc(fault="latency", params={"ms": 1}), "'redis' is not a link of this stack", "backend->redis"),
        (link(target="a->b", params={"ms": 1}), "'a->b' is not a link", "backend->postgres-primary"),
        (sc(target="backend->redis"), "is not a service or an instance", "redis"),
        (sc(target=[]), "must be a name or a list of names", "backend-1"),
        (sc(target=["redis", "redis"]), "names a target twice", "once"),
        (sc(params={"ms": 5}), r"\[scenarios\.mine\.params\.ms\] is not a known key", "restart, signal"),
        (sc(fault="pause", params={"x": 1}), "pause takes no params", "remove"),
        (link(), r"params\.ms\] is missing", "ms"),
        (link(params={"ms": "x"}), "must be int", "int"),
        (link(params={"ms": 1, "stream": "sideways"}), "downstream or upstream", "upstream"),
        (link(params={"ms": -1}), "must not be negative", "100"),
        (link(params={"ms": 1, "toxicity": 2}), "between 0 and 1", "0.5"),
        (sc(fault="disconnect"), r"params\.network\] is missing", "network"),
        (sc(fault="partition", params={"network": "moon"}), "'moon' is not a network", "internal"),
        (sc(fault="partition", target="nginx", params={"network": "control"}), "not on network 'control'", "edge"),
        (sc(fault="restart", duration_s=3), "not used by restart", "after_s"),
        (sc(duration_s=-1), "between 0 and 3600", "duration_s"),
        (sc(profile="nightly"), "must be smoke or full", "full"),
        (sc(fresh="yes"), r"fresh\] must be bool", "bool"),
        (sc(colour="red"), r"\[scenarios\.mine\.colour\] is not a known key", "verify"),
        (lambda d: d["scenarios"].update(Mine={}), "not a valid scenario name", "lower-case"),
        # references
        (sc(probe="ping"), "names unknown workload 'ping'", "list-cards"),
        (sc(traffic="ping"), "names unknown workload 'ping'", "[workloads.ping]"),
        (sc(ledger="orders"), "names unknown ledger 'orders'", "cards, sessions"),
        (sc(concurrency=2), "concurrency] is given without traffic", "traffic"),
        (sc(traffic="list-cards", concurrency=0), "between 1 and 64", "2"),
        # objectives: a measure without one, an objective nothing measures, a scenario that judges nothing
        (without("objectives", "chaos", "mine", "rto_s"), "measures an RTO, but there is no objective", "rto_s"),
        (without("objectives", "chaos", "mine"), "measures an RTO, but there is no", "[objectives.chaos.mine]"),
        (without("objectives", "chaos", "mine", "rpo_s"), "measures an RPO, but there is no objective", "rpo_s"),
        (without("scenarios", "mine", "ledger"), r"ledger\] is missing, but .* sets rpo_s", "remove rpo_s"),
        (
            both(NO_PROBE, without("scenarios", "mine", "ledger"), without("objectives", "chaos", "mine")),
            "judges nothing",
            "verify",
        ),
        (
            lambda d: d["objectives"]["chaos"].update(typo={"rto_s": 1}),
            r"\[objectives\.chaos\.typo\] is an objective for a scenario the stack file does not declare",
            "backend-kill",
        ),
        # verify
        (sc(verify={"sure": True}), r"verify\.sure\] is not a known key", "healthy"),
        (sc(verify={"felt_status": 503}), "checks traffic during the fault, but the scenario has none", "traffic"),
        (sc(traffic="list-cards", verify={"during_statuses": [200, 700]}), "must be HTTP statuses", "200"),
        (link(params={"ms": 1}, verify={"healthy": True}), "checks containers, but latency targets a link", "remove"),
        (both(NO_PROBE, sc(verify={"outage": True})), r"verify\.outage\] needs a probe", "probe"),
        (both(NO_PROBE, sc(recovery_timeout_s=5)), "needs a probe to see the recovery", "probe"),
        # hooks
        (sc(hook="hooks.py"), "is not FILE.py:FUNCTION", "hooks.py:primary_failover"),
        (sc(hook="nope.py:go"), r"hook\] cannot read .*nope\.py", "relative to the stack file"),
        (sc(hook="hooks.py:go"), "hooks.py defines no function go", "primary_failover"),
        # workloads
        (workload(path="/x", method="FETCH"), "'FETCH' is not an HTTP method", "GET"),
        (workload(path="x"), "does not start with /", "path"),
        (workload(method="GET"), r"\[workloads\.ping\.path\] is missing", "path"),
        (workload(path="/x", json={}, body="b"), "and json are both set", "keep one"),
        (workload(path="/x/${seq}"), r"unknown field \$\{seq\}", "${run}"),
        (workload(path="/x", expect_status=["ok"]), "must be HTTP statuses", "200"),
        (workload(path="/x", timeout=1), r"workloads\.ping\.timeout\] is not a known key", "expect_status"),
        # ledgers
        (without("ledgers", "cards", "read"), r"\[ledgers\.cards\.read\] is missing", "[ledgers.cards.read]"),
        (ledger("cards", "write", sql="INSERT"), "needs exactly one of workload, sql, redis_set", "workload"),
        (ledger("cards", "write", workload="ping"), "names unknown workload 'ping'", "ledger-card"),
        (ledger("cards", "write", workload="list-cards"), r"does not carry \$\{id\}", "${id}"),
        (ledger("sessions", "write", redis_set="ledger:${run}"), r"does not carry \$\{id\}", "${id}"),
        (ledger("sessions", "write", service="mysql"), "names unknown service 'mysql'", "redis"),
        (ledger("sessions", "write", service="backend"), "backend does not publish port 6379", "6379"),
        (ledger("cards", "read", service="redis"), "redis does not publish port 5432", "5432"),
        (ledger("cards", "write", service="redis"), "is for sql and redis_set writes", "remove"),
        (ledger("cards", "read", records="items"), "is for workload reads", "remove"),
        (ledger("cards", read={"workload": "list-cards", "records": "a..b"}), "is not a dotted path", "items"),
        (ledger("cards", "read", sql="SELECT ${tag}"), r"unknown field \$\{tag\}", "${id}"),
        (ledger("cards", regex="(x"), "is not a regular expression", "${run}"),
        (ledger("cards", regex="${run}-\\d+"), "has 0 groups, not 1", "(\\d+)"),
        (ledger("cards", interval_s=0), "must be positive", "0.05"),
    ],
)
def test_each_mistake_is_one_clear_error(mutate: Any, message: str, fix: str) -> None:
    data = scenario(**OK)
    mutate(data)
    with pytest.raises(StackFileError, match=message) as err:
        spec_of(data)
    assert err.value.problem.startswith(str(DEFAULT_STACK))
    assert fix in err.value.fix


def test_a_hook_that_is_not_python_is_named(tmp_path: Path) -> None:
    (tmp_path / "hooks.py").write_text("def broken(:\n")
    data = scenario(**OK, hook="hooks.py:broken")
    data["stack"].pop("policy", None)  # files named relative to the stack file are not in tmp_path
    data["services"]["nginx"]["files"] = {}
    for name in ("primary-kill", "replica-partition"):
        data["scenarios"].pop(name)
        data["objectives"]["chaos"].pop(name)
    with pytest.raises(StackFileError, match=r"hooks\.py is not valid Python"):
        spec_of(data, tmp_path / "stack.toml")


def test_a_stack_without_scenarios_has_none_and_keeps_its_objectives() -> None:
    data = reference()
    for key in ("scenarios", "ledgers", "workloads"):
        data.pop(key)
    spec = spec_of(data)
    assert spec.chaos.scenarios == {}
    assert "primary-kill" in spec.objectives.chaos  # the suite's one check is NOT EVALUATED: no silent pass


HOOK_STACK = """
[stack]
name = "hooked"
entrypoint = "http://web:8080"
[networks.edge]
[services.web]
image = "nginx"
networks = { edge = [] }
ports = [8080]
[workloads.write]
method = "POST"
path = "/items/${id}"
[workloads.read]
path = "/items?tag=${run}"
[ledgers.items]
write = { workload = "write" }
read = { workload = "read", records = "items" }
[scenarios.mine]
fault = "stop"
target = "web"
ledger = "items"
verify = { healthy = true }
hook = "hooks.py:run"
[objectives.chaos.mine]
rpo_s = 0
"""


def hooked(folder: Path, body: str) -> tuple[Any, Any]:
    """A stack file whose scenario's hook is ``body``, in a folder of its own (hooks are imported once
    per file); a stand-in stack (the hooks below touch no engine)."""
    folder.mkdir()
    (folder / "hooks.py").write_text(body)
    (folder / "stack.toml").write_text(HOOK_STACK)
    spec = stackfile.load(folder / "stack.toml")
    return SimpleNamespace(spec=spec), spec.chaos.scenarios["mine"]


def test_a_hook_is_loaded_by_path_and_must_judge_what_the_stack_file_declares(tmp_path: Path) -> None:
    stack, mine = hooked(tmp_path / "a", "def run(stack, experiment, scenario):\n    return experiment.finish()\n")
    with pytest.raises(StackcheckError, match=r"left out the ledger read-back .* and the \[verify\] checks"):
        run_scenario(stack, Experiment("mine", stack), mine)

    judged = (
        "def run(stack, experiment, scenario):\n"
        "    experiment.ledger(lambda n: None).write()\n"
        "    experiment.reconcile([1])\n"
        "    from stackcheck.chaos import scenarios\n"
        "    scenarios._verified.add(id(experiment))\n"
        "    return experiment.finish()\n"
    )
    stack, mine = hooked(tmp_path / "b", judged)
    result = run_scenario(stack, Experiment("mine", stack), mine)
    assert result.passed
    assert result.rpo is not None
    assert result.rpo.acknowledged == 1


def test_a_hook_that_returns_no_result_or_is_gone_is_a_clear_error(tmp_path: Path) -> None:
    stack, mine = hooked(tmp_path / "a", "def run(stack, experiment, scenario):\n    return None\n")
    with pytest.raises(StackcheckError, match=r"hooks\.py:run returned NoneType, not an ExperimentResult"):
        run_scenario(stack, Experiment("mine", stack), mine)
    other = tmp_path / "b"
    stack, mine = hooked(other, "def run(stack, experiment, scenario):\n    return None\n")
    (other / "hooks.py").write_text("def renamed(stack, experiment, scenario):\n    pass\n")  # after the file was read
    with pytest.raises(StackFileError, match="defines no function run"):
        run_scenario(stack, Experiment("mine", stack), mine)
