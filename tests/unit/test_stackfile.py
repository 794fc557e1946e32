"""Stack file parsing: the reference stack parses; every mistake is one StackFileError naming
the file, the key and the fix; nothing else ever escapes (property-tested with hypothesis)."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackcheck import stackfile
from stackcheck.errors import StackFileError
from stackcheck.stack import DEFAULT_STACK

REFERENCE = tomllib.loads(DEFAULT_STACK.read_text())
PATH = DEFAULT_STACK  # template files resolve next to the real stack file


def parse(data: dict[str, Any]) -> stackfile.StackSpec:
    return stackfile.parse(data, PATH)


def reference() -> dict[str, Any]:
    return copy.deepcopy(REFERENCE)


def test_reference_stack_parses_into_typed_objects() -> None:
    spec = parse(reference())
    assert spec.services["backend"].replicas == 2
    assert spec.services["backend"].instances() == ["backend-1", "backend-2"]
    assert spec.networks["internal"].internal is True
    assert spec.links["backend->redis"].upstream == "redis:6379"
    assert spec.services["redis"].ready is stackfile.Readiness.HEALTHCHECK
    assert spec.objectives.load["default"].p95_ms == 500
    assert spec.objectives.chaos["primary-kill"].rto_s == 30
    assert spec.services["toxiproxy"].sysctls == {"net.ipv4.tcp_syn_retries": "2"}
    assert spec.services["redis"].sysctls == {}


def test_start_order_respects_dependencies() -> None:
    waves = parse(reference()).start_order()
    position = {name: i for i, wave in enumerate(waves) for name in wave}
    assert position["postgres-primary"] < position["postgres-replica"] < position["backend"] < position["nginx"]


@pytest.mark.parametrize(
    ("mutate", "message", "fix"),
    [
        (
            lambda d: d["services"]["redis"].update(imagee="redis"),
            r"\[services\.redis\.imagee\] is not a known key",
            "image",
        ),
        (
            lambda d: d["services"]["backend"].update(replicas="2"),
            r"\[services\.backend\.replicas\] must be int",
            "int",
        ),
        (lambda d: d["services"]["backend"].update(replicas=True), r"replicas\] must be int, not bool", "int"),
        (
            lambda d: d["services"]["nginx"].update(depends_on=["frontend"]),
            "names unknown service 'frontend'",
            "backend",
        ),
        (
            lambda d: d["services"]["redis"]["networks"].update(dmz=[]),
            r"\[services\.redis\.networks\.dmz\] is not a network",
            "edge",
        ),
        (lambda d: d["links"]["backend->redis"].update(upstream="cache:6379"), "is not SERVICE:PORT", "redis"),
        (
            lambda d: d["links"].update({"backend-redis": {"upstream": "redis:6379", "listen": 17000}}),
            "is not a link name",
            "->",
        ),
        (lambda d: d["stack"].update(entrypoint="https://nginx:9999"), "entrypoint", "8443"),
        (
            lambda d: d["services"]["redis"]["env"].update(X="${secret.nope}"),
            r"\$\{secret\.nope\} is not in \[secrets\]",
            "secret",
        ),
        (lambda d: d["services"]["redis"]["env"].update(X="${link.a->b}"), r"\$\{link\.a->b\} is not a link", "link"),
        (lambda d: d["services"]["redis"].update(memory="lots"), "must look like 256m", "256m"),
        (lambda d: d["services"]["redis"].update(ready="eventually"), "ready\\] must be one of", "healthcheck"),
        (lambda d: d.update(extras={}), r"\[extras\] is not a known key", "services"),
        (
            lambda d: d["services"]["redis"].update(sysctls={"kernel.shmmax": "1"}),
            r"\[services\.redis\.sysctls\.kernel\.shmmax\] is not a net\.\* sysctl",
            "net.ipv4",
        ),
        (
            lambda d: d["services"]["redis"].update(sysctls={"net.ipv4.tcp_syn_retries": 2}),
            r"\[services\.redis\.sysctls\.net\.ipv4\.tcp_syn_retries\] must be str",
            "str",
        ),
        (lambda d: d["links"]["backend->redis"].update(listen=15432), "two links share a listen port", "listen"),
        (
            lambda d: d.update(disabled={"primary-failover": ""}),
            r"\[disabled\.primary-failover\] must give the reason",
            "why it does not apply",
        ),
        (lambda d: d.update(disabled={"primary-failover": True}), "must give the reason", "why it does not apply"),
    ],
)
def test_each_mistake_is_one_clear_error(mutate: Any, message: str, fix: str) -> None:
    data = reference()
    mutate(data)
    with pytest.raises(StackFileError, match=message) as err:
        parse(data)
    assert str(PATH) in err.value.problem
    assert fix in err.value.fix


def test_checks_are_disabled_by_name_with_a_reason() -> None:
    data = reference()
    data["disabled"] = {"primary-failover": "  staging runs a single database node  "}
    assert parse(data).disabled == {"primary-failover": "staging runs a single database node"}
    assert parse(reference()).disabled == {}


def test_a_dependency_cycle_is_named() -> None:
    data = reference()
    data["services"]["postgres-primary"]["depends_on"] = ["nginx"]
    with pytest.raises(StackFileError, match=r"dependency cycle: .*(nginx.*postgres-primary|postgres-primary.*nginx)"):
        parse(data)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(StackFileError, match="cannot read stack file") as err:
        stackfile.load(tmp_path / "missing.toml")
    assert "--stack" in err.value.fix
    bad = tmp_path / "bad.toml"
    bad.write_text("[services\nx = 1\n")
    with pytest.raises(StackFileError, match="not valid TOML"):
        stackfile.load(bad)


# -- properties -------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=False), st.text(max_size=12))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, (*prefix, key))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_mutation_of_the_reference_is_parsed_or_a_stackfile_error(data: st.DataObject) -> None:
    doc = reference()
    path = data.draw(st.sampled_from(_paths(doc)))
    *parents, last = path
    holder = doc
    for key in parents:
        holder = holder[key]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        holder[last] = data.draw(values)
    elif action == "delete":
        del holder[last]
    elif isinstance(holder[last], dict):
        holder[last][data.draw(st.text(min_size=1, max_size=8))] = data.draw(values)
    error = _error_of(doc)
    if error is not None:
        assert error.problem.startswith(str(PATH))
        assert error.fix


def _error_of(doc: dict[str, Any]) -> StackFileError | None:
    try:
        parse(doc)
    except StackFileError as err:
        return err
    return None


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["stack", "services", "networks", "links", "x"]), values, max_size=4))
def test_arbitrary_documents_never_escape_as_other_exceptions(doc: dict[str, Any]) -> None:
    with pytest.raises(StackFileError):
        parse(doc)


@settings(max_examples=100, deadline=None)
@given(edges=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=12))
def test_start_order_puts_every_dependency_first_or_reports_a_cycle(edges: list[tuple[int, int]]) -> None:
    names = [f"s{i}" for i in range(6)]
    deps: dict[str, set[str]] = {n: set() for n in names}
    for a, b in edges:
        deps[names[a]].add(names[b])
    doc: dict[str, Any] = {
        "stack": {"name": "dag", "entrypoint": "http://s0:80"},
        "networks": {"net": {}},
        "services": {
            n: {"image": "x", "networks": {"net": []}, "ports": [80], "depends_on": sorted(deps[n])} for n in names
        },
    }
    error = _error_of(doc)
    if error is not None:
        assert "dependency cycle" in error.problem
        return
    waves = parse(doc).start_order()
    position = {n: i for i, wave in enumerate(waves) for n in wave}
    assert all(position[d] < position[n] for n in names for d in deps[n])


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "stack.toml"
    path.write_bytes(b"[stack]\nname = '\x80'\n")
    with pytest.raises(StackFileError, match="not UTF-8 text"):
        stackfile.load(path)


def test_gpu_is_off_unless_asked_and_its_mode_is_checked() -> None:
    assert parse(reference()).services["backend"].gpu is stackfile.GpuMode.OFF
    data = reference()
    data["services"]["backend"]["gpu"] = "optional"
    assert parse(data).services["backend"].gpu is stackfile.GpuMode.OPTIONAL
    data["services"]["backend"]["gpu"] = "yes"
    with pytest.raises(StackFileError, match=r"\[services\.backend\.gpu\] must be one of") as err:
        parse(data)
    assert 'gpu = "optional"' in err.value.fix
