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

from stackcheck.chaos import faults
from stackcheck.chaos.experiment import Experiment, ExperimentResult
from stackcheck.chaos.meters import RtoMeter, WriteLedger
from stackcheck.compliance.model import Policy, Severity
from stackcheck.engine import EngineInfo, ensure_engine
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
from stackcheck.images import Catalog, ImageBuilder
from stackcheck.load import LoadReport, LoadRun
from stackcheck.stack import Stack
from stackcheck.target import HttpTarget

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
