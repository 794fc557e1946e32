"""HTTP security headers on every route family and on error responses (404, 429, 502)."""

import pytest
from stackcheck.fixtures.compliance import test_rule  # noqa: F401  (the per-rule test, collected here)

from stackcheck.compliance.model import Area

pytestmark = [pytest.mark.compliance, pytest.mark.exclusive("provokes 429s and stops upstreams for 502s")]
AREA = Area.HEADERS
