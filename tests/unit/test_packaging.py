"""What an installed stackcheck promises: importing it (library, CLI, plugin) reads none of its
data files, and every file it looks up resolves through the package, not a checkout path."""

from __future__ import annotations

import json
import subprocess
import sys

from stackcheck import resources

IMPORT_AND_LIST_OPENED = """
import json, sys
opened = []
sys.addaudithook(lambda event, args: opened.append(args[0]) if event == "open" and isinstance(args[0], str) else None)
import stackcheck, stackcheck.cli, stackcheck.fixtures.plugin
for name in ("engine", "stack", "compliance", "chaos", "load", "report"):
    __import__(f"stackcheck.fixtures.{name}")
print(json.dumps(opened))
"""


def test_importing_reads_no_data_file() -> None:
    out = subprocess.run([sys.executable, "-c", IMPORT_AND_LIST_OPENED], capture_output=True, text=True, check=True)
    ours = [resources.stacks_dir(), resources.default_policy().parent, resources.package_dir("stackcheck")]
    prefixes = tuple(str(p) for p in [*ours, *resources.product_suites().values()])
    read = [p for p in json.loads(out.stdout) if p.startswith(prefixes) and not p.endswith((".py", ".pyc"))]
    assert read == [], f"files read at import: {read}"


def test_shipped_files_resolve_through_the_package() -> None:
    assert (resources.stacks_dir() / "images" / "images.toml").is_file()
    assert resources.default_policy().is_file()
    assert resources.reference_stack().is_file()
    for area, path in resources.product_suites().items():
        assert list(path.glob("test_*.py")), f"no product tests for {area} in {path}"
    assert (resources.package_dir("stackcheck.suites") / "gate.ini").is_file()
