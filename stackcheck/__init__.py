"""stackcheck: verify, load and break containerized service stacks.

The plain-Python API (the pytest plugin ``stackcheck.fixtures`` wraps it):

    from stackcheck import LoadRun, Policy, Stack, faults
    from stackcheck.compliance.runner import CheckContext, run
    from stackcheck.load import profiles

    with Stack.from_file("stacks/promptcard/stack.toml") as stack:
        results = run(CheckContext(stack.target(), stack, Policy.load()))
        with faults.latency(stack.link("backend->postgres-primary"), 200):
            report = LoadRun.for_stack(stack, profiles.get("smoke")).run()

Importing the package reads no file and changes nothing; the testcontainers defaults
(``stackcheck.tcdefaults``) are applied when stackcheck first talks to the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stackcheck.errors import (
    EngineError,
    ImageBuildError,
    ImageError,
    ImageMissingError,
    PolicyError,
    StackcheckError,
    StackError,
    StackFileError,
    ToxiproxyError,
)

# The public names, imported on first use (PEP 562): `import stackcheck` stays cheap, e.g. in
# every Locust worker process, which only needs the load mix.
_LAZY = {
    "faults": "stackcheck.chaos.faults",
    "Experiment": "stackcheck.chaos.experiment",
    "ExperimentResult": "stackcheck.chaos.experiment",
    "RtoMeter": "stackcheck.chaos.meters",
    "WriteLedger": "stackcheck.chaos.meters",
    "Policy": "stackcheck.compliance.model",
    "Severity": "stackcheck.compliance.model",
    "EngineInfo": "stackcheck.engine",
    "ensure_engine": "stackcheck.engine",
    "Catalog": "stackcheck.images",
    "ImageBuilder": "stackcheck.images",
    "LoadReport": "stackcheck.load",
    "LoadRun": "stackcheck.load",
    "Stack": "stackcheck.stack",
    "HttpTarget": "stackcheck.target",
}

if TYPE_CHECKING:
    from stackcheck.chaos import faults
    from stackcheck.chaos.experiment import Experiment, ExperimentResult
    from stackcheck.chaos.meters import RtoMeter, WriteLedger
    from stackcheck.compliance.model import Policy, Severity
    from stackcheck.engine import EngineInfo, ensure_engine
    from stackcheck.images import Catalog, ImageBuilder
    from stackcheck.load import LoadReport, LoadRun
    from stackcheck.stack import Stack
    from stackcheck.target import HttpTarget


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stackcheck' has no attribute {name!r}")
    value = importlib.import_module(module) if name == "faults" else getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Catalog",
    "EngineError",
    "EngineInfo",
    "Experiment",
    "ExperimentResult",
    "HttpTarget",
    "ImageBuildError",
    "ImageBuilder",
    "ImageError",
    "ImageMissingError",
    "LoadReport",
    "LoadRun",
    "Policy",
    "PolicyError",
    "RtoMeter",
    "Severity",
    "Stack",
    "StackError",
    "StackFileError",
    "StackcheckError",
    "ToxiproxyError",
    "WriteLedger",
    "ensure_engine",
    "faults",
]
