"""stackcheck as a user gets it: the wheel, installed into a fresh venv outside this checkout, run
from a directory that holds nothing but a stack file. The CLI works, the image catalog ships,
and `pytest --stack` collects the product suites from the installed package to a verdict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.xdist_group("test_wheel")]
REPO = Path(__file__).resolve().parents[2]
STACK_DIR = Path(__file__).parent / "data" / "own-image"
# Not part of the package: the build copies the tree without them.
SKIP = shutil.ignore_patterns(".git", ".venv*", ".tox", "reports", "build", "*.egg-info", "__pycache__", ".*_cache")


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # The user's shell: no PYTHONPATH into this checkout, no project venv on PATH.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the wheel (and its declared dependencies) installed: its bin/."""
    root = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, root / "src", ignore=SKIP)
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "dist"), "."], root / "src")
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("stackcheck-*.whl")
    venv = root / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)], root).returncode == 0
    pip = run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], root, timeout=900)
    assert pip.returncode == 0, pip.stderr[-2000:]
    return venv / "bin"


def test_the_installed_cli_and_plugin_work_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "team-repo"
    shutil.copytree(STACK_DIR, work)
    where = run([str(installed / "python"), "-c", "import stackcheck; print(stackcheck.__file__)"], work)
    assert where.stdout.startswith(str(installed.parent)), f"imported from the checkout: {where.stdout}"

    helped = run([str(installed / "stackcheck"), "--help"], work)
    assert helped.returncode == 0, helped.stderr
    assert "gate" in helped.stdout

    listed = run([str(installed / "stackcheck"), "images", "list"], work)
    assert listed.returncode == 0, listed.stderr
    assert "nginx" in listed.stdout
    assert "present" in listed.stdout

    built = run([str(installed / "stackcheck"), "images", "build", "--stack", "stack.toml"], work)
    assert built.returncode == 0, built.stderr

    gate = run(
        [str(installed / "pytest"), "--stack", "stack.toml", "-m", "compliance", "--report-dir", "out", "-q"], work
    )
    assert gate.returncode in (0, 1), f"no verdict (exit {gate.returncode}):\n{gate.stdout[-3000:]}\n{gate.stderr}"
    results = json.loads((work / "out" / "results.json").read_text())
    assert results["verdict"] in ("pass", "fail")
    checks = {c["check"] for c in results["checks"]}
    assert {"containers-non-root", "headers-hsts"} <= checks, checks
