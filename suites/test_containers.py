"""The running containers: users and processes, privileges, capabilities, mounts, limits, images, ports."""

import pytest
from stackcheck.fixtures.compliance import test_rule  # noqa: F401  (the per-rule test, collected here)

from stackcheck.compliance.model import Area

pytestmark = pytest.mark.compliance
AREA = Area.CONTAINERS
