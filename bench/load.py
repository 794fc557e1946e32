"""Generator capacity: the most requests/s one (and two) Locust workers sustain, side by side
with wrk on the same endpoint in the same run: nginx's static ``GET /`` over TLS with keep-alive.

    .venv/bin/python bench/load.py [--seconds 10] [--users 32]

Each Locust row is a real stackcheck LoadRun (every request recorded, as in a load test) with
a one-request mix (``GET /``) and no think time; "worker CPU" is the Locust worker processes' CPU time over the
run's wall time (100 % = one core). wrk uses as many threads as Locust has workers. Prints a
table; asserts nothing. On a 2-core machine the generators and nginx share the same cores.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from stackcheck.load import LoadRun, Profile, Stage
from stackcheck.loadmix import HttpTemplate, LoadMix, MixRequest
from stackcheck.stack import Stack


def wrk(url: str, threads: int, connections: int, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(match.group(1)) if match else float("nan")


def worker_cpu(stop: threading.Event, result: list[float]) -> None:
    """CPU seconds of this process's Locust worker children, sampled until ``stop``."""
    seen: dict[int, float] = {}
    while not stop.wait(0.5):
        for child in psutil.Process().children(recursive=True):
            try:
                if "--worker" in child.cmdline():
                    times = child.cpu_times()
                    seen[child.pid] = times.user + times.system
            except psutil.Error:
                continue
    result.append(sum(seen.values()))


def locust(stack: Stack, workers: int, users: int, seconds: int, out: Path) -> tuple[float, float, int]:
    profile = Profile("capacity", f"{users} users, no think time", (Stage(0.5, users), Stage(seconds, users)), (0, 0))
    stop, cpu = threading.Event(), []
    sampler = threading.Thread(target=worker_cpu, args=(stop, cpu))
    sampler.start()
    try:
        run = LoadRun.for_stack(
            stack, profile, workers=workers, objectives={}, reports_dir=out, progress=None,
            mix=LoadMix((MixRequest("static", HttpTemplate("GET", "/", expect=(200,)), "static"),)),
        )  # fmt: skip
        report = run.run()
    finally:
        stop.set()
        sampler.join()
    steady = [i.requests for i in report.intervals[1 : int(profile.duration_s)]]
    rps = sum(steady) / len(steady) if steady else float("nan")
    return rps, 100 * cpu[0] / profile.duration_s, report.total.errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--users", type=int, default=32, help="Locust users and wrk connections")
    opts = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/load.py needs wrk: apt-get install -y wrk")
    with Stack.from_file() as stack, tempfile.TemporaryDirectory() as tmp:
        url = f"{stack.url()}/"
        print(f"endpoint: GET {url} (nginx static JSON, TLS, keep-alive); {opts.users} users/connections")
        print(f"{'generator':<22} {'rps':>9} {'vs wrk':>7} {'worker CPU':>11} {'errors':>7}")
        for workers in (1, 2):
            wrk_rps = wrk(url, workers, opts.users, opts.seconds)
            rps, cpu, errors = locust(stack, workers, opts.users, opts.seconds, Path(tmp))
            print(f"{f'wrk -t{workers}':<22} {wrk_rps:9.0f} {'1.00':>7} {'-':>11} {'-':>7}")
            print(f"{f'locust {workers} worker(s)':<22} {rps:9.0f} {rps / wrk_rps:7.2f} {cpu:10.0f}% {errors:7d}")
            time.sleep(1)


if __name__ == "__main__":
    main()
