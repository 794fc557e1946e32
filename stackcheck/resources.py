"""Where stackcheck finds the files it ships, in a checkout and in an installed wheel alike.

The repository keeps them at its top level (``stacks/``, ``policies/``, ``suites/``, ``load/``,
``chaos/``); the wheel carries them as ``stackcheck.stacks`` etc. (pyproject's package-dir), so
both resolve through the import system. Nothing here reads a file.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_dir(package: str) -> Path:
    return Path(str(files(package)))


def stacks_dir() -> Path:
    """The image catalog (``images/``) and the reference stacks."""
    return package_dir("stackcheck.stacks")


def default_policy() -> Path:
    return package_dir("stackcheck.policies") / "default.toml"


def reference_stack() -> Path:
    return stacks_dir() / "promptcard" / "stack.toml"


def product_suites() -> dict[str, Path]:
    """The product suites by marker: compliance, load, chaos."""
    return {area: package_dir(f"stackcheck.suites.{area}") for area in ("compliance", "load", "chaos")}
