"""Compliance: policy rules evaluated against a running stack or a URL.

Importing the package registers every area's checks with the runner.
"""

from stackcheck.compliance import (  # noqa: F401  (registration)
    cluster,
    containers,
    datastores,
    headers,
    health,
    ollama,
    prometheus,
    rate_limits,
    runner,
    tls,
)

__all__ = ["runner"]
