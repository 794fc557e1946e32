"""Locust side of stackcheck's load runs: the Prompt Card API mix, the profile shape, raw samples.

Driven by ``stackcheck load run`` / ``stackcheck.load.LoadRun``, which pass the run plan as JSON
in ``STACKCHECK_LOAD_PLAN`` and start one master and N worker processes. Never imported by
stackcheck itself: ``import locust`` monkey-patches the whole process with gevent.

Workers on other hosts: start the master with ``stackcheck load run --master-bind 0.0.0.0
--external-workers N`` (it prints the worker command with the plan), then on each host, with
this repository's ``load/`` directory and ``pip install locust``, run the printed
``STACKCHECK_LOAD_PLAN='...' locust -f load/locustfile.py --worker --master-host MASTER``.
Their clocks must be NTP-synchronised: samples carry wall-clock completion times.

Each worker records every request (endpoint, group, latency, lateness, error kind) and sends
them to the master twice a second; the master appends them to the plan's ``samples_file``,
from which stackcheck computes exact percentiles. In open-loop mode requests follow a fixed
arrival schedule: latency is measured from the scheduled send time, and sends that could not
start on time (all users busy) are counted, so coordinated omission shows instead of hiding.
"""

from __future__ import annotations

import functools
import json
import os
import random
import sys
import time
from typing import Any

import gevent
import gevent.pool
import requests
from gevent.event import Event
from locust import FastHttpUser, LoadTestShape, between, constant, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

if "STACKCHECK_LOAD_PLAN" not in os.environ:
    sys.exit("load/locustfile.py is driven by stackcheck: run `stackcheck load run` (it sets STACKCHECK_LOAD_PLAN)")
PLAN: dict[str, Any] = json.loads(os.environ["STACKCHECK_LOAD_PLAN"])
PROFILE = PLAN["profile"]
STAGES: list[list[float]] = PROFILE["stages"]
DURATION = sum(d for d, _ in STAGES)
HEADERS = {"X-Stackcheck-Load": PLAN["token"]} if PLAN.get("token") else {}
CATEGORY = PLAN["category"]  # every card this run creates carries it, so cleanup finds them all
SEARCH_WORDS = ("alpha", "bravo", "charlie", "delta")
FLUSH_S = 0.5


def level_at(t: float) -> float:
    """The profile's load level at t (same rule as stackcheck.load.profiles.Profile.level_at;
    repeated here because workers on other hosts need only this file and locust)."""
    start, previous = 0.0, 0.0
    for duration, target in STAGES:
        if t < start + duration:
            return previous + (target - previous) * (t - start) / duration
        start, previous = start + duration, target
    return previous


# -- samples ---------------------------------------------------------------------------------------
BUFFER: list[list[Any]] = []  # [completed_epoch, endpoint, group, latency_ms, late_ms, error]
SEED_IDS: list[str] = []
SEEDED = Event()
FINAL_FLUSHES: list[str] = []  # master: workers whose users have stopped and sent their last samples


class Schedule:
    """Open loop: this worker's share of the arrival rate as a sequence of send times."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.next = 0.0
        self.scheduled = 0  # slots handed out plus slots that fell due but were never taken
        self.sent = 0

    def start(self) -> None:
        self.t0 = self.next = time.perf_counter()

    def _advance(self) -> bool:
        """Move to the next send time; False once past the run's end."""
        while self.next - self.t0 < DURATION:
            rate = level_at(self.next - self.t0) * PROFILE["rps_per_level"] / PLAN["workers"]
            if rate > 0:
                self.next += 1.0 / rate
                return self.next - self.t0 < DURATION
            self.next += 0.05  # a stage at level 0: nothing to send, look again shortly
        return False

    def take(self) -> float | None:
        slot = self.next
        if not self._advance() and slot - self.t0 >= DURATION:
            return None
        self.scheduled += 1
        return slot

    def due_until(self, now: float) -> int:
        """Slots due before ``now`` (or the end of the run) that nobody took, counted as scheduled."""
        while self.next < now and self.next - self.t0 < DURATION and self._advance():
            self.scheduled += 1
        return self.scheduled


SCHEDULE = Schedule()


def _error_kind(response: Any) -> str:
    if response.status_code:
        return f"http-{response.status_code}"
    error = getattr(response, "error", None)
    name = type(error).__name__.lower() if error is not None else "unknown"
    return "timeout" if "timeout" in name else "connection"


class PromptCardUser(FastHttpUser):
    """The reference API's request mix (closed loop: think time between requests)."""

    abstract = True
    insecure = False
    network_timeout = connection_timeout = 10.0
    concurrency = 1

    @staticmethod
    def ssl_context_factory(cafile: str | None = None) -> Any:
        # The run's CA when the plan names one (a booted stack), else the caller's bundle.
        return gevent.ssl.create_default_context(cafile=PLAN.get("ca_file") or cafile)

    def on_start(self) -> None:
        self.own: list[str] = []
        self.intended: float | None = None
        SEEDED.wait(10)
        self.create()

    def call(self, endpoint: str, group: str, method: str, path: str, ok: tuple[int, ...], **kw: Any) -> Any:
        intended = self.intended
        started = time.perf_counter()
        body: Any = None
        with self.client.request(method, path, name=endpoint, headers=HEADERS, catch_response=True, **kw) as resp:
            if resp.status_code in ok:
                resp.success()
                error = ""
                if resp.status_code != 204:
                    body = resp.json()
            else:
                error = _error_kind(resp)
                resp.failure(error)
        ended = time.perf_counter()
        begin = intended if intended is not None else started
        late = (started - intended) * 1000 if intended is not None else 0.0
        BUFFER.append([time.time(), endpoint, group, (ended - begin) * 1000, late, error])
        return body

    # -- the mix -----------------------------------------------------------------------------------
    def list_cards(self) -> None:
        self.call("list", "read", "GET", f"/api/prompt-cards?page={random.randint(1, 3)}&page_size=20", (200,))

    def filter_cards(self) -> None:
        self.call("filter", "read", "GET", f"/api/prompt-cards?category={CATEGORY}&page_size=20", (200,))

    def search_cards(self) -> None:
        self.call("search", "read", "GET", f"/api/prompt-cards?q={random.choice(SEARCH_WORDS)}", (200,))

    def get_card(self) -> None:
        card = random.choice(SEED_IDS or self.own or [None])
        if card is None:
            return self.create()
        self.call("get", "read", "GET", f"/api/prompt-cards/{card}", (200,))
        return None

    def create(self) -> None:
        word = random.choice(SEARCH_WORDS)
        body = {"title": f"load {word}", "prompt": f"Summarise {{{{text}}}} ({word})", "category": CATEGORY}
        card = self.call("create", "write", "POST", "/api/prompt-cards", (201,), json=body)
        if card:
            self.own.append(card["id"])

    def update(self) -> None:
        if not self.own:
            return self.create()
        body = {"description": f"updated {time.time():.3f}"}
        self.call("update", "write", "PUT", f"/api/prompt-cards/{random.choice(self.own)}", (200,), json=body)
        return None

    def delete(self) -> None:
        if len(self.own) < 2:  # keep one card for updates and test cases
            return self.create()
        self.call("delete", "write", "DELETE", f"/api/prompt-cards/{self.own.pop(0)}", (204,))
        return None

    def create_test_case(self) -> None:
        if not self.own:
            return self.create()
        body = {"name": "load case", "input": {"text": "hello"}, "expected_output": "hi"}
        path = f"/api/prompt-cards/{self.own[-1]}/test-cases"
        self.call("test-case-create", "write", "POST", path, (201,), json=body)
        return None

    def list_test_cases(self) -> None:
        if not self.own:
            return self.create()
        self.call("test-cases", "read", "GET", f"/api/prompt-cards/{self.own[-1]}/test-cases", (200,))
        return None

    def health(self) -> None:
        self.call("health", "health", "GET", "/api/health", (200,))

    MIX = (
        (list_cards, 20), (filter_cards, 15), (search_cards, 10), (get_card, 25), (create, 8), (update, 6),
        (delete, 4), (create_test_case, 4), (list_test_cases, 4), (health, 4),
    )  # fmt: skip


class ClosedLoopUser(PromptCardUser):
    wait_time = between(*PROFILE["wait_s"])
    tasks = dict(PromptCardUser.MIX)  # noqa: RUF012 (Locust's own class attribute)


class OpenLoopUser(PromptCardUser):
    """One of a bounded pool of senders; each takes the next scheduled send time."""

    wait_time = constant(0)

    @task
    def scheduled(self) -> None:
        slot = SCHEDULE.take()
        if slot is None:  # the schedule is over: idle until the master stops us
            gevent.sleep(1.0)
            return
        gevent.sleep(max(0.0, slot - time.perf_counter()))
        actions, weights = zip(*PromptCardUser.MIX, strict=True)
        self.intended = slot
        try:
            random.choices(actions, weights)[0](self)
        finally:
            self.intended = None
            SCHEDULE.sent += 1


class StaticUser(PromptCardUser):
    """Generator capacity (bench/load.py): the edge's static ``GET /``, no think time."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.intended = None

    @task
    def static(self) -> None:
        self.call("static", "static", "GET", "/", (200,))


class ProfileShape(LoadTestShape):
    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= DURATION:
            return None
        if PLAN["mode"] == "open":
            pool = PLAN["pool_per_worker"] * PLAN["workers"]
            return pool, pool
        return round(level_at(t)), 100


# -- seeding, cleanup and sample transport -----------------------------------------------------------
def _api() -> requests.Session:
    session = requests.Session()
    session.headers.update(HEADERS)
    # Not session.verify: requests lets REQUESTS_CA_BUNDLE override that, but not a per-request verify.
    session.request = functools.partial(session.request, verify=PLAN.get("ca_file") or True)  # type: ignore[method-assign]
    return session


def _record(line: dict[str, Any]) -> None:
    with open(PLAN["samples_file"], "a") as f:
        f.write(json.dumps(line) + "\n")


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        with _api() as api:
            ids = []
            for i in range(PLAN["seed_cards"]):
                word = SEARCH_WORDS[i % len(SEARCH_WORDS)]
                body = {"title": f"seed {word} {i}", "prompt": f"Seeded {word} prompt", "category": CATEGORY}
                response = api.post(f"{PLAN['host']}/api/prompt-cards", json=body, timeout=10)
                response.raise_for_status()
                ids.append(response.json()["id"])
        environment.runner.send_message("stackcheck_seed", ids)
        _record({"start": time.time(), "seeded": len(ids)})
        gevent.spawn(_report_users, environment)
    elif isinstance(environment.runner, WorkerRunner):
        SCHEDULE.start()
        gevent.spawn(_flush_forever, environment)


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        _flush(environment, final=True)
    elif isinstance(environment.runner, MasterRunner):
        # Headless Locust ends a shape by quitting, and a quitting master fires test_stop before it
        # tells workers anything: stop them now, so their last samples arrive and the sweep below
        # does not delete cards still in use.
        environment.runner.send_message("stackcheck_stop")
        with gevent.Timeout(15, False):
            while len(FINAL_FLUSHES) < PLAN["workers"]:
                gevent.sleep(0.1)
        _record({"stop": time.time(), "removed": _sweep()})


def _sweep(deadline_s: float = 30.0) -> int:
    """Delete every card of this run's category (seeded and created), within a deadline."""
    removed = 0
    deadline = time.monotonic() + deadline_s
    pool = gevent.pool.Pool(8)
    with _api() as api:
        while time.monotonic() < deadline:
            page = api.get(f"{PLAN['host']}/api/prompt-cards?category={CATEGORY}&page_size=100", timeout=10).json()
            if not page["items"]:
                break
            urls = [f"{PLAN['host']}/api/prompt-cards/{card['id']}" for card in page["items"]]
            with gevent.Timeout(max(0.1, deadline - time.monotonic()), False):
                removed += sum(
                    r.status_code == 204 for r in pool.imap_unordered(lambda u: api.delete(u, timeout=10), urls)
                )
    return removed


def _flush(environment: Environment, final: bool = False) -> None:
    batch = BUFFER[:]
    del BUFFER[: len(batch)]
    data: dict[str, Any] = {"samples": batch, "final": final}
    if final and PLAN["mode"] == "open":
        data.update(scheduled=SCHEDULE.due_until(time.perf_counter()), sent=SCHEDULE.sent)
    if batch or final:
        environment.runner.send_message("stackcheck_samples", data)


def _flush_forever(environment: Environment) -> None:
    while True:
        gevent.sleep(FLUSH_S)
        _flush(environment)


def _report_users(environment: Environment) -> None:
    while environment.runner is not None and environment.runner.state not in ("stopped", "stopping"):
        _record({"users": environment.runner.user_count, "at": time.time()})
        gevent.sleep(1.0)


def _on_seed(environment: Environment, msg: Any, **_: Any) -> None:
    SEED_IDS[:] = msg.data
    SEEDED.set()


def _on_stop(environment: Environment, msg: Any, **_: Any) -> None:
    environment.runner.stop()  # fires test_stop here, which sends the final samples


def _on_samples(environment: Environment, msg: Any, **_: Any) -> None:
    _record({"worker": msg.node_id, **msg.data})
    if msg.data["final"]:
        FINAL_FLUSHES.append(msg.node_id)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message("stackcheck_seed", _on_seed)
        environment.runner.register_message("stackcheck_stop", _on_stop, concurrent=True)
    elif isinstance(environment.runner, MasterRunner):
        environment.runner.register_message("stackcheck_samples", _on_samples)
