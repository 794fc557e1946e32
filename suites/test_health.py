"""Liveness latency, and comprehensive health following each dependency link."""

import pytest
from stackcheck.fixtures.compliance import test_rule  # noqa: F401  (the per-rule test, collected here)

from stackcheck.compliance.model import Area

pytestmark = [pytest.mark.compliance, pytest.mark.exclusive("times liveness; cuts dependency links")]
AREA = Area.HEALTH
