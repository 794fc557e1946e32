"""Image numbers: cold build (with --cold), warm no-op rebuild, sizes, start-to-ready per image.

    .venv/bin/python bench/images.py [--cold]

--cold removes every stackcheck image (the offline base too) first, so the build starts from an
empty engine; without it only the warm numbers are measured. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import time

from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HealthcheckWaitStrategy

from stackcheck import engine, images

# What each image needs to become ready on its own (secrets are throwaway bench values).
READY_ENV = {
    "postgres": {"POSTGRES_PASSWORD": "bench"},
    "redis": {"REDIS_PASSWORD": "bench"},
}
HEALTHCHECKED = ("nginx", "postgres", "redis", "toxiproxy")


def timed_build(builder: images.ImageBuilder) -> float:
    started = time.monotonic()
    builder.build()
    return time.monotonic() - started


def start_to_ready(tag: str, env: dict[str, str]) -> float:
    container = DockerContainer(tag).waiting_for(HealthcheckWaitStrategy().with_startup_timeout(120))
    for key, value in env.items():
        container.with_env(key, value)
    started = time.monotonic()
    with container:
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="remove all stackcheck images first")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="  %(message)s")  # the builder's progress lines
    client = engine.client()
    builder = images.ImageBuilder(client, offline=True)
    if opts.cold:
        for image in client.images.list(name="stackcheck/*"):
            client.images.remove(image.id, force=True)
        print(f"cold build (empty engine, incl. debootstrap base): {timed_build(builder):.1f}s")
    else:
        builder.build()
    print(f"warm no-op rebuild: {timed_build(builder):.2f}s (goal <= 5 s)")
    print(f"\n{'image':<16} {'size MB':>8} {'start->ready s':>15}")
    for row in builder.status():
        ready = start_to_ready(row.tag, READY_ENV.get(row.name, {})) if row.name in HEALTHCHECKED else None
        shown = f"{ready:.2f}" if ready is not None else "n/a"
        print(f"{row.name:<16} {row.size_mb or 0:>8.0f} {shown:>15}")


if __name__ == "__main__":
    main()
