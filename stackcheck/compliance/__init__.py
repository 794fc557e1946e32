"""Compliance: policy rules evaluated against a running stack or a URL.

Importing the package registers every area's checks with the runner.
"""

from stackcheck.compliance import cluster, containers, datastores, headers, health, rate_limits, runner, tls  # noqa: F401  (registration)

__all__ = ["runner"]
