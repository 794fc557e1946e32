"""The stack file's [load] mix: parsing (every mistake one StackFileError naming file, key and
fix), template filling, weights, the plan round trip, and "no mix" as a clear not-evaluated."""

from __future__ import annotations

import json
import random
import re
import shutil
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stackcheck import loadmix, resources, stackfile
from stackcheck.errors import StackFileError
from stackcheck.load import LoadRun, Mode, profiles
from stackcheck.load.errors import LoadError
from stackcheck.load.runner import NO_MIX
from stackcheck.loadmix import Field, HttpTemplate, Kind, LoadMix, MixRequest, Values, capture
from stackcheck.stack import DEFAULT_STACK
from stackcheck.target import HttpTarget

MINI = {
    "stack": {"name": "mini", "entrypoint": "http://web:8080"},
    "networks": {"edge": {}},
    "services": {"web": {"image": "nginx", "networks": {"edge": []}, "ports": [8080]}},
    "objectives": {"load": {"default": {"p95_ms": 500}, "write": {"p95_ms": 300}}},
}


def mini(load: dict[str, Any], objectives: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.loads(json.dumps(MINI))
    if objectives is not None:
        data["objectives"]["load"] = objectives
    data["load"] = load
    return data


def parse(data: dict[str, Any], tmp_path: Path) -> LoadMix | None:
    return stackfile.parse(data, tmp_path / "stack.toml").load_mix


GET = {"method": "GET", "path": "/"}


def test_the_reference_mix_is_todays_prompt_card_mix() -> None:
    mix = stackfile.parse(tomllib.loads(DEFAULT_STACK.read_text()), DEFAULT_STACK).load_mix
    assert mix is not None
    table = {r.name: (r.http.method, r.group, r.weight, r.http.expect) for r in mix.requests}
    assert table == {
        "list": ("GET", "read", 20, (200,)),
        "filter": ("GET", "read", 15, (200,)),
        "search": ("GET", "read", 10, (200,)),
        "get": ("GET", "read", 25, (200,)),
        "create": ("POST", "write", 8, (201,)),
        "update": ("PUT", "write", 6, (200,)),
        "delete": ("DELETE", "write", 4, (204,)),
        "test-case-create": ("POST", "write", 4, (201,)),
        "test-cases": ("GET", "read", 4, (200,)),
        "execute": ("POST", "llm", 3, (200,)),
        "health": ("GET", "health", 4, (200,)),
    }
    assert [(s.name, s.count, s.capture) for s in mix.seeds] == [("cards", 20, "id")]
    assert mix.values["words"] == ("alpha", "bravo", "charlie", "delta")
    [sweep] = mix.cleanup
    assert sweep.capture == "items.*.id"
    assert sweep.each is not None
    assert sweep.each.method == "DELETE"
    assert mix.request("delete").http.fields == (Field(Kind.TAKE, "create"),)
    # Groups: read (judged endpoint by endpoint by default), write, health, llm.
    assert {r.group for r in mix.requests} == {"read", "write", "health", "llm"}


def test_a_stack_without_load_has_no_mix_and_a_load_run_says_so(tmp_path: Path) -> None:
    data = json.loads(json.dumps(MINI))
    assert stackfile.parse(data, tmp_path / "stack.toml").load_mix is None
    run = LoadRun(HttpTarget.external("https://127.0.0.1:1"), profiles.get("smoke"), reports_dir=tmp_path)
    with pytest.raises(LoadError, match=re.escape(NO_MIX)) as caught:
        run.run()
    assert "[load.requests.NAME]" in caught.value.fix


def test_a_stack_locustfile_runs_closed_loop_only(tmp_path: Path) -> None:
    mix = LoadMix(locustfile=tmp_path / "users.py")
    target = HttpTarget.external("https://127.0.0.1:1")
    run = LoadRun(target, profiles.get("smoke"), mix=mix, mode=Mode.OPEN, reports_dir=tmp_path)
    with pytest.raises(LoadError, match=r"open loop sends the stack file's \[load\.requests\]"):
        run.run()


@pytest.mark.parametrize(
    ("load", "key", "message"),
    [
        ({"requests": {"a": GET}, "request": {}}, r"\[load\.request\]", "is not a known key"),
        ({"requests": {"a": {**GET, "weigth": 2}}}, r"\[load\.requests\.a\.weigth\]", "is not a known key"),
        ({"requests": {"a": {**GET, "method": "FETCH"}}}, r"\[load\.requests\.a\.method\]", "'FETCH' is not an HTTP"),
        ({"requests": {"a": {**GET, "weight": 0}}}, r"\[load\.requests\.a\.weight\]", "must be more than 0, not 0"),
        ({"requests": {"a": {**GET, "weight": -2.5}}}, r"\[load\.requests\.a\.weight\]", "more than 0, not -2.5"),
        ({"requests": {"a": {**GET, "weight": "3"}}}, r"\[load\.requests\.a\.weight\]", "must be int or float"),
        ({"requests": {"a": {"method": "GET"}}}, r"\[load\.requests\.a\.path\]", "is missing"),
        ({"requests": {"a": {**GET, "path": "api"}}}, r"\[load\.requests\.a\.path\]", "does not start with /"),
        ({"requests": {"a": {**GET, "path": "/${pick.cards}"}}}, r"\[load\.requests\.a\.path\]", "names no seed"),
        ({"requests": {"a": {**GET, "path": "/${foo}"}}}, r"\[load\.requests\.a\.path\]", r"\$\{foo\} is not a field"),
        (
            {"requests": {"a": {**GET, "path": "/${random.9-1}"}}},
            r"\[load\.requests\.a\.path\]",
            "ends before it starts",
        ),
        ({"requests": {"a": {**GET, "path": "/${random.x}"}}}, r"\[load\.requests\.a\.path\]", "is not a range LO-HI"),
        ({"requests": {"a": {**GET, "path": "/${seq.1}"}}}, r"\[load\.requests\.a\.path\]", "takes no argument"),
        (
            {"requests": {"a": {**GET, "path": "/${item}"}}},
            r"\[load\.requests\.a\.path\]",
            r"only for a cleanup's each",
        ),
        ({"requests": {"a": {**GET, "json": {"x": "${pick}"}}}}, r"\[load\.requests\.a\.json\]", "names no list"),
        (
            {"requests": {"a": {**GET, "headers": {"X": "${run.x}"}}}},
            r"\[load\.requests\.a\.headers\]",
            "takes no argument",
        ),
        ({"requests": {"a": {**GET, "json": {}, "body": ""}}}, r"\[load\.requests\.a\.body\]", "both set"),
        ({"requests": {"a": {**GET, "expect": [2000]}}}, r"\[load\.requests\.a\.expect\]", "HTTP statuses"),
        ({"requests": {"a": {**GET, "capture": "a..b"}}}, r"\[load\.requests\.a\.capture\]", "is not a dotted path"),
        ({"requests": {"A": GET}}, r"\[load\.requests\.A\]", "not a valid request name"),
        ({"seed": {"s": GET}}, r"\[load\.requests\]", "declares no request"),
        ({}, None, None),  # an empty [load] is no [load]
    ],
)
def test_every_mistake_is_one_error_naming_file_key_and_fix(
    load: dict[str, Any], key: str | None, message: str | None, tmp_path: Path
) -> None:
    if key is None:
        assert parse(mini(load), tmp_path) is None
        return
    with pytest.raises(StackFileError, match=rf"{re.escape(str(tmp_path))}/stack\.toml: {key} .*{message}") as caught:
        parse(mini(load), tmp_path)
    assert caught.value.fix


def test_a_group_without_objective_is_judged_by_default_and_rejected_without_one(tmp_path: Path) -> None:
    load = {"requests": {"list": {**GET, "group": "read"}, "save": {**GET, "method": "POST", "group": "write"}}}
    mix = parse(mini(load), tmp_path)  # read: no [objectives.load.read], but default judges it
    assert mix is not None
    assert [r.group for r in mix.requests] == ["read", "write"]
    with pytest.raises(
        StackFileError, match=r"\[load\.requests\.list\.group\] 'read' has no \[objectives\.load\.read\]"
    ):
        parse(mini(load, objectives={"write": {"p95_ms": 300}}), tmp_path)
    # Named after an endpoint objective, or its own name as the group: judged.
    assert parse(mini({"requests": {"write": GET}}, objectives={"write": {"p95_ms": 1}}), tmp_path) is not None
    with pytest.raises(StackFileError, match="has no"):  # only a total: nothing judges the request itself
        parse(mini({"requests": {"a": GET}}, objectives={"total": {"min_rps": 1}}), tmp_path)


def test_lists_seeds_and_captures_are_checked_where_they_are_used(tmp_path: Path) -> None:
    seed = {"method": "POST", "path": "/s"}
    cases = [
        ({"seed": {"s": seed}, "requests": {"a": {**GET, "path": "/${pick.s}"}}}, "seed 's' captures nothing"),
        (
            {"seed": {"s": {**seed, "capture": "id"}}, "requests": {"a": {**GET, "path": "/${take.s}"}}},
            r"\$\{take\.s\} takes from a list only a capturing",
        ),
        (
            {"requests": {"c": {**GET, "capture": "id", "path": "/${pick.c}"}}},
            "a request that captures cannot read request 'c'",
        ),
        ({"requests": {"c": GET, "u": {**GET, "path": "/${pick.c}"}}}, "names no seed with capture"),
        (
            {"seed": {"s": {**seed, "path": "/${pick.t}"}, "t": {**seed, "capture": "id"}}, "requests": {"a": GET}},
            r"\[load\.seed\.s\.path\].*names no seed",  # seeds run in file order: t comes later
        ),
        ({"seed": {"s": {**seed, "count": 0}}, "requests": {"a": GET}}, r"\[load\.seed\.s\.count\] must be at least 1"),
        ({"values": {"w": []}, "requests": {"a": GET}}, r"\[load\.values\.w\] must be a non-empty list"),
        ({"values": {"w": [{"x": 1}]}, "requests": {"a": GET}}, r"\[load\.values\.w\] must be a non-empty list"),
        (
            {"values": {"s": ["x"]}, "seed": {"s": {**seed, "capture": "id"}}, "requests": {"a": GET}},
            r"\[load\.seed\.s\] is also the name of a seed or \[load\.values\] list",
        ),
        (
            {"requests": {"a": GET}, "cleanup": {"c": {**GET, "each": {"method": "DELETE", "path": "/${item}"}}}},
            r"\[load\.cleanup\.c\.each\] needs capture",
        ),
        ({"requests": {"a": GET}, "cleanup": {"c": {**GET, "capture": "id"}}}, r"\[load\.cleanup\.c\.capture\]"),
        (
            {
                "requests": {"a": GET},
                "cleanup": {"c": {**GET, "capture": "id", "each": {"method": "DELETE", "path": "/x"}}},
            },
            r"\[load\.cleanup\.c\.each\.path\] never uses \$\{item\}",
        ),
        (
            {"requests": {"a": GET}, "cleanup": {"c": {**GET, "capture": "id", "each": {**GET, "bogus": 1}}}},
            r"\[load\.cleanup\.c\.each\.bogus\] is not a known key",
        ),
    ]
    for load, message in cases:
        with pytest.raises(StackFileError, match=message):
            parse(mini(load), tmp_path)


def test_a_stack_locustfile_must_exist_and_stand_alone(tmp_path: Path) -> None:
    with pytest.raises(StackFileError, match=r"\[load\.locustfile\] .*perf/users\.py does not exist") as caught:
        parse(mini({"locustfile": "perf/users.py"}), tmp_path)
    assert "relative to the stack file" in caught.value.fix
    (tmp_path / "perf").mkdir()
    (tmp_path / "perf" / "users.py").write_text("")
    mix = parse(mini({"locustfile": "perf/users.py"}), tmp_path)
    assert mix is not None
    assert mix.locustfile == (tmp_path / "perf" / "users.py").resolve()
    assert mix.requests == ()
    with pytest.raises(StackFileError, match=r"\[load\.requests\] cannot be used with locustfile"):
        parse(mini({"locustfile": "perf/users.py", "requests": {"a": GET}}), tmp_path)


def test_toml_dates_in_a_json_template_are_rejected(tmp_path: Path) -> None:
    data = tomllib.loads('[requests.a]\nmethod = "POST"\npath = "/"\njson = { at = 2026-01-01 }\n')
    with pytest.raises(StackFileError, match=r"\[load\.requests\.a\.json\] holds datetime\.date"):
        parse(mini(data), tmp_path)


# -- templates ----------------------------------------------------------------------------------


def template(**kwargs: Any) -> HttpTemplate:
    kwargs.setdefault("method", "POST")
    kwargs.setdefault("path", "/")
    return HttpTemplate(**kwargs)


def test_seq_random_run_and_time_fill_in() -> None:
    t = template(path="/x/${seq}/${random}?n=${random.1-3}&run=${run}", json={"at": "${time}", "n": "${seq}"})
    filled = t.render(Values("sc-run-1", 41, rng=random.Random(7)))
    match = re.fullmatch(r"/x/41/([0-9a-f]{8})\?n=([123])&run=sc-run-1", filled.path)
    assert match, filled.path
    assert filled.json["n"] == 41  # exactly one field: keeps its type
    assert isinstance(filled.json["at"], float)
    rng = random.Random(1)
    drawn = Counter(t.render(Values("r", 0, rng=rng)).path.split("n=")[1].split("&")[0] for _ in range(3000))
    assert set(drawn) == {"1", "2", "3"}
    assert min(drawn.values()) > 900  # uniform over 1..3


def test_every_occurrence_of_a_field_in_one_request_gets_the_same_value() -> None:
    t = template(
        path="/${pick.words}/${random}",
        json={"title": "load ${pick.words}", "prompt": "Summarise {{text}} (${pick.words})", "id": "${random}"},
        headers={"X-Id": "${random}"},
    )
    for seed in range(20):
        filled = t.render(Values("r", 0, {"words": ["alpha", "bravo", "charlie"]}, rng=random.Random(seed)))
        word, token = filled.path.split("/")[1:]
        assert filled.json == {"title": f"load {word}", "prompt": f"Summarise {{{{text}}}} ({word})", "id": token}
        assert filled.headers == {"X-Id": token}


def test_pick_take_and_the_list_a_request_is_missing() -> None:
    lists: dict[str, list[Any]] = {"cards": ["c1", "c2"], "create": []}
    get, delete = template(path="/cards/${pick.cards}"), template(method="DELETE", path="/own/${take.create}")
    assert get.missing(lists) is None
    assert delete.missing(lists) == "create"
    assert {get.render(Values("r", 0, lists, rng=random.Random(s))).path for s in range(30)} == {
        "/cards/c1",
        "/cards/c2",
    }
    lists["create"] += ["o1", "o2"]
    assert [delete.render(Values("r", 0, lists)).path for _ in range(2)] == ["/own/o1", "/own/o2"]  # oldest first
    assert lists["create"] == []
    assert delete.missing(lists) == "create"
    assert template(path="/${pick.nothing}").missing(lists) == "nothing"


def test_values_are_percent_encoded_in_the_path_only_and_dollars_escape() -> None:
    t = template(path="/q?w=${pick.w}&lit=$${run}", body="w=${pick.w} ${run}", json=["${pick.w}", "$${seq}"])
    filled = t.render(Values("r/1", 0, {"w": ["a b/c&d"]}))
    assert filled.path == "/q?w=a%20b%2Fc%26d&lit=${run}"
    assert filled.body == "w=a b/c&d r/1"
    assert filled.json == ["a b/c&d", "${seq}"]
    assert t.fields == (Field(Kind.PICK, "w"), Field(Kind.RUN))


def test_a_captured_number_stays_a_number_in_json() -> None:
    filled = template(json={"card_id": "${pick.ids}", "label": "card ${pick.ids}"}).render(Values("r", 0, {"ids": [7]}))
    assert filled.json == {"card_id": 7, "label": "card 7"}


def test_expect_defaults_to_any_2xx() -> None:
    assert [template().accepts(s) for s in (200, 201, 204, 299, 302, 404)] == [True] * 4 + [False] * 2
    assert [template(expect=(204, 404)).accepts(s) for s in (200, 204, 404)] == [False, True, True]


@pytest.mark.parametrize(
    ("path", "document", "found"),
    [
        ("id", {"id": "a1"}, ["a1"]),
        ("data.id", {"data": {"id": 5}}, [5]),
        ("items.*.id", {"items": [{"id": "x"}, {"id": "y"}, {"name": "no id"}]}, ["x", "y"]),
        ("items.1.id", {"items": [{"id": "x"}, {"id": "y"}]}, ["y"]),
        ("items.*.id", {"items": []}, []),
        ("id", {"id": {"nested": 1}}, []),  # only strings and numbers are values
        ("id", {"id": True}, []),
        ("id", ["not", "a", "table"], []),
    ],
)
def test_capture_paths(path: str, document: Any, found: list[Any]) -> None:
    assert capture(path, document) == found


def test_requests_are_drawn_by_weight() -> None:
    weights = {"list": 20, "get": 25, "create": 8, "health": 4, "rare": 0.5}
    mix = LoadMix(tuple(MixRequest(name, template(), "g", w) for name, w in weights.items()))
    rng = random.Random(3)
    n = 60_000
    drawn = Counter(mix.choose(rng).name for _ in range(n))
    total = sum(weights.values())
    for name, weight in weights.items():
        share = weight / total
        sd = (share * (1 - share) / n) ** 0.5
        assert abs(drawn[name] / n - share) < 5 * sd, (name, drawn[name] / n, share)


def test_the_plan_round_trip_keeps_the_whole_mix() -> None:
    mix = stackfile.parse(tomllib.loads(DEFAULT_STACK.read_text()), DEFAULT_STACK).load_mix
    assert mix is not None
    assert LoadMix.from_plan(json.loads(json.dumps(mix.to_plan()))) == mix
    assert mix.user_lists() == {"create": []}


def test_the_driver_and_library_carry_no_stack_specific_words() -> None:
    words = re.compile(r"prompt[-_ ]?card|category|seed_cards|charlie", re.IGNORECASE)
    files = [resources.product_suites()["load"] / "locustfile.py", Path(loadmix.__file__)]
    files += sorted((Path(loadmix.__file__).parent / "load").glob("*.py"))
    found = [f"{f.name}: {m.group(0)}" for f in files for m in words.finditer(f.read_text())]
    assert found == []


# -- the product test without a mix ---------------------------------------------------------------

STACK_WITHOUT_LOAD = """
[stack]
name = "tiny"
[networks.edge]
[services.web]
image = "nginx"
networks = { edge = [] }
ports = [8080]
"""


def test_the_load_gate_of_a_stack_without_a_mix_is_not_evaluated_with_the_reason(pytester: pytest.Pytester) -> None:
    plugins = " ".join(f"-p stackcheck.fixtures.{p}" for p in ("stack", "compliance", "chaos", "load", "report"))
    pytester.makeini(f"[pytest]\naddopts = -p no:cacheprovider {plugins}\n")
    pytester.makefile(".toml", stack=STACK_WITHOUT_LOAD)
    pytester.mkdir("load")
    shutil.copy(resources.product_suites()["load"] / "test_load.py", pytester.path / "load" / "test_load.py")
    pytester.runpytest_subprocess("--stack", "stack.toml", "--report-dir", "out/run", str(pytester.path / "load"))
    results = json.loads((pytester.path / "out/run/results.json").read_text())
    [check] = [c for c in results["checks"] if c["check"] == "load-gate"]
    assert check["status"] == "not_evaluated"
    assert check["reason"] == f"skipped: {NO_MIX}"
    assert results["verdict"] == "fail"
