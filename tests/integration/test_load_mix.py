"""A load mix declared as data reaches a real server as declared: nginx's access log is the truth.

One nginx-only stack (catalog image, plain HTTP) whose server answers every route of the mix
and logs each request as JSON (its ``$request_id``, method, URI, load token, body length).
Seeds and creates answer ``{"id": "$request_id"}``, so the log also says which id every answer
carried. Against that log, not the load runner's own samples:

* every request carries the run's load token; the seeds come first, the cleanup last, once;
* picks name only seeded ids and listed words (percent-encoded), ``${seq}`` never repeats across
  two workers, ``${take}`` deletes only ids this run created, each once and after its create;
* the mix's weights hold (a delete with nothing to take creates instead), and the server saw
  exactly as many mix requests as the report counts;
* a seed answered with a status it does not expect stops the run with one clear error before
  any mix request is sent;
* a stack's own locustfile runs under the same driver: its requests are the samples.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackcheck import stackfile
from stackcheck.load import LoadReport, LoadRun, profiles
from stackcheck.load.errors import LoadError
from stackcheck.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("test_load_mix")]

NGINX_CONF = r"""
log_format mix escape=json '{"id":"$request_id","method":"$request_method","uri":"$request_uri",'
    '"status":$status,"token":"$http_x_stackcheck_load","length":"$content_length","at":$msec}';
server {
    listen 8080 default_server;
    access_log /dev/stdout mix;
    default_type application/json;
    location = /healthz { access_log off; return 200 "ok\n"; }
    location = /seed { return 201 '{"id":"$request_id"}'; }
    location /make/ {
        if ($request_method = DELETE) { return 204; }
        return 201 '{"id":"$request_id"}';
    }
    location /item/ { return 200 '{"ok":true}'; }
    location = /ping { return 200 '{"pong":true}'; }
    location = /cleanup { return 204; }
}
"""

STACK = """
[stack]
name = "mixcheck"
entrypoint = "http://nginx:8080"
health_path = "/healthz"

[secrets]
generate = ["load-token"]

[networks.edge]

[services.nginx]
image = "nginx"
networks = { edge = [] }
ports = [8080]
read_only = true
tmpfs = ["/tmp"]
[services.nginx.files]
"/etc/nginx/conf.d/default.conf" = { template_file = "default.conf" }

[objectives.load.default]
p95_ms = 1000

[objectives.load.total]
min_rps = 5
"""

MIX = """
[load.values]
words = ["alpha beta", "gamma"]

[load.seed.items]
method = "POST"
path = "/seed"
json = { n = "${seq}", run = "${run}" }
count = 3
capture = "id"
expect = [201]

[load.requests.read]
method = "GET"
path = "/item/${pick.items}?w=${pick.words}"
group = "read"
weight = 6

[load.requests.make]
method = "POST"
path = "/make/${seq}"
json = { title = "made ${random}", word = "${pick.words}" }
group = "write"
weight = 2
capture = "id"
expect = [201]

[load.requests.drop]
method = "DELETE"
path = "/make/${take.make}"
group = "write"
weight = 1
expect = [204]

[load.requests.ping]
method = "GET"
path = "/ping"
group = "health"
weight = 1

[load.cleanup.all]
method = "DELETE"
path = "/cleanup?run=${run}"
expect = [204]
"""

OWN_LOCUSTFILE = """
from locust import HttpUser, constant, task


class Pinger(HttpUser):
    wait_time = constant(0.05)

    @task
    def ping(self):
        self.client.get("/ping", name="own-ping", context={"group": "health"})
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("mixcheck")
    (directory / "default.conf").write_text(NGINX_CONF)
    (directory / "stack.toml").write_text(STACK)
    with Stack.from_file(directory / "stack.toml") as stack:
        yield stack


def access_log(stack: Stack) -> list[dict[str, Any]]:
    """Every request nginx logged, read fresh from the container."""
    lines = stack.service("nginx").docker.logs(stdout=True, stderr=False).decode().splitlines()
    return [json.loads(line) for line in lines if line.startswith('{"id"')]


def run_mix(stack: Stack, tmp_path: Path, mix_toml: str, seconds: float = 8, **kwargs: Any) -> LoadReport:
    (tmp_path / "default.conf").write_text(NGINX_CONF)  # the stack file names it
    (tmp_path / "stack.toml").write_text(STACK + mix_toml)
    mix = stackfile.load(tmp_path / "stack.toml").load_mix
    profile = profiles.get("smoke").with_duration(seconds)
    kwargs.setdefault("workers", 2)
    return LoadRun.for_stack(
        stack, profile, mix=mix, reports_dir=tmp_path, progress=None, abort_after_s=0, **kwargs
    ).run()


def test_the_server_sees_the_declared_mix(server: Stack, tmp_path: Path) -> None:
    before = len(access_log(server))
    report = run_mix(server, tmp_path, MIX)
    log = access_log(server)[before:]
    marker = f"sc-{report.run_id}"
    token = server.secrets["load-token"]
    assert {entry["token"] for entry in log} == {token}

    seeds = [e for e in log if e["uri"] == "/seed"]
    cleanup = [e for e in log if e["uri"].startswith("/cleanup")]
    mix = [e for e in log if e not in seeds and e not in cleanup]
    assert [e["method"] for e in seeds] == ["POST"] * 3
    assert all(int(e["length"]) > 0 for e in seeds)  # the json body was sent
    assert log[:3] == seeds
    assert [(e["method"], e["uri"]) for e in cleanup] == [("DELETE", f"/cleanup?run={marker}")]
    assert log[-1] == cleanup[0]

    seeded = {e["id"] for e in seeds}
    reads = [e for e in mix if e["uri"].startswith("/item/")]
    for e in reads:
        match = re.fullmatch(r"/item/([0-9a-f]{32})\?w=(alpha%20beta|gamma)", e["uri"])
        assert match, e["uri"]
        assert match.group(1) in seeded
    assert {e["uri"].split("w=")[1] for e in reads} == {"alpha%20beta", "gamma"}

    makes = [e for e in mix if e["method"] == "POST"]
    drops = [e for e in mix if e["method"] == "DELETE"]
    seqs = [int(re.fullmatch(r"/make/(\d+)", e["uri"]).group(1)) for e in makes]  # type: ignore[union-attr]
    assert len(seqs) == len(set(seqs)), "a ${seq} repeated"
    assert {s % 2 for s in seqs} == {0, 1}  # both workers made some
    assert all(int(e["length"]) > 0 for e in makes)
    created = {e["id"]: e["at"] for e in makes}
    taken = [e["uri"].removeprefix("/make/") for e in drops]
    assert len(taken) == len(set(taken)), "an id was deleted twice"
    for e, card in zip(drops, taken, strict=True):
        assert card in created, f"deleted {card}, which this run never created"
        assert created[card] <= e["at"]

    # Weights 6:2:1:1; a delete with nothing to take creates, so creates + deletes share 3/10.
    kinds = Counter(
        "read" if e in reads else "ping" if e["uri"] == "/ping" else "write" for e in mix
    )  # fmt: skip
    n = len(mix)
    print(f"{n} mix requests: {dict(kinds)}; creates {len(makes)}, deletes {len(drops)}")
    for kind, share in (("read", 0.6), ("write", 0.3), ("ping", 0.1)):
        sd = (share * (1 - share) / n) ** 0.5
        assert abs(kinds[kind] / n - share) < 5 * sd, (kind, kinds[kind] / n, share)
    assert 0 < len(drops) <= len(makes)

    # The report counts what the server saw, under the mix's names and groups.
    assert report.total.count == n > 100
    assert {name: s.count for name, s in report.endpoints.items()} == {
        "read": len(reads), "make": len(makes), "drop": len(drops), "ping": kinds["ping"],
    }  # fmt: skip
    assert set(report.groups) == {"read", "write", "health"}
    assert report.total.errors == 0
    assert report.breaches == []


def test_a_seed_answered_unexpectedly_stops_the_run_before_any_request(server: Stack, tmp_path: Path) -> None:
    before = len(access_log(server))
    broken = MIX.replace('count = 3\ncapture = "id"\nexpect = [201]', 'count = 3\ncapture = "id"\nexpect = [200]')
    assert broken != MIX
    with pytest.raises(LoadError, match=r"could not start: seed items #0: POST /seed answered 201") as caught:
        run_mix(server, tmp_path, broken)
    assert "[load.seed]" in caught.value.fix
    log = access_log(server)[before:]
    assert [(e["method"], e["uri"]) for e in log] == [("POST", "/seed")]


def test_a_stacks_own_locustfile_is_driven_the_same_way(server: Stack, tmp_path: Path) -> None:
    (tmp_path / "users.py").write_text(textwrap.dedent(OWN_LOCUSTFILE))
    before = len(access_log(server))
    report = run_mix(server, tmp_path, '[load]\nlocustfile = "users.py"\n', seconds=6, workers=1)
    log = access_log(server)[before:]
    assert {(e["method"], e["uri"]) for e in log} == {("GET", "/ping")}
    assert {e["token"] for e in log} == {""}  # the stack's users send what they choose to
    assert set(report.endpoints) == {"own-ping"}
    assert set(report.groups) == {"health"}
    assert report.total.count == len(log) > 20
    assert report.total.errors == 0
