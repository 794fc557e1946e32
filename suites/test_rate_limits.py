"""Rate limits, measured at known request rates."""

import pytest
from stackcheck.fixtures.compliance import test_rule  # noqa: F401  (the per-rule test, collected here)

from stackcheck.compliance.model import Area

pytestmark = [pytest.mark.compliance, pytest.mark.exclusive("measures the limiter: no other traffic on its key")]
AREA = Area.RATE_LIMITS
