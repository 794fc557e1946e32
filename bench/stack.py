"""Reference stack numbers: warm boot-to-ready, teardown, resident memory, and the API's own
throughput and latency at a fixed moderate load measured with wrk (Debian package `wrk`).

    .venv/bin/python bench/stack.py [--seconds 10] [--connections 8]

The API is measured on a published backend port (a bench-only variant of the stack file), so
nginx's 10 r/s rate limit does not cap it; nginx is measured on /api/health, which it does not
limit. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
import tomllib
from typing import Any

from stackcheck import stackfile
from stackcheck.stack import DEFAULT_STACK, Stack


def bench_variant() -> stackfile.StackSpec:
    data = tomllib.loads(DEFAULT_STACK.read_text())
    backend = data["services"]["backend"]
    backend["networks"] = {"control": [], **backend["networks"]}
    backend["ports"] = [3001]
    return stackfile.parse(data, DEFAULT_STACK)


def wrk(url: str, seconds: int, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(\w+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(\w+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": _ms(p50), "p99": _ms(p99), "non2xx": int(non2xx.group(1)) if non2xx else 0}


def _ms(match: re.Match[str] | None) -> float:
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    opts = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/stack.py needs wrk: apt-get install -y wrk")
    Stack(bench_variant()).start().stop()  # first boot warms the page cache and the images
    stack = Stack(bench_variant())
    started = time.monotonic()
    stack.start()
    try:
        boot = time.monotonic() - started
        memory = {}
        for handle in stack.handles():
            stats = handle.docker.stats(stream=False)["memory_stats"]
            memory[handle.name] = (stats["usage"] - stats.get("stats", {}).get("cache", 0)) / 2**20
        with stack.http() as api:
            card = api.post("/api/prompt-cards", json={"title": "bench", "prompt": "p", "category": "bench"}).json()
        backend = f"http://127.0.0.1:{stack.service('backend-1').port(3001)}"
        runs = {
            "backend-1 GET card by id (cached)": wrk(
                f"{backend}/api/prompt-cards/{card['id']}", opts.seconds, opts.connections
            ),
            "backend-1 GET list ?category=": wrk(
                f"{backend}/api/prompt-cards?category=bench", opts.seconds, opts.connections
            ),
            "nginx TLS GET /api/health": wrk(f"{stack.url()}/api/health", opts.seconds, opts.connections),
        }
    finally:
        stopped = time.monotonic()
        stack.stop()
        teardown = time.monotonic() - stopped
    print(f"warm boot-to-ready: {boot:.1f}s (goal <= 20 s)   teardown: {teardown:.1f}s")
    print(f"resident memory: {sum(memory.values()):.0f} MiB total")
    for name, mib in memory.items():
        print(f"  {name:<18} {mib:7.1f} MiB")
    print(f"\nload: wrk -t2 -c{opts.connections} -d{opts.seconds}s (closed loop)")
    print(f"{'endpoint':<36} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, r in runs.items():
        print(f"{name:<36} {r['rps']:>8.0f} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['non2xx']:>8}")


if __name__ == "__main__":
    main()
