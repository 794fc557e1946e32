"""Locust side of stackcheck's load runs: the stack file's request mix, the profile shape, raw samples.

Driven by ``stackcheck load run`` / ``stackcheck.load.LoadRun``, which pass the run plan as JSON
in ``STACKCHECK_LOAD_PLAN`` and start one master and N worker processes. Never imported by
stackcheck itself: ``import locust`` monkey-patches the whole process with gevent.

The mix is the stack file's ``[load]`` (``stackcheck.loadmix``: weighted requests with groups
and templated paths and bodies, seeds before the run, cleanup after it). The master sends the
seeds, hands their captured values to the workers and, once every worker has sent its last
samples, the cleanup. ClosedLoopUser sends the mix with the profile's think time; OpenLoopUser
on the profile's arrival schedule.

A stack's own locustfile (``[load] locustfile = "..."``) is loaded after this file
(``locust -f DRIVER,THEIRS``). The contract for that file:

* It defines Locust User classes (HttpUser or FastHttpUser) and nothing else that stackcheck
  needs: this driver supplies the load shape (the profile; the users' weights split the user
  count), the sample transport and the final flush. Closed loop only.
* Every request a user makes through ``self.client`` is a sample: endpoint = the request's
  ``name`` (or its URL), group = ``context={"group": "..."}`` if given, else the endpoint;
  latency = Locust's response time; a failed request's error kind is ``http-STATUS`` when an
  answer came, else ``timeout`` or ``connection``. Objectives apply as to a mix.
* ``STACKCHECK_LOAD_PLAN`` (JSON) carries ``host``, ``token`` (send it as
  ``X-Stackcheck-Load`` for the stack's rate-limit bypass), ``run`` (a marker unique to the
  run, for the data it creates) and ``ca_file``; with a run CA, ``SSL_CERT_FILE`` and
  ``REQUESTS_CA_BUNDLE`` point at it, so the users' clients trust the stack's certificate.
* Samples go to the plan's ``samples_file`` through the driver: JSON lines, written by the
  master only (``{"start": t}``, then ``{"worker": id, "samples": [[epoch_s, endpoint, group,
  latency_ms, late_ms, error, ttft_ms], ...], "final": bool}``, last ``{"stop": t, "removed": n}``;
  ttft_ms is null unless the request streams).

Workers on other hosts: start the master with ``stackcheck load run --master-bind 0.0.0.0
--external-workers N`` (it prints the worker command with the plan), then on each host, with
``pip install stackcheck`` (this file imports ``stackcheck.loadmix``), run the printed
``STACKCHECK_LOAD_PLAN='...' locust -f .../locustfile.py --worker --master-host MASTER``.
Their clocks must be NTP-synchronised: samples carry wall-clock completion times.

Each worker records every request (endpoint, group, latency, lateness, error kind) and sends
them to the master twice a second; the master appends them to the plan's ``samples_file``,
from which stackcheck computes exact percentiles. In open-loop mode requests follow a fixed
arrival schedule: latency is measured from the scheduled send time, and sends that could not
start on time (all users busy) are counted, so coordinated omission shows instead of hiding.
"""

from __future__ import annotations

import functools
import itertools
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

from stackcheck.load.profiles import Profile
from stackcheck.loadmix import (
    CleanupRequest,
    HttpTemplate,
    LoadMix,
    MixRequest,
    Rendered,
    Scalar,
    SseEvent,
    StreamKind,
    Values,
    capture,
    sse_event,
)

if "STACKCHECK_LOAD_PLAN" not in os.environ:
    sys.exit("load/locustfile.py is driven by stackcheck: run `stackcheck load run` (it sets STACKCHECK_LOAD_PLAN)")
PLAN: dict[str, Any] = json.loads(os.environ["STACKCHECK_LOAD_PLAN"])
PROFILE = Profile.from_dict(PLAN["profile"])
DURATION = PROFILE.duration_s
HEADERS = {"X-Stackcheck-Load": PLAN["token"]} if PLAN.get("token") else {}
MIX = LoadMix.from_plan(PLAN["mix"])
OWN_USERS = MIX.locustfile is not None  # the stack's locustfile brings the users
FLUSH_S = 0.5
CLEANUP_S = 30.0

# -- samples ---------------------------------------------------------------------------------------
BUFFER: list[list[Any]] = []  # [completed_epoch, endpoint, group, latency_ms, late_ms, error, ttft_ms]
SHARED: dict[str, list[Scalar]] = {name: list(items) for name, items in MIX.values.items()}  # + seeds' captures
SEEDED = Event()
FINAL_FLUSHES: list[str] = []  # master: workers whose users have stopped and sent their last samples
SEQ = itertools.count()
RNG = random.Random()
CAPTURING = set(MIX.user_lists())  # requests whose answers fill a user's list


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
            rate = PROFILE.level_at(self.next - self.t0) * PROFILE.rps_per_level / PLAN["workers"]
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


def _error_kind(response: Any, exception: Any = None) -> str:
    status = getattr(response, "status_code", 0)
    if status:
        return f"http-{status}"
    error = getattr(response, "error", None) or exception
    name = type(error).__name__.lower() if error is not None else "unknown"
    return "timeout" if "timeout" in name else "connection"


class MixUser(FastHttpUser):
    """Sends the stack file's mix; each user keeps its own captured values (what it created, say)."""

    abstract = True
    insecure = False
    network_timeout = connection_timeout = 10.0
    concurrency = 1

    @staticmethod
    def ssl_context_factory(cafile: str | None = None) -> Any:
        # The run's CA when the plan names one (a booted stack), else the caller's bundle.
        return gevent.ssl.create_default_context(cafile=PLAN.get("ca_file") or cafile)

    def on_start(self) -> None:
        self.intended: float | None = None
        SEEDED.wait(10)
        self.lists: dict[str, list[Scalar]] = {**SHARED, **MIX.user_lists()}

    def send(self, request: MixRequest) -> None:
        needed = request.http.missing(self.lists)
        if needed in CAPTURING:  # nothing of that kind yet: make one first
            request = MIX.request(needed)
        elif needed is not None:  # a seed's values never arrived (the master's message was late)
            BUFFER.append([time.time(), request.name, request.group, 0.0, 0.0, "unseeded", None])
            return
        runner = self.environment.runner
        seq = next(SEQ) * PLAN["workers"] + (runner.worker_index if isinstance(runner, WorkerRunner) else 0)
        filled = request.http.render(Values(PLAN["run"], seq, self.lists, rng=RNG))
        intended = self.intended
        started = time.perf_counter()
        begin = intended if intended is not None else started
        headers = {**HEADERS, **filled.headers}
        body = filled.body.encode() if filled.body is not None else None
        first_token_ms = None
        with self.client.request(
            filled.method, filled.path, name=request.name, headers=headers, data=body, json=filled.json,
            catch_response=True, stream=request.stream is not None,
        ) as resp:  # fmt: skip
            error = "" if request.http.accepts(resp.status_code) else _error_kind(resp)
            if not error and request.stream is not None:
                first, error = _read_stream(resp, request.stream)
                first_token_ms = None if first is None else (first - begin) * 1000
            if not error and request.capture is not None:
                error = self._capture(request, resp)
            if error:
                resp.failure(error)
            else:
                resp.success()
        ended = time.perf_counter()
        late = (started - intended) * 1000 if intended is not None else 0.0
        BUFFER.append([time.time(), request.name, request.group, (ended - begin) * 1000, late, error, first_token_ms])

    def _capture(self, request: MixRequest, resp: Any) -> str:
        """Keeps what the answer carries at the request's capture path; an error kind if nothing."""
        assert request.capture is not None
        try:
            found = capture(request.capture, resp.json())
        except (ValueError, TypeError):  # not JSON, or no body
            found = []
        self.lists[request.name].extend(found)
        return "" if found else "capture"


def _read_stream(resp: Any, kind: StreamKind) -> tuple[float | None, str]:
    """Reads a streamed answer to its end: (perf_counter at its first token or None, error kind)."""
    first = None
    buffer = b""
    failed = False
    try:
        # One byte at a time until the first token: a bigger read waits until it is full.
        for byte in resp.iter_content(chunk_size=1, decode_content=False):
            if kind is StreamKind.BYTES:
                first = time.perf_counter()
                break
            buffer += byte
            if buffer.endswith(b"\n\n") or buffer.endswith(b"\r\n\r\n"):
                seen = sse_event(buffer)
                buffer = b""
                if seen is SseEvent.TOKEN:
                    first = time.perf_counter()
                    break
                if seen is SseEvent.ERROR:
                    failed = True
                    break
        rest = b"".join(resp.iter_content(chunk_size=65536, decode_content=False))
    except Exception as exc:  # the connection broke mid-stream
        return first, "timeout" if "timeout" in type(exc).__name__.lower() else "connection"
    if kind is StreamKind.SSE:
        failed = failed or any(sse_event(e) is SseEvent.ERROR for e in rest.replace(b"\r", b"").split(b"\n\n"))
    return first, "stream-error" if failed or first is None else ""


class ClosedLoopUser(MixUser):
    abstract = OWN_USERS
    wait_time = between(*PROFILE.wait_s)

    @task
    def mixed(self) -> None:
        self.send(MIX.choose(RNG))


class OpenLoopUser(MixUser):
    """One of a bounded pool of senders; each takes the next scheduled send time."""

    abstract = OWN_USERS
    wait_time = constant(0)

    @task
    def scheduled(self) -> None:
        slot = SCHEDULE.take()
        if slot is None:  # the schedule is over: idle until the master stops us
            gevent.sleep(1.0)
            return
        gevent.sleep(max(0.0, slot - time.perf_counter()))
        self.intended = slot
        try:
            self.send(MIX.choose(RNG))
        finally:
            self.intended = None
            SCHEDULE.sent += 1


class ProfileShape(LoadTestShape):
    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= DURATION:
            return None
        if PLAN["mode"] == "open":
            pool = PLAN["pool_per_worker"] * PLAN["workers"]
            return pool, pool
        return round(PROFILE.level_at(t)), 100


def _on_own_request(
    name: str, response_time: float, response: Any = None, context: Any = None, exception: Any = None, **_: Any
) -> None:
    """A sample of the stack's own users (see the contract above)."""
    error = "" if exception is None else _error_kind(response, exception)
    BUFFER.append([time.time(), name, (context or {}).get("group", name), response_time, 0.0, error, None])


if OWN_USERS:
    events.request.add_listener(_on_own_request)


# -- seeds, cleanup and sample transport -----------------------------------------------------------
def _api() -> requests.Session:
    session = requests.Session()
    session.headers.update(HEADERS)
    # Not session.verify: requests lets REQUESTS_CA_BUNDLE override that, but not a per-request verify.
    session.request = functools.partial(session.request, verify=PLAN.get("ca_file") or True)  # type: ignore[method-assign]
    return session


def _send(api: requests.Session, filled: Rendered) -> requests.Response:
    return api.request(
        filled.method, f"{PLAN['host']}{filled.path}", json=filled.json, data=filled.body,
        headers=dict(filled.headers), timeout=10,
    )  # fmt: skip


def _record(line: dict[str, Any]) -> None:
    with open(PLAN["samples_file"], "a") as f:
        f.write(json.dumps(line) + "\n")


def _seed(api: requests.Session) -> dict[str, list[Scalar]]:
    """Every seed request, in file order; a list of captured values per capturing seed."""
    lists = dict(SHARED)
    for seed in MIX.seeds:
        found: list[Scalar] = []
        for i in range(seed.count):
            filled = seed.http.render(Values(PLAN["run"], i, lists, rng=RNG))
            response = _send(api, filled)
            where = f"seed {seed.name} #{i}: {filled.method} {filled.path}"
            if not seed.http.accepts(response.status_code):
                raise ValueError(f"{where} answered {response.status_code}: {response.text[:200]}")
            if seed.capture is not None:
                values = capture(seed.capture, response.json())
                if not values:
                    raise ValueError(f"{where}: the answer has nothing at {seed.capture!r}: {response.text[:200]}")
                found += values
        if seed.capture is not None:
            lists[seed.name] = found
    return lists


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        try:
            with _api() as api:
                lists = _seed(api)
        except (ValueError, requests.RequestException) as exc:
            _record({"failed": str(exc)})  # LoadRun raises it and stops every process
            return
        environment.runner.send_message("stackcheck_seed", lists)
        _record({"start": time.time(), "seeded": sum(s.count for s in MIX.seeds)})
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
        # tells workers anything: stop them now, so their last samples arrive and the cleanup below
        # does not delete data still in use.
        environment.runner.send_message("stackcheck_stop")
        with gevent.Timeout(15, False):
            while len(FINAL_FLUSHES) < PLAN["workers"]:
                gevent.sleep(0.1)
        _record({"stop": time.time(), "removed": _cleanup()})


def _cleanup() -> int:
    """Every cleanup request, within one deadline; how many of its requests were answered as expected."""
    removed = 0
    deadline = time.monotonic() + CLEANUP_S
    with _api() as api:
        for step in MIX.cleanup:
            removed += _clean(api, step, deadline)
    return removed


def _clean(api: requests.Session, step: CleanupRequest, deadline: float) -> int:
    listing = step.http.render(Values(PLAN["run"], 0, dict(SHARED), rng=RNG))
    if step.each is None or step.capture is None:
        return int(step.http.accepts(_send(api, listing).status_code))
    each: HttpTemplate = step.each
    pool = gevent.pool.Pool(8)
    removed = 0
    while time.monotonic() < deadline:  # listed again until nothing is left (pages, late writes)
        response = _send(api, listing)
        try:
            items = capture(step.capture, response.json()) if step.http.accepts(response.status_code) else []
        except ValueError:  # not JSON: nothing to remove
            items = []
        if not items:
            break

        def one(item: Scalar) -> bool:
            filled = each.render(Values(PLAN["run"], 0, dict(SHARED), item, RNG))
            return each.accepts(_send(api, filled).status_code)

        done = 0
        with gevent.Timeout(max(0.1, deadline - time.monotonic()), False):
            done = sum(pool.imap_unordered(one, items))
        removed += done
        if not done:  # nothing it lists can be removed: listing again would find the same
            break
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
    SHARED.update(msg.data)
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
