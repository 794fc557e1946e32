"""Load runs against a stack's objectives: profiles, exact percentiles, history, regression verdicts.

Nothing here imports Locust: it runs in subprocesses (see ``stackcheck.load.runner``).
"""

from stackcheck.load.errors import HistoryError, LoadError, ReportSchemaError
from stackcheck.load.history import History, Machine, RunRecord
from stackcheck.load.objectives import Metric, ObjectiveBreach, breach_table
from stackcheck.load.profiles import PROFILES, Mode, Profile, Stage
from stackcheck.load.regression import RegressionPolicy, RegressionResult, Verdict
from stackcheck.load.report import SCHEMA, LoadReport, OpenLoopStats, read_samples, validate
from stackcheck.load.runner import LoadRun, default_workers
from stackcheck.load.stats import LatencySummary, LoadSample
from stackcheck.stats import percentile

__all__ = [
    "PROFILES",
    "SCHEMA",
    "History",
    "HistoryError",
    "LatencySummary",
    "LoadError",
    "LoadReport",
    "LoadRun",
    "LoadSample",
    "Machine",
    "Metric",
    "Mode",
    "ObjectiveBreach",
    "OpenLoopStats",
    "Profile",
    "RegressionPolicy",
    "RegressionResult",
    "ReportSchemaError",
    "RunRecord",
    "Stage",
    "Verdict",
    "breach_table",
    "default_workers",
    "percentile",
    "read_samples",
    "validate",
]
